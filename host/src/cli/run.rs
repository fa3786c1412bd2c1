//! `runcap run`: run a runbook, with live progress or one JSON document, recording it
//! in the store. Ctrl-C or SIGTERM stops the running action and rolls back.

use std::io::{IsTerminal, Write};

use crate::cli::{EnvArgs, StateArgs};
use crate::runbook::{
    self, Phase, Progress, RunOptions, RunReport, RunStatus, StepReport, StopLevel,
};
use crate::runner::Status;

/// What a run starts with besides its runbook: the engine and the store, being built and
/// opened since the command began, and for `runcap call` the tape of its capability calls.
pub(crate) struct Start {
    pub engine: super::EngineBuild,
    pub store: super::StoreOpen,
    pub tape: Option<crate::caps::tape::SharedTape>,
}

/// How a run was asked for on the command line.
pub struct How {
    /// One JSON document instead of live progress.
    pub json: bool,
    pub dry_run: bool,
    /// `NAME=VALUE` for the runbook's parameters.
    pub vars: Vec<String>,
}

pub async fn run(args: &EnvArgs, state: &StateArgs, name: &str, how: &How) -> u8 {
    let engine = super::EngineBuild::start(super::Workload::OneAtATime);
    let store = super::StoreOpen::start(args, state);
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let Some(rb) = find_runbook(&env, name) else {
        return 2;
    };
    engine.preload(
        runbook::plugins_used(rb)
            .into_iter()
            .filter_map(|p| env.plugins.get(p).map(|spec| spec.sha256.clone()))
            .collect(),
    );
    let params = match crate::manifest::params::resolve_args(&rb.name, &rb.params, &how.vars) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "error: {e}\n  = help: `runcap describe {name} --env {}` lists the parameters",
                args.env.display()
            );
            return 2;
        }
    };
    let start = Start {
        engine,
        store,
        tape: None,
    };
    run_runbook(args, state, &env, rb, params.into(), how, start).await
}

/// Runs `rb` of `env` with its resolved `params`, recorded in the store like any run;
/// `start` holds the engine being built and the tape that records or replays its
/// capability calls (`runcap call`).
pub(crate) async fn run_runbook(
    args: &EnvArgs,
    state: &StateArgs,
    env: &crate::manifest::Environment,
    rb: &crate::manifest::Runbook,
    params: serde_json::Value,
    how: &How,
    start: Start,
) -> u8 {
    let Start {
        engine,
        store,
        tape,
    } = start;
    let (json, dry_run) = (how.json, how.dry_run);
    // What a runcap that died left behind is dealt with first; if something could not be
    // undone the run still goes ahead, and its exit code says so.
    let (store, recovered, runtime, resources) =
        match super::for_runs(env, args, state, engine, store).await {
            Ok(set) => set,
            Err(code) => return code,
        };
    start_drill_proxies(env, rb, &resources).await;
    let plugins = runbook::load_plugins(&runtime, env, &resources, rb);
    let (stopper, stop) = runbook::stop::channel();
    let signals = tokio::spawn(stop_on_signals(stopper));
    let run_id = runbook::new_run_id();
    let lock = runbook::lock::acquire(
        &super::state_dir(args, state),
        &rb.name,
        &run_id,
        rb.overlap,
        &stop,
        |holder| {
            eprintln!(
                "waiting: runbook `{}` is already running ({holder})…",
                rb.name
            )
        },
    )
    .await;
    let _lock = match lock {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            signals.abort();
            return match e {
                runbook::lock::LockError::Stopped { .. } => 130,
                runbook::lock::LockError::Busy { .. } => BUSY,
                runbook::lock::LockError::Io { .. } => 2,
            };
        }
    };
    let mut context = serde_json::Map::new();
    context.insert("params".into(), params);
    let options = RunOptions {
        dry_run,
        store: Some(store),
        stop,
        faults: Some(resources.faults.clone()),
        run_id: Some(run_id),
        context,
        ad_hoc: rb.name.starts_with(super::call::RUN_PREFIX),
        tape,
        recorded: None,
    };
    if !json {
        println!(
            "runbook {} · environment {}{}",
            rb.name,
            env.name,
            if dry_run { " · dry run" } else { "" }
        );
    }
    let report = runbook::run(&runtime, env, rb, &plugins, &options, |p| {
        if !json {
            print_progress(p)
        }
    })
    .await;
    // A run that only read keeps its last records in memory for a moment; the command
    // says it is done only once they are committed.
    if let Some(store) = &options.store {
        store.sync();
    }
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
    let code = exit_code(&report, args);
    // The command ends here: the engine's pools and its linker of every host function are
    // left for the process's exit to unmap, not taken apart piece by piece first.
    std::mem::forget(runtime);
    if !recovered && code == 0 {
        eprintln!("error: something a previous runcap left behind could not be undone (see above)");
        return 1;
    }
    code
}

