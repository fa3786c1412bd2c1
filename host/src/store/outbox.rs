//! What an agent of a fleet owes its controller: the runs the controller asked for whose
//! result it has not confirmed yet. An entry is written before the run starts and
//! removed once the controller's event stream has the result, so a result is reported
//! again after any crash or lost connection, never forgotten.

use rusqlite::params;

use super::audit::Anchor;
use super::records::now_ms;
use super::{Store, StoreError, exec};

impl Store {
    /// Notes that the result of `run_id` is owed to the controller.
    pub fn outbox_add(&self, run_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            exec(
                c,
                "INSERT OR IGNORE INTO fleet_outbox (run_id, added_at) VALUES (?1, ?2)",
                params![run_id, now_ms() as i64],
            )
        })
        .map(|_| ())
    }

    /// The controller has the result of `run_id`.
    pub fn outbox_remove(&self, run_id: &str) -> Result<(), StoreError> {
        self.with(|c| exec(c, "DELETE FROM fleet_outbox WHERE run_id = ?1", [run_id]))
            .map(|_| ())
    }

    /// Every run whose result is owed, oldest first, with when it was noted (ms).
    pub fn outbox(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT run_id, added_at FROM fleet_outbox ORDER BY added_at, run_id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// The last row of the audit chain (sequence and hash), without walking the chain;
    /// `None` while it is empty.
    pub fn audit_head(&self) -> Result<Option<Anchor>, StoreError> {
        self.with(|c| {
            super::optional(
                c.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
                    .query_row([], |r| {
                        Ok(Anchor {
                            seq: r.get(0)?,
                            hash: r.get(1)?,
                        })
                    }),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owed_result_stays_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.outbox().unwrap().is_empty());
        store.outbox_add("r1").unwrap();
        store.outbox_add("r2").unwrap();
        store.outbox_add("r1").unwrap();
        let ids: Vec<String> = store.outbox().unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(ids, ["r1", "r2"]);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.outbox_remove("r1").unwrap();
        let ids: Vec<String> = store.outbox().unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(ids, ["r2"]);
    }

    #[test]
    fn the_audit_head_is_the_last_row_verify_sees() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_head().unwrap(), None);
        store
            .audit("test", "", "one", &serde_json::json!({"n": 1}))
            .unwrap();
        store
            .audit("test", "", "two", &serde_json::json!({"n": 2}))
            .unwrap();
        let head = store.audit_head().unwrap().unwrap();
        let verdict = store.verify_audit(Some(&head)).unwrap();
        assert_eq!(head.seq, 2);
        assert_eq!(verdict.head.as_deref(), Some(head.hash.as_str()));
        assert!(verdict.broken.is_none());
    }
}
