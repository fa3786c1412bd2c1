//! The escalation clock: escalation tiers reached by time rather than by failed runs.
//!
//! An incident nobody has acknowledged reaches a tier with `after = "30m"` once it has
//! been open that long, and one with `after = "sla"` once its severity's
//! `[incidents] sla` has passed; a missed SLA is also recorded on its own (timeline and
//! audit). Each tier is reached once per incident: the store marks it reached in the
//! same statement that checks it was not, so two servers sharing a state directory do
//! not both run it. The tier's steps then run as a run of the runbook holding only them,
//! with the incident in their templates (`{{ incident.id }}`); such a run opens no
//! incident of its own.

use std::sync::Arc;
use std::time::Duration;

use crate::caps::compare::fmt_duration;
use crate::manifest::{IncidentPolicy, Runbook, TierAfter};
use crate::runbook::{self, Loaded, RunOptions, incident};
use crate::store::incidents::{SLA_MISSED_BIT, Unacknowledged};
use crate::store::records::now_ms;

use super::Server;

/// How often open incidents are looked at.
const TICK: Duration = Duration::from_millis(500);

/// Starts the clock when some runbook has a tier reached by time or the environment has
/// an SLA; it ends when the server closes.
pub fn start(server: &Arc<Server>) -> Option<tokio::task::JoinHandle<()>> {
    let timed = server.env.runbooks.values().any(|rb| {
        rb.incident
            .tiers
            .iter()
            .any(|t| !matches!(t.after, TierAfter::Failures(_)))
    });
    if !timed && server.env.sla.is_empty() {
        return None;
    }
    let server = server.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = server.closed() => return,
            }
            look(&server).await;
        }
    }))
}

