//! The plugin-side view of the `notify` capability.

use crate::outcome::ActionError;

/// How urgent a message is; params name it in lower case (`"high"`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    #[default]
    Info,
}

impl Severity {
    /// The word messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// A message for a notification channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    pub severity: Severity,
    pub title: String,
    pub text: String,
    pub fields: Vec<(String, String)>,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// The channel is not granted; the message names the manifest entry.
    Denied(String),
    Failed(String),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Denied(m) => write!(f, "denied: {m}"),
            NotifyError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for NotifyError {}

impl From<NotifyError> for ActionError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Denied(m) => ActionError::Denied(m),
            NotifyError::Failed(m) => ActionError::Failed(m),
        }
    }
}
