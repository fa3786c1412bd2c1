//! `runcap audit verify`: walk the hash chain, name the first broken link.
//! `runcap audit head`: the head of a verified chain, as an anchor to keep elsewhere.

use crate::cli::{EnvArgs, StateArgs};
use crate::store::audit::{Anchor, Verdict};

/// Opens the store and walks the chain; `Err` is the exit code after reporting why not.
fn walk(env: &EnvArgs, state: &StateArgs, anchor: Option<&Anchor>) -> Result<Verdict, u8> {
    let store = super::open_store(env, state)?;
    store.verify_audit(anchor).map_err(|e| {
        eprintln!("error: {e}");
        2
    })
}

fn print_broken(verdict: &Verdict) {
    if let Some(b) = &verdict.broken {
        println!(
            "✘ audit chain broken at row {}: {} ({} rows before it verified)",
            b.seq, b.problem, verdict.rows
        );
    }
}

pub fn verify(env: &EnvArgs, state: &StateArgs, anchor: Option<&Anchor>, json: bool) -> u8 {
    let verdict = match walk(env, state, anchor) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).unwrap_or_default()
        );
    } else if verdict.broken.is_none() {
        println!(
            "✔ audit chain intact: {} rows, head {}{}",
            verdict.rows,
            verdict.head.as_deref().unwrap_or("-"),
            anchor
                .map(|a| format!(", still holds anchor {a}"))
                .unwrap_or_default()
        );
    } else {
        print_broken(&verdict);
    }
    let unsealed = match super::open_store(env, state).and_then(|s| {
        s.unsealed_records().map_err(|e| {
            eprintln!("error: {e}");
            2
        })
    }) {
        Ok(u) => u,
        Err(code) => return code,
    };
    for u in &unsealed {
        let at = match u.step {
            Some(seq) => format!("run {} step {seq}", u.run_id),
            None => format!("run {}", u.run_id),
        };
        if json {
            eprintln!("error: {at}: {}", u.problem);
        } else {
            println!("✘ {at}: {}", u.problem);
        }
    }
    if verdict.broken.is_some() || !unsealed.is_empty() {
        1
    } else {
        0
    }
}

pub fn head(env: &EnvArgs, state: &StateArgs, json: bool) -> u8 {
    let verdict = match walk(env, state, None) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if verdict.broken.is_some() {
        // An anchor of a broken chain would vouch for it.
        print_broken(&verdict);
        eprintln!(
            "error: no anchor for a broken chain; `runcap audit verify` says where it breaks"
        );
        return 1;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "rows": verdict.rows, "anchor": verdict.anchor })
        );
        return if verdict.anchor.is_some() { 0 } else { 1 };
    }
    match &verdict.anchor {
        Some(a) => {
            println!("{a}");
            0
        }
        None => {
            eprintln!("error: the audit chain is empty: nothing has run yet");
            1
        }
    }
}