/// Escalates the run's stop on each Ctrl-C or SIGTERM: first the current action and
/// then, on a second signal, the rollbacks too.
async fn stop_on_signals(stopper: runbook::stop::Stopper) {
    loop {
        wait_for_signal().await;
        match stopper.escalate() {
            StopLevel::Stop => eprintln!(
                "\nstopping: cancelling the current action and running the rollbacks (a second Ctrl-C stops them too)…"
            ),
            _ => eprintln!(
                "\nstopping the rollbacks too: those not done stay pending for `runcap recover`…"
            ),
        }
    }
}

/// A run's exit code: its status's, or 2 when a plugin it uses could not be loaded (a
/// configuration error, not a failed check).
fn exit_code(report: &runbook::RunReport, args: &EnvArgs) -> u8 {
    let unloadable: std::collections::BTreeSet<&str> = report
        .steps
        .iter()
        .filter(|s| {
            s.action
                .failure
                .as_ref()
                .is_some_and(|f| f.kind == crate::runner::FailureKind::Load)
        })
        .map(|s| s.uses.as_str())
        .collect();
    if unloadable.is_empty() || report.status == RunStatus::Cancelled {
        return report.status.exit_code();
    }
    eprintln!(
        "error: plugin {} could not be loaded; `runcap check --env {}` reports why before a run",
        unloadable.into_iter().collect::<Vec<_>>().join(", "),
        args.env.display()
    );
    2
}

/// The exit code of a run refused because another run of its runbook is under way
/// (`overlap = "refuse"`): EX_TEMPFAIL, "try again later", apart from a failed run (1)
/// and a configuration error (2).
pub const BUSY: u8 = 75;

/// The runbook named on the command line, or `None` after saying which ones there are.
pub(crate) fn find_runbook<'e>(
    env: &'e crate::manifest::Environment,
    name: &str,
) -> Option<&'e crate::manifest::Runbook> {
    let rb = env.runbooks.get(name);
    if rb.is_none() {
        super::say_unknown("runbook", name, env, env.runbooks.keys());
    }
    rb
}

/// Starts the drill proxies this runbook's fault grants name, and only those: a runbook
/// that injects no network fault starts no process. Proxies started now are left running
/// on purpose (the drill's services are reached through them), and the output says so.
async fn start_drill_proxies(
    env: &crate::manifest::Environment,
    rb: &crate::manifest::Runbook,
    resources: &crate::caps::Resources,
) {
    use crate::caps::faults::{Faults, FaultsGrant};
    use crate::chaos::Kind;
    let used: std::collections::BTreeSet<&str> = rb
        .steps
        .iter()
        .chain(&rb.handlers)
        .chain(rb.incident.steps())
        .flat_map(|s| std::iter::once(s).chain(s.rollback.as_deref()))
        .filter_map(|s| env.plugins.get(&s.uses))
        .filter_map(|p| p.grants.get::<Faults, FaultsGrant>())
        .flat_map(|g| {
            g.kinds
                .iter()
                .filter(|(k, _)| matches!(k, Kind::Latency | Kind::Drop | Kind::Partition))
                .flat_map(|(_, kg)| kg.targets.iter().map(String::as_str))
        })
        .collect();
    let (started, problems) = resources.proxies.ensure(used).await;
    for problem in problems {
        eprintln!("warning: {problem}");
    }
    for name in started {
        let at = resources
            .proxies
            .listen(&name)
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        eprintln!(
            "note: started drill proxy {name}{at}; it keeps running after this run (stop it with `runcap proxies --stop --env {}`)",
            env.file.display()
        );
    }
}

