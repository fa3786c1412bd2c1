//! `runcap agent`: one host of a fleet. The agent is a `runcap serve` without HTTP that
//! takes its runs from the controller's jobs instead: its own manifest decides what
//! runs and with which grants (a job names a runbook and parameters, nothing else), and
//! its own SQLite store, journal and recovery work exactly as for `runcap run`.
//!
//! Delivery, step by step:
//! 1. A job arrives from the agent's durable consumer, or from the queue of one of its
//!    groups when it has a slot free for that group. If the store already has its run
//!    id (a redelivery), the agent reports what it recorded and acknowledges: a run is
//!    never started twice. A group's job is claimed first (see [`protocol`]); a job
//!    another agent claimed is handed back to the queue.
//! 2. Otherwise the agent notes in its outbox that the run's result is owed, starts the
//!    run, and acknowledges the job only once the run's start is in the store. A job
//!    delivered to an agent that dies before that is delivered again.
//! 3. When the run ends, the agent publishes everything its store holds about it and
//!    clears the outbox entry once JetStream has the event. An agent that was killed
//!    mid-run recovers the run at its next start (as `runcap run` would) and reports it
//!    then, from the outbox.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use thiserror::Error;
use tracing::Instrument;

use super::config::Fleet;
use super::protocol::{self, AuditAnswer, Event, Job, Presence};
use crate::serve::{Origin, RunNotify, RunRequest, Server, StartError};
use crate::store::incidents::OperatorAction;
use crate::store::records::{RunState, now_ms};

