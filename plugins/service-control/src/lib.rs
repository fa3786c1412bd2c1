//! `service-control`: restart (or start, stop, check) a service the manifest grants, then
//! wait until its health URL answers, and report how long recovery took.
//!
//! ```toml
//! [[runbooks.service-down.steps]]
//! id = "restart"
//! uses = "service-control"
//! with = { service = "api", action = "restart", healthy_within = "30s" }
//! ```
//!
//! The health URL defaults to the service's `health_url` in the manifest; polling it
//! needs an http grant for that URL.

use std::time::{Duration, Instant};

use runcap_sdk::{
    ActionError, Context, HttpError, HttpRequest, HumanDuration, Outcome, ServiceError,
    ServiceState, ServiceStatus, Verb,
};

/// What to do to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Restart,
    Start,
    Stop,
    Status,
}

/// Params of one action.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A service under `[services]` that this plugin is granted.
    #[schemars(extend("x-runcap-grant" = "services"))]
    pub service: String,
    /// restart (default), start, stop or status.
    #[serde(default = "restart")]
    pub action: Action,
    /// URL to poll after start/restart (default: the service's `health_url`).
    pub health_url: Option<String>,
    /// How long the service may take to answer 2xx after the action (default "30s").
    #[serde(default = "thirty_seconds")]
    pub healthy_within: HumanDuration,
    /// Delay between health checks (default "200ms").
    #[serde(default = "two_hundred_ms")]
    pub poll_interval: HumanDuration,
    /// Skip waiting for health after start/restart.
    #[serde(default)]
    pub no_wait: bool,
}

fn restart() -> Action {
    Action::Restart
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration::secs(30)
}
fn two_hundred_ms() -> HumanDuration {
    HumanDuration::millis(200)
}

/// The result of waiting for health.
#[derive(Debug, PartialEq)]
pub enum Health {
    Healthy { after: Duration, checks: u32 },
    NotHealthy { last: String, checks: u32 },
}

/// Polls `url` until it answers 2xx or `within` passes. `now` and `sleep` are injected
/// so the loop is tested natively without waiting.
pub fn wait_healthy(
    ctx: &Context,
    url: &str,
    within: Duration,
    interval: Duration,
    started: Instant,
    sleep: &dyn Fn(Duration),
) -> Result<Health, ActionError> {
    let mut checks = 0;
    loop {
        checks += 1;
        let left = within.saturating_sub(started.elapsed());
        let req = HttpRequest::get(url)
            .timeout(left.clamp(Duration::from_millis(100), Duration::from_secs(5)));
        let last = match ctx.http(&req) {
            Ok(r) if (200..300).contains(&r.status) => {
                return Ok(Health::Healthy {
                    after: started.elapsed(),
                    checks,
                });
            }
            Ok(r) => format!("{} answered {}", url, r.status),
            Err(HttpError::Denied(m)) => return Err(ActionError::Denied(m)),
            Err(e) => format!("{url}: {e}"),
        };
        if started.elapsed() + interval > within {
            return Ok(Health::NotHealthy { last, checks });
        }
        sleep(interval);
    }
}

fn describe(s: &ServiceStatus) -> String {
    match s.pid {
        Some(pid) => format!("pid {pid}"),
        None => s.state.as_str().to_string(),
    }
}

/// Which process serves the service once its health URL answers.
enum Serving {
    /// The one this action started.
    Ours,
    /// A newer instance a later start or restart put in its place.
    Newer(u32),
    /// None that runcap started: the health URL is answered by something else.
    Gone(String),
}

/// Checks that a process runcap started serves, waiting (within the action's health
/// window) through a later restart that has stopped this one and not yet started its own.
fn serving_instance(
    ctx: &Context,
    service: &str,
    ours: Option<u32>,
    within: Duration,
    started: Instant,
) -> Serving {
    loop {
        match ctx.service(service, Verb::Status) {
            Ok(now) if now.state == ServiceState::Running => {
                return match (now.pid, ours) {
                    (Some(p), Some(o)) if p != o => Serving::Newer(p),
                    _ => Serving::Ours,
                };
            }
            Ok(now) if started.elapsed() >= within => return Serving::Gone(now.detail),
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            // The status cannot be read: nothing says the start failed.
            Err(_) => return Serving::Ours,
        }
    }
}

