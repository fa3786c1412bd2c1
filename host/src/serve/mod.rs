//! `runcap serve`: runcap as a long-running service. One process loads and checks the
//! environment once, keeps every plugin warm, runs runbooks on their schedules and on
//! API requests, and answers an HTTP API, Prometheus metrics and a status page — with
//! the same store, audit, locks, rollbacks and fault reverts as `runcap run`.
//!
//! - [`config`]: the `[serve]` table and runbook schedules in the manifest.
//! - [`scheduler`]: one task per scheduled runbook.
//! - [`api`]: the HTTP server (API, `/metrics`, status page) and its tokens.
//! - [`metrics`]: what `/metrics` exposes.
//! - [`status`]: the status page.
//! - [`tls`]: HTTPS when a certificate is given.
//! - [`triggers`]: alerts (Alertmanager webhooks, plain JSON) that start runbooks.
//!
//! Stopping: SIGTERM or Ctrl-C stops schedules and new runs, lets runs under way finish
//! for a grace period, then cancels them (their rollbacks and fault reverts run) and
//! exits when nothing is running. A second signal cuts rollbacks short; what they leave
//! is recovered by the next start, as after a kill -9.

pub mod api;
pub mod config;
pub mod escalation;
pub mod metrics;
pub mod scheduler;
pub mod status;
pub mod tls;
pub mod triggers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::caps::Resources;
use crate::engine::Runtime;
use crate::manifest::Environment;
use crate::runbook::{self, Loaded, RunOptions, StopLevel, StopSignal, Stopper};
use crate::store::Store;

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no runbook `{0}` in this environment")]
    UnknownRunbook(String),
    #[error("{0}")]
    Params(#[from] crate::manifest::params::ArgsError),
    #[error("the server is stopping; no new runs are started")]
    Stopping,
}

/// A run to start: which runbook, how, and on whose behalf.
pub struct RunRequest<'a> {
    pub runbook: &'a str,
    pub dry_run: bool,
    /// `NAME=VALUE` for the runbook's parameters.
    pub vars: &'a [String],
    pub origin: Origin,
    /// Start nothing if a run of this runbook is under way here (`overlap = "skip"`).
    pub skip_if_running: bool,
    /// What templates see as `trigger` when an alert started it.
    pub trigger: Option<serde_json::Value>,
    /// The run's id when the caller chose it (a fleet job's); a new one otherwise.
    pub run_id: Option<String>,
    /// Told when the run's start is recorded, and when it has ended (or ended without
    /// starting): what a fleet agent waits for before acknowledging and reporting.
    pub notify: Option<RunNotify>,
}

/// What a caller of [`Server::start_run`] is told about its run.
#[derive(Clone, Default)]
pub struct RunNotify {
    pub recorded: Arc<tokio::sync::Notify>,
    pub finished: Arc<tokio::sync::Notify>,
}

/// A run accepted by [`Server::start_run`], as its task gets it.
struct Accepted {
    dry_run: bool,
    params: serde_json::Map<String, serde_json::Value>,
    origin: Origin,
    trigger: Option<serde_json::Value>,
    recorded: Option<Arc<tokio::sync::Notify>>,
}

/// Who asked for a run, for logs and the audit.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Schedule,
    Api,
    Trigger,
    /// A job from a fleet controller.
    Fleet,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Schedule => "schedule",
            Origin::Api => "api",
            Origin::Trigger => "trigger",
            Origin::Fleet => "fleet",
        }
    }
}

/// Everything a running server shares between its schedules, its API and its runs.
pub struct Server {
    pub env: Environment,
    pub store: Arc<Store>,
    runtime: Runtime,
    resources: Resources,
    /// Each runbook's plugins, loaded once and kept warm.
    plugins: BTreeMap<String, Loaded>,
    pub metrics: metrics::Metrics,
    /// Bounds runs under way at once (`[serve] max_concurrent`).
    limit: Arc<Semaphore>,
    /// Runbooks with a run of this server under way, for `overlap = "skip"`.
    in_flight: Mutex<BTreeMap<String, usize>>,
    /// Runs accepted and not yet ended, by id, with their runbook: a run the API just
    /// accepted is known before its record exists (it may wait for a slot or a lock).
    accepted: Mutex<BTreeMap<String, String>>,
    /// How many runs are under way; shutdown waits for 0.
    running: watch::Sender<usize>,
    /// Raised to cancel runs (rollbacks still run; a second level cuts them short).
    stopper: Stopper,
    stop: StopSignal,
    /// Raised first when the server stops taking work.
    closing: watch::Sender<bool>,
    state_dir: std::path::PathBuf,
    /// Alerts seen lately, by trigger and fingerprint, and signatures already used.
    pub(crate) seen: Mutex<triggers::Seen>,
    /// Where `POST /api/v1/reload` sends its request.
    reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// The fleet this server controls (`[serve] fleet`), once started.
    fleet: std::sync::OnceLock<Arc<crate::fleet::controller::Controller>>,
}

