//! The durable store: SQLite in WAL mode under the state directory. It is the only
//! place runcap writes state: runs, steps, plugin logs and output, capability calls,
//! pending rollbacks, incidents, and the audit chain.
//!
//! A run's records are committed where losing them would lose the trace of a change:
//! just before a capability changes something (everything recorded so far, see
//! [`crate::caps::CallLog::before_change`]), right after it (the call's record), and at
//! the end of a run that changed something. The rest (a run's start, a step's start and
//! result, the records of calls that only read, the end of a run that only read) waits
//! in memory for the next commit, at most [`DEFER_AT_MOST`], when a thread commits it.
//! So a `kill -9` loses at most the last fifth of a second of reads, never the record of
//! a change, nor the start of a run or step that went on to change something; and a
//! server running a hundred probes a second commits a few times a second, not five
//! hundred. Every other write (faults, incidents, rollbacks) is its own transaction,
//! with whatever waited before it, and every read through the store sees what waits.
//! WAL with `synchronous = NORMAL` survives a crash of the process; a power cut may
//! lose the last transactions, never corrupt the file.

pub mod audit;
mod faults;
pub mod history;
pub mod incidents;
mod outbox;
pub mod postgres;
pub mod records;
mod schema;
pub mod seal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use records::{
    CallRecord, FailureKind, LogLine, Phase, RunState, RunStatus, StepState, StepStatus, now_ms,
};

/// Why the store could not be used.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("state store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "state store {path} has schema version {found}, newer than this runcap ({known}); upgrade runcap"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// Makes every string the store writes safe to keep (see [`crate::redaction`]).
pub type Scrubber = Arc<runcap_redact::Redactor>;

/// The WAL's length beyond which a closing command empties it (see [`Store`]'s drop).
const SHORT_WAL_BYTES: u64 = 64 * 4096;

/// How long a record may wait in memory for the next commit.
pub const DEFER_AT_MOST: Duration = Duration::from_millis(200);

/// A handle on the state store. Cheap to share; writes are serialized.
pub struct Store {
    shared: Arc<Shared>,
    /// Commits records that waited [`DEFER_AT_MOST`]; started with the first one.
    flusher: std::sync::OnceLock<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    scrub: Mutex<Option<Scrubber>>,
}

/// The connection, and a signal for the thread that commits what waited too long.
struct Shared {
    db: Mutex<Db>,
    wake: std::sync::Condvar,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flusher's loop: sleeps until a write waits, then until it is due, commits.
    fn flush_when_due(&self, path: &Path) {
        let mut db = self.db();
        while !db.closing {
            let Some(oldest) = db.oldest else {
                db = self.wake.wait(db).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let left = (oldest + DEFER_AT_MOST).saturating_duration_since(Instant::now());
            if left.is_zero() {
                db.flush(path);
            } else {
                db = match self.wake.wait_timeout(db, left) {
                    Ok((db, _)) => db,
                    Err(p) => p.into_inner().0,
                };
            }
        }
    }
}

/// The connection and the writes waiting for its next commit.
struct Db {
    conn: Connection,
    deferred: Vec<Deferred>,
    /// When the oldest waiting write was made.
    oldest: Option<Instant>,
    /// Runs that changed something: their end is committed at once, so recovery never
    /// takes a finished run for an interrupted one and runs its rollbacks.
    changed: std::collections::HashSet<String>,
    /// The store is being dropped: the flusher stops.
    closing: bool,
}

/// The statements of one deferred write.
type Write = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

/// A write that may wait for the next commit.
struct Deferred {
    /// What it records, for the error if it cannot be written.
    what: &'static str,
    /// The step (run, seq) whose start this records: the step's result, when it comes
    /// before the commit, makes it unnecessary.
    step_start: Option<(String, i64)>,
    write: Write,
}

impl Db {
    /// Writes what waits into `tx`, in the order it came. One that fails is logged and
    /// the others go on: SQLite undoes only the failed statement.
    fn write_deferred(deferred: &mut Vec<Deferred>, tx: &Connection, path: &Path) {
        for d in deferred.drain(..) {
            if let Err(e) = (d.write)(tx) {
                tracing::error!("could not record {}: {}", d.what, sql(path)(e));
            }
        }
    }

    /// Commits what waits, if anything does.
    fn flush(&mut self, path: &Path) {
        if self.deferred.is_empty() {
            return;
        }
        self.oldest = None;
        let committed = self.conn.transaction().and_then(|tx| {
            Db::write_deferred(&mut self.deferred, &tx, path);
            tx.commit()
        });
        if let Err(e) = committed {
            tracing::error!("could not record a run's progress: {}", sql(path)(e));
        }
    }

    /// Commits what waits and then `write`, in one transaction. `write` is all or
    /// nothing on its own: when it fails, what waited is committed all the same.
    fn commit_with<T>(
        &mut self,
        path: &Path,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.oldest = None;
        let mut tx = self.conn.transaction()?;
        if self.deferred.is_empty() {
            let value = write(&tx)?;
            tx.commit()?;
            return Ok(value);
        }
        Db::write_deferred(&mut self.deferred, &tx, path);
        let sp = tx.savepoint()?;
        let written = write(&sp);
        if written.is_ok() {
            sp.commit()?;
        } else {
            drop(sp);
        }
        tx.commit()?;
        written
    }
}

/// A guard on the connection with nothing left waiting, for reads and for writes that
/// commit on their own.
struct Conn<'a>(MutexGuard<'a, Db>);

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

/// A run as it starts.
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    pub id: &'a str,
    pub environment: &'a str,
    pub runbook: &'a str,
    pub manifest: &'a Path,
    pub dry_run: bool,
}