/// The action.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    let within = p.healthy_within.get();
    let interval = p.poll_interval.get();
    let verb = match p.action {
        Action::Restart => Verb::Restart,
        Action::Start => Verb::Start,
        Action::Stop => Verb::Stop,
        Action::Status => Verb::Status,
    };
    let started = Instant::now();
    let status = match ctx.service(&p.service, verb) {
        Ok(s) => s,
        Err(ServiceError::Denied(m)) => return Err(ActionError::Denied(m)),
        Err(ServiceError::Failed(m)) => {
            return Ok(
                Outcome::fail(format!("{} {} failed: {m}", verb.as_str(), p.service))
                    .detail("service", p.service.as_str())
                    .detail("action", verb.as_str())
                    .detail("error", m),
            );
        }
    };
    let base = |o: Outcome| {
        o.detail("service", p.service.as_str())
            .detail("action", verb.as_str())
            .detail("state", status.state.as_str())
            .detail("pid", status.pid)
            .detail("last_exit_code", status.last_exit_code)
            .detail("driver", status.detail.as_str())
    };
    if ctx.dry_run && verb != Verb::Status {
        return Ok(base(Outcome::ok(format!(
            "dry run: would {} {}",
            verb.as_str(),
            p.service
        ))));
    }
    match p.action {
        Action::Status => Ok(base(match status.state {
            ServiceState::Running => Outcome::ok(format!("{} is {}", p.service, describe(&status))),
            ServiceState::Stopped => {
                Outcome::fail(format!("{} is stopped: {}", p.service, status.detail))
            }
            ServiceState::Unknown => {
                Outcome::warn(format!("{} state unknown: {}", p.service, status.detail))
            }
        })),
        Action::Stop => Ok(base(Outcome::ok(format!(
            "{}: {}",
            p.service, status.detail
        )))),
        Action::Start | Action::Restart => {
            let did = format!(
                "{} {}",
                if p.action == Action::Start {
                    "started"
                } else {
                    "restarted"
                },
                p.service
            );
            let url = p.health_url.clone().or(status.health_url.clone());
            let Some(url) = url.filter(|_| !p.no_wait) else {
                let o = if p.no_wait {
                    Outcome::ok(format!("{did}: {}", describe(&status)))
                } else {
                    Outcome::warn(format!(
                        "{did} but cannot verify it: no health_url for the service"
                    ))
                };
                return Ok(base(o));
            };
            let health = wait_healthy(ctx, &url, within, interval, started, &|d| {
                std::thread::sleep(d)
            })?;
            // A health URL answered by some other process (an old instance holding the port)
            // must not pass for a successful start. A later start or restart (from another
            // runbook, a person, cron) may have replaced this one's process: what the
            // operator asked for — the service up — then holds, through the newer instance.
            let mut superseded = None;
            if let Health::Healthy { .. } = health {
                match serving_instance(ctx, &p.service, status.pid, within, started) {
                    Serving::Ours => {}
                    Serving::Newer(pid) => superseded = Some(pid),
                    Serving::Gone(detail) => {
                        return Ok(base(Outcome::fail(format!(
                            "{did}, and {url} answers, but the started process is gone ({detail}): another process may hold its port"
                        ))));
                    }
                }
            }
            Ok(base(match health {
                Health::Healthy { after, checks } => {
                    let ms = after.as_secs_f64() * 1000.0;
                    let note = match superseded {
                        Some(pid) => format!(
                            "; a later start replaced {} with pid {pid}, which serves",
                            describe(&status)
                        ),
                        None => String::new(),
                    };
                    Outcome::ok(format!(
                        "{did} ({}), healthy after {:.0} ms{note}",
                        describe(&status),
                        ms
                    ))
                    .detail("superseded_by", superseded)
                    .detail("health_url", url.as_str())
                    .detail("time_to_healthy_ms", ms)
                    .detail("health_checks", checks)
                    .metric("time_to_healthy_ms", ms)
                }
                Health::NotHealthy { last, checks } => Outcome::fail(format!(
                    "{did} but it was not healthy within {}: {last}",
                    humantime::format_duration(within)
                ))
                .detail("health_url", url.as_str())
                .detail("health_checks", checks)
                .detail("last_health", last),
            }))
        }
    }
}

