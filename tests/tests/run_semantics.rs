//! How runs behave as operators expect: a runbook that runs every step and fails at
//! the end, watched steps, typed parameters given with `--var`, `runcap describe`, and
//! one run of a runbook at a time.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::Ordering;

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

fn manifest(svc: &Service, runbooks: &str) -> String {
    format!(
        r#"
environment = "test"

[vars]
base = "{base}"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
{runbooks}
"#,
        base = svc.url(""),
        port = svc.addr.port(),
        probe = plugin_lines("http-probe"),
    )
}

#[test]
fn keep_going_runs_every_step_and_fails_the_run() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.all-services]
keep_going = true
incident = { severity = "high" }

[[runbooks.all-services.steps]]
id = "api"
uses = "probe"
with = { url = "{{ vars.base }}/health" }

[[runbooks.all-services.steps]]
id = "db"
uses = "probe"
with = { url = "{{ vars.base }}/unhealthy" }

[[runbooks.all-services.steps]]
id = "worker"
uses = "probe"
with = { url = "{{ vars.base }}/health" }

[[runbooks.all-services.steps]]
id = "cache"
uses = "probe"
with = { url = "{{ vars.base }}/unhealthy" }
"#,
        ),
    );
    let r = sb
        .run(&["run", "all-services", "--json"])
        .expect_code(1)
        .json();
    assert_eq!(r["status"], "fail", "{r:#}");
    assert_eq!(r["failed_step"], "db");
    for (id, status) in [
        ("api", "ok"),
        ("db", "fail"),
        ("worker", "ok"),
        ("cache", "fail"),
    ] {
        assert_eq!(step(&r, id)["status"], status, "{id}: {r:#}");
    }
    assert_eq!(
        r["incident"]["severity"], "high",
        "a failed run opens its incident: {r:#}"
    );

    let out = sb.run(&["run", "all-services"]).expect_code(1).stdout();
    assert!(
        out.contains("fail: 4 steps, 2 ok, 0 warn, 2 failed"),
        "{out}"
    );
    let hist = sb.run(&["history", "--json"]).expect_code(0).json();
    assert_eq!(
        hist[0]["summary"], "2 of 4 steps failed: db, cache",
        "{hist:#}"
    );

    // `continue` still lets a failure through without failing the run.
    let text = manifest(&svc, "")
        + r#"
[runbooks.tolerant]
[[runbooks.tolerant.steps]]
id = "db"
uses = "probe"
with = { url = "{{ vars.base }}/unhealthy" }
on_failure = "continue"
"#;
    sb.write("runcap.toml", &text);
    sb.run(&["run", "tolerant"]).expect_code(0);
}

#[test]
fn a_watch_waits_for_a_pass_or_requires_every_check_to_pass() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.wait-ready]
[[runbooks.wait-ready.steps]]
id = "ready"
uses = "probe"
with = { url = "{{ vars.base }}/fail-first?n=3" }
watch = { every = "50ms", for = "1m", until = "ok" }

[runbooks.never-ready]
[[runbooks.never-ready.steps]]
id = "ready"
uses = "probe"
with = { url = "{{ vars.base }}/unhealthy" }
watch = { every = "50ms", for = "200ms", until = "ok" }

[runbooks.monitor]
[[runbooks.monitor.steps]]
id = "steady"
uses = "probe"
with = { url = "{{ vars.base }}/health" }
watch = { every = "50ms", for = "200ms" }

[runbooks.monitor-flapping]
[[runbooks.monitor-flapping.steps]]
id = "steady"
uses = "probe"
with = { url = "{{ vars.base }}/flip" }
watch = { every = "50ms", for = "1m" }
"#,
        ),
    );
    let r = sb
        .run(&["run", "wait-ready", "--json"])
        .expect_code(0)
        .json();
    let s = step(&r, "ready");
    assert_eq!(s["attempts"], 4, "three failures, then a pass: {s:#}");
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .starts_with("check 4 passed after "),
        "{s:#}"
    );

    let r = sb
        .run(&["run", "never-ready", "--json"])
        .expect_code(1)
        .json();
    let s = step(&r, "ready");
    let msg = s["failure"]["message"]
        .as_str()
        .or(s["summary"].as_str())
        .unwrap();
    assert!(msg.starts_with("did not pass within 200ms ("), "{s:#}");
    assert!(s["attempts"].as_u64().unwrap() >= 2, "{s:#}");

    let r = sb.run(&["run", "monitor", "--json"]).expect_code(0).json();
    let s = step(&r, "steady");
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .starts_with("held for 200ms: "),
        "{s:#}"
    );
    assert!(
        s["attempts"].as_u64().unwrap() >= 4,
        "checks at 0, 50, 100, 150 ms: {s:#}"
    );

    // The first check of /flip passes, the second fails: the watch ends there.
    let out = sb.run(&["run", "monitor-flapping"]).expect_code(1).stdout();
    assert!(
        out.contains("⋯ watch    steady           check 1 ok"),
        "{out}"
    );
    assert!(out.contains("check 2 failed after "), "{out}");

    // A dry run checks once rather than watching for a minute.
    let r = sb
        .run(&["run", "monitor-flapping", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    let s = step(&r, "steady");
    assert_eq!(s["attempts"], 1, "{s:#}");
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .starts_with("dry run: one check"),
        "{s:#}"
    );
}

