//! The validated environment: what the engine and the runbook runner consume.
//! Every value here has been checked; paths are absolute; units are parsed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::compose::Sources;
use std::time::Duration;

use crate::caps::ValidGrants;

/// One environment, ready to run.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// The manifest file it was loaded from.
    pub file: PathBuf,
    /// Its text and that of every base it extends, and which file wrote each value,
    /// so later checks can point at lines too.
    pub source: Arc<Sources>,
    pub vars: BTreeMap<String, String>,
    /// Services plugins may control, by name.
    pub services: BTreeMap<String, crate::caps::services::ServiceDef>,
    /// Secrets plugins may be granted, by name.
    pub secrets: BTreeMap<String, crate::caps::secrets::SecretSource>,
    /// Drill proxies, by name.
    pub proxies: BTreeMap<String, crate::caps::faults::ProxyDef>,
    /// Rules for host-side redaction (`[redaction]`), already checked to build.
    pub redaction: runcap_redact::Config,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub runbooks: BTreeMap<String, Runbook>,
}

/// A plugin as the manifest declares it.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    /// Lower-case hex sha256 the file must have.
    pub sha256: String,
    pub limits: Limits,
    pub grants: ValidGrants,
}

/// Resource limits of one plugin's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub time: Duration,
    pub output: u64,
}

impl Limits {
    pub const DEFAULT_MEMORY: u64 = 64 << 20;
    pub const DEFAULT_TIME: Duration = Duration::from_secs(30);
    pub const DEFAULT_OUTPUT: u64 = 1 << 20;
    /// No plugin may be given more linear memory than this.
    pub const MAX_MEMORY: u64 = 1 << 30;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Self::DEFAULT_MEMORY,
            time: Self::DEFAULT_TIME,
            output: Self::DEFAULT_OUTPUT,
        }
    }
}

/// A named, ordered procedure.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<Step>,
    /// Steps run only when a failing step's `on_failure` names them.
    pub handlers: Vec<Step>,
    pub incident: IncidentPolicy,
}

impl Runbook {
    /// A handler by id.
    pub fn handler(&self, id: &str) -> Option<&Step> {
        self.handlers.iter().find(|h| h.id == id)
    }
}

/// One action in a runbook.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// Name of the plugin it runs.
    pub uses: String,
    /// Params as a JSON object; strings may be templates.
    pub with: serde_json::Value,
    /// A condition on earlier steps; the step is skipped when it is false.
    pub when: Option<String>,
    /// Per-attempt time limit, if shorter than the plugin's.
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub on_failure: OnFailure,
    /// Undoes this step if the run aborts after it completed.
    pub rollback: Option<Box<Step>>,
}

/// How a failing step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubles after each, up to `max`.
    pub backoff: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retries: 0,
            backoff: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// What a step's failure does to the run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Stop, run the rollbacks of completed steps, fail the run.
    #[default]
    Abort,
    /// Record the failure and go on; the run is not failed by it.
    Continue,
    /// Run these handlers, then abort.
    Run(Vec<String>),
}

/// What a failed run of this runbook opens, and when it escalates.
#[derive(Debug, Clone)]
pub struct IncidentPolicy {
    pub severity: String,
    /// Consecutive failed runs that trigger `escalate`; 0 never escalates.
    pub escalate_after: u32,
    pub escalate: Vec<Step>,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            severity: "high".into(),
            escalate_after: 0,
            escalate: Vec::new(),
        }
    }
}
