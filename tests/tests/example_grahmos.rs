//! `examples/grahmos` end to end, as an operator would use it: the example is copied into a
//! sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages sent
//! to an in-process webhook sink, its certificate file named by its absolute path),
//! checked, started, health-checked; an index release is deployed, a broken one is swapped
//! in and rolled back on its own; the search engine is killed, the health check fails and
//! pages on-call, the restart runbook repairs it; logs, security, resources, backups and
//! the drills run; and everything is stopped.

use runcap_e2e::example::{Example, Layout, crash, listening, pages, statuses, wait_for};
use runcap_e2e::{Service, repo_root, sha256_file, step};

/// The ports the example's manifest writes: edge API (HTTP, TLS), search, serve, pager.
const PORTS: [u16; 5] = [18150, 18151, 18152, 18158, 18159];

/// Where the example's manifest says the served certificate file lives.
const CERT_FILE: &str = "/etc/grahmos/certs/server.pem";

/// Where the example writes what the test rewrites.
const LAYOUT: Layout = Layout {
    name: "grahmos",
    ports: &PORTS,
    pager: 18159,
    skip: &[".runcap", "backups", "scratch"],
};

/// What this test reads of its example beside what every example test reads.
trait Local {
    fn current_release(&self) -> String;
}

impl Local for Example {
    fn current_release(&self) -> String {
        std::fs::read_link(self.sb.path().join("indexes/current"))
            .unwrap()
            .display()
            .to_string()
    }
}

fn summary(report: &serde_json::Value, id: &str) -> String {
    step(report, id)["summary"].as_str().unwrap().to_string()
}