#[test]
fn a_broken_watch_is_caught_by_check() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.w]
[[runbooks.w.steps]]
id = "a"
uses = "probe"
with = { url = "{{ vars.base }}/health" }
watch = { every = "1m", for = "10s" }

[[runbooks.w.steps]]
id = "b"
uses = "probe"
with = { url = "{{ vars.base }}/health" }
watch = { every = "1s", for = "10s", until = "down" }

[[runbooks.w.steps]]
id = "c"
uses = "probe"
with = { url = "{{ vars.base }}/health" }
retries = 2
watch = { every = "1s", for = "10s" }
"#,
        ),
    );
    let e = sb.run(&["check"]).expect_code(2).stderr();
    for needle in [
        "runbooks.w.steps[0].watch.every",
        "checking every 1m over 10s is not a watch",
        "runbooks.w.steps[1].watch.until",
        "`down` is not a watch condition",
        "runbooks.w.steps[2].watch",
        "retries would repeat each check",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from:\n{e}");
    }
}

fn params_manifest(svc: &Service, extra_step: &str) -> String {
    manifest(
        svc,
        &format!(
            r#"
[runbooks.check-one]
description = "Probe one endpoint of the service"

[runbooks.check-one.params.endpoint]
values = ["health", "unhealthy", "json"]
description = "which endpoint to probe"

[runbooks.check-one.params.slow_ms]
type = "int"
min = 0
max = 500
default = 10

[[runbooks.check-one.steps]]
id = "probe"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/{{{{ params.endpoint }}}}" }}

[[runbooks.check-one.steps]]
id = "slow"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/slow?ms={{{{ params.slow_ms }}}}" }}
{extra_step}
"#
        ),
    )
}

