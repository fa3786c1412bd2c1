//! Redaction end to end: the `scrub-logs` example turns real-looking logs into redacted copies
//! with a per-rule count, and nothing runcap writes (its state directory, SQLite files
//! included, and bundles) or prints (every command's human and JSON output) contains a planted
//! personal value or secret, even when a plugin tries every way out with them.

use std::io::Read;
use std::path::{Path, PathBuf};

use runcap_e2e::{Run, Sandbox, plugin_lines, plugin_wasm, step};

/// Every personal value, credential and secret planted in `examples/scrub-logs/logs`.
const PLANTED: &[&str] = &[
    "maria.gonzalez@example.com",
    "d.okafor+billing@example.org",
    "support-escalations@example.net",
    "ap@example.org",
    "536-22-1234",
    "219-09-9999",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "+1 415 555 2671",
    "(212) 555-0187",
    "+44 20 7946 0958",
    "sk-live-51HqLyjWDarjtT1zdp7dcXYZ8kLmN0pQ",
    "ya29.a0AfB_byC3kLmN0pQrStUvWxYz123",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_4Fq8ZrT2mWx9LkP0sVb7NcYd3HjE1uGa6RoI",
    "crm_live_8sK2pQ9vX4mZ7tR1",
    "CUST-004211",
    // The value of [secrets.db-password].
    "pg-Xk9vQ2mP7rLs-prod",
];

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scrub-logs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "redacted" || name == ".runcap" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every file below `dir`, with its bytes (bundles are unpacked).
fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for path in runcap_e2e::files_below(dir) {
        let bytes = std::fs::read(&path).unwrap();
        out.push((path, bytes));
    }
}

fn unpack_bundle(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes));
    }
    assert!(
        out.len() >= 4,
        "a bundle has a README, runs, incidents and audit rows"
    );
    out
}

