//! `runcap serve` as a real process on a free loopback port: schedules observed firing
//! through the API, tokens and scopes, runs started over HTTP, metrics, the status
//! page, SIGTERM leaving nothing running, and kill -9 recovered by the next start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, Served, Service, plugin_lines, served_by};

const READ: &str = "read-token-0123456789";
const RUN: &str = "run-token-9876543210";

fn manifest(svc: &Service, extra: &str) -> String {
    format!(
        r#"
environment = "test"

[secrets.api_read]
file = "read.token"
[secrets.api_run]
file = "run.token"

[serve]
listen = "127.0.0.1:0"
tokens = [
  {{ secret = "api_read", scopes = ["read"] }},
  {{ secret = "api_run", scopes = ["read", "run:health"] }},
]

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.health]
description = "Is the service up?"
schedule = {{ every = "200ms" }}
[[runbooks.health.steps]]
id = "up"
uses = "probe"
with = {{ url = "{base}/health" }}

[runbooks.broken]
[[runbooks.broken.steps]]
id = "down"
uses = "probe"
with = {{ url = "{base}/unhealthy" }}
{extra}
"#,
        probe = plugin_lines("http-probe"),
        port = svc.addr.port(),
        base = svc.url(""),
    )
}

fn serve(sb: &Sandbox) -> Served {
    let mut cmd = sb.runcap();
    cmd.args(["serve", "--grace", "2s"]);
    served_by(cmd)
}

/// One HTTP/1.1 exchange with a bearer token (if any); returns the status and the body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth: Vec<(&str, String)> = token
        .map(|t| ("Authorization", format!("Bearer {t}")))
        .into_iter()
        .collect();
    request(addr, method, path, &auth, body)
}

/// A POST with extra headers; returns the status and the body.
fn post_with(addr: &str, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    request(addr, "POST", path, headers, body)
}

/// One HTTP/1.1 exchange; returns the status and the (de-chunked) body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("the server accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    // Chunked bodies: keep what is between the chunk sizes.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

