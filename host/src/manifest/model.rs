//! The validated environment: what the engine and the runbook runner consume.
//! Every value here has been checked; paths are absolute; units are parsed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use super::compose::Sources;
use super::source::KeyPath;
use crate::caps::ValidGrants;
use crate::caps::compare::{Change, ChangeKind, fmt_duration, fmt_size};

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
    pub services: BTreeMap<String, crate::services::ServiceDef>,
    /// Secrets plugins may be granted, by name.
    pub secrets: BTreeMap<String, crate::secrets::SecretSource>,
    /// Drill proxies, by name.
    pub proxies: BTreeMap<String, crate::chaos::ProxyDef>,
    /// Rules for host-side redaction (`[redaction]`), already checked to build.
    pub redaction: runcap_redact::Config,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub runbooks: BTreeMap<String, Runbook>,
    /// How `runcap serve` listens and who may call it.
    pub serve: crate::serve::config::ServeSettings,
    /// How soon an incident must be acknowledged, per severity (`[incidents] sla`).
    pub sla: BTreeMap<crate::store::records::Severity, Duration>,
    /// Public keys plugin signatures are checked with, by signer name.
    pub signers: BTreeMap<String, crate::signing::PublicKey>,
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
    /// The signer whose key verifies the file's signature (`FILE.sig`), when one does;
    /// always set for a plugin whose manifest requires a signature.
    pub signer: Option<String>,
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

impl Limits {
    /// Effective limits of a `[plugins.NAME]` table as written: as written, defaults for
    /// the rest (and for values that do not parse, which validation reports).
    pub fn of_plugin(plugin: &toml::Value) -> Limits {
        Self::from_written(plugin.get("limits"))
    }

    /// Effective limits from a `limits` table as written.
    pub fn from_written(limits: Option<&toml::Value>) -> Limits {
        let mut l = Limits::default();
        let get = |k: &str| limits.and_then(|t| t.get(k)).and_then(|v| v.as_str());
        if let Some(m) = get("memory").and_then(|s| super::units::parse_size(s).ok()) {
            l.memory = m;
        }
        if let Some(t) = get("time").and_then(|s| super::units::parse_duration(s).ok()) {
            l.time = t;
        }
        if let Some(o) = get("output").and_then(|s| super::units::parse_size(s).ok()) {
            l.output = o;
        }
        l
    }

    /// Every difference from `self` to `new`, located below `limits`: more memory, time
    /// or output widens.
    pub fn diff(&self, new: &Limits) -> Vec<Change> {
        let mut out = Vec::new();
        let at = KeyPath::root().key("limits");
        let mut push = |key: &str, o: u128, n: u128, show: &dyn Fn(u128) -> String| {
            if o == n {
                return;
            }
            let kind = if n > o {
                ChangeKind::Widened
            } else {
                ChangeKind::Narrowed
            };
            out.push(Change::new(
                at.key(key),
                kind,
                format!("{key} {} → {}", show(o), show(n)),
            ));
        };
        push("memory", self.memory.into(), new.memory.into(), &|b| {
            fmt_size(b as u64)
        });
        push("time", self.time.as_millis(), new.time.as_millis(), &|ms| {
            fmt_duration(Duration::from_millis(ms as u64))
        });
        push("output", self.output.into(), new.output.into(), &|b| {
            fmt_size(b as u64)
        });
        out
    }
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
    /// Every step runs even when one fails; the run then fails at the end.
    pub keep_going: bool,
    /// Safe to run again elsewhere when its host is lost mid-run (`idempotent = true`).
    pub idempotent: bool,
    /// What a run does while another run of this runbook is under way.
    pub overlap: Overlap,
    /// Values a run is given (`--var NAME=VALUE`), read by templates as `params.NAME`.
    pub params: BTreeMap<String, super::params::Param>,
    /// When `runcap serve` runs it.
    pub schedule: Option<crate::serve::config::Schedule>,
}

/// What a run does while another run of the same runbook holds its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Wait for the other run to end, then run.
    #[default]
    Wait,
    /// Do not run; say which run holds the lock.
    Refuse,
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
    /// Repeats the action over a period instead of running it once.
    pub watch: Option<Watch>,
}

/// A step that repeats its check: every `every` for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub every: Duration,
    pub duration: Duration,
    /// Passing once ends the watch (waiting for a condition); otherwise every check
    /// must pass for the whole duration (monitoring).
    pub until_ok: bool,
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
    /// Record the failure and go on; the run fails when its steps are done.
    Finish,
    /// Run these handlers, then abort.
    Run(Vec<String>),
}

/// What a failed run of this runbook opens, and how it escalates.
#[derive(Debug, Clone)]
pub struct IncidentPolicy {
    pub severity: crate::store::records::Severity,
    /// Escalation tiers, each reached at most once per incident (`escalate_after` with
    /// `escalate` is the first).
    pub tiers: Vec<Tier>,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            severity: crate::store::records::Severity::High,
            tiers: Vec::new(),
        }
    }
}

/// One escalation tier: when it is reached, and the steps it runs then.
#[derive(Debug, Clone)]
pub struct Tier {
    /// How the incident's timeline calls it.
    pub name: String,
    pub after: TierAfter,
    pub steps: Vec<Step>,
    /// Where its steps are written, for diagnostics.
    pub at: KeyPath,
}

impl IncidentPolicy {
    /// Every tier's steps, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.tiers.iter().flat_map(|t| &t.steps)
    }
}

/// When an escalation tier is reached. Nothing escalates an acknowledged incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierAfter {
    /// This many consecutive failed runs (checked when a run fails).
    Failures(u32),
    /// Open this long without an acknowledgement (checked by `runcap serve`).
    Unacknowledged(Duration),
    /// Open past its severity's `[incidents] sla` without an acknowledgement (checked by
    /// `runcap serve`).
    Sla,
}

impl TierAfter {
    /// The phrase the timeline uses: "after 2 consecutive failed runs".
    pub fn describe(&self) -> String {
        match self {
            TierAfter::Failures(n) => format!("after {n} consecutive failed runs"),
            TierAfter::Unacknowledged(d) => {
                format!("after {} without an acknowledgement", fmt_duration(*d))
            }
            TierAfter::Sla => "after its acknowledgement SLA was missed".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_compare_by_value() {
        let old = Limits::default();
        let new = Limits {
            memory: 128 << 20,
            time: Duration::from_secs(10),
            ..Limits::default()
        };
        let c = old.diff(&new);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].kind, ChangeKind::Widened);
        assert_eq!(c[0].what, "memory 64MiB → 128MiB");
        assert_eq!(c[1].kind, ChangeKind::Narrowed);
        assert_eq!(c[1].what, "time 30s → 10s");
        assert_eq!(fmt_size(1536 << 10), "1536KiB");
        assert_eq!(fmt_size(1000), "1000B");
    }
}
