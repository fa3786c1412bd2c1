//! The runbook engine end to end: conditions, templates, retries, failure policies,
//! rollbacks, dry-run, durable history, the audit chain, crash recovery, incidents and
//! escalation, against real local services.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

/// A manifest with http-probe (as `probe`, granted the service), `hostile` and `notify`.
fn manifest(svc: &Service, runbooks: &str) -> String {
    format!(
        r#"
environment = "test"

[vars]
base = "{base}"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[plugins.hostile]
{hostile}
limits = {{ time = "5s" }}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[plugins.notify]
{notify}
grants.notify.channels.oncall = {{ url = "{base}/hooks/oncall", format = "json" }}
grants.notify.channels.slack = {{ url = "{base}/hooks/slack", format = "slack" }}
{runbooks}
"#,
        base = svc.url(""),
        port = svc.addr.port(),
        probe = plugin_lines("http-probe"),
        hostile = plugin_lines("hostile"),
        notify = plugin_lines("notify"),
    )
}

#[test]
fn conditions_templates_and_retries() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.recover]
[[runbooks.recover.steps]]
id = "probe"
uses = "probe"
with = { url = "{{ vars.base }}/unhealthy" }
on_failure = "continue"

[[runbooks.recover.steps]]
id = "restart"
uses = "probe"
when = "steps.probe.status == 'fail' and steps.probe.details.status >= 500"
with = { url = "{{ vars.base }}/admin/up", method = "POST" }

[[runbooks.recover.steps]]
id = "not_needed"
uses = "probe"
when = "steps.probe.status == 'ok'"
with = { url = "{{ vars.base }}/health" }

[[runbooks.recover.steps]]
id = "wait_healthy"
uses = "probe"
with = { url = "{{ vars.base }}/fail-first?n=2" }
retries = 3
backoff = "20ms"

[[runbooks.recover.steps]]
id = "named"
uses = "hostile"
with = { mode = "names" }

[[runbooks.recover.steps]]
id = "same_status"
uses = "probe"
with = { url = "{{ vars.base }}/health", expect = { status = "{{ steps.wait_healthy.details.status }}" } }
"#,
        ),
    );
    sb.run(&["check"]).expect_code(0);
    let r = sb.run(&["run", "recover", "--json"]).expect_code(0).json();
    assert_eq!(
        r["status"], "warn",
        "a continued failure makes the run warn: {r:#}"
    );
    assert_eq!(step(&r, "probe")["continued"], true);
    assert_eq!(step(&r, "restart")["status"], "ok");
    assert_eq!(step(&r, "restart")["calls"][0]["operation"], "POST");
    assert_eq!(step(&r, "not_needed")["status"], "skipped");
    let wait = step(&r, "wait_healthy");
    assert_eq!(wait["status"], "ok", "{wait:#}");
    assert_eq!(
        wait["attempts"], 3,
        "failed twice, passed on the third attempt"
    );
    assert_eq!(svc.state.attempts.load(Ordering::Relaxed), 3);
    // A plugin asks for the names it runs under (runcap:plugin/invocation).
    assert_eq!(
        step(&r, "named")["details"],
        serde_json::json!({
            "run_id": r["run_id"],
            "environment": "test",
            "runbook": "recover",
            "step": "named",
        })
    );
    assert!(
        r["run_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{r:#}"
    );
    let same = step(&r, "same_status");
    assert_eq!(same["status"], "ok", "{same:#}");
    assert_eq!(
        same["details"]["conditions"][0]["condition"],
        "status == 200"
    );
}

#[test]
fn references_are_checked_before_running() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.bad]
[[runbooks.bad.steps]]
id = "first"
uses = "probe"
when = "steps.second.status == 'ok'"
with = { url = "{{ vars.bse }}/health" }

[[runbooks.bad.steps]]
id = "second"
uses = "probe"
on_failure = ["page"]
with = { url = "{{ steps.first.colour }}" }
"#,
        ),
    );
    let e = sb.run(&["check"]).expect_code(2).stderr();
    for needle in [
        "runbooks.bad.steps[0].when",
        "has not run at this point",
        "runbooks.bad.steps[0].with.url",
        "no var `bse`",
        "runbooks.bad.steps[1].with.url",
        "no field `colour`",
        "runbooks.bad.steps[1].on_failure",
        "handler `page`",
        "runcap.toml:",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from:\n{e}");
    }
}

/// The deploy step marks the service down; its rollback brings it back up.
const DEPLOY: &str = r#"
[[runbooks.deploy.steps]]
id = "deploy"
uses = "probe"
with = { url = "{{ vars.base }}/admin/down", method = "POST" }
rollback = { uses = "probe", with = { url = "{{ vars.base }}/admin/up", method = "POST" } }
"#;

