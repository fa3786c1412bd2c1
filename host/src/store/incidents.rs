//! Incidents: one per runbook while it keeps failing, with a timeline, audited.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::records::{Severity, now_ms};
use super::{Store, StoreError, audit};

/// The query for `$columns` of a runbook's latest unresolved incident (`?1` the
/// environment, `?2` the runbook). Its `WHERE` is the one of the `incidents_unresolved`
/// partial index, which answers it in index order: every passing run asks it.
macro_rules! latest_unresolved {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM incidents WHERE environment = ?1 AND runbook = ?2 AND status != 'resolved' ORDER BY id DESC LIMIT 1"
        )
    };
}

/// What a run did to its runbook's incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentUpdate {
    pub id: i64,
    pub runbook: String,
    pub severity: Severity,
    /// open, escalated or resolved.
    pub status: String,
    /// Consecutive failed runs so far.
    pub failures: u32,
    pub failed_step: String,
    /// This run reached an escalation tier.
    pub escalated_now: bool,
    /// The tiers (indexes into the runbook's) this run reached.
    #[serde(skip)]
    pub tiers_now: Vec<u32>,
}

/// One incident with its timeline, for `runcap incidents` and bundles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub environment: String,
    pub runbook: String,
    pub severity: Severity,
    pub status: String,
    pub failures: u32,
    pub failed_step: String,
    pub opened_at: i64,
    pub updated_at: i64,
    pub resolved_at: Option<i64>,
    pub timeline: Vec<Event>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: i64,
    pub kind: String,
    pub run_id: Option<String>,
    pub message: String,
}

/// What opening or updating an incident needs to know of the runbook.
#[derive(Debug, Clone)]
pub struct IncidentPolicy<'a> {
    pub environment: &'a str,
    pub runbook: &'a str,
    pub severity: Severity,
    /// The runbook's tiers reached by consecutive failed runs: (tier index, failures).
    pub failure_tiers: Vec<(u32, u32)>,
}

/// The bit of `tiers_fired` that records a missed acknowledgement SLA.
pub const SLA_MISSED_BIT: u32 = 40;

/// An incident nobody has acknowledged yet, for the escalation clock.
#[derive(Debug, Clone)]
pub struct Unacknowledged {
    pub id: i64,
    pub runbook: String,
    pub severity: Severity,
    pub opened_at: i64,
    /// Bits of the tiers already reached.
    pub tiers_fired: i64,
    pub failures: u32,
    pub failed_step: String,
}

