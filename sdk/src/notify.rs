//! The plugin-side view of the `notify` capability.

use crate::outcome::ActionError;

/// A message for a notification channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// critical, high, medium, low or info.
    pub severity: String,
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
