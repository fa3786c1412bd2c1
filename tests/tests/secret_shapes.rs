//! Secrets of any shape: a multi-line value (a PEM key, a credentials file) is redacted
//! wherever runcap writes or prints, line by line in line streams (plugin output copies,
//! service logs) and whole in strings; a value too short to redact is refused by `check`.

use std::time::{Duration, Instant};

use runcap_e2e::{Run, Sandbox, files_below, plugin_lines, step};

/// A private key in PEM form (random bytes, not a real key).
const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7kZ3mQ1x9Lr2p
Vt8sWq4nYc6HjF0dKe5uTbA3gXoN7iPzRl1yMvEa2Ks9DwBhJf4UqGtC8nOm6ZxL
t5YcRj2WkD9hPs3qNvB0aXeGiT7uMlF1oKz8yHd4rCw6SbVn2EjQfAp5Ix3gUt9O
-----END PRIVATE KEY-----
";

/// A credentials file: two lines, each meaningless alone but a secret together.
const CREDENTIALS: &str = "user=svc-backup-7731\npassword=Qm9vbGVhbi1mYWxzZS1ub3Q\n";

/// The pieces that must appear nowhere: every line of each secret but the PEM armour.
fn planted() -> Vec<&'static str> {
    PEM.lines()
        .chain(CREDENTIALS.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("key.pem", PEM);
    sb.write("credentials", CREDENTIALS);
    // An application log that printed both secrets, and a service that prints them too.
    sb.write(
        "logs/app.log",
        &format!("starting\nloaded key:\n{PEM}loaded {CREDENTIALS}ready\n"),
    );
    sb.write(
        "emit.sh",
        "cat key.pem credentials\necho printed\nexec sleep 60\n",
    );
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.tls-key]
file = "key.pem"

[secrets.backup-credentials]
file = "credentials"

[services.printer]
driver = "process"
command = "sh"
args = ["emit.sh"]
grace = "2s"

[plugins.sneaky]
{sneaky}
limits = {{ time = "5s" }}
grants.secrets = ["tls-key", "backup-credentials"]
grants.faults = {{}}

[plugins.redact]
{redact}
grants.secrets = ["tls-key", "backup-credentials"]
grants.fs = {{ input = {{ path = "logs", mode = "ro" }}, output = {{ path = "redacted", mode = "rw" }} }}

[plugins.control]
{control}
grants.http = {{ allow = [] }}
grants.services = {{ printer = ["start", "stop"] }}

[runbooks.leak]
steps = [
  {{ id = "pem", uses = "sneaky", with = {{ mode = "leak-secret", target = "tls-key" }} }},
  {{ id = "credentials", uses = "sneaky", with = {{ mode = "leak-secret", target = "backup-credentials" }} }},
  {{ id = "copy", uses = "redact", with = {{ secrets = ["tls-key", "backup-credentials"] }} }},
]

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "printer", action = "start", no_wait = true }} }}]

[runbooks.stop]
steps = [{{ uses = "control", with = {{ service = "printer", action = "stop" }} }}]
"#,
            sneaky = plugin_lines("sneaky"),
            redact = plugin_lines("redact"),
            control = plugin_lines("service-control"),
        ),
    );
    sb
}

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for piece in planted() {
        assert!(!text.contains(piece), "{what} keeps `{piece}`:\n{text}");
    }
}

fn printed(what: &str, run: &Run) {
    assert_clean(&format!("{what} (stdout)"), &run.0.stdout);
    assert_clean(&format!("{what} (stderr)"), &run.0.stderr);
}

#[test]
fn multi_line_secrets_reach_no_output() {
    let sb = sandbox();
    sb.run(&["check"]).expect_code(0);
    let human = sb.run(&["run", "leak"]);
    printed("run", &human);
    assert_eq!(human.code(), 0, "{}{}", human.stdout(), human.stderr());
    let json = sb.run(&["run", "leak", "--json"]);
    printed("run --json", &json);
    let report = json.json();
    // The plugin did read and leak the values: what reached the record is redacted.
    let pem = step(&report, "pem");
    assert!(
        pem["summary"]
            .as_str()
            .unwrap()
            .contains("[SECRET_REDACTED]"),
        "{pem:#}"
    );
    assert!(
        pem["stdout"]["text"]
            .as_str()
            .unwrap()
            .contains("[SECRET_REDACTED]")
    );
    let copy = std::fs::read_to_string(sb.path().join("redacted/app.log")).unwrap();
    assert_clean("the plugin's redacted copy", copy.as_bytes());
    assert!(
        copy.contains("starting\n") && copy.contains("ready\n"),
        "{copy}"
    );
    assert!(copy.contains("[SECRET_REDACTED]"), "{copy}");

    // A service that prints them: its log keeps none.
    sb.run(&["run", "start"]).expect_code(0);
    let log = sb.path().join(".runcap/services/printer.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("printed")) {
        assert!(
            Instant::now() < deadline,
            "the service's lines never reached its log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sb.run(&["run", "stop"]).expect_code(0);
    let service_log = std::fs::read(&log).unwrap();
    assert_clean("the service log", &service_log);
    assert!(String::from_utf8_lossy(&service_log).contains("[SECRET_REDACTED]"));

    let run_id = report["run_id"].as_str().unwrap().to_string();
    let bundle = sb.path().join("b.tar.gz");
    for args in [
        vec!["history"],
        vec!["history", "--json"],
        vec!["show", &run_id],
        vec!["show", &run_id, "--json"],
        vec!["audit", "verify"],
        vec!["audit", "head"],
        vec!["bundle", "--since", "1h", "--out", bundle.to_str().unwrap()],
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code(), 0, "{args:?}: {}", r.stderr());
        printed(&args.join(" "), &r);
    }
    // The state directory (SQLite files included) and the bundle, unpacked.
    let state = files_below(&sb.path().join(".runcap"));
    assert!(state.iter().any(|f| f.ends_with("runcap.db")), "{state:?}");
    for file in state {
        assert_clean(&file.display().to_string(), &std::fs::read(&file).unwrap());
    }
    let unpacked = sb.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .args([
            "-xzf",
            bundle.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let inside = files_below(&unpacked);
    assert!(!inside.is_empty());
    for file in inside {
        assert_clean(
            &format!("bundle {}", file.display()),
            &std::fs::read(&file).unwrap(),
        );
    }
}

#[test]
fn a_secret_too_short_to_redact_is_refused_at_check() {
    let sb = sandbox();
    sb.write("pin.txt", "42\n");
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace(
            "[secrets.tls-key]",
            "[secrets.pin]\nfile = \"pin.txt\"\n\n[secrets.tls-key]",
        );
    sb.write("runcap.toml", &manifest);
    let out = sb.run(&["check"]);
    assert_eq!(out.code(), 2, "{}{}", out.stdout(), out.stderr());
    assert!(
        out.stderr().contains("secret `pin` is 2 bytes long"),
        "{}",
        out.stderr()
    );
    assert!(!out.stderr().contains("42"), "{}", out.stderr());
}
