//! Runbooks: ordered steps with conditions, retries, failure policies, handlers,
//! rollbacks and incident escalation, recorded in the store as they happen.
//!
//! A run goes through the main steps in order. A step whose `when` is false is skipped.
//! A failing step is retried (exponential backoff with jitter) unless its failure cannot
//! change on retry (denied, invalid params, load errors). If it still fails, its
//! `on_failure` decides: `continue` records the failure and goes on, `abort` (the
//! default) stops, and a handler list runs those handlers and stops. A stopped run,
//! including one cancelled by Ctrl-C or SIGTERM, runs the rollbacks of completed steps in
//! reverse order. A failed run opens or updates the runbook's incident and runs the
//! steps of each escalation tier its consecutive failures reach (once per incident).

pub mod incident;
pub mod lock;
mod steps;
pub mod stop;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tracing::Instrument;

use crate::caps::{Resources, now_ms};
use crate::engine::{Plugin, Runtime};
use crate::manifest::{Environment, OnFailure, Runbook};
use crate::runner::{ActionReport, Status};
pub use crate::store::records::{Phase, RunStatus};
use crate::store::{RunStart, Store};
pub use steps::Rollbacks;
pub use stop::{StopLevel, StopSignal, Stopper};

/// The result of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub uses: String,
    pub phase: Phase,
    pub attempts: u32,
    /// The step failed and `on_failure = "continue"` let the run go on.
    pub continued: bool,
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
    pub status: RunStatus,
    /// The step that stopped the run, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    pub started_at_ms: u64,
    pub duration_ms: f64,
    pub steps: Vec<StepReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<incident::IncidentUpdate>,
    /// Faults still open when the run ended, and how each was reverted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reverted_faults: Vec<RevertedFault>,
    /// What became of the rollbacks of completed steps, when the run stopped.
    pub rollbacks: Rollbacks,
}

/// A fault the end of a run reverted.
#[derive(Debug, Clone, Serialize)]
pub struct RevertedFault {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub ok: bool,
    pub result: String,
}

/// Options of one run.
#[derive(Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Where the run is recorded; without one nothing is kept.
    pub store: Option<Arc<Store>>,
    /// Raised when the run must stop (Ctrl-C, SIGTERM, a server shutting down).
    pub stop: StopSignal,
    /// Faults injected during the run are reverted through it when the run ends.
    pub faults: Option<Arc<crate::chaos::FaultManager>>,
    /// The run's id, when the caller needs it before the run starts; a new one otherwise.
    pub run_id: Option<String>,
    /// More values templates can read, beside `steps`, `vars` and `run` (`trigger`).
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Records every action's capability calls, or answers them from a recording.
    pub tape: Option<crate::caps::tape::SharedTape>,
    /// One action asked for by hand (`runcap call`): recorded like any run, but its
    /// failure opens no incident.
    pub ad_hoc: bool,
    /// Told once the run's start is in the store: a fleet agent acknowledges a job only
    /// then, so a job is never lost between delivery and record.
    pub recorded: Option<Arc<tokio::sync::Notify>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            store: None,
            stop: StopSignal::never(),
            faults: None,
            run_id: None,
            context: serde_json::Map::new(),
            tape: None,
            ad_hoc: false,
            recorded: None,
        }
    }
}

/// Live progress of a run, for the terminal.
pub enum Progress<'a> {
    Started {
        step: &'a str,
        uses: &'a str,
        phase: Phase,
    },
    Retrying {
        step: &'a str,
        attempt: u32,
        delay: Duration,
        reason: &'a str,
    },
    /// A check of a watched step ended and the watch goes on.
    Watching {
        step: &'a str,
        check: u32,
        status: Status,
        summary: &'a str,
    },
    Finished {
        step: &'a StepReport,
    },
}

