//! `chaos`: drills in the style of Chaos Toolkit experiments.
//!
//! - `drill` (default): check the steady state (a URL answers 2xx), inject the fault,
//!   hold it while observing the service, revert it, and measure how long the system takes
//!   to return to its steady state; pass if that is within the RTO.
//! - `inject`: check the steady state and inject; later steps of the runbook do the
//!   recovery (say, a service-control restart) and a final `observe` step measures it.
//! - `observe`: wait for the steady state and report the time since `since_ms` (the
//!   injection time from the `inject` step's details) against the RTO.
//!
//! Every fault is reverted by the host when the run ends at the latest, whatever happens
//! to this plugin. In a dry run nothing is probed or injected; the outcome lists what
//! would have been.

use std::time::{Duration, Instant};

use runcap_sdk::{
    ActionError, Context, FaultKind, FaultSpec, HttpError, HttpRequest, HumanDuration, Outcome,
};

/// Which part of a drill to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drill,
    Inject,
    Observe,
}

/// The steady state: a URL that answers 2xx (or `status`) quickly enough.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    pub url: String,
    /// Expected status (default: any 2xx).
    pub status: Option<u16>,
    /// A response slower than this does not count as steady (default "2s").
    #[serde(default = "two_seconds")]
    pub within: HumanDuration,
}

/// The fault to inject.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultParams {
    pub kind: FaultKind,
    /// A service, proxy, directory or plugin, as the grant names it.
    pub target: String,
    /// How long the fault may last (default "30s"); the host reverts it then at the latest.
    #[serde(default = "thirty_seconds")]
    pub duration: HumanDuration,
    /// latency: added to each new connection, e.g. "300ms".
    pub latency: Option<HumanDuration>,
    /// drop: share of connections dropped, 0.0–1.0.
    pub drop_rate: Option<f32>,
    /// corrupt-file: the file inside the target directory.
    pub path: Option<String>,
    /// cert-expiry: days to move the target plugin's clock forward (default 365).
    pub days: Option<u32>,
}

/// Params of one drill action.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "drill")]
    pub action: Action,
    pub steady_state: Option<SteadyState>,
    pub fault: Option<FaultParams>,
    /// drill: how long to hold the fault while observing (default "2s").
    #[serde(default = "two_seconds")]
    pub hold: HumanDuration,
    /// The recovery time objective: steady state must be back within this of the injection.
    #[serde(default = "two_minutes")]
    pub rto: HumanDuration,
    /// Delay between probes (default "100ms").
    #[serde(default = "hundred_ms")]
    pub interval: HumanDuration,
    /// observe: when the fault began (milliseconds since the epoch), e.g.
    /// "{{ steps.inject.details.injected_at_ms }}".
    pub since_ms: Option<u64>,
    /// observe: the fault to revert once observation ends, e.g.
    /// "{{ steps.inject.details.fault_id }}" (otherwise it lasts until the run ends).
    pub fault_id: Option<String>,
}

fn drill() -> Action {
    Action::Drill
}
fn two_seconds() -> HumanDuration {
    HumanDuration::secs(2)
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration::secs(30)
}
fn two_minutes() -> HumanDuration {
    HumanDuration::secs(120)
}
fn hundred_ms() -> HumanDuration {
    HumanDuration::millis(100)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One look at the steady state.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub steady: bool,
    pub latency_ms: f64,
    pub what: String,
}

/// Probes the steady-state URL once.
pub fn probe(ctx: &Context, s: &SteadyState) -> Result<Probe, ActionError> {
    let within = s.within.get();
    let started = Instant::now();
    // A fresh connection each time, so faults on new connections (latency, drops) show.
    let req = HttpRequest::get(&s.url)
        .header("connection", "close")
        .timeout(within + Duration::from_secs(1));
    let result = ctx.http(&req);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(match result {
        Ok(r) => {
            let status_ok = match s.status {
                Some(want) => r.status == want,
                None => (200..300).contains(&r.status),
            };
            let fast = started.elapsed() <= within;
            Probe {
                steady: status_ok && fast,
                latency_ms,
                what: if !status_ok {
                    format!("answered {}", r.status)
                } else if !fast {
                    format!("answered {} but took {latency_ms:.0} ms", r.status)
                } else {
                    format!("answered {} in {latency_ms:.0} ms", r.status)
                },
            }
        }
        Err(HttpError::Denied(m)) => return Err(ActionError::Denied(m)),
        Err(e) => Probe {
            steady: false,
            latency_ms,
            what: e.to_string(),
        },
    })
}