/// A delivered job, where it came from, and the group slot it holds.
struct Taken {
    message: jetstream::Message,
    /// The group whose queue it came from; `None` for a job sent to this host.
    group: Option<String>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Who runs a group's job.
enum Claim {
    Mine,
    Theirs(String),
}

/// How far back the first incident report of an agent's start reaches for closed ones.
const INCIDENTS_AT_START: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why an agent stopped before its time.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{0}")]
    Transport(#[from] protocol::TransportError),
    #[error("agent `{name}` is not in [agents] of {file}")]
    NotInFleet { name: String, file: String },
    #[error("the agent's audit key {path}: {message}")]
    Key { path: String, message: String },
}

/// Everything an agent needs besides its server.
pub struct AgentSetup {
    pub name: String,
    pub fleet: Fleet,
    /// The NATS password, read from the manifest's secrets.
    pub password: Option<String>,
    /// The secret key its audit checkpoints are signed with.
    pub audit_key: String,
    /// Said to the controller at every start.
    pub hello: Event,
}

/// The agent's audit key: read from the state directory, or made and kept there on the
/// first start (returns the key text and whether it was just made).
pub fn audit_key(state_dir: &std::path::Path) -> Result<(String, bool), AgentError> {
    let path = state_dir.join("agent-audit.key");
    let shown = path.display().to_string();
    let key_err = |message: String| AgentError::Key {
        path: shown.clone(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            crate::signing::public_of(&text).map_err(|e| key_err(e.to_string()))?;
            Ok((text, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (secret, _) = crate::signing::generate().map_err(|e| key_err(e.to_string()))?;
            std::fs::create_dir_all(state_dir).map_err(|e| key_err(e.to_string()))?;
            let tmp = state_dir.join("agent-audit.key.tmp");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| key_err(e.to_string()))?;
                f.write_all(secret.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| key_err(e.to_string()))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| key_err(e.to_string()))?;
            Ok((secret, true))
        }
        Err(e) => Err(key_err(e.to_string())),
    }
}

/// One running agent.
struct Agent {
    name: String,
    fleet: Fleet,
    server: Arc<Server>,
    js: jetstream::Context,
    client: async_nats::Client,
    audit_key: String,
    /// Raised when a run ends, so a checkpoint follows it.
    checkpoint_now: tokio::sync::Notify,
    /// The approved lockfile's digest, as the hello said.
    lock_digest: Option<String>,
    /// Run ids of jobs being taken right now: a second delivery of one waits its turn
    /// behind the first, then finds its run recorded.
    taking: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Runs the agent until `stop` resolves; then takes no more jobs, lets runs under way
/// finish within `grace`, reports them, and returns.
pub async fn run(
    server: Arc<Server>,
    setup: AgentSetup,
    grace: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let AgentSetup {
        name,
        fleet,
        password,
        audit_key,
        hello,
    } = setup;
    if !fleet.agents.contains_key(&name) {
        return Err(AgentError::NotInFleet {
            name,
            file: fleet.file.display().to_string(),
        });
    }
    let mut nats = fleet.nats.clone();
    if let Some(url) = fleet.agents.get(&name).and_then(|a| a.nats.clone()) {
        nats.url = url;
    }
    let client = protocol::connect(&nats, &name, password).await?;
    let js = protocol::jetstream(client.clone());
    let lock_digest = match &hello {
        Event::Hello { lock, .. } => lock.digest.clone(),
        _ => None,
    };
    let agent = Arc::new(Agent {
        lock_digest,
        taking: Default::default(),
        name,
        fleet,
        server,
        js,
        client,
        audit_key,
        checkpoint_now: tokio::sync::Notify::new(),
    });
    agent.publish(&hello).await;
    agent.report_owed().await;
    let tasks = vec![
        tokio::spawn(agent.clone().heartbeats()),
        tokio::spawn(agent.clone().checkpoints()),
        tokio::spawn(agent.clone().answer_audits()),
        tokio::spawn(agent.clone().answer_incident_requests()),
    ];
    tokio::select! {
        () = agent.clone().take_jobs() => {}
        () = stop => {}
    }
    tracing::info!("agent stopping: no new jobs");
    agent.server.shut_down(grace).await;
    // Runs that ended while stopping are reported before the agent goes.
    let reporting = tokio::time::timeout(Duration::from_secs(10), agent.report_owed());
    let _ = reporting.await;
    agent.checkpoint().await;
    for t in tasks {
        t.abort();
    }
    let _ = agent.client.flush().await;
    Ok(())
}

impl Agent {
    /// Publishes an event and waits for JetStream to have it, trying again while NATS is
    /// unreachable. Returns once stored (a repeat is dropped by its message id).
    async fn publish(&self, event: &Event) {
        let subject = protocol::event_subject(&self.name, event.kind());
        let payload: bytes::Bytes = match serde_json::to_vec(event) {
            Ok(p) => p.into(),
            Err(e) => {
                tracing::error!("cannot encode a {} event: {e}", event.kind());
                return;
            }
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = event.dedupe_id(&self.name) {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let sent = match self
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(subject, "cannot publish yet ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Reports every run whose result the controller has not confirmed: ended runs
    /// (including those recovered after a crash) are published and cleared.
    async fn report_owed(&self) {
        let owed = match self.server.store.outbox() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("cannot read the fleet outbox: {e}");
                return;
            }
        };
        for (run_id, added_at) in owed {
            match self.server.store.run(&run_id) {
                Ok(Some(detail)) if detail.run.status != RunState::Running => {
                    self.publish(&Event::Finished {
                        run: Box::new(detail),
                    })
                    .await;
                    self.forget(&run_id);
                }
                Ok(Some(_)) => {} // under way: its end reports it
                Ok(None) => {
                    // Never started: the job was not acknowledged and comes again; an
                    // entry a day old belongs to a job that never will.
                    if (now_ms() as i64) - added_at > 24 * 3600 * 1000 {
                        self.forget(&run_id);
                    }
                }
                Err(e) => tracing::error!(run_id, "cannot read a run owed to the controller: {e}"),
            }
        }
    }

    fn forget(&self, run_id: &str) {
        if let Err(e) = self.server.store.outbox_remove(run_id) {
            tracing::error!(run_id, "cannot clear the fleet outbox: {e}");
        }
    }

    /// Takes jobs from the agent's own consumer and its groups' queues, until the agent
    /// stops.
    async fn take_jobs(self: Arc<Self>) {
        let (groups, slots) = self
            .fleet
            .agents
            .get(&self.name)
            .map(|a| (a.groups.clone(), a.slots))
            .unwrap_or_default();
        // Dropped when the agent stops, and every loop with it.
        let mut loops = tokio::task::JoinSet::new();
        loops.spawn(self.clone().take_own_jobs());
        for group in groups {
            loops.spawn(self.clone().take_group_jobs(group, slots));
        }
        loops.join_all().await;
    }

    /// The durable consumer `name`, once the controller has made it.
    async fn consumer(&self, name: &str) -> jetstream::consumer::PullConsumer {
        loop {
            match self.js.get_consumer_from_stream(name, protocol::JOBS).await {
                Ok(c) => return c,
                Err(e) => {
                    tracing::warn!(
                        "no job consumer `{name}` yet ({e}): is the controller running with this fleet file?"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Takes the jobs sent to this host.
    async fn take_own_jobs(self: Arc<Self>) {
        let consumer_name = protocol::job_consumer(&self.name);
        loop {
            let consumer = self.consumer(&consumer_name).await;
            let mut messages = match consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cannot take jobs ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(consumer = consumer_name, "taking jobs");
            while let Some(next) = messages.next().await {
                match next {
                    Ok(message) => {
                        tokio::spawn(self.clone().take(message, None));
                    }
                    Err(e) => tracing::warn!("job stream: {e}"),
                }
                if self.server.closing() {
                    return;
                }
            }
        }
    }

    /// Takes the jobs of `group`'s queue, one at a time while one of its `slots` is
    /// free: a busy agent leaves the group's next job to an idle one.
    async fn take_group_jobs(self: Arc<Self>, group: String, slots: u32) {
        let consumer_name = protocol::group_consumer(&group);
        let free = Arc::new(tokio::sync::Semaphore::new(slots as usize));
        loop {
            let consumer = self.consumer(&consumer_name).await;
            tracing::info!(consumer = consumer_name, slots, "taking the group's jobs");
            loop {
                let Ok(slot) = free.clone().acquire_owned().await else {
                    return;
                };
                if self.server.closing() {
                    return;
                }
                let next = consumer
                    .batch()
                    .max_messages(1)
                    .expires(Duration::from_secs(5))
                    .messages()
                    .await;
                let mut batch = match next {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!("cannot take {group}'s jobs ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                };
                match batch.next().await {
                    Some(Ok(message)) => {
                        tokio::spawn(self.clone().take(message, Some(slot)));
                    }
                    Some(Err(e)) => {
                        tracing::debug!("{group}'s queue: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => {}
                }
            }
        }
    }

    /// Handles one delivered job. `slot`, for a group's job, is held until its run ends.
    async fn take(
        self: Arc<Self>,
        message: jetstream::Message,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let job: Job = match serde_json::from_slice(&message.payload) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("a job that is not a job ({e}); dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let group = protocol::job_group(message.subject.as_str()).map(str::to_string);
        if group.is_some() && !super::config::is_token(&job.run_id) {
            tracing::error!(
                run_id = job.run_id,
                "a group's job whose run id cannot be claimed; dropped"
            );
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        let span = tracing::info_span!("job", run_id = %job.run_id, runbook = %job.runbook, group = group.as_deref().unwrap_or(""));
        let taken = Taken {
            message,
            group,
            slot,
        };
        self.take_job(job, taken).instrument(span).await;
    }

    async fn take_job(self: Arc<Self>, job: Job, taken: Taken) {
        // One delivery of a run id at a time, until the run is recorded (or refused).
        loop {
            if self.taking.lock().await.insert(job.run_id.clone()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.clone().take_job_alone(&job, taken).await;
        self.taking.lock().await.remove(&job.run_id);
    }

    /// Claims a group's job for this agent: the first claim of a run id is kept by
    /// JetStream and any later one refused, so only one agent runs it. A claim whose
    /// answer was lost is found in the stream (ours, or another's).
    async fn claim(&self, group: &str, run_id: &str) -> Result<Claim, String> {
        let subject = protocol::claim_subject(group, run_id);
        let published = match self
            .js
            .publish(subject.clone(), self.name.clone().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let refused = match published {
            Ok(()) => return Ok(Claim::Mine),
            Err(e) => e,
        };
        let held = async {
            let claims = self.js.get_stream_no_info(protocol::CLAIMS).await?;
            let held = claims.get_last_raw_message_by_subject(&subject).await?;
            Ok::<_, async_nats::Error>(String::from_utf8_lossy(&held.payload).into_owned())
        };
        match held.await {
            Ok(holder) if holder == self.name => Ok(Claim::Mine),
            Ok(holder) => Ok(Claim::Theirs(holder)),
            Err(e) => Err(format!("{refused}; the claim cannot be read either: {e}")),
        }
    }

    async fn take_job_alone(self: Arc<Self>, job: &Job, taken: Taken) {
        let Taken {
            message,
            group,
            slot,
        } = taken;
        // A job delivered again: report what is recorded, never run it twice.
        match self.server.store.run(&job.run_id) {
            Ok(Some(detail)) if detail.run.id == job.run_id => {
                tracing::info!("delivered again; already recorded as {}", detail.run.status);
                let _ = message.double_ack().await;
                if detail.run.status != RunState::Running {
                    self.publish(&Event::Finished {
                        run: Box::new(detail),
                    })
                    .await;
                    self.forget(&job.run_id);
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot read the store ({e}); the job is delivered again later");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
                return;
            }
        }
        if let Some(group) = &group {
            match self.claim(group, &job.run_id).await {
                Ok(Claim::Mine) => {}
                Ok(Claim::Theirs(holder)) => {
                    // Its claimant runs it (or the controller declares it lost).
                    tracing::info!("claimed by {holder}; handed back to {group}'s queue");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(self.fleet.timing.heartbeat)))
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::warn!("cannot claim the job ({e}); it is delivered again later");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return;
                }
            }
        }
        if let Err(e) = self.server.store.outbox_add(&job.run_id) {
            tracing::error!("cannot note the run as owed ({e}); the job is delivered again later");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return;
        }
        let notify = RunNotify::default();
        let started = self.server.start_run(RunRequest {
            runbook: &job.runbook,
            dry_run: job.dry_run,
            vars: &job.vars,
            origin: Origin::Fleet,
            skip_if_running: false,
            trigger: None,
            run_id: Some(job.run_id.clone()),
            notify: Some(notify.clone()),
        });
        match started {
            Ok(_) => {}
            Err(StartError::Stopping) => {
                self.forget(&job.run_id);
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return;
            }
            Err(e) => {
                tracing::warn!("refused: {e}");
                let _ = message.double_ack().await;
                self.publish(&Event::Refused {
                    run_id: job.run_id.clone(),
                    runbook: job.runbook.clone(),
                    reason: e.to_string(),
                })
                .await;
                self.forget(&job.run_id);
                return;
            }
        }
        // Acknowledged once the run's start is recorded; until then the job is kept
        // alive (a run may wait for its runbook's lock).
        let mut progress = tokio::time::interval(self.fleet.timing.heartbeat);
        progress.tick().await;
        loop {
            tokio::select! {
                () = notify.recorded.notified() => break,
                () = notify.finished.notified() => {
                    notify.finished.notify_one();
                    break;
                }
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
        if let Err(e) = message.double_ack().await {
            // Not acknowledged: the job comes again, finds the run recorded, and reports it.
            tracing::warn!("cannot acknowledge the job: {e}");
        }
        self.publish(&Event::Started {
            run_id: job.run_id.clone(),
            runbook: job.runbook.clone(),
            at_ms: now_ms(),
        })
        .await;
        let agent = self.clone();
        let job = job.clone();
        tokio::spawn(async move {
            notify.finished.notified().await;
            drop(slot);
            match agent.server.store.run(&job.run_id) {
                Ok(Some(detail)) => {
                    agent
                        .publish(&Event::Finished {
                            run: Box::new(detail),
                        })
                        .await;
                    agent.forget(&job.run_id);
                }
                Ok(None) => tracing::error!(run_id = job.run_id, "the run left no record"),
                Err(e) => tracing::error!(run_id = job.run_id, "cannot read the run: {e}"),
            }
            agent.checkpoint_now.notify_one();
        });
    }

    /// Keeps the agent's presence fresh in the key-value bucket.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.fleet.timing.heartbeat);
        let mut bucket = None;
        loop {
            tick.tick().await;
            if bucket.is_none() {
                match self.js.get_key_value(protocol::PRESENCE).await {
                    Ok(b) => bucket = Some(b),
                    Err(e) => {
                        tracing::warn!("no presence bucket yet: {e}");
                        continue;
                    }
                }
            }
            let Some(b) = &bucket else { continue };
            let presence = Presence {
                version: env!("CARGO_PKG_VERSION").to_string(),
                at_ms: now_ms(),
                running: self.server.running(),
                lock_digest: self.lock_digest.clone(),
            };
            let Ok(value) = serde_json::to_vec(&presence) else {
                continue;
            };
            if let Err(e) = b.put(&self.name, value.into()).await {
                tracing::warn!("cannot refresh presence: {e}");
            }
        }
    }

    /// Signs and publishes the audit chain's head every `checkpoint_every` and after
    /// every run, with the incidents that changed since the last time. (Every change to an
    /// incident is audited, so a new chain head is when incidents may have changed.)
    async fn checkpoints(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.fleet.timing.checkpoint_every);
        let mut last: Option<i64> = None;
        // At start: every incident still open, and those closed in the last 30 days.
        let mut incidents_since = now_ms() as i64 - INCIDENTS_AT_START.as_millis() as i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.checkpoint_now.notified() => {}
            }
            let seq = self.server.store.audit_head().ok().flatten().map(|a| a.seq);
            if seq.is_some() && seq != last {
                incidents_since = self.report_incidents(incidents_since).await;
                self.checkpoint().await;
                last = seq;
            }
        }
    }

    /// Publishes the incidents updated at or after `since_ms`; returns where the next
    /// report starts (unchanged when this one could not be made, so nothing is skipped).
    async fn report_incidents(&self, since_ms: i64) -> i64 {
        let now = now_ms() as i64;
        let open = self.server.store.incidents(false, 0);
        let changed = self.server.store.incidents(true, since_ms);
        let (open, changed) = match (open, changed) {
            (Ok(o), Ok(c)) => (o, c),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot read incidents to report: {e}");
                return since_ms;
            }
        };
        // Open ones always (an incident the controller missed is sent again); the others
        // once they changed.
        let mut incidents = changed;
        for i in open {
            if !incidents.iter().any(|c| c.id == i.id) {
                incidents.push(i);
            }
        }
        if !incidents.is_empty() {
            self.publish(&Event::Incidents { incidents }).await;
        }
        now
    }

    async fn checkpoint(&self) {
        let head = match self.server.store.audit_head() {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot read the audit chain's head: {e}");
                return;
            }
        };
        let at_ms = now_ms();
        let message = protocol::checkpoint_message(&self.name, head.seq, &head.hash, at_ms);
        let signature = match crate::signing::sign_message(&self.audit_key, &message) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                tracing::error!("cannot sign a checkpoint: {e}");
                return;
            }
        };
        self.publish(&Event::Checkpoint {
            seq: head.seq,
            head: head.hash,
            at_ms,
            signature,
        })
        .await;
    }

    /// Answers requests on `subject` (`what` names them in warnings) with `answer`'s
    /// JSON, subscribing again whenever the subscription cannot be made or ends.
    async fn answer_requests<A: serde::Serialize>(
        self: Arc<Self>,
        subject: String,
        what: &str,
        answer: impl Fn(&Self, &[u8]) -> A,
    ) {
        loop {
            let mut sub = match self.client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for {what}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(request) = sub.next().await {
                let Some(reply) = request.reply.clone() else {
                    continue;
                };
                if let Ok(body) = serde_json::to_vec(&answer(&self, &request.payload)) {
                    let _ = self.client.publish(reply, body.into()).await;
                }
            }
        }
    }

    /// Answers the controller's questions about the audit chain: is it intact, and does
    /// it still hold the checkpoint the controller has?
    async fn answer_audits(self: Arc<Self>) {
        let subject = protocol::audit_subject(&self.name);
        self.answer_requests(subject, "audit questions", |agent, payload| {
            let anchor = std::str::from_utf8(payload)
                .ok()
                .and_then(|t| t.trim().parse::<crate::store::audit::Anchor>().ok());
            match agent.server.store.verify_audit(anchor.as_ref()) {
                Ok(v) => AuditAnswer {
                    rows: v.rows,
                    head: v.head,
                    broken: v.broken.map(|b| format!("row {}: {}", b.seq, b.problem)),
                },
                Err(e) => AuditAnswer {
                    rows: 0,
                    head: None,
                    broken: Some(format!("the chain cannot be read: {e}")),
                },
            }
        })
        .await
    }

    /// Acknowledges or resolves incidents as operators ask through the controller, each
    /// recorded and audited in this store as a local `runcap incidents ack|resolve` is;
    /// the change is reported at once.
    async fn answer_incident_requests(self: Arc<Self>) {
        let subject = protocol::incident_subject(&self.name);
        self.answer_requests(subject, "incident requests", |agent, payload| {
            let answer = agent.act_on_incident(payload);
            agent.checkpoint_now.notify_one();
            answer
        })
        .await
    }

    /// Carries out one incident request.
    fn act_on_incident(&self, payload: &[u8]) -> protocol::IncidentAnswer {
        let refused = |error: String| protocol::IncidentAnswer {
            runbook: None,
            error: Some(error),
        };
        let r = match serde_json::from_slice::<protocol::IncidentRequest>(payload) {
            Ok(r) => r,
            Err(e) => return refused(format!("not an incident request: {e}")),
        };
        let action = if r.resolve {
            OperatorAction::Resolve
        } else {
            OperatorAction::Acknowledge
        };
        match self
            .server
            .store
            .incident_by_operator(r.id, action, &r.note)
        {
            Ok(Some(runbook)) => protocol::IncidentAnswer {
                runbook: Some(runbook),
                error: None,
            },
            Ok(None) => refused(format!("no open incident #{} on {}", r.id, self.name)),
            Err(e) => refused(format!("the store: {e}")),
        }
    }
}
