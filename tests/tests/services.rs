//! The services capability on real processes: a supervised process killed with SIGKILL
//! and brought back by a runbook, a command driver driving a real script, denials, pid
//! files that lie, and concurrent restarts.

use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, free_port, plugin_lines, step};

const DEMO: &str = env!("CARGO_BIN_EXE_runcap-demo-service");

fn alive(pid: i64) -> bool {
    // A zombie has exited; only a process that can still run counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

/// Kills whatever service processes a test leaves behind, even when it fails.
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            runcap_e2e::kill_recorded(f);
        }
    }
}

fn services(sb: &Sandbox) -> serde_json::Value {
    sb.run(&["services", "--json"]).expect_code(0).json()
}

fn manifest(port: u16, extra: &str) -> String {
    format!(
        r#"
environment = "test"

[vars]
health = "http://127.0.0.1:{port}/health"

[services.api]
driver = "process"
command = "{DEMO}"
args = ["--listen", "127.0.0.1:{port}"]
stop_signal = "SIGTERM"
grace = "3s"
health_url = "http://127.0.0.1:{port}/health"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[plugins.control]
{control}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
grants.services = {{ api = ["status", "start", "stop", "restart"] }}

[plugins.readonly]
{control}
# It imports http (to wait for health) but may reach nothing.
grants.http = {{ allow = [] }}
grants.services = {{ api = ["status"] }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "api", action = "start", healthy_within = "10s" }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "api", action = "stop" }} }}]

[runbooks.restart]
steps = [{{ uses = "control", with = {{ service = "api", action = "restart", healthy_within = "10s" }} }}]

[runbooks.service-down]
description = "Probe, restart if down, verify"
[[runbooks.service-down.steps]]
id = "probe"
uses = "probe"
on_failure = "continue"
with = {{ url = "{{{{ vars.health }}}}", timeout = "2s" }}
[[runbooks.service-down.steps]]
id = "restart"
uses = "control"
when = "steps.probe.status == 'fail'"
with = {{ service = "api", action = "restart", healthy_within = "10s" }}
[[runbooks.service-down.steps]]
id = "verify"
uses = "probe"
with = {{ url = "{{{{ vars.health }}}}", expect = {{ json = {{ "/status" = "up" }} }} }}
{extra}
"#,
        probe = plugin_lines("http-probe"),
        control = plugin_lines("service-control"),
    )
}

