//! Runs each scheduled runbook when it is due: one task per runbook. `every` schedules
//! run once at start, then keep a fixed rate (a late tick is not followed by a burst of
//! catch-up runs); `cron` schedules compute their next time in their time zone. A run
//! due while the last one is under way is skipped (and counted) or queued, as the
//! schedule says. Runs missed while the server was down are reported at start, never
//! replayed.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::config::{Overlap, Schedule, When};
use super::{Origin, RunRequest, Server};

/// Starts a task for every scheduled runbook; they end when the server closes.
pub fn start(server: &Arc<Server>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (name, rb) in &server.env.runbooks {
        let Some(schedule) = rb.schedule.clone() else {
            continue;
        };
        report_missed(server, name, &schedule);
        let server = server.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            run_schedule(server, name, schedule).await;
        }));
    }
    tasks.extend(super::escalation::start(server));
    tasks
}

async fn run_schedule(server: Arc<Server>, name: String, schedule: Schedule) {
    let mut closing = server.closing.subscribe();
    // An `every` schedule runs once at start, then at its rate.
    let mut due = match &schedule.when {
        When::Every(every) => Instant::now()
            .checked_sub(*every)
            .unwrap_or_else(Instant::now),
        When::Cron(..) => Instant::now(),
    };
    loop {
        due = match &schedule.when {
            When::Every(every) => {
                let mut next = due + *every;
                // Behind by more than a period: the next tick is the next one ahead.
                let now = Instant::now();
                while next + *every <= now {
                    next += *every;
                }
                next
            }
            When::Cron(..) => match schedule.next_in(chrono::Utc::now()) {
                Some(d) => Instant::now() + d,
                None => {
                    tracing::warn!(runbook = %name, "the schedule has no next time; it stops");
                    return;
                }
            },
        };
        let jitter = if schedule.jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..schedule.jitter)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due + jitter) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        server.metrics.schedule_lag(
            &name,
            Instant::now().saturating_duration_since(due + jitter),
        );
        let skip = schedule.overlap == Overlap::Skip;
        let req = RunRequest {
            runbook: &name,
            dry_run: false,
            vars: &[],
            origin: Origin::Schedule,
            skip_if_running: skip,
            trigger: None,
            run_id: None,
            notify: None,
        };
        match server.start_run(req) {
            Ok(Some(_)) => {}
            Ok(None) => {
                server.metrics.skipped(&name);
                tracing::info!(runbook = %name, "skipped: the last scheduled run is still under way");
            }
            Err(e) => {
                tracing::warn!(runbook = %name, "scheduled run not started: {e}");
                if server.closing() {
                    return;
                }
            }
        }
    }
}

/// Says when runs were due while no server was running, from the runbook's last run.
fn report_missed(server: &Server, name: &str, schedule: &Schedule) {
    let Ok(last) = server.store.history(Some(name), 1) else {
        return;
    };
    let Some(last) = last.first() else { return };
    let now = chrono::Utc::now();
    let Some(last_at) = chrono::DateTime::from_timestamp_millis(last.started_at) else {
        return;
    };
    let missed = match &schedule.when {
        When::Every(every) => {
            let gap = (now - last_at).to_std().unwrap_or_default();
            (gap.as_secs_f64() / every.as_secs_f64()).floor() as u64
        }
        When::Cron(cron, tz) => cron
            .iter_after(last_at.with_timezone(tz))
            .take_while(|t| t.with_timezone(&chrono::Utc) < now)
            .take(10_000)
            .count() as u64,
    };
    if missed > 0 {
        let line = format!(
            "runbook `{name}` ({}) missed {missed} scheduled run(s) since its last run at {}; they are not replayed",
            schedule.text,
            last_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        // One report, through the log (shown at the default level).
        tracing::warn!("{line}");
    }
}
