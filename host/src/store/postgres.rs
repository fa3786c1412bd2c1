//! The fleet controller's store, in PostgreSQL: every agent's runs, steps and capability
//! calls, the jobs the controller dispatched, agents' hellos and their signed audit
//! checkpoints. Agents keep their own SQLite store (the authority on what ran there);
//! this one is what an operator reads across hosts.
//!
//! Writes are idempotent: an event delivered twice (JetStream redelivers what was not
//! acknowledged) leaves the same rows. Migrations work as the SQLite store's do: a
//! numbered list, applied in one transaction under an advisory lock, never edited.

use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::history::{HostIncident, HostRun};
use super::records::{RunState, now_ms};
use super::{RunDetail, RunRow};

/// Why the fleet store could not be used.
#[derive(Debug, Error)]
pub enum PgStoreError {
    #[error("PostgreSQL connection string `{0}` is not valid: {1}")]
    Config(String, String),
    #[error(
        "the PostgreSQL connection string asks for sslmode=require, but the fleet file names no CA to verify the server with; add `ca = \"pg-ca.pem\"` to [store]"
    )]
    TlsWithoutCa,
    #[error("PostgreSQL CA {path}: {source}")]
    Ca {
        path: String,
        source: crate::net::TlsError,
    },
    #[error("PostgreSQL at {where_}: {}", with_causes(source))]
    Db {
        where_: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "the PostgreSQL store has schema version {found}, newer than this runcap ({known}); upgrade runcap"
    )]
    TooNew { found: i64, known: i64 },
    #[error("a stored value cannot be read: {0}")]
    Corrupt(String),
}

/// An error and what caused it, `: `-separated: tokio-postgres says "error performing
/// TLS handshake" and keeps the reason (an unknown issuer, say) as its source.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

/// Every migration, in order; index + 1 is the version it produces.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE agents (
        host          TEXT PRIMARY KEY,
        version       TEXT NOT NULL,
        environment   TEXT NOT NULL,
        groups        JSONB NOT NULL,
        audit_key     TEXT NOT NULL,
        caps          JSONB NOT NULL,
        lock          JSONB NOT NULL,
        runbooks      JSONB NOT NULL,
        hello_at      BIGINT NOT NULL
    );
    CREATE TABLE jobs (
        run_id        TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        runbook       TEXT NOT NULL,
        job           JSONB NOT NULL,
        state         TEXT NOT NULL,          -- dispatched | started | finished | refused | lost
        idempotent    BOOLEAN NOT NULL,
        retry_of      TEXT,
        dispatched_at BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        reason        TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_open ON jobs (state, host);
    CREATE TABLE runs (
        host          TEXT NOT NULL,
        id            TEXT NOT NULL,
        environment   TEXT NOT NULL,
        runbook       TEXT NOT NULL,
        status        TEXT NOT NULL,
        dry_run       BOOLEAN NOT NULL,
        started_at    BIGINT NOT NULL,
        finished_at   BIGINT,
        summary       TEXT NOT NULL,
        detail        JSONB,
        PRIMARY KEY (host, id)
    );
    CREATE INDEX runs_by_start ON runs (started_at DESC, id);
    CREATE INDEX runs_by_host ON runs (host, started_at DESC);
    CREATE UNIQUE INDEX runs_by_id ON runs (id, host);
    CREATE TABLE steps (
        host          TEXT NOT NULL,
        run_id        TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        step_id       TEXT NOT NULL,
        uses          TEXT NOT NULL,
        phase         TEXT NOT NULL,
        status        TEXT NOT NULL,
        attempts      BIGINT NOT NULL,
        summary       TEXT NOT NULL,
        started_at    BIGINT NOT NULL,
        duration_ms   DOUBLE PRECISION,
        PRIMARY KEY (host, run_id, seq)
    );
    CREATE TABLE calls (
        host          TEXT NOT NULL,
        run_id        TEXT NOT NULL,
        step_seq      BIGINT NOT NULL,
        n             BIGINT NOT NULL,
        capability    TEXT NOT NULL,
        operation     TEXT NOT NULL,
        target        TEXT NOT NULL,
        decision      TEXT NOT NULL,
        reason        TEXT,
        result        TEXT,
        at            BIGINT NOT NULL,
        PRIMARY KEY (host, run_id, step_seq, n)
    );
    CREATE TABLE checkpoints (
        host          TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        head          TEXT NOT NULL,
        at            BIGINT NOT NULL,
        signature     TEXT NOT NULL,
        received_at   BIGINT NOT NULL,
        PRIMARY KEY (host, seq)
    );
    CREATE TABLE audit_problems (
        id            BIGSERIAL PRIMARY KEY,
        host          TEXT NOT NULL,
        at            BIGINT NOT NULL,
        problem       TEXT NOT NULL
    );
"#,
    r#"
    CREATE TABLE incidents (
        host          TEXT NOT NULL,
        id            BIGINT NOT NULL,
        runbook       TEXT NOT NULL,
        status        TEXT NOT NULL,
        updated_at    BIGINT NOT NULL,
        incident      JSONB NOT NULL,
        PRIMARY KEY (host, id)
    );
    CREATE INDEX incidents_by_update ON incidents (updated_at DESC);
"#,
    // A job for any one agent of a group has no host until an agent claims it.
    r#"
    ALTER TABLE jobs ALTER COLUMN host DROP NOT NULL;
    ALTER TABLE jobs ADD COLUMN queue TEXT;
    ALTER TABLE jobs ADD COLUMN queue_seq BIGINT;
"#,
];