#[test]
fn parameters_are_typed_checked_and_described() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write("runcap.toml", &params_manifest(&svc, ""));
    sb.run(&["check"]).expect_code(0);

    let r = sb
        .run(&["run", "check-one", "--var", "endpoint=json", "--json"])
        .expect_code(0)
        .json();
    assert!(
        step(&r, "probe")["details"].to_string().contains("/json"),
        "{r:#}"
    );
    assert!(
        step(&r, "slow")["details"].to_string().contains("ms=10"),
        "{r:#}"
    );
    let r = sb
        .run(&[
            "run",
            "check-one",
            "--var",
            "endpoint=unhealthy",
            "--var",
            "slow_ms=20",
            "--json",
        ])
        .expect_code(1)
        .json();
    assert_eq!(step(&r, "probe")["status"], "fail", "{r:#}");

    // Bad values stop the run before anything runs, and say what would work.
    let e = sb
        .run(&["run", "check-one", "--var", "endpoint=admin"])
        .expect_code(2)
        .stderr();
    assert!(
        e.contains("parameter `endpoint`: `admin` is not one of health, unhealthy, json"),
        "{e}"
    );
    let e = sb
        .run(&[
            "run",
            "check-one",
            "--var",
            "endpoint=health",
            "--var",
            "slow_ms=9000",
        ])
        .expect_code(2)
        .stderr();
    assert!(e.contains("9000 is above the maximum 500"), "{e}");
    let e = sb
        .run(&["run", "check-one", "--var", "endpont=health"])
        .expect_code(2)
        .stderr();
    assert!(
        e.contains("runbook `check-one` has no parameter `endpont` (it has: endpoint, slow_ms)"),
        "{e}"
    );
    // The hint for a missing value, pasted, runs.
    let e = sb.run(&["run", "check-one"]).expect_code(2).stderr();
    let hint = e
        .split("pass ")
        .nth(1)
        .and_then(|rest| rest.split(' ').take(2).collect::<Vec<_>>().into())
        .unwrap_or_default();
    assert_eq!(hint, ["--var", "endpoint=VALUE"], "{e}");
    sb.run(&[
        "run",
        "check-one",
        hint[0],
        &hint[1].replace("VALUE", "health"),
    ])
    .expect_code(0);
    let nothing = sb.run(&["history", "--json"]).expect_code(0).json();
    assert_eq!(
        nothing.as_array().unwrap().len(),
        3,
        "refused runs are not recorded: {nothing:#}"
    );

    let d = sb.run(&["describe", "check-one"]).expect_code(0).stdout();
    for needle in [
        "Probe one endpoint of the service",
        "usage: runcap run check-one --var endpoint=VALUE [--var slow_ms=VALUE]",
        "endpoint             one of health, unhealthy, json (required)",
        "which endpoint to probe",
        "slow_ms              int 0..500 (default 10)",
        "probe                probe",
        "overlap: wait",
    ] {
        assert!(d.contains(needle), "`{needle}` missing from:\n{d}");
    }
    let d = sb
        .run(&["describe", "check-one", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(d["params"]["slow_ms"]["default"], 10);
    assert_eq!(d["params"]["endpoint"]["required"], true);

    // A template naming an undeclared parameter, or a default of the wrong type, is
    // caught by check.
    sb.write(
        "runcap.toml",
        &params_manifest(
            &svc,
            r#"
[[runbooks.check-one.steps]]
id = "typo"
uses = "probe"
with = { url = "{{ vars.base }}/{{ params.endpont }}" }

[runbooks.check-one.params.retries]
type = "int"
default = "three"
"#,
        ),
    );
    let e = sb.run(&["check"]).expect_code(2).stderr();
    for needle in [
        "runbooks.check-one.steps[2].with",
        "this runbook has no parameter `endpont` (declared: endpoint, slow_ms)",
        "runbooks.check-one.params.retries.default",
        "expected an integer, found \"three\"",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from:\n{e}");
    }
}

/// A runbook that holds its lock until the service is up again.
fn gate_manifest(svc: &Service, overlap: &str) -> String {
    manifest(
        svc,
        &format!(
            r#"
[runbooks.gate]
overlap = "{overlap}"
[[runbooks.gate.steps]]
id = "until_up"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/health" }}
watch = {{ every = "20ms", for = "2m", until = "ok" }}
"#
        ),
    )
}

/// Polls until the runbook's lock names a holder: the first run is under way.
fn wait_for_holder(sb: &Sandbox, first: &mut std::process::Child) -> String {
    let lock = sb.path().join(".runcap/locks/runbook-gate.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // The note is padded with spaces to a fixed width.
        if let Ok(text) = std::fs::read_to_string(&lock)
            && text.starts_with("run ")
        {
            return text.trim_end().to_string();
        }
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the first run ended ({status}) before taking its lock");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_second_run_of_a_runbook_is_refused_while_one_is_under_way() {
    let svc = Service::start("127.0.0.1", None);
    svc.state.down.store(true, Ordering::SeqCst);
    let sb = Sandbox::new();
    sb.write("runcap.toml", &gate_manifest(&svc, "refuse"));
    let mut first = sb
        .runcap()
        .args(["run", "gate"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let holder = wait_for_holder(&sb, &mut first);
    let e = sb.run(&["run", "gate"]).expect_code(75).stderr();
    assert!(
        e.contains(&format!("runbook `gate` is already running ({holder})")),
        "{e}"
    );
    assert!(e.contains("overlap policy is \"refuse\""), "{e}");
    svc.state.down.store(false, Ordering::SeqCst);
    assert!(first.wait().unwrap().success());
    // Free again.
    sb.run(&["run", "gate"]).expect_code(0);
}

#[test]
fn a_second_run_of_a_runbook_waits_for_the_first() {
    let svc = Service::start("127.0.0.1", None);
    svc.state.down.store(true, Ordering::SeqCst);
    let sb = Sandbox::new();
    sb.write("runcap.toml", &gate_manifest(&svc, "wait"));
    let mut first = sb
        .runcap()
        .args(["run", "gate", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_holder(&sb, &mut first);
    let mut second = sb
        .runcap()
        .args(["run", "gate", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second says it waits, and only then is the first let through.
    let mut stderr = BufReader::new(second.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("waiting: runbook `gate` is already running (run ") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the second run never waited"
        );
    }
    svc.state.down.store(false, Ordering::SeqCst);
    let one: serde_json::Value =
        serde_json::from_slice(&first.wait_with_output().unwrap().stdout).unwrap();
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success());
    let two: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first_end = one["started_at_ms"].as_f64().unwrap() + one["duration_ms"].as_f64().unwrap();
    assert!(
        two["started_at_ms"].as_f64().unwrap() >= first_end.floor(),
        "the runs overlapped: {one:#} {two:#}"
    );
}