/// A finished (or started) step, as stored.
#[derive(Debug, Clone)]
pub struct StepRecord<'a> {
    pub seq: i64,
    pub step_id: &'a str,
    pub uses: &'a str,
    pub phase: Phase,
    pub status: StepStatus,
    pub attempts: u32,
    pub failure_kind: Option<FailureKind>,
    pub summary: &'a str,
    pub details: &'a serde_json::Value,
    pub metrics: &'a [(String, f64)],
    pub logs: &'a [LogLine],
    pub stdout: (&'a str, u64),
    pub stderr: (&'a str, u64),
    pub started_at: i64,
    pub duration_ms: f64,
}

/// A rollback registered by a completed step, waiting in case the run aborts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingRollback {
    pub seq: i64,
    pub step_id: String,
    pub uses: String,
    pub params: serde_json::Value,
    /// The rollback's own time limit, if it has one.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_ms")]
    pub timeout: Option<std::time::Duration>,
}

/// An optional duration as whole milliseconds.
mod opt_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }
}

/// One row of `runcap history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub environment: String,
    pub runbook: String,
    pub status: RunState,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub summary: String,
    /// Records of this run (its own, its steps') that no longer match what the audit
    /// chain sealed: edited in the database after the fact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tampered: Vec<String>,
}

/// A stored step with its logs, output and calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredStep {
    pub seq: i64,
    pub id: String,
    pub uses: String,
    pub phase: Phase,
    pub status: StepState,
    pub attempts: u32,
    pub failure_kind: Option<FailureKind>,
    pub summary: String,
    pub details: serde_json::Value,
    pub metrics: serde_json::Value,
    pub started_at: i64,
    pub duration_ms: Option<f64>,
    pub logs: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub calls: Vec<serde_json::Value>,
    /// Why this step's record no longer matches its seal, if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tampered: Option<String>,
}

/// Everything stored about one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunRow,
    pub manifest: String,
    pub steps: Vec<StoredStep>,
    pub rollbacks: Vec<serde_json::Value>,
}

/// What a dead runcap left behind (see [`Store::leftovers`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Runs still marked running whose process is gone.
    pub interrupted_runs: Vec<String>,
    /// Open faults whose runcap is gone.
    pub orphaned_faults: Vec<records::FaultRow>,
}

/// A run found still marked running whose process is gone.
#[derive(Debug, Clone, Serialize)]
pub struct Interrupted {
    pub run_id: String,
    pub runbook: String,
    pub manifest: String,
    pub completed_steps: u32,
    pub pending_rollbacks: Vec<PendingRollback>,
}

/// Runs one statement through the connection's statement cache, so the statements a run
/// writes with are parsed once per connection rather than once per row.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

impl Store {
    /// The default state directory for a manifest: `.runcap/` beside it.
    pub fn default_dir(manifest: &Path) -> PathBuf {
        manifest
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .unwrap_or(Path::new("."))
            .join(".runcap")
    }

