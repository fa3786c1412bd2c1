//! Runbooks: ordered steps with conditions, retries, failure policies, handlers,
//! rollbacks and incident escalation, recorded in the store as they happen.
//!
//! A run goes through the main steps in order. A step whose `when` is false is skipped.
//! A failing step is retried (exponential backoff with jitter) unless its failure cannot
//! change on retry (denied, invalid params, load errors). If it still fails, its
//! `on_failure` decides: `continue` records the failure and goes on, `abort` (the
//! default) stops, and a handler list runs those handlers and stops. A stopped run,
//! including one cancelled by Ctrl-C or SIGTERM, runs the rollbacks of completed steps in
//! reverse order. A failed run opens or updates the runbook's incident, which escalates
//! once after `escalate_after` consecutive failures.

pub mod incident;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use crate::caps::{CallRecord, CallSink, Resources, now_ms};
use crate::engine::{Plugin, Runtime};
use crate::manifest::{Environment, OnFailure, Runbook, Step};
use crate::runner::{self, ActionReport, FailureKind, Invocation, Status};
use crate::store::{PendingRollback, RunStart, StepRecord, Store};

pub use crate::store::records::{Phase, RunStatus};

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
#[derive(Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Where the run is recorded; without one nothing is kept.
    pub store: Option<Arc<Store>>,
    /// Becomes true when the run must stop (Ctrl-C, SIGTERM).
    pub cancel: Option<watch::Receiver<bool>>,
    /// Faults injected during the run are reverted through it when the run ends.
    pub faults: Option<Arc<crate::chaos::FaultManager>>,
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
    Finished {
        step: &'a StepReport,
    },
}

/// Plugins loaded for a run, or why each could not be.
pub type Loaded = BTreeMap<String, Result<Plugin, String>>;

/// Loads every plugin a runbook may use (steps, handlers, rollbacks, escalations); a
/// plugin that fails to load is kept as its error, so only the steps using it fail.
pub fn load_plugins(
    runtime: &Runtime,
    env: &Environment,
    resources: &Resources,
    runbook: &Runbook,
) -> Loaded {
    let mut loaded = Loaded::new();
    let all = runbook
        .steps
        .iter()
        .chain(&runbook.handlers)
        .chain(&runbook.incident.escalate)
        .flat_map(|s| std::iter::once(s).chain(s.rollback.as_deref()));
    for step in all {
        if loaded.contains_key(&step.uses) {
            continue;
        }
        let result = match env.plugins.get(&step.uses) {
            Some(spec) => runtime.load(spec, resources).map_err(|e| e.to_string()),
            None => Err(format!("plugin `{}` is not declared", step.uses)),
        };
        loaded.insert(step.uses.clone(), result);
    }
    loaded
}

/// A run in progress: what later steps' templates can see, and where things are recorded.
struct Run<'a, P: FnMut(Progress<'_>)> {
    runtime: &'a Runtime,
    env: &'a Environment,
    runbook: &'a Runbook,
    plugins: &'a Loaded,
    options: &'a RunOptions,
    progress: P,
    run_id: String,
    /// Template context: `steps`, `vars`, `run`, and `incident` during escalation.
    context: serde_json::Value,
    seq: i64,
    reports: Vec<StepReport>,
    /// Rollbacks registered by completed steps, oldest first.
    rollbacks: Vec<PendingRollback>,
}

