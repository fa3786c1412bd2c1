//! `examples/acgs-1` end to end, as an operator would use it: the example is copied into a
//! sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages sent
//! to an in-process webhook sink), checked and started; then one service crashes (health
//! fails naming it and pages operations and infrastructure, the outage check does not page,
//! the service-down runbook repairs it), fresh errors reach a log, a broken policy release
//! is rolled back, the database is backed up, drilled, damaged and recovered, every service
//! is stopped at once (a critical outage that pages every team) and started again, and the
//! stack is stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use runcap_e2e::example::{
    Example, Layout, all_ok, append, crash, listening, now_rfc3339, statuses, wait_for,
};
use runcap_e2e::{Service, step};

/// The ports the example's manifest writes: the seven services, serve, the pager.
const PORTS: [u16; 9] = [
    18130, 18131, 18132, 18133, 18134, 18135, 18136, 18138, 18139,
];
/// The seven services, in the order `start` starts them.
const SERVICES: [&str; 7] = ["auth", "ac", "integrity", "fv", "gs", "pgc", "ec"];

/// Where the example writes what the test rewrites.
const LAYOUT: Layout = Layout {
    name: "acgs-1",
    ports: &PORTS,
    pager: 18139,
    skip: &[".runcap", "backups", "scratch", "bundle.tar.gz"],
};

/// What this test reads of its example beside what every example test reads.
trait Local {
    fn service_port(&self, service: &str) -> u16;
    fn release(&self) -> String;
    fn policies_in_db(&self) -> i64;
}

impl Local for Example {
    fn service_port(&self, service: &str) -> u16 {
        let i = SERVICES.iter().position(|s| *s == service).unwrap();
        self.port(PORTS[i])
    }

    fn release(&self) -> String {
        std::fs::read_link(self.sb.path().join("deploy/current"))
            .unwrap()
            .display()
            .to_string()
    }

    fn policies_in_db(&self) -> i64 {
        let db = rusqlite::Connection::open(self.sb.path().join("data/acgs.sqlite")).unwrap();
        db.query_row("SELECT COUNT(*) FROM policies", [], |r| r.get(0))
            .unwrap()
    }
}

/// The body of a plain GET on loopback.
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();

    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn pages(hooks: &Service) -> Vec<(String, serde_json::Value)> {
    hooks.state.hooks.lock().unwrap().clone()
}

