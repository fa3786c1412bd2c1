//! `examples/sonia` end to end, as an operator would use it: the example is copied into a
//! sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages sent
//! to an in-process webhook sink), checked, started in order, triaged, broken by a crash,
//! triaged again (failing, naming the crashed service and paging on-call), repaired by the
//! restart runbook, triaged green, and stopped.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, Service, demo_service_bin, free_port, repo_root, step, target_dir};

/// The ports the example's manifest writes: gateway, router, memory engine, serve, pager.
const PORTS: [u16; 5] = [18110, 18111, 18112, 18118, 18119];

/// Copies the example's files, leaving out what running it locally leaves behind.
fn copy_example(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [".runcap", "redacted", "backups"].contains(&name.as_ref())
            || name.ends_with("-wal")
            || name.ends_with("-shm")
        {
            continue;
        }
        let dest = to.join(&*name);
        if entry.file_type().unwrap().is_dir() {
            copy_example(&entry.path(), &dest);
        } else {
            // fs::copy keeps the mode, so bin/ stays executable.
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// The example in a sandbox, stopped (and any process it left killed) when dropped, so a
/// failing assertion leaves nothing running.
struct Stack {
    sb: Sandbox,
    ports: Vec<u16>,
}

impl Stack {
    fn new(hooks: &Service) -> Stack {
        let sb = Sandbox::new();
        copy_example(&repo_root().join("examples/sonia"), sb.path());
        let mut text = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
        // Pages go to a sink this test can read; the pager stand-in still runs.
        text = text.replace("http://127.0.0.1:18119/hooks/", &hooks.url("/hooks/"));
        text = text.replace(
            "../../target/debug/runcap-demo-service",
            &demo_service_bin().display().to_string(),
        );
        text = text.replace("../../target/", &format!("{}/", target_dir().display()));
        let mut ports = Vec::new();
        for port in PORTS {
            let new = free_port();
            text = text.replace(&port.to_string(), &new.to_string());
            ports.push(new);
        }
        assert!(
            !text.contains("../../target") && !text.contains("127.0.0.1:1811"),
            "every path and port was rewritten:\n{text}"
        );
        sb.write("runcap.toml", &text);
        Stack { sb, ports }
    }

    fn port(&self, example_port: u16) -> u16 {
        self.ports[PORTS.iter().position(|p| *p == example_port).unwrap()]
    }

    fn run_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.sb.run(&all).expect_code(code).json()
    }

    fn pid(&self, service: &str) -> i64 {
        let services = self.run_json(&["services"], 0);
        services
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["pid"].as_i64())
            .unwrap_or_else(|| panic!("{service} has no pid: {services:#}"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.sb.run(&["run", "stop"]);
        // Whatever the stop left (a supervisor, a service it could not reach) is killed.
        let dir = self.sb.path().join(".runcap/services");
        for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if file.path().extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read_to_string(file.path())
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                for key in ["pid", "supervisor_pid"] {
                    if let Some(pid) = v[key].as_i64()
                        && v["exit_code"].is_null()
                        && v["signal"].is_null()
                    {
                        let _ = std::process::Command::new("kill")
                            .args(["-9", &pid.to_string()])
                            .status();
                    }
                }
            }
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Polls `cond` every 50 ms until it holds, for at most 15 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_sonia_stack_starts_is_triaged_pages_on_a_crash_recovers_and_stops() {
    let hooks = Service::start("127.0.0.1", None);
    let stack = Stack::new(&hooks);
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
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the model router's port to close", || {
        !listening(router_port)
    });

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
