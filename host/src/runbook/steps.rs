//! The machinery of one run: a step with its retries, its condition, its record in the
//! store, what later templates see of it, and the rollbacks completed steps leave.
//! [`super::run`] drives it through a runbook; [`super::recover`] through the rollbacks a
//! run left pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::Instrument;

use super::stop::StopLevel;
use super::{Loaded, Phase, Progress, RunOptions, StepReport, template};
use crate::caps::{CallRecord, CallSink, now_ms};
use crate::engine::Runtime;
use crate::manifest::model::Watch;
use crate::manifest::{Environment, OnFailure, Step};
use crate::runner::{self, ActionReport, FailureKind, Invocation, Status};
use crate::store::records::RollbackState;
use crate::store::{PendingRollback, StepRecord, Store};

/// A step's `when` condition that could not be evaluated; the step it guards fails.
#[derive(Debug, thiserror::Error)]
#[error("cannot evaluate `when`: {0}")]
pub struct ConditionError(#[from] template::TemplateError);

/// What became of a run's rollbacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rollbacks {
    /// Ran and succeeded.
    pub done: usize,
    /// Ran and failed.
    pub failed: usize,
    /// Not run (or cut short): `runcap recover` runs them.
    pub pending: usize,
}

/// A run in progress: what later steps' templates can see, and where things are recorded.
pub(super) struct Run<'a, P: FnMut(Progress<'_>)> {
    pub runtime: &'a Runtime,
    pub env: &'a Environment,
    pub runbook: String,
    pub plugins: &'a Loaded,
    pub options: &'a RunOptions,
    pub progress: P,
    pub run_id: String,
    /// Template context: `steps`, `vars`, `run`, and `incident` during escalation.
    pub context: serde_json::Value,
    /// The next step's sequence number in the store.
    pub seq: i64,
    pub reports: Vec<StepReport>,
    /// Rollbacks registered by completed steps, oldest first.
    pub rollbacks: Vec<PendingRollback>,
}

/// The store, seen from one step's capability calls.
struct StepCalls {
    store: Arc<crate::store::Store>,
    run_id: String,
    seq: i64,
    plugin: String,
}

impl crate::caps::CallLog for StepCalls {
    fn record(&self, call: &CallRecord) {
        let recorded = self
            .store
            .record_call(&self.run_id, Some(self.seq), &self.plugin, call);
        if let Err(e) = recorded {
            tracing::error!(run = %self.run_id, "could not record a capability call: {e}");
        }
    }

    fn before_change(&self) {
        self.store.sync();
    }
}

