//! Incidents: a failed run opens one for its runbook (or adds to the open one), a run
//! that succeeds resolves it, and escalation tiers are reached once each: by consecutive
//! failed runs (here, when a run fails) or by time without an acknowledgement (the
//! escalation clock of `runcap serve`, [`crate::serve::escalation`]).
//! The store keeps them ([`crate::store::Store::incident_failed`]); this decides when.

use crate::manifest::{Environment, Runbook, TierAfter};
pub use crate::store::incidents::{Event, Incident, IncidentUpdate};
use crate::store::{Store, StoreError};

fn policy<'a>(
    env: &'a Environment,
    runbook: &'a Runbook,
) -> crate::store::incidents::IncidentPolicy<'a> {
    crate::store::incidents::IncidentPolicy {
        environment: &env.name,
        runbook: &runbook.name,
        severity: runbook.incident.severity,
        failure_tiers: runbook
            .incident
            .tiers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t.after {
                TierAfter::Failures(n) => Some((i as u32, n)),
                _ => None,
            })
            .collect(),
    }
}

/// Records a failed run: opens the runbook's incident or counts another failure, and
/// escalates when the count reaches the runbook's threshold.
pub fn on_run_failed(
    store: &Store,
    env: &Environment,
    runbook: &Runbook,
    run_id: &str,
    failed_step: &str,
    summary: &str,
) -> Result<IncidentUpdate, StoreError> {
    store.incident_failed(policy(env, runbook), run_id, failed_step, summary)
}

/// Adds what each escalation step did to the incident's timeline.
pub fn note_escalation_steps(
    store: &Store,
    incident: i64,
    run_id: &str,
    reports: &[crate::runbook::StepReport],
) {
    for r in reports {
        let message = format!(
            "escalation step {} {}: {}",
            r.id,
            r.action.status.as_str(),
            r.action.summary
        );
        if let Err(e) = store.incident_event(incident, "notified", run_id, &message) {
            tracing::error!("could not record an incident event: {e}");
        }
    }
}

/// Resolves the runbook's open incident, if any, after a run that did not fail.
pub fn on_run_succeeded(
    store: &Store,
    env: &Environment,
    runbook: &Runbook,
    run_id: &str,
) -> Result<Option<IncidentUpdate>, StoreError> {
    store.incident_passed(&env.name, &runbook.name, run_id)
}
