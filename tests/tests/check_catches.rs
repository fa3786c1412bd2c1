//! `runcap check` catches before anything runs what it can know: params naming a service,
//! channel or secret the plugin is not granted; a step timeout its plugin's limit would cut
//! short; a duration that does not parse; a pid file in a directory that does not exist.
//! Each error points at the key and says what to write, and the fix, applied, passes.

use runcap_e2e::{Sandbox, plugin_lines};

fn manifest(steps: &str, extra: &str) -> String {
    format!(
        r#"
environment = "test"

[vars]
svc = "api"

[secrets.token]
env = "HOME"

[services.api]
driver = "process"
command = "sleep"
args = ["60"]
{extra}

[services.db]
driver = "command"
restart = "true"
status = "true"

[plugins.control]
{control}
grants.http = {{ allow = [] }}
grants.services = {{ api = ["restart", "status"] }}

[plugins.notify]
{notify}
grants.notify.channels.oncall = {{ url = "http://127.0.0.1:9/hook" }}

[plugins.redact]
{redact}
grants.secrets = ["token"]
grants.fs = {{ input = {{ path = "logs", mode = "ro" }}, output = {{ path = "out", mode = "rw" }} }}

[runbooks.r]
steps = [
{steps}
]
"#,
        control = plugin_lines("service-control"),
        notify = plugin_lines("notify"),
        redact = plugin_lines("redact"),
    )
}

fn sandbox(steps: &str, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("logs")).unwrap();
    sb.write("runcap.toml", &manifest(steps, extra));
    sb
}

#[test]
fn params_naming_what_the_grants_do_not_list_are_refused() {
    let sb = sandbox(
        r#"  { id = "typo", uses = "control", with = { service = "apii", action = "status" } },
  { id = "other", uses = "control", with = { service = "db", action = "status" } },
  { id = "templated", uses = "control", with = { service = "{{ vars.svc }}", action = "status" } },
  { id = "page", uses = "notify", with = { channel = "on-call", title = "x" } },
  { id = "scrub", uses = "redact", with = { secrets = ["token", "tokn"] } },"#,
        "",
    );
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}{}", out.stdout(), out.stderr());
    let err = out.stderr();
    for expected in [
        "`service` names `apii`, which plugin `control` is not granted (services)",
        "`service` names `db`, which plugin `control` is not granted (services)",
        "granted: api",
        "`channel` names `on-call`, which plugin `notify` is not granted (notify.channels)",
        "granted: oncall",
        "`secrets` names `tokn`, which plugin `redact` is not granted (secrets)",
        "runcap.toml:",
    ] {
        assert!(err.contains(expected), "`{expected}` missing:\n{err}");
    }
    // The templated step renders to a granted service: no error for it.
    assert_eq!(err.matches("is not granted (services)").count(), 2, "{err}");
    assert!(err.contains("4 problems found"), "{err}");

    // Corrected, it passes.
    let fixed = manifest(
        r#"  { id = "ok", uses = "control", with = { service = "api", action = "status" } },
  { id = "templated", uses = "control", with = { service = "{{ vars.svc }}", action = "status" } },
  { id = "page", uses = "notify", with = { channel = "oncall", title = "x" } },
  { id = "scrub", uses = "redact", with = { secrets = ["token"] } },"#,
        "",
    );
    sb.write("runcap.toml", &fixed);
    sb.run(&["check"]).expect_code(0);
}

#[test]
fn a_timeout_beyond_the_plugin_limit_and_a_bad_duration_are_refused() {
    let sb = sandbox(
        r#"  { id = "slow", uses = "control", timeout = "5m", with = { service = "api", action = "status" } },
  { id = "bad", uses = "control", with = { service = "api", action = "restart", poll_interval = "30 parsecs" } },"#,
        "",
    );
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}{}", out.stdout(), out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("timeout 5m is longer than plugin `control`'s time limit of 30s"),
        "{err}"
    );
    assert!(
        err.contains("limits = { time = \"5m\" } under [plugins.control]"),
        "{err}"
    );

    // The hint, applied, is accepted; then the plugin's own check of its params speaks.
    let text = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace(
            "grants.services = { api = [\"restart\", \"status\"] }",
            "grants.services = { api = [\"restart\", \"status\"] }\nlimits = { time = \"5m\" }",
        );
    sb.write("runcap.toml", &text);
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(!out.stderr().contains("timeout 5m"), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("poll_interval: `30 parsecs` is not a duration"),
        "{}",
        out.stderr()
    );
    sb.write("runcap.toml", &text.replace("\"30 parsecs\"", "\"200ms\""));
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
}

#[test]
fn a_pid_file_in_a_missing_directory_is_refused_until_it_exists() {
    let sb = sandbox(
        r#"  { id = "ok", uses = "control", with = { service = "api", action = "status" } },"#,
        "pid_file = \"run/api.pid\"",
    );
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("the pid file's directory")
            && out.stderr().contains("run does not exist"),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("mkdir -p"), "{}", out.stderr());
    std::fs::create_dir(sb.path().join("run")).unwrap();
    sb.run(&["check"]).expect_code(0);
}

#[test]
fn a_tier_waiting_for_a_missing_sla_is_refused_and_the_pasted_hint_is_accepted() {
    let sb = sandbox(
        r#"  { id = "st", uses = "control", with = { service = "api", action = "status" } },"#,
        "",
    );
    let text = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap()
        + r#"
[runbooks.r.incident]
severity = "critical"

[[runbooks.r.incident.tiers]]
after = "sla"
steps = [{ uses = "notify", with = { channel = "oncall", title = "missed" } }]

[[runbooks.r.incident.tiers]]
after = "soon"
"#;
    sb.write("runcap.toml", &text);
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("this tier waits for the SLA of `critical` incidents, and there is none"),
        "{err}"
    );
    assert!(err.contains("runcap.toml:"), "located: {err}");
    assert!(err.contains("`soon` is not a duration"), "{err}");
    // The hint, pasted at the end of the manifest, is accepted.
    let start = err.find("[incidents.sla]").expect(&err);
    let hint: String = err[start..]
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let fixed = text.replace("after = \"soon\"", "after = \"30m\"");
    sb.write("runcap.toml", &format!("{fixed}\n{hint}"));
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 0, "{hint}\n{}", out.stderr());
}
