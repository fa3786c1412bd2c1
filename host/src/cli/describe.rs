//! `runcap describe RUNBOOK`: what a runbook takes and does, read from the manifest
//! alone — its parameters (what `--var` accepts), steps with their failure policies,
//! watches and rollbacks, handlers, incident policy and overlap policy — so an operator
//! can run it correctly without opening the TOML.

use serde_json::json;

use super::EnvArgs;
use crate::manifest::model::{Overlap, Watch};
use crate::manifest::{OnFailure, Runbook, Step};

pub fn run(args: &EnvArgs, name: &str, json: bool) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let Some(rb) = super::run::find_runbook(&env, name) else {
        return 2;
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&document(rb)).unwrap_or_default()
        );
    } else {
        print!("{}", text(rb));
    }
    0
}

fn on_failure(p: &OnFailure) -> String {
    match p {
        OnFailure::Abort => "abort".into(),
        OnFailure::Continue => "continue".into(),
        OnFailure::Finish => "finish".into(),
        OnFailure::Run(h) => format!("run {}", h.join(", ")),
    }
}

fn watch(w: &Watch) -> String {
    format!(
        "every {} for {}{}",
        humantime::format_duration(w.every),
        humantime::format_duration(w.duration),
        if w.until_ok { ", until ok" } else { "" }
    )
}

fn overlap(o: Overlap) -> &'static str {
    match o {
        Overlap::Wait => "wait",
        Overlap::Refuse => "refuse",
    }
}

fn step_json(s: &Step) -> serde_json::Value {
    json!({
        "id": s.id,
        "uses": s.uses,
        "when": s.when,
        "on_failure": on_failure(&s.on_failure),
        "retries": s.retry.retries,
        "timeout_ms": s.timeout.map(|t| t.as_millis() as u64),
        "watch": s.watch.as_ref().map(watch),
        "rollback": s.rollback.as_ref().map(|r| r.uses.clone()),
    })
}

fn document(rb: &Runbook) -> serde_json::Value {
    let params: serde_json::Map<String, serde_json::Value> = rb
        .params
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                json!({
                    "type": p.kind.to_string(),
                    "default": p.default,
                    "required": p.default.is_none(),
                    "description": p.description,
                }),
            )
        })
        .collect();
    json!({
        "runbook": rb.name,
        "description": rb.description,
        "params": params,
        "keep_going": rb.keep_going,
        "overlap": overlap(rb.overlap),
        "steps": rb.steps.iter().map(step_json).collect::<Vec<_>>(),
        "handlers": rb.handlers.iter().map(step_json).collect::<Vec<_>>(),
        "incident": {
            "severity": rb.incident.severity.as_str(),
            "tiers": rb.incident.tiers.iter().map(|t| json!({
                "name": t.name,
                "when": t.after.describe(),
                "steps": t.steps.iter().map(step_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
    })
}

fn step_line(s: &Step) -> String {
    let mut notes = Vec::new();
    if s.on_failure != OnFailure::Abort {
        notes.push(format!("on failure: {}", on_failure(&s.on_failure)));
    }
    if let Some(w) = &s.watch {
        notes.push(format!("watch {}", watch(w)));
    }
    if s.retry.retries > 0 {
        notes.push(format!("{} retries", s.retry.retries));
    }
    if let Some(c) = &s.when {
        notes.push(format!("when {c}"));
    }
    if let Some(r) = &s.rollback {
        notes.push(format!("rollback: {}", r.uses));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("  ({})", notes.join("; "))
    };
    format!("  {:<20} {}{notes}\n", s.id, s.uses)
}

fn text(rb: &Runbook) -> String {
    let mut out = format!("runbook {}\n", rb.name);
    if let Some(d) = &rb.description {
        out += &format!("  {d}\n");
    }
    let usage: Vec<String> = rb
        .params
        .iter()
        .map(|(k, p)| match &p.default {
            None => format!("--var {k}=VALUE"),
            Some(_) => format!("[--var {k}=VALUE]"),
        })
        .collect();
    out += &format!("\nusage: runcap run {} {}\n", rb.name, usage.join(" "));
    if !rb.params.is_empty() {
        out += "\nparameters:\n";
        for (k, p) in &rb.params {
            let default = match &p.default {
                Some(d) => format!(" (default {d})"),
                None => " (required)".to_string(),
            };
            out += &format!("  {k:<20} {}{default}\n", p.kind);
            if let Some(d) = &p.description {
                out += &format!("  {:<20} {d}\n", "");
            }
        }
    }
    out += &format!(
        "\nsteps{}:\n",
        if rb.keep_going {
            " (keep going: every step runs; the run fails if any failed)"
        } else {
            ""
        }
    );
    for s in &rb.steps {
        out += &step_line(s);
    }
    if !rb.handlers.is_empty() {
        out += "\nhandlers:\n";
        for s in &rb.handlers {
            out += &step_line(s);
        }
    }
    out += &format!(
        "\noverlap: {} (a run started while another of this runbook is under way {})\n",
        overlap(rb.overlap),
        match rb.overlap {
            Overlap::Wait => "waits for it",
            Overlap::Refuse => "is refused with exit code 75",
        }
    );
    let i = &rb.incident;
    out += &format!("incident: severity {}", i.severity.as_str());
    for t in &i.tiers {
        out += &format!(
            "; {} {} ({} steps)",
            t.name,
            t.after.describe(),
            t.steps.len()
        );
    }
    out += "\n";
    out
}
