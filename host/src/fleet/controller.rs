//! The fleet controller, run inside `runcap serve` when its manifest says
//! `[serve] fleet = "fleet.toml"`: it sets up the streams and consumers, dispatches
//! jobs, records every agent's events in PostgreSQL, marks runs lost whose agent went
//! silent (and runs an idempotent runbook again on another host of the group), and
//! checks every agent's audit chain against the checkpoints it signed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde::Serialize;
use thiserror::Error;

use super::config::{Fleet, Target};
use super::protocol::{self, Event, Job, JobTo, Presence, TransportError};
use crate::store::postgres::{CheckpointRow, Hello, PgStore, PgStoreError};
use crate::store::records::now_ms;

/// Why the controller cannot start, or a fleet operation failed.
#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Store(#[from] PgStoreError),
    #[error("{0} has no [store] table: the controller keeps the fleet's history in PostgreSQL")]
    NoStore(String),
    #[error("{target} names no agent of the fleet file")]
    NoAgents { target: Target },
    #[error("{host}: {message}")]
    Agent { host: String, message: String },
    #[error("the secret `{0}`: {1}")]
    Secret(String, crate::secrets::SecretError),
    #[error("cannot send the job to {host}: {message}")]
    Publish { host: String, message: String },
}

/// A running controller.
pub struct Controller {
    pub fleet: Fleet,
    js: jetstream::Context,
    client: async_nats::Client,
    pub store: Arc<PgStore>,
    /// When each agent's presence last changed, by this controller's clock: an agent is
    /// up while that is within `lost_after`.
    seen: Mutex<BTreeMap<String, (u64, Instant)>>,
    /// Since when the controller has been able to read presence without a break: an
    /// agent is judged silent only over time the controller could hear it (after NATS
    /// was unreachable, every agent gets `lost_after` again).
    hearing_since: Mutex<Instant>,
    /// Whether the last read of presence failed.
    deaf: std::sync::atomic::AtomicBool,
    /// How many times the controller's NATS connection had connected at the last look: a
    /// reconnection, however brief, means agents were cut off from NATS too.
    connects: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One job sent.
#[derive(Debug, Clone, Serialize)]
pub struct Dispatched {
    /// The host it was sent to; `None` for a job sent to a group's queue, which the
    /// first agent of the group with a free slot takes.
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    pub run_id: String,
}

/// What an operator asks of the fleet.
pub struct DispatchRequest<'a> {
    pub runbook: &'a str,
    pub target: &'a Target,
    pub vars: &'a [String],
    pub dry_run: bool,
}

/// An agent as `runcap fleet status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub host: String,
    pub groups: Vec<String>,
    pub up: bool,
    /// Milliseconds since its last heartbeat, if one was seen.
    pub last_heartbeat_ms_ago: Option<u64>,
    pub version: Option<String>,
    pub running: Option<usize>,
    pub lock_digest: Option<String>,
    /// Where its manifest differs from its approved lockfile.
    pub drift: Vec<String>,
}

/// What `runcap fleet audit` finds for one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostAudit {
    pub host: String,
    pub ok: bool,
    /// The newest checkpoint the controller holds, as SEQ:HASH.
    pub checkpoint: Option<String>,
    pub rows: Option<u64>,
    pub problems: Vec<String>,
}

