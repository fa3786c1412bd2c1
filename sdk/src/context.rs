//! What an action sees of the world: its run context and the host's capabilities.

use std::cell::OnceCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backup::{
    BackupError, CompareReport, ForgetPolicy, ForgetReport, QueryResult, RestoreReport,
    RestoreRequest, SnapshotInfo, SnapshotReport, VerifyReport,
};
use crate::exec::{CommandResult, ExecError};
use crate::faults::{Fault, FaultError, FaultSpec};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::logs::{LogLines, LogQuery, LogsError};
use crate::notify::{Notification, NotifyError};
use crate::outcome::ActionError;
use crate::services::{ServiceError, ServiceStatus, Verb};
use crate::system::{Fact, FactValue, SystemError};

/// Severity of a log line written to the run record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The capabilities a plugin can ask the host for.
///
/// The runcap host implements it when the plugin runs as a component; tests use
/// [`crate::testing::MockHost`]. A call the manifest does not grant comes back as a
/// denial error value, never as a crash.
pub trait Host {
    /// Appends a structured line to the step's log.
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
    /// Sends one HTTP request through the host's allow-listed client.
    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError>;
    /// Sends a message to a notification channel the manifest grants.
    fn notify(&self, channel: &str, message: &Notification) -> Result<(), NotifyError> {
        let _ = message;
        Err(NotifyError::Denied(format!(
            "channel `{channel}` is not available here"
        )))
    }
    /// Injects a fault the manifest grants.
    fn inject(&self, spec: &FaultSpec) -> Result<Fault, FaultError> {
        Err(FaultError::Denied(format!(
            "{} faults are not available here",
            spec.kind.as_str()
        )))
    }
    /// Reverts one of this run's faults.
    fn revert_fault(&self, id: &str) -> Result<(), FaultError> {
        Err(FaultError::Denied(format!("fault {id} is not known here")))
    }
    /// This run's active faults.
    fn active_faults(&self) -> Vec<Fault> {
        Vec::new()
    }
    /// Reads a secret the manifest grants.
    fn secret(&self, name: &str) -> Result<String, ActionError> {
        Err(ActionError::Denied(format!(
            "secret `{name}` is not available here"
        )))
    }
    /// Applies a verb to a service the manifest grants.
    fn service(&self, name: &str, verb: Verb) -> Result<ServiceStatus, ServiceError> {
        Err(ServiceError::Denied(format!(
            "{} of service `{name}` is not available here",
            verb.as_str()
        )))
    }
    /// Backs up a granted source into a granted repository.
    fn backup_snapshot(
        &self,
        source: &str,
        repository: &str,
        tags: &[String],
    ) -> Result<SnapshotReport, BackupError> {
        let _ = tags;
        Err(backup_denied(&format!(
            "snapshot of `{source}` into `{repository}`"
        )))
    }
    /// Checks a granted repository (with `read_data`, every chunk).
    fn backup_verify(
        &self,
        repository: &str,
        read_data: bool,
    ) -> Result<VerifyReport, BackupError> {
        let _ = read_data;
        Err(backup_denied(&format!("verify of `{repository}`")))
    }
    /// Restores a snapshot into a granted target.
    fn backup_restore(&self, request: &RestoreRequest) -> Result<RestoreReport, BackupError> {
        Err(backup_denied(&format!("restore into `{}`", request.target)))
    }
    /// Compares a granted directory target with a snapshot.
    fn backup_compare(
        &self,
        repository: &str,
        snapshot: &str,
        target: &str,
    ) -> Result<CompareReport, BackupError> {
        let _ = (repository, snapshot);
        Err(backup_denied(&format!("compare of `{target}`")))
    }
    /// Applies a retention policy to a granted repository.
    fn backup_forget(
        &self,
        repository: &str,
        policy: &ForgetPolicy,
        prune: bool,
    ) -> Result<ForgetReport, BackupError> {
        let _ = (policy, prune);
        Err(backup_denied(&format!("forget in `{repository}`")))
    }
    /// Snapshots of a granted repository, newest first.
    fn backup_list(
        &self,
        repository: &str,
        source: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, BackupError> {
        let _ = source;
        Err(backup_denied(&format!("list of `{repository}`")))
    }
    /// Runs a granted query command.
    fn backup_query(&self, name: &str) -> Result<QueryResult, BackupError> {
        Err(backup_denied(&format!("query `{name}`")))
    }
    /// Reads a host fact (`grants.system`).
    fn system(&self, fact: &Fact) -> Result<FactValue, SystemError> {
        Err(SystemError::Denied(format!(
            "{fact:?} is not available here"
        )))
    }
    /// Runs a declared command (`grants.exec`).
    fn exec(&self, command: &str, args: &[(&str, &str)]) -> Result<CommandResult, ExecError> {
        let _ = args;
        Err(ExecError::Denied(format!(
            "command `{command}` is not available here"
        )))
    }
    /// Reads lines of a granted log (`grants.logs`).
    fn read_logs(&self, query: &LogQuery) -> Result<LogLines, LogsError> {
        Err(LogsError::Denied(format!(
            "log `{}` is not available here",
            query.source
        )))
    }
}

fn backup_denied(what: &str) -> BackupError {
    BackupError::Denied(format!("{what} is not available here"))
}

/// Which run, environment, runbook and step an action belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Unique id of the run.
    pub run_id: String,
    /// Environment name from the manifest.
    pub environment: String,
    /// Runbook and step that invoked this action.
    pub runbook: String,
    pub step: String,
}

