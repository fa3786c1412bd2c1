//! `log`: structured log lines from a plugin into its step's record.
//!
//! | | |
//! |---|---|
//! | grants | always available |
//! | manifest | none |
//! | enforced | lines count against the plugin's `limits.output`; the excess is dropped and counted |
//! | audit | lines are kept with the step, not as capability calls |

use serde::Serialize;

use crate::bindings::runcap::plugin::log as wit;
use crate::caps::HostState;

/// The WIT interface this module implements.
pub const INTERFACE: &str = "runcap:plugin/log";

/// One line a plugin wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Lines of the current action, bounded by the output limit.
#[derive(Default)]
pub struct LogState {
    pub lines: Vec<LogLine>,
    pub bytes: u64,
    pub budget: u64,
    pub dropped: u64,
}

impl wit::Host for HostState {
    async fn write(
        &mut self,
        level: wit::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let size = message.len() as u64
            + fields
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>();
        let log = &mut self.log;
        if log.bytes + size > log.budget {
            log.dropped += 1;
            return Ok(());
        }
        log.bytes += size;
        let level = match level {
            wit::Level::Debug => "debug",
            wit::Level::Info => "info",
            wit::Level::Warn => "warn",
            wit::Level::Error => "error",
        };
        log.lines.push(LogLine {
            level,
            message,
            fields,
            at_ms: crate::caps::now_ms(),
        });
        Ok(())
    }
}
