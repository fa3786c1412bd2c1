//! What an action returns.

use serde_json::{Map, Value};

/// How the action judged what it looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// The result of an action that ran to completion: a status, one line for humans,
/// JSON details for later steps and operators, and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub summary: String,
    pub details: Map<String, Value>,
    pub metrics: Vec<(String, f64)>,
}

impl Outcome {
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            summary: summary.into(),
            details: Map::new(),
            metrics: Vec::new(),
        }
    }

    pub fn ok(summary: impl Into<String>) -> Self {
        Self::new(Status::Ok, summary)
    }

    pub fn warn(summary: impl Into<String>) -> Self {
        Self::new(Status::Warn, summary)
    }

    pub fn fail(summary: impl Into<String>) -> Self {
        Self::new(Status::Fail, summary)
    }

    /// Adds one field to the details object.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// Adds one metric.
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }
}

/// Why an action produced no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// The params are not what the plugin expects.
    InvalidParams(String),
    /// A capability the action needs was not granted.
    Denied(String),
    /// Anything else.
    Failed(String),
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::InvalidParams(m) => write!(f, "invalid params: {m}"),
            ActionError::Denied(m) => write!(f, "denied: {m}"),
            ActionError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ActionError {}