#[test]
fn rollback_runs_after_a_trap() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let rb = format!(
        "[runbooks.deploy]\n{DEPLOY}\n[[runbooks.deploy.steps]]\nid = \"verify\"\nuses = \"hostile\"\nwith = {{ mode = \"panic\" }}\n\n[[runbooks.deploy.steps]]\nid = \"never\"\nuses = \"probe\"\nwith = {{ url = \"{{{{ vars.base }}}}/health\" }}\n"
    );
    sb.write("runcap.toml", &manifest(&svc, &rb));
    let r = sb.run(&["run", "deploy", "--json"]).expect_code(1).json();
    assert_eq!(r["failed_step"], "verify");
    assert_eq!(step(&r, "verify")["failure"]["kind"], "trap");
    let rollback = step(&r, "deploy.rollback");
    assert_eq!(rollback["phase"], "rollback");
    assert_eq!(rollback["status"], "ok");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != "never")
    );
    assert!(
        !svc.state.down.load(Ordering::Relaxed),
        "the rollback brought the service back up"
    );
}

#[test]
fn rollback_runs_after_a_timeout_and_handlers_run_first() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let rb = format!(
        "[runbooks.deploy]\n{DEPLOY}\n[[runbooks.deploy.steps]]\nid = \"verify\"\nuses = \"hostile\"\ntimeout = \"300ms\"\non_failure = [\"tell\"]\nwith = {{ mode = \"loop\" }}\n\n[[runbooks.deploy.handlers]]\nid = \"tell\"\nuses = \"notify\"\nwith = {{ channel = \"oncall\", title = \"{{{{ steps.verify.failure.kind }}}} in verify\" }}\n"
    );
    sb.write("runcap.toml", &manifest(&svc, &rb));
    let r = sb.run(&["run", "deploy", "--json"]).expect_code(1).json();
    assert_eq!(step(&r, "verify")["failure"]["kind"], "timeout");
    // Stopped at its 300 ms timeout, not left to loop (what the machine's load adds to
    // start-up and compiling is not the step's).
    let took = step(&r, "verify")["duration_ms"].as_f64().unwrap();
    assert!(took < 5000.0, "the looping step ran {took} ms");
    assert_eq!(step(&r, "tell")["phase"], "handler");
    assert_eq!(step(&r, "deploy.rollback")["status"], "ok");
    let ids: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["deploy", "verify", "tell", "deploy.rollback"]);
    let hooks = svc.state.hooks.lock().unwrap();
    assert_eq!(hooks[0].1["title"], "timeout in verify");
    assert!(!svc.state.down.load(Ordering::Relaxed));
}

#[test]
fn dry_run_touches_nothing_and_says_what_it_would_do() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let rb = format!(
        "[runbooks.deploy]\n{DEPLOY}\n[[runbooks.deploy.steps]]\nid = \"page\"\nuses = \"notify\"\nwith = {{ channel = \"oncall\", title = \"deployed\" }}\n"
    );
    sb.write("runcap.toml", &manifest(&svc, &rb));
    let before = svc.state.requests.load(Ordering::Relaxed);
    let r = sb
        .run(&["run", "deploy", "--json", "--dry-run"])
        .expect_code(0)
        .json();
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        svc.state.requests.load(Ordering::Relaxed),
        before,
        "nothing reached the service"
    );
    assert!(!svc.state.down.load(Ordering::Relaxed));
    assert!(svc.state.hooks.lock().unwrap().is_empty());
    assert_eq!(step(&r, "deploy")["calls"][0]["decision"], "dry-run");
    assert_eq!(step(&r, "page")["calls"][0]["decision"], "dry-run");
    let history = sb.run(&["history", "--json"]).expect_code(0).json();
    assert_eq!(history[0]["dry_run"], true);
}

