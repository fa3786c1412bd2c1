//! What the controller and agents say to each other over NATS, and where.
//!
//! | what | where | who publishes |
//! |---|---|---|
//! | a job: run this runbook with this run id | `runcap.job.host.HOST` in the work-queue stream `RUNCAP_JOBS`, consumed by the durable consumer `agent-HOST` | the controller |
//! | a job for any one agent of a group | `runcap.job.group.GROUP` in `RUNCAP_JOBS`, consumed by the durable consumer `group-GROUP` that every agent of the group pulls from | the controller |
//! | a claim: this agent runs this group job | `runcap.claim.GROUP.RUN_ID` in the stream `RUNCAP_CLAIMS`, which keeps the first claim of a subject and refuses any other | an agent of GROUP |
//! | an event: hello, run started, run finished, run refused, incidents, audit checkpoint | `runcap.event.HOST.KIND` in the stream `RUNCAP_EVENTS`, consumed by the durable consumer `controller` | agent HOST |
//! | presence: version, lock digest, runs under way, at | key `HOST` of the key-value bucket `runcap-agents` | agent HOST |
//! | an audit question: is your chain intact up to this checkpoint? | request on `runcap.audit.HOST` | the controller |
//! | an operator's ack or resolve of one of the agent's incidents | request on `runcap.incident.HOST` | the controller |
//!
//! The controller creates the streams, the consumers and the bucket; an agent only
//! uses its own. NATS permissions (see [`nats_authorization`]) hold every agent to its
//! own subjects, so the host an event's subject names is the host that sent it.
//!
//! A group's queue can deliver one job to two agents (the first took it and went
//! silent before acknowledging it), so an agent claims a group job before it records
//! the run: only the claimant runs it, and another agent hands the job back, to be
//! delivered again until the claimant takes it or the controller declares the run
//! lost. A run never starts on two hosts.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::{Fleet, NatsSettings};
use crate::store::RunDetail;

/// The work-queue stream of jobs.
pub const JOBS: &str = "RUNCAP_JOBS";
/// The stream of agents' events.
pub const EVENTS: &str = "RUNCAP_EVENTS";
/// The key-value bucket of agents' presence.
pub const PRESENCE: &str = "runcap-agents";
/// The controller's durable consumer of events.
pub const CONTROLLER: &str = "controller";

/// Where jobs for `host` are published.
pub fn job_subject(host: &str) -> String {
    format!("runcap.job.host.{host}")
}

/// The durable consumer an agent takes its jobs from.
pub fn job_consumer(host: &str) -> String {
    format!("agent-{host}")
}

/// The stream of claims on group jobs.
pub const CLAIMS: &str = "RUNCAP_CLAIMS";

/// Where jobs for any one agent of `group` are published.
pub fn group_job_subject(group: &str) -> String {
    format!("runcap.job.group.{group}")
}

/// The durable consumer every agent of `group` pulls the group's jobs from.
pub fn group_consumer(group: &str) -> String {
    format!("group-{group}")
}

/// Where an agent of `group` claims the run `run_id` (a run id is one subject token).
pub fn claim_subject(group: &str, run_id: &str) -> String {
    format!("runcap.claim.{group}.{run_id}")
}

/// Where a job goes: to one host, or to a group's queue for any one of its agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTo<'a> {
    Host(&'a str),
    Queue(&'a str),
}

impl JobTo<'_> {
    /// The subject the job is published on.
    pub fn subject(&self) -> String {
        match self {
            JobTo::Host(h) => job_subject(h),
            JobTo::Queue(g) => group_job_subject(g),
        }
    }
}

impl std::fmt::Display for JobTo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobTo::Host(h) => write!(f, "{h}"),
            JobTo::Queue(g) => write!(f, "the queue of group {g}"),
        }
    }
}

/// The group a job's subject names, if it is a group's job.
pub fn job_group(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("runcap.job.group.")
        .filter(|g| super::config::is_token(g))
}

/// Where `host` publishes events of one kind.
pub fn event_subject(host: &str, kind: &str) -> String {
    format!("runcap.event.{host}.{kind}")
}

/// Where the controller asks `host` about its audit chain.
pub fn audit_subject(host: &str) -> String {
    format!("runcap.audit.{host}")
}