impl Controller {
    /// Connects to NATS and PostgreSQL, sets the fleet's streams up, and starts taking
    /// events and watching for lost runs.
    pub async fn start(
        fleet: Fleet,
        nats_password: Option<String>,
        store_password: Option<String>,
    ) -> Result<Arc<Controller>, ControllerError> {
        let Some(store) = &fleet.store else {
            return Err(ControllerError::NoStore(fleet.file.display().to_string()));
        };
        let store =
            PgStore::connect(&store.url, store_password.as_deref(), store.ca.as_deref()).await?;
        let client = protocol::connect(&fleet.nats, protocol::CONTROLLER, nats_password).await?;
        let js = protocol::jetstream(client.clone());
        protocol::set_up(&js, &fleet).await?;
        let controller = Arc::new(Controller {
            fleet,
            js,
            client,
            store,
            seen: Mutex::new(BTreeMap::new()),
            hearing_since: Mutex::new(Instant::now()),
            deaf: std::sync::atomic::AtomicBool::new(false),
            connects: std::sync::atomic::AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(controller.clone().take_events()),
            tokio::spawn(controller.clone().watch_for_lost_runs()),
        ];
        *controller.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(controller)
    }

    /// Stops taking events; what is not acknowledged is delivered to the next start.
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    /// Sends a runbook to every agent `target` names, or (for one agent of a group) to
    /// the group's queue; returns each job's run id. Each job is recorded before it is
    /// published, so every result has its job.
    pub async fn dispatch(
        &self,
        req: DispatchRequest<'_>,
    ) -> Result<Vec<Dispatched>, ControllerError> {
        let hosts = self.fleet.members(req.target);
        if hosts.is_empty() {
            return Err(ControllerError::NoAgents {
                target: req.target.clone(),
            });
        }
        let idempotent = self.idempotent(req.runbook).await;
        let new_job = || Job {
            run_id: crate::runbook::new_run_id(),
            runbook: req.runbook.to_string(),
            vars: req.vars.to_vec(),
            dry_run: req.dry_run,
            dispatched_ms: now_ms(),
        };
        if let Target::OneOf(group) = req.target {
            // Safe to run again elsewhere only if every agent that may take it says so.
            let again = hosts
                .iter()
                .all(|h| idempotent.get(h).copied().unwrap_or(false));
            let job = new_job();
            self.send(JobTo::Queue(group), &job, again, None).await?;
            return Ok(vec![Dispatched {
                host: None,
                queue: Some(group.clone()),
                run_id: job.run_id,
            }]);
        }
        let mut out = Vec::new();
        for host in hosts {
            let job = new_job();
            let again = idempotent.get(&host).copied().unwrap_or(false);
            self.send(JobTo::Host(&host), &job, again, None).await?;
            out.push(Dispatched {
                host: Some(host),
                queue: None,
                run_id: job.run_id,
            });
        }
        Ok(out)
    }

    async fn send(
        &self,
        to: JobTo<'_>,
        job: &Job,
        idempotent: bool,
        retry_of: Option<&str>,
    ) -> Result<(), ControllerError> {
        self.store
            .job_dispatched(&to, job, idempotent, retry_of)
            .await?;
        let publish_err = |message: String| ControllerError::Publish {
            host: to.to_string(),
            message,
        };
        let payload = serde_json::to_vec(job).map_err(|e| publish_err(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.run_id.as_str());
        let ack = self
            .js
            .publish_with_headers(to.subject(), headers, payload.into())
            .await
            .map_err(|e| publish_err(e.to_string()))?;
        let stored = ack.await.map_err(|e| publish_err(e.to_string()))?;
        if let JobTo::Queue(_) = to {
            self.store.job_queued(&job.run_id, stored.sequence).await?;
        }
        tracing::info!(%to, run_id = job.run_id, runbook = job.runbook, "job sent");
        Ok(())
    }

    /// Sends each scheduled dispatch when it is due, until the controller stops. A
    /// dispatch whose last jobs are still open when the next is due is skipped
    /// (`overlap = "skip"`, the default) or sent anyway (`"queue"`).
    pub fn schedule(self: &Arc<Self>, dispatches: Vec<crate::serve::config::Dispatch>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for d in dispatches {
            let controller = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut last: Vec<String> = Vec::new();
                loop {
                    let wait = d
                        .schedule
                        .next_in(chrono::Utc::now())
                        .unwrap_or(Duration::from_secs(60));
                    let jitter = if d.schedule.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        d.schedule.jitter.mul_f64(rand::random::<f64>())
                    };
                    tokio::time::sleep(wait + jitter).await;
                    if d.schedule.overlap == crate::serve::config::Overlap::Skip
                        && controller.any_open(&last).await
                    {
                        tracing::info!(dispatch = d.name, "skipped: its last runs are still open");
                        continue;
                    }
                    let asked = DispatchRequest {
                        runbook: &d.runbook,
                        target: &d.target,
                        vars: &[],
                        dry_run: false,
                    };
                    match controller.dispatch(asked).await {
                        Ok(sent) => last = sent.into_iter().map(|s| s.run_id).collect(),
                        Err(e) => tracing::error!(dispatch = d.name, "cannot dispatch: {e}"),
                    }
                }
            }));
        }
    }

    /// Whether any of these jobs is still dispatched or started.
    async fn any_open(&self, run_ids: &[String]) -> bool {
        for id in run_ids {
            if let Ok(Some(j)) = self.store.job(id).await
                && (j.state == "dispatched" || j.state == "started")
            {
                return true;
            }
        }
        false
    }

    /// Whether each agent declares `runbook` idempotent, from their hellos.
    async fn idempotent(&self, runbook: &str) -> BTreeMap<String, bool> {
        let Ok(agents) = self.store.agents().await else {
            return BTreeMap::new();
        };
        agents
            .into_iter()
            .map(|a| {
                let yes = a.runbooks.as_array().is_some_and(|rbs| {
                    rbs.iter().any(|r| {
                        r.get("name").and_then(|n| n.as_str()) == Some(runbook)
                            && r.get("idempotent").and_then(|i| i.as_bool()) == Some(true)
                    })
                });
                (a.host, yes)
            })
            .collect()
    }

    /// Takes agents' events from the durable consumer and records them; an event is
    /// acknowledged only once stored.
    async fn take_events(self: Arc<Self>) {
        loop {
            let consumer: jetstream::consumer::PullConsumer = match self
                .js
                .get_consumer_from_stream(protocol::CONTROLLER, protocol::EVENTS)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("no event consumer ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut messages = match consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cannot take events ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(next) = messages.next().await {
                let message = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("event stream: {e}");
                        continue;
                    }
                };
                match self.take_event(&message).await {
                    Ok(()) => {
                        let _ = message.ack().await;
                    }
                    Err(e) => {
                        tracing::error!("cannot record an event ({e}); it comes again");
                        let _ = message
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                            .await;
                    }
                }
            }
        }
    }

    /// Records one event. The host is the one its subject names: NATS lets an agent
    /// publish only on its own subjects. An event that cannot be an event is dropped
    /// with an error (`Ok`), never retried.
    async fn take_event(&self, message: &jetstream::Message) -> Result<(), PgStoreError> {
        let subject = message.subject.as_str();
        let Some((host, kind)) = protocol::parse_event_subject(subject) else {
            tracing::error!(subject, "an event on a subject no agent uses; dropped");
            return Ok(());
        };
        let Some(entry) = self.fleet.agents.get(host) else {
            tracing::error!(
                host,
                "an event from an agent not in the fleet file; dropped"
            );
            return Ok(());
        };
        let event: Event = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(host, kind, "an event that does not parse ({e}); dropped");
                return Ok(());
            }
        };
        if event.kind() != kind {
            tracing::error!(
                host,
                kind,
                "an event whose body is not its subject's kind; dropped"
            );
            return Ok(());
        }
        match event {
            Event::Hello {
                version,
                environment,
                groups,
                audit_key,
                caps,
                lock,
                runbooks,
            } => {
                if let Some(pinned) = &entry.audit_key
                    && pinned.to_string() != audit_key
                {
                    self.store
                        .audit_problem(
                            host,
                            &format!("the agent's audit key {audit_key} is not the one pinned in the fleet file ({pinned})"),
                        )
                        .await?;
                }
                let lock = serde_json::to_value(&lock).unwrap_or_default();
                self.store
                    .agent_hello(&Hello {
                        host,
                        version: &version,
                        environment: &environment,
                        groups: &groups,
                        audit_key: &audit_key,
                        caps: &caps,
                        lock: &lock,
                        runbooks: &runbooks,
                    })
                    .await
            }
            Event::Started {
                run_id,
                runbook,
                at_ms,
            } => {
                self.store.job_taken(&run_id, host, &entry.groups).await?;
                self.store.run_started(host, &run_id, &runbook, at_ms).await
            }
            Event::Finished { run } => {
                self.store
                    .job_taken(&run.run.id, host, &entry.groups)
                    .await?;
                self.store.run_finished(host, &run).await
            }
            Event::Refused { run_id, reason, .. } => {
                self.store.job_taken(&run_id, host, &entry.groups).await?;
                self.store.job_state(&run_id, "refused", &reason).await
            }
            Event::Incidents { incidents } => self.store.incidents_reported(host, &incidents).await,
            Event::Checkpoint {
                seq,
                head,
                at_ms,
                signature,
            } => {
                self.checkpoint(host, entry, seq, head, at_ms, signature)
                    .await
            }
        }
    }

    /// Verifies a checkpoint's signature against the pinned key and that the chain
    /// only grew since the last one; stores it, or notes the problem.
    async fn checkpoint(
        &self,
        host: &str,
        entry: &super::config::AgentEntry,
        seq: i64,
        head: String,
        at_ms: u64,
        signature: String,
    ) -> Result<(), PgStoreError> {
        let Some(key) = &entry.audit_key else {
            return self
                .store
                .audit_problem(
                    host,
                    "checkpoint not verified: no audit_key is pinned for this agent in the fleet file",
                )
                .await;
        };
        let message = protocol::checkpoint_message(host, seq, &head, at_ms);
        if crate::signing::verify_message(key, &message, &signature, "checkpoint").is_err() {
            return self
                .store
                .audit_problem(
                    host,
                    &format!("checkpoint {seq}:{head} is not signed by the agent's pinned key"),
                )
                .await;
        }
        if let Some(last) = self.store.last_checkpoint(host).await?
            && seq < last.seq
            && (at_ms as i64) > last.at
        {
            self.store
                .audit_problem(
                    host,
                    &format!(
                        "the audit chain was cut: it held {} rows at checkpoint {}:{}, and now holds {seq}",
                        last.seq, last.seq, last.head
                    ),
                )
                .await?;
        }
        let stored = self
            .store
            .checkpoint(&CheckpointRow {
                host: host.to_string(),
                seq,
                head: head.clone(),
                at: at_ms as i64,
                signature,
            })
            .await?;
        if !stored {
            self.store
                .audit_problem(
                    host,
                    &format!("the audit chain was rewritten: row {seq} now has head {head}, not the one checkpointed before"),
                )
                .await?;
        }
        Ok(())
    }

    /// Reads every agent's presence and notes which changed since the last look.
    async fn refresh_presence(&self) -> BTreeMap<String, Presence> {
        use std::sync::atomic::Ordering;
        let mut out = BTreeMap::new();
        let deaf = || self.deaf.store(true, Ordering::SeqCst);
        let Ok(bucket) = self.js.get_key_value(protocol::PRESENCE).await else {
            deaf();
            return out;
        };
        let mut failed = false;
        for host in self.fleet.agents.keys() {
            let entry = match bucket.entry(host).await {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(_) => {
                    failed = true;
                    continue;
                }
            };
            if let Ok(p) = serde_json::from_slice::<Presence>(&entry.value) {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let changed = seen
                    .get(host)
                    .is_none_or(|(revision, _)| *revision != entry.revision);
                if changed {
                    seen.insert(host.clone(), (entry.revision, Instant::now()));
                }
                out.insert(host.clone(), p);
            }
        }
        let connects = self.client.statistics().connects.load(Ordering::SeqCst);
        let reconnected = self.connects.swap(connects, Ordering::SeqCst) != connects;
        if failed {
            deaf();
        } else if self.deaf.swap(false, Ordering::SeqCst) || reconnected {
            *self.hearing_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        out
    }

    /// Whether `host` has been heard from within `lost_after`, counting only time the
    /// controller could hear (since it started, or since NATS was reachable again).
    fn is_up(&self, host: &str) -> bool {
        let lost_after = self.fleet.timing.lost_after;
        if self.deaf.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        let hearing = self
            .hearing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if hearing < lost_after {
            return true;
        }
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .is_some_and(|(_, at)| at.elapsed() < lost_after)
    }

    /// Marks lost the runs of agents that went silent, and sends an idempotent one to
    /// another host of the same group that is up.
    async fn watch_for_lost_runs(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.fleet.timing.heartbeat);
        loop {
            tick.tick().await;
            self.refresh_presence().await;
            let open = match self.store.open_jobs().await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("cannot read open jobs: {e}");
                    continue;
                }
            };
            let lost_after = self.fleet.timing.lost_after.as_millis() as i64;
            for mut job in open {
                if job.host.is_none() {
                    // In a group's queue: waiting for an agent, unless one claimed it.
                    match self.claimant(&job).await {
                        Some(holder) => job.host = Some(holder),
                        None => continue,
                    }
                }
                let Some(host) = job.host.clone() else {
                    continue;
                };
                let overdue = (now_ms() as i64) - job.dispatched_at > lost_after;
                if !overdue || self.is_up(&host) {
                    continue;
                }
                let reason = format!(
                    "agent {host} not heard from for {}",
                    humantime::format_duration(self.fleet.timing.lost_after)
                );
                tracing::warn!(run_id = job.run_id, "run lost: {reason}");
                if let Err(e) = self.store.job_state(&job.run_id, "lost", &reason).await {
                    tracing::error!("cannot mark a run lost: {e}");
                    continue;
                }
                if let Some(seq) = job.queue_seq {
                    // Out of the queue, so the claimant cannot start it on its return.
                    self.unqueue(seq as u64).await;
                }
                if job.idempotent {
                    self.retry_elsewhere(&job, &host).await;
                }
            }
        }
    }

    /// The agent that claimed a group's job, noted in the store once found.
    async fn claimant(&self, job: &crate::store::postgres::JobRow) -> Option<String> {
        let group = job.queue.as_deref()?;
        let claims = self.js.get_stream_no_info(protocol::CLAIMS).await.ok()?;
        let subject = protocol::claim_subject(group, &job.run_id);
        let held = claims
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        let holder = String::from_utf8_lossy(&held.payload).into_owned();
        let groups = [group.to_string()];
        if let Err(e) = self.store.job_taken(&job.run_id, &holder, &groups).await {
            tracing::warn!(run_id = job.run_id, "cannot note who took the job: {e}");
        }
        Some(holder)
    }

    /// Takes a job out of the job stream; one already taken is left be.
    async fn unqueue(&self, seq: u64) {
        let removed = async {
            let jobs = self.js.get_stream_no_info(protocol::JOBS).await?;
            jobs.delete_message(seq).await?;
            Ok::<_, async_nats::Error>(())
        };
        if let Err(e) = removed.await {
            tracing::debug!(seq, "a lost run's job is no longer queued: {e}");
        }
    }

    /// Sends a lost idempotent run again: a group job to its group's queue, a host's to
    /// another host of its groups that is up.
    async fn retry_elsewhere(&self, lost: &crate::store::postgres::JobRow, lost_host: &str) {
        let Ok(mut job) = serde_json::from_value::<Job>(lost.job.clone()) else {
            return;
        };
        job.run_id = crate::runbook::new_run_id();
        job.dispatched_ms = now_ms();
        let to = match &lost.queue {
            Some(group) => JobTo::Queue(group),
            None => {
                let groups = self
                    .fleet
                    .agents
                    .get(lost_host)
                    .map(|a| a.groups.clone())
                    .unwrap_or_default();
                let other = self.fleet.agents.iter().find(|(name, a)| {
                    *name != lost_host
                        && a.groups.iter().any(|g| groups.contains(g))
                        && self.is_up(name)
                });
                let Some((host, _)) = other else {
                    tracing::warn!(
                        run_id = lost.run_id,
                        "no other host of its group is up to run it"
                    );
                    return;
                };
                JobTo::Host(host)
            }
        };
        match self.send(to, &job, true, Some(&lost.run_id)).await {
            Ok(()) => tracing::info!(
                lost = lost.run_id,
                run_id = job.run_id,
                %to,
                "idempotent run sent again to another host of its group"
            ),
            Err(e) => tracing::error!("cannot send the lost run again: {e}"),
        }
    }

    /// Every agent of the fleet file with its presence and last hello.
    pub async fn status(&self) -> Result<Vec<AgentStatus>, ControllerError> {
        let presence = self.refresh_presence().await;
        let hellos: BTreeMap<String, crate::store::postgres::AgentRow> = self
            .store
            .agents()
            .await?
            .into_iter()
            .map(|a| (a.host.clone(), a))
            .collect();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(self
            .fleet
            .agents
            .iter()
            .map(|(host, entry)| {
                let p = presence.get(host);
                let hello = hellos.get(host);
                let up = seen.contains_key(host) && self.is_up(host);
                AgentStatus {
                    host: host.clone(),
                    groups: entry.groups.clone(),
                    up,
                    last_heartbeat_ms_ago: seen
                        .get(host)
                        .map(|(_, at)| at.elapsed().as_millis() as u64),
                    version: p.map(|p| p.version.clone()),
                    running: p.map(|p| p.running),
                    lock_digest: p.and_then(|p| p.lock_digest.clone()),
                    drift: hello
                        .and_then(|h| h.lock.get("drift").cloned())
                        .and_then(|d| serde_json::from_value(d).ok())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Asks agent `host` to acknowledge (or resolve) its incident `id` with the operator's
    /// note; the incident's runbook when done.
    pub async fn incident_action(
        &self,
        host: &str,
        id: i64,
        resolve: bool,
        note: &str,
    ) -> Result<String, ControllerError> {
        if !self.fleet.agents.contains_key(host) {
            return Err(ControllerError::NoAgents {
                target: Target::Host(host.to_string()),
            });
        }
        let agent = |message: String| ControllerError::Agent {
            host: host.to_string(),
            message,
        };
        let request = protocol::IncidentRequest {
            id,
            resolve,
            note: note.to_string(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| agent(e.to_string()))?;
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            self.client
                .request(protocol::incident_subject(host), body.into()),
        )
        .await
        .map_err(|_| agent("did not answer within 5s".into()))?
        .map_err(|e| agent(format!("did not answer: {e}")))?;
        let answer: protocol::IncidentAnswer =
            serde_json::from_slice(&reply.payload).map_err(|e| agent(e.to_string()))?;
        match (answer.runbook, answer.error) {
            (Some(runbook), None) => Ok(runbook),
            (_, Some(e)) => Err(agent(e)),
            (None, None) => Err(agent("an empty answer".into())),
        }
    }

    /// Asks every agent whether its audit chain is intact and still holds the newest
    /// checkpoint it signed; adds the problems noted when checkpoints arrived.
    pub async fn audit(&self) -> Result<Vec<HostAudit>, ControllerError> {
        let mut out = Vec::new();
        for host in self.fleet.agents.keys() {
            let last = self.store.last_checkpoint(host).await?;
            let mut problems: Vec<String> = self
                .store
                .audit_problems(host)
                .await?
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            let anchor = last
                .as_ref()
                .map(|c| format!("{}:{}", c.seq, c.head))
                .unwrap_or_default();
            let asked = tokio::time::timeout(
                Duration::from_secs(5),
                self.client
                    .request(protocol::audit_subject(host), anchor.clone().into()),
            )
            .await;
            let mut rows = None;
            match asked {
                Ok(Ok(reply)) => {
                    match serde_json::from_slice::<protocol::AuditAnswer>(&reply.payload) {
                        Ok(a) => {
                            rows = Some(a.rows);
                            if let Some(b) = a.broken {
                                problems.push(format!("the agent's chain is broken: {b}"));
                            }
                        }
                        Err(e) => problems.push(format!("the agent's answer does not parse: {e}")),
                    }
                }
                Ok(Err(e)) => problems.push(format!("the agent did not answer: {e}")),
                Err(_) => problems.push("the agent did not answer within 5s".to_string()),
            }
            out.push(HostAudit {
                host: host.clone(),
                ok: problems.is_empty(),
                checkpoint: last.map(|_| anchor),
                rows,
                problems,
            });
        }
        Ok(out)
    }
}