impl<P: FnMut(Progress<'_>)> Run<'_, P> {
    fn cancelled(&self) -> bool {
        self.options.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    fn store(&self) -> Option<&Store> {
        self.options.store.as_deref()
    }

    /// Records a store failure without stopping the run: losing a record is bad, but
    /// leaving a half-done change in place because of it would be worse.
    fn note(&self, what: &str, r: Result<(), crate::store::StoreError>) {
        if let Err(e) = r {
            tracing::error!(run = %self.run_id, "could not record {what}: {e}");
        }
    }

    fn sink(&self, seq: i64, plugin: &str) -> Option<CallSink> {
        let store = self.options.store.clone()?;
        let run_id = self.run_id.clone();
        let plugin = plugin.to_string();
        Some(Arc::new(move |call: &CallRecord| {
            if let Err(e) = store.record_call(&run_id, Some(seq), &plugin, call) {
                tracing::error!(run = %run_id, "could not record a capability call: {e}");
            }
        }))
    }

    /// Runs one step (with its retries) and records it; returns its report.
    async fn step(&mut self, step: &Step, phase: Phase) -> StepReport {
        let seq = self.seq;
        self.seq += 1;
        (self.progress)(Progress::Started {
            step: &step.id,
            uses: &step.uses,
            phase,
        });
        if let Some(store) = self.store() {
            self.note(
                "a step start",
                store.step_started(&self.run_id, seq, &step.id, &step.uses, phase),
            );
        }
        let started_at = now_ms();
        let started = Instant::now();
        let mut attempts = 0;
        let action = loop {
            attempts += 1;
            let report = self.attempt(step, seq, phase).await;
            let retryable = report.status == Status::Fail
                && !matches!(
                    report.failure.as_ref().map(|f| f.kind),
                    Some(
                        FailureKind::Denied
                            | FailureKind::InvalidParams
                            | FailureKind::Load
                            | FailureKind::Cancelled
                    )
                );
            if !retryable || attempts > step.retry.retries || self.cancelled() {
                break report;
            }
            let delay = backoff(step, attempts);
            let reason = report
                .failure
                .as_ref()
                .map_or(report.summary.as_str(), |f| f.message.as_str());
            (self.progress)(Progress::Retrying {
                step: &step.id,
                attempt: attempts + 1,
                delay,
                reason,
            });
            if !self.sleep(delay).await {
                break report;
            }
        };
        let mut action = action;
        action.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let report = StepReport {
            id: step.id.clone(),
            uses: step.uses.clone(),
            phase,
            attempts,
            continued: false,
            action,
        };
        self.record(seq, started_at, &report);
        self.remember(&report);
        report
    }

    /// One attempt: resolve params, run the action, stop early if the run is cancelled.
    async fn attempt(&mut self, step: &Step, seq: i64, phase: Phase) -> ActionReport {
        // A rollback's params were resolved when it was registered.
        let params = if phase == Phase::Rollback {
            step.with.clone()
        } else {
            match template::render_params(&step.with, &self.context) {
                Ok(p) => p,
                Err(e) => {
                    return ActionReport::failed(
                        FailureKind::InvalidParams,
                        format!("cannot resolve params: {e}"),
                    );
                }
            }
        };
        let plugin = match self.plugins.get(&step.uses) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return ActionReport::failed(FailureKind::Load, e.clone()),
            None => {
                return ActionReport::failed(
                    FailureKind::Load,
                    format!("plugin `{}` is not loaded", step.uses),
                );
            }
        };
        let inv = Invocation {
            run_id: self.run_id.clone(),
            environment: self.env.name.clone(),
            runbook: self.runbook.name.clone(),
            step: step.id.clone(),
            dry_run: self.options.dry_run,
            timeout: step.timeout,
            sink: self.sink(seq, &step.uses),
        };
        let action = runner::run_action(self.runtime, plugin, &inv, &params);
        match self.options.cancel.clone() {
            None => action.await,
            Some(mut cancel) => {
                tokio::select! {
                    report = action => report,
                    _ = cancel.wait_for(|c| *c) => ActionReport::failed(
                        FailureKind::Cancelled,
                        "the run was cancelled while this action ran; it was stopped".into(),
                    ),
                }
            }
        }
    }

    /// Sleeps unless the run is cancelled first; returns whether it slept the whole time.
    async fn sleep(&self, delay: Duration) -> bool {
        match self.options.cancel.clone() {
            None => {
                tokio::time::sleep(delay).await;
                true
            }
            Some(mut cancel) => tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = cancel.wait_for(|c| *c) => false,
            },
        }
    }

    fn record(&self, seq: i64, started_at: u64, r: &StepReport) {
        let Some(store) = self.store() else { return };
        let rec = record_of(seq, started_at, r);
        self.note("a step result", store.step_finished(&self.run_id, &rec));
    }

    /// Makes a step's result visible to later templates.
    fn remember(&mut self, r: &StepReport) {
        let a = &r.action;
        let metrics: serde_json::Map<String, serde_json::Value> = a
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        let value = serde_json::json!({
            "status": a.status.as_str(),
            "summary": a.summary,
            "details": a.details,
            "metrics": metrics,
            "failure": a.failure.as_ref().map(|f| serde_json::json!({"kind": f.kind.as_str(), "message": f.message})),
            "duration_ms": a.duration_ms,
            "attempts": r.attempts,
        });
        self.context["steps"][r.id.as_str()] = value;
    }

    fn skip(&mut self, step: &Step, phase: Phase) {
        let mut action = ActionReport::failed(FailureKind::Load, String::new());
        action.status = Status::Skipped;
        action.failure = None;
        action.summary = format!("skipped: `{}` is false", step.when.as_deref().unwrap_or(""));
        let report = StepReport {
            id: step.id.clone(),
            uses: step.uses.clone(),
            phase,
            attempts: 0,
            continued: false,
            action,
        };
        let seq = self.seq;
        self.seq += 1;
        self.record(seq, now_ms(), &report);
        self.remember(&report);
        (self.progress)(Progress::Finished { step: &report });
        self.reports.push(report);
    }

    /// Whether a step's condition holds; a condition that cannot be evaluated fails the step.
    fn condition(&self, step: &Step) -> Result<bool, String> {
        match &step.when {
            None => Ok(true),
            Some(c) => template::eval_condition(c, &self.context)
                .map_err(|e| format!("cannot evaluate `when`: {e}")),
        }
    }

    /// Runs a list of steps (handlers, escalations) that each run regardless of the others.
    async fn side_steps(&mut self, steps: &[Step], phase: Phase) {
        for step in steps {
            if self.cancelled() {
                break;
            }
            match self.condition(step) {
                Ok(false) => {
                    self.skip(step, phase);
                    continue;
                }
                Ok(true) => {}
                Err(e) => tracing::warn!("{}: {e}", step.id),
            }
            let report = self.step(step, phase).await;
            (self.progress)(Progress::Finished { step: &report });
            self.reports.push(report);
        }
    }

    /// Registers a completed step's rollback, resolving its params now, while the
    /// step's own result is known.
    fn register_rollback(&mut self, step: &Step) {
        let Some(rb) = &step.rollback else { return };
        let params = match template::render_params(&rb.with, &self.context) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("rollback of {} cannot be prepared: {e}", step.id);
                serde_json::json!({ "error": e })
            }
        };
        let pending = PendingRollback {
            seq: self.rollbacks.len() as i64,
            step_id: rb.id.clone(),
            uses: rb.uses.clone(),
            params,
        };
        if let Some(store) = self.store() {
            self.note("a rollback", store.add_rollback(&self.run_id, &pending));
        }
        self.rollbacks.push(pending);
    }

    /// Runs registered rollbacks, newest first; each is attempted even if one fails.
    async fn roll_back(&mut self) {
        let pending: Vec<PendingRollback> = self.rollbacks.drain(..).rev().collect();
        for rb in pending {
            let step = Step {
                id: rb.step_id.clone(),
                uses: rb.uses.clone(),
                with: rb.params.clone(),
                when: None,
                timeout: None,
                retry: Default::default(),
                on_failure: OnFailure::Continue,
                rollback: None,
            };
            let report = self.step(&step, Phase::Rollback).await;
            let state = if report.action.status == Status::Fail {
                "failed"
            } else {
                "done"
            };
            if let Some(store) = self.store() {
                self.note(
                    "a rollback state",
                    store.set_rollback_state(&self.run_id, rb.seq, state),
                );
            }
            (self.progress)(Progress::Finished { step: &report });
            self.reports.push(report);
        }
    }
}

