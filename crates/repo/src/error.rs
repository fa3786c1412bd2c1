//! Errors of the repository, each saying what went wrong and what to do about it.

use std::io;
use std::path::{Path, PathBuf};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a repository operation.
///
/// Variants are distinct so that callers (the runcap host, a plugin through it) can react to the
/// important cases — wrong secret, not a repository, unsupported version, locked — without parsing
/// messages; every message tells the operator what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory has no readable repository config.
    #[error(
        "{path} is not a runcap backup repository ({reason}); check the path, or create a repository there with init"
    )]
    NotARepository {
        /// Repository directory that was opened.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// The repository was written by a newer (or unknown) format version.
    #[error(
        "the repository at {path} uses format version {found}, but this build of runcap reads versions 1 to {supported}; upgrade runcap to open it"
    )]
    UnsupportedVersion {
        /// Repository directory.
        path: PathBuf,
        /// Version found in the config file.
        found: u32,
        /// Newest version this build reads (and the one it writes).
        supported: u32,
    },

    /// The secret does not unlock the repository key.
    #[error(
        "the secret does not unlock the repository at {path}; check that the environment grants the secret this repository was created with (if the secret is right, the config file has been altered: restore it from a copy)"
    )]
    WrongKey {
        /// Repository directory.
        path: PathBuf,
    },

    /// `init` was pointed at a directory that already holds something.
    #[error(
        "cannot create a repository in {path}: the directory is not empty; choose a new or empty directory (or open the existing repository)"
    )]
    NotEmpty {
        /// Directory given to init.
        path: PathBuf,
    },

    /// Another operation holds a conflicting lock on the repository.
    #[error(
        "the repository at {path} is busy: {wanted} needs {mode} access but another operation (backup, restore, verify or prune) is running; retry when it has finished"
    )]
    Locked {
        /// Repository directory.
        path: PathBuf,
        /// Operation that was refused.
        wanted: &'static str,
        /// `shared` or `exclusive`.
        mode: &'static str,
    },

    /// An operating-system call failed.
    #[error(
        "could not {action} {path}: {source}; check that the path exists, has room and is accessible"
    )]
    Io {
        /// What was being done, as a verb phrase ("read", "create directory", ...).
        action: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },

    /// Reading the caller's source stream failed; nothing was recorded.
    #[error(
        "reading the source failed after {bytes} bytes: {source}; no snapshot was recorded (earlier snapshots are intact), fix the producer of the data and run the backup again"
    )]
    SourceRead {
        /// Bytes read before the failure.
        bytes: u64,
        /// Underlying error.
        #[source]
        source: io::Error,
    },

    /// The source of a directory snapshot is unusable.
    #[error("cannot back up {path}: {reason}")]
    InvalidSource {
        /// Path given by the caller.
        path: PathBuf,
        /// Why it cannot be used, and what to do.
        reason: String,
    },

    /// No snapshot matches the id (or id prefix).
    #[error("no snapshot matches {id:?}; list the snapshots to see valid ids")]
    SnapshotNotFound {
        /// Id or prefix asked for.
        id: String,
    },

    /// An id prefix matches more than one snapshot.
    #[error("snapshot id prefix {id:?} matches {count} snapshots; give more characters of the id")]
    AmbiguousSnapshot {
        /// Prefix asked for.
        id: String,
        /// Number of matches.
        count: usize,
    },

    /// A snapshot record could not be decrypted or parsed.
    #[error(
        "snapshot record {path} is damaged ({reason}); run verify to see all damage, then forget the snapshot or restore the file from a copy of the repository"
    )]
    SnapshotCorrupt {
        /// Record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A chunk referenced by a snapshot is not in the repository.
    #[error(
        "chunk {id} is missing ({path}); run verify to see which snapshots are affected, then back up the source again or restore the repository from a copy"
    )]
    ChunkMissing {
        /// Chunk id (hex).
        id: String,
        /// Where the chunk file should be.
        path: PathBuf,
    },

    /// A chunk failed authentication, decompression or its id check.
    #[error(
        "chunk {id} is damaged ({reason}) at {path}; run verify with read_data to find all damage, then back up the source again or restore the repository from a copy"
    )]
    ChunkCorrupt {
        /// Chunk id (hex).
        id: String,
        /// Chunk file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A snapshot names a path that would land outside the restore target.
    #[error(
        "refusing to restore snapshot {snapshot}: entry {path:?} {reason}; the snapshot record may have been tampered with, verify the repository"
    )]
    UnsafePath {
        /// Snapshot id.
        snapshot: String,
        /// Offending path, as recorded.
        path: String,
        /// Why it is unsafe.
        reason: &'static str,
    },

    /// Prune could not collect every reference, so it deleted nothing.
    #[error(
        "prune stopped before deleting anything: snapshot {snapshot} cannot be read ({reason}); run verify, then forget the damaged snapshot (or restore it from a copy) and prune again"
    )]
    PruneRefused {
        /// The unreadable snapshot.
        snapshot: String,
        /// Why it cannot be read.
        reason: String,
    },

    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A snapshot has the wrong kind for the operation.
    #[error("snapshot {snapshot} {reason}")]
    WrongKind {
        /// Snapshot id.
        snapshot: String,
        /// Explanation and what to use instead.
        reason: &'static str,
    },

    /// The caller cancelled the operation (its time ran out, say); a snapshot cancelled this way
    /// records nothing, and earlier snapshots are intact.
    #[error(
        "the operation was cancelled before it finished; nothing was recorded and earlier snapshots are intact"
    )]
    Cancelled,

    /// An internal invariant broke (a bug); the repository is left consistent.
    #[error("internal error: {0}; earlier snapshots are intact, please report this")]
    Internal(String),
}

impl Error {
    /// Wraps an `io::Error` with the action and path it concerns.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Adds `.ctx(action, path)` to io results, so every io error names what it was doing.
pub(crate) trait IoContext<T> {
    /// Converts an io error into [`Error::Io`] naming `action` and `path`.
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path.as_ref(), e))
    }
}