/// A handle on the controller's PostgreSQL store. It reconnects by itself after the
/// database restarts.
pub struct PgStore {
    config: tokio_postgres::Config,
    /// TLS to the server, when the fleet file names its CA.
    tls: Option<MakeRustlsConnect>,
    shown: String,
    client: Mutex<Option<Client>>,
}

/// Drives one connection until it ends, saying why it did.
async fn watch<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!("PostgreSQL connection ended: {e}");
    }
}

/// A job the controller dispatched.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub run_id: String,
    /// Where it runs: `None` while it waits in its group's queue, unclaimed.
    pub host: Option<String>,
    /// The group whose queue it was sent to, for a job for any one of its agents.
    pub queue: Option<String>,
    /// Its message's sequence in the job stream, while in a group's queue.
    #[serde(skip)]
    pub queue_seq: Option<i64>,
    pub runbook: String,
    pub job: serde_json::Value,
    pub state: String,
    pub idempotent: bool,
    pub retry_of: Option<String>,
    pub dispatched_at: i64,
    pub updated_at: i64,
    pub reason: String,
}

/// How many jobs of a runbook went where, as [`PgStore::jobs_since`] counts them.
#[derive(Debug, Clone)]
pub struct JobCount {
    pub host: Option<String>,
    pub queue: Option<String>,
    pub count: i64,
}

/// A fleet run as `runcap fleet show` and the API return it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRun {
    /// Where it ran or runs; `None` while it waits in a group's queue.
    pub host: Option<String>,
    pub job: Option<JobRow>,
    pub run: Option<RunDetail>,
    pub retries: Vec<JobRow>,
}

/// An agent as its last hello described it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub host: String,
    pub version: String,
    pub environment: String,
    pub groups: serde_json::Value,
    pub audit_key: String,
    pub caps: serde_json::Value,
    pub lock: serde_json::Value,
    pub runbooks: serde_json::Value,
    pub hello_at: i64,
}

/// A signed audit checkpoint as stored.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    pub host: String,
    pub seq: i64,
    pub head: String,
    pub at: i64,
    pub signature: String,
}

/// An agent's hello, as the store keeps it.
pub struct Hello<'a> {
    pub host: &'a str,
    pub version: &'a str,
    pub environment: &'a str,
    pub groups: &'a [String],
    pub audit_key: &'a str,
    pub caps: &'a serde_json::Value,
    pub lock: &'a serde_json::Value,
    pub runbooks: &'a [crate::fleet::protocol::RunbookInfo],
}

