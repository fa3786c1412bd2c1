//! The plugin-side view of the `faults` capability.

use std::time::Duration;

use crate::outcome::ActionError;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    Stop,
    Latency,
    Drop,
    Partition,
    CorruptFile,
    CertExpiry,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Latency => "latency",
            FaultKind::Drop => "drop",
            FaultKind::Partition => "partition",
            FaultKind::CorruptFile => "corrupt-file",
            FaultKind::CertExpiry => "cert-expiry",
        }
    }
}

/// What to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// A service, proxy, directory or plugin, as the grant names it.
    pub target: String,
    pub duration: Duration,
    pub latency: Option<Duration>,
    pub drop_rate: Option<f32>,
    /// corrupt-file: the file, relative to the target directory.
    pub path: Option<String>,
    /// cert-expiry: days to move the clock forward.
    pub days: Option<u32>,
}

/// A fault the host injected (or, in a dry run, would have).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub id: String,
    pub kind: FaultKind,
    pub target: String,
    pub injected_at_ms: u64,
    pub expires_at_ms: u64,
    pub detail: String,
}

/// Why a fault was not injected or reverted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultError {
    Denied(String),
    Failed(String),
}

impl std::fmt::Display for FaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultError::Denied(m) => write!(f, "denied: {m}"),
            FaultError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FaultError {}

impl From<FaultError> for ActionError {
    fn from(e: FaultError) -> Self {
        match e {
            FaultError::Denied(m) => ActionError::Denied(m),
            FaultError::Failed(m) => ActionError::Failed(m),
        }
    }
}