/// What was seen while waiting for recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// Milliseconds from `since_ms` to the first steady probe, if it came in time.
    pub recovered_after_ms: Option<u64>,
    pub probes: u32,
    pub last: String,
}

/// Probes until the steady state holds again or `since_ms + rto` passes.
pub fn wait_recovery(
    ctx: &Context,
    s: &SteadyState,
    since_ms: u64,
    rto: Duration,
    interval: Duration,
) -> Result<Recovery, ActionError> {
    let deadline = since_ms + rto.as_millis() as u64;
    let mut probes = 0;
    loop {
        probes += 1;
        let p = probe(ctx, s)?;
        let now = now_ms();
        if p.steady {
            return Ok(Recovery {
                recovered_after_ms: Some(now.saturating_sub(since_ms)),
                probes,
                last: p.what,
            });
        }
        if now + interval.as_millis() as u64 > deadline {
            return Ok(Recovery {
                recovered_after_ms: None,
                probes,
                last: p.what,
            });
        }
        std::thread::sleep(interval);
    }
}

fn spec(f: &FaultParams) -> Result<FaultSpec, ActionError> {
    Ok(FaultSpec {
        kind: f.kind,
        target: f.target.clone(),
        duration: f.duration.get(),
        latency: f.latency.map(HumanDuration::get),
        drop_rate: f.drop_rate,
        path: f.path.clone(),
        days: f.days,
    })
}

fn verdict(o: Outcome, recovery: &Recovery, rto: Duration) -> Outcome {
    let rto_ms = rto.as_millis() as f64;
    let o = o
        .detail("rto_ms", rto_ms)
        .detail("recovery_probes", recovery.probes)
        .metric("rto_ms", rto_ms);
    match recovery.recovered_after_ms {
        Some(ms) => o
            .detail("time_to_recovery_ms", ms)
            .detail("met_rto", true)
            .metric("time_to_recovery_ms", ms as f64),
        None => o
            .detail("met_rto", false)
            .detail("last_probe", recovery.last.as_str()),
    }
}

/// The action.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    let rto = p.rto.get();
    let hold = p.hold.get();
    let interval = p.interval.get();
    let need_fault = || {
        p.fault
            .as_ref()
            .ok_or_else(|| ActionError::InvalidParams("this action needs `fault`".into()))
    };
    let need_steady = || {
        p.steady_state
            .as_ref()
            .ok_or_else(|| ActionError::InvalidParams("this action needs `steady_state`".into()))
    };

    if ctx.dry_run {
        let Some(f) = &p.fault else {
            return Ok(Outcome::ok("dry run: nothing to inject"));
        };
        let fault = ctx.inject(&spec(f)?)?;
        return Ok(Outcome::ok(fault.detail.clone())
            .detail("kind", f.kind.as_str())
            .detail("target", f.target.as_str()));
    }

    match p.action {
        Action::Observe => {
            let steady = need_steady()?;
            let since = p.since_ms.ok_or_else(|| {
                ActionError::InvalidParams("observe needs `since_ms` (the injection time)".into())
            })?;
            let recovery = wait_recovery(ctx, steady, since, rto, interval)?;
            if let Some(id) = &p.fault_id {
                ctx.revert_fault(id)?;
            }
            let o = match recovery.recovered_after_ms {
                Some(ms) => Outcome::ok(format!(
                    "recovered {ms} ms after the fault, within the {} RTO",
                    humantime::format_duration(rto)
                )),
                None => Outcome::fail(format!(
                    "not recovered within the {} RTO: {}",
                    humantime::format_duration(rto),
                    recovery.last
                )),
            };
            Ok(verdict(o, &recovery, rto))
        }
        Action::Inject | Action::Drill => {
            let f = need_fault()?;
            if let Some(steady) = &p.steady_state {
                let before = probe(ctx, steady)?;
                if !before.steady {
                    return Ok(Outcome::fail(format!(
                        "steady state not met before the drill ({}); no fault injected",
                        before.what
                    ))
                    .detail("steady_before", false));
                }
            }
            let fault = ctx.inject(&spec(f)?)?;
            let base = |o: Outcome| {
                o.detail("fault_id", fault.id.as_str())
                    .detail("kind", f.kind.as_str())
                    .detail("target", f.target.as_str())
                    .detail("injected_at_ms", fault.injected_at_ms)
                    .detail("fault", fault.detail.as_str())
            };
            if p.action == Action::Inject {
                return Ok(base(Outcome::ok(format!("injected: {}", fault.detail))));
            }
            let steady = need_steady()?;
            // Observe the fault's effect while it holds.
            let held = Instant::now();
            let mut degraded = 0u32;
            let mut looks = 0u32;
            let mut worst_ms = 0f64;
            while held.elapsed() < hold {
                let seen = probe(ctx, steady)?;
                looks += 1;
                worst_ms = worst_ms.max(seen.latency_ms);
                if !seen.steady {
                    degraded += 1;
                }
                std::thread::sleep(interval);
            }
            ctx.revert_fault(&fault.id)?;
            let reverted_at = now_ms();
            let recovery = wait_recovery(ctx, steady, fault.injected_at_ms, rto, interval)?;
            let after_revert = recovery
                .recovered_after_ms
                .map(|ms| (fault.injected_at_ms + ms).saturating_sub(reverted_at));
            let summary = match recovery.recovered_after_ms {
                Some(ms) => format!(
                    "{} on {}: degraded in {degraded}/{looks} probes (worst {worst_ms:.0} ms); steady again {ms} ms after injection, within the {} RTO",
                    f.kind.as_str(),
                    f.target,
                    humantime::format_duration(rto)
                ),
                None => format!(
                    "{} on {}: not steady again within the {} RTO ({})",
                    f.kind.as_str(),
                    f.target,
                    humantime::format_duration(rto),
                    recovery.last
                ),
            };
            let o = if recovery.recovered_after_ms.is_some() {
                Outcome::ok(summary)
            } else {
                Outcome::fail(summary)
            };
            let o = base(o)
                .detail("degraded_probes", degraded)
                .detail("probes_during_fault", looks)
                .detail("worst_latency_ms", worst_ms)
                .detail("recovered_after_revert_ms", after_revert)
                .metric("worst_latency_ms", worst_ms);
            Ok(verdict(o, &recovery, rto))
        }
    }
}

