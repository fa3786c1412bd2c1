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
