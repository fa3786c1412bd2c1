//! `runcap incidents`: incidents opened by failed runs, with their timelines;
//! `runcap incidents ack|resolve ID --note "…"`: an operator takes or closes one.

use crate::cli::history::time;
use crate::cli::{EnvArgs, StateArgs};
use crate::store::incidents::Incident;

pub fn run(env: &EnvArgs, state: &StateArgs, all: bool, json: bool) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::note_leftovers(&store, env);
    let list = match store.incidents(all, 0) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let list = match super::redacted(
        &*match super::output_redactor(env) {
            Ok(r) => r,
            Err(code) => return code,
        },
        &list,
    ) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return 0;
    }
    let list: Vec<(Option<String>, Incident)> = list.into_iter().map(|i| (None, i)).collect();
    print(list, all);
    0
}

/// Prints incidents with their timelines, each with its host when they come from a
/// fleet's controller.
pub fn print(list: Vec<(Option<String>, Incident)>, all: bool) {
    if list.is_empty() {
        println!(
            "{}",
            if all {
                "no incidents"
            } else {
                "no open incidents"
            }
        );
        return;
    }
    for (host, i) in list {
        println!(
            "{}incident #{} · {} · {} · runbook {} ({}) · {} consecutive failures · last failed step {}",
            host.map(|h| format!("{h}: ")).unwrap_or_default(),
            i.id,
            i.severity,
            i.status,
            i.runbook,
            i.environment,
            i.failures,
            i.failed_step
        );
        for e in i.timeline {
            println!(
                "  {} {:<9} {}{}",
                time(e.at),
                e.kind,
                e.message,
                e.run_id.map(|r| format!(" (run {r})")).unwrap_or_default()
            );
        }
    }
}

/// Acknowledges or resolves an open incident, with the operator's note.
pub fn act(
    env: &EnvArgs,
    state: &StateArgs,
    id: i64,
    action: crate::store::incidents::OperatorAction,
    note: &str,
) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.incident_by_operator(id, action, note) {
        Ok(Some(runbook)) => {
            let what = match action {
                crate::store::incidents::OperatorAction::Acknowledge => "acknowledged",
                crate::store::incidents::OperatorAction::Resolve => "resolved",
            };
            println!("incident #{id} ({runbook}) {what}");
            0
        }
        Ok(None) => {
            eprintln!("error: no open incident #{id}; `runcap incidents` lists them");
            2
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