/// Where an action runs, and the door to the host's capabilities.
pub struct Context<'h> {
    /// True when nothing may be changed: report what would be done instead.
    pub dry_run: bool,
    /// Wall-clock deadline in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// Asked of the host the first time the action reads them (see [`Context::names`]).
    names: OnceCell<Names>,
    /// `None` inside a component: calls go straight to the host's imports, so a
    /// component imports only the capabilities its code actually calls.
    host: Option<&'h dyn Host>,
}

impl<'h> Context<'h> {
    /// A context for driving an action from native code, usually a unit test.
    pub fn new(host: &'h dyn Host) -> Self {
        Context {
            dry_run: false,
            deadline_ms: now_ms() + 60_000,
            names: OnceCell::from(Names {
                run_id: "test-run".into(),
                environment: "test".into(),
                runbook: "test".into(),
                step: "test".into(),
            }),
            host: Some(host),
        }
    }

    /// The context of a component's action, whose capabilities are the host's imports.
    pub(crate) fn component() -> Self {
        Context {
            dry_run: false,
            deadline_ms: 0,
            names: OnceCell::new(),
            host: None,
        }
    }

    /// This context with other names, for a test of a plugin that reads them.
    pub fn with_names(mut self, names: Names) -> Self {
        self.names = OnceCell::from(names);
        self
    }

    /// Which run, environment, runbook and step this action belongs to. A component
    /// asks the host the first time; an action that never reads them never pays for them.
    pub fn names(&self) -> &Names {
        self.names.get_or_init(crate::wasm::names)
    }

    /// Unique id of the run.
    pub fn run_id(&self) -> &str {
        &self.names().run_id
    }

    /// Environment name from the manifest.
    pub fn environment(&self) -> &str {
        &self.names().environment
    }

    /// The runbook that invoked this action.
    pub fn runbook(&self) -> &str {
        &self.names().runbook
    }

    /// The step of the runbook that invoked this action.
    pub fn step(&self) -> &str {
        &self.names().step
    }

