//! The store's schema and its forward migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A new version of
//! runcap appends migrations here and never edits applied ones; opening an older store
//! applies the missing ones in one transaction. A store newer than this binary is refused.

/// Every migration, in order. Index + 1 is the schema version it produces.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, their output, capability calls, the audit chain.
    r#"
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        environment   TEXT NOT NULL,
        runbook       TEXT NOT NULL,
        manifest      TEXT NOT NULL,
        dry_run       INTEGER NOT NULL,
        status        TEXT NOT NULL,          -- running | ok | warn | fail | cancelled | interrupted
        started_at    INTEGER NOT NULL,       -- ms since the Unix epoch
        finished_at   INTEGER,
        pid           INTEGER NOT NULL,
        pid_start     INTEGER NOT NULL,       -- the process's start time, to tell a reused pid
        summary       TEXT NOT NULL DEFAULT '',
        audit_seq     INTEGER                 -- the audit row that closed the run
    );
    CREATE INDEX runs_by_runbook ON runs (runbook, started_at);
    CREATE TABLE steps (
        run_id        TEXT NOT NULL REFERENCES runs(id),
        seq           INTEGER NOT NULL,
        step_id       TEXT NOT NULL,
        uses          TEXT NOT NULL,
        phase         TEXT NOT NULL,          -- main | handler | rollback | escalation
        status        TEXT NOT NULL,          -- running | ok | warn | fail | skipped
        attempts      INTEGER NOT NULL DEFAULT 0,
        failure_kind  TEXT,
        summary       TEXT NOT NULL DEFAULT '',
        details       TEXT NOT NULL DEFAULT '{}',
        metrics       TEXT NOT NULL DEFAULT '[]',
        started_at    INTEGER NOT NULL,
        duration_ms   REAL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE logs (
        run_id        TEXT NOT NULL,
        step_seq      INTEGER NOT NULL,
        level         TEXT NOT NULL,
        message       TEXT NOT NULL,
        fields        TEXT NOT NULL,
        at            INTEGER NOT NULL
    );
    CREATE INDEX logs_by_step ON logs (run_id, step_seq);
    CREATE TABLE outputs (
        run_id        TEXT NOT NULL,
        step_seq      INTEGER NOT NULL,
        stream        TEXT NOT NULL,          -- stdout | stderr
        text          TEXT NOT NULL,
        dropped       INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_seq, stream)
    );
    CREATE TABLE calls (
        id            INTEGER PRIMARY KEY,
        run_id        TEXT,
        step_seq      INTEGER,
        plugin        TEXT NOT NULL,
        capability    TEXT NOT NULL,
        operation     TEXT NOT NULL,
        target        TEXT NOT NULL,
        decision      TEXT NOT NULL,          -- allowed | denied | dry-run
        reason        TEXT,
        result        TEXT,
        at            INTEGER NOT NULL
    );
    CREATE INDEX calls_by_run ON calls (run_id, step_seq);
    CREATE TABLE rollbacks (
        run_id        TEXT NOT NULL,
        seq           INTEGER NOT NULL,       -- order registered; run in reverse
        step_id       TEXT NOT NULL,
        uses          TEXT NOT NULL,
        params        TEXT NOT NULL,          -- resolved params, JSON
        state         TEXT NOT NULL,          -- pending | done | failed
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY,
        at            INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        run_id        TEXT NOT NULL DEFAULT '',
        subject       TEXT NOT NULL,
        payload       TEXT NOT NULL,
        prev_hash     TEXT NOT NULL,
        hash          TEXT NOT NULL
    );
    CREATE VIEW audit_refs AS SELECT audit_seq AS seq FROM runs WHERE audit_seq IS NOT NULL;
    "#,
    // 2: incidents and their timelines.
    r#"
    CREATE TABLE incidents (
        id            INTEGER PRIMARY KEY,
        environment   TEXT NOT NULL,
        runbook       TEXT NOT NULL,
        severity      TEXT NOT NULL,
        status        TEXT NOT NULL,          -- open | escalated | resolved
        failures      INTEGER NOT NULL,       -- consecutive failed runs
        failed_step   TEXT NOT NULL,
        opened_at     INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        resolved_at   INTEGER
    );
    CREATE INDEX incidents_open ON incidents (environment, runbook, status);
    CREATE TABLE incident_events (
        incident_id   INTEGER NOT NULL REFERENCES incidents(id),
        at            INTEGER NOT NULL,
        kind          TEXT NOT NULL,          -- opened | failed | escalated | notified | resolved
        run_id        TEXT,
        message       TEXT NOT NULL
    );
    "#,
    // 3: the fault journal. A row is written (and synced) before its fault is applied and
    // carries everything needed to revert it without the manifest.
    r#"
    CREATE TABLE faults (
        id            TEXT PRIMARY KEY,
        run_id        TEXT NOT NULL,
        plugin        TEXT NOT NULL,
        kind          TEXT NOT NULL,
        target        TEXT NOT NULL,
        spec          TEXT NOT NULL,          -- JSON of what was asked
        revert        TEXT NOT NULL,          -- JSON recipe that undoes it
        state         TEXT NOT NULL,          -- pending | active | reverted | revert-failed
        detail        TEXT NOT NULL DEFAULT '',
        injected_at   INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        reverted_at   INTEGER,
        reverted_by   TEXT,                   -- plugin | run-end | expiry | signal | recovery
        revert_result TEXT,
        pid           INTEGER NOT NULL,
        pid_start     INTEGER NOT NULL
    );
    CREATE INDEX faults_open ON faults (state);
    "#,
    // 4: a rollback's own time limit, so a recovered rollback keeps it.
    r#"
    ALTER TABLE rollbacks ADD COLUMN timeout_ms INTEGER;
    "#,
    // 5: a step's final record is sealed by an audit event (see seal.rs).
    r#"
    ALTER TABLE steps ADD COLUMN audit_seq INTEGER;
    "#,
    // 6: recent runs, of all runbooks or of one, read newest first from an index (the
    // API's `GET /api/v1/runs` with a large history).
    r#"
    CREATE INDEX runs_by_start ON runs (started_at, id);
    DROP INDEX runs_by_runbook;
    CREATE INDEX runs_by_runbook ON runs (runbook, started_at, id);
    "#,
    // 7: runs a fleet controller asked for whose result it has not yet confirmed: an
    // agent reports them again after a restart or a lost connection.
    r#"
    CREATE TABLE fleet_outbox (
        run_id        TEXT PRIMARY KEY,
        added_at      INTEGER NOT NULL
    );
    "#,
    // 8: which escalation tiers an incident has reached (bit N: the runbook's tier N;
    // bit 40: its acknowledgement SLA was missed), so each is reached once.
    r#"
    ALTER TABLE incidents ADD COLUMN tiers_fired INTEGER NOT NULL DEFAULT 0;
    "#,
    // 9: a runbook's latest unresolved incident, found in index order: every passing run
    // asks for it, and without this index each asking sorted in a temporary b-tree.
    r#"
    CREATE INDEX incidents_unresolved ON incidents (environment, runbook, id)
        WHERE status != 'resolved';
    "#,
];
