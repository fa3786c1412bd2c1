//! Runbooks: ordered steps, each an action of a declared plugin.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::engine::{Plugin, Runtime};
use crate::manifest::{Environment, Runbook};
use crate::runner::{self, ActionReport, FailureKind, Invocation, Status};

/// The result of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub uses: String,
    #[serde(flatten)]
    pub action: ActionReport,
}

/// The result of one runbook run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub environment: String,
    pub runbook: String,
    pub dry_run: bool,
    pub status: Status,
    pub started_at_ms: u64,
    pub duration_ms: f64,
    pub steps: Vec<StepReport>,
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
}

/// Loads the plugins a runbook uses; a plugin that fails to load is kept as its error
/// so the steps that use it fail and the others still run.
pub fn load_plugins(
    runtime: &Runtime,
    env: &Environment,
    runbook: &Runbook,
) -> BTreeMap<String, Result<Plugin, String>> {
    let mut loaded = BTreeMap::new();
    for step in &runbook.steps {
        if loaded.contains_key(&step.uses) {
            continue;
        }
        let result = match env.plugins.get(&step.uses) {
            Some(spec) => runtime.load(spec).map_err(|e| e.to_string()),
            None => Err(format!("plugin `{}` is not declared", step.uses)),
        };
        loaded.insert(step.uses.clone(), result);
    }
    loaded
}

/// Runs every step in order and reports each, calling `progress` before and after each step.
pub async fn run(
    runtime: &Runtime,
    env: &Environment,
    runbook: &Runbook,
    plugins: &BTreeMap<String, Result<Plugin, String>>,
    options: &RunOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> RunReport {
    let run_id = new_run_id();
    let started = Instant::now();
    let started_at_ms = crate::caps::now_ms();
    let mut steps = Vec::new();
    for step in &runbook.steps {
        progress(Progress::Started {
            step: &step.id,
            uses: &step.uses,
        });
        let action = match plugins.get(&step.uses) {
            Some(Ok(plugin)) => {
                let inv = Invocation {
                    run_id: run_id.clone(),
                    environment: env.name.clone(),
                    runbook: runbook.name.clone(),
                    step: step.id.clone(),
                    dry_run: options.dry_run,
                    timeout: None,
                };
                runner::run_action(runtime, plugin, &inv, &step.with).await
            }
            Some(Err(e)) => ActionReport::failed(FailureKind::Load, e.clone()),
            None => ActionReport::failed(
                FailureKind::Load,
                format!("plugin `{}` is not loaded", step.uses),
            ),
        };
        let report = StepReport {
            id: step.id.clone(),
            uses: step.uses.clone(),
            action,
        };
        progress(Progress::Finished { step: &report });
        steps.push(report);
    }
    let status = steps
        .iter()
        .map(|s| s.action.status)
        .max()
        .unwrap_or(Status::Ok);
    RunReport {
        run_id,
        environment: env.name.clone(),
        runbook: runbook.name.clone(),
        dry_run: options.dry_run,
        status,
        started_at_ms,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps,
    }
}

/// Live progress of a run, for the terminal.
pub enum Progress<'a> {
    Started { step: &'a str, uses: &'a str },
    Finished { step: &'a StepReport },
}

/// A run id that sorts by time: milliseconds since the epoch and a random suffix.
pub fn new_run_id() -> String {
    let ms = crate::caps::now_ms();
    let mut rand = [0u8; 3];
    getrandom::fill(&mut rand).unwrap_or_default();
    format!("{ms:x}-{}", hex::encode(rand))
}