    /// The database file of the store in `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("runcap.db")
    }

    /// Opens (creating and migrating as needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = Store::file_in(dir);
        let err = sql(&path);
        let mut conn = Connection::open(&path).map_err(&err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        set_wal(&conn).map_err(&err)?;
        // A one-shot command closing its connection would otherwise checkpoint the WAL
        // into the database and fsync it, every time; SQLite's automatic checkpoint (every
        // 1,000 pages written) does that work once for many commands instead.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(&err)?;
        // The bundled SQLite re-prepares a cached statement whenever a value bound in its
        // WHERE clause changes, in case the value changes the best plan (it cannot here:
        // the store keeps no statistics). With the planner's stability guarantee, a
        // cached statement is prepared once per connection, as the cache intends.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(&err)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(&err)?;
        migrate(&mut conn, &path)?;
        drop(err);
        Ok(Store {
            shared: Arc::new(Shared {
                db: Mutex::new(Db {
                    conn,
                    deferred: Vec::new(),
                    oldest: None,
                    changed: Default::default(),
                    closing: false,
                }),
                wake: std::sync::Condvar::new(),
            }),
            flusher: std::sync::OnceLock::new(),
            path,
            scrub: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Installs the function every stored string passes through.
    pub fn set_scrubber(&self, scrub: Scrubber) {
        *self.scrub.lock().unwrap_or_else(|p| p.into_inner()) = Some(scrub);
    }

    fn scrubber(&self) -> Option<Scrubber> {
        self.scrub.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn clean(&self, text: &str) -> String {
        match self.scrubber() {
            Some(r) => r.redact_str(text).into_owned(),
            None => text.to_string(),
        }
    }

    /// JSON is redacted as a value (string values and keys), so it stays valid JSON.
    fn clean_json(&self, value: &serde_json::Value) -> String {
        match self.scrubber() {
            Some(r) => {
                let mut v = value.clone();
                crate::redaction::scrub_json(&r, &mut v);
                v.to_string()
            }
            None => value.to_string(),
        }
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.shared.db()
    }

    /// The connection, once what waited is committed, so reads see every record.
    fn conn(&self) -> Conn<'_> {
        let mut db = self.db();
        db.flush(&self.path);
        Conn(db)
    }

    /// Commits `write` now, with whatever waited before it.
    fn commit<T>(
        &self,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.db().commit_with(&self.path, write).map_err(self.err())
    }

    /// Commits `write`, the record of a change `run_id` made, with whatever waited.
    fn commit_change<T>(
        &self,
        run_id: &str,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut db = self.db();
        if !db.changed.contains(run_id) {
            db.changed.insert(run_id.to_string());
        }
        db.commit_with(&self.path, write).map_err(self.err())
    }

    /// Queues `write` for the next commit, at most [`DEFER_AT_MOST`] away.
    fn defer(
        &self,
        what: &'static str,
        write: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) {
        self.queue(Deferred {
            what,
            step_start: None,
            write: Box::new(write),
        });
    }

    /// Queues a write for the next commit (see [`Store::defer`]).
    fn queue(&self, deferred: Deferred) {
        let flusher = self.flusher.get_or_init(|| {
            let (shared, path) = (self.shared.clone(), self.path.clone());
            let started = std::thread::Builder::new()
                .name("runcap-store".into())
                .spawn(move || shared.flush_when_due(&path));
            started
                .map_err(|e| tracing::warn!("records are committed one by one: {e}"))
                .ok()
        });
        let mut db = self.db();
        if db.oldest.is_none() {
            db.oldest = Some(Instant::now());
            self.shared.wake.notify_one();
        }
        db.deferred.push(deferred);
        if flusher.is_none() {
            db.flush(&self.path);
        }
    }

    /// Commits every record still waiting, for a caller about to tell someone a run is
    /// recorded.
    pub fn sync(&self) {
        self.db().flush(&self.path);
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql(&self.path)
    }

    /// Appends an audit row outside any run (e.g. a denied load).
    pub fn audit(
        &self,
        kind: &str,
        run_id: &str,
        subject: &str,
        payload: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let payload = self.clean_json(payload);
        let subject = self.clean(subject);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err())?;
        let seq = audit::append(&tx, now_ms() as i64, kind, run_id, &subject, &payload)
            .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(seq)
    }

    /// Records a run as started by this process. The record waits for the first step's
    /// start (or [`Store::sync`]): a run that dies before any step began changed nothing.
    pub fn begin_run(&self, run: &RunStart) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let (pid, pid_start) = this_process();
        let manifest = run.manifest.display().to_string();
        let payload = serde_json::json!({"environment": run.environment, "runbook": run.runbook, "manifest": manifest, "dry_run": run.dry_run, "pid": pid}).to_string();
        let (id, environment, runbook, dry_run) = (
            run.id.to_string(),
            run.environment.to_string(),
            run.runbook.to_string(),
            run.dry_run,
        );
        self.defer("the run start", move |tx| {
            exec(tx, "INSERT INTO runs (id, environment, runbook, manifest, dry_run, status, started_at, pid, pid_start) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)",
                params![id, environment, runbook, manifest, dry_run, now, pid, pid_start],
            )?;
            audit::append(tx, now, "run.started", &id, &runbook, &payload)?;
            Ok(())
        });
        Ok(())
    }

    /// Records that a step began, so an interrupted run shows where it stopped. The
    /// record waits like the run's start: it is durable before the step changes
    /// anything ([`Store::sync`] from [`crate::caps::CallLog::before_change`]).
    pub fn step_started(
        &self,
        run_id: &str,
        seq: i64,
        step_id: &str,
        uses: &str,
        phase: Phase,
    ) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let step_start = Some((run_id.to_string(), seq));
        let (run_id, step_id, uses) = (run_id.to_string(), step_id.to_string(), uses.to_string());
        self.queue(Deferred {
            what: "a step start",
            step_start,
            write: Box::new(move |tx| {
                exec(tx, "INSERT OR REPLACE INTO steps (run_id, seq, step_id, uses, phase, status, started_at) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
                    params![run_id, seq, step_id, uses, phase, now],
                )?;
                Ok(())
            }),
        });
        Ok(())
    }

    /// Records a finished step with its logs and output, and audits it. The record
    /// waits for the next commit: the next step's start, a change, or the run's end.
    pub fn step_finished(&self, run_id: &str, s: &StepRecord) -> Result<(), StoreError> {
        let details = self.clean_json(s.details);
        let metrics = self.clean_json(&serde_json::to_value(s.metrics).unwrap_or_default());
        let summary = self.clean(s.summary);
        let stdout = self.clean(s.stdout.0);
        let stderr = self.clean(s.stderr.0);
        let logs: Vec<(String, String, String, i64)> = s
            .logs
            .iter()
            .map(|l| {
                (
                    l.level.as_str().to_string(),
                    self.clean(&l.message),
                    self.clean_json(&serde_json::to_value(&l.fields).unwrap_or_default()),
                    l.at_ms as i64,
                )
            })
            .collect();
        let payload = serde_json::json!({
            "seq": s.seq, "phase": s.phase, "uses": s.uses, "status": s.status,
            "failure": s.failure_kind, "attempts": s.attempts, "summary": summary,
        });
        let (run_id, step_id, uses) = (
            run_id.to_string(),
            s.step_id.to_string(),
            s.uses.to_string(),
        );
        let (seq, phase, status, attempts, failure) =
            (s.seq, s.phase, s.status, s.attempts, s.failure_kind);
        let (started_at, duration_ms) = (s.started_at, s.duration_ms);
        let streams = [
            ("stdout", stdout, s.stdout.1),
            ("stderr", stderr, s.stderr.1),
        ];
        // A start still waiting is replaced by the result: one row written, not two.
        self.db().deferred.retain(|d| {
            d.step_start
                .as_ref()
                .is_none_or(|(run, at)| *at != seq || *run != run_id)
        });
        self.defer("a step result", move |tx| {
            exec(tx, "INSERT OR REPLACE INTO steps (run_id, seq, step_id, uses, phase, status, attempts, failure_kind, summary, details, metrics, started_at, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![run_id, seq, step_id, uses, phase, status, attempts, failure, summary, details, metrics, started_at, duration_ms],
            )?;
            for (level, message, fields, at) in &logs {
                exec(tx, "INSERT INTO logs (run_id, step_seq, level, message, fields, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![run_id, seq, level, message, fields, at],
                )?;
            }
            for (stream, text, dropped) in &streams {
                if !text.is_empty() || *dropped > 0 {
                    exec(tx, "INSERT OR REPLACE INTO outputs (run_id, step_seq, stream, text, dropped) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![run_id, seq, stream, text, *dropped as i64],
                    )?;
                }
            }
            seal::seal_step(tx, &run_id, seq, "step.finished", &step_id, payload)?;
            Ok(())
        });
        Ok(())
    }

    /// Records one capability call, allowed or denied, and audits it. A call that changed
    /// something is committed at once; one marked [`CallRecord::read_only`] waits for
    /// the next commit.
    pub fn record_call(
        &self,
        run_id: &str,
        step_seq: Option<i64>,
        plugin: &str,
        call: &CallRecord,
    ) -> Result<(), StoreError> {
        let target = self.clean(&call.target);
        let reason = call.reason.as_deref().map(|r| self.clean(r));
        let result = call.result.as_deref().map(|r| self.clean(r));
        let payload = serde_json::json!({
            "plugin": plugin, "step_seq": step_seq, "capability": call.capability, "operation": call.operation,
            "target": target, "decision": call.decision.as_str(), "reason": reason, "result": result,
        }).to_string();
        let changed = run_id.to_string();
        let (run_id, plugin, capability) =
            (run_id.to_string(), plugin.to_string(), call.capability);
        let (operation, decision, at) = (
            call.operation.clone(),
            call.decision.as_str(),
            call.at_ms as i64,
        );
        let write = move |tx: &Connection| {
            exec(
                tx,
                "INSERT INTO calls (run_id, step_seq, plugin, capability, operation, target, decision, reason, result, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run_id, step_seq, plugin, capability, operation, target, decision, reason,
                    result, at
                ],
            )?;
            audit::append(tx, at, "call", &run_id, capability, &payload)?;
            Ok(())
        };
        if call.read_only {
            self.defer("a capability call", write);
            Ok(())
        } else {
            self.commit_change(&changed, write)
        }
    }

    /// Registers a rollback a completed step left behind.
    pub fn add_rollback(&self, run_id: &str, rb: &PendingRollback) -> Result<(), StoreError> {
        let params_json = self.clean_json(&rb.params);
        self.commit_change(run_id, |tx| exec(tx, "INSERT OR REPLACE INTO rollbacks (run_id, seq, step_id, uses, params, state, timeout_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                params![run_id, rb.seq, rb.step_id, rb.uses, params_json, rb.timeout.map(|t| t.as_millis() as i64)],
            ))?;
        Ok(())
    }

    /// Marks a rollback done or failed; `pending` again lets it be retried.
    pub fn set_rollback_state(
        &self,
        run_id: &str,
        seq: i64,
        state: records::RollbackState,
    ) -> Result<(), StoreError> {
        self.commit(|tx| {
            exec(
                tx,
                "UPDATE rollbacks SET state = ?3 WHERE run_id = ?1 AND seq = ?2",
                params![run_id, seq, state],
            )
        })?;
        Ok(())
    }

    /// Rollbacks of a run not yet done, in the order they must run (newest first).
    pub fn pending_rollbacks(&self, run_id: &str) -> Result<Vec<PendingRollback>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT seq, step_id, uses, params, timeout_ms FROM rollbacks WHERE run_id = ?1 AND state != 'done' ORDER BY seq DESC")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([run_id], |r| {
                let params: String = r.get(3)?;
                Ok(PendingRollback {
                    seq: r.get(0)?,
                    step_id: r.get(1)?,
                    uses: r.get(2)?,
                    params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
                    timeout: r
                        .get::<_, Option<i64>>(4)?
                        .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Closes a run with its final status, and audits it. The end of a run that changed
    /// something (a call not marked read-only, a rollback registered) is committed at
    /// once; the end of one that only read waits like its other records.
    pub fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        summary: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let summary = self.clean(summary);
        let id = run_id.to_string();
        let write = move |tx: &Connection| {
            exec(
                tx,
                "UPDATE runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
                params![id, status, now, summary],
            )?;
            let payload = serde_json::json!({"status": status, "summary": summary});
            seal::seal_run(tx, &id, "run.finished", status.as_str(), payload)?;
            Ok(())
        };
        let changed = self.db().changed.remove(run_id);
        if changed {
            self.commit(write)
        } else {
            self.defer("the run result", write);
            Ok(())
        }
    }

    /// Finds runs still marked running whose process is gone, marks them interrupted
    /// (steps that were running become `interrupted` too) and returns them with the
    /// rollbacks they left pending.
    pub fn recover_interrupted(&self) -> Result<Vec<Interrupted>, StoreError> {
        let candidates: Vec<(String, String, String, i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT id, runbook, manifest, pid, pid_start FROM runs WHERE status = 'running'")
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        let mut out = Vec::new();
        for (id, runbook, manifest, pid, pid_start) in candidates {
            if process_alive(pid, pid_start) {
                continue;
            }
            let now = now_ms() as i64;
            let completed: u32 = {
                let mut conn = self.conn();
                let tx = conn.transaction().map_err(self.err())?;
                let cut: Vec<(i64, String)> = {
                    let mut stmt = tx
                        .prepare("SELECT seq, step_id FROM steps WHERE run_id = ?1 AND status = 'running'")
                        .map_err(self.err())?;
                    stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(self.err())?
                        .collect::<Result<_, _>>()
                        .map_err(self.err())?
                };
                for (seq, step_id) in &cut {
                    exec(
                        &tx,
                        "UPDATE steps SET status = 'interrupted' WHERE run_id = ?1 AND seq = ?2",
                        params![id, seq],
                    )
                    .map_err(self.err())?;
                    let payload = serde_json::json!({"seq": seq, "status": "interrupted"});
                    seal::seal_step(&tx, &id, *seq, "step.interrupted", step_id, payload)
                        .map_err(self.err())?;
                }
                let completed: u32 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM steps WHERE run_id = ?1 AND status NOT IN ('interrupted', 'running')",
                        [&id],
                        |r| r.get(0),
                    )
                    .map_err(self.err())?;
                exec(&tx, "UPDATE runs SET status = 'interrupted', finished_at = ?2, summary = 'the runcap process died during the run' WHERE id = ?1",
                    params![id, now],
                )
                .map_err(self.err())?;
                let payload = serde_json::json!({"status": "interrupted", "pid": pid, "completed_steps": completed});
                seal::seal_run(&tx, &id, "run.interrupted", "interrupted", payload)
                    .map_err(self.err())?;
                tx.commit().map_err(self.err())?;
                completed
            };
            let pending_rollbacks = self.pending_rollbacks(&id)?;
            out.push(Interrupted {
                run_id: id,
                runbook,
                manifest,
                completed_steps: completed,
                pending_rollbacks,
            });
        }
        Ok(out)
    }

    /// What a dead runcap left behind, read without changing anything: runs still marked
    /// running whose process is gone, and open faults whose runcap is gone.
    pub fn leftovers(&self) -> Result<Leftovers, StoreError> {
        let running: Vec<(String, i64, i64)> = self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, pid, pid_start FROM runs WHERE status = 'running'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        let interrupted_runs = running
            .into_iter()
            .filter(|(_, pid, start)| !process_alive(*pid, *start))
            .map(|(id, _, _)| id)
            .collect();
        let orphaned_faults = self
            .open_faults()?
            .into_iter()
            .filter(|f| !crate::procinfo::alive(f.pid, f.pid_start))
            .map(|f| f.row)
            .collect();
        Ok(Leftovers {
            interrupted_runs,
            orphaned_faults,
        })
    }

    /// The sequence number the next step of a run gets (rollbacks run by recovery
    /// continue after the steps already recorded).
    pub fn next_step_seq(&self, run_id: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT COALESCE(MAX(seq), -1) + 1 FROM steps WHERE run_id = ?1")?
                .query_row([run_id], |r| r.get(0))
        })
    }

    /// Interrupted or cancelled runs that still have rollbacks to run.
    pub fn runs_needing_recovery(&self) -> Result<Vec<Interrupted>, StoreError> {
        let ids: Vec<(String, String, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT DISTINCT r.id, r.runbook, r.manifest FROM runs r JOIN rollbacks b ON b.run_id = r.id WHERE r.status IN ('interrupted', 'cancelled') AND b.state != 'done' ORDER BY r.started_at",
                )
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        ids.into_iter()
            .map(|(run_id, runbook, manifest)| {
                Ok(Interrupted {
                    pending_rollbacks: self.pending_rollbacks(&run_id)?,
                    completed_steps: 0,
                    run_id,
                    runbook,
                    manifest,
                })
            })
            .collect()
    }

    /// Recent runs, newest first, optionally of one runbook.
    pub fn history(&self, runbook: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        const COLUMNS: &str = "SELECT id, environment, runbook, status, dry_run, started_at, finished_at, summary, pid, pid_start FROM runs";
        let conn = self.conn();
        // Two statements rather than `(?1 IS NULL OR runbook = ?1)`, which no index serves:
        // each reads its index newest first and stops after `limit` rows.
        let mut runs: Vec<RunRow> = match runbook {
            Some(rb) => conn
                .prepare_cached(&format!(
                    "{COLUMNS} WHERE runbook = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![rb, limit as i64], run_row)?
                        .collect::<Result<_, _>>()
                }),
            None => conn
                .prepare_cached(&format!(
                    "{COLUMNS} ORDER BY started_at DESC, id DESC LIMIT ?1"
                ))
                .and_then(|mut s| {
                    s.query_map(params![limit as i64], run_row)?
                        .collect::<Result<_, _>>()
                }),
        }
        .map_err(self.err())?;
        mark_tampered(&conn, &mut runs).map_err(self.err())?;
        Ok(runs)
    }

    /// Runs started at or after `since_ms`, oldest first.
    pub fn runs_since(&self, since_ms: i64) -> Result<Vec<RunRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, environment, runbook, status, dry_run, started_at, finished_at, summary, pid, pid_start FROM runs WHERE started_at >= ?1 ORDER BY started_at",
            )
            .map_err(self.err())?;
        let rows = stmt.query_map([since_ms], run_row).map_err(self.err())?;
        let mut runs: Vec<RunRow> = rows.collect::<Result<_, _>>().map_err(self.err())?;
        mark_tampered(&conn, &mut runs).map_err(self.err())?;
        Ok(runs)
    }

    /// One run by id or unique id prefix, with everything stored about it.
    pub fn run(&self, id_or_prefix: &str) -> Result<Option<RunDetail>, StoreError> {
        let conn = self.conn();
        let pattern = format!("{}%", id_or_prefix.replace(['%', '_'], ""));
        let mut stmt = conn
            .prepare("SELECT id, environment, runbook, status, dry_run, started_at, finished_at, summary, pid, pid_start, manifest FROM runs WHERE id LIKE ?1 LIMIT 2")
            .map_err(self.err())?;
        let found: Vec<(RunRow, String)> = stmt
            .query_map([&pattern], |r| Ok((run_row(r)?, r.get(10)?)))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        if found.len() != 1 {
            return Ok(None);
        }
        let (run, manifest) = found.into_iter().next().expect("one row");
        let mut steps = load_steps(&conn, &run.id).map_err(self.err())?;
        if run.status == RunState::Interrupted {
            for s in steps.iter_mut().filter(|s| s.status == StepState::Running) {
                s.status = StepState::Interrupted;
            }
        }
        let rollbacks = {
            let mut stmt = conn
                .prepare("SELECT seq, step_id, uses, params, state FROM rollbacks WHERE run_id = ?1 ORDER BY seq")
                .map_err(self.err())?;
            stmt.query_map([&run.id], |r| {
                let params: String = r.get(3)?;
                Ok(serde_json::json!({
                    "seq": r.get::<_, i64>(0)?, "step": r.get::<_, String>(1)?, "uses": r.get::<_, String>(2)?,
                    "params": serde_json::from_str::<serde_json::Value>(&params).unwrap_or_default(),
                    "state": r.get::<_, String>(4)?,
                }))
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?
        };
        let mut run = run;
        let unsealed = seal::check_run(&conn, &run.id).map_err(self.err())?;
        for u in &unsealed {
            if let Some(step) = steps.iter_mut().find(|s| Some(s.seq) == u.step) {
                step.tampered = Some(u.problem.clone());
            }
        }
        run.tampered = unsealed.into_iter().map(|u| u.problem).collect();
        Ok(Some(RunDetail {
            run,
            manifest,
            steps,
            rollbacks,
        }))
    }

    /// Every run's and step's record that no longer matches its seal in the audit chain.
    pub fn unsealed_records(&self) -> Result<Vec<seal::Unsealed>, StoreError> {
        let conn = self.conn();
        let ids: Vec<String> = {
            let mut stmt = conn
                .prepare("SELECT id FROM runs ORDER BY started_at")
                .map_err(self.err())?;
            stmt.query_map([], |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<_, _>>()
                .map_err(self.err())?
        };
        let mut out = Vec::new();
        for id in ids {
            out.extend(seal::check_run(&conn, &id).map_err(self.err())?);
        }
        Ok(out)
    }

    /// Checks the audit chain.
    pub fn verify_audit(
        &self,
        anchor: Option<&audit::Anchor>,
    ) -> Result<audit::Verdict, StoreError> {
        audit::verify(&self.conn(), anchor).map_err(self.err())
    }

    /// Audit rows at or after `since_ms`, as JSON objects.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT seq, at, kind, run_id, subject, payload, hash FROM audit WHERE at >= ?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([since_ms], |r| {
                let payload: String = r.get(5)?;
                Ok(serde_json::json!({
                    "seq": r.get::<_, i64>(0)?, "at": r.get::<_, i64>(1)?, "kind": r.get::<_, String>(2)?,
                    "run_id": r.get::<_, String>(3)?, "subject": r.get::<_, String>(4)?,
                    "payload": serde_json::from_str::<serde_json::Value>(&payload).unwrap_or_default(),
                    "hash": r.get::<_, String>(6)?,
                }))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Runs a closure with the connection; only the store's own modules speak SQL.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&mut self.conn()).map_err(self.err())
    }

    /// Runs a read that does not depend on run records still waiting for their commit,
    /// without committing them first.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        f(&self.db().conn).map_err(self.err())
    }

    /// A string made safe to store.
    pub fn scrubbed(&self, text: &str) -> String {
        self.clean(text)
    }
}