#[test]
fn history_show_and_a_tamper_evident_audit_log() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.health]
steps = [
  { id = "up", uses = "probe", with = { url = "{{ vars.base }}/health" } },
  { id = "denied", uses = "probe", on_failure = "continue", with = { url = "http://example.com/" } },
]
"#,
        ),
    );
    let first = sb.run(&["run", "health", "--json"]).expect_code(0).json();
    sb.run(&["run", "health"]).expect_code(0);
    let h = sb
        .run(&["history", "health", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(h.as_array().unwrap().len(), 2);
    let id = first["run_id"].as_str().unwrap();
    let shown = sb.run(&["show", &id[..10], "--json"]).expect_code(0).json();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["steps"][0]["status"], "ok");
    assert_eq!(shown["steps"][1]["calls"][0]["decision"], "denied");
    assert!(
        sb.run(&["show", id])
            .expect_code(0)
            .stdout()
            .contains("denied")
    );

    let ok = sb.run(&["audit", "verify"]).expect_code(0).stdout();
    assert!(ok.contains("intact"), "{ok}");

    let anchor = sb.run(&["audit", "head"]).expect_code(0).stdout();
    let anchor = anchor.trim();
    let (seq, _) = anchor.split_once(':').expect("SEQ:HASH");
    let tamper_with = |sql: &str, extra: &[&str]| {
        let copy = tempfile::tempdir().unwrap();
        for f in ["runcap.db", "runcap.db-wal", "runcap.db-shm"] {
            let from = sb.path().join(".runcap").join(f);
            if from.exists() {
                std::fs::copy(&from, copy.path().join(f)).unwrap();
            }
        }
        let conn = rusqlite::Connection::open(copy.path().join("runcap.db")).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let mut args = vec![
            "audit",
            "verify",
            "--state-dir",
            copy.path().to_str().unwrap(),
        ];
        args.extend(extra);
        let out = sb.run(&args);
        (out.code(), out.stdout())
    };
    let tamper = |sql: &str| tamper_with(sql, &[]);
    // Edit a row's payload.
    let (code, out) = tamper(
        "UPDATE audit SET payload = replace(payload, 'denied', 'allowed') WHERE kind = 'call';",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was edited"), "{out}");
    // Delete a row in the middle.
    let (code, out) = tamper("DELETE FROM audit WHERE seq = 3;");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 4") && out.contains("deleted"), "{out}");
    // Reorder two rows by swapping their positions.
    let (code, out) = tamper(
        "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1;",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at row 2"), "{out}");
    // Drop the tail.
    let (code, out) = tamper("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit);");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deleted from the end"), "{out}");

    // An anchor kept elsewhere catches what the chain alone cannot: the tail dropped
    // together with the runs that refer to it, and a chain rebuilt from scratch.
    let (code, out) = tamper_with("", &["--anchor", anchor]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("still holds anchor {anchor}")),
        "{out}"
    );
    let (code, out) = tamper_with(
        &format!("UPDATE runs SET audit_seq = NULL; DELETE FROM audit WHERE seq >= {seq};"),
        &[],
    );
    assert_eq!(code, 0, "without an anchor the cut is invisible: {out}");
    let (code, out) = tamper_with(
        &format!("UPDATE runs SET audit_seq = NULL; DELETE FROM audit WHERE seq >= {seq};"),
        &["--anchor", anchor],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("the anchor {anchor} records row {seq}"))
            && out.contains("deleted from the end"),
        "{out}"
    );
    let (code, out) = tamper_with(
        &format!(
            "UPDATE audit SET hash = '{}' WHERE seq = {seq};",
            "0".repeat(64)
        ),
        &["--anchor", &format!("{seq}:{}", "0".repeat(64))],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("was edited"),
        "an edited row still fails first: {out}"
    );
    let (code, out) = tamper_with("", &["--anchor", &format!("{seq}:{}", "a".repeat(64))]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rebuilt after the anchor was taken"), "{out}");
    let bad = sb
        .run(&["audit", "verify", "--anchor", "nope"])
        .expect_code(2);
    assert!(
        bad.stderr().contains("expected SEQ:HASH"),
        "{}",
        bad.stderr()
    );
}

#[test]
fn a_killed_run_is_marked_interrupted_and_its_rollbacks_recovered() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let rb = format!(
        "[runbooks.deploy]\n{DEPLOY}\n[[runbooks.deploy.steps]]\nid = \"soak\"\nuses = \"probe\"\nwith = {{ url = \"{{{{ vars.base }}}}/slow?ms=60000\", timeout = \"90s\" }}\n"
    );
    sb.write(
        "runcap.toml",
        &manifest(&svc, &rb).replace(
            "[plugins.probe]\n",
            "[plugins.probe]\nlimits = { time = \"2m\" }\n",
        ),
    );
    let mut child = sb
        .runcap()
        .args(["run", "deploy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn runcap");
    // Wait until the deploy step is done and the soak step is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !svc.state.down.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "deploy never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    assert!(
        svc.state.down.load(Ordering::Relaxed),
        "nothing rolled back yet"
    );

    let h = sb.run(&["history", "--json"]).expect_code(0);
    assert!(
        h.stderr().contains("was interrupted") && h.stderr().contains("runcap recover"),
        "{}",
        h.stderr()
    );
    let runs = h.json();
    assert_eq!(runs[0]["status"], "interrupted");
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let shown = sb.run(&["show", &id, "--json"]).expect_code(0).json();
    assert_eq!(
        shown["steps"][0]["status"], "ok",
        "the completed step is intact"
    );
    assert_eq!(shown["steps"][1]["status"], "interrupted");
    assert_eq!(shown["rollbacks"][0]["state"], "pending");
    sb.run(&["audit", "verify"]).expect_code(0);

    let rec = sb.run(&["recover"]).expect_code(0);
    assert!(rec.stdout().contains("deploy.rollback"), "{}", rec.stdout());
    assert!(
        !svc.state.down.load(Ordering::Relaxed),
        "recovery brought the service back"
    );
    let shown = sb.run(&["show", &id, "--json"]).expect_code(0).json();
    assert_eq!(shown["rollbacks"][0]["state"], "done");
    assert!(
        sb.run(&["recover"])
            .expect_code(0)
            .stdout()
            .contains("nothing to recover")
    );
    sb.run(&["audit", "verify"]).expect_code(0);

    // Forging the outcome in the database is caught: the final records are sealed.
    let conn = rusqlite::Connection::open(sb.path().join(".runcap/runcap.db")).unwrap();
    conn.execute("UPDATE runs SET status = 'ok' WHERE id = ?1", [&id])
        .unwrap();
    conn.execute(
        "UPDATE steps SET status = 'ok' WHERE run_id = ?1 AND status = 'interrupted'",
        [&id],
    )
    .unwrap();
    drop(conn);
    let h = sb.run(&["history"]).expect_code(0).stdout();
    assert!(h.contains("ok ⚠ EDITED"), "{h}");
    let shown = sb.run(&["show", &id, "--json"]).expect_code(0).json();
    assert!(
        shown["tampered"].as_array().unwrap().len() >= 2,
        "{shown:#}"
    );
    assert!(
        shown["steps"][1]["tampered"]
            .as_str()
            .unwrap()
            .contains("edited after it was sealed"),
        "{shown:#}"
    );
    let v = sb.run(&["audit", "verify"]).expect_code(1).stdout();
    assert!(
        v.contains(&format!("run {id}: the run's record was edited")),
        "{v}"
    );
}

