//! `log`: structured log lines from a plugin into its step's record.
//!
//! | | |
//! |---|---|
//! | grants | always available |
//! | manifest | none |
//! | enforced | lines count against the plugin's `limits.output`; the excess is dropped and counted |
//! | audit | lines are kept with the step, not as capability calls |

use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::log as wit;
use crate::caps::core::{CapCtx, CapData, HostState, Ungranted, now_ms};
pub use crate::store::records::{Level, LogLine};

/// The `log` capability.
pub struct Log;

/// Lines of the current action, bounded by the output limit.
#[derive(Default)]
pub struct LogState {
    pub lines: Vec<LogLine>,
    pub bytes: u64,
    pub dropped: u64,
}

impl Ungranted for Log {
    const NAME: &'static str = "log";
    const INTERFACE: &'static str = "runcap:plugin/log";
    const WIT: &'static str = include_str!("../../../wit/log.wit");
    type State = LogState;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

impl From<wit::Level> for Level {
    fn from(l: wit::Level) -> Self {
        match l {
            wit::Level::Debug => Level::Debug,
            wit::Level::Info => Level::Info,
            wit::Level::Warn => Level::Warn,
            wit::Level::Error => Level::Error,
        }
    }
}

impl wit::Host for CapCtx<'_, Log> {
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
        let budget = self.core.output_limit;
        let log = &mut *self.state;
        if log.bytes + size > budget {
            log.dropped += 1;
            return Ok(());
        }
        log.bytes += size;
        log.lines.push(LogLine {
            level: level.into(),
            message,
            fields,
            at_ms: now_ms(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing::action;

    #[tokio::test]
    async fn lines_are_kept_until_the_output_limit_then_counted() {
        let mut state = action(crate::caps::core::Prepared::default(), false, 40);
        {
            let mut ctx = state.view::<Log>();
            wit::Host::write(&mut ctx, wit::Level::Warn, "disk at 91%".into(), vec![])
                .await
                .unwrap();
            wit::Host::write(
                &mut ctx,
                wit::Level::Info,
                "x".repeat(20),
                vec![("mount".into(), "/var".into())],
            )
            .await
            .unwrap();
            wit::Host::write(&mut ctx, wit::Level::Error, "over".repeat(10), vec![])
                .await
                .unwrap();
        }
        let log = state.take_state::<Log>();
        assert_eq!(log.lines.len(), 2);
        assert_eq!(log.lines[0].level, Level::Warn);
        assert_eq!(log.lines[1].fields, vec![("mount".into(), "/var".into())]);
        assert_eq!(log.dropped, 1);
        assert!(
            state.core.calls.is_empty(),
            "log lines are not capability calls"
        );
    }
}
