//! `examples/sonia` end to end, as an operator would use it: the example is copied into a
//! sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages sent
//! to an in-process webhook sink), checked, started in order, triaged, broken by a crash,
//! triaged again (failing, naming the crashed service and paging on-call), repaired by the
//! restart runbook, triaged green, and stopped.

use runcap_e2e::example::{Example, Layout, crash, listening, statuses, wait_for};
use runcap_e2e::{Service, step};

/// The ports the example's manifest writes: gateway, router, memory engine, serve, pager.
const PORTS: [u16; 5] = [18110, 18111, 18112, 18118, 18119];

/// Where the example writes what the test rewrites.
const LAYOUT: Layout = Layout {
    name: "sonia",
    ports: &PORTS,
    pager: 18119,
    skip: &[".runcap", "redacted", "backups"],
};

#[test]
fn the_sonia_stack_starts_is_triaged_pages_on_a_crash_recovers_and_stops() {
    let hooks = Service::start("127.0.0.1", None);

    let stack = Example::new(&LAYOUT, &hooks, &[]);
    let sb = &stack.sb;
    sb.run(&["check"]).expect_code(0);

    // Started in dependency order, each healthy before the next.
    let started = stack.run_json(&["run", "start"], 0);
    let order: Vec<String> = statuses(&started).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        order,
        [
            "pager",
            "memory_engine",
            "model_router",
            "api_gateway",
            "gateway_up"
        ]
    );
    for id in ["memory_engine", "model_router", "api_gateway"] {
        let s = step(&started, id);
        assert_eq!(s["status"], "ok", "{s:#}");
        assert!(
            s["summary"].as_str().unwrap().contains("healthy after"),
            "{s:#}"
        );
    }
    for port in [18110, 18111, 18112, 18119] {
        assert!(listening(stack.port(port)), "{port} is up");
    }

    let triage = stack.run_json(&["run", "triage"], 0);
    assert_eq!(triage["status"], "ok", "{triage:#}");
    assert!(
        statuses(&triage).iter().all(|(_, s)| s == "ok"),
        "{triage:#}"
    );
    assert!(hooks.state.hooks.lock().unwrap().is_empty());

    // The latency runbook: live p95 from 20 samples passes; the logged slow turns warn.
    let latency = stack.run_json(&["run", "latency"], 0);
    assert_eq!(latency["status"], "warn", "{latency:#}");
    let p95 = step(&latency, "gateway_p95");
    assert_eq!(p95["status"], "ok", "{p95:#}");
    assert_eq!(p95["details"]["samples"], 20, "{p95:#}");
    let slow = step(&latency, "slow_turns");
    assert!(
        slow["details"]["stdout"]
            .as_str()
            .unwrap()
            .contains("dominant stage: model"),
        "{slow:#}"
    );

    // A crash: the model router dies without a word.
    let router_port = stack.port(18111);
    let pid = stack.pid("model-router");
    crash(pid, router_port, "the model router");

    let failed = stack.run_json(&["run", "triage"], 1);
    assert_eq!(failed["status"], "fail");
    assert_eq!(failed["failed_step"], "model_router", "{failed:#}");
    for (id, status) in statuses(&failed) {
        let expected = if id == "model_router" { "fail" } else { "ok" };
        assert_eq!(status, expected, "{id}: {failed:#}");
    }
    assert_eq!(
        failed["incident"]["status"], "escalated",
        "the first tier is reached by the first failed run: {failed:#}"
    );
    let incident_id = failed["incident"]["id"].as_i64().unwrap();

    // The on-call tier paged, once, naming the service.
    wait_for("the on-call page", || {
        !hooks.state.hooks.lock().unwrap().is_empty()
    });
    {
        let pages = hooks.state.hooks.lock().unwrap();
        assert_eq!(pages.len(), 1, "{pages:#?}");
        let (channel, page) = &pages[0];
        assert_eq!(channel, "oncall");
        assert_eq!(
            page["title"], "sonia triage failed: model_router",
            "{page:#}"
        );
        assert_eq!(page["severity"], "high");
        assert_eq!(page["runbook"], "triage");
        assert_eq!(
            page["fields"]["incident"].to_string().trim_matches('"'),
            incident_id.to_string()
        );
        assert_eq!(page["fields"]["tier"], "on-call");
    }

    // The restart runbook brings back only the service named.
    let gateway_pid = stack.pid("api-gateway");
    let restarted = stack.run_json(&["run", "restart", "--var", "service=model-router"], 0);
    let r = step(&restarted, "restart");
    assert_eq!(r["status"], "ok", "{r:#}");
    assert!(
        r["summary"].as_str().unwrap().contains("healthy after"),
        "{r:#}"
    );
    assert!(listening(router_port));
    assert_ne!(stack.pid("model-router"), pid);
    assert_eq!(
        stack.pid("api-gateway"),
        gateway_pid,
        "the others untouched"
    );
    // The param is an enum: anything else is refused before a step runs.
    sb.run(&["run", "restart", "--var", "service=ollama"])
        .expect_code(2);

    let healed = stack.run_json(&["run", "triage"], 0);
    assert_eq!(healed["status"], "ok", "{healed:#}");
    assert_eq!(healed["incident"]["status"], "resolved", "{healed:#}");
    assert_eq!(
        hooks.state.hooks.lock().unwrap().len(),
        1,
        "no page once it passes"
    );
    let incidents = stack.run_json(&["incidents", "--all"], 0);
    let incident = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == incident_id)
        .unwrap_or_else(|| panic!("incident {incident_id} in {incidents:#}"));
    let timeline = incident["timeline"].as_array().unwrap();
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["opened", "escalated", "notified", "resolved"],
        "{incident:#}"
    );
    assert!(
        timeline[0]
            .to_string()
            .contains("1 of 5 steps failed: model_router"),
        "{incident:#}"
    );

    // Stopped in reverse order, every port free.
    let stopped = stack.run_json(&["run", "stop"], 0);
    assert!(
        statuses(&stopped).iter().all(|(_, s)| s == "ok"),
        "{stopped:#}"
    );
    for s in stack.run_json(&["services"], 0).as_array().unwrap() {
        assert_eq!(s["state"], "stopped", "{s:#}");
    }
    for port in [18110, 18111, 18112, 18119] {
        assert!(!listening(stack.port(port)), "{port} is free");
    }
}
