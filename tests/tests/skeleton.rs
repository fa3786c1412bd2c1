//! The walking skeleton end to end: the `runcap` binary, real plugins built for
//! wasm32-wasip2, and real HTTP(S) servers on loopback.

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

fn failure_kind(step: &serde_json::Value) -> &str {
    step["failure"]["kind"].as_str().unwrap_or("")
}

#[test]
fn probes_a_real_service_and_reports_every_condition() {
    let svc = Service::start("127.0.0.1", None);
    let other = Service::start("127.0.0.2", None);
    let sb = Sandbox::new();
    let base = svc.url("");
    let elsewhere = other.url("/health");
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.http-probe]
{plugin}
limits = {{ time = "5s" }}
grants.http = {{ allow = ["http://127.0.0.1:*"] }}

[runbooks.health]
description = "Is the service up, fast and well?"

[[runbooks.health.steps]]
id = "healthy"
uses = "http-probe"
with = {{ url = "{base}/health", expect = {{ status = 200, json = {{ "/status" = "up", "/checks/db" = true }} }} }}

[[runbooks.health.steps]]
id = "unhealthy"
uses = "http-probe"
on_failure = "continue"
with = {{ url = "{base}/unhealthy" }}

[[runbooks.health.steps]]
id = "slow"
uses = "http-probe"
on_failure = "continue"
with = {{ url = "{base}/slow?ms=400", expect = {{ response_time_below = "150ms" }} }}

[[runbooks.health.steps]]
id = "json"
uses = "http-probe"
with = {{ url = "{base}/json", expect = {{ json = {{ "/queue/depth" = 3, "/version" = "1.4.2" }}, body_contains = "workers" }}, warn = {{ json = {{ "/queue/depth" = 0 }} }} }}

[[runbooks.health.steps]]
id = "redirect"
uses = "http-probe"
on_failure = "continue"
with = {{ url = "{base}/redirect?to={elsewhere}", follow_redirects = 3 }}

[[runbooks.health.steps]]
id = "after"
uses = "http-probe"
with = {{ url = "{base}/health" }}
"#,
            plugin = plugin_lines("http-probe"),
        ),
    );
    sb.run(&["check"]).expect_code(0);
    // Failures are expected here and continued past, so the run as a whole warns.
    let run = sb.run(&["run", "health", "--json"]).expect_code(0);
    let r = run.json();

    let healthy = step(&r, "healthy");
    assert_eq!(healthy["status"], "ok", "{healthy:#}");
    assert_eq!(healthy["details"]["status"], 200);
    let conditions = healthy["details"]["conditions"].as_array().unwrap();
    assert_eq!(
        conditions.len(),
        3,
        "status + two JSON pointers: {conditions:#?}"
    );
    assert!(conditions.iter().all(|c| c["passed"] == true));

    let unhealthy = step(&r, "unhealthy");
    assert_eq!(unhealthy["status"], "fail");
    assert_eq!(unhealthy["details"]["status"], 503);
    assert!(unhealthy["summary"].as_str().unwrap().contains("503"));

    let slow = step(&r, "slow");
    assert_eq!(slow["status"], "fail", "{slow:#}");
    assert!(slow["details"]["response_time_ms"].as_f64().unwrap() >= 400.0);

    let json = step(&r, "json");
    assert_eq!(
        json["status"], "warn",
        "expect passes, warn condition fails: {json:#}"
    );

    let redirect = step(&r, "redirect");
    assert_eq!(failure_kind(redirect), "denied", "{redirect:#}");
    let msg = redirect["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("127.0.0.2") && msg.contains("grants.http.allow"),
        "{msg}"
    );
    assert_eq!(
        other
            .state
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the redirect target was never contacted"
    );

    assert_eq!(step(&r, "after")["status"], "ok");
    let calls = redirect["calls"].as_array().unwrap();
    assert_eq!(calls[0]["decision"], "denied");

    // The human report names every step with its status.
    assert_eq!(r["status"], "warn");
    let human = sb.run(&["run", "health"]).expect_code(0).stdout();
    for (mark, id) in [
        ("✔ ok", "healthy"),
        ("✘ fail", "unhealthy"),
        ("! warn", "json"),
        ("✘ denied", "redirect"),
        ("✔ ok", "after"),
    ] {
        assert!(
            human.lines().any(|l| l.contains(mark) && l.contains(id)),
            "no `{mark}` line for {id} in:\n{human}"
        );
    }
}

