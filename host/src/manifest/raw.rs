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
    /// `[plugins.NAME]`: the actions this environment may run.
    #[serde(default)]
    pub plugins: BTreeMap<String, Plugin>,
    /// `[runbooks.NAME]`: named procedures made of steps.
    #[serde(default)]
    pub runbooks: BTreeMap<String, Runbook>,
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
}

/// `[[runbooks.NAME.steps]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `id = "probe"`: unique within the runbook; defaults to `uses`.
    pub id: Option<String>,
    /// `uses = "http-probe"`: a plugin declared under `[plugins]`.
    pub uses: String,
    /// `with = { … }`: params handed to the plugin as a JSON object.
    #[serde(default)]
    pub with: toml::Table,
}