/// The reply-subject prefix of a NATS user: each has its own, so no one can listen to
/// another's replies.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// The host an event subject names, and the event's kind.
pub fn parse_event_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("runcap.event.")?;
    let (host, kind) = rest.split_once('.')?;
    (super::config::is_token(host) && !kind.contains('.')).then_some((host, kind))
}

/// A run the controller asks an agent for. The run id is chosen by the controller, so a
/// job delivered twice is recognised as the same run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub run_id: String,
    pub runbook: String,
    /// `NAME=VALUE` for the runbook's parameters.
    #[serde(default)]
    pub vars: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Milliseconds since the Unix epoch, when the controller sent it.
    pub dispatched_ms: u64,
}

/// Whether an agent's manifest still matches its approved lockfile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockState {
    /// sha256 of the approved lockfile, if there is one.
    pub digest: Option<String>,
    /// What differs between the manifest as it is and the lock, one line each.
    pub drift: Vec<String>,
    /// The manifest as it is now, in the lockfile's form (plugins, grants, services,
    /// secrets' sources): what the controller compares between hosts. Absent from an
    /// agent older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Box<crate::lockfile::EnvLock>>,
}

/// A runbook an agent offers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunbookInfo {
    pub name: String,
    /// Safe to run again on another host of its group if its host is lost mid-run.
    pub idempotent: bool,
}

/// What an agent tells the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// An agent started: who it is and what it may do.
    Hello {
        version: String,
        environment: String,
        groups: Vec<String>,
        /// The public key its audit checkpoints are signed with.
        audit_key: String,
        /// Its capability report, as `runcap caps --json` prints it.
        caps: serde_json::Value,
        lock: LockState,
        runbooks: Vec<RunbookInfo>,
    },
    /// A job's run is recorded on the agent and under way.
    Started {
        run_id: String,
        runbook: String,
        at_ms: u64,
    },
    /// A run ended (or was recovered after the agent died): everything its store holds.
    Finished { run: Box<RunDetail> },
    /// A job the agent would not run (no such runbook, bad parameters).
    Refused {
        run_id: String,
        runbook: String,
        reason: String,
    },
    /// Incidents the agent opened, escalated, acknowledged or resolved since it last
    /// said, each with its timeline.
    Incidents {
        incidents: Vec<crate::store::incidents::Incident>,
    },
    /// The agent's audit chain head, signed with its audit key.
    Checkpoint {
        seq: i64,
        head: String,
        at_ms: u64,
        signature: String,
    },
}

impl Event {
    /// The last token of the subject this event is published on.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Hello { .. } => "hello",
            Event::Started { .. } => "started",
            Event::Finished { .. } => "finished",
            Event::Refused { .. } => "refused",
            Event::Checkpoint { .. } => "checkpoint",
            Event::Incidents { .. } => "incidents",
        }
    }

    /// A message id that makes JetStream drop a repeat of the same event.
    pub fn dedupe_id(&self, host: &str) -> Option<String> {
        match self {
            Event::Started { run_id, .. } => Some(format!("{host}.{run_id}.started")),
            Event::Finished { run } => Some(format!("{host}.{}.finished", run.run.id)),
            Event::Refused { run_id, .. } => Some(format!("{host}.{run_id}.refused")),
            Event::Checkpoint { seq, .. } => Some(format!("{host}.checkpoint.{seq}")),
            Event::Hello { .. } | Event::Incidents { .. } => None,
        }
    }
}

/// What an agent says in the presence bucket at every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    pub version: String,
    pub at_ms: u64,
    pub running: usize,
    pub lock_digest: Option<String>,
}

/// Where the controller asks `host` to acknowledge or resolve one of its incidents.
pub fn incident_subject(host: &str) -> String {
    format!("runcap.incident.{host}")
}

/// An operator's acknowledgement or resolution of an agent's incident, sent through the
/// controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRequest {
    pub id: i64,
    /// `true` to resolve, `false` to acknowledge.
    pub resolve: bool,
    pub note: String,
}

/// What the agent did with an [`IncidentRequest`]: the incident's runbook, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentAnswer {
    pub runbook: Option<String>,
    pub error: Option<String>,
}

