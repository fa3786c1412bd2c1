//! The fault journal: every chaos-drill fault, written (synced) with the recipe that
//! undoes it before it is applied, so it can be reverted whatever happens to the runcap
//! that applied it.

use rusqlite::params;

use super::records::{FaultRow, FaultState, OpenFault, now_ms};
use super::{Store, StoreError};

const COLUMNS: &str = "id, run_id, plugin, kind, target, state, detail, injected_at, expires_at, reverted_at, reverted_by, revert_result";

fn row(r: &rusqlite::Row) -> rusqlite::Result<FaultRow> {
    Ok(FaultRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        plugin: r.get(2)?,
        kind: r.get(3)?,
        target: r.get(4)?,
        state: r.get(5)?,
        detail: r.get(6)?,
        injected_at: r.get(7)?,
        expires_at: r.get(8)?,
        reverted_at: r.get(9)?,
        reverted_by: r.get(10)?,
        revert_result: r.get(11)?,
    })
}

const OPEN: &str = "state IN ('pending', 'active')";

impl Store {
    /// Journals a fault about to be applied, with what was asked (`spec`, JSON) and the
    /// recipe that undoes it (`revert`, JSON), synced to disk before returning; `owner`
    /// is the applying process (pid and start time).
    pub fn insert_fault(
        &self,
        r: &FaultRow,
        spec: &str,
        revert: &str,
        owner: (u32, u64),
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.pragma_update(None, "synchronous", "FULL")?;
            let res = c.prepare_cached("INSERT INTO faults (id, run_id, plugin, kind, target, spec, revert, state, injected_at, expires_at, pid, pid_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)").and_then(|mut st| st.execute(params![r.id, r.run_id, r.plugin, r.kind, r.target, spec, revert, r.state, r.injected_at, r.expires_at, owner.0, owner.1 as i64]));
            c.pragma_update(None, "synchronous", "NORMAL")?;
            res.map(|_| ())
        })
    }

    /// Moves a fault to `state` with what applying it did.
    pub fn set_fault_state(
        &self,
        id: &str,
        state: FaultState,
        detail: &str,
    ) -> Result<(), StoreError> {
        let detail = self.scrubbed(detail);
        self.with(|c| {
            c.prepare_cached("UPDATE faults SET state = ?2, detail = ?3 WHERE id = ?1")?
                .execute(params![id, state, detail])
                .map(|_| ())
        })
    }

    /// Closes a fault: `state` is reverted or revert-failed, `by` what reverted it.
    pub fn finish_fault(
        &self,
        id: &str,
        state: FaultState,
        by: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        let result = self.scrubbed(result);
        self.with(|c| {
            c.prepare_cached("UPDATE faults SET state = ?2, reverted_at = ?3, reverted_by = ?4, revert_result = ?5 WHERE id = ?1")?.execute(params![id, state, now_ms() as i64, by, result],
            )
            .map(|_| ())
        })
    }

    /// How many faults a plugin has open in a run.
    pub fn count_open_faults(&self, plugin: &str, run_id: &str) -> Result<u32, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT COUNT(*) FROM faults WHERE plugin = ?1 AND run_id = ?2 AND {OPEN}"
            ))?
            .query_row(params![plugin, run_id], |r| r.get(0))
        })
    }

    /// An open fault with its recipe, or `None` if it is closed (or unknown).
    pub fn open_fault(&self, id: &str) -> Result<Option<OpenFault>, StoreError> {
        let mut found = self.open_faults_where("id = ?1", &[&id])?;
        Ok(found.pop())
    }

    /// Open faults of a run, oldest first.
    pub fn open_faults_of_run(&self, run_id: &str) -> Result<Vec<FaultRow>, StoreError> {
        Ok(self
            .open_faults_where("run_id = ?1", &[&run_id])?
            .into_iter()
            .map(|f| f.row)
            .collect())
    }

    /// Every open fault, newest first, with its recipe and the process that applied it.
    pub fn open_faults(&self) -> Result<Vec<OpenFault>, StoreError> {
        let mut all = self.open_faults_where("1 = 1", &[])?;
        all.reverse();
        Ok(all)
    }

    fn open_faults_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<OpenFault>, StoreError> {
        // Fault rows are committed before their fault is applied; no run record waiting
        // for a commit changes this answer.
        self.read(|c| {
            let sql = format!(
                "SELECT {COLUMNS}, revert, pid, pid_start FROM faults WHERE {OPEN} AND {filter} ORDER BY injected_at, rowid"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok(OpenFault {
                    row: row(r)?,
                    revert: r.get(12)?,
                    pid: r.get::<_, i64>(13)? as u32,
                    pid_start: r.get::<_, i64>(14)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// Faults, newest first, for `runcap faults`.
    pub fn faults(&self, limit: usize) -> Result<Vec<FaultRow>, StoreError> {
        self.with(|c| {
            let sql = format!("SELECT {COLUMNS} FROM faults ORDER BY injected_at DESC LIMIT ?1");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([limit as i64], row)?;
            rows.collect()
        })
    }
}