impl Store {
    /// Records a failed run: opens the runbook's incident or counts another failure, and
    /// escalates when the count reaches the runbook's threshold.
    pub fn incident_failed(
        &self,
        policy: IncidentPolicy,
        run_id: &str,
        failed_step: &str,
        summary: &str,
    ) -> Result<IncidentUpdate, StoreError> {
        let summary = self.scrubbed(summary);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let now = now_ms() as i64;
            let open: Option<(i64, u32, String, i64)> = tx
                .query_row(
                    latest_unresolved!("id, failures, status, tiers_fired"),
                    params![policy.environment, policy.runbook],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let fired = open.as_ref().map_or(0, |o| o.3);
            let (id, failures, mut status) = match open {
                Some((id, failures, status, _)) => {
                    tx.prepare_cached("UPDATE incidents SET failures = ?2, failed_step = ?3, updated_at = ?4 WHERE id = ?1")?.execute(params![id, failures + 1, failed_step, now],
                    )?;
                    event(&tx, id, now, "failed", run_id, &format!("run failed again at step {failed_step}: {summary}"))?;
                    (id, failures + 1, status)
                }
                None => {
                    tx.prepare_cached("INSERT INTO incidents (environment, runbook, severity, status, failures, failed_step, opened_at, updated_at) VALUES (?1, ?2, ?3, 'open', 1, ?4, ?5, ?5)")?.execute(params![policy.environment, policy.runbook, policy.severity, failed_step, now],
                    )?;
                    let id = tx.last_insert_rowid();
                    event(&tx, id, now, "opened", run_id, &format!("run failed at step {failed_step}: {summary}"))?;
                    let payload = serde_json::json!({"incident": id, "severity": policy.severity, "failed_step": failed_step});
                    audit::append(&tx, now, "incident.opened", run_id, policy.runbook, &payload.to_string())?;
                    (id, 1, "open".to_string())
                }
            };
            // Nothing escalates an incident someone has acknowledged.
            let tiers_now: Vec<u32> = if status == "acknowledged" {
                Vec::new()
            } else {
                policy
                    .failure_tiers
                    .iter()
                    .filter(|(tier, after)| failures >= *after && fired & (1 << tier) == 0)
                    .map(|(tier, _)| *tier)
                    .collect()
            };
            let escalated_now = !tiers_now.is_empty();
            if escalated_now {
                status = "escalated".into();
                let bits = tiers_now.iter().fold(fired, |b, t| b | (1 << t));
                tx.prepare_cached("UPDATE incidents SET status = 'escalated', tiers_fired = ?2 WHERE id = ?1")?.execute(params![id, bits])?;
                let message = format!("escalated after {failures} consecutive failed runs");
                event(&tx, id, now, "escalated", run_id, &message)?;
                let payload = serde_json::json!({"incident": id, "failures": failures, "tiers": tiers_now});
                audit::append(&tx, now, "incident.escalated", run_id, policy.runbook, &payload.to_string())?;
            }
            tx.commit()?;
            Ok(IncidentUpdate {
                id,
                runbook: policy.runbook.to_string(),
                severity: policy.severity,
                status,
                failures,
                failed_step: failed_step.to_string(),
                escalated_now,
                tiers_now,
            })
        })
    }

    /// Resolves the runbook's open incident, if any, after a run that did not fail.
    pub fn incident_passed(
        &self,
        environment: &str,
        runbook: &str,
        run_id: &str,
    ) -> Result<Option<IncidentUpdate>, StoreError> {
        // Most passing runs have no incident to close: asking does not commit the run
        // records still waiting (the lock is held from the question to the answer).
        let mut db = self.db();
        let open: Option<(i64, Severity, u32, String)> = db
            .conn
            .prepare_cached(latest_unresolved!("id, severity, failures, failed_step"))
            .and_then(|mut q| {
                q.query_row(params![environment, runbook], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
            })
            .map_err(self.err())?;
        let Some((id, severity, failures, failed_step)) = open else {
            return Ok(None);
        };
        db.commit_with(self.path(), |tx| {
            let now = now_ms() as i64;
            tx.prepare_cached("UPDATE incidents SET status = 'resolved', resolved_at = ?2, updated_at = ?2 WHERE id = ?1")?.execute(params![id, now],
            )?;
            event(tx, id, now, "resolved", run_id, "the runbook passed again")?;
            let payload = serde_json::json!({"incident": id});
            audit::append(tx, now, "incident.resolved", run_id, runbook, &payload.to_string())?;
            Ok(Some(IncidentUpdate {
                id,
                runbook: runbook.to_string(),
                severity,
                status: "resolved".into(),
                failures,
                failed_step,
                escalated_now: false,
                tiers_now: Vec::new(),
            }))
        })
        .map_err(self.err())
    }

    /// The incidents of `environment` that are open and not acknowledged.
    pub fn incidents_unacknowledged(
        &self,
        environment: &str,
    ) -> Result<Vec<Unacknowledged>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, runbook, severity, opened_at, tiers_fired, failures, failed_step FROM incidents WHERE environment = ?1 AND status IN ('open', 'escalated') ORDER BY id",
            )?;
            let rows = stmt
                .query_map([environment], |r| {
                    Ok(Unacknowledged {
                        id: r.get(0)?,
                        runbook: r.get(1)?,
                        severity: r.get(2)?,
                        opened_at: r.get(3)?,
                        tiers_fired: r.get(4)?,
                        failures: r.get(5)?,
                        failed_step: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Marks tier `bit` of incident `id` reached, escalates it, and records why, if the
    /// incident is still open, unacknowledged and had not reached it: `false` otherwise
    /// (another process, or an operator, got there first).
    pub fn incident_tier_reached(
        &self,
        id: i64,
        bit: u32,
        kind: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let message = self.scrubbed(message);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let now = now_ms() as i64;
            let changed = tx.prepare_cached("UPDATE incidents SET tiers_fired = tiers_fired | ?2, status = 'escalated', updated_at = ?3 WHERE id = ?1 AND status IN ('open', 'escalated') AND (tiers_fired & ?2) = 0")?.execute(params![id, 1i64 << bit, now],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let runbook: String =
                tx.prepare_cached("SELECT runbook FROM incidents WHERE id = ?1")?.query_row([id], |r| r.get(0))?;
            event(&tx, id, now, kind, "", &message)?;
            let payload = serde_json::json!({"incident": id, "tier": bit, "message": message});
            audit::append(&tx, now, &format!("incident.{kind}"), "", &runbook, &payload.to_string())?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Adds a line to an incident's timeline.
    pub fn incident_event(
        &self,
        id: i64,
        kind: &str,
        run_id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let message = self.scrubbed(message);
        self.with(|conn| {
            let tx = conn.transaction()?;
            event(&tx, id, now_ms() as i64, kind, run_id, &message)?;
            tx.commit()
        })
    }

    /// Incidents, newest first: all, or only those not resolved; only those updated at or
    /// after `since_ms`.
    pub fn incidents(
        &self,
        include_resolved: bool,
        since_ms: i64,
    ) -> Result<Vec<Incident>, StoreError> {
        self.with(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id, environment, runbook, severity, status, failures, failed_step, opened_at, updated_at, resolved_at FROM incidents WHERE (?1 OR status != 'resolved') AND updated_at >= ?2 ORDER BY id DESC",
        )?;
        let mut incidents: Vec<Incident> = stmt
            .query_map(params![include_resolved, since_ms], |r| {
                Ok(Incident {
                    id: r.get(0)?,
                    environment: r.get(1)?,
                    runbook: r.get(2)?,
                    severity: r.get(3)?,
                    status: r.get(4)?,
                    failures: r.get(5)?,
                    failed_step: r.get(6)?,
                    opened_at: r.get(7)?,
                    updated_at: r.get(8)?,
                    resolved_at: r.get(9)?,
                    timeline: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut events = conn.prepare("SELECT at, kind, run_id, message FROM incident_events WHERE incident_id = ?1 ORDER BY rowid")?;
        for i in &mut incidents {
            i.timeline = events
                .query_map([i.id], |r| {
                    Ok(Event {
                        at: r.get(0)?,
                        kind: r.get(1)?,
                        run_id: r.get(2)?,
                        message: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(incidents)
    })
    }
}

/// What an operator does to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Someone is on it: the incident stays open but no longer escalates.
    Acknowledge,
    /// It is over.
    Resolve,
}

impl OperatorAction {
    fn status(self) -> &'static str {
        match self {
            OperatorAction::Acknowledge => "acknowledged",
            OperatorAction::Resolve => "resolved",
        }
    }
}

impl Store {
    /// Acknowledges or resolves incident `id` with the operator's note, recorded in its
    /// timeline and audited. `None` when no incident `id` is open.
    pub fn incident_by_operator(
        &self,
        id: i64,
        action: OperatorAction,
        note: &str,
    ) -> Result<Option<String>, StoreError> {
        let note = self.scrubbed(note);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let runbook: Option<String> = tx
                .query_row(
                    "SELECT runbook FROM incidents WHERE id = ?1 AND status != 'resolved'",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(runbook) = runbook else {
                return Ok(None);
            };
            let now = now_ms() as i64;
            let status = action.status();
            if action == OperatorAction::Resolve {
                tx.prepare_cached("UPDATE incidents SET status = 'resolved', resolved_at = ?2, updated_at = ?2 WHERE id = ?1")?.execute(params![id, now],
                )?;
            } else {
                tx.prepare_cached("UPDATE incidents SET status = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![id, status, now],
                )?;
            }
            event(&tx, id, now, status, "", &note)?;
            let payload = serde_json::json!({"incident": id, "note": note, "by": "operator"});
            audit::append(&tx, now, &format!("incident.{status}"), "", &runbook, &payload.to_string())?;
            tx.commit()?;
            Ok(Some(runbook))
        })
    }

    /// The open incident that holds `runbook`'s automatic runs because it flapped, if any.
    pub fn flapping(&self, environment: &str, runbook: &str) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT i.id FROM incidents i WHERE i.environment = ?1 AND i.runbook = ?2 AND i.status != 'resolved' AND EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND e.kind = 'flapping') ORDER BY i.id DESC LIMIT 1")?.query_row(params![environment, runbook],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// When an operator last resolved a flapping incident of `runbook`: runs before then
    /// no longer count toward the flap guard.
    pub fn flap_released_at(
        &self,
        environment: &str,
        runbook: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT max(i.resolved_at) FROM incidents i WHERE i.environment = ?1 AND i.runbook = ?2 AND i.status = 'resolved' AND EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND e.kind = 'flapping')")?.query_row(params![environment, runbook],
                |r| r.get(0),
            )
        })
    }

    /// Records that `runbook` ran too often without the problem going away: on its open
    /// incident, or on a new one. Returns the incident's id.
    pub fn incident_flapped(
        &self,
        environment: &str,
        runbook: &str,
        severity: Severity,
        message: &str,
    ) -> Result<i64, StoreError> {
        let message = self.scrubbed(message);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let now = now_ms() as i64;
            let open: Option<i64> = tx
                .query_row(
                    latest_unresolved!("id"),
                    params![environment, runbook],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match open {
                Some(id) => id,
                None => {
                    tx.prepare_cached("INSERT INTO incidents (environment, runbook, severity, status, failures, failed_step, opened_at, updated_at) VALUES (?1, ?2, ?3, 'open', 0, '', ?4, ?4)")?.execute(params![environment, runbook, severity, now],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            tx.prepare_cached("UPDATE incidents SET updated_at = ?2 WHERE id = ?1")?.execute(params![id, now])?;
            event(&tx, id, now, "flapping", "", &message)?;
            let payload = serde_json::json!({"incident": id, "message": message});
            audit::append(&tx, now, "incident.flapping", "", runbook, &payload.to_string())?;
            tx.commit()?;
            Ok(id)
        })
    }
}

fn event(
    tx: &rusqlite::Connection,
    id: i64,
    at: i64,
    kind: &str,
    run_id: &str,
    message: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO incident_events (incident_id, at, kind, run_id, message) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![id, at, kind, run_id, message],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_unresolved_incident_is_found_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for query in [
            latest_unresolved!("id, failures, status, tiers_fired"),
            latest_unresolved!("id, severity, failures, failed_step"),
            latest_unresolved!("id"),
        ] {
            let plan: Vec<String> = store
                .with(|conn| {
                    let mut q = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}"))?;
                    let rows = q.query_map(params!["e", "rb"], |r| r.get::<_, String>(3))?;
                    rows.collect()
                })
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("incidents_unresolved"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[test]
    fn a_tier_is_reached_once_and_nothing_escalates_an_acknowledged_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let policy = IncidentPolicy {
            environment: "e",
            runbook: "rb",
            severity: Severity::High,
            failure_tiers: vec![(0, 1), (1, 3)],
        };
        let u = store
            .incident_failed(policy.clone(), "r1", "s", "x")
            .unwrap();
        assert_eq!(u.tiers_now, [0]);
        assert_eq!(u.status, "escalated");
        let u = store
            .incident_failed(policy.clone(), "r2", "s", "x")
            .unwrap();
        assert!(u.tiers_now.is_empty());
        assert!(
            store
                .incident_tier_reached(u.id, 5, "escalated", "m")
                .unwrap()
        );
        assert!(
            !store
                .incident_tier_reached(u.id, 5, "escalated", "m")
                .unwrap()
        );
        assert_eq!(
            store.incidents_unacknowledged("e").unwrap()[0].tiers_fired,
            0b100001
        );
        store
            .incident_by_operator(u.id, OperatorAction::Acknowledge, "on it")
            .unwrap();
        assert!(store.incidents_unacknowledged("e").unwrap().is_empty());
        assert!(
            !store
                .incident_tier_reached(u.id, 6, "escalated", "m")
                .unwrap()
        );
        let u = store.incident_failed(policy, "r3", "s", "x").unwrap();
        assert_eq!(u.failures, 3);
        assert!(
            u.tiers_now.is_empty(),
            "an acknowledged incident reaches no tier"
        );
    }
}
