//! Runs one action: a fresh instance of a plugin, one call, and a verdict.
//!
//! This is the one place that classifies how an action can end: an outcome
//! (ok, warn, fail), invalid params, a denial, a plugin error, a timeout, running out
//! of memory, a trap, or output over its limit. Whatever the plugin does, the host
//! gets a [`ActionReport`] back and carries on.

use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::runcap::plugin::types as wit;
use crate::caps::log::{Log, LogLine};
use crate::caps::{
    self, ActionCore, ActionInfo, ActionSetup, CallRecord, CallSink, HostState, MemoryLimiter,
    Prepared, now_ms, wasi,
};
use crate::engine::{EPOCH_TICK, Plugin, Runtime};

pub use crate::store::records::{FailureKind, StepStatus as Status};

/// An action that ended without an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// Captured stdout or stderr of an action.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Captured {
    pub text: String,
    /// Bytes beyond the output limit that were dropped.
    pub dropped: u64,
}

/// Everything an action produced.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub status: Status,
    pub summary: String,
    pub details: serde_json::Value,
    pub metrics: Vec<(String, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u64,
    pub stdout: Captured,
    pub stderr: Captured,
    pub calls: Vec<CallRecord>,
    pub duration_ms: f64,
}

impl ActionReport {
    /// A report for an action that never started (its plugin failed to load, say).
    pub fn failed(kind: FailureKind, message: String) -> Self {
        ActionReport {
            status: Status::Fail,
            summary: message.clone(),
            details: serde_json::json!({}),
            metrics: Vec::new(),
            failure: Some(Failure { kind, message }),
            logs: Vec::new(),
            logs_dropped: 0,
            stdout: Captured::default(),
            stderr: Captured::default(),
            calls: Vec::new(),
            duration_ms: 0.0,
        }
    }
}

/// Why a call into a plugin outside a runbook step (describing itself, checking params,
/// a benchmark's warm instance) gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The action's capabilities could not be prepared.
    #[error("{0}")]
    Setup(#[from] caps::PrepareError),
    /// The plugin rejected the params; the text is its own.
    #[error("{0}")]
    Rejected(String),
    /// The plugin trapped while checking params; the text says how.
    #[error("the plugin failed while checking params: {0}")]
    CheckTrapped(String),
    #[error("the plugin did not finish checking params in time")]
    CheckTimedOut,
    /// Instantiating or calling the plugin failed.
    #[error("{0:#}")]
    Trapped(wasmtime::Error),
    #[error("timed out")]
    TimedOut,
    /// The action ended with an error of its own instead of an outcome.
    #[error("{0:?}")]
    Action(wit::ActionError),
}

/// Who is asking for the action, as the plugin's context will say.
#[derive(Clone)]
pub struct Invocation {
    pub run_id: String,
    pub environment: String,
    pub runbook: String,
    pub step: String,
    pub dry_run: bool,
    /// Overrides the plugin's time limit when shorter.
    pub timeout: Option<Duration>,
    /// Where capability calls go as they happen (the store), besides the report.
    pub sink: Option<CallSink>,
    /// Records capability calls and their answers, or answers them from a recording.
    pub tape: Option<crate::caps::tape::SharedTape>,
}

/// A fresh store for one action of `plugin`. With `granted` false (describing itself,
/// checking params) the plugin gets none of its grants: no capability, no directory.
fn new_store(
    runtime: &Runtime,
    plugin: &Plugin,
    inv: Option<&Invocation>,
    dry_run: bool,
    limit: Duration,
    granted: bool,
) -> Result<Store<HostState>, caps::PrepareError> {
    let output = plugin.spec.limits.output as usize;
    let stdout = wasi::Capture::new(output);
    let stderr = wasi::Capture::new(output);
    let mut wasi = wasi::builder(&stdout, &stderr);
    // A cert-expiry fault on this plugin moves the wall clock its actions see.
    let offset = plugin.resources.faults.clock_offset(&plugin.spec.name);
    if offset != 0 {
        wasi.wall_clock(crate::chaos::OffsetClock(offset));
    }
    let granted = if granted {
        plugin.granted.clone()
    } else {
        std::sync::Arc::new(Prepared::default())
    };
    let mut setup = ActionSetup {
        wasi: &mut wasi,
        dry_run,
        records: Vec::new(),
    };
    caps::begin_action(&granted, &mut setup)?;
    let preopens = setup.records;
    let deadline = Instant::now() + limit;
    let action = inv.map(|i| ActionInfo {
        run_id: i.run_id.clone(),
        environment: i.environment.clone(),
        runbook: i.runbook.clone(),
        step: i.step.clone(),
    });
    let core = ActionCore {
        plugin: plugin.spec.name.as_str().into(),
        action: action.unwrap_or_default(),
        sink: inv.and_then(|i| i.sink.clone()),
        dry_run,
        deadline,
        output_limit: plugin.spec.limits.output,
        calls: Vec::new(),
        redactor: plugin.resources.redactor.clone(),
        tape: inv.and_then(|i| i.tape.clone()),
    };
    let limiter = MemoryLimiter {
        memory_limit: plugin.spec.limits.memory as usize,
        hit: false,
    };
    let state = HostState::new(core, wasi.build(), limiter, stdout, stderr, granted);
    let mut store = Store::new(runtime.engine(), state);
    for call in preopens {
        store.data_mut().core.record(call);
    }
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    Ok(store)
}

