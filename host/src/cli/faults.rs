//! `runcap faults` and `runcap proxies`: the fault journal and the drill proxies.

use crate::cli::history::time;
use crate::cli::{EnvArgs, StateArgs};
use crate::services::Verb;

pub fn list(env: &EnvArgs, state: &StateArgs, json: bool) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::note_leftovers(&store, env);
    let faults = match store.faults(200) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&faults).unwrap_or_default()
        );
        return 0;
    }
    if faults.is_empty() {
        println!("no faults recorded");
        return 0;
    }
    let open: Vec<_> = faults.iter().filter(|f| f.state.is_open()).collect();
    println!("{} open, {} in the journal", open.len(), faults.len());
    for f in &faults {
        println!(
            "{} {:<13} {:<12} {:<14} {:<10} run {} · {}",
            time(f.injected_at),
            f.state,
            f.kind,
            f.target,
            f.plugin,
            f.run_id,
            f.detail
        );
        if let (Some(by), Some(result)) = (&f.reverted_by, &f.revert_result) {
            println!("{:>21} reverted by {by}: {result}", "");
        }
    }
    0
}

pub async fn proxies(env_args: &EnvArgs, state: &StateArgs, verb: Verb, json: bool) -> u8 {
    let env = match super::load_env(env_args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    super::note_leftovers_if_any(env_args, state);
    let resources = match super::resources(&env, env_args, state, None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut all = Vec::new();
    for name in resources.proxies.names() {
        match resources.proxies.control(name, verb).await {
            Ok(s) => all.push(s),
            Err(e) => {
                eprintln!("error: proxy {name}: {e}");
                return 2;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else if all.is_empty() {
        println!("no proxies are defined in {}", env.file.display());
    } else {
        for s in all {
            println!("{:<16} {:<8} {}", s.name, s.state, s.detail);
        }
    }
    0
}
