//! What an action sees of the world: its run context and the host's capabilities.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::faults::{Fault, FaultError, FaultSpec};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::notify::{Notification, NotifyError};
use crate::outcome::ActionError;
use crate::services::{ServiceError, ServiceStatus, Verb};

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
}

/// Where an action runs, and the door to the host's capabilities.
pub struct Context<'h> {
    /// Unique id of the run.
    pub run_id: String,
    /// Environment name from the manifest.
    pub environment: String,
    /// Runbook and step that invoked this action.
    pub runbook: String,
    pub step: String,
    /// True when nothing may be changed: report what would be done instead.
    pub dry_run: bool,
    /// Wall-clock deadline in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// `None` inside a component: calls go straight to the host's imports, so a
    /// component imports only the capabilities its code actually calls.
    host: Option<&'h dyn Host>,
}

impl<'h> Context<'h> {
    /// A context for driving an action from native code, usually a unit test.
    pub fn new(host: &'h dyn Host) -> Self {
        Context {
            run_id: "test-run".into(),
            environment: "test".into(),
            runbook: "test".into(),
            step: "test".into(),
            dry_run: false,
            deadline_ms: now_ms() + 60_000,
            host: Some(host),
        }
    }

    /// The context of a component's action, whose capabilities are the host's imports.
    pub(crate) fn component() -> Self {
        Context {
            run_id: String::new(),
            environment: String::new(),
            runbook: String::new(),
            step: String::new(),
            dry_run: false,
            deadline_ms: 0,
            host: None,
        }
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