/// Instantiates `plugin` and runs it once with `params`.
pub async fn run_action(
    runtime: &Runtime,
    plugin: &Plugin,
    inv: &Invocation,
    params: &serde_json::Value,
) -> ActionReport {
    let limit = inv
        .timeout
        .map_or(plugin.spec.limits.time, |t| t.min(plugin.spec.limits.time));
    let _ticking = runtime.ticking();
    let mut store = match new_store(runtime, plugin, Some(inv), inv.dry_run, limit, true) {
        Ok(s) => s,
        Err(e) => {
            let mut report = ActionReport::failed(FailureKind::Load, e.to_string());
            report.scrub(&plugin.resources.redactor);
            return report;
        }
    };
    let ctx = wit::Context {
        dry_run: inv.dry_run,
        deadline_ms: now_ms() + limit.as_millis() as u64,
    };
    let params = params.to_string();
    let started = Instant::now();
    let call = async {
        let instance = plugin.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, ctx, &params).await
    };
    // The epoch callback stops guest code at the deadline; this also stops an action
    // that is waiting in a host call. The grace lets the epoch trap win when both apply.
    let result = tokio::time::timeout(limit + EPOCH_TICK * 4, call).await;
    let elapsed = started.elapsed();
    finish(store, result, limit, plugin.spec.limits.output, elapsed)
}

impl ActionReport {
    /// Redacts everything the report carries, in place: summary, details (values and keys),
    /// metric names, failure message, log lines, captured output and call records. Every
    /// report runcap keeps, prints or shows to a later step's templates goes through this
    /// once, where it is made.
    pub fn scrub(&mut self, r: &runcap_redact::Redactor) {
        use crate::redaction::{scrub_json, scrub_string};
        scrub_string(r, &mut self.summary);
        scrub_json(r, &mut self.details);
        for (name, _) in &mut self.metrics {
            scrub_string(r, name);
        }
        if let Some(f) = &mut self.failure {
            scrub_string(r, &mut f.message);
        }
        for line in &mut self.logs {
            scrub_string(r, &mut line.message);
            for (k, v) in &mut line.fields {
                scrub_string(r, k);
                scrub_string(r, v);
            }
        }
        scrub_string(r, &mut self.stdout.text);
        scrub_string(r, &mut self.stderr.text);
        for call in &mut self.calls {
            scrub_string(r, &mut call.target);
            for s in [&mut call.reason, &mut call.result].into_iter().flatten() {
                scrub_string(r, s);
            }
        }
    }
}

type CallResult =
    Result<wasmtime::Result<Result<wit::Outcome, wit::ActionError>>, tokio::time::error::Elapsed>;