/// A run row as it is: one still marked running whose runcap is gone is shown as
/// interrupted (without writing anything; `run` and `recover` record it).
/// Flags the runs whose records no longer match their seals.
fn mark_tampered(conn: &Connection, runs: &mut [RunRow]) -> rusqlite::Result<()> {
    for run in runs {
        run.tampered = seal::check_run(conn, &run.id)?
            .into_iter()
            .map(|u| match u.step {
                Some(seq) => format!("step {seq}: {}", u.problem),
                None => u.problem,
            })
            .collect();
    }
    Ok(())
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    let mut status: RunState = r.get(3)?;
    if status == RunState::Running && !process_alive(r.get(8)?, r.get(9)?) {
        status = RunState::Interrupted;
    }
    Ok(RunRow {
        id: r.get(0)?,
        environment: r.get(1)?,
        runbook: r.get(2)?,
        status,
        dry_run: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        summary: r.get(7)?,
        tampered: Vec::new(),
    })
}

fn load_steps(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<StoredStep>> {
    let mut stmt = conn.prepare(
        "SELECT seq, step_id, uses, phase, status, attempts, failure_kind, summary, details, metrics, started_at, duration_ms FROM steps WHERE run_id = ?1 ORDER BY seq",
    )?;
    let mut steps: Vec<StoredStep> = stmt
        .query_map([run_id], |r| {
            let details: String = r.get(8)?;
            let metrics: String = r.get(9)?;
            Ok(StoredStep {
                seq: r.get(0)?,
                id: r.get(1)?,
                uses: r.get(2)?,
                phase: r.get(3)?,
                status: r.get(4)?,
                attempts: r.get(5)?,
                failure_kind: r.get(6)?,
                summary: r.get(7)?,
                details: serde_json::from_str(&details).unwrap_or_default(),
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                started_at: r.get(10)?,
                duration_ms: r.get(11)?,
                logs: Vec::new(),
                stdout: String::new(),
                stderr: String::new(),
                calls: Vec::new(),
                tampered: None,
            })
        })?
        .collect::<Result<_, _>>()?;
    for step in &mut steps {
        let mut logs = conn.prepare("SELECT level, message, fields, at FROM logs WHERE run_id = ?1 AND step_seq = ?2 ORDER BY rowid")?;
        step.logs = logs
            .query_map(params![run_id, step.seq], |r| {
                let fields: String = r.get(2)?;
                Ok(serde_json::json!({
                    "level": r.get::<_, String>(0)?, "message": r.get::<_, String>(1)?,
                    "fields": serde_json::from_str::<serde_json::Value>(&fields).unwrap_or_default(),
                    "at": r.get::<_, i64>(3)?,
                }))
            })?
            .collect::<Result<_, _>>()?;
        let mut out =
            conn.prepare("SELECT stream, text FROM outputs WHERE run_id = ?1 AND step_seq = ?2")?;
        for row in out.query_map(params![run_id, step.seq], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (stream, text) = row?;
            if stream == "stdout" {
                step.stdout = text;
            } else {
                step.stderr = text;
            }
        }
        let mut calls = conn.prepare(
            "SELECT capability, operation, target, decision, reason, result, at FROM calls WHERE run_id = ?1 AND step_seq = ?2 ORDER BY id",
        )?;
        step.calls = calls
            .query_map(params![run_id, step.seq], |r| {
                Ok(serde_json::json!({
                    "capability": r.get::<_, String>(0)?, "operation": r.get::<_, String>(1)?,
                    "target": r.get::<_, String>(2)?, "decision": r.get::<_, String>(3)?,
                    "reason": r.get::<_, Option<String>>(4)?, "result": r.get::<_, Option<String>>(5)?,
                    "at": r.get::<_, i64>(6)?,
                }))
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(steps)
}

/// Switches a database to write-ahead logging. Switching takes an exclusive lock without
/// waiting on the busy handler, so when another process is creating the same store at
/// that moment it is retried (for as long as the busy timeout would wait).
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// Brings the schema up to date. The version is read inside an immediate (write-locked)
/// transaction, so two processes opening a new store at once migrate it once: the second
/// waits for the first and then finds nothing to do.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = sql(path);
    let known = schema::MIGRATIONS.len() as i64;
    let current = |conn: &Connection| -> Result<i64, StoreError> {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)?;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found: version,
                known,
            });
        }
        Ok(version)
    };
    if current(conn)? == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let version = current(&tx)?;
    for (i, m) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(m).map_err(&err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(&err)?;
    }
    tx.commit().map_err(&err)
}

