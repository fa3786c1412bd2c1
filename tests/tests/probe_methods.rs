//! The probe makes API mutations a runbook needs (PUT, PATCH, DELETE, POST) with a body,
//! and judges the answer; in a dry run none is sent, the grant is still checked, and the
//! step says so.

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

#[test]
fn mutations_are_sent_and_judged_and_a_dry_run_sends_none() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let mut steps = String::new();
    for method in ["PUT", "PATCH", "DELETE", "POST"] {
        steps += &format!(
            "  {{ id = \"{id}\", uses = \"probe\", with = {{ url = \"{url}\", method = \"{method}\", body = \"release=v2\", expect = {{ json = {{ \"/method\" = \"{method}\", \"/body\" = \"release=v2\" }} }} }} }},\n",
            id = method.to_lowercase(),
            url = svc.url("/echo"),
        );
    }
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.api]
steps = [
{steps}]
"#,
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
        ),
    );
    sb.run(&["check"]).expect_code(0);
    let report = sb.run(&["run", "api", "--json"]).expect_code(0).json();
    for id in ["put", "patch", "delete", "post"] {
        let s = step(&report, id);
        assert_eq!(s["status"], "ok", "{s:#}");
    }

    use std::sync::atomic::Ordering;
    let before = svc.state.requests.load(Ordering::Relaxed);
    let dry = sb
        .run(&["run", "api", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    for id in ["put", "patch", "delete", "post"] {
        let s = step(&dry, id);
        assert_eq!(s["details"]["dry_run"], true, "{s:#}");
        assert_eq!(s["calls"][0]["decision"], "dry-run", "{s:#}");
    }
    assert_eq!(
        svc.state.requests.load(Ordering::Relaxed),
        before,
        "a dry run sends no mutation"
    );
}

#[test]
fn a_batch_of_requests_is_judged_by_its_p95() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.fast]
steps = [{{ id = "load", uses = "probe", with = {{ url = "{health}", samples = 20, p95_below = "2s", success_rate_above = 0.95 }} }}]

[runbooks.slow]
steps = [{{ id = "load", uses = "probe", with = {{ url = "{slow}", samples = 3, p95_below = "20ms" }} }}]
"#,
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
            health = svc.url("/health"),
            slow = svc.url("/slow?ms=60"),
        ),
    );
    use std::sync::atomic::Ordering;
    let before = svc.state.requests.load(Ordering::Relaxed);
    let fast = sb.run(&["run", "fast", "--json"]).expect_code(0).json();
    let s = step(&fast, "load");
    assert_eq!(s["details"]["samples"], 20, "{s:#}");
    assert_eq!(s["details"]["success_rate"], 1.0, "{s:#}");
    assert_eq!(svc.state.requests.load(Ordering::Relaxed) - before, 20);
    let slow = sb.run(&["run", "slow", "--json"]);
    assert_eq!(slow.code(), 1);
    let report = slow.json();
    let s = step(&report, "load");
    assert!(
        s["summary"].as_str().unwrap().contains("is not below 20ms"),
        "{s:#}"
    );
    assert!(s["details"]["p95_ms"].as_f64().unwrap() >= 60.0, "{s:#}");
}