fn get_json(addr: &str, path: &str, token: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, Some(token), "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Polls until `f` returns something, for at most a minute.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Rewrites the sandbox's manifest so the run token may start any runbook (scope
/// `run`, not `run:health`); returns the new text.
fn any_runbook_token(sb: &Sandbox) -> String {
    let text = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace("\"run:health\"", "\"run\"");
    sb.write("runcap.toml", &text);
    text
}

fn sandbox(svc: &Service, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("read.token", READ);
    sb.write("run.token", RUN);
    sb.write("runcap.toml", &manifest(svc, extra));
    sb.run(&["check"]).expect_code(0);
    sb
}

#[test]
fn schedules_fire_the_api_answers_by_scope_and_sigterm_leaves_nothing_running() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    let mut served = serve(&sb);
    let addr = served.addr.clone();

    // The schedule fires, again and again, seen through the API.
    poll("two scheduled runs", || {
        let runs = get_json(&addr, "/api/v1/runs?runbook=health", READ);
        (runs
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "ok")
            .count()
            >= 2)
            .then_some(())
    });
    // Each run names this host, as a controller's list names its agents'; a filter on
    // another host finds nothing here.
    let here = get_json(&addr, "/api/v1/runs?runbook=health&limit=1", READ);
    let host = here[0]["host"].as_str().unwrap().to_string();
    assert!(!host.is_empty(), "{here:#}");
    let mine = get_json(&addr, &format!("/api/v1/runs?host={host}&limit=1"), READ);
    assert_eq!(mine[0]["id"], here[0]["id"], "{mine:#}");
    let elsewhere = get_json(&addr, "/api/v1/runs?host=not-this-host", READ);
    assert_eq!(elsewhere, serde_json::json!([]));
    let books = get_json(&addr, "/api/v1/runbooks", READ);
    let health = books
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "health")
        .unwrap();
    assert_eq!(health["schedule"], "every 200ms", "{books:#}");
    assert_eq!(health["last_run"]["runbook"], "health", "{books:#}");

    // Tokens and scopes.
    let start = r#"{"runbook": "health"}"#;
    assert_eq!(http(&addr, "GET", "/api/v1/runs", None, "").0, 401);
    assert_eq!(
        http(&addr, "GET", "/api/v1/runs", Some("not-a-token"), "").0,
        401
    );
    assert_eq!(
        http(&addr, "POST", "/api/v1/runs", Some(READ), start).0,
        403
    );
    let (code, body) = http(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(RUN),
        r#"{"runbook": "broken"}"#,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not run `broken`"), "{body}");
    let (code, body) = http(&addr, "POST", "/api/v1/runs", Some(RUN), "{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("the body is not"), "{body}");

    // A run started over HTTP, then read back as `runcap show --json` prints it.
    let (code, body) = http(&addr, "POST", "/api/v1/runs", Some(RUN), start);
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = poll("the started run to finish", || {
        let (code, body) = http(&addr, "GET", &format!("/api/v1/runs/{id}"), Some(READ), "");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["status"] == "ok").then_some(v)
    });
    assert_eq!(run["steps"][0]["id"], "up", "{run:#}");

    // Metrics in Prometheus' text format.
    let (code, metrics) = http(&addr, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    for needle in [
        "runcap_runs_total{runbook=\"health\",status=\"ok\"}",
        "runcap_step_duration_seconds_bucket{",
        "runcap_probe_up{runbook=\"health\",step=\"up\"} 1",
        "runcap_last_success_timestamp_seconds{runbook=\"health\"}",
        "runcap_schedule_lag_seconds{runbook=\"health\"}",
        "runcap_plugin_instances 1",
        "runcap_open_faults 0",
    ] {
        assert!(
            metrics.contains(needle),
            "`{needle}` missing from:\n{metrics}"
        );
    }

    // The refusals were audited.
    let db = rusqlite::Connection::open(sb.path().join(".runcap/runcap.db")).unwrap();
    let denied: i64 = db
        .query_row(
            "SELECT count(*) FROM audit WHERE kind = 'api.denied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(denied >= 4, "{denied} refusals audited");

    // SIGTERM: the server stops and nothing is left running.
    signal(&served.child, "-TERM");
    let status = poll("serve to exit", || served.child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    let running: i64 = db
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
}

#[test]
fn the_status_page_shows_a_failing_runbook_as_failing() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    sb.run(&["run", "broken"]).expect_code(1);
    let served = serve(&sb);
    let addr = served.addr.clone();
    poll("a scheduled run", || {
        let runs = get_json(&addr, "/api/v1/runs?runbook=health", READ);
        (!runs.as_array()?.is_empty()).then_some(())
    });
    let (code, page) = http(&addr, "GET", "/", None, "");
    assert_eq!(code, 200);
    assert!(
        page.contains("<section class=\"rb\" id=\"rb-broken\" data-state=\"fail\">"),
        "{page}"
    );
    assert!(
        page.contains("id=\"rb-health\" data-state=\"ok\"")
            || page.contains("id=\"rb-health\" data-state=\"running\""),
        "{page}"
    );
    assert!(page.contains("<meta http-equiv=\"refresh\""), "{page}");
    assert!(
        page.contains("<table id=\"incidents\">"),
        "the failed run opened an incident: {page}"
    );
}

#[test]
fn a_killed_server_is_recovered_by_the_next_start() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(
        &svc,
        &format!(
            r#"
[runbooks.long]
[[runbooks.long.steps]]
id = "slow"
uses = "probe"
with = {{ url = "{}/slow?ms=20000" }}
"#,
            svc.url("")
        ),
    );
    // The run token may start `long` too.
    any_runbook_token(&sb);
    let mut served = serve(&sb);
    let addr = served.addr.clone();
    let (code, body) = http(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(RUN),
        r#"{"runbook": "long"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    poll("the long step to start", || {
        let run = get_json(&addr, &format!("/api/v1/runs/{id}"), READ);
        (run["steps"].as_array().is_some_and(|s| !s.is_empty())).then_some(())
    });
    signal(&served.child, "-KILL");
    served.child.wait().unwrap();
    drop(served);

    let served = serve(&sb);
    let run = get_json(&served.addr, &format!("/api/v1/runs/{id}"), READ);
    assert_eq!(run["status"], "interrupted", "{run:#}");
}

