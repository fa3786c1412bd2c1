//! The validated environment: what the engine and the runbook runner consume.
//! Every value here has been checked; paths are absolute; units are parsed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::source::SourceFile;
use std::time::Duration;

use crate::caps::ValidGrants;

/// One environment, ready to run.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// The manifest file it was loaded from.
    pub file: PathBuf,
    /// Its text, so later checks can point at lines too.
    pub source: Arc<SourceFile>,
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
}

/// One action in a runbook.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// Name of the plugin it runs.
    pub uses: String,
    /// Params as a JSON object.
    pub with: serde_json::Value,
}