fn backoff(step: &Step, attempt: u32) -> Duration {
    let base =
        step.retry.backoff.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = base.min(step.retry.max.as_secs_f64());
    // "Equal jitter": half fixed, half random, so retries of many runs spread out.
    let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
    Duration::from_secs_f64(jittered)
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
    let run_id = new_run_id();
    let started = Instant::now();
    let started_at_ms = now_ms();
    let mut run = Run {
        runtime,
        env,
        runbook,
        plugins,
        options,
        progress,
        context: serde_json::json!({
            "steps": {},
            "vars": env.vars,
            "run": {"id": run_id, "runbook": runbook.name, "environment": env.name, "dry_run": options.dry_run},
        }),
        run_id,
        seq: 0,
        reports: Vec::new(),
        rollbacks: Vec::new(),
    };
    if let Some(store) = run.store() {
        run.note(
            "the run start",
            store.begin_run(&RunStart {
                id: &run.run_id,
                environment: &env.name,
                runbook: &runbook.name,
                manifest: &env.file,
                dry_run: options.dry_run,
            }),
        );
    }

    let mut failed_step = None;
    let mut continued_failure = false;
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
                let mut report = run.step_failed_early(step, e);
                report.phase = Phase::Main;
                failed_step = Some(step.id.clone());
                (run.progress)(Progress::Finished { step: &report });
                run.reports.push(report);
                break;
            }
        }
        let mut report = run.step(step, Phase::Main).await;
        let failed = report.action.status == Status::Fail;
        if !failed {
            run.register_rollback(step);
        }
        if failed && step.on_failure == OnFailure::Continue && !run.cancelled() {
            report.continued = true;
            continued_failure = true;
        }
        (run.progress)(Progress::Finished { step: &report });
        run.reports.push(report);
        if !failed {
            continue;
        }
        match &step.on_failure {
            OnFailure::Continue if !run.cancelled() => continue,
            OnFailure::Run(names) => {
                let handlers: Vec<Step> = names
                    .iter()
                    .filter_map(|n| runbook.handler(n).cloned())
                    .collect();
                run.side_steps(&handlers, Phase::Handler).await;
            }
            _ => {}
        }
        failed_step = Some(step.id.clone());
        break;
    }

    let cancelled = run.cancelled();
    if failed_step.is_some() || cancelled {
        run.roll_back().await;
    }
    // Every fault this run injected is reverted now, whatever happened.
    let mut reverted_faults = Vec::new();
    if let Some(f) = &options.faults {
        let by = if cancelled { "signal" } else { "run-end" };
        match f.revert_run(&run.run_id, by).await {
            Ok(reverted) => {
                for (row, result) in reverted {
                    let (ok, result) = match result {
                        Ok(t) => (true, t),
                        Err(e) => (false, e.to_string()),
                    };
                    reverted_faults.push(RevertedFault {
                        id: row.id,
                        kind: row.kind.as_str().to_string(),
                        target: row.target,
                        ok,
                        result,
                    });
                }
            }
            Err(e) => {
                tracing::error!(run = %run.run_id, "cannot revert this run's faults: {e}");
                reverted_faults.push(RevertedFault {
                    id: String::new(),
                    kind: String::new(),
                    target: String::new(),
                    ok: false,
                    result: format!(
                        "cannot read the fault journal to revert this run's faults: {e}"
                    ),
                });
            }
        }
    }
    let revert_failed = reverted_faults.iter().any(|f| !f.ok);
    let worst = run
        .reports
        .iter()
        .filter(|r| r.phase == Phase::Main && !r.continued)
        .map(|r| r.action.status)
        .max()
        .unwrap_or(Status::Ok);
    let status = if cancelled {
        RunStatus::Cancelled
    } else if failed_step.is_some() || revert_failed {
        RunStatus::Fail
    } else if worst == Status::Warn || continued_failure {
        RunStatus::Warn
    } else {
        RunStatus::Ok
    };
    let summary = match (&failed_step, status) {
        (_, RunStatus::Cancelled) => "cancelled".to_string(),
        (Some(s), _) => format!("failed at step {s}"),
        (None, RunStatus::Fail) => "a fault could not be reverted".to_string(),
        (None, s) => format!("{} steps, {}", runbook.steps.len(), s.as_str()),
    };
    if let Some(store) = run.store() {
        run.note(
            "the run result",
            store.finish_run(&run.run_id, status, &summary),
        );
    }

    let mut incident = None;
    if let Some(store) = run.options.store.clone()
        && !options.dry_run
        && status != RunStatus::Cancelled
    {
        let update = if status == RunStatus::Fail {
            let failed = failed_step.clone().unwrap_or_default();
            incident::on_run_failed(&store, env, runbook, &run.run_id, &failed, &summary).map(Some)
        } else {
            incident::on_run_succeeded(&store, env, runbook, &run.run_id)
        };
        match update {
            Ok(Some(u)) => {
                if u.escalated_now {
                    run.context["incident"] = serde_json::to_value(&u).unwrap_or_default();
                    let steps = runbook.incident.escalate.clone();
                    let before = run.reports.len();
                    run.side_steps(&steps, Phase::Escalation).await;
                    for r in &run.reports[before..] {
                        let message = format!(
                            "escalation step {} {}: {}",
                            r.id,
                            r.action.status.as_str(),
                            r.action.summary
                        );
                        if let Err(e) =
                            store.incident_event(u.id, "notified", &run.run_id, &message)
                        {
                            tracing::error!("could not record an incident event: {e}");
                        }
                    }
                }
                incident = Some(u);
            }
            Ok(None) => {}
            Err(e) => tracing::error!("could not update the incident: {e}"),
        }
    }

    RunReport {
        run_id: run.run_id,
        environment: env.name.clone(),
        runbook: runbook.name.clone(),
        dry_run: options.dry_run,
        status,
        failed_step,
        started_at_ms,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps: run.reports,
        incident,
        reverted_faults,
    }
}