/// HMAC-SHA256 as RFC 2104 defines it, written out independently of the server's.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[test]
fn alerts_start_their_runbook_once_and_only_when_proven_and_firing() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(
        &svc,
        &format!(
            r#"
[secrets.alert_token]
file = "alert.token"
[secrets.alert_key]
file = "alert.key"

[runbooks.restart]
[[runbooks.restart.steps]]
id = "check"
uses = "probe"
with = {{ url = "{base}/health?svc={{{{ trigger.labels.service }}}}&why={{{{ trigger.annotations.summary }}}}" }}

[serve.triggers.api-down]
runbook = "restart"
match = {{ alertname = "ServiceDown", service = "api" }}
token = "alert_token"

[serve.triggers.signed]
runbook = "restart"
hmac = "alert_key"
"#,
            base = svc.url("")
        ),
    );
    sb.write("alert.token", "alert-token-abcdef123456");
    sb.write("alert.key", "alert-hmac-key-0123456789");
    sb.run(&["check"]).expect_code(0);
    let served = serve(&sb);
    let addr = served.addr.clone();
    let bearer = [(
        "Authorization",
        "Bearer alert-token-abcdef123456".to_string(),
    )];
    let payload = r#"{
      "version": "4", "status": "firing", "receiver": "runcap", "groupKey": "{}:{}",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "ServiceDown", "service": "api"},
         "annotations": {"summary": "api-is-down"}, "fingerprint": "f1"},
        {"status": "resolved", "labels": {"alertname": "ServiceDown", "service": "api"}, "fingerprint": "f0"},
        {"status": "firing", "labels": {"alertname": "DiskFull", "service": "api"}, "fingerprint": "f2"}
      ]
    }"#;
    let path = "/api/v1/triggers/api-down";

    // Refused before anything is read: no token, a wrong one.
    assert_eq!(post_with(&addr, path, &[], payload).0, 401);
    let wrong = [("Authorization", "Bearer nope".to_string())];
    assert_eq!(post_with(&addr, path, &wrong, payload).0, 401);
    // Not an alert: 400 with the reason, nothing started.
    let (code, body) = post_with(&addr, path, &bearer, r#"{"hello": 1}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("expected an Alertmanager webhook"), "{body}");
    let (code, body) = post_with(&addr, path, &bearer, "{");
    assert_eq!((code, body.contains("not JSON")), (400, true), "{body}");

    let (code, body) = post_with(&addr, path, &bearer, payload);
    assert_eq!(code, 202, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["started"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(
        (r["resolved"].as_u64(), r["unmatched"].as_u64()),
        (Some(1), Some(1)),
        "{r:#}"
    );
    let id = r["started"][0].as_str().unwrap().to_string();
    // The same alert again starts nothing.
    let (_, body) = post_with(&addr, path, &bearer, payload);
    let again: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            again["started"].as_array().unwrap().len(),
            again["deduplicated"].as_u64()
        ),
        (0, Some(1)),
        "{again:#}"
    );

    let run = poll("the triggered run", || {
        let v = get_json(&addr, &format!("/api/v1/runs/{id}"), READ);
        (v["status"] == "ok").then_some(v)
    });
    let url = run["steps"][0]["details"]["url"].as_str().unwrap();
    assert!(url.ends_with("/health?svc=api&why=api-is-down"), "{url}");

    // Signed alerts: a fresh signature is accepted once, a replay and a forgery are not.
    let plain = r#"{"labels": {"alertname": "Manual", "service": "db"}}"#;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = hmac_sha256(
        b"alert-hmac-key-0123456789",
        format!("{ts}.{plain}").as_bytes(),
    );
    let signed = [
        ("X-Runcap-Timestamp", ts.clone()),
        ("X-Runcap-Signature", format!("sha256={sig}")),
    ];
    let (code, body) = post_with(&addr, "/api/v1/triggers/signed", &signed, plain);
    assert_eq!(code, 202, "{body}");
    let (code, body) = post_with(&addr, "/api/v1/triggers/signed", &signed, plain);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("replay"), "{body}");
    let forged = [
        ("X-Runcap-Timestamp", ts),
        ("X-Runcap-Signature", format!("sha256={}", "0".repeat(64))),
    ];
    assert_eq!(
        post_with(&addr, "/api/v1/triggers/signed", &forged, plain).0,
        401
    );
}