/// Resolves on the first Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub(crate) fn print_progress(p: Progress<'_>) {
    let mut out = std::io::stdout().lock();
    let tty = out.is_terminal();
    match p {
        Progress::Started { step, uses, phase } => {
            if tty {
                let what = if phase == Phase::Main {
                    String::new()
                } else {
                    format!("{} ", phase.as_str())
                };
                let _ = write!(out, "  … {what}{step} ({uses})\r");
            }
        }
        Progress::Retrying {
            step,
            attempt,
            delay,
            reason,
        } => {
            let clear = if tty { "\x1b[2K" } else { "" };
            let _ = writeln!(
                out,
                "{clear}  ↻ retry    {step:<16} attempt {attempt} in {}: {reason}",
                humantime::format_duration(std::time::Duration::from_millis(
                    delay.as_millis() as u64
                ))
            );
        }
        Progress::Watching {
            step,
            check,
            status,
            summary,
        } => {
            let clear = if tty { "\x1b[2K" } else { "" };
            let _ = writeln!(
                out,
                "{clear}  ⋯ watch    {step:<16} check {check} {}: {summary}",
                status.as_str()
            );
        }
        Progress::Finished { step } => {
            let clear = if tty { "\x1b[2K" } else { "" };
            let _ = writeln!(out, "{clear}{}", step_line(step));
            if let Some(f) = &step.action.failure
                && !step.action.stderr.text.is_empty()
                && matches!(f.kind, crate::runner::FailureKind::Trap)
            {
                for line in step
                    .action
                    .stderr
                    .text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(5)
                {
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
        (Status::Skipped, _) => ("-", "skipped".to_string()),
        (Status::Ok, _) => ("✔", "ok".to_string()),
        (Status::Warn, _) => ("!", "warn".to_string()),
        (Status::Fail, Some(f)) => ("✘", f.kind.as_str().to_string()),
        (Status::Fail, None) => ("✘", "fail".to_string()),
    };
    let summary = match &a.failure {
        Some(f) => f.message.as_str(),
        None => a.summary.as_str(),
    };
    // A message of several lines (a stack trace) stays under its step.
    let summary = summary.trim_end().replace('\n', "\n      ");
    let mut notes = Vec::new();
    if step.phase != Phase::Main {
        notes.push(step.phase.as_str().to_string());
    }
    if step.attempts > 1 {
        notes.push(format!("{} attempts", step.attempts));
    }
    if step.continued {
        notes.push("continued".into());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", notes.join(", "))
    };
    let duration = if a.status == Status::Skipped {
        String::new()
    } else {
        format_ms(a.duration_ms)
    };
    format!(
        "  {mark} {word:<14} {:<16} {duration:>9}  {summary}{notes}",
        step.id
    )
}

pub(crate) fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn print_summary(r: &RunReport) {
    let main: Vec<&StepReport> = r.steps.iter().filter(|s| s.phase == Phase::Main).collect();
    let count = |s: Status| main.iter().filter(|x| x.action.status == s).count();
    let rolled_back = r
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Rollback)
        .count();
    let mut line = format!(
        "{}: {} step{}, {} ok, {} warn, {} failed, {} skipped",
        r.status.as_str(),
        main.len(),
        if main.len() == 1 { "" } else { "s" },
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skipped),
    );
    if rolled_back > 0 {
        line += &format!(", {rolled_back} rolled back");
    }
    line += &format!(" · {} · run {}", format_ms(r.duration_ms), r.run_id);
    println!("{line}");
    if let Some(i) = &r.incident {
        let what = match (i.status.as_str(), i.escalated_now) {
            (_, true) => format!("escalated after {} consecutive failures", i.failures),
            ("resolved", _) => "resolved".to_string(),
            _ if i.failures == 1 => "opened".to_string(),
            _ => format!("still open ({} consecutive failures)", i.failures),
        };
        println!("incident #{} ({}) {what}", i.id, i.severity);
    }
    for f in &r.reverted_faults {
        println!(
            "{} fault {} ({} on {}) reverted: {}",
            if f.ok { "↺" } else { "✘" },
            f.id,
            f.kind,
            f.target,
            f.result
        );
    }
    if r.status == RunStatus::Cancelled || r.rollbacks.pending > 0 || r.rollbacks.failed > 0 {
        println!("{}", rollback_line(r));
    }
}

/// What happened to the rollbacks, as it happened: run, failed, or left pending.
fn rollback_line(r: &RunReport) -> String {
    let b = &r.rollbacks;
    let what = if r.status == RunStatus::Cancelled {
        "the run was cancelled"
    } else {
        "the run stopped"
    };
    let total = b.done + b.failed + b.pending;
    if total == 0 {
        return format!("{what}; no completed step had a rollback");
    }
    let mut line = format!("{what}; {} of {total} rollbacks ran", b.done);
    if b.failed > 0 {
        line += &format!(", {} failed", b.failed);
    }
    if b.pending > 0 {
        line += &format!(
            ", {} pending: run them with `runcap recover {}`",
            b.pending, r.run_id
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{ActionReport, FailureKind};

    #[test]
    fn a_message_of_several_lines_stays_under_its_step() {
        let step = StepReport {
            id: "probe".into(),
            uses: "js-check".into(),
            phase: Phase::Main,
            attempts: 1,
            continued: false,
            action: ActionReport::failed(
                FailureKind::PluginError,
                "SyntaxError: bad JSON\nrun@plugin/index.js:3:7\n".into(),
            ),
        };
        let line = step_line(&step);
        let lines: Vec<&str> = line.lines().collect();
        assert_eq!(lines.len(), 2, "{line}");
        assert!(lines[0].ends_with("SyntaxError: bad JSON"), "{line}");
        assert_eq!(lines[1], "      run@plugin/index.js:3:7");
    }
}