#[test]
fn hostile_plugin_is_stopped_and_the_next_step_runs() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let modes = [
        "fetch_ungranted",
        "loop",
        "memory-bomb",
        "huge-output",
        "stdout-flood",
        "panic",
        "exit",
    ];
    let mut steps = String::new();
    for m in modes {
        let with = if m == "fetch_ungranted" {
            r#"{ mode = "fetch", url = "http://example.com/" }"#.to_string()
        } else {
            format!(r#"{{ mode = "{m}" }}"#)
        };
        steps += &format!(
            "\n[[runbooks.evil.steps]]\nid = \"{}\"\nuses = \"hostile\"\non_failure = \"continue\"\nwith = {with}\n",
            m.replace('-', "_")
        );
    }
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.hostile]
{hostile}
limits = {{ memory = "32MiB", time = "3s", output = "64KiB" }}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[plugins.hostile-ungranted]
{hostile}

[plugins.sockets]
{sockets}

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.evil]
{steps}
[[runbooks.evil.steps]]
id = "ungranted_import"
uses = "hostile-ungranted"
on_failure = "continue"
with = {{ mode = "panic" }}

[[runbooks.evil.steps]]
id = "raw_sockets"
uses = "sockets"
on_failure = "continue"
with = {{ addr = "127.0.0.1:{port}" }}

[[runbooks.evil.steps]]
id = "after"
uses = "probe"
with = {{ url = "{url}" }}
"#,
            hostile = plugin_lines("hostile"),
            sockets = plugin_lines("sockets"),
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
            url = svc.url("/health"),
        ),
    );
    let started = std::time::Instant::now();
    // A plugin cannot load: a configuration error (exit 2), though every step ran.
    let r = sb.run(&["run", "evil", "--json"]).expect_code(2).json();
    assert!(
        started.elapsed().as_secs() < 20,
        "the loop was not stopped in time"
    );

    let expect = [
        ("fetch_ungranted", "denied", "example.com"),
        ("loop", "timeout", "3s"),
        ("memory_bomb", "out-of-memory", "limits.memory"),
        ("huge_output", "output-too-large", "limits.output"),
        ("panic", "trap", "panics on purpose"),
        ("exit", "trap", "exited"),
        (
            "ungranted_import",
            "load",
            "[plugins.hostile-ungranted.grants.http]",
        ),
        // Language runtimes import wasi:sockets whether or not they use it, so the
        // import loads; the connection itself is denied.
        ("raw_sockets", "plugin-error", "Permission denied"),
    ];
    for (id, kind, needle) in expect {
        let s = step(&r, id);
        assert_eq!(failure_kind(s), kind, "{id}: {s:#}");
        let msg = s["failure"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{id}: `{msg}` lacks `{needle}`");
    }
    let flood = step(&r, "stdout_flood");
    assert_eq!(
        flood["status"], "ok",
        "a chatty plugin still finishes: {flood:#}"
    );
    assert_eq!(flood["stdout"]["text"].as_str().unwrap().len(), 64 * 1024);
    assert!(flood["stdout"]["dropped"].as_u64().unwrap() > 15_000_000);
    assert_eq!(step(&r, "after")["status"], "ok", "the host carried on");

    // `caps` agrees with what loads: sockets show as denied at runtime, not refused;
    // the ungranted import shows as refused.
    let caps = sb.run(&["caps", "--json"]).expect_code(0).json();
    let plugin = |name: &str| {
        caps["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {caps:#}"))
            .clone()
    };
    let sockets = plugin("sockets");
    assert_eq!(
        sockets["denied_at_runtime"],
        serde_json::json!(["wasi:sockets"])
    );
    assert!(sockets.get("refused_imports").is_none(), "{sockets:#}");
    assert_eq!(
        plugin("hostile-ungranted")["ungranted_imports"],
        serde_json::json!(["http"])
    );
    let text = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(
        text.contains("imports  wasi:sockets: imported, denied at runtime"),
        "{text}"
    );
}

#[test]
fn https_probe_reads_certificate_expiry_and_refuses_unknown_issuers() {
    let pki = runcap_e2e::demo_service::test_pki(10).expect("test certificates");
    let svc = Service::start("127.0.0.1", Some(pki.acceptor.clone()));
    let sb = Sandbox::new();
    sb.write("ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}/health", svc.addr.port());
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.trusting]
{probe}
grants.http = {{ allow = ["https://localhost:*"], ca = ["ca.pem"] }}

[plugins.untrusting]
{probe}
grants.http = {{ allow = ["https://localhost:*"] }}

