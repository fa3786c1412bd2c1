//! `runcap audit verify`: walk the hash chain, name the first broken link.

use crate::cli::{EnvArgs, StateArgs};

pub fn verify(env: &EnvArgs, state: &StateArgs, json: bool) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let verdict = match store.verify_audit() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).unwrap_or_default()
        );
    } else {
        match &verdict.broken {
            None => println!(
                "✔ audit chain intact: {} rows, head {}",
                verdict.rows,
                verdict.head.as_deref().unwrap_or("-")
            ),
            Some(b) => println!(
                "✘ audit chain broken at row {}: {} ({} rows before it verified)",
                b.seq, b.problem, verdict.rows
            ),
        }
    }
    if verdict.broken.is_some() { 1 } else { 0 }
}
