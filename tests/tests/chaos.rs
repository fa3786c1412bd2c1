//! Chaos drills on real things: a supervised HTTP service reached through a loopback
//! proxy, faults of every kind, and runcap itself killed with SIGKILL or interrupted in
//! the middle of a fault. No fault may survive any way the host can stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, free_port, plugin_lines, step};

const DEMO: &str = env!("CARGO_BIN_EXE_runcap-demo-service");

/// One GET of /health through `port`: Ok(elapsed) on a 200, Err(what went wrong).
fn get(port: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.starts_with("HTTP/1.1 200") {
        Ok(started.elapsed())
    } else if text.is_empty() {
        Err("connection closed".into())
    } else {
        Err(text.lines().next().unwrap_or("").to_string())
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A drill environment: the demo service supervised by runcap, reached through a proxy.
struct Drill {
    sb: Sandbox,
    api: u16,
    proxy: u16,
    /// A server outside the drill that long steps wait on.
    _hold: runcap_e2e::Service,
}

impl Drop for Drill {
    fn drop(&mut self) {
        // Leave no process behind, whatever the test did.
        for f in ["services/api.json", "proxies/api.json"] {
            runcap_e2e::kill_recorded(&self.sb.path().join(".runcap").join(f));
        }
    }
}

impl Drill {
    fn new(runbooks: &str) -> Drill {
        let (api, proxy) = (free_port(), free_port());
        let hold = runcap_e2e::Service::start("127.0.0.1", None);
        let sb = Sandbox::new();
        std::fs::create_dir_all(sb.path().join("data")).unwrap();
        sb.write("data/index.db", &"index-record-0123456789\n".repeat(2000));
        sb.write(
            "runcap.toml",
            &format!(
                r#"
environment = "drill"

[vars]
via_proxy = "http://127.0.0.1:{proxy}/health"
direct = "http://127.0.0.1:{api}"
hold = "{hold_url}"

[services.api]
driver = "process"
command = "{DEMO}"
args = ["--listen", "127.0.0.1:{api}"]
grace = "3s"
health_url = "http://127.0.0.1:{api}/health"

[proxies.api]
listen = "127.0.0.1:{proxy}"
upstream = "127.0.0.1:{api}"

[plugins.chaos]
{chaos}
limits = {{ time = "1m" }}
grants.http = {{ allow = ["http://127.0.0.1:{proxy}", "http://127.0.0.1:{api}"] }}
grants.faults.kill = {{ targets = ["api"], max_duration = "1m" }}
grants.faults.stop = {{ targets = ["api"], max_duration = "1m" }}
grants.faults.latency = {{ targets = ["api"], max_duration = "1m" }}
grants.faults.drop = {{ targets = ["api"], max_duration = "1m" }}
grants.faults.partition = {{ targets = ["api"], max_duration = "1m" }}
grants.faults.corrupt-file = {{ targets = ["data"], max_duration = "1m" }}
grants.faults.max_concurrent = 2

[plugins.control]
{control}
limits = {{ time = "1m" }}
grants.http = {{ allow = ["http://127.0.0.1:{api}"] }}
grants.services = {{ api = ["status", "start", "stop", "restart"] }}

[plugins.probe]
{probe}
limits = {{ time = "2m" }}
grants.http = {{ allow = ["http://127.0.0.1:{proxy}", "http://127.0.0.1:{api}", "http://127.0.0.1:{hold_port}"] }}

[plugins.sneaky]
{sneaky}
limits = {{ time = "3s" }}
grants.secrets = []
grants.faults.partition = {{ targets = ["api"], max_duration = "1m" }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "api", action = "start" }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "api", action = "stop" }} }}]
{runbooks}
"#,
                chaos = plugin_lines("chaos"),
                control = plugin_lines("service-control"),
                probe = plugin_lines("http-probe"),
                sneaky = plugin_lines("sneaky"),
                hold_url = hold.url(""),
                hold_port = hold.addr.port(),
            ),
        );
        // Built before anything starts, so its Drop cleans up whatever fails below.
        let d = Drill {
            sb,
            api,
            proxy,
            _hold: hold,
        };
        d.sb.run(&["check"]).expect_code(0);
        d.sb.run(&["run", "start"]).expect_code(0);
        // Drills reach the service through the proxy from their first probe on.
        d.sb.run(&["proxies", "--start"]).expect_code(0);
        wait_until("the proxy answers", 10, || get(d.proxy).is_ok());
        d
    }

    fn faults(&self) -> serde_json::Value {
        self.sb.run(&["faults", "--json"]).expect_code(0).json()
    }

    fn spawn(&self, runbook: &str) -> Child {
        self.sb
            .runcap()
            .args(["run", runbook, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until a fault is active in the journal.
    fn wait_active(&self) -> serde_json::Value {
        let mut found = serde_json::Value::Null;
        wait_until("a fault is active", 20, || {
            let f = self.faults();
            match f
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["state"] == "active")
            {
                Some(x) => {
                    found = x.clone();
                    true
                }
                None => false,
            }
        });
        found
    }
}

fn hold_runbook(name: &str, fault: &str) -> String {
    format!(
        r#"
[runbooks.{name}]
[[runbooks.{name}.steps]]
id = "inject"
uses = "chaos"
with = {{ action = "inject", fault = {fault} }}
[[runbooks.{name}.steps]]
id = "hold"
uses = "probe"
on_failure = "continue"
with = {{ url = "{{{{ vars.hold }}}}/slow?ms=60000", timeout = "90s" }}
"#
    )
}

#[test]
fn a_killed_service_recovers_through_the_restart_step_within_the_rto() {
    let d = Drill::new(
        r#"
[runbooks.kill-drill]
[[runbooks.kill-drill.steps]]
id = "inject"
uses = "chaos"
with = { action = "inject", steady_state = { url = "{{ vars.via_proxy }}" }, fault = { kind = "kill", target = "api", duration = "30s" } }
[[runbooks.kill-drill.steps]]
id = "restart"
uses = "control"
with = { service = "api", action = "restart", healthy_within = "20s" }
[[runbooks.kill-drill.steps]]
id = "observe"
uses = "chaos"
with = { action = "observe", steady_state = { url = "{{ vars.via_proxy }}" }, since_ms = "{{ steps.inject.details.injected_at_ms }}", rto = "20s" }
"#,
    );
    let pid_before = d.sb.run(&["services", "--json"]).json()[0]["pid"]
        .as_i64()
        .unwrap();
    let r =
        d.sb.run(&["run", "kill-drill", "--json"])
            .expect_code(0)
            .json();
    assert!(
        step(&r, "inject")["summary"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{r:#}"
    );
    let observe = step(&r, "observe");
    assert_eq!(observe["status"], "ok", "{observe:#}");
    assert_eq!(observe["details"]["met_rto"], true);
    let ttr = observe["details"]["time_to_recovery_ms"].as_f64().unwrap();
    assert!(ttr > 0.0 && ttr < 20_000.0);
    let human =
        d.sb.run(&["show", r["run_id"].as_str().unwrap()])
            .expect_code(0)
            .stdout();
    assert!(human.contains("within the 20s RTO"), "{human}");
    let s = d.sb.run(&["services", "--json"]).json();
    assert_ne!(
        s[0]["pid"].as_i64().unwrap(),
        pid_before,
        "a new process serves now"
    );
    let f = d.faults();
    assert_eq!(f[0]["state"], "reverted", "{f:#}");
    assert_eq!(f[0]["reverted_by"], "run-end");
}

#[test]
fn latency_is_measured_by_the_probe_and_removed_afterwards() {
    let d = Drill::new(
        r#"
[runbooks.latency]
[[runbooks.latency.steps]]
id = "inject"
uses = "chaos"
with = { action = "inject", steady_state = { url = "{{ vars.via_proxy }}" }, fault = { kind = "latency", target = "api", latency = "400ms", duration = "30s" } }
[[runbooks.latency.steps]]
id = "slow"
uses = "probe"
with = { url = "{{ vars.via_proxy }}", expect = { response_time_below = "5s" }, warn = { response_time_below = "200ms" } }
"#,
    );
    let r =
        d.sb.run(&["run", "latency", "--json"])
            .expect_code(0)
            .json();
    let slow = step(&r, "slow");
    assert_eq!(slow["status"], "warn", "{slow:#}");
    assert!(slow["details"]["response_time_ms"].as_f64().unwrap() >= 400.0);
    assert_eq!(r["reverted_faults"][0]["ok"], true);
    assert!(
        get(d.proxy).unwrap() < Duration::from_millis(300),
        "the latency is gone"
    );
}

#[test]
fn a_partition_drill_fails_the_probe_then_heals_within_the_rto() {
    let d = Drill::new(
        r#"
[runbooks.partition]
[[runbooks.partition.steps]]
id = "drill"
uses = "chaos"
with = { steady_state = { url = "{{ vars.via_proxy }}" }, fault = { kind = "partition", target = "api", duration = "30s" }, hold = "600ms", rto = "10s" }
"#,
    );
    let r =
        d.sb.run(&["run", "partition", "--json"])
            .expect_code(0)
            .json();
    let drill = step(&r, "drill");
    assert_eq!(drill["status"], "ok", "{drill:#}");
    assert!(
        drill["details"]["degraded_probes"].as_u64().unwrap() >= 2,
        "the probe saw the partition: {drill:#}"
    );
    assert_eq!(drill["details"]["met_rto"], true);
    assert!(get(d.proxy).is_ok(), "healed");
    let control: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.sb.path().join(".runcap/proxies/api.faults.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(control["faults"], serde_json::json!([]));
}

#[test]
fn corrupt_file_is_restored_byte_for_byte() {
    let d = Drill::new(&hold_runbook(
        "corrupt",
        r#"{ kind = "corrupt-file", target = "data", path = "index.db", duration = "30s" }"#,
    ));
    let file = d.sb.path().join("data/index.db");
    let original = std::fs::read(&file).unwrap();
    let child = d.spawn("corrupt");
    d.wait_active();
    assert_ne!(
        std::fs::read(&file).unwrap(),
        original,
        "the file is damaged while the fault holds"
    );
    // End the run the ordinary way (SIGTERM), long step and all.
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        original,
        "restored byte for byte"
    );
    let f = d.faults();
    assert_eq!(f[0]["reverted_by"], "signal");
    assert!(f[0]["revert_result"].as_str().unwrap().contains("restored"));
}

/// Kills runcap with SIGKILL while `fault` holds, checks `in_effect`, then checks the
/// next runcap command reverts it and `healed` holds.
fn killed_mid_fault(
    fault: &str,
    in_effect: impl Fn(&Drill) -> bool,
    healed: impl Fn(&Drill) -> bool,
) {
    let d = Drill::new(&hold_runbook("hold", fault));
    let mut child = d.spawn("hold");
    let active = d.wait_active();
    wait_until("the fault takes effect", 10, || in_effect(&d));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(in_effect(&d), "nothing reverted it yet ({active})");
    // A read-only command says what was left behind and changes nothing.
    let out = d.sb.run(&["faults"]);
    assert!(
        out.stderr().contains("was left open by a runcap that died")
            && out.stderr().contains("runcap recover"),
        "{}",
        out.stderr()
    );
    assert!(in_effect(&d), "`runcap faults` reverted nothing");
    // So do the commands that otherwise never read the store.
    for cmd in [&["services"][..], &["proxies"], &["config"], &["caps"]] {
        let out = d.sb.run(cmd);
        assert!(
            out.stderr().contains("was left open by a runcap that died"),
            "{cmd:?}: {}",
            out.stderr()
        );
    }
    assert!(in_effect(&d), "nor did they");
    let out = d.sb.run(&["recover"]);
    assert!(
        out.stderr().contains("reverted fault")
            && out.stderr().contains("left open by a runcap that died"),
        "{}",
        out.stderr()
    );
    wait_until("the fault is healed", 20, || healed(&d));
    let f = d.faults();
    assert_eq!(f[0]["state"], "reverted", "{f:#}");
    assert_eq!(f[0]["reverted_by"], "recovery");
    d.sb.run(&["audit", "verify"]).expect_code(0);
}

#[test]
fn sigkill_during_kill_and_stop_faults() {
    let down = |d: &Drill| get(d.api).is_err();
    let up = |d: &Drill| get(d.api).is_ok();
    killed_mid_fault(
        r#"{ kind = "kill", target = "api", duration = "50s" }"#,
        down,
        up,
    );
    killed_mid_fault(
        r#"{ kind = "stop", target = "api", duration = "50s" }"#,
        down,
        up,
    );
}

#[test]
fn sigkill_during_network_faults() {
    killed_mid_fault(
        r#"{ kind = "latency", target = "api", latency = "700ms", duration = "50s" }"#,
        |d| get(d.proxy).is_ok_and(|t| t >= Duration::from_millis(700)),
        |d| get(d.proxy).is_ok_and(|t| t < Duration::from_millis(500)),
    );
    killed_mid_fault(
        r#"{ kind = "partition", target = "api", duration = "50s" }"#,
        |d| get(d.proxy).is_err(),
        |d| get(d.proxy).is_ok(),
    );
    killed_mid_fault(
        r#"{ kind = "drop", target = "api", drop_rate = 1.0, duration = "50s" }"#,
        |d| get(d.proxy).is_err(),
        |d| get(d.proxy).is_ok(),
    );
}

#[test]
fn sigkill_during_corrupt_file() {
    let original = "index-record-0123456789\n".repeat(2000).into_bytes();
    let damaged = |d: &Drill| std::fs::read(d.sb.path().join("data/index.db")).unwrap() != original;
    killed_mid_fault(
        r#"{ kind = "corrupt-file", target = "data", path = "index.db", duration = "50s" }"#,
        damaged,
        |d| !damaged(d),
    );
}

#[test]
fn sigint_during_a_drill_reverts_and_exits_130() {
    let d = Drill::new(&hold_runbook(
        "hold",
        r#"{ kind = "partition", target = "api", duration = "50s" }"#,
    ));
    let child = d.spawn("hold");
    d.wait_active();
    assert!(get(d.proxy).is_err());
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["reverted_faults"][0]["ok"], true);
    assert!(get(d.proxy).is_ok(), "healed at once");
    assert_eq!(d.faults()[0]["reverted_by"], "signal");
}

#[test]
fn a_plugin_that_traps_or_loops_after_injecting_still_gets_its_fault_reverted() {
    let d = Drill::new(
        r#"
[runbooks.trap]
steps = [{ uses = "sneaky", with = { mode = "inject-then-panic", target = "api" } }]

[runbooks.loop]
steps = [{ uses = "sneaky", with = { mode = "inject-then-loop", target = "api" } }]

[runbooks.expire]
steps = [{ uses = "sneaky", with = { mode = "inject-then-loop", target = "api", seconds = 1 } }]
"#,
    );
    let r = d.sb.run(&["run", "trap", "--json"]).expect_code(1).json();
    assert_eq!(r["steps"][0]["failure"]["kind"], "trap");
    assert_eq!(r["reverted_faults"][0]["ok"], true);
    assert!(get(d.proxy).is_ok());

    let r = d.sb.run(&["run", "loop", "--json"]).expect_code(1).json();
    assert_eq!(r["steps"][0]["failure"]["kind"], "timeout");
    assert_eq!(r["reverted_faults"][0]["ok"], true);
    assert!(get(d.proxy).is_ok());

    // A fault whose time runs out is reverted while the plugin still spins.
    let child = d.spawn("expire");
    d.wait_active();
    wait_until("the fault expires", 10, || {
        d.faults()[0]["state"] == "reverted"
    });
    assert_eq!(d.faults()[0]["reverted_by"], "expiry");
    assert!(get(d.proxy).is_ok());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn denied_faults_are_audited_and_caps_shows_the_blast_radius() {
    let d = Drill::new(
        r#"
[runbooks.overreach]
steps = [
  { id = "ungranted_target", uses = "chaos", on_failure = "continue", with = { action = "inject", fault = { kind = "kill", target = "db" } } },
  { id = "too_long", uses = "chaos", on_failure = "continue", with = { action = "inject", fault = { kind = "partition", target = "api", duration = "2h" } } },
  { id = "ungranted_kind", uses = "sneaky", on_failure = "continue", with = { mode = "inject-then-panic", target = "elsewhere" } },
]
"#,
    );
    let r =
        d.sb.run(&["run", "overreach", "--json"])
            .expect_code(0)
            .json();
    for (id, needle) in [
        ("ungranted_target", "kill on `db` is not granted"),
        ("too_long", "exceeds the granted maximum of 1m"),
        ("ungranted_kind", "partition on `elsewhere` is not granted"),
    ] {
        let s = step(&r, id);
        assert_eq!(s["failure"]["kind"], "denied", "{s:#}");
        assert!(
            s["failure"]["message"].as_str().unwrap().contains(needle),
            "{s:#}"
        );
    }
    let conn = rusqlite::Connection::open(d.sb.path().join(".runcap/runcap.db")).unwrap();
    let denied: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind = 'fault.denied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(denied, 3);
    assert!(
        d.faults().as_array().unwrap().is_empty(),
        "nothing was injected"
    );

    let caps = d.sb.run(&["caps"]).expect_code(0).stdout();
    for line in [
        "fault kill on api for at most 1m",
        "fault corrupt-file on data for at most 1m",
        "at most 2 at once",
        "fault partition on api for at most 1m",
    ] {
        assert!(caps.contains(line), "`{line}` missing from:\n{caps}");
    }
}

#[test]
fn dry_run_lists_faults_and_touches_nothing() {
    let d = Drill::new(
        &hold_runbook(
            "hold",
            r#"{ kind = "partition", target = "api", duration = "30s" }"#,
        )
        .replace("slow?ms=60000", "health"),
    );
    let r =
        d.sb.run(&["run", "hold", "--json", "--dry-run"])
            .expect_code(0)
            .json();
    assert!(
        step(&r, "inject")["summary"]
            .as_str()
            .unwrap()
            .contains("dry run: would inject partition on api for 30s"),
        "{r:#}"
    );
    assert!(d.faults().as_array().unwrap().is_empty());
    assert!(get(d.proxy).is_ok());
}

#[test]
fn cert_expiry_moves_the_probes_clock() {
    let pki = runcap_e2e::demo_service::test_pki(30).unwrap();
    let tls = runcap_e2e::Service::start("127.0.0.1", Some(pki.acceptor.clone()));
    let sb = Sandbox::new();
    sb.write("ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}/health", tls.addr.port());
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "drill"

[plugins.chaos]
{chaos}
grants.http = {{ allow = [] }}
grants.faults.cert-expiry = {{ targets = ["tls-probe"], max_duration = "1m" }}

[plugins.tls-probe]
{probe}
grants.http = {{ allow = ["https://localhost:*"], ca = ["ca.pem"] }}

[runbooks.expiry]
[[runbooks.expiry.steps]]
id = "before"
uses = "tls-probe"
with = {{ url = "{url}", expect = {{ cert_days_min = 14 }} }}
[[runbooks.expiry.steps]]
id = "inject"
uses = "chaos"
with = {{ action = "inject", fault = {{ kind = "cert-expiry", target = "tls-probe", days = 60 }} }}
[[runbooks.expiry.steps]]
id = "after"
uses = "tls-probe"
on_failure = "continue"
with = {{ url = "{url}", expect = {{ cert_days_min = 14 }} }}
"#,
            chaos = plugin_lines("chaos"),
            probe = plugin_lines("http-probe"),
        ),
    );
    let r = sb.run(&["run", "expiry", "--json"]).expect_code(0).json();
    assert_eq!(step(&r, "before")["status"], "ok");
    let after = step(&r, "after");
    assert_eq!(after["status"], "fail", "{after:#}");
    assert!(after["details"]["cert_days_left"].as_f64().unwrap() < 0.0);
    assert_eq!(r["reverted_faults"][0]["kind"], "cert-expiry");
    // The next run sees the real clock.
    let again = sb.run(&["run", "expiry", "--json"]).expect_code(0).json();
    assert_eq!(step(&again, "before")["status"], "ok");
    let _ = Path::new("");
}

#[test]
fn the_game_day_example_runs_every_drill_and_leaves_nothing_behind() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/game-day");
    let manifest = root.join("runcap.toml");
    let index = std::fs::read(root.join("data/index.json")).unwrap();
    let sb = Sandbox::new();
    let state = sb.path().join("state");
    let (m, s) = (manifest.to_str().unwrap(), state.to_str().unwrap());
    /// Stops the example's service and proxy however the test ends.
    struct Stop<'a>(&'a Sandbox, &'a str, &'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0
                .run(&["run", "stop", "--env", self.1, "--state-dir", self.2]);
            self.0
                .run(&["proxies", "--stop", "--env", self.1, "--state-dir", self.2]);
        }
    }
    let _stop = Stop(&sb, m, s);
    let r = sb
        .run(&["run", "game-day", "--env", m, "--state-dir", s, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(r["status"], "ok", "{r:#}");
    for id in [
        "kill_recovered",
        "stop_recovered",
        "latency",
        "drop",
        "partition",
        "corrupt_index",
    ] {
        let s = step(&r, id);
        assert_eq!(s["details"]["met_rto"], true, "{id}: {s:#}");
        assert!(
            s["details"]["time_to_recovery_ms"].as_f64().is_some(),
            "{id}"
        );
    }
    assert_eq!(step(&r, "cert_alert")["status"], "ok");
    assert_eq!(
        std::fs::read(root.join("data/index.json")).unwrap(),
        index,
        "the index is whole again"
    );
    let faults = sb
        .run(&["faults", "--env", m, "--state-dir", s, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(faults.as_array().unwrap().len(), 7, "one fault per kind");
    assert!(
        faults
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] == "reverted"),
        "{faults:#}"
    );
}

#[test]
fn only_drills_start_proxies_and_the_output_says_they_stay() {
    let d = Drill::new(&hold_runbook(
        "unused",
        "{ kind = \"latency\", target = \"api\", duration = \"1s\", latency = \"10ms\" }",
    ));
    let proxy_up = |d: &Drill| std::net::TcpStream::connect(("127.0.0.1", d.proxy)).is_ok();
    d.sb.run(&["proxies", "--stop"]).expect_code(0);
    wait_until("the proxy is gone", 10, || !proxy_up(&d));
    // `stop` only stops a service: no proxy process is started for it.
    let out = d.sb.run(&["run", "stop"]).expect_code(0);
    assert!(
        !proxy_up(&d),
        "a run without network faults started a proxy"
    );
    assert!(!out.stderr().contains("drill proxy"), "{}", out.stderr());
    let st = d.sb.run(&["proxies", "--json"]).expect_code(0).json();
    assert_eq!(st[0]["state"], "stopped", "{st:#}");
    // Asked for, it starts.
    d.sb.run(&["proxies", "--start"]).expect_code(0);
    wait_until("the proxy listens", 10, || proxy_up(&d));
    d.sb.run(&["proxies", "--stop"]).expect_code(0);
    wait_until("the proxy is gone", 10, || !proxy_up(&d));
    // A drill whose chaos plugin may inject network faults starts it, and says it stays.
    let out = d.sb.run(&["run", "start"]);
    assert!(!out.stderr().contains("drill proxy"), "{}", out.stderr());
    let drill = format!(
        "{}\n{}",
        std::fs::read_to_string(d.sb.path().join("runcap.toml")).unwrap(),
        "[runbooks.ping]\nsteps = [{ uses = \"chaos\", with = { action = \"inject\", fault = { kind = \"latency\", target = \"api\", duration = \"1s\", latency = \"10ms\" } } }]\n"
    );
    d.sb.write("runcap.toml", &drill);
    let out = d.sb.run(&["run", "ping"]);
    assert!(
        out.stderr().contains("started drill proxy api")
            && out.stderr().contains("keeps running after this run"),
        "{}",
        out.stderr()
    );
    assert!(proxy_up(&d));
    d.sb.run(&["run", "stop"]).expect_code(0);
}