[runbooks.tls]
steps = [
  {{ id = "days_ok", uses = "trusting", on_failure = "continue", with = {{ url = "{url}", expect = {{ cert_days_min = 5 }} }} }},
  {{ id = "days_short", uses = "trusting", on_failure = "continue", with = {{ url = "{url}", expect = {{ cert_days_min = 30 }} }} }},
  {{ id = "unknown_ca", uses = "untrusting", on_failure = "continue", with = {{ url = "{url}" }} }},
]
"#,
            probe = plugin_lines("http-probe"),
        ),
    );
    let r = sb.run(&["run", "tls", "--json"]).expect_code(0).json();
    let ok = step(&r, "days_ok");
    assert_eq!(ok["status"], "ok", "{ok:#}");
    let days = ok["details"]["cert_days_left"].as_f64().unwrap();
    assert!((9.0..=10.0).contains(&days), "cert_days_left = {days}");
    assert_eq!(step(&r, "days_short")["status"], "fail");
    let unknown = step(&r, "unknown_ca");
    assert_eq!(unknown["status"], "fail");
    assert!(
        unknown["summary"].as_str().unwrap().contains("TLS"),
        "{unknown:#}"
    );
}

#[test]
fn name_resolution_is_checked_and_bodies_are_capped() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let port = svc.addr.port();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://*:{port}"], max_body = "4KiB" }}

[plugins.named]
{probe}
grants.http = {{ allow = ["http://localhost:{port}", "http://127.0.0.1:{port}"], max_body = "4KiB" }}

[runbooks.net]
steps = [
  {{ id = "via_name", uses = "probe", on_failure = "continue", with = {{ url = "http://localhost:{port}/health" }} }},
  {{ id = "via_named_localhost", uses = "named", with = {{ url = "http://localhost:{port}/health" }} }},
  {{ id = "big", uses = "named", on_failure = "continue", with = {{ url = "http://127.0.0.1:{port}/big?bytes=100000", expect = {{ body_contains = "zzz" }} }} }},
]
"#,
            probe = plugin_lines("http-probe"),
        ),
    );
    let r = sb.run(&["run", "net", "--json"]).expect_code(0).json();
    let via_name = step(&r, "via_name");
    assert_eq!(
        failure_kind(via_name),
        "denied",
        "a wildcard host must not reach loopback: {via_name:#}"
    );
    assert!(
        via_name["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback")
    );
    assert_eq!(step(&r, "via_named_localhost")["status"], "ok");
    let big = step(&r, "big");
    assert_eq!(big["details"]["body_truncated"], true, "{big:#}");
}

#[test]
fn second_check_reuses_the_compile_cache() {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"test\"\n[plugins.noop]\n{}",
            plugin_lines("noop")
        ),
    );
    let first = sb.run(&["check"]).expect_code(0).stdout();
    assert!(first.contains("(compiled)"), "{first}");
    let second = sb.run(&["check"]).expect_code(0).stdout();
    assert!(second.contains("(compiled, cached)"), "{second}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.path().join(".cache/components"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "cache directory is private");

    // A cache directory others can write is not trusted.
    std::fs::set_permissions(
        sb.path().join(".cache/components"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let third = sb.run(&["check"]).expect_code(0);
    assert!(
        third.stdout().contains("(compiled)") && !third.stdout().contains("cached"),
        "{}",
        third.stdout()
    );
    assert!(
        third.stderr().contains("writable by group or others"),
        "{}",
        third.stderr()
    );
}

#[test]
fn caps_shows_imports_grants_and_over_grants() {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "prod"

[plugins.probe]
{probe}
grants.http = {{ allow = ["https://*.example.com"], addresses = ["10.0.0.0/8"] }}

[plugins.noop]
{noop}
grants.http = {{ allow = ["https://api.example.com"] }}

[runbooks.check]
steps = [{{ uses = "probe", with = {{ url = "https://api.example.com/health" }} }}]
"#,
            probe = plugin_lines("http-probe"),
            noop = plugin_lines("noop"),
        ),
    );
    let text = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(text.contains("allow https://*.example.com"), "{text}");
    assert!(text.contains("addresses 10.0.0.0/8"), "{text}");
    let j = sb.run(&["caps", "--json"]).expect_code(0).json();
    let plugins = j["plugins"].as_array().unwrap();
    let probe = plugins.iter().find(|p| p["name"] == "probe").unwrap();
    let noop = plugins.iter().find(|p| p["name"] == "noop").unwrap();
    assert!(
        probe["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "runcap:plugin/http")
    );
    assert_eq!(probe["over_grants"].as_array().unwrap().len(), 0);
    assert_eq!(noop["over_grants"], serde_json::json!(["http"]));
    assert_eq!(probe["used_by"], serde_json::json!(["check"]));
    assert!(probe["sha256"].as_str().unwrap().len() == 64);
}