#[test]
fn repeated_failures_escalate_once_and_a_pass_resolves() {
    let svc = Service::start("127.0.0.1", None);
    svc.state.down.store(true, Ordering::Relaxed);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &svc,
            r#"
[runbooks.service-down]
[[runbooks.service-down.steps]]
id = "probe"
uses = "probe"
with = { url = "{{ vars.base }}/health" }

[runbooks.service-down.incident]
severity = "critical"
escalate_after = 2

[[runbooks.service-down.incident.escalate]]
id = "page_json"
uses = "notify"
with = { channel = "oncall", severity = "{{ incident.severity }}", title = "{{ run.runbook }} failed {{ incident.failures }} times", fields = { incident = "{{ incident.id }}", step = "{{ incident.failed_step }}" } }

[[runbooks.service-down.incident.escalate]]
id = "page_slack"
uses = "notify"
with = { channel = "slack", severity = "{{ incident.severity }}", title = "{{ run.runbook }} is down", text = "{{ steps.probe.summary }}" }
"#,
        ),
    );
    let first = sb
        .run(&["run", "service-down", "--json"])
        .expect_code(1)
        .json();
    assert_eq!(first["incident"]["failures"], 1);
    assert_eq!(first["incident"]["status"], "open");
    assert!(
        svc.state.hooks.lock().unwrap().is_empty(),
        "no escalation after one failure"
    );

    let second = sb.run(&["run", "service-down"]).expect_code(1).stdout();
    assert!(
        second.contains("escalated after 2 consecutive failures"),
        "{second}"
    );
    {
        let hooks = svc.state.hooks.lock().unwrap();
        assert_eq!(hooks.len(), 2, "{hooks:#?}");
        let (name, generic) = &hooks[0];
        assert_eq!(name, "oncall");
        assert_eq!(generic["severity"], "critical");
        assert_eq!(generic["title"], "service-down failed 2 times");
        assert_eq!(generic["fields"]["step"], "probe");
        assert_eq!(generic["runbook"], "service-down");
        let (name, slack) = &hooks[1];
        assert_eq!(name, "slack");
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("*[CRITICAL] service-down is down*")
        );
        assert_eq!(slack["blocks"][0]["type"], "section");
    }
    // A third failure does not page again.
    sb.run(&["run", "service-down"]).expect_code(1);
    assert_eq!(svc.state.hooks.lock().unwrap().len(), 2);

    svc.state.down.store(false, Ordering::Relaxed);
    let ok = sb
        .run(&["run", "service-down", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(ok["incident"]["status"], "resolved");
    let incidents = sb
        .run(&["incidents", "--all", "--json"])
        .expect_code(0)
        .json();
    let kinds: Vec<&str> = incidents[0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "failed",
            "escalated",
            "notified",
            "notified",
            "failed",
            "resolved"
        ]
    );
    assert!(
        sb.run(&["incidents"])
            .expect_code(0)
            .stdout()
            .contains("no open incidents")
    );

    let out = sb.path().join("bundle.tar.gz");
    sb.run(&["bundle", "--since", "15m", "--out", out.to_str().unwrap()])
        .expect_code(0);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&out).unwrap(),
    ));
    let mut names = Vec::new();
    let mut runs_json = String::new();
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name.ends_with("runs.json") {
            std::io::Read::read_to_string(&mut e, &mut runs_json).unwrap();
        }
        names.push(name);
    }
    for n in ["README.txt", "runs.json", "incidents.json", "audit.jsonl"] {
        assert!(
            names.iter().any(|x| x.ends_with(n)),
            "{n} missing from {names:?}"
        );
    }
    let runs: serde_json::Value = serde_json::from_str(&runs_json).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 4);
    assert!(runs_json.contains("page_slack"));
}