#[test]
fn the_grahmos_platform_deploys_rolls_back_pages_on_a_crash_recovers_and_stops() {
    let hooks = Service::start("127.0.0.1", None);
    let stack = Example::new(
        &LAYOUT,
        &hooks,
        &[(CERT_FILE, "{sandbox}/certs/server.pem")],
    );
    let sb = &stack.sb;
    sb.run(&["check"]).expect_code(0);

    // Started in dependency order, each healthy before the next, TLS answering last.
    let started = stack.run_json(&["run", "start"], 0);
    assert_eq!(
        statuses(&started),
        [
            ("pager".into(), "ok".into()),
            ("search".into(), "ok".into()),
            ("edge_api".into(), "ok".into()),
            ("api_tls".into(), "ok".into()),
        ],
        "{started:#}"
    );
    for port in [18150, 18151, 18152, 18159] {
        assert!(listening(stack.port(port)), "{port} is up");
    }

    let health = stack.run_json(&["run", "health"], 0);
    assert_eq!(health["status"], "ok", "{health:#}");
    assert!(
        statuses(&health).iter().all(|(_, s)| s == "ok"),
        "{health:#}"
    );
    assert!(hooks.state.hooks.lock().unwrap().is_empty());

    // Resources: the harness moves the machine's own levels, so the stand-ins' ports and
    // processes decide.
    let resources = stack.run_json(&["run", "resources"], 0);
    let host = step(&resources, "host");
    assert_eq!(host["status"], "ok", "{host:#}");
    let api = stack.pid("edge-api");
    let search = stack.pid("search");
    for (port, pid) in [(18150, api), (18151, api), (18152, search)] {
        let key = format!("ports.{}.pid", stack.port(port));
        assert_eq!(host["details"][&key].as_f64(), Some(pid as f64), "{host:#}");
    }
    assert!(
        host["details"]["processes.runcap-demo-ser.count"]
            .as_f64()
            .is_some_and(|n| n >= 3.0),
        "{host:#}"
    );

    // The certificate file, read from disk (valid until 2036).
    let cert = stack.run_json(&["run", "cert-file"], 0);
    assert_eq!(step(&cert, "server_pem")["status"], "ok", "{cert:#}");

    // A good release: staged, swapped, canaried, held to the SLA.
    assert_eq!(stack.current_release(), "releases/v1");
    let deployed = stack.run_json(&["run", "deploy", "--var", "version=v2"], 0);
    assert!(
        statuses(&deployed).iter().all(|(_, s)| s == "ok"),
        "{deployed:#}"
    );
    assert_eq!(
        step(&deployed, "swap")["details"]["previous"],
        "releases/v1"
    );
    assert_eq!(
        step(&deployed, "sla")["details"]["samples"],
        50,
        "{deployed:#}"
    );
    assert_eq!(stack.current_release(), "releases/v2");

    // A release copied whole but built broken: the canary fails after the swap, and the
    // same run points the link back at v2.
    let broken = "[{\"id\": \"doc-001\", \"title\": \"Ven";
    sb.write("indexes/releases/v3/index.json", broken);
    let digest = sha256_file(&sb.path().join("indexes/releases/v3/index.json"));
    sb.write(
        "indexes/releases/v3/SHA256SUMS",
        &format!("{digest}  index.json\n"),
    );
    let failed = stack.run_json(&["run", "deploy", "--var", "version=v3"], 1);
    assert_eq!(failed["failed_step"], "canary", "{failed:#}");
    assert_eq!(step(&failed, "staged")["status"], "ok", "{failed:#}");
    assert_eq!(step(&failed, "canary")["status"], "fail", "{failed:#}");
    assert_eq!(step(&failed, "swap.rollback")["status"], "ok", "{failed:#}");
    assert_eq!(stack.current_release(), "releases/v2", "rolled back");
    wait_for("the deploy notice to operations", || {
        !pages(&hooks, "ops").is_empty()
    });
    assert_eq!(
        pages(&hooks, "ops")[0]["title"],
        "grahmos deploy failed at canary and was rolled back"
    );

    // A copy cut short is never swapped in: nothing changes.
    sb.write("indexes/releases/v4/index.json", "[]");
    sb.write(
        "indexes/releases/v4/SHA256SUMS",
        &format!("{digest}  index.json\n"),
    );
    let short = stack.run_json(&["run", "deploy", "--var", "version=v4"], 1);
    assert_eq!(short["failed_step"], "staged", "{short:#}");
    assert_eq!(stack.current_release(), "releases/v2");
    // The version is checked whole before anything runs.
    sb.run(&["run", "deploy", "--var", "version=../../etc"])
        .expect_code(2);

    // A crash: the search engine dies without a word.
    let search_port = stack.port(18152);
    crash(search, search_port, "the search engine");

    let down = stack.run_json(&["run", "health"], 1);
    assert_eq!(down["failed_step"], "search", "{down:#}");
    for (id, status) in statuses(&down) {
        let expected = if id == "search" || id == "search_canary" {
            "fail"
        } else {
            "ok"
        };
        assert_eq!(status, expected, "{id}: {down:#}");
    }
    assert_eq!(down["incident"]["status"], "escalated", "{down:#}");
    let incident_id = down["incident"]["id"].as_i64().unwrap();

    // On-call paged once, at the critical severity, naming the failed check.
    wait_for("the on-call page", || !pages(&hooks, "oncall").is_empty());
    {
        let oncall = pages(&hooks, "oncall");
        assert_eq!(oncall.len(), 1, "{oncall:#?}");
        assert_eq!(oncall[0]["title"], "grahmos health failed: search");
        assert_eq!(oncall[0]["severity"], "critical");
        assert_eq!(oncall[0]["fields"]["tier"], "on-call");
        assert_eq!(
            oncall[0]["fields"]["incident"]
                .to_string()
                .trim_matches('"'),
            incident_id.to_string()
        );
    }

    // The restart runbook brings back only the service named.
    let restarted = stack.run_json(&["run", "restart", "--var", "service=search"], 0);
    assert!(
        summary(&restarted, "restart").contains("healthy after"),
        "{restarted:#}"
    );
    assert!(listening(search_port));
    assert_eq!(stack.pid("edge-api"), api, "the API untouched");
    sb.run(&["run", "restart", "--var", "service=pager"])
        .expect_code(2);

    let healed = stack.run_json(&["run", "health"], 0);
    assert_eq!(healed["incident"]["status"], "resolved", "{healed:#}");
    assert_eq!(pages(&hooks, "oncall").len(), 1, "no page once it passes");

    // Logs and security: the fixtures hold two API errors, two slow requests and five
    // failed logins; the lines reported are redacted.
    let logs = stack.run_json(&["run", "log-review"], 0);
    assert_eq!(logs["status"], "warn", "{logs:#}");
    assert_eq!(
        step(&logs, "app_errors")["details"]["matched"],
        2,
        "{logs:#}"
    );
    assert_eq!(
        step(&logs, "proxy_slow")["details"]["matched"],
        2,
        "{logs:#}"
    );
    let security = stack.run_json(&["run", "security"], 0);
    assert_eq!(step(&security, "failed_logins")["status"], "warn");
    assert_eq!(step(&security, "failed_logins")["details"]["matched"], 5);
    assert_eq!(step(&security, "certificate")["status"], "ok");

    // Backups: an emergency snapshot, read back, restored into scratch copies.
    let backup = stack.run_json(
        &[
            "run",
            "backup",
            "--var",
            "kind=emergency",
            "--var",
            "comment=pre-maintenance",
        ],
        0,
    );
    assert!(
        statuses(&backup).iter().all(|(_, s)| s == "ok"),
        "{backup:#}"
    );
    let status = stack.run_json(&["run", "backup-status"], 0);
    let snapshots = step(&status, "list")["details"]["snapshots"].clone();
    assert_eq!(snapshots.as_array().unwrap().len(), 2, "{status:#}");
    for snapshot in snapshots.as_array().unwrap() {
        assert_eq!(
            snapshot["tags"],
            serde_json::json!(["emergency", "pre-maintenance"]),
            "{status:#}"
        );
    }
    let drill = stack.run_json(&["run", "restore-drill"], 0);
    assert!(
        summary(&drill, "indexes").contains("drill passed"),
        "{drill:#}"
    );
    let preview = stack.run_json(&["run", "restore-preview"], 0);
    assert!(summary(&preview, "data").contains("dry run"), "{preview:#}");

    // The drills, against the release now live.
    let drills = stack.run_json(&["run", "drills", "--var", "release=v2"], 0);
    assert!(
        statuses(&drills).iter().all(|(_, s)| s == "ok"),
        "{drills:#}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("indexes/releases/v2/index.json")).unwrap(),
        std::fs::read_to_string(
            repo_root().join("examples/grahmos/indexes/releases/v2/index.json")
        )
        .unwrap(),
        "the corrupted index is restored byte for byte"
    );
    let healthy = stack.run_json(&["run", "health"], 0);
    assert_eq!(healthy["status"], "ok", "{healthy:#}");

    // Stopped in reverse order, every port free.
    let stopped = stack.run_json(&["run", "stop"], 0);
    assert!(
        statuses(&stopped).iter().all(|(_, s)| s == "ok"),
        "{stopped:#}"
    );
    for s in stack.run_json(&["services"], 0).as_array().unwrap() {
        assert_eq!(s["state"], "stopped", "{s:#}");
    }
    for port in [18150, 18151, 18152, 18159] {
        assert!(!listening(stack.port(port)), "{port} is free");
    }
}
