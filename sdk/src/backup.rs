//! The plugin-side view of the `backup` capability: snapshots of granted sources into granted
//! repositories, restores into granted targets, and the checks of a restore drill.
//!
//! A plugin names sources, repositories, targets and queries; the host owns their paths,
//! commands and keys. Every report is `Serialize`, so it can go straight into an outcome's
//! details.

use serde::Serialize;

use crate::outcome::ActionError;

/// A snapshot as listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id (32 hex characters).
    pub id: String,
    /// The granted source it was taken of.
    pub source: String,
    /// `dir` or `dump`.
    pub kind: String,
    /// When it was taken, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Seconds since it was taken (when the host answered).
    pub age_seconds: i64,
    pub files: u64,
    /// Logical size of its files, in bytes.
    pub size: u64,
    /// Bytes its new chunks added to the repository.
    pub bytes_stored: u64,
    /// For a dump: the file name it restores as.
    pub file_name: Option<String>,
    pub tags: Vec<String>,
}

/// What a snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotReport {
    pub snapshot: SnapshotInfo,
    /// Bytes read from the source (unchanged files are not read again).
    pub bytes_read: u64,
    /// Plaintext bytes of chunks that were new to the repository.
    pub bytes_new: u64,
    /// Bytes added to the repository after compression and encryption.
    pub bytes_stored: u64,
    pub files_unchanged: u64,
    pub chunks_total: u64,
    pub chunks_new: u64,
    /// Share of the snapshot's bytes that needed no new storage.
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub duration_ms: u64,
    pub throughput_mib_s: f64,
    pub previous_id: Option<String>,
    /// Seconds between the previous snapshot of the source and this one: the achieved RPO.
    pub previous_age_seconds: Option<i64>,
    pub warnings: Vec<String>,
    pub warnings_total: u64,
    /// Nothing was read or stored (dry run).
    pub dry_run: bool,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    pub read_data: bool,
    pub snapshots: u64,
    pub chunks_referenced: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub chunks_missing: u64,
    pub chunks_corrupt: u64,
    pub snapshots_unreadable: u64,
    pub chunks_unreferenced: u64,
    /// One line per problem (first 100).
    pub problems: Vec<String>,
    pub problems_total: u64,
    pub ok: bool,
    pub duration_ms: u64,
}

/// Which snapshot to restore, from where, into which target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestoreRequest {
    pub repository: String,
    /// A snapshot id or unique prefix; when `None`, the latest snapshot of `source`.
    pub snapshot: Option<String>,
    pub source: Option<String>,
    pub target: String,
    /// Only list what would be written; change nothing.
    pub dry_run: bool,
    /// Replace existing files.
    pub overwrite: bool,
    /// Empty the (scratch) target first.
    pub clean: bool,
    /// Restore only these paths of the snapshot.
    pub paths: Vec<String>,
}

impl RestoreRequest {
    /// The latest snapshot of `source` in `repository`, into `target`.
    pub fn latest(source: &str, repository: &str, target: &str) -> Self {
        RestoreRequest {
            repository: repository.into(),
            source: Some(source.into()),
            target: target.into(),
            ..Default::default()
        }
    }

    /// A given snapshot (id or unique prefix) from `repository`, into `target`.
    pub fn snapshot(id: &str, repository: &str, target: &str) -> Self {
        RestoreRequest {
            repository: repository.into(),
            snapshot: Some(id.into()),
            target: target.into(),
            ..Default::default()
        }
    }
}

/// One entry a dry-run restore would write.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlannedItem {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
    /// Something is already at that path.
    pub exists: bool,
}

/// What a restore did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotInfo,
    pub target: String,
    pub dry_run: bool,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub existing: u64,
    pub planned: Vec<PlannedItem>,
    pub skipped_existing: Vec<String>,
    pub failed: Vec<String>,
    /// Time to restore, measured by the host.
    pub duration_ms: u64,
    pub throughput_mib_s: f64,
    pub complete: bool,
    pub command_output: Option<String>,
}

/// What comparing a restored directory with its snapshot found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompareReport {
    pub files: u64,
    pub files_matched: u64,
    pub bytes: u64,
    pub differences: Vec<String>,
    pub differences_total: u64,
    pub ok: bool,
    pub duration_ms: u64,
}

/// Which snapshots to keep, per source (restic-style).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForgetPolicy {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// A snapshot kept or removed by `forget`, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ForgetItem {
    pub id: String,
    pub source: String,
    pub time_ms: u64,
    pub reasons: Vec<String>,
}

/// What `forget` did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub kept: Vec<ForgetItem>,
    pub removed: Vec<ForgetItem>,
    pub chunks_removed: u64,
    pub bytes_freed: u64,
    pub bytes_kept: u64,
    pub duration_ms: u64,
}

/// What a granted query command printed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueryResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
}

/// Why a backup operation was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupError {
    /// Not granted; the message names the manifest entry.
    Denied(String),
    /// The granted secret does not unlock the repository.
    WrongKey(String),
    /// No such snapshot, or none yet.
    NotFound(String),
    Failed(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Denied(m) => write!(f, "denied: {m}"),
            BackupError::WrongKey(m) | BackupError::NotFound(m) | BackupError::Failed(m) => {
                write!(f, "{m}")
            }
        }
    }
}

impl std::error::Error for BackupError {}

impl From<BackupError> for ActionError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Denied(m) => ActionError::Denied(m),
            other => ActionError::Failed(other.to_string()),
        }
    }
}