impl PgStore {
    /// Connects and brings the schema up to date. `url` is a libpq connection string or
    /// URL; `password`, when given, is used instead of any in it. With `ca`, the
    /// connection is TLS (required, never a fallback to plain text), and the server's
    /// certificate must be signed by that CA and name the host connected to.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> Result<Arc<PgStore>, PgStoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                PgStoreError::Config(url.to_string(), e.to_string())
            })?;
        if let Some(pw) = password {
            config.password(pw);
        }
        let tls = match ca {
            Some(path) => {
                let tls =
                    crate::net::private_ca_config(path).map_err(|source| PgStoreError::Ca {
                        path: path.display().to_string(),
                        source,
                    })?;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(tls))
            }
            None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                return Err(PgStoreError::TlsWithoutCa);
            }
            None => {
                // Without a CA nothing could verify the server: plain text, said plainly.
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
        };
        config.connect_timeout(std::time::Duration::from_secs(5));
        config.application_name("runcap");
        let shown = shown(&config);
        let store = PgStore {
            config,
            tls,
            shown,
            client: Mutex::new(None),
        };
        store.migrate().await?;
        Ok(Arc::new(store))
    }

    fn db(&self) -> impl Fn(tokio_postgres::Error) -> PgStoreError + '_ {
        |source| PgStoreError::Db {
            where_: self.shown.clone(),
            source,
        }
    }

    /// The connection, opened (again) if there is none or it broke.
    async fn client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, PgStoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let client = match &self.tls {
                Some(tls) => {
                    let (client, connection) =
                        self.config.connect(tls.clone()).await.map_err(self.db())?;
                    tokio::spawn(watch(connection));
                    client
                }
                None => {
                    let (client, connection) =
                        self.config.connect(NoTls).await.map_err(self.db())?;
                    tokio::spawn(watch(connection));
                    client
                }
            };
            *guard = Some(client);
        }
        // Always a connection here: one was just made if there was none.
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.get_or_insert_with(|| unreachable!("connected above"))
        }))
    }

    async fn migrate(&self) -> Result<(), PgStoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;
        // One migrating controller at a time.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7342001); CREATE TABLE IF NOT EXISTS runcap_schema (version BIGINT NOT NULL); ",
        )
        .await
        .map_err(self.db())?;
        let found: i64 = match tx
            .query_opt("SELECT version FROM runcap_schema", &[])
            .await
            .map_err(self.db())?
        {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO runcap_schema (version) VALUES (0)", &[])
                    .await
                    .map_err(self.db())?;
                0
            }
        };
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(PgStoreError::TooNew { found, known });
        }
        for m in &MIGRATIONS[found as usize..] {
            tx.batch_execute(m).await.map_err(self.db())?;
        }
        tx.execute("UPDATE runcap_schema SET version = $1", &[&known])
            .await
            .map_err(self.db())?;
        tx.commit().await.map_err(self.db())
    }

    /// Records (or replaces) an agent's hello.
    pub async fn agent_hello(&self, h: &Hello<'_>) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        let groups = serde_json::json!(h.groups);
        let runbooks = serde_json::json!(h.runbooks);
        c.execute(
            "INSERT INTO agents (host, version, environment, groups, audit_key, caps, lock, runbooks, hello_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (host) DO UPDATE SET version = $2, environment = $3, groups = $4, audit_key = $5,
                 caps = $6, lock = $7, runbooks = $8, hello_at = $9",
            &[&h.host, &h.version, &h.environment, &groups, &h.audit_key, h.caps, h.lock, &runbooks, &(now_ms() as i64)],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Every agent that said hello, by name.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, PgStoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT host, version, environment, groups, audit_key, caps, lock, runbooks, hello_at FROM agents ORDER BY host",
                &[],
            )
            .await
            .map_err(self.db())?;
        Ok(rows
            .iter()
            .map(|r| AgentRow {
                host: r.get(0),
                version: r.get(1),
                environment: r.get(2),
                groups: r.get(3),
                audit_key: r.get(4),
                caps: r.get(5),
                lock: r.get(6),
                runbooks: r.get(7),
                hello_at: r.get(8),
            })
            .collect())
    }

    /// Records a job as dispatched (before it is published, so no result arrives for a
    /// job the store does not know).
    /// `to` is the job's host, or the group whose queue it goes to.
    pub async fn job_dispatched(
        &self,
        to: &crate::fleet::protocol::JobTo<'_>,
        job: &crate::fleet::protocol::Job,
        idempotent: bool,
        retry_of: Option<&str>,
    ) -> Result<(), PgStoreError> {
        use crate::fleet::protocol::JobTo;
        let c = self.client().await?;
        let value = serde_json::to_value(job).map_err(|e| PgStoreError::Corrupt(e.to_string()))?;
        let at = job.dispatched_ms as i64;
        let (host, queue) = match to {
            JobTo::Host(h) => (Some(*h), None),
            JobTo::Queue(g) => (None, Some(*g)),
        };
        c.execute(
            "INSERT INTO jobs (run_id, host, queue, runbook, job, state, idempotent, retry_of, dispatched_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'dispatched', $6, $7, $8, $8) ON CONFLICT (run_id) DO NOTHING",
            &[&job.run_id, &host, &queue, &job.runbook, &value, &idempotent, &retry_of, &at],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Notes where a group's job sits in the job stream (so it can be taken out once
    /// its run is declared lost).
    pub async fn job_queued(&self, run_id: &str, seq: u64) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE jobs SET queue_seq = $2 WHERE run_id = $1",
            &[&run_id, &(seq as i64)],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Records which agent took a group's job: `host`, if the job is still without a
    /// host and went to the queue of one of `groups` (the host's groups, so an agent
    /// cannot take another group's job by naming its run id).
    pub async fn job_taken(
        &self,
        run_id: &str,
        host: &str,
        groups: &[String],
    ) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE jobs SET host = $2, updated_at = $4 WHERE run_id = $1 AND host IS NULL AND queue = ANY($3)",
            &[&run_id, &host, &groups, &(now_ms() as i64)],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Moves a job on (`started`, `finished`, `refused`, `lost`). A job already
    /// finished, refused or lost stays so: a late event never reopens it.
    pub async fn job_state(
        &self,
        run_id: &str,
        state: &str,
        reason: &str,
    ) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        let order = "CASE state WHEN 'dispatched' THEN 0 WHEN 'started' THEN 1 ELSE 2 END";
        let next: i32 = match state {
            "dispatched" => 0,
            "started" => 1,
            _ => 2,
        };
        // A lost job that reports after all keeps its result: `finished` replaces `lost`.
        c.execute(
            &format!(
                "UPDATE jobs SET state = $2, reason = $3, updated_at = $4 WHERE run_id = $1 AND ({order} < $5 OR (state = 'lost' AND $2 = 'finished'))"
            ),
            &[&run_id, &state, &reason, &(now_ms() as i64), &next],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Jobs not finished whose agent has been silent since before `silent_since` (ms).
    pub async fn open_jobs(&self) -> Result<Vec<JobRow>, PgStoreError> {
        self.jobs_where("state IN ('dispatched', 'started')", &[])
            .await
    }

    /// How many jobs of `runbook` were sent since `since_ms`, by host and queue: what a
    /// fleet trigger's flap guard counts.
    pub async fn jobs_since(
        &self,
        runbook: &str,
        since_ms: i64,
    ) -> Result<Vec<JobCount>, PgStoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT host, queue, count(*) FROM jobs WHERE runbook = $1 AND dispatched_at >= $2 GROUP BY host, queue",
                &[&runbook, &since_ms],
            )
            .await
            .map_err(self.db())?;
        Ok(rows
            .iter()
            .map(|r| JobCount {
                host: r.get(0),
                queue: r.get(1),
                count: r.get(2),
            })
            .collect())
    }

    /// Records incidents as an agent reported them: each replaces the host's copy unless
    /// that copy is newer (events can arrive out of order after a redelivery).
    pub async fn incidents_reported(
        &self,
        host: &str,
        incidents: &[crate::store::incidents::Incident],
    ) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        for i in incidents {
            let doc = serde_json::to_value(i).map_err(|e| PgStoreError::Corrupt(e.to_string()))?;
            c.execute(
                "INSERT INTO incidents (host, id, runbook, status, updated_at, incident) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (host, id) DO UPDATE SET runbook = $3, status = $4, updated_at = $5, incident = $6
                 WHERE incidents.updated_at <= $5",
                &[&host, &i.id, &i.runbook, &i.status, &i.updated_at, &doc],
            )
            .await
            .map_err(self.db())?;
        }
        Ok(())
    }

    /// Incidents across hosts (or of `host`), most recently updated first: only those not
    /// resolved unless `include_resolved`.
    pub async fn incidents(
        &self,
        host: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<HostIncident>, PgStoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT host, incident FROM incidents
                 WHERE ($1::TEXT IS NULL OR host = $1) AND ($2 OR status <> 'resolved')
                 ORDER BY updated_at DESC, host, id DESC",
                &[&host, &include_resolved],
            )
            .await
            .map_err(self.db())?;
        rows.iter()
            .map(|r| {
                let incident = serde_json::from_value(r.get(1))
                    .map_err(|e| PgStoreError::Corrupt(format!("an incident: {e}")))?;
                Ok(HostIncident {
                    host: r.get(0),
                    incident,
                })
            })
            .collect()
    }

    /// One job by run id.
    pub async fn job(&self, run_id: &str) -> Result<Option<JobRow>, PgStoreError> {
        Ok(self
            .jobs_where("run_id = $1", &[&run_id])
            .await?
            .into_iter()
            .next())
    }

    async fn jobs_where(
        &self,
        filter: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<JobRow>, PgStoreError> {
        let c = self.client().await?;
        self.jobs_on(&*c, filter, args).await
    }

    async fn jobs_on(
        &self,
        c: &impl tokio_postgres::GenericClient,
        filter: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<JobRow>, PgStoreError> {
        let rows = c
            .query(
                &format!("SELECT run_id, host, runbook, job, state, idempotent, retry_of, dispatched_at, updated_at, reason, queue, queue_seq FROM jobs WHERE {filter} ORDER BY dispatched_at, run_id"),
                args,
            )
            .await
            .map_err(self.db())?;
        Ok(rows
            .iter()
            .map(|r| JobRow {
                run_id: r.get(0),
                host: r.get(1),
                runbook: r.get(2),
                job: r.get(3),
                state: r.get(4),
                idempotent: r.get(5),
                retry_of: r.get(6),
                dispatched_at: r.get(7),
                updated_at: r.get(8),
                reason: r.get(9),
                queue: r.get(10),
                queue_seq: r.get(11),
            })
            .collect())
    }

    /// Records that a run started on `host` (its row, until the result replaces it).
    pub async fn run_started(
        &self,
        host: &str,
        run_id: &str,
        runbook: &str,
        at_ms: u64,
    ) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO runs (host, id, environment, runbook, status, dry_run, started_at, summary)
             SELECT $1, $2, '', $3, 'running', COALESCE((j.job->>'dry_run')::boolean, false), $4, ''
             FROM (SELECT 1) one LEFT JOIN jobs j ON j.run_id = $2
             ON CONFLICT (host, id) DO NOTHING",
            &[&host, &run_id, &runbook, &(at_ms as i64)],
        )
        .await
        .map_err(self.db())?;
        drop(c);
        self.job_state(run_id, "started", "").await
    }

    /// Stores everything about a finished run from `host`, replacing what was there.
    pub async fn run_finished(&self, host: &str, detail: &RunDetail) -> Result<(), PgStoreError> {
        let mut c = self.client().await?;
        let run = &detail.run;
        let value =
            serde_json::to_value(detail).map_err(|e| PgStoreError::Corrupt(e.to_string()))?;
        let tx = c.transaction().await.map_err(self.db())?;
        tx.execute(
            "INSERT INTO runs (host, id, environment, runbook, status, dry_run, started_at, finished_at, summary, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (host, id) DO UPDATE SET environment = $3, runbook = $4, status = $5, dry_run = $6,
                 started_at = $7, finished_at = $8, summary = $9, detail = $10",
            &[&host, &run.id, &run.environment, &run.runbook, &run.status.as_str(), &run.dry_run,
              &run.started_at, &run.finished_at, &run.summary, &value],
        )
        .await
        .map_err(self.db())?;
        tx.execute(
            "DELETE FROM steps WHERE host = $1 AND run_id = $2",
            &[&host, &run.id],
        )
        .await
        .map_err(self.db())?;
        tx.execute(
            "DELETE FROM calls WHERE host = $1 AND run_id = $2",
            &[&host, &run.id],
        )
        .await
        .map_err(self.db())?;
        for s in &detail.steps {
            tx.execute(
                "INSERT INTO steps (host, run_id, seq, step_id, uses, phase, status, attempts, summary, started_at, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[&host, &run.id, &s.seq, &s.id, &s.uses, &s.phase.as_str(), &s.status.as_str(),
                  &(s.attempts as i64), &s.summary, &s.started_at, &s.duration_ms],
            )
            .await
            .map_err(self.db())?;
            for (n, call) in s.calls.iter().enumerate() {
                let text = |k: &str| call.get(k).and_then(|v| v.as_str()).map(str::to_string);
                tx.execute(
                    "INSERT INTO calls (host, run_id, step_seq, n, capability, operation, target, decision, reason, result, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[&host, &run.id, &s.seq, &(n as i64), &text("capability").unwrap_or_default(),
                      &text("operation").unwrap_or_default(), &text("target").unwrap_or_default(),
                      &text("decision").unwrap_or_default(), &text("reason"), &text("result"),
                      &call.get("at").and_then(|v| v.as_i64()).unwrap_or_default()],
                )
                .await
                .map_err(self.db())?;
            }
        }
        let finished = run.status != RunState::Running;
        if finished {
            tx.execute(
                "UPDATE jobs SET state = 'finished', reason = '', updated_at = $2 WHERE run_id = $1",
                &[&run.id, &(now_ms() as i64)],
            )
            .await
            .map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())
    }

    /// Recent runs across the fleet, newest first, of one host and one runbook if given.
    pub async fn history(
        &self,
        host: Option<&str>,
        runbook: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HostRun>, PgStoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT host, id, environment, runbook, status, dry_run, started_at, finished_at, summary FROM runs
                 WHERE ($1::TEXT IS NULL OR host = $1) AND ($2::TEXT IS NULL OR runbook = $2)
                 ORDER BY started_at DESC, id DESC LIMIT $3",
                &[&host, &runbook, &(limit as i64)],
            )
            .await
            .map_err(self.db())?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(4);
                Ok(HostRun {
                    host: r.get(0),
                    run: RunRow {
                        id: r.get(1),
                        environment: r.get(2),
                        runbook: r.get(3),
                        status: RunState::parse(&status).ok_or_else(|| {
                            PgStoreError::Corrupt(format!("run status `{status}`"))
                        })?,
                        dry_run: r.get(5),
                        started_at: r.get(6),
                        finished_at: r.get(7),
                        summary: r.get(8),
                        tampered: Vec::new(),
                    },
                })
            })
            .collect()
    }

    /// One run by id (or unique prefix): the host and everything stored about it; the
    /// run's row alone while only its start is known.
    pub async fn run(
        &self,
        id_or_prefix: &str,
    ) -> Result<Option<(String, RunDetail)>, PgStoreError> {
        let c = self.client().await?;
        self.run_on(&*c, id_or_prefix).await
    }

    /// A fleet run as one consistent picture: its job, the jobs that ran it again, and
    /// the run, all read in one snapshot (so a job seen lost has its retries, and a job
    /// seen finished has its result). `None` when neither job nor run is known.
    pub async fn fleet_run(&self, id_or_prefix: &str) -> Result<Option<FleetRun>, PgStoreError> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(self.db())?;
        let run = self.run_on(&tx, id_or_prefix).await?;
        let run_id = run
            .as_ref()
            .map(|(_, d)| d.run.id.clone())
            .unwrap_or_else(|| id_or_prefix.to_string());
        let job = self
            .jobs_on(&tx, "run_id = $1", &[&run_id])
            .await?
            .into_iter()
            .next();
        let retries = self.jobs_on(&tx, "retry_of = $1", &[&run_id]).await?;
        tx.commit().await.map_err(self.db())?;
        if run.is_none() && job.is_none() {
            return Ok(None);
        }
        let host = run
            .as_ref()
            .map(|(h, _)| h.clone())
            .or_else(|| job.as_ref().and_then(|j| j.host.clone()));
        Ok(Some(FleetRun {
            host,
            job,
            run: run.map(|(_, d)| d),
            retries,
        }))
    }

    async fn run_on(
        &self,
        c: &impl tokio_postgres::GenericClient,
        id_or_prefix: &str,
    ) -> Result<Option<(String, RunDetail)>, PgStoreError> {
        let like = format!("{}%", id_or_prefix.replace(['%', '_'], ""));
        let rows = c
            .query(
                "SELECT host, id, environment, runbook, status, dry_run, started_at, finished_at, summary, detail
                 FROM runs WHERE id = $1 OR id LIKE $2 ORDER BY (id = $1) DESC LIMIT 2",
                &[&id_or_prefix, &like],
            )
            .await
            .map_err(self.db())?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let exact: String = r.get(1);
        if rows.len() > 1 && exact != id_or_prefix {
            return Ok(None);
        }
        let host: String = r.get(0);
        if let Some(detail) = r.get::<_, Option<serde_json::Value>>(9) {
            let d: RunDetail =
                serde_json::from_value(detail).map_err(|e| PgStoreError::Corrupt(e.to_string()))?;
            return Ok(Some((host, d)));
        }
        let status: String = r.get(4);
        Ok(Some((
            host,
            RunDetail {
                run: RunRow {
                    id: exact,
                    environment: r.get(2),
                    runbook: r.get(3),
                    status: RunState::parse(&status)
                        .ok_or_else(|| PgStoreError::Corrupt(format!("run status `{status}`")))?,
                    dry_run: r.get(5),
                    started_at: r.get(6),
                    finished_at: r.get(7),
                    summary: r.get(8),
                    tampered: Vec::new(),
                },
                manifest: String::new(),
                steps: Vec::new(),
                rollbacks: Vec::new(),
            },
        )))
    }

    /// How many capability calls are stored for a run (for status lines and tests).
    pub async fn call_count(&self, run_id: &str) -> Result<i64, PgStoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT count(*) FROM calls WHERE run_id = $1", &[&run_id])
            .await
            .map_err(self.db())?;
        Ok(row.get(0))
    }

    /// Stores a verified checkpoint. Returns `false` (and stores nothing) if one with the
    /// same sequence and another head is already there: the chain was rewritten.
    pub async fn checkpoint(&self, cp: &CheckpointRow) -> Result<bool, PgStoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO checkpoints (host, seq, head, at, signature, received_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (host, seq) DO NOTHING",
                &[&cp.host, &cp.seq, &cp.head, &cp.at, &cp.signature, &(now_ms() as i64)],
            )
            .await
            .map_err(self.db())?;
        if n == 1 {
            return Ok(true);
        }
        let row = c
            .query_one(
                "SELECT head FROM checkpoints WHERE host = $1 AND seq = $2",
                &[&cp.host, &cp.seq],
            )
            .await
            .map_err(self.db())?;
        Ok(row.get::<_, String>(0) == cp.head)
    }

    /// The newest checkpoint of `host`.
    pub async fn last_checkpoint(&self, host: &str) -> Result<Option<CheckpointRow>, PgStoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT host, seq, head, at, signature FROM checkpoints WHERE host = $1 ORDER BY seq DESC LIMIT 1",
                &[&host],
            )
            .await
            .map_err(self.db())?;
        Ok(row.map(|r| CheckpointRow {
            host: r.get(0),
            seq: r.get(1),
            head: r.get(2),
            at: r.get(3),
            signature: r.get(4),
        }))
    }

    /// Notes something wrong with a host's audit chain, for `runcap fleet audit`.
    pub async fn audit_problem(&self, host: &str, problem: &str) -> Result<(), PgStoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit_problems (host, at, problem) VALUES ($1, $2, $3)",
            &[&host, &(now_ms() as i64), &problem],
        )
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// The audit problems noted for `host`, oldest first.
    pub async fn audit_problems(&self, host: &str) -> Result<Vec<(i64, String)>, PgStoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT at, problem FROM audit_problems WHERE host = $1 ORDER BY id",
                &[&host],
            )
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Where the store is, for messages: host, port and database, never the password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or("postgres")
    )
}