impl<P: FnMut(Progress<'_>)> Run<'_, P> {
    /// A step that fails before its action runs (its condition cannot be evaluated).
    fn step_failed_early(&mut self, step: &Step, message: String) -> StepReport {
        let report = StepReport {
            id: step.id.clone(),
            uses: step.uses.clone(),
            phase: Phase::Main,
            attempts: 0,
            continued: false,
            action: ActionReport::failed(FailureKind::InvalidParams, message),
        };
        let seq = self.seq;
        self.seq += 1;
        self.record(seq, now_ms(), &report);
        self.remember(&report);
        report
    }
}

/// Runs the rollbacks an interrupted run left pending, newest first, and records them.
pub async fn recover(
    runtime: &Runtime,
    env: &Environment,
    resources: &Resources,
    store: &Arc<Store>,
    run_id: &str,
    pending: &[PendingRollback],
    mut progress: impl FnMut(Progress<'_>),
) -> Vec<StepReport> {
    let mut reports = Vec::new();
    let mut plugins: Loaded = Loaded::new();
    for rb in pending {
        if !plugins.contains_key(&rb.uses) {
            let loaded = match env.plugins.get(&rb.uses) {
                Some(spec) => runtime.load(spec, resources).map_err(|e| e.to_string()),
                None => Err(format!(
                    "plugin `{}` is no longer declared in {}",
                    rb.uses,
                    env.file.display()
                )),
            };
            plugins.insert(rb.uses.clone(), loaded);
        }
        progress(Progress::Started {
            step: &rb.step_id,
            uses: &rb.uses,
            phase: Phase::Rollback,
        });
        let sink_store = store.clone();
        let sink_run = run_id.to_string();
        let sink_plugin = rb.uses.clone();
        let seq = 10_000 + rb.seq;
        let inv = Invocation {
            run_id: run_id.to_string(),
            environment: env.name.clone(),
            runbook: String::new(),
            step: rb.step_id.clone(),
            dry_run: false,
            timeout: None,
            sink: Some(Arc::new(move |call: &CallRecord| {
                let _ = sink_store.record_call(&sink_run, Some(seq), &sink_plugin, call);
            })),
        };
        let started_at = now_ms();
        let action = match plugins.get(&rb.uses) {
            Some(Ok(p)) => runner::run_action(runtime, p, &inv, &rb.params).await,
            Some(Err(e)) => ActionReport::failed(FailureKind::Load, e.clone()),
            None => ActionReport::failed(FailureKind::Load, "not loaded".into()),
        };
        let state = if action.status == Status::Fail {
            "failed"
        } else {
            "done"
        };
        let report = StepReport {
            id: rb.step_id.clone(),
            uses: rb.uses.clone(),
            phase: Phase::Rollback,
            attempts: 1,
            continued: false,
            action,
        };
        let record = record_of(seq, started_at, &report);
        if let Err(e) = store
            .step_finished(run_id, &record)
            .and_then(|_| store.set_rollback_state(run_id, rb.seq, state))
        {
            tracing::error!("could not record the recovery of {run_id}: {e}");
        }
        progress(Progress::Finished { step: &report });
        reports.push(report);
    }
    let ok = reports.iter().all(|r| r.action.status != Status::Fail);
    let payload = serde_json::json!({"rollbacks": reports.len(), "all_succeeded": ok});
    if let Err(e) = store.audit(
        "run.recovered",
        run_id,
        if ok { "ok" } else { "fail" },
        &payload,
    ) {
        tracing::error!("could not audit the recovery of {run_id}: {e}");
    }
    reports
}

/// How a finished step is stored.
fn record_of(seq: i64, started_at: u64, r: &StepReport) -> StepRecord<'_> {
    let a = &r.action;
    StepRecord {
        seq,
        step_id: &r.id,
        uses: &r.uses,
        phase: r.phase,
        status: a.status,
        attempts: r.attempts,
        failure_kind: a.failure.as_ref().map(|f| f.kind),
        summary: &a.summary,
        details: &a.details,
        metrics: &a.metrics,
        logs: &a.logs,
        stdout: (&a.stdout.text, a.stdout.dropped),
        stderr: (&a.stderr.text, a.stderr.dropped),
        started_at: started_at as i64,
        duration_ms: a.duration_ms,
    }
}

/// A run id that sorts by time: milliseconds since the epoch and a random suffix.
pub fn new_run_id() -> String {
    let ms = now_ms();
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{ms:x}-{suffix:06x}")
}
