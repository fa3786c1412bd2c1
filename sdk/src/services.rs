//! The plugin-side view of the `services` capability.

use crate::outcome::ActionError;

/// What to do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Status,
    Start,
    Stop,
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Status => "status",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

/// Whether a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Stopped,
    Unknown,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
            ServiceState::Unknown => "unknown",
        }
    }
}

/// A service's status after a verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub uptime_ms: Option<u64>,
    /// Where known; 128 + N after death by signal N.
    pub last_exit_code: Option<i32>,
    /// The manifest's health URL for the service, if any.
    pub health_url: Option<String>,
    /// What the driver saw or did, in one line.
    pub detail: String,
}

/// Why a verb was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The service or verb is not granted; the message names the manifest entry.
    Denied(String),
    Failed(String),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Denied(m) => write!(f, "denied: {m}"),
            ServiceError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<ServiceError> for ActionError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Denied(m) => ActionError::Denied(m),
            ServiceError::Failed(m) => ActionError::Failed(m),
        }
    }
}
