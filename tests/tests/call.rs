//! `runcap call`: one action without a runbook, its capability calls recorded to a
//! file (redacted) and replayed from it offline.

use runcap_e2e::{Sandbox, Service, plugin_lines};

const SECRET: &str = "tok-4f9c1e7a2b";

fn manifest(port: u16) -> String {
    format!(
        r#"
environment = "test"

[secrets.api-token]
file = "token.txt"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
"#,
        probe = plugin_lines("http-probe"),
    )
}

#[test]
fn a_recorded_call_replays_offline_and_keeps_no_secret() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write("token.txt", SECRET);
    sb.write("runcap.toml", &manifest(svc.addr.port()));
    let with = format!(
        r#"{{"url": "{}", "method": "POST", "body": "{SECRET}", "expect": {{"json": {{"/method": "POST"}}}}}}"#,
        svc.url("/echo")
    );
    let live = sb
        .run(&[
            "call", "probe", "--with", &with, "--record", "rec.json", "--json",
        ])
        .expect_code(0);
    let hint = live.stderr();
    let recording = std::fs::read_to_string(sb.path().join("rec.json")).unwrap();
    assert!(!recording.contains(SECRET), "{recording}");
    let doc: serde_json::Value = serde_json::from_str(&recording).unwrap();
    assert_eq!(doc["calls"][0]["call"], "http.send");
    assert_eq!(doc["calls"][0]["answer"]["Ok"]["status"], 200);
    let body: Vec<u8> = doc["calls"][0]["answer"]["Ok"]["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("\"method\":\"POST\""), "{body}");
    assert!(!body.contains(SECRET), "{body}");

    // The service goes away: the replay answers from the file, with the same result,
    // using the hint's own command.
    drop(svc);
    let command = hint
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {hint}"));
    let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
    args.push("--json");
    let replay = sb.run(&args).expect_code(0).json();
    let step = &replay["steps"][0];
    assert_eq!(step["status"], "ok", "{step:#}");
    assert_eq!(step["calls"][0]["result"], "replayed from the recording");

    // A plugin asking something else than was recorded fails its step, naming both.
    let other = sb
        .run(&[
            "call",
            "probe",
            "--replay",
            "rec.json",
            "--with",
            r#"{"url": "http://127.0.0.1:9/other"}"#,
        ])
        .expect_code(1)
        .stdout();
    assert!(
        other.contains("replay: call 1 is `http.send`") && other.contains("127.0.0.1:9/other"),
        "{other}"
    );

    // Calls are runs in the history, and open no incident.
    let history = sb.run(&["history"]).expect_code(0).stdout();
    assert!(history.contains("call:probe"), "{history}");
    let incidents = sb.run(&["incidents", "--json"]).expect_code(0).json();
    assert_eq!(incidents.as_array().map(Vec::len), Some(0), "{incidents:#}");

    let broken = sb.write("broken.json", "{\"plugin\": 1}");
    let err = sb
        .run(&["call", "probe", "--replay", broken.to_str().unwrap()])
        .expect_code(2)
        .stderr();
    assert!(
        err.contains("is not a recording written by `runcap call --record`"),
        "{err}"
    );
}