/// What an agent answers about its audit chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditAnswer {
    pub rows: u64,
    pub head: Option<String>,
    /// The first broken link (or the checkpoint it no longer contains), if any.
    pub broken: Option<String>,
}

/// What an audit checkpoint's signature covers.
pub fn checkpoint_message(host: &str, seq: i64, head: &str, at_ms: u64) -> Vec<u8> {
    format!("runcap audit checkpoint v1 host:{host} seq:{seq} head:{head} at:{at_ms}").into_bytes()
}

/// Why NATS could not be used.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("NATS JetStream: {0}")]
    JetStream(String),
    #[error("cannot read the NATS password: {0}")]
    Password(String),
}

impl TransportError {
    fn js(e: impl std::fmt::Display) -> Self {
        TransportError::JetStream(e.to_string())
    }
}

/// Connects to NATS as `user` (an agent's name, or `controller`). The client reconnects
/// by itself after a lost connection, forever.
pub async fn connect(
    settings: &NatsSettings,
    user: &str,
    password: Option<String>,
) -> Result<async_nats::Client, TransportError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("runcap {user}"))
        .custom_inbox_prefix(inbox_prefix(user))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        })
        .event_callback(|event| async move {
            tracing::info!(%event, "nats");
        });
    if let Some(pw) = password {
        options = options.user_and_password(user.to_string(), pw);
    }
    if user != CONTROLLER {
        // An agent outlives NATS being down, at its start too; the controller says at
        // once that it cannot reach NATS.
        options = options.retry_on_initial_connect();
    }
    if let Some(ca) = &settings.ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    options
        .connect(settings.url.as_str())
        .await
        .map_err(|source| TransportError::Connect {
            url: settings.url.clone(),
            source,
        })
}

/// A JetStream context with the fleet's time limit on every API call.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}

