//! The `logs` capability end to end through the `logs` plugin: a granted log file is read
//! from its end, its lines stamped, redacted and only then filtered, and the count judged;
//! a secret in the log never reaches a report, the store or a pattern's match count;
//! `caps` shows each source, `check` refuses one that is not granted, and a supervised
//! service's own log is read as `service:NAME`.

use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, demo_service_bin, free_port, plugin_lines, rfc3339, step, unix_now};

const SECRET: &str = "tok-9f8e7d6c5b4a3210zz";

/// An app log: 6 ERROR lines from 20 minutes ago, then 12 from the last two minutes (one
/// holding the secret, one a JSON line, one followed by a stack trace), among INFO lines.
fn app_log() -> String {
    let now = unix_now();
    let old = rfc3339(now - 20 * 60);
    let mut log = String::from("started before any stamp\n");
    for i in 0..6 {
        log += &format!("{old} ERROR old failure {i}\n{old} INFO ok\n");
    }
    for i in 0..10 {
        let t = rfc3339(now - 120 + i * 10);
        log += &format!("{t} INFO request {i} ok\n{t} ERROR upstream timed out ({i})\n");
    }
    let t = rfc3339(now - 10);
    log += &format!("{t} ERROR auth failed for token {SECRET}\n");
    log += "    at auth.check(auth.rs:12)\n";
    log += &format!("{{\"ts\":\"{t}\",\"level\":\"ERROR\",\"msg\":\"queue full\"}}\n");
    log += &format!("{t} INFO done\n");
    log
}

/// A sandbox whose `logs` plugin may read `logs/app.log` (as `app`), with `runbooks`.
fn sandbox(runbooks: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("logs/app.log", &app_log());
    let grant = r#"{ sources = { app = "logs/app.log", later = "logs/later.log" } }"#;
    write_manifest(&sb, grant, runbooks);
    sb
}

/// Writes the secret and a manifest whose `logs` plugin has `grant`, then `rest` (more
/// plugins, runbooks).
fn write_manifest(sb: &Sandbox, grant: &str, rest: &str) {
    sb.write("x.key", &format!("{SECRET}\n"));
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.x]
file = "x.key"

[plugins.logs]
{logs}
grants.logs = {grant}

{rest}
"#,
            logs = plugin_lines("logs"),
        ),
    );
}

const RUNBOOKS: &str = r#"
[runbooks.strict]
steps = [{ id = "errors", uses = "logs", with = { source = "app", grep = "ERROR", since = "5m", fail_above = 10 } }]

[runbooks.lenient]
steps = [{ id = "errors", uses = "logs", with = { source = "app", grep = "ERROR", since = "5m", fail_above = 20, tail = 3 } }]

[runbooks.probe]
steps = [{ id = "probe", uses = "logs", with = { source = "app", grep = "tok-9f8e" } }]

[runbooks.later]
steps = [{ id = "later", uses = "logs", with = { source = "later" } }]
"#;

