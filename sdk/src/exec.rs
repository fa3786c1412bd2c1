//! The plugin-side view of the `exec` capability: run a command the manifest declares.

use crate::context::Context;
use crate::outcome::ActionError;

/// How a declared command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandResult {
    /// Its exit code; `None` when a signal ended it or a dry run did not start it.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past its time limit and was killed.
    pub timed_out: bool,
    /// A dry run recorded it without starting it.
    pub skipped: bool,
    /// What it printed, redacted by the host and cut at the grant's output cap.
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    /// The program and arguments it ran (redacted).
    pub argv: Vec<String>,
}

impl CommandResult {
    /// Whether it ran and exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Why a command was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// Not declared, or an argument its holes do not accept; the message says which.
    Denied(String),
    /// The host could not start it.
    Failed(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Denied(m) => write!(f, "denied: {m}"),
            ExecError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<ExecError> for ActionError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Denied(m) => ActionError::Denied(m),
            ExecError::Failed(m) => ActionError::Failed(m),
        }
    }
}

impl Context<'_> {
    /// Runs the declared command `command` (`grants.exec.commands.NAME`) with `args`
    /// (hole name, value) in its holes. A command that ran and exited non-zero is `Ok`:
    /// judging its exit code is the caller's job.
    pub fn exec(&self, command: &str, args: &[(&str, &str)]) -> Result<CommandResult, ExecError> {
        match self.host() {
            Some(h) => h.exec(command, args),
            None => wasm_exec(command, args),
        }
    }
}

/// Runs a command through the `exec` import.
fn wasm_exec(command: &str, args: &[(&str, &str)]) -> Result<CommandResult, ExecError> {
    use crate::bindings::runcap::plugin::exec as wit;
    let args: Vec<wit::Arg> = args
        .iter()
        .map(|(name, value)| wit::Arg {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    match wit::run(command, &args) {
        Ok(r) => Ok(CommandResult {
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            skipped: r.skipped,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
            argv: r.argv,
        }),
        Err(wit::Error::Denied(m)) => Err(ExecError::Denied(m)),
        Err(wit::Error::Failed(m)) => Err(ExecError::Failed(m)),
    }
}