    /// The host a native test drives this context with; `None` in a component.
    pub(crate) fn host(&self) -> Option<&'h dyn Host> {
        self.host
    }

    /// Time left before the host stops this action.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }

    /// Sends an HTTP request (needs `grants.http` in the manifest).
    pub fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        match self.host {
            Some(h) => h.http(request),
            None => crate::wasm::http(request),
        }
    }

    /// Sends a message to a named channel (needs `grants.notify` in the manifest).
    pub fn notify(&self, channel: &str, message: &Notification) -> Result<(), NotifyError> {
        match self.host {
            Some(h) => h.notify(channel, message),
            None => crate::wasm::notify(channel, message),
        }
    }

    /// Injects a fault (needs `grants.faults`). It is reverted when the run ends at the
    /// latest, and when its duration runs out.
    pub fn inject(&self, spec: &FaultSpec) -> Result<Fault, FaultError> {
        match self.host {
            Some(h) => h.inject(spec),
            None => crate::wasm::inject(spec),
        }
    }

    /// Reverts one of this run's faults now.
    pub fn revert_fault(&self, id: &str) -> Result<(), FaultError> {
        match self.host {
            Some(h) => h.revert_fault(id),
            None => crate::wasm::revert_fault(id),
        }
    }

    /// This run's faults that are still active.
    pub fn active_faults(&self) -> Vec<Fault> {
        match self.host {
            Some(h) => h.active_faults(),
            None => crate::wasm::active_faults(),
        }
    }

    /// Reads a secret (needs `grants.secrets` in the manifest). A secret the host cannot
    /// read is a `Failed` error; one that is not granted, `Denied`.
    pub fn secret(&self, name: &str) -> Result<String, ActionError> {
        match self.host {
            Some(h) => h.secret(name),
            None => crate::wasm::secret(name),
        }
    }

    /// Applies a verb to a service (needs `grants.services` in the manifest).
    pub fn service(&self, name: &str, verb: Verb) -> Result<ServiceStatus, ServiceError> {
        match self.host {
            Some(h) => h.service(name, verb),
            None => crate::wasm::service(name, verb),
        }
    }

    /// Backs up a granted source into a granted repository (needs `grants.backup`).
    pub fn backup_snapshot(
        &self,
        source: &str,
        repository: &str,
        tags: &[String],
    ) -> Result<SnapshotReport, BackupError> {
        match self.host {
            Some(h) => h.backup_snapshot(source, repository, tags),
            None => crate::wasm::backup_snapshot(source, repository, tags),
        }
    }

    /// Checks a granted repository; with `read_data`, re-reads and authenticates every chunk.
    pub fn backup_verify(
        &self,
        repository: &str,
        read_data: bool,
    ) -> Result<VerifyReport, BackupError> {
        match self.host {
            Some(h) => h.backup_verify(repository, read_data),
            None => crate::wasm::backup_verify(repository, read_data),
        }
    }

    /// Restores a snapshot into a granted target (a directory or a restore command).
    pub fn backup_restore(&self, request: &RestoreRequest) -> Result<RestoreReport, BackupError> {
        match self.host {
            Some(h) => h.backup_restore(request),
            None => crate::wasm::backup_restore(request),
        }
    }

    /// Compares a granted directory target with a snapshot, byte for byte.
    pub fn backup_compare(
        &self,
        repository: &str,
        snapshot: &str,
        target: &str,
    ) -> Result<CompareReport, BackupError> {
        match self.host {
            Some(h) => h.backup_compare(repository, snapshot, target),
            None => crate::wasm::backup_compare(repository, snapshot, target),
        }
    }

    /// Removes the snapshots a policy does not keep; with `prune`, frees their data.
    pub fn backup_forget(
        &self,
        repository: &str,
        policy: &ForgetPolicy,
        prune: bool,
    ) -> Result<ForgetReport, BackupError> {
        match self.host {
            Some(h) => h.backup_forget(repository, policy, prune),
            None => crate::wasm::backup_forget(repository, policy, prune),
        }
    }

    /// Snapshots in a granted repository, newest first (of one source, when given).
    pub fn backup_list(
        &self,
        repository: &str,
        source: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, BackupError> {
        match self.host {
            Some(h) => h.backup_list(repository, source),
            None => crate::wasm::backup_list(repository, source),
        }
    }

    /// Runs a granted query command (a check of a restored database, say).
    pub fn backup_query(&self, name: &str) -> Result<QueryResult, BackupError> {
        match self.host {
            Some(h) => h.backup_query(name),
            None => crate::wasm::backup_query(name),
        }
    }

    /// Writes a log line with key/value fields.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        match self.host {
            Some(h) => h.log(level, message, fields),
            None => crate::wasm::log(level, message, fields),
        }
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, &[])
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message, &[])
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn a_test_context_has_names_and_a_test_can_set_them() {
        let host = MockHost::new();
        let ctx = host.context();
        assert_eq!(
            (ctx.run_id(), ctx.environment(), ctx.runbook(), ctx.step()),
            ("test-run", "test", "test", "test")
        );
        let ctx = host.context().with_names(Names {
            run_id: "r-7".into(),
            environment: "prod".into(),
            runbook: "nightly".into(),
            step: "probe".into(),
        });
        assert_eq!(ctx.step(), "probe");
        assert_eq!(ctx.names().run_id, "r-7");
    }
}