#[test]
fn errors_in_a_window_are_counted_judged_and_never_carry_the_secret() {
    let sb = sandbox(RUNBOOKS);
    sb.run(&["check"]).expect_code(0);

    let strict = sb.run(&["run", "strict", "--json"]);
    assert_eq!(strict.code(), 1, "{}", strict.stdout());
    let report = strict.json();
    let errors = step(&report, "errors");
    assert_eq!(errors["status"], "fail", "{errors:#}");
    assert_eq!(
        errors["summary"],
        "app: 12 lines matching `ERROR` in the last 5m (fail above 10)"
    );
    assert_eq!(errors["details"]["matched"], 12);
    let lines = errors["details"]["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .unwrap()
            .ends_with("auth failed for token [SECRET_REDACTED]")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.as_str().unwrap().contains("old failure"))
    );
    let strict_id = report["run_id"].as_str().unwrap().to_string();

    let lenient = sb.run(&["run", "lenient", "--json"]).expect_code(0);
    let errors = step(&lenient.json(), "errors").clone();
    assert_eq!(errors["status"], "ok", "{errors:#}");
    assert_eq!(errors["details"]["matched"], 12);
    assert_eq!(errors["details"]["lines"].as_array().unwrap().len(), 3);
    assert_eq!(errors["details"]["truncated"], true);

    // Reading changes nothing, so a dry run reads too.
    let dry = sb
        .run(&["run", "lenient", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(step(&dry, "errors")["details"]["matched"], 12);

    // A pattern cannot find the secret's characters: lines are redacted before grep.
    let probe = sb.run(&["run", "probe", "--json"]).expect_code(0);
    let p = step(&probe.json(), "probe").clone();
    assert_eq!(p["details"]["matched"], 0, "{p:#}");
    assert_eq!(p["details"]["lines"], serde_json::json!([]));

    // A log that does not exist yet fails its step, saying so.
    let later = sb.run(&["run", "later", "--json"]);
    assert_eq!(later.code(), 1);
    let l = step(&later.json(), "later").clone();
    assert!(
        l["summary"].as_str().unwrap().contains("does not exist"),
        "{l:#}"
    );

    for (args, out) in [
        (vec!["run", "strict", "--json"], strict.stdout()),
        (vec!["run", "lenient", "--json"], lenient.stdout()),
        (vec!["run", "probe", "--json"], probe.stdout()),
    ] {
        assert!(!out.contains(SECRET), "{args:?} printed the secret");
    }
    runcap_e2e::assert_secret_kept_nowhere(&sb, &strict_id, SECRET);
    let show = sb.run(&["show", &strict_id, "--json"]).stdout();
    assert!(show.contains("12 of 37 lines matched"), "{show}");
}

#[test]
fn caps_lists_the_sources_and_check_refuses_an_ungranted_one() {
    let sb = sandbox(
        r#"
[runbooks.typo]
steps = [{ id = "errors", uses = "logs", with = { source = "ap", grep = "ERROR" } }]
"#,
    );
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    let app = sb.path().join("logs/app.log");
    for line in [
        format!("app: {} (last 64MiB, at most 1000 lines)", app.display()),
        "later: ".to_string(),
    ] {
        assert!(caps.contains(&line), "{line}\n{caps}");
    }
    let check = sb.run(&["check"]);
    assert_eq!(check.code(), 2, "{}", check.stdout());
    let stderr = check.stderr();
    assert!(
        stderr.contains("`ap`") || stderr.contains("\"ap\""),
        "{stderr}"
    );
    assert!(stderr.contains("app"), "{stderr}");

    // Without the grant the plugin is refused at load with the TOML to add, and that
    // TOML, pasted at the end of the manifest, is accepted.
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    let grant = manifest
        .lines()
        .find(|l| l.starts_with("grants.logs = "))
        .unwrap();
    let runbooks = manifest.find("[runbooks.typo]").unwrap();
    let manifest = manifest[..runbooks].replace(grant, "");
    sb.write("runcap.toml", &manifest);
    let refused = sb.run(&["check"]);
    assert_eq!(refused.code(), 2);
    let stderr = refused.stderr();
    let hint_start = stderr.find("[plugins.logs.grants.logs]").expect(&stderr);
    let hint: String = stderr[hint_start..]
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    sb.write("runcap.toml", &format!("{manifest}\n{hint}"));
    let accepted = sb.run(&["check"]);
    assert_eq!(accepted.code(), 0, "{}", accepted.stderr());
}

/// Kills the service a test started, even when it fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        runcap_e2e::kill_recorded(&self.0);
    }
}

#[test]
fn a_supervised_service_log_is_read_as_service_name() {
    let port = free_port();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(sb.path().join(".runcap/services/api.json"));
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[services.api]
driver = "process"
command = "{demo}"
args = ["--listen", "127.0.0.1:{port}"]
health_url = "http://127.0.0.1:{port}/health"

[plugins.control]
{control}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
grants.services = {{ api = ["status", "start", "stop"] }}

[plugins.logs]
{logs}
grants.logs = {{ services = ["api"] }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "api", action = "start", healthy_within = "10s" }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "api", action = "stop" }} }}]

[runbooks.read]
steps = [{{ id = "log", uses = "logs", with = {{ source = "service:api", grep = "listening", fail_above = 0 }} }}]
"#,
            demo = demo_service_bin().display(),
            control = plugin_lines("service-control"),
            logs = plugin_lines("logs"),
        ),
    );
    sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(
        caps.contains("service:api: the log runcap keeps of service `api`"),
        "{caps}"
    );
    sb.run(&["run", "start", "--json"]).expect_code(0);

    // The service is healthy; its first line reaches the log as the supervisor pumps it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let r = sb.run(&["run", "read", "--json"]);
        let log = step(&r.json(), "log").clone();
        if log["details"]["matched"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(r.code(), 1, "matched above fail_above fails: {log:#}");
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed the line: {log:#}"
        );
        std::thread::yield_now();
    };
    assert_eq!(log["status"], "fail");
    let lines = log["details"]["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l.as_str().unwrap().contains(&format!(
            "demo service listening on http://127.0.0.1:{port}"
        ))),
        "{lines:?}"
    );
    sb.run(&["run", "stop", "--json"]).expect_code(0);
}

/// `systemd-journal-remote`, which writes real journal files (`./dev setup` installs it).
fn journal_remote() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/systemd/systemd-journal-remote",
        "/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
}

/// One journal entry in the export format: `unit`, `at` (Unix seconds) and a message that
/// may hold line breaks (written as a binary field, as journald stores them).
fn export_entry(unit: &str, at: u64, message: &str) -> Vec<u8> {
    let mut e = format!(
        "__REALTIME_TIMESTAMP={}\n_SYSTEMD_UNIT={unit}\nSYSLOG_IDENTIFIER={}\n_PID=4242\n_HOSTNAME=stand-in\n",
        at * 1_000_000,
        unit.trim_end_matches(".service"),
    )
    .into_bytes();
    e.extend_from_slice(b"MESSAGE\n");
    e.extend_from_slice(&(message.len() as u64).to_le_bytes());
    e.extend_from_slice(message.as_bytes());
    e.extend_from_slice(b"\n\n");
    e
}

