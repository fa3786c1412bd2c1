//! `examples/acgs-1-lite` end to end, as an operator would use it: the example is copied
//! into a sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages
//! sent to an in-process webhook sink), checked and started; the checks pass; the
//! pre-deployment checks back up and announce, a release deploys, a release built against
//! another constitution and one that does not parse are rolled back, and an immediate
//! rollback follows; the sandbox controller is killed (health pages infrastructure and SRE,
//! service-down repairs it), the policy engine's failure switch is flipped (the same, by
//! restart), fresh sandbox errors fail the log check and the sandbox runbook restarts it, a
//! burst of constitutional violations locks the policy engine down and pages legal and
//! development; the backups are taken and drilled, the failover and alert drills pass, and
//! the stack is stopped with nothing left running.

use runcap_e2e::example::{
    Example, Layout, all_ok, append, crash, http, listening, now_rfc3339, pages, statuses, wait_for,
};
use runcap_e2e::{Service, repo_root, step};

/// The ports the example's manifest writes: the policy engine, evolution oversight, the
/// audit engine, the sandbox controller, staging, the policy engine's drill proxy, serve,
/// the pager.
const PORTS: [u16; 8] = [18140, 18141, 18142, 18143, 18144, 18145, 18148, 18149];

/// The four services, in the order `start` starts them after the pager.
const SERVICES: [(&str, u16); 4] = [
    ("audit-engine", 18142),
    ("policy-engine", 18140),
    ("sandbox-controller", 18143),
    ("evolution-oversight", 18141),
];

/// Where the example writes what the test rewrites.
const LAYOUT: Layout = Layout {
    name: "acgs-1-lite",
    ports: &PORTS,
    pager: 18149,
    skip: &[".runcap", "backups", "scratch", "bundle.tar.gz"],
};

