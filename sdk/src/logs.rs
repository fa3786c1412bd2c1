//! The plugin-side view of the `logs` capability: read the end of a log the manifest
//! names, filtered by time and pattern, redacted by the host.

use std::time::Duration;

use crate::context::Context;
use crate::outcome::ActionError;

/// Which lines of a granted log to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogQuery {
    /// A source from `grants.logs.sources`, or `service:NAME` for a supervised service.
    pub source: String,
    /// Keep only the last N lines that pass the filters.
    pub tail: Option<u32>,
    /// Only lines stamped within this long before now (whole seconds).
    pub since: Option<Duration>,
    /// Only lines matching this regular expression (matched after redaction).
    pub grep: Option<String>,
    /// The most lines to return (the grant's `max_lines` caps it too).
    pub max_lines: Option<u32>,
}

impl LogQuery {
    /// Every line of `source` the host's limits allow.
    pub fn new(source: &str) -> Self {
        LogQuery {
            source: source.to_string(),
            ..Default::default()
        }
    }
}

/// The lines read from a log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogLines {
    /// The lines returned, oldest first, redacted.
    pub lines: Vec<String>,
    /// Lines that passed the filters, before the tail and the line cap.
    pub matched: u64,
    /// Lines looked at.
    pub scanned: u64,
    /// More lines matched than were returned.
    pub truncated: bool,
    /// Scanned lines with no timestamp of their own.
    pub unstamped: u64,
}

/// Why a log was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogsError {
    /// Not granted; the message names the manifest entry to add.
    Denied(String),
    /// The query is not valid (a pattern that does not parse).
    Invalid(String),
    /// The file is missing or unreadable.
    Unavailable(String),
}

impl std::fmt::Display for LogsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogsError::Denied(m) => write!(f, "denied: {m}"),
            LogsError::Invalid(m) => write!(f, "invalid query: {m}"),
            LogsError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

impl std::error::Error for LogsError {}

impl From<LogsError> for ActionError {
    fn from(e: LogsError) -> Self {
        match e {
            LogsError::Denied(m) => ActionError::Denied(m),
            LogsError::Invalid(m) => ActionError::InvalidParams(m),
            LogsError::Unavailable(m) => ActionError::Failed(m),
        }
    }
}

impl Context<'_> {
    /// Reads lines of a granted log (`grants.logs`).
    pub fn read_logs(&self, query: &LogQuery) -> Result<LogLines, LogsError> {
        match self.host() {
            Some(h) => h.read_logs(query),
            None => wasm_read(query),
        }
    }
}

/// Reads a log through the `logs` import.
fn wasm_read(query: &LogQuery) -> Result<LogLines, LogsError> {
    use crate::bindings::runcap::plugin::logs as wit;
    let q = wit::Query {
        source: query.source.clone(),
        tail: query.tail,
        since_seconds: query.since.map(|d| d.as_secs()),
        grep: query.grep.clone(),
        max_lines: query.max_lines,
    };
    match wit::read(&q) {
        Ok(r) => Ok(LogLines {
            lines: r.lines,
            matched: r.matched,
            scanned: r.scanned,
            truncated: r.truncated,
            unstamped: r.unstamped,
        }),
        Err(wit::Error::Denied(m)) => Err(LogsError::Denied(m)),
        Err(wit::Error::Invalid(m)) => Err(LogsError::Invalid(m)),
        Err(wit::Error::Unavailable(m)) => Err(LogsError::Unavailable(m)),
    }
}