runcap_sdk::plugin!(
    name: "service-control",
    description: "Restarts, starts, stops or checks a granted service and waits for its health URL.",
    run: run
);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::testing::MockHost;
    use runcap_sdk::{HttpResponse, Status};

    fn running() -> ServiceStatus {
        ServiceStatus {
            name: "api".into(),
            state: ServiceState::Running,
            pid: Some(42),
            uptime_ms: Some(5),
            last_exit_code: Some(137),
            health_url: Some("http://127.0.0.1:1/health".into()),
            detail: "restarted".into(),
        }
    }

    fn params(action: Action) -> Params {
        Params {
            service: "api".into(),
            action,
            health_url: None,
            healthy_within: HumanDuration::secs(2),
            poll_interval: HumanDuration::millis(1),
            no_wait: false,
        }
    }

    fn answer(status: u16) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status,
            ..Default::default()
        })
    }

    #[test]
    fn restarts_then_waits_for_health() {
        let host = MockHost::new()
            .answer_service(Ok(running()))
            .answer_http(answer(503))
            .answer_http(Err(HttpError::Connection("refused".into())))
            .answer_http(answer(200));
        let out = run(&host.context(), params(Action::Restart)).unwrap();
        assert_eq!(out.status, Status::Ok, "{out:?}");
        assert_eq!(out.details["health_checks"], 3);
        assert_eq!(out.details["last_exit_code"], 137);
        assert!(out.metrics.iter().any(|(n, _)| n == "time_to_healthy_ms"));
        assert_eq!(
            host.service_calls.borrow()[0],
            ("api".to_string(), Verb::Restart)
        );
        assert_eq!(host.requests.borrow()[0].url, "http://127.0.0.1:1/health");
    }

    #[test]
    fn fails_when_it_never_gets_healthy() {
        let mut host = MockHost::new().answer_service(Ok(running()));
        for _ in 0..10_000 {
            host = host.answer_http(answer(503));
        }
        let mut p = params(Action::Restart);
        p.healthy_within = HumanDuration::millis(30);
        let out = run(&host.context(), p).unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.summary.contains("not healthy within 30ms"),
            "{}",
            out.summary
        );
    }

    #[test]
    fn denial_and_driver_failure_are_told_apart() {
        let host = MockHost::new().answer_service(Err(ServiceError::Denied("nope".into())));
        assert!(matches!(
            run(&host.context(), params(Action::Restart)),
            Err(ActionError::Denied(_))
        ));
        let host =
            MockHost::new().answer_service(Err(ServiceError::Failed("exited at once".into())));
        let out = run(&host.context(), params(Action::Start)).unwrap();
        assert_eq!(out.status, Status::Fail);
    }

    #[test]
    fn dry_run_does_not_wait() {
        let host = MockHost::new().answer_service(Ok(running()));
        let mut ctx = host.context();
        ctx.dry_run = true;
        let out = run(&ctx, params(Action::Restart)).unwrap();
        assert_eq!(out.summary, "dry run: would restart api");
        assert!(host.requests.borrow().is_empty());
    }

    #[test]
    fn status_maps_state_to_verdict() {
        let mut stopped = running();
        stopped.state = ServiceState::Stopped;
        let host = MockHost::new().answer_service(Ok(stopped));
        assert_eq!(
            run(&host.context(), params(Action::Status)).unwrap().status,
            Status::Fail
        );
    }
}