fn this_process() -> (i64, i64) {
    let (pid, start) = crate::procinfo::this_process();
    (pid as i64, start as i64)
}

fn process_alive(pid: i64, start: i64) -> bool {
    crate::procinfo::alive(pid as u32, start as u64)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Looks up one value, for small queries elsewhere.
pub fn optional<T>(r: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    r.optional()
}

impl Drop for Store {
    /// Commits what waits. Then, when the WAL has grown past [`SHORT_WAL_BYTES`], empties
    /// it into the database: the next process to open the store after the last one
    /// closed rebuilds the WAL's index by reading and checksumming every frame, which
    /// for a WAL of SQLite's default length (4 MiB) was a sixth of a `runcap run`. A
    /// process that finds the store busy (a server running) leaves it: the server's
    /// open connection keeps the index valid, and it checkpoints on its own.
    fn drop(&mut self) {
        {
            let mut db = self.db();
            db.closing = true;
            db.flush(&self.path);
            let wal = self.path.with_extension("db-wal");
            let long = std::fs::metadata(&wal).is_ok_and(|m| m.len() > SHORT_WAL_BYTES);
            if long {
                let emptied = db.conn.busy_timeout(Duration::ZERO).and_then(|()| {
                    db.conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                            r.get::<_, i64>(0)
                        })
                });
                tracing::debug!(?emptied, "emptying the WAL");
            }
        }
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take().flatten() {
            let _ = flusher.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_runs_are_read_newest_first_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (id, runbook) in [("r1", "a"), ("r2", "b"), ("r3", "a"), ("r4", "b")] {
            store
                .begin_run(&RunStart {
                    id,
                    environment: "test",
                    runbook,
                    manifest: Path::new("runcap.toml"),
                    dry_run: false,
                })
                .unwrap();
        }
        let ids = |rows: Vec<RunRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.history(None, 3).unwrap()), ["r4", "r3", "r2"]);
        assert_eq!(ids(store.history(Some("a"), 10).unwrap()), ["r3", "r1"]);
        let conn = store.conn();
        for (sql, index) in [
            (
                "SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 50",
                "runs_by_start",
            ),
            (
                "SELECT id FROM runs WHERE runbook = 'a' ORDER BY started_at DESC, id DESC LIMIT 50",
                "runs_by_runbook",
            ),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains(index) && !plan.contains("TEMP B-TREE"),
                "{sql}: {plan}"
            );
        }
    }

    #[test]
    fn processes_opening_a_new_store_at_once_migrate_it_once() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, barrier) = (dir.path().to_path_buf(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&dir).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn migrates_records_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .begin_run(&RunStart {
                id: "r1",
                environment: "dev",
                runbook: "rb",
                manifest: Path::new("m.toml"),
                dry_run: false,
            })
            .unwrap();
        store
            .record_call(
                "r1",
                Some(0),
                "probe",
                &CallRecord::denied("http", "GET", "http://x", "nope"),
            )
            .unwrap();
        store.finish_run("r1", RunStatus::Ok, "fine").unwrap();
        let v = store.verify_audit(None).unwrap();
        assert_eq!(v.rows, 3);
        assert!(v.broken.is_none());
        drop(store);
        // Reopening does not re-run migrations.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.history(None, 10).unwrap().len(), 1);
    }

    /// What another process would read now: a connection of its own.
    fn seen_by_another(dir: &Path) -> (Vec<String>, Vec<i64>, Vec<String>, Option<String>) {
        let conn = Connection::open(dir.join("runcap.db")).unwrap();
        let strings = |sql: &str| -> Vec<String> {
            let mut q = conn.prepare(sql).unwrap();
            q.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let steps: Vec<i64> = {
            let mut q = conn.prepare("SELECT seq FROM steps ORDER BY seq").unwrap();
            q.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let status = strings("SELECT status FROM runs").pop();
        (
            strings("SELECT id FROM runs"),
            steps,
            strings("SELECT operation FROM calls ORDER BY id"),
            status,
        )
    }

    fn start(store: &Store, id: &str) {
        let run = RunStart {
            id,
            environment: "test",
            runbook: "rb",
            manifest: Path::new("runcap.toml"),
            dry_run: false,
        };
        store.begin_run(&run).unwrap();
        store
            .step_started(id, 0, "probe", "http-probe", Phase::Main)
            .unwrap();
    }

    #[test]
    fn records_made_before_a_change_are_committed_before_it_and_the_change_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        start(&store, "r1");
        let read = CallRecord::allowed("http", "GET", "http://a/health").read_only();
        store.record_call("r1", Some(0), "p", &read).unwrap();
        // What a capability does just before it changes something.
        store.sync();
        let (runs, steps, calls, _) = seen_by_another(dir.path());
        assert_eq!(
            (runs, steps, calls),
            (vec!["r1".into()], vec![0], vec!["GET".into()])
        );
        let change = CallRecord::allowed("services", "restart", "api");
        store.record_call("r1", Some(0), "p", &change).unwrap();
        store.finish_run("r1", RunStatus::Ok, "restarted").unwrap();
        // Not a moment later: a run that changed something ends durably at once.
        let (_, _, calls, status) = seen_by_another(dir.path());
        assert_eq!(calls, ["GET", "restart"]);
        assert_eq!(status.as_deref(), Some("ok"));
        assert!(store.verify_audit(None).unwrap().broken.is_none());
    }

    #[test]
    fn a_run_that_only_read_is_committed_within_the_deferral_without_further_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        start(&store, "r1");
        let read = CallRecord::allowed("http", "GET", "http://a/health").read_only();
        store.record_call("r1", Some(0), "p", &read).unwrap();
        let details = serde_json::json!({"status": 200});
        let result = StepRecord {
            seq: 0,
            step_id: "probe",
            uses: "http-probe",
            phase: Phase::Main,
            status: StepStatus::Ok,
            attempts: 1,
            failure_kind: None,
            summary: "200",
            details: &details,
            metrics: &[],
            logs: &[],
            stdout: ("", 0),
            stderr: ("", 0),
            started_at: 1,
            duration_ms: 1.0,
        };
        store.step_finished("r1", &result).unwrap();
        store.finish_run("r1", RunStatus::Ok, "up").unwrap();
        let deadline = Instant::now() + DEFER_AT_MOST + Duration::from_secs(10);
        loop {
            let (runs, steps, calls, status) = seen_by_another(dir.path());
            if status.as_deref() == Some("ok") {
                assert_eq!(
                    (runs, steps, calls),
                    (vec!["r1".into()], vec![0], vec!["GET".into()])
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the flusher never committed the run"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The store is still open: it was the flusher, not the drop, that committed.
        assert_eq!(store.history(None, 10).unwrap().len(), 1);
        // The step's start, still waiting when its result came, gave way to it.
        let run = store.run("r1").unwrap().unwrap();
        assert_eq!(run.steps.len(), 1);
        assert_eq!(run.steps[0].status, StepState::Ok);
        assert!(store.unsealed_records().unwrap().is_empty());
        assert!(store.verify_audit(None).unwrap().broken.is_none());
    }

    #[test]
    fn dropping_the_store_commits_what_waits_and_reads_see_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        start(&store, "r1");
        // A read through the same store commits first, so it sees every record.
        assert_eq!(
            store.history(None, 10).unwrap()[0].status,
            RunState::Running
        );
        start(&store, "r2");
        store.finish_run("r2", RunStatus::Fail, "down").unwrap();
        drop(store);
        let (runs, _, _, _) = seen_by_another(dir.path());
        assert_eq!(runs.len(), 2);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.verify_audit(None).unwrap().broken.is_none());
        assert!(store.unsealed_records().unwrap().is_empty());
    }

    #[test]
    fn a_cached_query_is_not_prepared_again_for_each_new_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let conn = store.conn();
        let sql = "SELECT id FROM runs WHERE runbook = ?1 AND status != 'ok' LIMIT ?2";
        for i in 0..5 {
            let mut q = conn.prepare_cached(sql).unwrap();
            let rows = q.query_map(params![format!("rb{i}"), i], |r| r.get::<_, String>(0));
            assert_eq!(rows.unwrap().count(), 0);
        }
        let q = conn.prepare_cached(sql).unwrap();
        assert_eq!(q.get_status(rusqlite::StatementStatus::Run), 5);
        assert_eq!(q.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }
}