/// The example judges policy decisions at the runbook's 5 ms alert level and the other
/// services at 50 ms. On a loaded two-core machine the scheduler, not the stand-in,
/// decides tens of milliseconds (a 101 ms answer has been seen), so the test moves those
/// levels (and only them) out of the scheduler's reach; the drills prove a slow engine is
/// still caught. (The harness moves the host's own levels: memory, CPU, load, disk.)
const RELAXED: [(&str, &str); 4] = [
    (r#"p95_below = "5ms""#, r#"p95_below = "1s""#),
    ("p99_ms > 5", "p99_ms > 1000"),
    (r#"p95_below = "50ms""#, r#"p95_below = "1s""#),
    (
        r#"response_time_below = "50ms""#,
        r#"response_time_below = "1s""#,
    ),
];

fn summary(report: &serde_json::Value, id: &str) -> String {
    step(report, id)["summary"].as_str().unwrap().to_string()
}

fn current_release(stack: &Example) -> String {
    std::fs::read_link(stack.sb.path().join("deploy/current"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_acgs1_lite_stack_deploys_rolls_back_pages_by_issue_type_locks_down_recovers_and_stops() {
    let hooks = Service::start("127.0.0.1", None);
    let stack = Example::new(&LAYOUT, &hooks, &RELAXED);
    let sb = &stack.sb;
    sb.run(&["check"]).expect_code(0);

    // The pager, then the four services in order, each healthy before the next; staging last.
    let started = stack.run_json(&["run", "start"], 0);
    assert_eq!(
        statuses(&started),
        [
            ("pager".into(), "ok".into()),
            ("audit_engine".into(), "ok".into()),
            ("policy_engine".into(), "ok".into()),
            ("sandbox_controller".into(), "ok".into()),
            ("evolution_oversight".into(), "ok".into()),
            ("staging".into(), "ok".into()),
        ],
        "{started:#}"
    );
    for (service, port) in SERVICES {
        assert!(listening(stack.port(port)), "{service} is up");
    }
    let engine = stack.port(18140);
    let sandbox = stack.port(18143);

    // The checks, on a healthy stack.
    all_ok(&stack.run_json(&["run", "health"], 0));
    let latency = stack.run_json(&["run", "latency"], 0);
    for id in [
        "policy_engine",
        "evolution_oversight",
        "audit_engine",
        "sandbox_controller",
    ] {
        let s = step(&latency, id);
        assert_eq!(s["status"], "ok", "{s:#}");
        assert_eq!(s["details"]["samples"], 20, "{s:#}");
        assert!(s["details"]["p99_ms"].as_f64().unwrap() > 0.0, "{s:#}");
    }
    assert_eq!(step(&latency, "p99_alert")["status"], "skipped");
    // The harness moves the machine's own levels; the stand-ins' processes and ports decide.
    all_ok(&stack.run_json(&["run", "resources"], 0));
    // The logs' errors are from a past day, outside the 15-minute window.
    all_ok(&stack.run_json(&["run", "errors"], 0));
    let constitution = stack.run_json(&["run", "constitution"], 0);
    all_ok(&constitution);
    assert_eq!(
        step(&constitution, "violations")["details"]["matched"],
        0,
        "{constitution:#}"
    );
    assert_eq!(
        step(&constitution, "engine_violations")["details"]["matched"],
        1,
        "the engine's one logged violation is shown: {constitution:#}"
    );
    assert!(hooks.state.hooks.lock().unwrap().is_empty());

    // Before a release: checks, a backup, and stakeholders told.
    let pre = stack.run_json(&["run", "predeploy"], 0);
    all_ok(&pre);
    wait_for("the deployment notice", || {
        pages(&hooks, "stakeholders").len() == 1
    });

    // A release that verifies.
    assert_eq!(current_release(&stack), "releases/v1");
    let v2 = stack.run_json(&["run", "deploy", "--var", "release=v2"], 0);
    all_ok(&v2);
    assert_eq!(current_release(&stack), "releases/v2");
    let (code, body) = http("GET", engine, "/data/raw");
    assert_eq!(code, 200);
    assert!(body.contains(r#""version":"v2""#), "{body}");
    wait_for("the release notice", || {
        pages(&hooks, "stakeholders").len() == 2
    });
    assert_eq!(
        pages(&hooks, "stakeholders")[1]["title"],
        "ACGS-1 Lite policy release v2 is live"
    );

    // A release built against another constitution: swapped back, SRE paged.
    let v3 = stack.run_json(&["run", "deploy", "--var", "release=v3"], 1);
    assert_eq!(v3["failed_step"], "constitution", "{v3:#}");
    assert!(
        summary(&v3, "constitution").contains("4b1e9f0c2a7d5e38"),
        "{v3:#}"
    );
    assert_eq!(step(&v3, "swap.rollback")["status"], "ok", "{v3:#}");
    assert_eq!(current_release(&stack), "releases/v2");
    assert_eq!(v3["incident"]["severity"], "high", "{v3:#}");
    wait_for("SRE's page", || pages(&hooks, "sre").len() == 1);
    assert_eq!(
        pages(&hooks, "sre")[0]["title"],
        "acgs-1-lite deploy failed at constitution and was rolled back"
    );
    assert_eq!(pages(&hooks, "stakeholders").len(), 2, "no release notice");
    // A bundle cut short: the engine cannot load it; swapped back, and SRE, already paged
    // for the open incident, is not paged again.
    let v4 = stack.run_json(&["run", "deploy", "--var", "release=v4"], 1);
    assert_eq!(v4["failed_step"], "bundle", "{v4:#}");
    assert_eq!(step(&v4, "swap.rollback")["status"], "ok", "{v4:#}");
    assert_eq!(current_release(&stack), "releases/v2");
    assert_eq!(v4["incident"]["id"], v3["incident"]["id"], "{v4:#}");
    assert_eq!(pages(&hooks, "sre").len(), 1);
    sb.run(&["run", "deploy", "--var", "release=latest"])
        .expect_code(2);

    // The immediate rollback to a named release.
    let back = stack.run_json(&["run", "rollback", "--var", "release=v1"], 0);
    all_ok(&back);
    assert_eq!(current_release(&stack), "releases/v1");
    assert!(
        http("GET", engine, "/data/raw")
            .1
            .contains(r#""version":"v1""#)
    );

    // The sandbox controller crashes.
    let pid = stack.pid("sandbox-controller");
    crash(pid, sandbox, "the sandbox controller");
    // Health fails naming it: an infrastructure issue, the infra team and SRE paged.
    let failed = stack.run_json(&["run", "health"], 1);
    assert_eq!(failed["failed_step"], "sandbox_controller", "{failed:#}");
    for (id, status) in statuses(&failed) {
        let expected = if id == "sandbox_controller" {
            "fail"
        } else {
            "ok"
        };
        assert_eq!(status, expected, "{id}: {failed:#}");
    }
    assert_eq!(failed["incident"]["severity"], "high", "{failed:#}");
    assert_eq!(failed["incident"]["status"], "escalated", "{failed:#}");
    let crash = failed["incident"]["id"].as_i64().unwrap();
    wait_for("infra's and SRE's pages", || {
        pages(&hooks, "infra").len() == 1 && pages(&hooks, "sre").len() == 2
    });
    for page in [&pages(&hooks, "infra")[0], &pages(&hooks, "sre")[1]] {
        assert_eq!(
            page["title"], "acgs-1-lite health failed: sandbox_controller",
            "{page:#}"
        );
        assert_eq!(page["severity"], "high");
        assert_eq!(page["fields"]["tier"], "infrastructure");
    }
    // One service down is not a system-wide outage: recorded, nobody paged.
    let outage = stack.run_json(&["run", "outage"], 0);
    assert_eq!(outage["status"], "warn", "{outage:#}");
    assert_eq!(step(&outage, "sandbox_controller")["status"], "fail");
    assert_eq!(step(&outage, "confirm")["status"], "skipped");
    assert!(pages(&hooks, "security").is_empty());

    // Service down: found down, its errors kept, restarted, confirmed.
    let repaired = stack.run_json(
        &["run", "service-down", "--var", "service=sandbox-controller"],
        0,
    );
    assert_eq!(step(&repaired, "probe")["status"], "fail", "{repaired:#}");
    assert_eq!(
        step(&repaired, "app_errors")["details"]["matched"],
        2,
        "the fixture's timeout and permission denial: {repaired:#}"
    );
    assert_eq!(step(&repaired, "restart")["status"], "ok", "{repaired:#}");
    assert_eq!(step(&repaired, "verify")["status"], "ok", "{repaired:#}");
    assert!(listening(sandbox));
    let healed = stack.run_json(&["run", "health"], 0);
    assert_eq!(healed["incident"]["id"], crash, "{healed:#}");
    assert_eq!(healed["incident"]["status"], "resolved", "{healed:#}");

    // The policy engine fails while its process lives: its failure switch.
    assert_eq!(http("POST", engine, "/admin/down").0, 200);
    assert_eq!(http("GET", engine, "/health").0, 503);
    let failed = stack.run_json(&["run", "health"], 1);
    assert_eq!(failed["failed_step"], "policy_engine", "{failed:#}");
    assert_ne!(failed["incident"]["id"], crash, "a new incident");
    wait_for("the second pages", || {
        pages(&hooks, "infra").len() == 2 && pages(&hooks, "sre").len() == 3
    });
    assert_eq!(
        pages(&hooks, "infra")[1]["title"],
        "acgs-1-lite health failed: policy_engine"
    );
    let engine_pid = stack.pid("policy-engine");
    let repaired = stack.run_json(
        &["run", "service-down", "--var", "service=policy-engine"],
        0,
    );
    assert_eq!(step(&repaired, "probe")["status"], "fail", "{repaired:#}");
    assert_eq!(step(&repaired, "restart")["status"], "ok", "{repaired:#}");
    assert_ne!(stack.pid("policy-engine"), engine_pid, "restarted");
    assert_eq!(http("GET", engine, "/health").0, 200);
    // A healthy service is left alone.
    let audit_pid = stack.pid("audit-engine");
    let untouched = stack.run_json(&["run", "service-down", "--var", "service=audit-engine"], 0);
    assert_eq!(step(&untouched, "restart")["status"], "skipped");
    assert_eq!(stack.pid("audit-engine"), audit_pid);
    assert_eq!(
        stack.run_json(&["run", "health"], 0)["incident"]["status"],
        "resolved"
    );

    // Fresh sandbox failures: the log check fails on them; the sandbox runbook sees them and
    // restarts the controller.
    let now = now_rfc3339();
    let mut burst = String::new();
    for i in 0..11 {
        burst +=
            &format!("{now} ERROR sandbox_controller: sb-20{i:02} execution timeout after 30s\n");
    }
    append(&sb.path().join("logs/sandbox-controller.log"), &burst);
    let errors = stack.run_json(&["run", "errors"], 1);
    assert_eq!(errors["failed_step"], "sandbox_controller", "{errors:#}");
    assert_eq!(
        step(&errors, "sandbox_controller")["details"]["matched"],
        11,
        "{errors:#}"
    );
    assert_eq!(step(&errors, "policy_engine")["status"], "ok", "{errors:#}");
    let sandbox_pid = stack.pid("sandbox-controller");
    let fixed = stack.run_json(&["run", "sandbox-failure"], 0);
    assert_eq!(fixed["status"], "warn", "{fixed:#}");
    assert_eq!(
        step(&fixed, "failures")["details"]["matched"],
        11,
        "{fixed:#}"
    );
    assert_eq!(step(&fixed, "listener")["status"], "ok", "{fixed:#}");
    assert_eq!(step(&fixed, "verify")["status"], "ok", "{fixed:#}");
    assert_ne!(stack.pid("sandbox-controller"), sandbox_pid, "restarted");

    // A burst of constitutional violations: the engine is locked down, legal and development
    // are paged at once.
    let now = now_rfc3339();
    let mut burst = String::new();
    for i in 0..11 {
        burst += &format!(
            "{now} WARNING audit_engine: event_type=safety_violation agent=agent-{i} policy=acgs.main.oversight_for_evolution\n"
        );
    }
    append(&sb.path().join("logs/audit-engine.log"), &burst);
    let violated = stack.run_json(&["run", "constitution"], 1);
    assert_eq!(violated["failed_step"], "violations", "{violated:#}");
    assert_eq!(
        step(&violated, "violations")["details"]["matched"],
        11,
        "{violated:#}"
    );
    assert_eq!(step(&violated, "lockdown")["status"], "ok", "{violated:#}");
    assert!(
        statuses(&violated)
            .iter()
            .all(|(id, _)| !id.starts_with("hash_")),
        "nothing after the lockdown runs: {violated:#}"
    );
    assert_eq!(violated["incident"]["severity"], "critical", "{violated:#}");
    assert_eq!(http("GET", engine, "/health").0, 503, "locked down");
    wait_for("legal's and development's pages", || {
        pages(&hooks, "legal").len() == 1 && pages(&hooks, "dev").len() == 1
    });
    for page in [&pages(&hooks, "legal")[0], &pages(&hooks, "dev")[0]] {
        assert_eq!(
            page["title"],
            "acgs-1-lite constitutional check failed: violations; policy engine locked down",
            "{page:#}"
        );
        assert_eq!(page["severity"], "critical");
        assert_eq!(page["fields"]["tier"], "constitutional");
    }
    assert!(pages(&hooks, "ethics").is_empty(), "only past the SLA");
    let lifted = stack.run_json(&["run", "lift-lockdown"], 0);
    all_ok(&lifted);
    assert_eq!(http("GET", engine, "/health").0, 200);
    wait_for("legal told", || pages(&hooks, "legal").len() == 2);

    // Backups, and the disaster-recovery drill.
    all_ok(&stack.run_json(&["run", "backup"], 0));
    let drill = stack.run_json(&["run", "restore-drill"], 0);
    all_ok(&drill);
    assert_eq!(
        std::fs::read(sb.path().join("scratch/audit/events.jsonl")).unwrap(),
        std::fs::read(sb.path().join("data/audit/events.jsonl")).unwrap(),
        "the audit trail restored whole"
    );
    let status = stack.run_json(&["run", "backup-status"], 0);
    all_ok(&status);

    // Failover and alert drills: each fault noticed, reverted, and recovered from in time.
    let drills = stack.run_json(&["run", "drills"], 0);
    all_ok(&drills);
    let alert = step(&drills, "latency_alert");
    assert!(
        alert["details"]["p95_ms"].as_f64().unwrap() >= 100.0,
        "the injected 300 ms was measured: {alert:#}"
    );
    let damaged = step(&drills, "bundle_damaged");
    assert!(
        damaged["details"]["degraded_probes"].as_u64().unwrap() > 0,
        "{damaged:#}"
    );
    assert_eq!(
        std::fs::read(sb.path().join("deploy/releases/v1/bundle.json")).unwrap(),
        std::fs::read(repo_root().join("examples/acgs-1-lite/deploy/releases/v1/bundle.json"))
            .unwrap(),
        "the damaged bundle was put back byte for byte"
    );
    let faults = stack.run_json(&["faults"], 0);
    let kinds: Vec<&str> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["state"], "reverted", "{f:#}");
            f["kind"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds.len(), 3, "kill, corrupt-file, latency: {faults:#}");
    assert!(kinds.contains(&"latency"), "{faults:#}");
    assert!(listening(sandbox), "the sandbox controller is back");
    assert!(
        listening(stack.port(18145)),
        "the drill proxy keeps running"
    );

    // Stopped in reverse order, every port free, the proxy stopped, nothing left running.
    let stopped = stack.run_json(&["run", "stop"], 0);
    all_ok(&stopped);
    for s in stack.run_json(&["services"], 0).as_array().unwrap() {
        assert_eq!(s["state"], "stopped", "{s:#}");
    }
    sb.run(&["proxies", "--stop"]).expect_code(0);
    for port in PORTS {
        assert!(!listening(stack.port(port)), "{port} is free");
    }
    wait_for("no process left", || stack.processes().is_empty());
}