#[test]
fn sigterm_during_a_fault_drill_reverts_the_fault() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write("read.token", READ);
    sb.write("run.token", RUN);
    std::fs::create_dir_all(sb.path().join("data")).unwrap();
    let original = "index-record-0123456789\n".repeat(2000);
    sb.write("data/index.db", &original);
    let text = manifest(
        &svc,
        &format!(
            r#"
[plugins.chaos]
{chaos}
limits = {{ time = "2m" }}
grants.http = {{ allow = [] }}
grants.faults.corrupt-file = {{ targets = ["data"], max_duration = "2m" }}

[plugins.hold]
{probe}
limits = {{ time = "2m" }}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.drill]
[[runbooks.drill.steps]]
id = "inject"
uses = "chaos"
with = {{ action = "inject", fault = {{ kind = "corrupt-file", target = "data", path = "index.db", duration = "90s" }} }}
[[runbooks.drill.steps]]
id = "hold"
uses = "hold"
with = {{ url = "{base}/slow?ms=100000", timeout = "100s" }}
"#,
            chaos = plugin_lines("chaos"),
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
            base = svc.url(""),
        ),
    )
    .replace("\"run:health\"", "\"run\"");
    sb.write("runcap.toml", &text);
    sb.run(&["check"]).expect_code(0);
    let mut served = serve(&sb);
    let addr = served.addr.clone();
    let (code, body) = http(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(RUN),
        r#"{"runbook": "drill"}"#,
    );
    assert_eq!(code, 202, "{body}");
    poll("the fault to be active", || {
        let f = get_json(&addr, "/api/v1/faults", READ);
        f.as_array()?
            .iter()
            .any(|x| x["state"] == "active")
            .then_some(())
    });
    assert_ne!(
        std::fs::read(sb.path().join("data/index.db")).unwrap(),
        original.as_bytes()
    );

    signal(&served.child, "-TERM");
    let status = poll("serve to exit", || served.child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read(sb.path().join("data/index.db")).unwrap(),
        original.as_bytes(),
        "the file is restored byte for byte"
    );
    let faults = sb.run(&["faults", "--json"]).expect_code(0).json();
    assert!(
        faults
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] != "active"),
        "{faults:#}"
    );
    let runs = sb
        .run(&["history", "drill", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(runs[0]["status"], "cancelled", "{runs:#}");
}

#[test]
fn a_reload_with_a_broken_manifest_keeps_serving_and_a_good_one_takes_over() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    let text = any_runbook_token(&sb);
    let mut served = serve(&sb);
    let addr = served.addr.clone();

    // A typo: refused with the file and line, and the old environment keeps serving.
    sb.write(
        "runcap.toml",
        &text.replace("[runbooks.broken]", "[runbooks.broken]\nbogus = 1"),
    );
    let (code, body) = http(&addr, "POST", "/api/v1/reload", Some(RUN), "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("unknown field `bogus`") && body.contains("runcap.toml:"),
        "{body}"
    );
    assert_eq!(http(&addr, "POST", "/api/v1/reload", Some(READ), "").0, 403);
    let books = get_json(&addr, "/api/v1/runbooks", READ);
    assert_eq!(books.as_array().unwrap().len(), 2, "{books:#}");

    // Fixed, with one more runbook: SIGHUP takes it in; the API and schedules go on.
    sb.write(
        "runcap.toml",
        &format!(
            "{text}\n[runbooks.added]\n[[runbooks.added.steps]]\nid = \"up\"\nuses = \"probe\"\nwith = {{ url = \"{}\" }}\n",
            svc.url("/health")
        ),
    );
    signal(&served.child, "-HUP");
    poll("the reloaded environment", || {
        let books = get_json(&addr, "/api/v1/runbooks", READ);
        (books.as_array()?.len() == 3).then_some(())
    });
    let before = get_json(&addr, "/api/v1/runs?runbook=health", READ)
        .as_array()
        .unwrap()
        .len();
    poll("a scheduled run after the reload", || {
        let n = get_json(&addr, "/api/v1/runs?runbook=health", READ)
            .as_array()?
            .len();
        (n > before).then_some(())
    });
    let (code, body) = http(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(RUN),
        r#"{"runbook": "added"}"#,
    );
    assert_eq!(code, 202, "{body}");
    signal(&served.child, "-TERM");
    let status = poll("serve to exit", || served.child.try_wait().unwrap());
    assert!(status.success(), "{status}");
}

