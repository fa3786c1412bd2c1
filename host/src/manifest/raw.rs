//! The manifest exactly as written: serde structs that reject unknown keys.
//! Nothing here is checked beyond its TOML type; see `validate` for the rest.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::caps::Grants as RawGrants;

/// `runcap.toml`: one environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `environment = "prod"`: shown to plugins and recorded with every run.
    pub environment: String,
    /// `[vars]`: values templates can use as `{{ vars.NAME }}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// `[services.NAME]`: services plugins may control, and how runcap drives them.
    #[serde(default)]
    pub services: BTreeMap<String, crate::services::ServiceConfig>,
    /// `[secrets.NAME]`: secret values plugins may be granted, by where they come from.
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::secrets::SecretConfig>,
    /// `[proxies.NAME]`: loopback proxies drills reach services through.
    #[serde(default)]
    pub proxies: BTreeMap<String, crate::chaos::ProxyConfig>,
    /// `[redaction]`: the rules every string runcap stores or prints passes through
    /// (default: the built-in default set); secret values are always redacted.
    #[serde(default)]
    pub redaction: Option<runcap_redact::Config>,
    /// `[plugins.NAME]`: the actions this environment may run.
    #[serde(default)]
    pub plugins: BTreeMap<String, Plugin>,
    /// `[runbooks.NAME]`: named procedures made of steps.
    #[serde(default)]
    pub runbooks: BTreeMap<String, Runbook>,
    /// `[serve]`: how `runcap serve` listens and who may call it.
    pub serve: Option<crate::serve::config::ServeConfig>,
    /// `[incidents]`: acknowledgement SLAs per severity.
    pub incidents: Option<Incidents>,
    /// `[signers]`: `NAME = "ed25519:…"`, public keys plugin signatures are checked with.
    #[serde(default)]
    pub signers: BTreeMap<String, String>,
    /// `signed_by = ["platform"]`: every plugin without its own `signed_by` must carry a
    /// signature (`FILE.sig`) by one of these signers.
    #[serde(default)]
    pub signed_by: Option<Vec<String>>,
}

/// `[plugins.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// `path = "plugins/http_probe.wasm"`, relative to the manifest's directory.
    pub path: String,
    /// `sha256 = "…"`: the plugin file's digest; a different file is refused.
    pub sha256: String,
    /// `[plugins.NAME.limits]`
    #[serde(default)]
    pub limits: Limits,
    /// `[plugins.NAME.grants]`: everything the plugin may touch. Empty means nothing.
    #[serde(default)]
    pub grants: RawGrants,
    /// `signed_by = ["platform"]`: the plugin is refused unless `FILE.sig` is a
    /// signature of its file by one of these signers (overrides the top-level list).
    #[serde(default)]
    pub signed_by: Option<Vec<String>>,
}

/// `[plugins.NAME.limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory = "64MiB"`: linear memory cap.
    pub memory: Option<String>,
    /// `time = "30s"`: wall-clock limit per action.
    pub time: Option<String>,
    /// `output = "1MiB"`: cap on the outcome, and on each of log, stdout and stderr.
    pub output: Option<String>,
}

/// `[runbooks.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// `description = "…"`: one line for `runcap runbooks` and reports.
    #[serde(default)]
    pub description: Option<String>,
    /// `[[runbooks.NAME.steps]]`, run in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// `[[runbooks.NAME.handlers]]`: steps that run only when a step's `on_failure` names them.
    #[serde(default)]
    pub handlers: Vec<Step>,
    /// `[runbooks.NAME.incident]`: what a failed run opens, and when it escalates.
    pub incident: Option<Incident>,
    /// `keep_going = true`: a failing step does not stop the run; every step runs and
    /// the run fails at the end if any failed (steps default to `on_failure = "finish"`).
    #[serde(default)]
    pub keep_going: bool,
    /// `idempotent = true`: running it twice does no harm, so a fleet controller may run
    /// it again on another host of the group when the host it ran on is lost mid-run.
    #[serde(default)]
    pub idempotent: bool,
    /// `overlap = "wait"` (default) or `"refuse"`: what a run does while another run of
    /// this runbook (from any runcap sharing the state directory) is under way.
    pub overlap: Option<String>,
    /// `[runbooks.NAME.params.P]`: values a run is given with `--var P=VALUE`.
    #[serde(default)]
    pub params: BTreeMap<String, super::params::RawParam>,
    /// `schedule = { every = "30s" }` or `{ cron = "*/15 * * * *" }`: when `runcap serve`
    /// runs it.
    pub schedule: Option<crate::serve::config::ScheduleConfig>,
}