impl Server {
    /// The fleet controller, when this server is one.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::controller::Controller>> {
        self.fleet.get()
    }

    /// Makes this server the fleet's controller (before its routes are built).
    pub fn control(&self, controller: Arc<crate::fleet::controller::Controller>) {
        let _ = self.fleet.set(controller);
    }

    /// How many runs are under way.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Whether the server has stopped taking new work.
    pub fn closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Stops taking work (schedules end, new runs are refused) while runs under way go
    /// on: what a reloaded server's predecessor does.
    pub fn retire(&self) {
        self.closing.send_replace(true);
    }

    /// Asks for the manifest to be re-read and checked; the old one keeps serving if the
    /// new one has a problem.
    pub async fn request_reload(&self) -> Result<String, ReloadError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| ReloadError::Stopping)?;
        rx.await.map_err(|_| ReloadError::Stopping)?
    }

    /// Resolves once the server has stopped taking work.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Starts a run in the background and returns its id; `Ok(None)` when the request
    /// says to skip a runbook with a run under way here, and one is.
    pub fn start_run(self: &Arc<Self>, req: RunRequest<'_>) -> Result<Option<String>, StartError> {
        let RunRequest {
            runbook: name,
            dry_run,
            vars,
            origin,
            skip_if_running: overlap_skip,
            trigger,
            run_id,
            notify,
        } = req;
        if self.closing() {
            return Err(StartError::Stopping);
        }
        let rb = self
            .env
            .runbooks
            .get(name)
            .ok_or_else(|| StartError::UnknownRunbook(name.to_string()))?;
        let params = crate::manifest::params::resolve_args(&rb.name, &rb.params, vars)?;
        {
            let mut busy = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let n = busy.entry(name.to_string()).or_default();
            if overlap_skip && *n > 0 {
                return Ok(None);
            }
            *n += 1;
        }
        let run_id = run_id.unwrap_or_else(runbook::new_run_id);
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.clone(), name.to_string());
        self.running.send_modify(|n| *n += 1);
        let server = self.clone();
        let (name, id) = (name.to_string(), run_id.clone());
        tokio::spawn(async move {
            let accepted = Accepted {
                dry_run,
                params,
                origin,
                trigger,
                recorded: notify.as_ref().map(|n| n.recorded.clone()),
            };
            server.run(&name, &id, accepted).await;
            if let Some(n) = server
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&name)
            {
                *n = n.saturating_sub(1);
            }
            server
                .accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            server.running.send_modify(|n| *n -= 1);
            if let Some(n) = notify {
                n.finished.notify_one();
            }
        });
        Ok(Some(run_id))
    }

    async fn run(&self, name: &str, run_id: &str, accepted: Accepted) {
        let Accepted {
            dry_run,
            params,
            origin,
            trigger,
            recorded,
        } = accepted;
        let Some(rb) = self.env.runbooks.get(name) else {
            return;
        };
        let Ok(_permit) = self.limit.clone().acquire_owned().await else {
            return;
        };
        let lock = runbook::lock::acquire(
            &self.state_dir,
            name,
            run_id,
            rb.overlap,
            &self.stop,
            |holder| tracing::info!(runbook = name, "waiting: already running ({holder})"),
        )
        .await;
        let _lock = match lock {
            Ok(l) => l,
            Err(e) => {
                self.record_not_started(name, run_id, dry_run, &e.to_string());
                return;
            }
        };
        let mut context = serde_json::Map::new();
        context.insert("params".into(), params.into());
        if let Some(t) = trigger {
            context.insert("trigger".into(), t);
        }
        let options = RunOptions {
            dry_run,
            store: Some(self.store.clone()),
            stop: self.stop.clone(),
            faults: Some(self.resources.faults.clone()),
            run_id: Some(run_id.to_string()),
            context,
            tape: None,
            ad_hoc: false,
            recorded,
        };
        let empty = Loaded::new();
        let plugins = self.plugins.get(name).unwrap_or(&empty);
        self.metrics.running.inc();
        tracing::info!(
            runbook = name,
            run_id,
            origin = origin.as_str(),
            "run started"
        );
        let report = runbook::run(&self.runtime, &self.env, rb, plugins, &options, |_| {}).await;
        self.metrics.running.dec();
        self.metrics.record_run(&report);
        tracing::info!(runbook = name, run_id, status = %report.status, "run finished");
    }

    /// Records an accepted run that never started (its runbook's lock refused it, or the
    /// server stopped while it waited) as cancelled, so its id, already handed out by the
    /// API, keeps answering with what became of it.
    fn record_not_started(&self, name: &str, run_id: &str, dry_run: bool, why: &str) {
        tracing::warn!(runbook = name, run_id, "not started: {why}");
        let start = crate::store::RunStart {
            id: run_id,
            environment: &self.env.name,
            runbook: name,
            manifest: &self.env.file,
            dry_run,
        };
        let recorded = self.store.begin_run(&start).and_then(|()| {
            self.store.finish_run(
                run_id,
                crate::store::records::RunStatus::Cancelled,
                &format!("not started: {why}"),
            )
        });
        if let Err(e) = recorded {
            tracing::error!(
                runbook = name,
                run_id,
                "cannot record the run that did not start: {e}"
            );
        }
    }

    /// Stops taking work, lets runs under way finish for `grace`, then cancels them and
    /// waits until none is running.
    pub async fn shut_down(&self, grace: Duration) {
        self.closing.send_replace(true);
        let mut running = self.running.subscribe();
        let idle = running.wait_for(|n| *n == 0);
        if tokio::time::timeout(grace, idle).await.is_err() {
            eprintln!(
                "stopping: cancelling {} run(s) still under way; their rollbacks run",
                *self.running.borrow()
            );
            self.stopper.escalate();
            let _ = running.wait_for(|n| *n == 0).await;
        }
    }

    /// Cuts rollbacks short (a second signal): what they leave is recovered at next start.
    pub fn abort(&self) {
        while !self.stop.reached(StopLevel::Abort) {
            self.stopper.escalate();
        }
    }

    /// The runbook of a run this server accepted and has not ended, if `id` is one.
    pub fn accepted(&self, id: &str) -> Option<String> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Open incidents and faults, for the metrics and the status page.
    pub fn refresh_gauges(&self) {
        if let Ok(i) = self.store.incidents(false, 0) {
            self.metrics.open_incidents.set(i.len() as i64);
        }
        if let Ok(f) = self.store.open_faults() {
            self.metrics.open_faults.set(f.len() as i64);
        }
    }

    /// A stored value as the API returns it: through the environment's redaction.
    pub fn redacted<T: serde::Serialize>(&self, value: &T) -> Option<serde_json::Value> {
        let v = serde_json::to_value(value).ok()?;
        crate::redaction::scrub_serde(&self.resources.redactor, &v)
    }

    /// The value of a declared secret (an API token), read now.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.resources.secrets.value(name).ok()
    }
}