/// Creates (or brings up to date) the streams, consumers and bucket the fleet uses: the
/// controller's job at start. Consumers of agents no longer in the fleet file are left
/// alone (their jobs stay visible to an operator).
pub async fn set_up(js: &jetstream::Context, fleet: &Fleet) -> Result<(), TransportError> {
    js.create_or_update_stream(stream::Config {
        name: JOBS.into(),
        subjects: vec!["runcap.job.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| TransportError::js(format!("the stream {JOBS}: {e}")))?;
    js.create_or_update_stream(stream::Config {
        name: EVENTS.into(),
        subjects: vec!["runcap.event.>".into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| TransportError::js(format!("the stream {EVENTS}: {e}")))?;
    for host in fleet.agents.keys() {
        js.create_consumer_on_stream(
            job_consumer_config(job_consumer(host), job_subject(host), fleet),
            JOBS,
        )
        .await
        .map_err(|e| TransportError::js(format!("the consumer {}: {e}", job_consumer(host))))?;
    }
    for group in fleet.groups() {
        js.create_consumer_on_stream(
            job_consumer_config(group_consumer(group), group_job_subject(group), fleet),
            JOBS,
        )
        .await
        .map_err(|e| TransportError::js(format!("the consumer {}: {e}", group_consumer(group))))?;
    }
    // One message per subject, and a second one refused (not replacing the first): the
    // first claim of a run is the only one.
    js.create_or_update_stream(stream::Config {
        name: CLAIMS.into(),
        subjects: vec!["runcap.claim.>".into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|e| TransportError::js(format!("the stream {CLAIMS}: {e}")))?;
    js.create_consumer_on_stream(
        consumer::pull::Config {
            durable_name: Some(CONTROLLER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        },
        EVENTS,
    )
    .await
    .map_err(|e| TransportError::js(format!("the consumer {CONTROLLER}: {e}")))?;
    // The presence bucket's stream, as a key-value bucket is laid out (made directly:
    // the client's bucket creation first reads account details nats-server 2.9 words
    // differently).
    js.create_or_update_stream(stream::Config {
        name: format!("KV_{PRESENCE}"),
        subjects: vec![format!("$KV.{PRESENCE}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| TransportError::js(format!("the bucket {PRESENCE}: {e}")))?;
    Ok(())
}

/// A job consumer (an agent's or a group's): a job not acknowledged within `ack_wait`
/// (the agent died before recording the run) is delivered again.
fn job_consumer_config(name: String, subject: String, fleet: &Fleet) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name),
        filter_subject: subject,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: fleet.timing.heartbeat * 3,
        ..Default::default()
    }
}

/// The `authorization` block of a nats-server configuration for this fleet: the
/// controller may do anything; each agent may take only its own jobs and its groups',
/// claim only its groups' jobs, publish only its own events and presence, and answer
/// only its own audit questions. Passwords are read by nats-server from environment
/// variables named here.
pub fn nats_authorization(fleet: &Fleet) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    out.push_str(
        "    { user: controller, password: $RUNCAP_NATS_CONTROLLER, permissions: { publish: \">\", subscribe: \">\" } }\n",
    );
    for (host, entry) in &fleet.agents {
        let var = password_variable(host);
        let consumer = job_consumer(host);
        let mut publish = vec![
            event_subject(host, ">"),
            format!("$JS.API.STREAM.INFO.KV_{PRESENCE}"),
            format!("$KV.{PRESENCE}.{host}"),
            "$JS.API.INFO".to_string(),
        ];
        let consumers =
            std::iter::once(consumer).chain(entry.groups.iter().map(|g| group_consumer(g)));
        for c in consumers {
            publish.push(format!("$JS.API.CONSUMER.INFO.{JOBS}.{c}"));
            publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{JOBS}.{c}"));
            publish.push(format!("$JS.ACK.{JOBS}.{c}.>"));
        }
        if !entry.groups.is_empty() {
            publish.push(format!("$JS.API.STREAM.MSG.GET.{CLAIMS}"));
        }
        for g in &entry.groups {
            publish.push(claim_subject(g, "*"));
        }
        let subscribe = [
            format!("{}.>", inbox_prefix(host)),
            audit_subject(host),
            incident_subject(host),
        ];
        let list = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "    {{ user: \"{host}\", password: ${var}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}, allow_responses: true }} }}\n",
            list(&publish),
            list(&subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// The environment variable nats-server reads an agent's password from.
pub fn password_variable(host: &str) -> String {
    format!(
        "RUNCAP_NATS_{}",
        host.to_ascii_uppercase().replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_subject_names_its_host() {
        assert_eq!(
            parse_event_subject("runcap.event.web-1.finished"),
            Some(("web-1", "finished"))
        );
        assert_eq!(parse_event_subject("runcap.event.web-1"), None);
        assert_eq!(parse_event_subject("runcap.event.a.b.c"), None);
        assert_eq!(parse_event_subject("runcap.job.host.a"), None);
    }

    #[test]
    fn a_job_is_strict_json() {
        let job: Job =
            serde_json::from_str(r#"{"run_id": "r1", "runbook": "probe", "dispatched_ms": 5}"#)
                .unwrap();
        assert_eq!(job.vars, Vec::<String>::new());
        assert!(
            serde_json::from_str::<Job>(
                r#"{"run_id": "r1", "runbook": "p", "dispatched_ms": 5, "grants": {}}"#
            )
            .is_err(),
            "a job carries no grants or code"
        );
    }

    #[test]
    fn the_authorization_holds_each_agent_to_its_own_subjects() {
        let fleet = Fleet::parse(
            std::path::Path::new("fleet.toml"),
            "[nats]\nurl = \"nats://x\"\n[agents.web-1]\ngroups = [\"api\"]\n[agents.web-2]\ngroups = [\"db\"]\n",
        )
        .unwrap();
        let text = nats_authorization(&fleet);
        let web1 = text
            .lines()
            .find(|l| l.contains("user: \"web-1\""))
            .unwrap();
        assert!(web1.contains("\"runcap.event.web-1.>\""), "{web1}");
        assert!(web1.contains("$RUNCAP_NATS_WEB_1"), "{web1}");
        assert!(!web1.contains("web-2"), "{web1}");
        assert!(!web1.contains("\"_INBOX.>\""), "{web1}");
        // Its group's queue and claims, not another group's.
        assert!(web1.contains("MSG.NEXT.RUNCAP_JOBS.group-api\""), "{web1}");
        assert!(web1.contains("\"runcap.claim.api.*\""), "{web1}");
        assert!(!web1.contains("db"), "{web1}");
    }
}
