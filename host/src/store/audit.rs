//! The tamper-evident audit chain.
//!
//! Every capability call and every run state change appends a row whose hash covers
//! its own fields and the previous row's hash. Editing a row breaks its hash; deleting
//! or reordering rows breaks the sequence or the links. `verify` walks the chain and
//! reports the first broken link.
//!
//! The chain proves integrity relative to its own head: someone who can rewrite the
//! whole database can rebuild a consistent chain, and dropping rows from the end is
//! only caught when a run references an audit row that no longer exists. An [`Anchor`]
//! closes that gap: `runcap audit head` prints the head as `SEQ:HASH` to ship to a log
//! runcap's host cannot rewrite, and `runcap audit verify --anchor SEQ:HASH` later proves
//! the chain still holds that row, unchanged.

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One row's hash: every field, length-prefixed so no two rows can collide by shifting
/// text between fields.
pub fn row_hash(
    seq: i64,
    at: i64,
    kind: &str,
    run_id: &str,
    subject: &str,
    payload: &str,
    prev: &str,
) -> String {
    let mut h = Sha256::new();
    for field in [
        seq.to_string().as_str(),
        at.to_string().as_str(),
        kind,
        run_id,
        subject,
        payload,
        prev,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends one row inside `tx`; returns its sequence number.
pub fn append(
    tx: &Connection,
    at: i64,
    kind: &str,
    run_id: &str,
    subject: &str,
    payload: &str,
) -> rusqlite::Result<i64> {
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let hash = row_hash(seq, at, kind, run_id, subject, payload, &prev);
    super::exec(
        tx,
        "INSERT INTO audit (seq, at, kind, run_id, subject, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, at, kind, run_id, subject, payload, prev, hash],
    )?;
    Ok(seq)
}

/// A row of the chain recorded outside the database (`SEQ:HASH`), so that a chain
/// rewritten or cut short after it was taken no longer verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Text that is not an anchor.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an anchor: expected SEQ:HASH, as `runcap audit head` prints it")]
pub struct NotAnAnchor(String);

impl FromStr for Anchor {
    type Err = NotAnAnchor;

    fn from_str(s: &str) -> Result<Self, NotAnAnchor> {
        let bad = || NotAnAnchor(s.to_string());
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if seq < 1 || !hex {
            return Err(bad());
        }
        Ok(Anchor {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// Rows checked before the first problem (or all of them).
    pub rows: u64,
    /// The head hash when the chain is intact.
    pub head: Option<String>,
    /// The head as an anchor (`SEQ:HASH`) when the chain is intact and not empty.
    pub anchor: Option<String>,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub problem: String,
}

/// Walks the whole chain in sequence order; with an anchor, the chain must also still
/// hold the anchored row, unchanged.
pub fn verify(conn: &Connection, anchor: Option<&Anchor>) -> rusqlite::Result<Verdict> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, kind, run_id, subject, payload, prev_hash, hash FROM audit ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut checked = 0u64;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let at: i64 = r.get(1)?;
        let kind: String = r.get(2)?;
        let run_id: String = r.get(3)?;
        let subject: String = r.get(4)?;
        let payload: String = r.get(5)?;
        let prev_hash: String = r.get(6)?;
        let hash: String = r.get(7)?;
        let broken = |problem: String| Verdict {
            rows: checked,
            head: None,
            anchor: None,
            broken: Some(BrokenLink { seq, problem }),
        };
        if seq != expected_seq {
            return Ok(broken(format!(
                "sequence jumps from {} to {seq}: rows {} were deleted",
                expected_seq - 1,
                if seq == expected_seq + 1 {
                    expected_seq.to_string()
                } else {
                    format!("{expected_seq}..{}", seq - 1)
                }
            )));
        }
        if prev_hash != prev {
            return Ok(broken(
                "its link to the previous row is wrong: rows before it were changed, removed or reordered".into(),
            ));
        }
        if row_hash(seq, at, &kind, &run_id, &subject, &payload, &prev_hash) != hash {
            return Ok(broken(format!(
                "its contents do not match its hash: the row ({kind} {subject}) was edited"
            )));
        }
        if let Some(a) = anchor
            && a.seq == seq
            && a.hash != hash
        {
            return Ok(broken(format!(
                "it is not the row anchored as {a}: the chain was rebuilt after the anchor was taken"
            )));
        }
        prev = hash;
        expected_seq += 1;
        checked += 1;
    }
    let cut = |problem: String| Verdict {
        rows: checked,
        head: None,
        anchor: None,
        broken: Some(BrokenLink {
            seq: expected_seq,
            problem,
        }),
    };
    if let Some(a) = anchor
        && a.seq >= expected_seq
    {
        return Ok(cut(format!(
            "the chain ends at row {} but the anchor {a} records row {}: rows were deleted from the end",
            expected_seq - 1,
            a.seq
        )));
    }
    // Runs remember the audit row that closed them; a chain shorter than that lost its tail.
    let referenced: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM audit_refs", [], |r| r.get(0))
        .optional()?
        .flatten();
    if let Some(max_ref) = referenced
        && max_ref >= expected_seq
    {
        return Ok(cut(format!(
            "the chain ends at row {} but a run refers to row {max_ref}: rows were deleted from the end",
            expected_seq - 1
        )));
    }
    Ok(Verdict {
        rows: checked,
        anchor: (checked > 0).then(|| {
            Anchor {
                seq: expected_seq - 1,
                hash: prev.clone(),
            }
            .to_string()
        }),
        head: Some(prev),
        broken: None,
    })
}
