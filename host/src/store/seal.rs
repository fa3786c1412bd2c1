//! Seals: the audit chain covers every run's and every step's final record, not only the
//! events. When a run or a step is finished, the digest of its row as stored (its seal)
//! goes into the chained audit event that records it, and the row remembers that event.
//! An edit of the row afterwards (`interrupted` → `ok` in the SQLite file) no longer
//! matches the sealed digest: `history` and `show` flag it and `audit verify` fails.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::audit;
use super::records::now_ms;

/// Digest of a run's row as stored (all but the pointer to its audit event).
pub fn run_seal(conn: &Connection, run_id: &str) -> rusqlite::Result<String> {
    conn.prepare_cached(
        "SELECT id, environment, runbook, manifest, dry_run, status, started_at, finished_at, summary FROM runs WHERE id = ?1",
    )?
    .query_row([run_id], |r| digest(r, 9))
}

/// Digest of a step's row as stored (all but the pointer to its audit event).
pub fn step_seal(conn: &Connection, run_id: &str, seq: i64) -> rusqlite::Result<String> {
    conn.prepare_cached(
        "SELECT run_id, seq, step_id, uses, phase, status, attempts, failure_kind, summary, details, metrics, started_at, duration_ms FROM steps WHERE run_id = ?1 AND seq = ?2",
    )?
    .query_row(params![run_id, seq], |r| digest(r, 13))
}

/// Every column, typed and length-prefixed, so no two rows collide by shifting text.
fn digest(r: &rusqlite::Row, columns: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    let mut h = Sha256::new();
    for i in 0..columns {
        let (tag, bytes): (u8, Vec<u8>) = match r.get_ref(i)? {
            ValueRef::Null => (0, Vec::new()),
            ValueRef::Integer(n) => (1, n.to_be_bytes().to_vec()),
            ValueRef::Real(f) => (2, f.to_be_bytes().to_vec()),
            ValueRef::Text(t) => (3, t.to_vec()),
            ValueRef::Blob(b) => (4, b.to_vec()),
        };
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

/// Seals a step's row: appends `kind` with `payload` plus the seal, and points the row
/// at it. Runs inside the transaction that wrote the row.
pub fn seal_step(
    tx: &Connection,
    run_id: &str,
    seq: i64,
    kind: &str,
    subject: &str,
    mut payload: serde_json::Value,
) -> rusqlite::Result<i64> {
    payload["seal"] = step_seal(tx, run_id, seq)?.into();
    let at = audit::append(
        tx,
        now_ms() as i64,
        kind,
        run_id,
        subject,
        &payload.to_string(),
    )?;
    super::exec(
        tx,
        "UPDATE steps SET audit_seq = ?3 WHERE run_id = ?1 AND seq = ?2",
        params![run_id, seq, at],
    )?;
    Ok(at)
}

/// Seals a run's row, as [`seal_step`] does a step's.
pub fn seal_run(
    tx: &Connection,
    run_id: &str,
    kind: &str,
    subject: &str,
    mut payload: serde_json::Value,
) -> rusqlite::Result<i64> {
    payload["seal"] = run_seal(tx, run_id)?.into();
    let at = audit::append(
        tx,
        now_ms() as i64,
        kind,
        run_id,
        subject,
        &payload.to_string(),
    )?;
    super::exec(
        tx,
        "UPDATE runs SET audit_seq = ?2 WHERE id = ?1",
        params![run_id, at],
    )?;
    Ok(at)
}

/// A record whose row no longer matches its seal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unsealed {
    pub run_id: String,
    /// The step's sequence number; `None` for the run's own row.
    pub step: Option<i64>,
    pub problem: String,
}

/// Why a record has no seal to compare with.
#[derive(Debug, thiserror::Error)]
enum NoSeal {
    #[error("its audit event {0} is missing")]
    Missing(i64),
    #[error("its audit event {0} holds no seal")]
    Empty(i64),
}

/// The seal an audit event holds, or why there is none to compare with.
fn sealed(conn: &Connection, audit_seq: i64) -> rusqlite::Result<Result<String, NoSeal>> {
    let payload: Option<String> = conn
        .prepare_cached("SELECT payload FROM audit WHERE seq = ?1")?
        .query_row([audit_seq], |r| r.get(0))
        .optional()?;
    Ok(match payload {
        None => Err(NoSeal::Missing(audit_seq)),
        Some(p) => serde_json::from_str::<serde_json::Value>(&p)
            .ok()
            .and_then(|v| v["seal"].as_str().map(str::to_string))
            .ok_or(NoSeal::Empty(audit_seq)),
    })
}

/// Checks the rows of one run (its own and its steps') against their seals. Rows from
/// before seals existed (no audit event, or one without a seal, in a run whose own row
/// is unsealed too) are not judged.
pub fn check_run(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<Unsealed>> {
    let mut out = Vec::new();
    let run_seq: Option<Option<i64>> = conn
        .prepare_cached("SELECT audit_seq FROM runs WHERE id = ?1")?
        .query_row([run_id], |r| r.get(0))
        .optional()?;
    let Some(run_seq) = run_seq else {
        return Ok(out);
    };
    let mut sealed_run = false;
    if let Some(seq) = run_seq {
        // A run closed before seals existed has nothing to compare with.
        if let Ok(seal) = sealed(conn, seq)? {
            sealed_run = true;
            if seal != run_seal(conn, run_id)? {
                out.push(Unsealed {
                    run_id: run_id.to_string(),
                    step: None,
                    problem: "the run's record was edited after it was sealed".into(),
                });
            }
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, status, audit_seq FROM steps WHERE run_id = ?1 ORDER BY seq",
    )?;
    let steps: Vec<(i64, String, Option<i64>)> = stmt
        .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, status, audit_seq) in steps {
        let problem = match audit_seq {
            Some(a) => match sealed(conn, a)? {
                Ok(seal) if seal == step_seal(conn, run_id, seq)? => None,
                Ok(_) => Some("the step's record was edited after it was sealed".to_string()),
                Err(e) if sealed_run => Some(format!("the step's record cannot be checked: {e}")),
                Err(_) => None,
            },
            // A step still running has no seal yet; one that claims to be done must.
            None if sealed_run && status != "running" => Some(format!(
                "the step's record says `{status}` but was never sealed"
            )),
            None => None,
        };
        if let Some(problem) = problem {
            out.push(Unsealed {
                run_id: run_id.to_string(),
                step: Some(seq),
                problem,
            });
        }
    }
    Ok(out)
}