#[test]
fn a_flapping_remediation_is_held_escalated_once_and_released_by_an_operator() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(
        &svc,
        &format!(
            r#"
[secrets.alert_token]
file = "alert.token"

[runbooks.restart]
[[runbooks.restart.steps]]
id = "check"
uses = "probe"
with = {{ url = "{health}" }}

[runbooks.page]
[[runbooks.page.steps]]
id = "page"
uses = "probe"
with = {{ url = "{health}?incident={{{{ trigger.incident }}}}" }}

[serve.triggers.api-down]
runbook = "restart"
token = "alert_token"
flap = {{ runs = 2, within = "10m", escalate = "page" }}
"#,
            health = svc.url("/health")
        ),
    );
    sb.write("alert.token", "alert-token-abcdef123456");
    // The operator's token may act on incidents (scope "run").
    any_runbook_token(&sb);
    sb.run(&["check"]).expect_code(0);
    let served = serve(&sb);
    let addr = served.addr.clone();
    let bearer = [(
        "Authorization",
        "Bearer alert-token-abcdef123456".to_string(),
    )];
    let fire = |fp: &str| -> serde_json::Value {
        let body =
            format!(r#"{{"labels": {{"alertname": "ServiceDown"}}, "fingerprint": "{fp}"}}"#);
        let (code, body) = post_with(&addr, "/api/v1/triggers/api-down", &bearer, &body);
        assert_eq!(code, 202, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let finished = |runbook: &str, n: usize| {
        poll(&format!("{n} finished runs of {runbook}"), || {
            let runs = get_json(&addr, &format!("/api/v1/runs?runbook={runbook}"), READ);
            let done = runs
                .as_array()?
                .iter()
                .filter(|r| r["status"] == "ok")
                .count();
            (done >= n).then_some(())
        })
    };
    assert_eq!(fire("a1")["started"].as_array().unwrap().len(), 1);
    finished("restart", 1);
    assert_eq!(fire("a2")["started"].as_array().unwrap().len(), 1);
    finished("restart", 2);

    // Two runs in the window and the alert still fires: held, an incident, one page.
    let r = fire("a3");
    assert_eq!(
        (r["started"].as_array().unwrap().len(), r["held"].as_u64()),
        (0, Some(1)),
        "{r:#}"
    );
    let incident = r["incident"].as_i64().unwrap();
    finished("page", 1);
    let r = fire("a4");
    assert_eq!(
        (r["held"].as_u64(), r["incident"].as_i64()),
        (Some(1), Some(incident)),
        "{r:#}"
    );
    let pages = get_json(&addr, "/api/v1/runs?runbook=page", READ);
    assert_eq!(
        pages.as_array().unwrap().len(),
        1,
        "escalated once: {pages:#}"
    );

    // The operator takes it, then closes it; the trigger starts runs again.
    let id = incident.to_string();
    let out = sb
        .run(&["incidents", "ack", &id, "--note", "on it"])
        .expect_code(0)
        .stdout();
    assert!(
        out.contains(&format!("incident #{id} (restart) acknowledged")),
        "{out}"
    );
    let list = sb.run(&["incidents", "--json"]).expect_code(0).json();
    let inc = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == incident)
        .unwrap()
        .clone();
    assert_eq!(inc["status"], "acknowledged", "{inc:#}");
    assert!(inc["timeline"].to_string().contains("flapping"), "{inc:#}");
    assert!(inc["timeline"].to_string().contains("on it"), "{inc:#}");
    assert_eq!(
        fire("a5")["held"].as_u64(),
        Some(1),
        "acknowledged is not resolved"
    );
    let (code, body) = http(
        &addr,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        Some(RUN),
        r#"{"note": "disk cleaned"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http(
            &addr,
            "POST",
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(RUN),
            ""
        )
        .0,
        404
    );
    assert_eq!(sb.run(&["incidents", "resolve", &id]).code(), 2);
    let r = fire("a6");
    assert_eq!(r["started"].as_array().unwrap().len(), 1, "released: {r:#}");
}

