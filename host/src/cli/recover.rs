//! `runcap recover`: run the rollbacks that interrupted runs left pending.

use crate::cli::{EnvArgs, StateArgs};
use crate::runbook;
use crate::runner::Status;

pub async fn run(env_args: &EnvArgs, state: &StateArgs, only: Option<&str>) -> u8 {
    let env = match super::load_env(env_args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let store = match super::open_store(env_args, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let recovered = super::recover_after_crash(&store).await;
    let pending = match store.runs_needing_recovery() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let todo: Vec<_> = pending
        .into_iter()
        .filter(|i| only.is_none_or(|id| i.run_id.starts_with(id)))
        .collect();
    if todo.is_empty() {
        println!("nothing to recover: no interrupted run has pending rollbacks");
        return if recovered { 0 } else { 1 };
    }
    let runtime = match super::runtime(super::Workload::OneAtATime) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (stopper, stop) = runbook::stop::channel();
    tokio::spawn(async move {
        loop {
            super::run::wait_for_signal().await;
            stopper.raise(runbook::StopLevel::Abort);
            eprintln!("\nstopping: rollbacks not done stay pending");
        }
    });
    let mut failed = false;
    for i in todo {
        println!(
            "recovering run {} of runbook `{}`: {} rollbacks",
            i.run_id,
            i.runbook,
            i.pending_rollbacks.len()
        );
        let resources = match super::resources(&env, env_args, state, Some(store.clone())) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let (reports, outcome) = runbook::recover(
            &runtime,
            &env,
            &resources,
            &store,
            &i,
            stop.clone(),
            super::run::print_progress,
        )
        .await;
        failed |= outcome.failed > 0
            || outcome.pending > 0
            || reports.iter().any(|r| r.action.status == Status::Fail);
    }
    if failed || !recovered { 1 } else { 0 }
}
