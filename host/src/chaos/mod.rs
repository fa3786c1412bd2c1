//! Chaos drills' faults, always reverted: what a fault is, the recipe that undoes it, and
//! the manager that journals, applies, expires and reverts faults for one environment.
//!
//! Plugins inject faults through the `faults` capability ([`crate::caps::faults`]), which
//! checks their grant; this module does the work. A fault is written (synced) to the
//! store's fault journal together with the recipe that undoes it *before* it is applied,
//! and reverted when the run ends (whatever the outcome), when its duration runs out,
//! on Ctrl-C/SIGTERM, and by [`recover`] after a crash, from the journal alone.
//!
//! `cert-expiry` moves the target plugin's wall clock forward (the clock its actions see
//! through WASI) rather than serving an expired certificate: it exercises the check that
//! must notice expiry without breaking TLS for everything else, and needs no certificate
//! authority in the drill environment.

mod manager;
pub mod proxy;
mod revert;

use serde::{Deserialize, Serialize};

pub use crate::store::records::{FaultKind as Kind, FaultRow, FaultState};
pub use manager::{FaultManager, OffsetClock, PathError, Recovery, contained_file, recover};
pub use proxy::{ProxyConfig, ProxyDef, ProxyError, ProxyManager};
pub use revert::Revert;

/// What a plugin asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub kind: Kind,
    pub target: String,
    pub duration_ms: u64,
    pub latency_ms: Option<u32>,
    pub drop_rate: Option<f32>,
    pub path: Option<String>,
    pub days: Option<u32>,
}

/// What a plugin's grant lets the manager do beyond the kind, target and duration the
/// capability already checked.
#[derive(Debug, Clone)]
pub struct Allowance {
    /// Faults of this plugin that may be active at once in a run.
    pub max_concurrent: u32,
    /// The grant's manifest key, for denial messages.
    pub key: String,
    /// For corrupt-file: the granted directory the target names.
    pub dir: Option<std::path::PathBuf>,
}

/// What a kind's targets are.
pub fn target_noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Kill | Kind::Stop => "service",
        Kind::Latency | Kind::Drop | Kind::Partition => "proxy",
        Kind::CorruptFile => "directory",
        Kind::CertExpiry => "plugin",
    }
}

/// Why a fault was not injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The grant does not allow it (one fault too many).
    #[error("{0}")]
    Denied(String),
    /// It was allowed and could not be applied (what took hold was undone).
    #[error("{0}")]
    Failed(String),
}

/// Why a fault could not be prepared, applied or undone: the work itself, as opposed to
/// the grant ([`InjectError::Denied`]) or the journal ([`RevertError`]).
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("no service `{name}`")]
    NoService { name: String },
    #[error("a latency fault needs latency-ms")]
    NoLatency,
    #[error("a drop fault needs a drop-rate above 0")]
    NoDropRate,
    #[error("no granted directory for this target")]
    NoDirectory,
    #[error("a corrupt-file fault needs a path")]
    NoPath,
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot save the original: {0}")]
    SaveOriginal(std::io::Error),
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Damaging or syncing the target file failed part-way.
    #[error("{0}")]
    Write(std::io::Error),
    #[error("cannot read the saved original {}: {source}", backup.display())]
    ReadOriginal {
        backup: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the saved original {} does not match its digest; {} left as is",
        backup.display(),
        target.display()
    )]
    OriginalChanged {
        backup: std::path::PathBuf,
        target: std::path::PathBuf,
    },
    #[error("cannot restore {}: {source}", target.display())]
    Restore {
        target: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] crate::services::ServiceError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A blocking wait on a proxy panicked or was cancelled.
    #[error("{0}")]
    Join(#[from] tokio::task::JoinError),
    /// `prepare` and `apply` disagree on a kind: a bug, not an operator's mistake.
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// Why reverting a fault went wrong. Every one is reported; none is dropped.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("faults need the state store (none is open)")]
    NoStore,
    #[error("the fault journal: {0}")]
    Journal(#[from] crate::store::StoreError),
    #[error("fault {id} has an unreadable revert recipe ({message}); revert it by hand")]
    Recipe { id: String, message: String },
    #[error("{0}")]
    Failed(#[from] FaultError),
}
