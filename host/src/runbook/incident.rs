//! Incidents: a failed run opens one for its runbook (or adds to the open one), a run
//! that succeeds resolves it, and `escalate_after` consecutive failures escalate it once.
//! The store keeps them ([`crate::store::Store::incident_failed`]); this decides when.

use crate::manifest::{Environment, Runbook};
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
        escalate_after: runbook.incident.escalate_after,
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

/// Resolves the runbook's open incident, if any, after a run that did not fail.
pub fn on_run_succeeded(
    store: &Store,
    env: &Environment,
    runbook: &Runbook,
    run_id: &str,
) -> Result<Option<IncidentUpdate>, StoreError> {
    store.incident_passed(&env.name, &runbook.name, run_id)
}