/// Asks the process running the server to re-read the manifest; the reply says what
/// happened, or why the new manifest was refused.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, ReloadError>>;

/// Why the manifest was not reloaded; the previous one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the server is stopping")]
    Stopping,
    #[error("{0}")]
    Manifest(crate::manifest::Diagnostics),
    #[error("the engine cannot start")]
    Engine,
    #[error("the environment's redaction cannot be built (see above)")]
    Redaction,
    /// Plugins that cannot be loaded, one problem each.
    #[error("{}", .0.join("\n"))]
    Plugins(Vec<String>),
}

/// Builds the server for `env` with its plugins loaded. A plugin that cannot be loaded
/// is a problem the caller refuses to serve with, as `runcap check` would.
pub async fn build(
    env: Environment,
    store: Arc<Store>,
    runtime: Runtime,
    resources: Resources,
    state_dir: std::path::PathBuf,
    reload: tokio::sync::mpsc::Sender<ReloadRequest>,
) -> Result<Arc<Server>, Vec<String>> {
    // Each plugin is loaded once and shared by every runbook that uses it: one compiled
    // copy, and instance slots that stay warm with its memory image from run to run.
    let mut shared = BTreeMap::new();
    for rb in env.runbooks.values() {
        for name in runbook::plugins_used(rb) {
            if !shared.contains_key(name) {
                let plugin = runbook::load_plugin(&runtime, &env, &resources, name);
                shared.insert(name.to_string(), plugin);
            }
        }
    }
    let problems: Vec<String> = shared
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("plugin `{p}`: {e}")))
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let loaded: BTreeSet<String> = shared.keys().cloned().collect();
    let plugins = env
        .runbooks
        .iter()
        .map(|(name, rb)| {
            let own: runbook::Loaded = runbook::plugins_used(rb)
                .into_iter()
                .filter_map(|p| Some((p.to_string(), Ok(shared.get(p)?.as_ref().ok()?.clone()))))
                .collect();
            (name.clone(), own)
        })
        .collect();
    let metrics = metrics::Metrics::default();
    metrics.plugins.set(loaded.len() as i64);
    let (stopper, stop) = runbook::stop::channel();
    let max = env.serve.max_concurrent;
    Ok(Arc::new(Server {
        env,
        store,
        runtime,
        resources,
        plugins,
        metrics,
        limit: Arc::new(Semaphore::new(max)),
        in_flight: Mutex::new(BTreeMap::new()),
        accepted: Mutex::new(BTreeMap::new()),
        running: watch::channel(0).0,
        stopper,
        stop,
        closing: watch::channel(false).0,
        state_dir,
        seen: Mutex::default(),
        reload,
        fleet: std::sync::OnceLock::new(),
    }))
}
