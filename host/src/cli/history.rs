//! `runcap history` and `runcap show`: what ran, from the store.

use crate::cli::run::format_ms;
use crate::cli::{EnvArgs, StateArgs};

/// Formats milliseconds since the epoch as a UTC timestamp.
pub(crate) fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

pub fn history(
    env: &EnvArgs,
    state: &StateArgs,
    runbook: Option<&str>,
    limit: usize,
    json: bool,
) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::note_leftovers(&store, env);
    let runs = match store.history(runbook, limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let runs = match super::redacted(
        &*match super::output_redactor(env) {
            Ok(r) => r,
            Err(code) => return code,
        },
        &runs,
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return 0;
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", store.path().display());
        return 0;
    }
    print_runs(&runs, None);
    0
}

/// The history table; with `hosts` (one per run), a host column first.
pub(crate) fn print_runs(runs: &[crate::store::RunRow], hosts: Option<&[String]>) {
    let host_width = hosts
        .map(|h| h.iter().map(|h| h.len()).max().unwrap_or(4).max(4) + 1)
        .unwrap_or(0);
    let host_of = |i: usize| {
        hosts
            .and_then(|h| h.get(i))
            .map(|h| format!("{h:<host_width$}"))
            .unwrap_or_default()
    };
    println!(
        "{}{:<18} {:<20} {:<20} {:<11} {:>9}  summary",
        if hosts.is_some() {
            format!("{:<host_width$}", "host")
        } else {
            String::new()
        },
        "run",
        "started (UTC)",
        "runbook",
        "status",
        "took"
    );
    for (i, r) in runs.iter().enumerate() {
        let took = r
            .finished_at
            .map(|f| format_ms((f - r.started_at) as f64))
            .unwrap_or_else(|| "-".into());
        let mut status = if r.dry_run {
            format!("{} (dry)", r.status)
        } else {
            r.status.to_string()
        };
        if !r.tampered.is_empty() {
            status += " ⚠ EDITED";
        }
        println!(
            "{}{:<18} {:<20} {:<20} {:<11} {:>9}  {}",
            host_of(i),
            r.id,
            time(r.started_at),
            r.runbook,
            status,
            took,
            r.summary
        );
    }
}

pub fn show(env: &EnvArgs, state: &StateArgs, run_id: &str, json: bool) -> u8 {
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::note_leftovers(&store, env);
    let run = match store.run(run_id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!(
                "error: no single run matches `{run_id}` in {}; `runcap history` lists them",
                store.path().display()
            );
            return 2;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let run = match super::redacted(
        &*match super::output_redactor(env) {
            Ok(r) => r,
            Err(code) => return code,
        },
        &run,
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&run).unwrap_or_default());
        return 0;
    }
    let r = &run.run;
    println!(
        "run {} · runbook {} · environment {}{}",
        r.id,
        r.runbook,
        r.environment,
        if r.dry_run { " · dry run" } else { "" }
    );
    println!(
        "status {} · started {} · {}",
        r.status,
        time(r.started_at),
        r.summary
    );
    println!("manifest {}", run.manifest);
    for problem in &r.tampered {
        println!("⚠ this record does not match the audit chain: {problem}");
    }
    for s in &run.steps {
        println!();
        let failure = s
            .failure_kind
            .map(|k| format!(" ({k})"))
            .unwrap_or_default();
        let took = s.duration_ms.map(format_ms).unwrap_or_default();
        println!(
            "[{}] {} · {} · {}{failure} · {} attempt(s) · {took}",
            s.phase, s.id, s.uses, s.status, s.attempts
        );
        if let Some(problem) = &s.tampered {
            println!("  ⚠ {problem}: the audit chain sealed something else");
        }
        if !s.summary.is_empty() {
            println!("  {}", s.summary);
        }
        for c in &s.calls {
            println!(
                "  call {} {} {} → {}{}",
                c["capability"].as_str().unwrap_or(""),
                c["operation"].as_str().unwrap_or(""),
                c["target"].as_str().unwrap_or(""),
                c["decision"].as_str().unwrap_or(""),
                c["reason"]
                    .as_str()
                    .or(c["result"].as_str())
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            );
        }
        for l in &s.logs {
            println!(
                "  log {} {}",
                l["level"].as_str().unwrap_or(""),
                l["message"].as_str().unwrap_or("")
            );
        }
        for (name, text) in [("stdout", &s.stdout), ("stderr", &s.stderr)] {
            for line in text.lines().take(20) {
                println!("  {name} {line}");
            }
        }
    }
    if !run.rollbacks.is_empty() {
        println!();
        for rb in &run.rollbacks {
            println!(
                "rollback {} ({}) {}",
                rb["step"].as_str().unwrap_or(""),
                rb["uses"].as_str().unwrap_or(""),
                rb["state"].as_str().unwrap_or("")
            );
        }
    }
    0
}