impl<P: FnMut(Progress<'_>)> Run<'_, P> {
    /// Whether the run was asked to stop at least to `level`.
    pub fn stopping(&self, level: StopLevel) -> bool {
        self.options.stop.reached(level)
    }

    /// Whether the steps must stop (Ctrl-C, SIGTERM).
    pub fn cancelled(&self) -> bool {
        self.stopping(StopLevel::Stop)
    }

    pub fn store(&self) -> Option<&Store> {
        self.options.store.as_deref()
    }

    /// Records a store failure without stopping the run: losing a record is bad, but
    /// leaving a half-done change in place because of it would be worse.
    pub fn note<T>(&self, what: &str, r: Result<T, crate::store::StoreError>) {
        if let Err(e) = r {
            tracing::error!(run = %self.run_id, "could not record {what}: {e}");
        }
    }

    fn sink(&self, seq: i64, plugin: &str) -> Option<CallSink> {
        Some(Arc::new(StepCalls {
            store: self.options.store.clone()?,
            run_id: self.run_id.clone(),
            seq,
            plugin: plugin.to_string(),
        }))
    }

    /// Runs one step (with its retries) and records it; returns its report.
    pub async fn step(&mut self, step: &Step, phase: Phase) -> StepReport {
        let seq = self.seq;
        self.seq += 1;
        let span = tracing::info_span!(
            "step",
            run_id = %self.run_id,
            step = %step.id,
            plugin = %step.uses,
            phase = %phase
        );
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
        let (mut action, attempts) = self.attempts(step, seq, phase).instrument(span).await;
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

    /// The stop level at which an action of this phase is cut short: steps stop at the
    /// first request, rollbacks only at the second.
    fn stop_level(phase: Phase) -> StopLevel {
        if phase == Phase::Rollback {
            StopLevel::Abort
        } else {
            StopLevel::Stop
        }
    }

    /// Attempts a step until it passes, cannot pass on retry, runs out of retries, or
    /// the run is stopped; returns the last attempt and how many there were.
    async fn attempts(&mut self, step: &Step, seq: i64, phase: Phase) -> (ActionReport, u32) {
        if let Some(w) = step.watch {
            return self.watch(step, seq, phase, w).await;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let report = self.attempt(step, seq, phase).await;
            tracing::info!(attempt = attempts, status = %report.status, "attempt finished");
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
            if !retryable || attempts > step.retry.retries || self.stopping(Self::stop_level(phase))
            {
                return (report, attempts);
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
            if !self.sleep(delay, Self::stop_level(phase)).await {
                return (report, attempts);
            }
        }
    }

    /// Checks a watched step every `w.every` for `w.duration`: until it passes once
    /// (`until = "ok"`), or for as long as it keeps passing. A dry run checks once.
    /// Returns the deciding check, its summary saying how the watch went, and how many
    /// checks there were.
    async fn watch(
        &mut self,
        step: &Step,
        seq: i64,
        phase: Phase,
        w: Watch,
    ) -> (ActionReport, u32) {
        let started = Instant::now();
        let level = Self::stop_level(phase);
        let mut checks = 0;
        loop {
            checks += 1;
            let tick = Instant::now();
            let mut report = self.attempt(step, seq, phase).await;
            let passed = report.status != Status::Fail;
            let elapsed = humantime::format_duration(round_to_ms(started.elapsed()));
            tracing::info!(check = checks, status = %report.status, "watch check finished");
            let done = if self.stopping(level) {
                true
            } else if self.options.dry_run {
                report.summary = format!("dry run: one check of the watch: {}", report.summary);
                true
            } else if passed == w.until_ok {
                // Passed while waiting for a pass, or failed while it had to hold.
                let what = if passed { "passed" } else { "failed" };
                say(
                    &mut report,
                    format!("check {checks} {what} after {elapsed}"),
                );
                true
            } else if tick + w.every > started + w.duration {
                let total = humantime::format_duration(w.duration);
                let line = if passed {
                    format!("held for {total}: {checks} checks passed; the last")
                } else {
                    format!("did not pass within {total} ({checks} checks); the last")
                };
                say(&mut report, line);
                true
            } else {
                false
            };
            if done {
                report.metrics.push(("watch_checks".into(), checks as f64));
                return (report, checks);
            }
            (self.progress)(Progress::Watching {
                step: &step.id,
                check: checks,
                status: report.status,
                summary: report
                    .failure
                    .as_ref()
                    .map_or(report.summary.as_str(), |f| f.message.as_str()),
            });
            let wait = (tick + w.every).saturating_duration_since(Instant::now());
            if !self.sleep(wait, level).await {
                return (report, checks);
            }
        }
    }

    /// One attempt: resolve params, run the action, stop early if the run is stopped.
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
            Some(Err(e)) => return ActionReport::failed(FailureKind::Load, e.to_string()),
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
            runbook: self.runbook.clone(),
            step: step.id.clone(),
            dry_run: self.options.dry_run,
            timeout: step.timeout,
            sink: self.sink(seq, &step.uses),
            tape: self.options.tape.clone(),
        };
        let action = runner::run_action(self.runtime, plugin, &inv, &params);
        let stop = self.options.stop.clone();
        let level = Self::stop_level(phase);
        tokio::select! {
            report = action => report,
            _ = stop.wait_for(level) => ActionReport::failed(
                FailureKind::Cancelled,
                "the run was cancelled while this action ran; it was stopped".into(),
            ),
        }
    }

    /// Sleeps unless the run is stopped to `level` first; returns whether it slept the
    /// whole time.
    async fn sleep(&self, delay: Duration, level: StopLevel) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.options.stop.wait_for(level) => false,
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

    /// Records a step that does not run (its `when` is false), and reports it.
    pub fn skip(&mut self, step: &Step, phase: Phase) {
        let mut action = ActionReport::failed(FailureKind::Load, String::new());
        action.status = Status::Skipped;
        action.failure = None;
        action.summary = format!("skipped: `{}` is false", step.when.as_deref().unwrap_or(""));
        self.not_run(step, phase, action);
    }

    /// Records a step that fails before its action runs (its condition cannot be
    /// evaluated), and reports it.
    pub fn fail_early(&mut self, step: &Step, phase: Phase, message: String) {
        self.not_run(
            step,
            phase,
            ActionReport::failed(FailureKind::InvalidParams, message),
        );
    }

    fn not_run(&mut self, step: &Step, phase: Phase, action: ActionReport) {
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
    pub fn condition(&self, step: &Step) -> Result<bool, ConditionError> {
        match &step.when {
            None => Ok(true),
            Some(c) => Ok(template::eval_condition(c, &self.context)?),
        }
    }

    /// Runs a list of steps (handlers, escalations) that each run regardless of the others.
    pub async fn side_steps(&mut self, steps: &[Step], phase: Phase) {
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
    pub fn register_rollback(&mut self, step: &Step) {
        let Some(rb) = &step.rollback else { return };
        let params = match template::render_params(&rb.with, &self.context) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("rollback of {} cannot be prepared: {e}", step.id);
                serde_json::json!({ "error": e.to_string() })
            }
        };
        let pending = PendingRollback {
            seq: self.rollbacks.len() as i64,
            step_id: rb.id.clone(),
            uses: rb.uses.clone(),
            params,
            timeout: rb.timeout,
        };
        if let Some(store) = self.store() {
            self.note("a rollback", store.add_rollback(&self.run_id, &pending));
        }
        self.rollbacks.push(pending);
    }

    /// Runs registered rollbacks, newest first; each is attempted even if one fails. A
    /// first stop request does not stop them; a second does, and what it cut short or
    /// never started stays pending in the store for `runcap recover`.
    pub async fn roll_back(&mut self) -> Rollbacks {
        let pending: Vec<PendingRollback> = self.rollbacks.drain(..).rev().collect();
        let mut outcome = Rollbacks::default();
        for rb in pending {
            if self.stopping(StopLevel::Abort) {
                outcome.pending += 1;
                continue;
            }
            let step = Step {
                id: rb.step_id.clone(),
                uses: rb.uses.clone(),
                with: rb.params.clone(),
                when: None,
                timeout: rb.timeout,
                retry: Default::default(),
                on_failure: OnFailure::Continue,
                rollback: None,
                watch: None,
            };
            let report = self.step(&step, Phase::Rollback).await;
            let cut_short = report
                .action
                .failure
                .as_ref()
                .is_some_and(|f| f.kind == FailureKind::Cancelled);
            let state = if cut_short {
                outcome.pending += 1;
                RollbackState::Pending
            } else if report.action.status == Status::Fail {
                outcome.failed += 1;
                RollbackState::Failed
            } else {
                outcome.done += 1;
                RollbackState::Done
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
        outcome
    }
}

/// Puts `line` before what a watched step's deciding check said, where it is read:
/// the failure's message, or the summary.
fn say(report: &mut ActionReport, line: String) {
    match &mut report.failure {
        Some(f) => f.message = format!("{line}: {}", f.message),
        None => report.summary = format!("{line}: {}", report.summary),
    }
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn backoff(step: &Step, attempt: u32) -> Duration {
    let base =
        step.retry.backoff.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = base.min(step.retry.max.as_secs_f64());
    // "Equal jitter": half fixed, half random, so retries of many runs spread out.
    let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
    Duration::from_secs_f64(jittered)
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