#[test]
fn a_killed_process_is_detected_restarted_and_its_recovery_timed() {
    let port = free_port();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(vec![sb.path().join(".runcap/services/api.json")]);
    sb.write("runcap.toml", &manifest(port, ""));
    sb.run(&["check"]).expect_code(0);

    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(
        caps.contains("service api: status, start, stop, restart"),
        "{caps}"
    );
    assert!(caps.contains("service api: status\n"), "{caps}");

    let started = sb.run(&["run", "start", "--json"]).expect_code(0).json();
    assert!(
        step(&started, "control")["summary"]
            .as_str()
            .unwrap()
            .contains("healthy after")
    );
    let s = services(&sb);
    assert_eq!(s[0]["state"], "running");
    let pid = s[0]["pid"].as_i64().unwrap();
    assert!(alive(pid));

    // Nothing changes when the service is already up.
    let r = sb
        .run(&["run", "service-down", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(step(&r, "restart")["status"], "skipped");

    // Kill it the hard way, as a crash would.
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while services(&sb)[0]["state"] == "running" {
        assert!(Instant::now() < deadline, "the supervisor never noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = services(&sb);
    assert_eq!(s[0]["last_exit_code"], 137, "killed by SIGKILL: {s:#}");

    let r = sb
        .run(&["run", "service-down", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(step(&r, "probe")["status"], "fail");
    let restart = step(&r, "restart");
    assert_eq!(restart["status"], "ok", "{restart:#}");
    let ttr = restart["details"]["time_to_healthy_ms"].as_f64().unwrap();
    assert!(ttr > 0.0 && ttr < 10_000.0, "time to healthy {ttr}");
    assert_eq!(step(&r, "verify")["status"], "ok");
    let human = sb
        .run(&["show", r["run_id"].as_str().unwrap()])
        .expect_code(0)
        .stdout();
    assert!(human.contains("healthy after"), "{human}");

    let s = services(&sb);
    let new_pid = s[0]["pid"].as_i64().unwrap();
    assert_ne!(new_pid, pid);
    assert!(alive(new_pid));

    sb.run(&["run", "stop"]).expect_code(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(new_pid) {
        assert!(Instant::now() < deadline, "stop did not stop the process");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stopping a stopped service is not an error.
    let again = sb.run(&["run", "stop", "--json"]).expect_code(0).json();
    assert!(
        step(&again, "control")["summary"]
            .as_str()
            .unwrap()
            .contains("already stopped"),
        "{again:#}"
    );
}

#[test]
fn ungranted_services_and_verbs_are_denied_and_recorded() {
    let port = free_port();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(vec![sb.path().join(".runcap/services/api.json")]);
    sb.write(
        "runcap.toml",
        &manifest(
            port,
            r#"
[runbooks.overreach]
steps = [
  { id = "restart_readonly", uses = "readonly", on_failure = "continue", with = { service = "api", action = "restart" } },
  { id = "other_service", uses = "control", on_failure = "continue", with = { service = "db", action = "status" } },
  { id = "allowed_status", uses = "readonly", on_failure = "continue", with = { service = "api", action = "status" } },
]
"#,
        ),
    );
    let r = sb
        .run(&["run", "overreach", "--json"])
        .expect_code(0)
        .json();
    let verb = step(&r, "restart_readonly");
    assert_eq!(verb["failure"]["kind"], "denied");
    assert!(
        verb["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("add \"restart\" to plugins.readonly.grants.services.api"),
        "{verb:#}"
    );
    let other = step(&r, "other_service");
    assert_eq!(other["failure"]["kind"], "denied");
    assert!(
        other["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("service `db` is not granted")
    );
    assert_eq!(
        step(&r, "allowed_status")["status"],
        "fail",
        "api is stopped, which status reports as a failure"
    );
    assert!(
        services(&sb)[0]["state"] == "stopped",
        "nothing was started"
    );
    let shown = sb
        .run(&["show", r["run_id"].as_str().unwrap(), "--json"])
        .expect_code(0)
        .json();
    let decisions: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["calls"].as_array().unwrap())
        .map(|c| c["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["denied", "denied", "allowed"]);
}

#[test]
fn a_pid_file_pointing_at_another_process_is_not_trusted() {
    let port = free_port();
    let sb = Sandbox::new();
    sb.write("runcap.toml", &manifest(port, ""));
    // An unrelated process, and a state file that claims it is the service.
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = bystander.id();
    std::fs::create_dir_all(sb.path().join(".runcap/services")).unwrap();
    sb.write(
        ".runcap/services/api.json",
        &serde_json::json!({"supervisor_pid": 1, "pid": pid, "pid_start": 1, "command": DEMO, "started_at_ms": 0}).to_string(),
    );
    let s = services(&sb);
    assert_eq!(s[0]["state"], "stopped");
    assert!(
        s[0]["detail"].as_str().unwrap().contains("not trusting"),
        "{s:#}"
    );
    let r = sb.run(&["run", "stop", "--json"]).expect_code(0).json();
    assert!(
        step(&r, "control")["summary"]
            .as_str()
            .unwrap()
            .contains("already stopped")
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was not signalled"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn concurrent_restarts_of_one_service_take_turns() {
    let port = free_port();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(vec![sb.path().join(".runcap/services/api.json")]);
    sb.write("runcap.toml", &manifest(port, ""));
    sb.run(&["run", "start"]).expect_code(0);
    let children: Vec<_> = (0..3)
        .map(|_| {
            sb.runcap()
                .args(["run", "restart", "--json"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Exactly one service process is left, the one the state file names.
    let listening: Vec<i64> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).contains(&format!("127.0.0.1:{port}"))
                        && String::from_utf8_lossy(&c).starts_with(DEMO)
                })
        })
        .collect();
    let s = services(&sb);
    assert_eq!(listening, vec![s[0]["pid"].as_i64().unwrap()], "{s:#}");
    sb.run(&["run", "stop"]).expect_code(0);
}

#[test]
fn the_command_driver_runs_the_operators_script() {
    let port = free_port();
    let sb = Sandbox::new();
    let pidfile = sb.path().join("web.pid");
    let _cleanup = ListenerCleanup(port);
    sb.write(
        "web.sh",
        &format!(
            r#"#!/bin/sh
# start | stop | status for a demo web server, the way init scripts do it.
PIDFILE="{pid}"
case "$1" in
  start)
    "{DEMO}" --listen 127.0.0.1:{port} >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    echo "started $!" ;;
  stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
    rm -f "$PIDFILE"
    echo stopped ;;
  status)
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && exit 0
    exit 3 ;;
esac
"#,
            pid = pidfile.display()
        ),
    );
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[services.web]
driver = "command"
start = "sh web.sh start"
stop = "sh web.sh stop"
status = "sh web.sh status"
timeout = "10s"
health_url = "http://127.0.0.1:{port}/health"

[plugins.control]
{control}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
grants.services = {{ web = ["status", "start", "stop", "restart"] }}

[runbooks.cycle]
steps = [
  {{ id = "before", uses = "control", on_failure = "continue", with = {{ service = "web", action = "status" }} }},
  {{ id = "restart", uses = "control", with = {{ service = "web", action = "restart", healthy_within = "10s" }} }},
  {{ id = "after", uses = "control", with = {{ service = "web", action = "status" }} }},
  {{ id = "stop", uses = "control", with = {{ service = "web", action = "stop" }} }},
]
"#,
            control = plugin_lines("service-control"),
        ),
    );
    let r = sb.run(&["run", "cycle", "--json"]).expect_code(0).json();
    assert_eq!(
        step(&r, "before")["status"],
        "fail",
        "stopped before: {r:#}"
    );
    let restart = step(&r, "restart");
    assert_eq!(restart["status"], "ok", "{restart:#}");
    assert!(restart["details"]["time_to_healthy_ms"].as_f64().is_some());
    assert_eq!(step(&r, "after")["status"], "ok");
    assert_eq!(step(&r, "stop")["status"], "ok");
    assert!(!pidfile.exists());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is gone"
    );
}

/// Kills the demo servers listening on a test's port (the script's own pid file may name a
/// process long gone, whose pid another process has since been given).
struct ListenerCleanup(u16);

impl Drop for ListenerCleanup {
    fn drop(&mut self) {
        for pid in listeners(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn a_services_output_reaches_its_log_redacted() {
    let sb = Sandbox::new();
    let secret = "s3cr3t-db-password-42";
    sb.write("db-password.txt", secret);
    // Personal data on stdout, a credential and a customer id on stderr, a last line
    // without a newline, then it waits to be stopped.
    sb.write(
        "emit.sh",
        "echo \"login ada.lovelace@example.com paid with 4111 1111 1111 1111\"\n\
         echo \"connecting with $(cat db-password.txt) for CUST-123456\" >&2\n\
         printf 'last words: ssn 078-05-1120'\n\
         exec sleep 60\n",
    );
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.db]
file = "db-password.txt"

[[redaction.custom]]
name = "customer_id"
pattern = "CUST-[0-9]{{6}}"

[services.chatty]
driver = "process"
command = "sh"
args = ["emit.sh"]
grace = "2s"

[plugins.control]
{control}
grants.http = {{ allow = [] }}
grants.services = {{ chatty = ["start", "stop"] }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "chatty", action = "start", no_wait = true }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "chatty", action = "stop" }} }}]
"#,
            control = plugin_lines("service-control"),
        ),
    );
    let state = sb.path().join(".runcap");
    let _cleanup = Cleanup(vec![state.join("services/chatty.json")]);
    sb.run(&["run", "start"]).expect_code(0);
    let log = state.join("services/chatty.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("connecting")) {
        assert!(
            Instant::now() < deadline,
            "the service's lines never reached its log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sb.run(&["run", "stop"]).expect_code(0);
    let text = std::fs::read_to_string(&log).unwrap();
    for token in [
        "login [EMAIL_REDACTED] paid with [CC_REDACTED]\n",
        "connecting with [SECRET_REDACTED] for [CUSTOMER_ID_REDACTED]\n",
        // Written when the service ended, though it never finished the line.
        "last words: ssn [SSN_REDACTED]",
    ] {
        assert!(
            text.contains(token),
            "`{token}` missing from the log:\n{text}"
        );
    }
    // `runcap services --logs` prints its last lines, as redacted as the file. Which of the
    // two full lines came last depends on which pipe was read first (stdout and stderr
    // are separate pipes); the unfinished line is written when the service ends.
    let shown = sb
        .run(&["services", "--logs", "chatty", "--lines", "2"])
        .expect_code(0)
        .stdout();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        [
            "login [EMAIL_REDACTED] paid with [CC_REDACTED]",
            "connecting with [SECRET_REDACTED] for [CUSTOMER_ID_REDACTED]",
        ]
        .contains(&lines[0]),
        "{shown}"
    );
    assert_eq!(lines[1], "last words: ssn [SSN_REDACTED]", "{shown}");
    let unknown = sb.run(&["services", "--logs", "nope"]);
    assert_eq!(unknown.code(), 2);
    assert!(
        unknown.stderr().contains("those are: chatty"),
        "{}",
        unknown.stderr()
    );
    // Nothing under the state directory keeps a planted value.
    for entry in runcap_e2e::files_below(&state) {
        let bytes = std::fs::read(&entry).unwrap();
        let content = String::from_utf8_lossy(&bytes);
        for planted in [
            "ada.lovelace@example.com",
            "4111 1111 1111 1111",
            secret,
            "CUST-123456",
            "078-05-1120",
        ] {
            assert!(
                !content.contains(planted),
                "{} keeps `{planted}`",
                entry.display()
            );
        }
    }
}

#[test]
fn long_service_lines_keep_no_value_across_cuts_and_the_log_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let secret = "s3cr3t-db-password-42";
    sb.write("db-password.txt", secret);
    // Lines of 300 kB, longer than the 64 KiB the supervisor redacts at once, with a value
    // every few dozen bytes at shifting offsets, so whatever sizes the pipe delivers, values
    // sit across every window end.
    const PLANTS: &[(&str, &str)] = &[
        ("[EMAIL_REDACTED]", "ada.lovelace@example.com"),
        ("[CC_REDACTED]", "4111 1111 1111 1111"),
        ("[SSN_REDACTED]", "078-05-1120"),
        ("[API_KEY_REDACTED]", "AKIAIOSFODNN7EXAMPLE"),
        ("[SECRET_REDACTED]", "s3cr3t-db-password-42"),
    ];
    let mut text = String::new();
    let mut planted = [0usize; 5];
    let mut i = 0usize;
    for _ in 0..3 {
        let start = text.len();
        while text.len() - start < 300_000 {
            let k = i % PLANTS.len();
            text.push_str(&"lorem ipsum dolor sit amet "[..1 + (i * 7) % 26]);
            text.push(' ');
            text.push_str(PLANTS[k].1);
            text.push(' ');
            planted[k] += 1;
            i += 1;
        }
        text.push('\n');
    }
    text.push_str("all lines written\n");
    sb.write("long.txt", &text);
    sb.write("emit.sh", "cat long.txt\nexec sleep 60\n");
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.db]
file = "db-password.txt"