/// Why a plugin a runbook uses is not there for its steps (which then fail, while
/// steps using other plugins still run).
#[derive(Debug, thiserror::Error)]
pub enum PluginUnavailable {
    #[error(transparent)]
    Load(#[from] crate::engine::LoadError),
    #[error("plugin `{0}` is not declared")]
    Undeclared(String),
    /// A recovered run's rollback names a plugin the manifest has dropped since.
    #[error("plugin `{plugin}` is no longer declared in {}", file.display())]
    NoLongerDeclared {
        plugin: String,
        file: std::path::PathBuf,
    },
}

/// Plugins loaded for a run, or why each could not be.
pub type Loaded = BTreeMap<String, Result<Plugin, PluginUnavailable>>;

/// Loads every plugin a runbook may use (steps, handlers, rollbacks, escalations); a
/// plugin that fails to load is kept as its error, so only the steps using it fail.
pub fn load_plugins(
    runtime: &Runtime,
    env: &Environment,
    resources: &Resources,
    runbook: &Runbook,
) -> Loaded {
    plugins_used(runbook)
        .into_iter()
        .map(|name| (name.to_string(), load_plugin(runtime, env, resources, name)))
        .collect()
}

/// The plugins a runbook may use: its steps', handlers', rollbacks' and escalations'.
pub fn plugins_used(runbook: &Runbook) -> std::collections::BTreeSet<&str> {
    runbook
        .steps
        .iter()
        .chain(&runbook.handlers)
        .chain(runbook.incident.steps())
        .flat_map(|s| std::iter::once(s).chain(s.rollback.as_deref()))
        .map(|s| s.uses.as_str())
        .collect()
}

/// Loads the plugin the environment declares as `name`.
pub fn load_plugin(
    runtime: &Runtime,
    env: &Environment,
    resources: &Resources,
    name: &str,
) -> Result<Plugin, PluginUnavailable> {
    match env.plugins.get(name) {
        Some(spec) => runtime
            .load(spec, resources)
            .map_err(PluginUnavailable::from),
        None => Err(PluginUnavailable::Undeclared(name.to_string())),
    }
}

/// Runs a runbook from start to end and reports every step.
pub async fn run(
    runtime: &Runtime,
    env: &Environment,
    runbook: &Runbook,
    plugins: &Loaded,
    options: &RunOptions,
    progress: impl FnMut(Progress<'_>),
) -> RunReport {
    let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
    let span = tracing::info_span!(
        "run",
        run_id = %run_id,
        runbook = %runbook.name,
        environment = %env.name,
        dry_run = options.dry_run
    );
    run_with_id(runtime, env, runbook, plugins, options, progress, run_id)
        .instrument(span)
        .await
}

async fn run_with_id(
    runtime: &Runtime,
    env: &Environment,
    runbook: &Runbook,
    plugins: &Loaded,
    options: &RunOptions,
    progress: impl FnMut(Progress<'_>),
    run_id: String,
) -> RunReport {
    let started = Instant::now();
    let started_at_ms = now_ms();
    let context = initial_context(env, runbook, options, &run_id);
    let mut run = steps::Run {
        runtime,
        env,
        runbook: runbook.name.clone(),
        plugins,
        options,
        progress,
        context,
        run_id,
        seq: 0,
        reports: Vec::new(),
        rollbacks: Vec::new(),
    };
    record_start(&run, env, runbook);
    tracing::info!("run started");
    let main = main_steps(&mut run, runbook).await;
    let ended = end_run(&mut run, runbook, &main).await;
    RunReport {
        run_id: run.run_id,
        environment: env.name.clone(),
        runbook: runbook.name.clone(),
        dry_run: options.dry_run,
        status: ended.status,
        failed_step: main.failed_step,
        started_at_ms,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps: run.reports,
        incident: ended.incident,
        reverted_faults: ended.reverted_faults,
        rollbacks: ended.rollbacks,
    }
}

/// What templates see when the run starts: vars, the run, the caller's context (a
/// trigger's alert, params) and, when the caller gave none, the params' defaults.
fn initial_context(
    env: &Environment,
    runbook: &Runbook,
    options: &RunOptions,
    run_id: &str,
) -> serde_json::Value {
    let mut context = serde_json::json!({
        "steps": {},
        "vars": env.vars,
        "run": {"id": run_id, "runbook": runbook.name, "environment": env.name, "dry_run": options.dry_run},
    });
    for (k, v) in &options.context {
        context[k.as_str()] = v.clone();
    }
    if context.get("params").is_none() {
        // A caller that gave no values gets the defaults; a required parameter then
        // fails the first step that reads it.
        context["params"] = runbook
            .params
            .iter()
            .filter_map(|(k, p)| Some((k.clone(), p.default.clone()?)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    context
}

/// Records the run's start in the store, if there is one, and tells a caller waiting
/// for that record (a fleet job is acknowledged only once its run is recorded).
fn record_start<P: FnMut(Progress<'_>)>(
    run: &steps::Run<'_, P>,
    env: &Environment,
    runbook: &Runbook,
) {
    if let Some(store) = run.store() {
        run.note(
            "the run start",
            store.begin_run(&RunStart {
                id: &run.run_id,
                environment: &env.name,
                runbook: &runbook.name,
                manifest: &env.file,
                dry_run: run.options.dry_run,
            }),
        );
    }
    if let Some(recorded) = &run.options.recorded {
        if let Some(store) = run.store() {
            store.sync();
        }
        recorded.notify_one();
    }
}

/// How a run ended, once its main steps are done.
struct Ended {
    status: RunStatus,
    rollbacks: Rollbacks,
    reverted_faults: Vec<RevertedFault>,
    incident: Option<incident::IncidentUpdate>,
}

/// Ends a run after its main steps: rolls back if it failed or was cancelled, reverts
/// its faults, records its result and updates its incident.
async fn end_run<P: FnMut(Progress<'_>)>(
    run: &mut steps::Run<'_, P>,
    runbook: &Runbook,
    main: &MainSteps,
) -> Ended {
    let cancelled = run.cancelled();
    let rollbacks = if main.failed_step.is_some() || cancelled {
        run.roll_back().await
    } else {
        Rollbacks::default()
    };
    let reverted_faults = revert_faults(run, cancelled).await;
    let status = run_status(run, main, cancelled, &reverted_faults);
    let summary = run_summary(runbook, main, status, &rollbacks);
    tracing::info!(status = %status, "run finished: {summary}");
    if let Some(store) = run.store() {
        run.note(
            "the run result",
            store.finish_run(&run.run_id, status, &summary),
        );
    }
    let incident = if status == RunStatus::Cancelled || run.options.dry_run {
        None
    } else {
        update_incident(run, runbook, status, main, &summary).await
    };
    Ended {
        status,
        rollbacks,
        reverted_faults,
        incident,
    }
}

/// How the main steps went.
struct MainSteps {
    /// The step that stopped the run, if one did.
    failed_step: Option<String>,
    /// A step failed and `on_failure = "continue"` let the run go on.
    continued_failure: bool,
    /// Steps that failed with `on_failure = "finish"`: the run went on and fails at the end.
    finish_failures: Vec<String>,
}

/// Runs the main steps in order, with their conditions, failure policies and handlers,
/// registering the rollback of each step that completes.
async fn main_steps<P: FnMut(Progress<'_>)>(
    run: &mut steps::Run<'_, P>,
    runbook: &Runbook,
) -> MainSteps {
    let mut out = MainSteps {
        failed_step: None,
        continued_failure: false,
        finish_failures: Vec::new(),
    };
    for step in &runbook.steps {
        if run.cancelled() {
            break;
        }
        match run.condition(step) {
            Ok(false) => {
                run.skip(step, Phase::Main);
                continue;
            }
            Ok(true) => {}
            Err(e) => {
                run.fail_early(step, Phase::Main, e.to_string());
                out.failed_step = Some(step.id.clone());
                break;
            }
        }
        let mut report = run.step(step, Phase::Main).await;
        let failed = report.action.status == Status::Fail;
        if !failed {
            run.register_rollback(step);
        }
        if failed && !run.cancelled() {
            match step.on_failure {
                OnFailure::Continue => {
                    report.continued = true;
                    out.continued_failure = true;
                }
                OnFailure::Finish => {
                    report.continued = true;
                    out.finish_failures.push(step.id.clone());
                }
                _ => {}
            }
        }
        (run.progress)(Progress::Finished { step: &report });
        run.reports.push(report);
        if !failed {
            continue;
        }
        match &step.on_failure {
            OnFailure::Continue | OnFailure::Finish if !run.cancelled() => continue,
            OnFailure::Run(names) => {
                let handlers: Vec<_> = names
                    .iter()
                    .filter_map(|n| runbook.handler(n).cloned())
                    .collect();
                run.side_steps(&handlers, Phase::Handler).await;
            }
            _ => {}
        }
        out.failed_step = Some(step.id.clone());
        break;
    }
    if out.failed_step.is_none() {
        out.failed_step = out.finish_failures.first().cloned();
    }
    out
}

/// Reverts every fault the run injected, whatever happened; a journal that cannot be
/// read is reported as a revert that failed.
async fn revert_faults<P: FnMut(Progress<'_>)>(
    run: &steps::Run<'_, P>,
    cancelled: bool,
) -> Vec<RevertedFault> {
    let Some(f) = &run.options.faults else {
        return Vec::new();
    };
    let by = if cancelled { "signal" } else { "run-end" };
    match f.revert_run(&run.run_id, by).await {
        Ok(reverted) => reverted
            .into_iter()
            .map(|(row, result)| {
                let (ok, result) = match result {
                    Ok(t) => (true, t),
                    Err(e) => (false, e.to_string()),
                };
                RevertedFault {
                    id: row.id,
                    kind: row.kind.as_str().to_string(),
                    target: row.target,
                    ok,
                    result,
                }
            })
            .collect(),
        Err(e) => {
            tracing::error!(run = %run.run_id, "cannot revert this run's faults: {e}");
            vec![RevertedFault {
                id: String::new(),
                kind: String::new(),
                target: String::new(),
                ok: false,
                result: format!("cannot read the fault journal to revert this run's faults: {e}"),
            }]
        }
    }
}

/// How the run ended: cancelled, failed (a step stopped it, or a fault could not be
/// reverted), warn (a warning, or a failure let through by `continue`), or ok.
fn run_status<P: FnMut(Progress<'_>)>(
    run: &steps::Run<'_, P>,
    main: &MainSteps,
    cancelled: bool,
    reverted_faults: &[RevertedFault],
) -> RunStatus {
    let worst = run
        .reports
        .iter()
        .filter(|r| r.phase == Phase::Main && !r.continued)
        .map(|r| r.action.status)
        .max()
        .unwrap_or(Status::Ok);
    if cancelled {
        RunStatus::Cancelled
    } else if main.failed_step.is_some() || reverted_faults.iter().any(|f| !f.ok) {
        RunStatus::Fail
    } else if worst == Status::Warn || main.continued_failure {
        RunStatus::Warn
    } else {
        RunStatus::Ok
    }
}

/// One line for the store and reports, saying what happened to the rollbacks too.
fn run_summary(
    runbook: &Runbook,
    main: &MainSteps,
    status: RunStatus,
    rollbacks: &Rollbacks,
) -> String {
    let mut summary = match (&main.failed_step, status) {
        (_, RunStatus::Cancelled) => "cancelled".to_string(),
        (Some(s), _) if main.finish_failures.first() == Some(s) => {
            let (n, total) = (main.finish_failures.len(), runbook.steps.len());
            format!(
                "{n} of {total} steps failed: {}",
                main.finish_failures.join(", ")
            )
        }
        (Some(s), _) => format!("failed at step {s}"),
        (None, RunStatus::Fail) => "a fault could not be reverted".to_string(),
        (None, s) => format!("{} steps, {}", runbook.steps.len(), s.as_str()),
    };
    if rollbacks.pending > 0 {
        summary += &format!("; {} rollbacks pending", rollbacks.pending);
    }
    if rollbacks.failed > 0 {
        summary += &format!("; {} rollbacks failed", rollbacks.failed);
    }
    summary
}

/// Opens, counts or resolves the runbook's incident, and runs its escalation steps once
/// when the count reaches the threshold.
async fn update_incident<P: FnMut(Progress<'_>)>(
    run: &mut steps::Run<'_, P>,
    runbook: &Runbook,
    status: RunStatus,
    main: &MainSteps,
    summary: &str,
) -> Option<incident::IncidentUpdate> {
    if run.options.ad_hoc {
        return None;
    }
    let store = run.options.store.clone()?;
    let update = if status == RunStatus::Fail {
        let failed = main.failed_step.clone().unwrap_or_default();
        incident::on_run_failed(&store, run.env, runbook, &run.run_id, &failed, summary).map(Some)
    } else {
        incident::on_run_succeeded(&store, run.env, runbook, &run.run_id)
    };
    let update = match update {
        Ok(u) => u?,
        Err(e) => {
            tracing::error!("could not update the incident: {e}");
            return None;
        }
    };
    if update.escalated_now {
        run.context["incident"] = serde_json::to_value(&update).unwrap_or_default();
        for tier in &update.tiers_now {
            let Some(tier) = runbook.incident.tiers.get(*tier as usize) else {
                continue;
            };
            run.context["incident"]["tier"] = tier.name.clone().into();
            let before = run.reports.len();
            run.side_steps(&tier.steps, Phase::Escalation).await;
            incident::note_escalation_steps(&store, update.id, &run.run_id, &run.reports[before..]);
        }
    }
    Some(update)
}

/// Runs the rollbacks an interrupted or cancelled run left pending, newest first, with
/// the same machinery as a run (records, rollback states, stop requests), and audits
/// the recovery.
pub async fn recover(
    runtime: &Runtime,
    env: &Environment,
    resources: &Resources,
    store: &Arc<Store>,
    interrupted: &crate::store::Interrupted,
    stop: StopSignal,
    progress: impl FnMut(Progress<'_>),
) -> (Vec<StepReport>, Rollbacks) {
    let run_id = interrupted.run_id.clone();
    let span = tracing::info_span!("recover", run_id = %run_id, runbook = %interrupted.runbook);
    async {
        let mut plugins = Loaded::new();
        for rb in &interrupted.pending_rollbacks {
            plugins
                .entry(rb.uses.clone())
                .or_insert_with(|| match env.plugins.get(&rb.uses) {
                    Some(spec) => runtime
                        .load(spec, resources)
                        .map_err(PluginUnavailable::from),
                    None => Err(PluginUnavailable::NoLongerDeclared {
                        plugin: rb.uses.clone(),
                        file: env.file.clone(),
                    }),
                });
        }
        let options = RunOptions {
            store: Some(store.clone()),
            stop,
            faults: Some(resources.faults.clone()),
            ..RunOptions::default()
        };
        let seq = match store.next_step_seq(&run_id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot read the steps of {run_id}: {e}");
                10_000
            }
        };
        let mut run = steps::Run {
            runtime,
            env,
            runbook: interrupted.runbook.clone(),
            plugins: &plugins,
            options: &options,
            progress,
            context: serde_json::json!({"steps": {}}),
            run_id: run_id.clone(),
            seq,
            reports: Vec::new(),
            // Oldest first, as a run registers them; they run newest first.
            rollbacks: interrupted
                .pending_rollbacks
                .iter()
                .rev()
                .cloned()
                .collect(),
        };
        let outcome = run.roll_back().await;
        let payload = serde_json::json!({
            "rollbacks": run.reports.len(), "done": outcome.done,
            "failed": outcome.failed, "pending": outcome.pending,
            "all_succeeded": outcome.failed == 0 && outcome.pending == 0,
        });
        let ok = outcome.failed == 0 && outcome.pending == 0;
        run.note(
            "the recovery",
            store.audit(
                "run.recovered",
                &run_id,
                if ok { "ok" } else { "fail" },
                &payload,
            ),
        );
        (run.reports, outcome)
    }
    .instrument(span)
    .await
}

/// A run id that sorts by time: milliseconds since the epoch and a random suffix.
pub fn new_run_id() -> String {
    let ms = now_ms();
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{ms:x}-{suffix:06x}")
}
