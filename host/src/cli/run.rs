//! `runcap run`: run a runbook, with live progress or one JSON document.

use std::io::{IsTerminal, Write};

use crate::cli::EnvArgs;
use crate::runbook::{self, Progress, RunOptions, RunReport, StepReport};
use crate::runner::Status;

pub async fn run(args: &EnvArgs, name: &str, json: bool, dry_run: bool) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let Some(rb) = env.runbooks.get(name) else {
        let names: Vec<&str> = env.runbooks.keys().map(String::as_str).collect();
        eprintln!(
            "error: no runbook `{name}` in {}; it has: {}",
            env.file.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        return 2;
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let plugins = runbook::load_plugins(&runtime, &env, rb);
    let options = RunOptions { dry_run };
    if !json {
        println!(
            "runbook {} · environment {}{}",
            rb.name,
            env.name,
            if dry_run { " · dry run" } else { "" }
        );
    }
    let report = runbook::run(&runtime, &env, rb, &plugins, &options, |p| {
        if !json {
            print_progress(p)
        }
    })
    .await;
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return 2;
            }
        }
    } else {
        print_summary(&report);
    }
    match report.status {
        Status::Ok | Status::Warn => 0,
        Status::Fail => 1,
    }
}

fn print_progress(p: Progress<'_>) {
    let mut out = std::io::stdout().lock();
    match p {
        Progress::Started { step, uses } => {
            if out.is_terminal() {
                let _ = write!(out, "  … {step} ({uses})\r");
            }
        }
        Progress::Finished { step } => {
            let clear = if out.is_terminal() { "\x1b[2K" } else { "" };
            let _ = writeln!(out, "{clear}{}", step_line(step));
            if let Some(f) = &step.action.failure
                && !step.action.stderr.text.is_empty()
                && matches!(f.kind, crate::runner::FailureKind::Trap)
            {
                for line in step.action.stderr.text.lines().take(5) {
                    let _ = writeln!(out, "      stderr: {line}");
                }
            }
        }
    }
    let _ = out.flush();
}

/// One line per finished step: symbol, status, id, duration, summary.
pub fn step_line(step: &StepReport) -> String {
    let a = &step.action;
    let (mark, word) = match (a.status, &a.failure) {
        (Status::Ok, _) => ("✔", "ok".to_string()),
        (Status::Warn, _) => ("!", "warn".to_string()),
        (Status::Fail, Some(f)) => ("✘", f.kind.as_str().to_string()),
        (Status::Fail, None) => ("✘", "fail".to_string()),
    };
    let summary = match &a.failure {
        Some(f) => f.message.clone(),
        None => a.summary.clone(),
    };
    format!(
        "  {mark} {word:<14} {:<16} {:>9}  {summary}",
        step.id,
        format_ms(a.duration_ms)
    )
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn print_summary(r: &RunReport) {
    let count = |s: Status| r.steps.iter().filter(|x| x.action.status == s).count();
    println!(
        "{} steps: {} ok, {} warn, {} failed · {} · run {}",
        r.steps.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        format_ms(r.duration_ms),
        r.run_id
    );
}
