//! A deduplicated, compressed, encrypted backup repository in a directory.
//!
//! The runcap host exposes this to backup plugins as a capability: plugins choose what to back
//! up, when, and what to keep; the host does the heavy lifting natively, in bounded memory.
//!
//! # On-disk layout
//!
//! ```text
//! <repo>/config                   JSON: format, version, id, chunker/compression/KDF parameters,
//!                                 salt, master key sealed under the stretched secret
//! <repo>/packs/<2 hex>/<64 hex>   chunk records back to back, then their sealed index (see
//!                                 `packs`); a record: "RCK1" | nonce | seal(codec | zstd or raw) | tag
//! <repo>/chunks/<2 hex>/<64 hex>  format 1 only: one record per file, still read and pruned
//! <repo>/snapshots/<32 hex>       one record: "RCS1" | nonce | seal(JSON record) | tag
//! <repo>/locks/repo.lock          flock: shared for backup/restore/verify/forget, exclusive for prune
//! <repo>/tmp/                     unnamed spool files while a snapshot's file list is built
//! ```
//!
//! A snapshot's file list (paths, metadata, slices of chunks) is itself stored as chunks, so it
//! deduplicates between snapshots and is streamed, never loaded whole. See [`keys`] for the
//! cryptographic choices and [`config::ChunkerParams`] for the chunk sizes.
//!
//! # Example
//!
//! ```no_run
//! use runcap_repo::{Repository, SnapshotOptions, RestoreOptions};
//! # fn main() -> runcap_repo::Result<()> {
//! let repo = Repository::init("/backups/app", "correct horse battery staple")?;
//! let report = repo.snapshot_dir("app-data", "/srv/app", &SnapshotOptions::default())?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! repo.restore(&report.snapshot.id, "/tmp/restore", &RestoreOptions::default())?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod atomic;
mod chunker;
mod chunks;
mod compare;
pub mod config;
mod cutpoint;
mod direct;
mod error;
mod forget;
mod ingest;
pub mod keys;
mod lock;
mod memory;
mod packs;
mod pipeline;
mod repo;
mod restore;
mod snapshot;
mod tree;
mod verify;
mod walk;

pub use compare::{CompareReport, Difference};
pub use config::{ChunkerParams, FORMAT_VERSION};
pub use error::{Error, Result};
pub use forget::{ForgetDecision, ForgetPolicy, ForgetReport, PruneReport, plan_forget};
pub use keys::KdfParams;
pub use memory::limit_allocator_arenas;
pub use repo::{InitOptions, Repository};
pub use restore::{
    PlannedItem, RestoreFailure, RestoreOptions, RestoreReport, StreamRestoreReport,
};
pub use snapshot::{
    PreviousSnapshot, SnapshotKind, SnapshotOptions, SnapshotReport, SnapshotSummary, Totals,
};
pub use verify::{PackListing, PackedChunk, Problem, ProblemKind, VerifyReport};

/// A flag another thread sets to stop a long operation (a snapshot or restore whose caller
/// gave up), checked between files and chunks.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the operation to stop.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`CancelFlag::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
