//! A plugin written in JavaScript (`plugins/js-status-check`, built with componentize-js by
//! `sdk-js/dev.sh build`) loads and runs in runcap like a Rust one: its imports pass the
//! grant check, its outcomes, log lines and console output are recorded, and a params
//! error or an uncaught exception comes back as an action error with its message, not a
//! trap. The component is built here when it is missing or older than its sources (which
//! needs Node.js; without it the test says SKIPPED).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use runcap_e2e::{Sandbox, Service, newest_below, repo_root, sha256_file, step, target_dir};

/// The built JS component, (re)built with `sdk-js/dev.sh build` when missing or stale;
/// None when Node.js is not installed.
fn js_component() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let out = target_dir().join("wasm32-wasip2/release/js_status_check.wasm");
            let sources = [
                root.join("plugins/js-status-check"),
                root.join("sdk-js/src"),
                root.join("sdk-js/build"),
                root.join("wit"),
            ];
            let newest_source = sources
                .iter()
                .filter_map(|d| newest_below(d, &["node_modules", "test"]))
                .max();
            let built_at = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
            let lock = std::fs::metadata(root.join("sdk-js/package-lock.json"))
                .and_then(|m| m.modified())
                .ok();
            if built_at.is_some() && built_at >= newest_source.max(lock) {
                return Some(out);
            }
            if Command::new("node").arg("--version").output().is_err() {
                return None;
            }
            let build = Command::new(root.join("sdk-js/dev.sh"))
                .arg("build")
                .arg(root.join("plugins/js-status-check"))
                .arg(&out)
                .output()
                .expect("sdk-js/dev.sh runs");
            assert!(
                build.status.success(),
                "sdk-js/dev.sh build failed\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&build.stdout),
                String::from_utf8_lossy(&build.stderr)
            );
            Some(out)
        })
        .clone()
}

fn plugin_lines(wasm: &Path) -> String {
    format!(
        "path = {:?}\nsha256 = \"{}\"\n",
        wasm.display().to_string(),
        sha256_file(wasm)
    )
}