/// Reaches every tier that is due, and runs the steps of those that have some.
async fn look(server: &Arc<Server>) {
    let open = match server.store.incidents_unacknowledged(&server.env.name) {
        Ok(open) => open,
        Err(e) => {
            tracing::error!("escalation clock: cannot read incidents: {e}");
            return;
        }
    };
    for incident in open {
        let Some(rb) = server.env.runbooks.get(&incident.runbook) else {
            continue;
        };
        let sla = server.env.sla.get(&incident.severity).copied();
        for d in due(&incident, &rb.incident, sla, now_ms() as i64) {
            let reached =
                server
                    .store
                    .incident_tier_reached(incident.id, d.bit, d.kind, &d.message);
            match reached {
                Ok(true) => {
                    tracing::warn!(incident = incident.id, runbook = %rb.name, "{}", d.message);
                    if let Some(tier) = d.tier {
                        escalate(server, rb, &incident, tier).await;
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::error!("escalation clock: cannot record a tier: {e}"),
            }
        }
    }
}

/// A tier, or the SLA marker, that an incident has reached and not yet recorded.
#[derive(Debug, PartialEq, Eq)]
struct Due {
    /// Its bit in the incident's reached tiers.
    bit: u32,
    /// The runbook's tier, when it is one (the SLA marker is not).
    tier: Option<usize>,
    /// The timeline's kind of event.
    kind: &'static str,
    message: String,
}

/// What `incident` reaches at `now` (ms) that it has not reached yet: its missed SLA,
/// then its tiers reached by time, in order.
fn due(
    incident: &Unacknowledged,
    policy: &IncidentPolicy,
    sla: Option<Duration>,
    now: i64,
) -> Vec<Due> {
    let open_for = Duration::from_millis((now - incident.opened_at).max(0) as u64);
    let reached = |bit: u32| incident.tiers_fired & (1 << bit) != 0;
    let sla_missed = sla.filter(|s| open_for >= *s);
    let mut out = Vec::new();
    if let Some(s) = sla_missed
        && !reached(SLA_MISSED_BIT)
    {
        out.push(Due {
            bit: SLA_MISSED_BIT,
            tier: None,
            kind: "sla-missed",
            message: format!(
                "not acknowledged within the {} SLA of {} incidents",
                fmt_duration(s),
                incident.severity.as_str()
            ),
        });
    }
    for (i, t) in policy.tiers.iter().enumerate() {
        let now_due = match t.after {
            TierAfter::Failures(_) => false,
            TierAfter::Unacknowledged(d) => open_for >= d,
            TierAfter::Sla => sla_missed.is_some(),
        };
        if now_due && !reached(i as u32) {
            out.push(Due {
                bit: i as u32,
                tier: Some(i),
                kind: "escalated",
                message: format!("{} reached {}", t.name, t.after.describe()),
            });
        }
    }
    out
}

/// Runs tier `tier`'s steps as a run of `rb` holding only them, and adds what each did
/// to the incident's timeline.
async fn escalate(server: &Arc<Server>, rb: &Runbook, incident: &Unacknowledged, tier: usize) {
    let Some(t) = rb.incident.tiers.get(tier) else {
        return;
    };
    if t.steps.is_empty() {
        return;
    }
    let only_tier = Runbook {
        steps: t.steps.clone(),
        handlers: Vec::new(),
        incident: IncidentPolicy::default(),
        schedule: None,
        ..rb.clone()
    };
    let mut context = serde_json::Map::new();
    context.insert(
        "incident".into(),
        serde_json::json!({
            "id": incident.id,
            "runbook": incident.runbook,
            "severity": incident.severity.as_str(),
            "status": "escalated",
            "failures": incident.failures,
            "failed_step": incident.failed_step,
            "tier": t.name,
        }),
    );
    let options = RunOptions {
        store: Some(server.store.clone()),
        stop: server.stop.clone(),
        faults: Some(server.resources.faults.clone()),
        context,
        ad_hoc: true,
        ..RunOptions::default()
    };
    let empty = Loaded::new();
    let plugins = server.plugins.get(&rb.name).unwrap_or(&empty);
    let report = runbook::run(
        &server.runtime,
        &server.env,
        &only_tier,
        plugins,
        &options,
        |_| {},
    )
    .await;
    server.metrics.record_run(&report);
    incident::note_escalation_steps(&server.store, incident.id, &report.run_id, &report.steps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{KeyPath, Tier};
    use crate::store::records::Severity;

    fn tier(name: &str, after: TierAfter) -> Tier {
        Tier {
            name: name.into(),
            after,
            steps: Vec::new(),
            at: KeyPath::root(),
        }
    }

    fn incident(opened_at: i64, tiers_fired: i64) -> Unacknowledged {
        Unacknowledged {
            id: 1,
            runbook: "api".into(),
            severity: Severity::Critical,
            opened_at,
            tiers_fired,
            failures: 1,
            failed_step: "probe".into(),
        }
    }

    #[test]
    fn tiers_are_due_by_time_and_sla_once_each_and_failure_tiers_never_here() {
        let policy = IncidentPolicy {
            severity: Severity::Critical,
            tiers: vec![
                tier("on-call", TierAfter::Failures(2)),
                tier("lead", TierAfter::Unacknowledged(Duration::from_secs(1800))),
                tier("manager", TierAfter::Sla),
            ],
        };
        let sla = Some(Duration::from_secs(900));
        let min = 60_000;
        assert!(due(&incident(0, 0), &policy, sla, 14 * min).is_empty());
        let at_15 = due(&incident(0, 0), &policy, sla, 15 * min);
        assert_eq!(
            at_15.iter().map(|d| (d.bit, d.tier)).collect::<Vec<_>>(),
            [(SLA_MISSED_BIT, None), (2, Some(2))]
        );
        assert!(at_15[0].message.contains("15m SLA of critical incidents"));
        let reached = (1 << SLA_MISSED_BIT) | (1 << 2);
        assert!(due(&incident(0, reached), &policy, sla, 29 * min).is_empty());
        let at_30 = due(&incident(0, reached), &policy, sla, 30 * min);
        assert_eq!(at_30.len(), 1);
        assert_eq!(at_30[0].tier, Some(1));
        assert!(
            at_30[0]
                .message
                .contains("lead reached after 30m without an acknowledgement"),
            "{}",
            at_30[0].message
        );
        // Without an SLA for its severity, only the time tier is reached.
        let no_sla = due(&incident(0, 0), &policy, None, 60 * min);
        assert_eq!(no_sla.iter().map(|d| d.bit).collect::<Vec<_>>(), [1]);
    }
}