[services.long]
driver = "process"
command = "sh"
args = ["emit.sh"]
grace = "2s"

[plugins.control]
{control}
grants.http = {{ allow = [] }}
grants.services = {{ long = ["start", "stop"] }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "long", action = "start", no_wait = true }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "long", action = "stop" }} }}]
"#,
            control = plugin_lines("service-control"),
        ),
    );
    let state = sb.path().join(".runcap");
    let _cleanup = Cleanup(vec![state.join("services/long.json")]);
    sb.run(&["run", "start"]).expect_code(0);
    let log = state.join("services/long.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("all lines written")) {
        assert!(
            Instant::now() < deadline,
            "the service's lines never reached its log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sb.run(&["run", "stop"]).expect_code(0);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log is readable by its owner only");
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.lines().count(), 4, "lines are kept whole");
    for (k, (token, value)) in PLANTS.iter().enumerate() {
        assert!(!out.contains(value), "`{value}` survived in the log");
        assert_eq!(
            out.matches(token).count(),
            planted[k],
            "every `{value}` became one {token}"
        );
    }
    for piece in [
        "4111 1111",
        "1111 1111",
        "AKIAIOSF",
        "lovelace@",
        "db-password",
    ] {
        assert!(!out.contains(piece), "part of a value, `{piece}`, survived");
    }
}