#[test]
fn secrets_are_granted_by_name() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write("key.txt", "file-secret-value\n");
    let text = manifest(
        &svc,
        r#"
[secrets.api-token]
env = "RUNCAP_TEST_API_TOKEN"

[secrets.file-key]
file = "key.txt"

[secrets.missing]
env = "RUNCAP_TEST_NOT_SET"

[runbooks.secrets]
steps = [
  { id = "granted", uses = "sneaky", on_failure = "continue", with = { mode = "leak-secret", target = "file-key" } },
  { id = "ungranted", uses = "sneaky", on_failure = "continue", with = { mode = "leak-secret", target = "api-token" } },
  { id = "unset", uses = "sneaky", on_failure = "continue", with = { mode = "leak-secret", target = "missing" } },
]
"#,
    ) + &format!(
        "\n[plugins.sneaky]\n{}grants.secrets = [\"file-key\", \"missing\"]\ngrants.faults = {{}}\n",
        plugin_lines("sneaky")
    );
    sb.write("runcap.toml", &text);
    let out = sb
        .runcap()
        .args(["run", "secrets", "--json"])
        .env("RUNCAP_TEST_API_TOKEN", "tok-123456")
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(step(&r, "granted")["status"], "ok", "{r:#}");
    let ungranted = step(&r, "ungranted");
    assert_eq!(ungranted["failure"]["kind"], "denied");
    assert!(
        ungranted["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("add \"api-token\" to plugins.sneaky.grants.secrets")
    );
    let unset = step(&r, "unset");
    assert_eq!(unset["failure"]["kind"], "plugin-error");
    assert!(
        unset["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("RUNCAP_TEST_NOT_SET is not set")
    );
    // The audit trail names secrets, never their values.
    let calls = step(&r, "granted")["calls"].to_string();
    assert!(
        calls.contains("file-key") && !calls.contains("file-secret-value"),
        "{calls}"
    );
    // What the plugin did with the value is recorded redacted, wherever it put it.
    assert_eq!(
        step(&r, "granted")["summary"],
        "the secret is [SECRET_REDACTED]"
    );
    assert!(!r.to_string().contains("file-secret-value"), "{r:#}");
}

/// Each `runcap run` is a process of its own that opens the store after the last one
/// closed, and so rebuilds the WAL's index from every frame the WAL holds: commands must
/// leave it short, or every start reads more than the one before.
#[test]
fn commands_in_a_row_leave_the_wal_short() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let check = r#"
[runbooks.check]
[[runbooks.check.steps]]
uses = "probe"
with = { url = "{{ vars.base }}/health" }
"#;
    sb.write("runcap.toml", &manifest(&svc, check));
    let wal = sb.path().join(".runcap/runcap.db-wal");
    let mut largest = 0;
    for _ in 0..40 {
        sb.run(&["run", "check"]).expect_code(0);
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // SQLite's own checkpoint would let it reach 4 MiB.
    assert!(largest < 512 << 10, "the WAL reached {largest} bytes");
    let history = sb
        .run(&["history", "--json", "--limit", "100"])
        .expect_code(0);
    assert_eq!(history.json().as_array().map(Vec::len), Some(40));
}