#[test]
fn a_units_journal_is_read_through_journalctl_redacted_before_the_pattern() {
    let Some(remote) = journal_remote() else {
        eprintln!(
            "SKIPPED: systemd-journal-remote is not installed (`./dev setup` installs it with apt-get)"
        );
        return;
    };
    let sb = Sandbox::new();
    let now = unix_now();
    let mut export = Vec::new();
    for i in 0..4 {
        export.extend(export_entry(
            "api.service",
            now - 1200 + i,
            &format!("ERROR old failure {i}"),
        ));
    }
    for i in 0..5 {
        export.extend(export_entry(
            "api.service",
            now - 100 + i * 10,
            "INFO request ok",
        ));
        export.extend(export_entry(
            "api.service",
            now - 95 + i * 10,
            &format!("ERROR upstream timed out ({i})"),
        ));
    }
    export.extend(export_entry(
        "api.service",
        now - 20,
        &format!("ERROR auth failed for token {SECRET}"),
    ));
    export.extend(export_entry(
        "api.service",
        now - 10,
        "ERROR panic\n  at handler (main.rs:3)",
    ));
    export.extend(export_entry("web.service", now - 10, "ERROR not api's"));
    std::fs::create_dir_all(sb.path().join("journal")).unwrap();
    let mut child = std::process::Command::new(remote)
        .arg(format!(
            "--output={}",
            sb.path().join("journal/stand-in.journal").display()
        ))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&export).unwrap();
    assert!(child.wait().unwrap().success());

    let rest = format!(
        r#"
[runbooks.errors]
steps = [{{ id = "errors", uses = "logs", with = {{ source = "unit:api.service", grep = "ERROR", since = "5m", fail_above = 4 }} }}]

[runbooks.probe]
steps = [{{ id = "probe", uses = "logs", with = {{ source = "unit:api.service", grep = "tok-9f8e" }} }}]

[runbooks.everything]
steps = [{{ id = "all", uses = "logs", with = {{ source = "unit:api.service", tail = 2 }} }}]

[plugins.small]
{logs}
grants.logs = {{ units = ["api.service"], journal = "journal", scan = "300B" }}

[runbooks.newest]
steps = [{{ id = "newest", uses = "small", with = {{ source = "unit:api.service", tail = 50 }} }}]
"#,
        logs = plugin_lines("logs"),
    );
    write_manifest(
        &sb,
        r#"{ units = ["api.service"], journal = "journal" }"#,
        &rest,
    );
    sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    let want = format!(
        "unit:api.service: unit api.service in the journal in {}",
        sb.path().join("journal").display()
    );
    assert!(caps.contains(&want), "{want}\n{caps}");

    let run = sb.run(&["run", "errors", "--json"]);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    let report = run.json();
    let errors = step(&report, "errors");
    assert_eq!(errors["status"], "fail", "{errors:#}");
    // Five timeouts, the auth failure and the panic; not the old ones, not web.service's.
    assert_eq!(errors["details"]["matched"], 7, "{errors:#}");
    let lines: Vec<&str> = errors["details"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("api[4242]: ERROR auth failed for token [SECRET_REDACTED]")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("old failure") && !l.contains("not api's"))
    );
    assert!(!run.stdout().contains(SECRET));
    let run_id = report["run_id"].as_str().unwrap().to_string();
    runcap_e2e::assert_secret_kept_nowhere(&sb, &run_id, SECRET);

    // The pattern sees the redacted lines only.
    let probe = sb.run(&["run", "probe", "--json"]).expect_code(0);
    assert_eq!(step(&probe.json(), "probe")["details"]["matched"], 0);

    // The last two lines: the panic and its continuation, which carries no stamp of its own.
    let all = sb
        .run(&["run", "everything", "--json", "--dry-run"])
        .expect_code(0);
    let all = step(&all.json(), "all").clone();
    let lines = all["details"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{all:#}");
    assert!(
        lines[0].as_str().unwrap().ends_with("ERROR panic"),
        "{all:#}"
    );
    assert!(
        lines[1]
            .as_str()
            .unwrap()
            .trim_start()
            .starts_with("at handler"),
        "{all:#}"
    );

    // A small scan reads only the newest entries, whole: journalctl is read newest first
    // and stopped, and a multi-line entry is never cut in half.
    let newest = sb.run(&["run", "newest", "--json"]).expect_code(0);
    let newest = step(&newest.json(), "newest").clone();
    let lines: Vec<&str> = newest["details"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!((2..=4).contains(&lines.len()), "{newest:#}");
    assert!(lines[lines.len() - 2].ends_with("ERROR panic"), "{lines:?}");
    assert!(lines[0].starts_with("20"), "a whole entry first: {lines:?}");
    assert!(lines.concat().len() <= 300, "{lines:?}");

    // A unit the grant does not name is refused at check time, with the grant to widen.
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    sb.write(
        "runcap.toml",
        &manifest.replace(
            "source = \"unit:api.service\", tail",
            "source = \"unit:web.service\", tail",
        ),
    );
    let check = sb.run(&["check"]);
    assert_eq!(check.code(), 2, "{}", check.stdout());
    assert!(
        check.stderr().contains("unit:web.service"),
        "{}",
        check.stderr()
    );
}