/// Service processes listening on `port`, by pid.
fn listeners(port: u16) -> Vec<i64> {
    let mut pids: Vec<i64> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains(&format!("127.0.0.1:{port}")) && c.starts_with(DEMO)
                })
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_runcap_killed_at_any_moment_of_a_start_never_leaves_an_untracked_instance() {
    let port = free_port();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(vec![sb.path().join(".runcap/services/api.json")]);
    sb.write("runcap.toml", &manifest(port, ""));
    sb.run(&["check"]).expect_code(0);
    // Kill a starting runcap 0 to 40 ms in (around the supervisor's spawn and the first
    // state write), with and without a SIGINT just before; then start again.
    for round in 0..24u64 {
        let mut child = sb
            .runcap()
            .args(["run", "start"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(round * 7 % 41));
        if round % 2 == 0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_millis(round % 13));
        }
        let _ = child.kill();
        child.wait().unwrap();
        let out = sb.run(&["run", "start", "--json"]);
        assert_eq!(out.code(), 0, "round {round}: {}", out.stdout());
        let s = services(&sb);
        let tracked = s[0]["pid"].as_i64();
        assert_eq!(
            listeners(port),
            tracked.into_iter().collect::<Vec<_>>(),
            "round {round}: exactly the tracked instance runs: {s:#}"
        );
        if round % 3 == 0 {
            sb.run(&["run", "stop"]).expect_code(0);
            assert!(listeners(port).is_empty(), "round {round}: stopped");
        }
    }
    sb.run(&["run", "stop"]).expect_code(0);
    assert!(listeners(port).is_empty());
}