/// Turns a finished (or timed-out) call into the action's report: what it captured,
/// then its outcome or the reason it failed, redacted.
fn finish(
    mut store: Store<HostState>,
    result: CallResult,
    limit: Duration,
    output_limit: u64,
    elapsed: Duration,
) -> ActionReport {
    let mut report = captured(&mut store, elapsed);
    let state = store.data();
    let redactor = state.core.redactor.clone();
    let failure = match result {
        Err(_) => Some((
            FailureKind::Timeout,
            format!(
                "did not finish within {}",
                humantime::format_duration(limit)
            ),
        )),
        Ok(Err(trap)) => Some(classify_trap(
            &trap,
            state.limiter.hit,
            limit,
            &report.stderr.text,
        )),
        Ok(Ok(Err(e))) => Some(match e {
            wit::ActionError::InvalidParams(m) => (FailureKind::InvalidParams, m),
            wit::ActionError::Denied(m) => (FailureKind::Denied, m),
            wit::ActionError::Failed(m) => (FailureKind::PluginError, m),
        }),
        Ok(Ok(Ok(outcome))) => report.take_outcome(outcome, output_limit, &redactor).err(),
    };
    if let Some((kind, message)) = failure {
        report.fail(kind, message);
    }
    report.scrub(&redactor);
    report
}

/// A report holding what the action logged and printed, and the calls it made; it
/// stands as failed until an outcome is taken into it.
fn captured(store: &mut Store<HostState>, elapsed: Duration) -> ActionReport {
    let log = store.data_mut().take_state::<Log>();
    let state = store.data_mut();
    let (mut stdout, mut stdout_dropped) = state.stdout.take();
    let (mut stderr, mut stderr_dropped) = state.stderr.take();
    for (text, dropped) in [
        (&mut stdout, &mut stdout_dropped),
        (&mut stderr, &mut stderr_dropped),
    ] {
        if *dropped > 0 {
            *dropped += crate::redaction::drop_cut_line(text);
        }
    }
    ActionReport {
        status: Status::Fail,
        summary: String::new(),
        details: serde_json::json!({}),
        metrics: Vec::new(),
        failure: None,
        logs: log.lines,
        logs_dropped: log.dropped,
        stdout: Captured {
            text: stdout,
            dropped: stdout_dropped,
        },
        stderr: Captured {
            text: stderr,
            dropped: stderr_dropped,
        },
        calls: std::mem::take(&mut state.core.calls),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
    }
}

impl ActionReport {
    /// Marks the report failed, for `kind`.
    fn fail(&mut self, kind: FailureKind, message: String) {
        self.status = Status::Fail;
        self.summary = format!("{}: {message}", kind.as_str());
        self.failure = Some(Failure { kind, message });
    }

    /// Takes a plugin's outcome: status, summary (redacted, one line), details and
    /// metrics; or the failure it amounts to (too large, details not an object).
    fn take_outcome(
        &mut self,
        outcome: wit::Outcome,
        output_limit: u64,
        redactor: &runcap_redact::Redactor,
    ) -> Result<(), (FailureKind, String)> {
        let size = outcome.summary.len()
            + outcome.details.len()
            + outcome
                .metrics
                .iter()
                .map(|m| m.name.len() + 8)
                .sum::<usize>();
        if size as u64 > output_limit {
            return Err((
                FailureKind::OutputTooLarge,
                format!(
                    "the outcome is {size} bytes, over the plugin's output limit of {output_limit} (raise limits.output if this is expected)"
                ),
            ));
        }
        match serde_json::from_str::<serde_json::Value>(&outcome.details) {
            Ok(v @ serde_json::Value::Object(_)) => self.details = v,
            Ok(serde_json::Value::Null) | Err(_) if outcome.details.trim().is_empty() => {}
            _ => {
                return Err((
                    FailureKind::PluginError,
                    "the plugin returned details that are not a JSON object".into(),
                ));
            }
        }
        self.status = match outcome.status {
            wit::Status::Ok => Status::Ok,
            wit::Status::Warn => Status::Warn,
            wit::Status::Fail => Status::Fail,
        };
        // Redacted before it is cut to one line, so no value is kept half-redacted.
        self.summary = one_line(&redactor.redact_str(&outcome.summary));
        self.metrics = outcome
            .metrics
            .into_iter()
            .filter(|m| m.value.is_finite())
            .map(|m| (m.name, m.value))
            .collect();
        Ok(())
    }
}