#[test]
fn the_acgs1_stack_is_checked_escalates_by_severity_recovers_rolls_back_and_restores() {
    let hooks = Service::start("127.0.0.1", None);
    let stack = Example::new(&LAYOUT, &hooks, &[]);
    let sb = &stack.sb;
    sb.run(&["check"]).expect_code(0);

    // Started in port order after the pager, each healthy before the next.
    let started = stack.run_json(&["run", "start"], 0);
    let order: Vec<String> = statuses(&started).into_iter().map(|(id, _)| id).collect();
    let mut expected = vec!["pager"];
    expected.extend(SERVICES);
    assert_eq!(order, expected);
    for id in SERVICES {
        let s = step(&started, id);
        assert_eq!(s["status"], "ok", "{s:#}");
        assert!(
            s["summary"].as_str().unwrap().contains("healthy after"),
            "{s:#}"
        );
        assert!(listening(stack.service_port(id)), "{id} is up");
    }

    let health = stack.run_json(&["run", "health"], 0);
    assert!(
        statuses(&health).iter().all(|(_, s)| s == "ok"),
        "{health:#}"
    );
    let latency = stack.run_json(&["run", "latency"], 0);
    for id in SERVICES {
        let s = step(&latency, id);
        assert_eq!(s["status"], "ok", "{s:#}");
        assert_eq!(s["details"]["samples"], 20, "{s:#}");
    }
    // The harness moves the machine's own levels; every service's process and port decide.
    all_ok(&stack.run_json(&["run", "resources"], 0));
    assert!(pages(&hooks).is_empty());

    // The logs' old errors are outside the 15-minute window; fresh ones are not.
    let errors = stack.run_json(&["run", "errors"], 0);
    assert!(
        statuses(&errors).iter().all(|(_, s)| s == "ok"),
        "{errors:#}"
    );
    let now = now_rfc3339();
    let mut burst = String::new();
    for i in 0..12 {
        burst += &format!("{now} ERROR app.compiler: policy compile failed ({i})\n");
    }
    append(&sb.path().join("logs/pgc_service.log"), &burst);
    append(
        &sb.path().join("logs/auth_service.log"),
        &format!("{now} ERROR app.auth: token store slow\n"),
    );
    let errors = stack.run_json(&["run", "errors"], 1);
    assert_eq!(errors["failed_step"], "pgc", "{errors:#}");
    assert_eq!(step(&errors, "pgc")["details"]["matched"], 12, "{errors:#}");
    assert_eq!(step(&errors, "auth")["status"], "warn", "{errors:#}");
    assert_eq!(step(&errors, "gs")["status"], "ok", "{errors:#}");

    // A crash: the policy compiler dies without a word.
    let pgc_port = stack.service_port("pgc");
    let pid = stack.pid("pgc");
    crash(pid, pgc_port, "the compiler");

    // A partial outage: high, operations and infrastructure paged, naming the service.
    let failed = stack.run_json(&["run", "health"], 1);
    assert_eq!(failed["failed_step"], "pgc", "{failed:#}");
    for (id, status) in statuses(&failed) {
        let expected = if id == "pgc" { "fail" } else { "ok" };
        assert_eq!(status, expected, "{id}: {failed:#}");
    }
    assert_eq!(failed["incident"]["severity"], "high", "{failed:#}");
    assert_eq!(failed["incident"]["status"], "escalated", "{failed:#}");
    let health_incident = failed["incident"]["id"].as_i64().unwrap();
    wait_for("two pages", || pages(&hooks).len() >= 2);
    let got = pages(&hooks);
    let channels: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(channels, ["operations", "infrastructure"], "{got:#?}");
    for (_, page) in &got {
        assert_eq!(page["title"], "acgs-1 health failed: pgc", "{page:#}");
        assert_eq!(page["severity"], "high");
        assert_eq!(page["fields"]["tier"], "operations");
    }

    let resources = sb
        .run(&["run", "resources", "--json"])
        .expect_code(1)
        .json();
    let listeners = step(&resources, "listeners");
    assert_eq!(listeners["status"], "fail", "{listeners:#}");
    assert!(
        listeners["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("nothing listens on TCP port {pgc_port}")),
        "{listeners:#}"
    );

    // Not a complete outage: the critical check records it and pages no one.
    let outage = stack.run_json(&["run", "outage"], 0);
    assert_eq!(outage["status"], "warn", "{outage:#}");
    assert_eq!(step(&outage, "pgc")["status"], "fail");
    assert_eq!(step(&outage, "confirm")["status"], "skipped");
    assert_eq!(pages(&hooks).len(), 2);

    // Service down: found down, its errors kept, restarted, confirmed.
    let repaired = stack.run_json(&["run", "service-down", "--var", "service=pgc"], 0);
    assert_eq!(step(&repaired, "probe")["status"], "fail", "{repaired:#}");
    assert_eq!(
        step(&repaired, "app_errors")["details"]["matched"],
        14,
        "the compile failure and its traceback of the fixture, and the fresh burst: {repaired:#}"
    );
    assert_eq!(step(&repaired, "restart")["status"], "ok", "{repaired:#}");
    assert_eq!(step(&repaired, "verify")["status"], "ok", "{repaired:#}");
    assert!(listening(pgc_port));
    // A healthy service is left alone.
    let auth_pid = stack.pid("auth");
    let untouched = stack.run_json(&["run", "service-down", "--var", "service=auth"], 0);
    assert_eq!(step(&untouched, "restart")["status"], "skipped");
    assert_eq!(stack.pid("auth"), auth_pid);
    sb.run(&["run", "service-down", "--var", "service=redis"])
        .expect_code(2);

    let healed = stack.run_json(&["run", "health"], 0);
    assert_eq!(healed["incident"]["status"], "resolved", "{healed:#}");
    assert_eq!(healed["incident"]["id"], health_incident);
    assert_eq!(pages(&hooks).len(), 2, "no page once it passes");

    // A policy release that loads, then one that does not: swapped back.
    assert_eq!(stack.release(), "releases/v1");
    let v2 = stack.run_json(&["run", "deploy-policies", "--var", "release=v2"], 0);
    assert_eq!(step(&v2, "policies")["status"], "ok", "{v2:#}");
    assert_eq!(stack.release(), "releases/v2");
    let v3 = stack.run_json(&["run", "deploy-policies", "--var", "release=v3"], 1);
    assert_eq!(v3["failed_step"], "policies", "{v3:#}");
    assert_eq!(step(&v3, "swap.rollback")["status"], "ok", "{v3:#}");
    assert_eq!(stack.release(), "releases/v2");
    assert!(
        get(pgc_port, "/data").contains(r#""records":5"#),
        "the compiler serves v2's bundle again"
    );

    // Backups, the disaster-recovery drill, and a recovery of a damaged database.
    let backup = stack.run_json(&["run", "backup"], 0);
    assert!(
        statuses(&backup).iter().all(|(_, s)| s == "ok"),
        "{backup:#}"
    );
    let drill = stack.run_json(&["run", "restore-drill"], 0);
    assert!(
        step(&drill, "database")["summary"]
            .as_str()
            .unwrap()
            .contains("4 principles, 5 policies"),
        "{drill:#}"
    );
    assert_eq!(step(&drill, "config")["status"], "ok", "{drill:#}");
    {
        let db = rusqlite::Connection::open(sb.path().join("data/acgs.sqlite")).unwrap();
        db.execute("DELETE FROM policies WHERE id > 2", []).unwrap();
    }
    assert_eq!(stack.policies_in_db(), 2);
    let pids: Vec<i64> = SERVICES.iter().map(|s| stack.pid(s)).collect();
    let restored = stack.run_json(&["run", "restore-db"], 0);
    assert!(
        statuses(&restored).iter().all(|(_, s)| s == "ok"),
        "{restored:#}"
    );
    assert_eq!(stack.policies_in_db(), 5);
    for (service, old) in SERVICES.iter().zip(pids) {
        assert_ne!(stack.pid(service), old, "{service} was stopped and started");
        assert!(listening(stack.service_port(service)), "{service} is up");
    }

    // Every service down at once: a critical incident that pages every team.
    let stopped = stack.run_json(&["run", "emergency-stop"], 0);
    assert!(
        statuses(&stopped).iter().all(|(_, s)| s == "ok"),
        "{stopped:#}"
    );
    assert!(listening(stack.port(18139)), "the pager keeps running");
    let outage = stack.run_json(&["run", "outage"], 1);
    assert_eq!(outage["failed_step"], "confirm", "{outage:#}");
    assert_eq!(outage["incident"]["severity"], "critical", "{outage:#}");
    assert_eq!(outage["incident"]["status"], "escalated", "{outage:#}");
    wait_for("every team's page", || pages(&hooks).len() >= 7);
    let got = pages(&hooks);
    let channels: Vec<&str> = got[2..].iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        [
            "operations",
            "infrastructure",
            "engineering",
            "architecture",
            "stakeholders"
        ],
        "{got:#?}"
    );
    assert_eq!(got[2].1["severity"], "critical");
    assert_eq!(got[2].1["fields"]["tier"], "all-teams");

    stack.run_json(&["run", "start"], 0);
    let back = stack.run_json(&["run", "outage"], 0);
    assert_eq!(back["status"], "ok", "{back:#}");
    assert_eq!(back["incident"]["status"], "resolved", "{back:#}");

    // Stopped in reverse order, every port free.
    let stopped = stack.run_json(&["run", "stop"], 0);
    assert!(
        statuses(&stopped).iter().all(|(_, s)| s == "ok"),
        "{stopped:#}"
    );
    for s in stack.run_json(&["services"], 0).as_array().unwrap() {
        assert_eq!(s["state"], "stopped", "{s:#}");
    }
    for port in PORTS[..7].iter().map(|p| stack.port(*p)) {
        assert!(!listening(port), "{port} is free");
    }
    assert!(!listening(stack.port(18139)));
}