/// `[runbooks.NAME.incident]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// `severity = "high"`: critical, high, medium or low.
    pub severity: Option<String>,
    /// `escalate_after = 2`: consecutive failed runs that trigger the escalation steps.
    pub escalate_after: Option<u32>,
    /// `[[runbooks.NAME.incident.escalate]]`: steps run once when the threshold is reached.
    #[serde(default)]
    pub escalate: Vec<Step>,
    /// `[[runbooks.NAME.incident.tiers]]`: escalation tiers, each run once per incident.
    #[serde(default)]
    pub tiers: Vec<Tier>,
}

/// `[[runbooks.NAME.incident.tiers]]`: one escalation tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// `name = "lead"`: how the incident's timeline calls it (default `tier N`).
    pub name: Option<String>,
    /// `after = 2` (consecutive failed runs), `after = "30m"` (open this long without
    /// an acknowledgement) or `after = "sla"` (its severity's `ack_within` passed).
    pub after: toml::Value,
    /// The steps run when it is reached.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// `[incidents]`: what applies to every runbook's incidents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incidents {
    /// `sla = { critical = "15m", high = "1h" }`: how soon an incident of each severity
    /// must be acknowledged; `runcap serve` records a miss and runs `after = "sla"` tiers.
    #[serde(default)]
    pub sla: BTreeMap<String, String>,
}

/// `rollback = { uses = "…", with = { … } }`: undoes a step if the run aborts later.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub uses: String,
    #[serde(default)]
    pub with: toml::Table,
    pub timeout: Option<String>,
}

/// `[[runbooks.NAME.steps]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `id = "probe"`: unique within the runbook; defaults to `uses`.
    pub id: Option<String>,
    /// `uses = "http-probe"`: a plugin declared under `[plugins]`.
    pub uses: String,
    /// `with = { … }`: params handed to the plugin as a JSON object; strings may hold
    /// templates (`"{{ steps.probe.details.status }}"`).
    #[serde(default)]
    pub with: toml::Table,
    /// `when = "steps.probe.status == 'fail'"`: run only if this is true.
    pub when: Option<String>,
    /// `timeout = "10s"`: shorter than the plugin's time limit, per attempt.
    pub timeout: Option<String>,
    /// `retries = 2`: attempts after the first when the step fails.
    pub retries: Option<u32>,
    /// `backoff = "1s"`: delay before the first retry; doubles each time, with jitter.
    pub backoff: Option<String>,
    /// `backoff_max = "30s"`: the longest delay between retries.
    pub backoff_max: Option<String>,
    /// `on_failure = "abort"` (default), `"continue"`, or `["handler", …]`.
    pub on_failure: Option<toml::Value>,
    /// `rollback = { uses = "…", with = { … } }`
    pub rollback: Option<Rollback>,
    /// `watch = { every = "30s", for = "15m" }`: repeat the check; see [`Watch`].
    pub watch: Option<Watch>,
}

/// `watch = { every = "30s", for = "15m", until = "ok" }`: the step's action runs every
/// `every` for `for`. Without `until` it must pass every time (monitoring); with
/// `until = "ok"` it runs until it passes once (waiting for a condition).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub every: String,
    #[serde(rename = "for")]
    pub duration: String,
    pub until: Option<String>,
}