/// Names how a call that trapped went wrong, using what the host knows of it.
fn classify_trap(
    err: &wasmtime::Error,
    memory_hit: bool,
    limit: Duration,
    stderr: &str,
) -> (FailureKind, String) {
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            FailureKind::Trap,
            format!("the plugin exited with code {}", exit.0),
        );
    }
    if let Some(tape) = err.downcast_ref::<crate::caps::tape::TapeError>() {
        return (FailureKind::Trap, tape.to_string());
    }
    let trap = err.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return (
            FailureKind::Timeout,
            format!(
                "did not finish within {}",
                humantime::format_duration(limit)
            ),
        );
    }
    if memory_hit {
        return (
            FailureKind::OutOfMemory,
            "ran out of memory: it asked for more than limits.memory allows".into(),
        );
    }
    let panic = stderr
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let what = match trap {
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(t) => t.to_string(),
        None => format!("{err:#}"),
    };
    let message = if panic.is_empty() {
        format!("trapped: {what}")
    } else {
        format!("trapped: {what} ({})", panic.trim())
    };
    (FailureKind::Trap, message)
}

fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > 300 {
        line.chars().take(300).collect::<String>() + "…"
    } else {
        line.to_string()
    }
}

/// Asks a plugin whether `params` are acceptable, without letting it touch anything:
/// the call runs with no capability grants and a short deadline.
pub async fn validate_params(
    runtime: &Runtime,
    plugin: &Plugin,
    params: &serde_json::Value,
) -> Result<(), CallError> {
    let limit = plugin.spec.limits.time.min(Duration::from_secs(5));
    let _ticking = runtime.ticking();
    // Nothing is granted while a plugin describes itself or checks params.
    let mut store = new_store(runtime, plugin, None, true, limit, false)?;
    let params = params.to_string();
    let call = async {
        let instance = plugin.pre.instantiate_async(&mut store).await?;
        instance.call_validate(&mut store, &params).await
    };
    match tokio::time::timeout(limit + EPOCH_TICK * 4, call).await {
        Ok(Ok(r)) => r.map_err(CallError::Rejected),
        Ok(Err(e)) => Err(CallError::CheckTrapped(
            classify_trap(&e, store.data().limiter.hit, limit, "").1,
        )),
        Err(_) => Err(CallError::CheckTimedOut),
    }
}

/// Asks a plugin to describe itself (name, version, params schema).
pub async fn describe(runtime: &Runtime, plugin: &Plugin) -> Result<wit::Descriptor, CallError> {
    let limit = plugin.spec.limits.time.min(Duration::from_secs(5));
    let _ticking = runtime.ticking();
    // Nothing is granted while a plugin describes itself or checks params.
    let mut store = new_store(runtime, plugin, None, true, limit, false)?;
    let call = async {
        let instance = plugin.pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    match tokio::time::timeout(limit + EPOCH_TICK * 4, call).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(CallError::Trapped(e)),
        Err(_) => Err(CallError::TimedOut),
    }
}

/// An instance kept alive for repeated calls. runcap gives every action a fresh
/// instance; this exists so benchmarks can measure the cost of a bare host→guest call.
pub struct WarmInstance {
    store: Store<HostState>,
    action: crate::bindings::Action,
    /// The context every `run` call passes, built once: the call is what is measured.
    context: wit::Context,
    _ticking: crate::engine::ticker::Ticking,
}

impl WarmInstance {
    /// Instantiates `plugin` once, with its grants and a one-hour deadline.
    pub async fn new(runtime: &Runtime, plugin: &Plugin) -> Result<Self, CallError> {
        let ticking = runtime.ticking();
        let mut store = new_store(
            runtime,
            plugin,
            None,
            false,
            Duration::from_secs(3600),
            true,
        )?;
        let action = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(CallError::Trapped)?;
        let context = wit::Context {
            dry_run: false,
            deadline_ms: now_ms() + 3_600_000,
        };
        Ok(WarmInstance {
            store,
            action,
            context,
            _ticking: ticking,
        })
    }

    /// Calls the plugin's `validate` export; the inner result is the plugin's answer.
    pub async fn validate(&mut self, params: &str) -> Result<Result<(), String>, CallError> {
        self.action
            .call_validate(&mut self.store, params)
            .await
            .map_err(CallError::Trapped)
    }

    /// Calls the plugin's `run` export with the context made when the instance was.
    pub async fn run(&mut self, params: &str) -> Result<Status, CallError> {
        match self
            .action
            .call_run(&mut self.store, self.context, params)
            .await
        {
            Ok(Ok(o)) => Ok(match o.status {
                wit::Status::Ok => Status::Ok,
                wit::Status::Warn => Status::Warn,
                wit::Status::Fail => Status::Fail,
            }),
            Ok(Err(e)) => Err(CallError::Action(e)),
            Err(e) => Err(CallError::Trapped(e)),
        }
    }
}