#[test]
fn javascript_check_runs_and_reports_errors_as_errors() {
    let Some(wasm) = js_component() else {
        eprintln!(
            "SKIPPED: node is not installed (the JS plugin is built with Node.js 20 or later)"
        );
        return;
    };
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let base = svc.url("");
    let plugin = format!(
        "[plugins.js-check]\n{}limits = {{ time = \"10s\" }}\ngrants.http = {{ allow = [\"http://127.0.0.1:{}\"] }}\n",
        plugin_lines(&wasm),
        svc.addr.port()
    );
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

{plugin}
[runbooks.health]
description = "A JavaScript check against the demo service"

[[runbooks.health.steps]]
id = "healthy"
uses = "js-check"
with = {{ url = "{base}/health", json = {{ pointer = "/checks/db", equals = true }} }}

[[runbooks.health.steps]]
id = "wrong_status"
uses = "js-check"
on_failure = "continue"
with = {{ url = "{base}/unhealthy" }}

[[runbooks.health.steps]]
id = "not_json"
uses = "js-check"
on_failure = "continue"
with = {{ url = "{base}/big?bytes=16", json = {{ pointer = "/status", equals = "up" }} }}

# Depends on an earlier step, so only the run can check it: it renders to a string.
[[runbooks.health.steps]]
id = "bad_params"
uses = "js-check"
on_failure = "continue"
with = {{ url = "{base}/health", expect_status = "{{{{ steps.healthy.details.final_url }}}}" }}

[[runbooks.health.steps]]
id = "after"
uses = "js-check"
with = {{ url = "{base}/json", json = {{ pointer = "/queue/depth", equals = 3 }} }}
"#
        ),
    );

    let check = sb.run(&["check"]).expect_code(0).stdout();
    assert!(check.contains("imports http"), "{check}");

    // The imports pass the grant check, and none is a network interface of WASI's.
    let described = sb
        .run(&["plugin", "describe", "js-check", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(described["name"], "js-status-check");
    let imports: Vec<&str> = described["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|i| i.as_str())
        .collect();
    assert!(imports.contains(&"runcap:plugin/http"), "{imports:?}");
    assert!(imports.contains(&"wasi:cli/stdout"), "{imports:?}");
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("wasi:http") || i.starts_with("wasi:sockets")),
        "{imports:?}"
    );

    // Failures are continued past, so the run as a whole warns.
    let r = sb.run(&["run", "health", "--json"]).expect_code(0).json();
    assert_eq!(r["status"], "warn", "{r:#}");

    let healthy = step(&r, "healthy");
    assert_eq!(healthy["status"], "ok", "{healthy:#}");
    assert_eq!(healthy["details"]["status"], 200);
    assert_eq!(healthy["details"]["json"]["passed"], true);
    let summary = healthy["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("GET {base}/health → 200 in ")),
        "{summary}"
    );
    // console.log is the step's stdout; log.info is a log line.
    let stdout = healthy["stdout"]["text"].as_str().unwrap();
    assert!(
        stdout.starts_with(&format!("GET {base}/health → 200 in ")) && stdout.ends_with(" ms\n"),
        "{stdout:?}"
    );
    let logs = healthy["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "info" && l["message"] == "answer"),
        "{logs:#?}"
    );
    assert_eq!(healthy["calls"][0]["decision"], "allowed");

    let wrong = step(&r, "wrong_status");
    assert_eq!(wrong["status"], "fail", "{wrong:#}");
    assert!(wrong["failure"].is_null(), "a judged outcome: {wrong:#}");
    assert!(
        wrong["summary"]
            .as_str()
            .unwrap()
            .ends_with("status 503, expected 200"),
        "{wrong:#}"
    );

    // resp.json() threw on a body that is not JSON: a plugin error with the message and
    // the stack, not a trap.
    let not_json = step(&r, "not_json");
    assert_eq!(not_json["failure"]["kind"], "plugin-error", "{not_json:#}");
    let msg = not_json["failure"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "SyntaxError: the response body of {base}/big?bytes=16 is not JSON: "
        )),
        "{msg}"
    );
    assert!(msg.contains("run@plugin/index.js:"), "{msg}");

    let bad = step(&r, "bad_params");
    assert_eq!(bad["failure"]["kind"], "invalid-params", "{bad:#}");
    assert_eq!(
        bad["failure"]["message"],
        format!("expect_status: expected integer, found string \"{base}/health\"")
    );
    assert!(bad["calls"].as_array().is_none_or(|c| c.is_empty()));

    let after = step(&r, "after");
    assert_eq!(after["status"], "ok", "{after:#}");

    // The human report.
    let human = sb.run(&["run", "health"]).expect_code(0).stdout();
    for (mark, id) in [
        ("✔ ok", "healthy"),
        ("✘ fail", "wrong_status"),
        ("✘ plugin-error", "not_json"),
        ("✘ invalid-params", "bad_params"),
    ] {
        assert!(
            human.lines().any(|l| l.contains(mark) && l.contains(id)),
            "no `{mark}` line for {id} in:\n{human}"
        );
    }

    // Params that can be checked before the run are: `runcap check` asks the plugin.
    sb.write(
        "bad.toml",
        &format!(
            r#"
environment = "test"

{plugin}
[runbooks.typo]
steps = [{{ id = "probe", uses = "js-check", with = {{ url = "{base}/health", expect_status = "200" }} }}]
"#
        ),
    );
    let rejected = sb.run(&["check", "--env", "bad.toml"]).expect_code(2);
    let text = format!("{}{}", rejected.stdout(), rejected.stderr());
    assert!(
        text.contains(
            "params rejected by `js-check`: expect_status: expected integer, found string \"200\""
        ),
        "{text}"
    );
}

/// Copies the files of `from` (not `node_modules`) into `to`.
fn copy_source(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_name() == "node_modules" {
            continue;
        }
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_source(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_rebuild_from_a_copy_of_the_source_gives_the_same_bytes() {
    let Some(wasm) = js_component() else {
        println!("SKIPPED: Node.js not found");
        return;
    };
    let sb = Sandbox::new();
    let src = sb.path().join("elsewhere/js-status-check");
    copy_source(&repo_root().join("plugins/js-status-check"), &src);
    let out = sb.path().join("rebuilt.wasm");
    let build = Command::new(repo_root().join("sdk-js/dev.sh"))
        .arg("build")
        .arg(&src)
        .arg(&out)
        .output()
        .expect("sdk-js/dev.sh runs");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert_eq!(
        sha256_file(&out),
        sha256_file(&wasm),
        "the same source built in another place must give the same component"
    );
}