fn find(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Fails naming each planted value found in any of `texts`.
fn assert_clean(what: &str, planted: &[&str], texts: &[(String, Vec<u8>)]) {
    let mut leaks = Vec::new();
    for (name, bytes) in texts {
        for value in planted {
            if find(bytes, value) {
                leaks.push(format!("{value} in {name}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{what} leaked:\n{}", leaks.join("\n"));
}

fn output(label: &str, run: &Run) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{label} stdout"), run.0.stdout.clone()),
        (format!("{label} stderr"), run.0.stderr.clone()),
    ]
}

#[test]
fn scrub_logs_example_leaves_no_planted_value_anywhere() {
    let sb = Sandbox::new();
    let dir = sb.path().join("scrub-logs");
    copy_dir(&example_dir(), &dir);
    // The example names the plugin relative to the repository; point at the same file.
    let manifest = dir.join("runcap.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "../../target/wasm32-wasip2/release/redact.wasm",
        &plugin_wasm("redact").display().to_string(),
    );
    std::fs::write(&manifest, text).unwrap();
    let env = manifest.to_str().unwrap();

    // Every planted value really is in the input, so finding none later means something.
    let mut inputs = Vec::new();
    files_under(&dir.join("logs"), &mut inputs);
    let all_input: Vec<u8> = inputs.iter().flat_map(|(_, b)| b.clone()).collect();
    for value in PLANTED {
        assert!(
            find(&all_input, value),
            "{value} is not planted in the logs"
        );
    }

    let mut printed = Vec::new();
    let human = sb.run(&["run", "scrub-logs", "--env", env]).expect_code(0);
    let line = human.stdout();
    assert!(
        line.contains("redacted 4 files") && line.contains(" email") && line.contains(" secret"),
        "{line}"
    );
    printed.extend(output("run", &human));

    let json_run = sb
        .run(&["run", "scrub-logs", "--env", env, "--json"])
        .expect_code(0);
    let report = json_run.json();
    printed.extend(output("run --json", &json_run));
    let scrub = &report["steps"][0];
    assert_eq!(scrub["status"], "ok", "{report:#}");
    let counts = &scrub["details"]["counts"];
    for (rule, n) in [
        ("email", 7),
        ("ssn", 2),
        ("credit_card", 3),
        ("phone", 4),
        ("api_key", 7),
        ("customer_id", 6),
        ("secret", 2),
    ] {
        assert_eq!(counts[rule], n, "{rule}: {counts:#}");
    }
    assert_eq!(scrub["details"]["files"].as_array().unwrap().len(), 4);
    let run_id = report["run_id"].as_str().unwrap().to_string();

    let dry = sb
        .run(&["run", "scrub-logs", "--env", env, "--dry-run"])
        .expect_code(0);
    assert!(
        dry.stdout().contains("dry run: would redact 4 files"),
        "{}",
        dry.stdout()
    );
    printed.extend(output("run --dry-run", &dry));

    let bundle = sb.path().join("bundle.tar.gz");
    for args in [
        vec!["history", "--env", env],
        vec!["history", "--env", env, "--json"],
        vec!["show", &run_id, "--env", env],
        vec!["show", &run_id, "--env", env, "--json"],
        vec!["incidents", "--all", "--env", env, "--json"],
        vec!["audit", "verify", "--env", env],
        vec!["caps", "--env", env],
        vec![
            "bundle",
            "--since",
            "1h",
            "--env",
            env,
            "--out",
            bundle.to_str().unwrap(),
        ],
    ] {
        let r = sb.run(&args).expect_code(0);
        printed.extend(output(&args.join(" "), &r));
    }
    assert_clean("runcap's output", PLANTED, &printed);

    let mut written = Vec::new();
    files_under(&dir.join(".runcap"), &mut written);
    assert!(
        written.iter().any(|(p, _)| p.ends_with("runcap.db")),
        "the state directory holds the store"
    );
    files_under(&dir.join("redacted"), &mut written);
    let mut named: Vec<(String, Vec<u8>)> = written
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    named.extend(
        unpack_bundle(&bundle)
            .into_iter()
            .map(|(p, b)| (format!("bundle {}", p.display()), b)),
    );
    assert_clean(
        "the state directory, the copies or the bundle",
        PLANTED,
        &named,
    );

    // The copies are the logs, redacted: same files, same line count, valid JSON Lines.
    for (path, bytes) in &inputs {
        let rel = path.strip_prefix(dir.join("logs")).unwrap();
        let copy = std::fs::read_to_string(dir.join("redacted").join(rel)).unwrap();
        let orig = String::from_utf8_lossy(bytes);
        assert_eq!(
            copy.lines().count(),
            orig.lines().count(),
            "{}",
            rel.display()
        );
        if rel
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "ndjson")
        {
            for l in copy.lines() {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("{}: {l}: {e}", rel.display()));
            }
        }
    }
}

/// Values the hostile plugin leaks on purpose (`leak-pii`), and a secret it reads and leaks.
const LEAKED: &[&str] = &[
    "jane.roe@example.com",
    "219-09-9999",
    "4111 1111 1111 1111",
    "+1 415 555 2671",
    "sk-live4f3kR9x2Lq8mW7vT1zY6pN0b",
    "tok_9f8e7d6c5b4a",
    "file-secret-value-42",
    "env-secret-value-77",
];

#[test]
fn a_plugin_that_leaks_through_every_channel_leaks_nothing() {
    let sb = Sandbox::new();
    sb.write("key.txt", "file-secret-value-42\n");
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.file-key]
file = "key.txt"

[secrets.env-key]
env = "RUNCAP_TEST_LEAK_SECRET"

[plugins.hostile]
{hostile}
limits = {{ time = "5s", output = "4KiB" }}
grants.http = {{ allow = [] }}

[plugins.sneaky]
{sneaky}
limits = {{ time = "5s", output = "4KiB" }}
grants.secrets = ["file-key"]
grants.faults = {{}}

[runbooks.leak]
steps = [
  {{ id = "pii", uses = "hostile", on_failure = "continue", with = {{ mode = "leak-pii" }} }},
  {{ id = "secret", uses = "sneaky", on_failure = "continue", with = {{ mode = "leak-secret", target = "file-key" }} }},
  {{ id = "panic", uses = "hostile", on_failure = "continue", with = {{ mode = "panic" }} }},
  # A secret the plugin is not granted still never shows: here it rides in a URL.
  {{ id = "fetch", uses = "hostile", on_failure = "continue", with = {{ mode = "fetch", url = "http://127.0.0.1:9/?k=env-secret-value-77" }} }},
]

[runbooks.leak.incident]
severity = "low"
"#,
            hostile = plugin_lines("hostile"),
            sneaky = plugin_lines("sneaky"),
        ),
    );
    let run = |args: &[&str]| {
        let out = sb
            .runcap()
            .args(args)
            .env("RUNCAP_TEST_LEAK_SECRET", "env-secret-value-77")
            .output()
            .unwrap();
        Run(out)
    };
    let mut printed = Vec::new();
    let human = run(&["run", "leak"]);
    printed.extend(output("run", &human));
    let json = run(&["run", "leak", "--json"]);
    printed.extend(output("run --json", &json));
    // runcap's own diagnostics, at every level and in both formats, carry nothing either.
    for format in ["text", "json"] {
        let traced = run(&[
            "run",
            "leak",
            "--log-level",
            "trace",
            "--log-format",
            format,
        ]);
        assert!(traced.stderr().len() > 1000, "trace output is produced");
        printed.extend(output("run --log-level trace", &traced));
    }
    let report = json.json();

    // The leaks happened, and what reached the record is redacted, not dropped.
    let pii = step(&report, "pii");
    assert_eq!(pii["status"], "warn", "{pii:#}");
    assert!(
        pii["summary"]
            .as_str()
            .unwrap()
            .contains("[EMAIL_REDACTED]"),
        "{pii:#}"
    );
    assert!(
        pii["stdout"]["text"]
            .as_str()
            .unwrap()
            .contains("[SSN_REDACTED]")
    );
    assert!(
        pii["details"]
            .as_object()
            .unwrap()
            .contains_key("[EMAIL_REDACTED]")
    );
    assert!(
        pii["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("[CC_REDACTED]")
    );
    let call = pii["calls"][0].to_string();
    assert!(
        call.contains("[EMAIL_REDACTED]") && call.contains("[API_KEY_REDACTED]"),
        "{call}"
    );
    let secret = step(&report, "secret");
    assert_eq!(secret["status"], "ok", "{secret:#}");
    assert!(
        secret["summary"]
            .as_str()
            .unwrap()
            .contains("[SECRET_REDACTED]")
    );

    let run_id = report["run_id"].as_str().unwrap().to_string();
    let bundle = sb.path().join("b.tar.gz");
    for args in [
        vec!["history"],
        vec!["history", "--json"],
        vec!["show", &run_id],
        vec!["show", &run_id, "--json"],
        vec!["incidents", "--all", "--json"],
        vec!["bundle", "--since", "1h", "--out", bundle.to_str().unwrap()],
    ] {
        let r = run(&args);
        assert_eq!(r.code(), 0, "{args:?}: {}", r.stderr());
        printed.extend(output(&args.join(" "), &r));
    }
    assert_clean("runcap's output", LEAKED, &printed);

    let mut written = Vec::new();
    files_under(&sb.path().join(".runcap"), &mut written);
    let mut named: Vec<(String, Vec<u8>)> = written
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    named.extend(
        unpack_bundle(&bundle)
            .into_iter()
            .map(|(p, b)| (format!("bundle {}", p.display()), b)),
    );
    assert_clean("the state directory or the bundle", LEAKED, &named);
}