runcap_sdk::plugin!(
    name: "chaos",
    description: "Chaos drills: steady state, fault, observation, revert, and recovery time against an RTO.",
    run: run
);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::testing::MockHost;
    use runcap_sdk::{HttpResponse, Status};

    fn ok() -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: 200,
            ..Default::default()
        })
    }

    fn params(action: Action) -> Params {
        Params {
            action,
            steady_state: Some(SteadyState {
                url: "http://svc/health".into(),
                status: None,
                within: HumanDuration::secs(2),
            }),
            fault: Some(FaultParams {
                kind: FaultKind::Partition,
                target: "api".into(),
                duration: HumanDuration::secs(10),
                latency: None,
                drop_rate: None,
                path: None,
                days: None,
            }),
            hold: HumanDuration::millis(20),
            rto: HumanDuration::secs(5),
            interval: HumanDuration::millis(5),
            since_ms: None,
            fault_id: None,
        }
    }

    #[test]
    fn a_drill_injects_observes_reverts_and_times_recovery() {
        let mut host = MockHost::new().grant_faults().answer_http(ok());
        for _ in 0..3 {
            host = host.answer_http(Err(HttpError::Connection("reset".into())));
        }
        for _ in 0..50 {
            host = host.answer_http(ok());
        }
        let out = run(&host.context(), params(Action::Drill)).unwrap();
        assert_eq!(out.status, Status::Ok, "{out:?}");
        assert!(out.details["degraded_probes"].as_u64().unwrap() >= 1);
        assert_eq!(out.details["met_rto"], true);
        assert_eq!(host.reverted.borrow().as_slice(), ["f-0"]);
    }

    #[test]
    fn no_fault_without_a_steady_state() {
        let host = MockHost::new().grant_faults().answer_http(Ok(HttpResponse {
            status: 503,
            ..Default::default()
        }));
        let out = run(&host.context(), params(Action::Drill)).unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(host.faults.borrow().is_empty());
    }

    #[test]
    fn observe_fails_past_the_rto() {
        let mut host = MockHost::new();
        for _ in 0..1000 {
            host = host.answer_http(Err(HttpError::Connection("refused".into())));
        }
        let mut p = params(Action::Observe);
        p.since_ms = Some(now_ms());
        p.rto = HumanDuration::millis(30);
        let out = run(&host.context(), p).unwrap();
        assert_eq!(out.status, Status::Fail);
        assert_eq!(out.details["met_rto"], false);
    }

    #[test]
    fn denied_faults_are_denials() {
        let host = MockHost::new().answer_http(ok());
        assert!(matches!(
            run(&host.context(), params(Action::Inject)),
            Err(ActionError::Denied(_))
        ));
    }
}