/// Chromium from the system's packages, if installed (`./dev setup` installs it).
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn the_status_page_renders_in_a_real_browser() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (./dev setup installs it)");
        return;
    };
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    sb.run(&["run", "broken"]).expect_code(1);
    let served = serve(&sb);
    let addr = served.addr.clone();
    poll("a scheduled run", || {
        let runs = get_json(&addr, "/api/v1/runs?runbook=health", READ);
        runs.as_array()?
            .iter()
            .any(|r| r["status"] == "ok")
            .then_some(())
    });
    let profile = tempfile::tempdir().unwrap();
    let browse = |extra: &[&str]| {
        let out = std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("http://{addr}/"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // The DOM the browser built: the failing runbook is failing, with a red bar.
    let dom = String::from_utf8(browse(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("id=\"rb-broken\" data-state=\"fail\""),
        "{dom}"
    );
    assert!(dom.contains("<span class=\"bar fail\""), "{dom}");
    assert!(
        dom.contains("id=\"rb-health\" data-state=\"ok\"")
            || dom.contains("id=\"rb-health\" data-state=\"running\""),
        "{dom}"
    );
    // A phone-sized screenshot is drawn.
    let shot = profile.path().join("status.png");
    browse(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=390,844",
        "--hide-scrollbars",
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 4_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn serves_https_when_a_certificate_is_given() {
    let pki = runcap_e2e::demo_service::test_pki(30).expect("test certificates");
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    sb.write("ca.pem", &pki.ca_pem);
    sb.write("server.pem", &pki.cert_pem);
    sb.write("server.key", &pki.key_pem);
    let plain = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    let with_tls = |key: &str| {
        plain.replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:0\"\ntls = {{ cert = \"server.pem\", key = \"{key}\" }}"
            ),
        )
    };
    // A key that is not there is caught by check, at the key that names it.
    sb.write("runcap.toml", &with_tls("missing.key"));
    let e = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        e.contains("serve.tls") && e.contains("cannot read the private key"),
        "{e}"
    );

    sb.write("runcap.toml", &with_tls("server.key"));
    let mut child = sb
        .runcap()
        .args(["serve", "--grace", "2s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no https address in `{line}`"))
        .to_string();
    let served = Served {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--resolve"])
            .arg(format!("localhost:{port}:127.0.0.1"))
            .args(extra)
            .arg(format!("https://localhost:{port}/metrics"))
            .current_dir(sb.path())
            .output()
            .expect("curl runs")
    };
    let ok = curl(&["--cacert", "ca.pem", "-f"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("runcap_plugin_instances 1"));
    // Not trusted without the CA; not spoken in clear text.
    assert!(!curl(&[]).status.success());
    // The server may close the connection before the request is even written (the
    // bytes are not a TLS handshake): a write or read error is as good as no answer.
    let mut plain = TcpStream::connect(&served.addr).expect("the server accepts");
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = write!(
        plain,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("runcap_"),
        "metrics were served in clear text"
    );
}

#[test]
fn a_server_whose_binary_was_replaced_still_compiles_a_new_plugin_on_reload() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc, "");
    let text = any_runbook_token(&sb);
    // The server runs from a copy of the binary, which is then deleted, as an upgrade
    // that replaces the file under a running server does.
    let exe = sb.path().join("runcap-copy");
    // Copied by a child process: a file this test process held open for writing could be
    // inherited by a child another test forks at that moment, and executing a file open
    // for writing anywhere fails with "Text file busy".
    let copied = std::process::Command::new("cp")
        .arg(runcap_e2e::runcap_bin())
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success(), "cp runcap: {copied}");
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["serve", "--grace", "2s"])
        .current_dir(sb.path())
        .env("RUNCAP_CACHE_DIR", sb.path().join(".cache"))
        .env_remove("RUNCAP_LOG");
    let served = served_by(cmd);
    std::fs::remove_file(&exe).unwrap();
    // A plugin the server has not compiled yet: the compiler child cannot start, so the
    // server compiles it itself.
    sb.write(
        "runcap.toml",
        &format!(
            "{text}\n[plugins.noop]\n{noop}\n[runbooks.added]\n[[runbooks.added.steps]]\nuses = \"noop\"\n",
            noop = plugin_lines("noop")
        ),
    );
    let (code, body) = http(&served.addr, "POST", "/api/v1/reload", Some(RUN), "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        &served.addr,
        "POST",
        "/api/v1/runs",
        Some(RUN),
        r#"{"runbook": "added"}"#,
    );
    assert_eq!(code, 202, "{body}");
    poll("the run of the new plugin", || {
        let runs = get_json(&served.addr, "/api/v1/runs?runbook=added", READ);
        (runs[0]["status"] == "ok").then_some(())
    });
}