#[test]
fn bad_redaction_rules_are_located() {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        r#"
environment = "test"

[redaction]
rules = ["email", "emial"]
"#,
    );
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        err.contains("redaction.rules[1]") && err.contains("unknown rule `emial`"),
        "{err}"
    );
    sb.write(
        "runcap.toml",
        r#"
environment = "test"

[[redaction.custom]]
name = "emp"
pattern = "EMP-("
"#,
    );
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        err.contains("redaction.custom[0].pattern") && err.contains("custom rule `emp`"),
        "{err}"
    );
}

/// The plugin reads and writes files in the host's 1 MiB pieces (`runcap:plugin/fs`): a
/// value cut by a piece's edge, ending on it or starting on it is redacted like any other.
#[test]
fn values_across_the_edges_of_the_hosts_pieces_are_redacted() {
    const PIECE: usize = 1 << 20;
    const SECRET: &str = "Tr0ub4dor-horse-battery-staple";
    let sb = Sandbox::new();
    sb.write("secrets/db-password.txt", &format!("{SECRET}\n"));
    let filler = "GET /health 200 in 1.2 ms request=7f3a9c\n";
    let mut log = String::new();
    let mut planted = Vec::new();
    // One value per edge, at the first four edges: an email cut by it, an email starting on
    // it, the secret cut by it, the secret ending on it.
    for (edge, (before_edge, value)) in [
        (7, "jane.roe@example.com".to_string()),
        (0, "j.doe+ops@example.org".to_string()),
        (SECRET.len() / 2, SECRET.to_string()),
        (SECRET.len(), SECRET.to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let boundary = (edge + 1) * PIECE;
        let prefix = "user ";
        let start = boundary - before_edge;
        while log.len() + filler.len() + 64 < start {
            log.push_str(filler);
        }
        // One line of padding brings the value's first byte to `start`.
        let pad = start - log.len() - prefix.len() - 1;
        log.push_str(&"x".repeat(pad));
        log.push('\n');
        log.push_str(prefix);
        assert_eq!(log.len(), start);
        log.push_str(&value);
        log.push_str(" logged in\n");
        planted.push(value);
    }
    log.push_str(filler);
    sb.write("logs/app.log", &log);
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.db-password]
file = "secrets/db-password.txt"

[plugins.redact]
{redact}
limits = {{ memory = "32MiB", time = "1m" }}
grants.secrets = ["db-password"]

[plugins.redact.grants.fs]
input = {{ path = "logs", mode = "ro" }}
output = {{ path = "out", mode = "rw" }}

[runbooks.scrub]
steps = [{{ id = "scrub", uses = "redact", with = {{ rules = ["email"], secrets = ["db-password"] }} }}]
"#,
            redact = plugin_lines("redact"),
        ),
    );
    let r = sb.run(&["run", "scrub", "--json"]).expect_code(0).json();
    let counts = &step(&r, "scrub")["details"]["counts"];
    assert_eq!(counts["email"], 2, "{r:#}");
    assert_eq!(counts["secret"], 2, "{r:#}");
    let out = std::fs::read(sb.path().join("out/app.log")).unwrap();
    for value in &planted {
        assert!(!find(&out, value), "{value} survived");
    }
    // Everything else is copied as it was: the same lines, the fillers untouched.
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), log.lines().count());
    assert_eq!(out.matches(filler).count(), log.matches(filler).count());
}