#[test]
fn an_accepted_run_that_never_starts_is_recorded_as_cancelled() {
    let svc = Service::start("127.0.0.1", None);
    let extra = format!(
        r#"
[runbooks.hold]
overlap = "refuse"
[[runbooks.hold.steps]]
id = "slow"
uses = "probe"
with = {{ url = "{}" }}
"#,
        svc.url("/slow?ms=3000")
    );
    let sb = sandbox(&svc, &extra);
    any_runbook_token(&sb);
    let served = serve(&sb);
    let start = || {
        let (code, body) = http(
            &served.addr,
            "POST",
            "/api/v1/runs",
            Some(RUN),
            r#"{"runbook": "hold"}"#,
        );
        assert_eq!(code, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["run_id"].as_str().unwrap().to_string()
    };
    let first = start();
    poll("the first run to hold its lock", || {
        let run = get_json(&served.addr, &format!("/api/v1/runs/{first}"), READ);
        (run["status"] == "running").then_some(())
    });
    let second = start();
    // Refused by the runbook's lock: its id answers with what became of it, not 404.
    let run = poll("the refused run's record", || {
        let (code, body) = http(
            &served.addr,
            "GET",
            &format!("/api/v1/runs/{second}"),
            Some(READ),
            "",
        );
        assert_ne!(code, 404, "{body}");
        let run: serde_json::Value = serde_json::from_str(&body).unwrap();
        (run["status"] == "cancelled").then_some(run)
    });
    assert!(run.to_string().contains("not started"), "{run:#}");
}

#[test]
fn runs_missed_while_no_server_ran_are_reported_once_and_not_replayed() {
    let svc = Service::start("127.0.0.1", None);
    let extra = format!(
        r#"
[runbooks.minutely]
schedule = {{ every = "60s" }}
[[runbooks.minutely.steps]]
id = "up"
uses = "probe"
with = {{ url = "{}" }}
"#,
        svc.url("/health")
    );
    let sb = sandbox(&svc, &extra);
    sb.run(&["run", "minutely"]).expect_code(0);
    // That run, moved an hour back: sixty runs were due since, with no server running.
    let db = rusqlite::Connection::open(sb.path().join(".runcap/runcap.db")).unwrap();
    let moved = db
        .execute(
            "UPDATE runs SET started_at = started_at - 3600000, finished_at = finished_at - 3600000 WHERE runbook = 'minutely'",
            [],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(db);

    let mut cmd = sb.runcap();
    cmd.args(["serve", "--grace", "2s"])
        .stderr(std::process::Stdio::piped());
    let mut served = served_by(cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = served.child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let report = poll("the missed runs reported", || {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        lines.iter().find(|l| l.contains("missed")).cloned()
    });
    assert!(
        report.contains("runbook `minutely`")
            && report.contains("missed 60 scheduled run(s)")
            && report.contains("not replayed"),
        "{report}"
    );
    // The schedule's own first run happens, and only that one.
    poll("the schedule's first run", || {
        let runs = get_json(&served.addr, "/api/v1/runs?runbook=minutely", READ);
        let n = runs.as_array().map_or(0, |a| a.len());
        (n >= 2).then_some(())
    });
    signal(&served.child, "-TERM");
    assert!(served.child.wait().unwrap().success());
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let reports = lines.iter().filter(|l| l.contains("missed")).count();
    assert_eq!(reports, 1, "reported once: {lines:#?}");

    let history = sb
        .run(&["history", "minutely", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        history.as_array().map(|a| a.len()),
        Some(2),
        "the missed runs are not replayed: {history:#}"
    );
}

#[test]
fn escalation_tiers_are_reached_by_failures_by_time_and_by_a_missed_sla_once_each() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(
        &svc,
        &format!(
            r#"
[plugins.notify]
{notify}
grants.notify.channels.oncall = {{ url = "{base}/hooks/oncall", format = "json" }}
grants.notify.channels.lead = {{ url = "{base}/hooks/lead", format = "json" }}
grants.notify.channels.manager = {{ url = "{base}/hooks/manager", format = "json" }}

[incidents]
sla = {{ critical = "1s" }}

[runbooks.api-down]
[[runbooks.api-down.steps]]
id = "probe"
uses = "probe"
with = {{ url = "{base}/unhealthy" }}

[runbooks.api-down.incident]
severity = "critical"

[[runbooks.api-down.incident.tiers]]
name = "on-call"
after = 1
steps = [{{ id = "oncall", uses = "notify", with = {{ channel = "oncall", title = "{{{{ run.runbook }}}} failed" }} }}]

[[runbooks.api-down.incident.tiers]]
name = "manager"
after = "sla"
steps = [{{ id = "manager", uses = "notify", with = {{ channel = "manager", title = "incident {{{{ incident.id }}}} missed its SLA" }} }}]

[[runbooks.api-down.incident.tiers]]
name = "lead"
after = "2s"
steps = [{{ id = "lead", uses = "notify", with = {{ channel = "lead", title = "incident {{{{ incident.id }}}}: {{{{ incident.tier }}}}" }} }}]
"#,
            notify = plugin_lines("notify"),
            base = svc.url(""),
        ),
    );
    let served = serve(&sb);
    // The run fails and reaches the first tier itself; the server's clock does the rest.
    sb.run(&["run", "api-down"]).expect_code(1);
    let hooks = |name: &str| -> Vec<serde_json::Value> {
        svc.state
            .hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(hooks("oncall").len(), 1);
    let lead = poll("the time tier", || hooks("lead").pop());
    let manager = poll("the SLA tier", || hooks("manager").pop());
    let incidents = sb.run(&["incidents", "--json"]).expect_code(0).json();
    let incident = &incidents[0];
    let id = incident["id"].as_i64().unwrap();
    assert_eq!(lead["title"], format!("incident {id}: lead"));
    assert_eq!(manager["title"], format!("incident {id} missed its SLA"));
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let kinds: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for (kind, n) in [("escalated", 3), ("sla-missed", 1), ("notified", 3)] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            n,
            "{kind}: {kinds:?}"
        );
    }
    // Once each: a second failure reaches nothing new.
    sb.run(&["run", "api-down"]).expect_code(1);
    assert_eq!(
        (
            hooks("oncall").len(),
            hooks("lead").len(),
            hooks("manager").len()
        ),
        (1, 1, 1)
    );
    let audit = sb.run(&["audit", "verify"]).expect_code(0).stdout();
    assert!(!audit.is_empty());
    drop(served);
}

#[test]
fn an_alert_fills_its_runbooks_parameters_and_one_they_refuse_starts_nothing() {
    let svc = Service::start("127.0.0.1", None);
    let restart = format!(
        r#"
[secrets.alert_token]
file = "alert.token"

[runbooks.restart.params.service]
values = ["api", "worker"]
[runbooks.restart.params.wait]
type = "int"
default = 5
[[runbooks.restart.steps]]
id = "check"
uses = "probe"
with = {{ url = "{base}/health?svc={{{{ params.service }}}}&wait={{{{ params.wait }}}}" }}

[serve.triggers.down]
runbook = "restart"
match = {{ alertname = "ServiceDown" }}
token = "alert_token"
"#,
        base = svc.url("")
    );
    let sb = Sandbox::new();
    sb.write("read.token", READ);
    sb.write("run.token", RUN);
    sb.write("alert.token", "alert-token-abcdef123456");

    // A trigger that cannot give a required parameter is refused at check time, and the
    // hint, pasted under the trigger, is accepted.
    sb.write("runcap.toml", &manifest(&svc, &restart));
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        err.contains("runbook `restart` requires the parameter `service`"),
        "{err}"
    );
    assert!(err.contains("runcap.toml:"), "located: {err}");
    let start = err.find("params = {").expect(&err);
    let hint = err[start..].lines().next().unwrap();
    sb.write(
        "runcap.toml",
        &manifest(&svc, &format!("{restart}{hint}\n")),
    );
    sb.run(&["check"]).expect_code(0);

    // Parameters the runbook does not declare, fixed values it refuses, and templates
    // reading more than the alert are refused too, each at its key.
    for (params, key, expected) in [
        (
            r#"{ service = "api", size = "3" }"#,
            "params.size",
            "declares no parameter `size`",
        ),
        (
            r#"{ service = "db" }"#,
            "params.service",
            "`db` is not one of api, worker",
        ),
        (
            r#"{ service = "{{ steps.check.summary }}" }"#,
            "params.service",
            "only `trigger.*` is",
        ),
        (
            r#"{ service = "{{ trigger.labelz.service }}" }"#,
            "params.service",
            "is not a field of an alert",
        ),
    ] {
        sb.write(
            "runcap.toml",
            &manifest(&svc, &format!("{restart}params = {params}\n")),
        );
        let err = sb.run(&["check"]).expect_code(2).stderr();
        assert!(err.contains(expected), "{params}: {err}");
        let at = format!("serve.triggers.down.{key}");
        assert!(err.contains(&at), "{params}: {err}");
    }

    sb.write(
        "runcap.toml",
        &manifest(&svc, &format!("{restart}{hint}\n")),
    );
    let served = serve(&sb);
    let addr = served.addr.clone();
    let bearer = [(
        "Authorization",
        "Bearer alert-token-abcdef123456".to_string(),
    )];
    let alert = |service: &str, fingerprint: &str| {
        format!(
            r#"{{"status": "firing", "labels": {{"alertname": "ServiceDown", "service": "{service}"}}, "fingerprint": "{fingerprint}"}}"#
        )
    };

    // The alert names a service the runbook takes: it runs for that service.
    let (code, body) = post_with(
        &addr,
        "/api/v1/triggers/down",
        &bearer,
        &alert("worker", "w1"),
    );
    assert_eq!(code, 202, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = r["started"][0].as_str().expect(&body).to_string();
    let run = poll("the triggered run", || {
        let v = get_json(&addr, &format!("/api/v1/runs/{id}"), READ);
        (v["status"] == "ok").then_some(v)
    });
    let url = run["steps"][0]["details"]["url"].as_str().unwrap();
    assert!(url.ends_with("/health?svc=worker&wait=5"), "{url}");

    // One it does not take: 422 with the reason, nothing started, and the same alert
    // sent again is refused again rather than taken for a duplicate.
    for _ in 0..2 {
        let (code, body) = post_with(&addr, "/api/v1/triggers/down", &bearer, &alert("db", "d1"));
        assert_eq!(code, 422, "{body}");
        let r: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(r["started"].as_array().map(Vec::len), Some(0), "{r:#}");
        assert_eq!(r["deduplicated"], 0, "{r:#}");
        let reason = r["rejected"][0]["reason"].as_str().expect(&body);
        assert!(
            reason.contains("`db` is not one of api, worker"),
            "{reason}"
        );
    }
    // An alert without the label: refused, naming what is missing.
    let (code, body) = post_with(
        &addr,
        "/api/v1/triggers/down",
        &bearer,
        r#"{"status": "firing", "labels": {"alertname": "ServiceDown"}, "fingerprint": "n1"}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("service"), "{body}");
}
