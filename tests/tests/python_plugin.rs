//! A plugin written in Python (`plugins/py-status-check`, built with componentize-py by
//! `sdk-python/dev.sh build`) loads and runs in runcap like a Rust one: CPython's imports
//! (`wasi:sockets` among them) pass the load check, its outcomes, log lines and `print()`
//! output are recorded, and a params error or an uncaught exception comes back as an action
//! error (invalid-params, or plugin-error with the traceback), never a trap. Its build is
//! reproducible: the same source built twice, elsewhere, gives the bytes runcap pins.
//!
//! The component is built here into `target/wasm32-wasip2/release/py_status_check.wasm`
//! when it is missing or older than its sources, with the componentize-py that
//! `sdk-python/dev.sh setup` installs; without it the tests say SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use runcap_e2e::{Run, Sandbox, Service, newest_below, repo_root, sha256_file, step, target_dir};

const PLUGIN: &str = "py-status";

/// One test at a time: the rebuilds use every core, and compiling the 19 MB component in
/// runcap beside them can pass runcap's compile time limit on a loaded machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `sdk-python/dev.sh setup` has installed componentize-py.
fn have_componentize_py() -> bool {
    target_dir().join("py-tools/bin/componentize-py").is_file()
}

/// Builds the Python plugin in `src` into `out` with `sdk-python/dev.sh build`.
fn build(src: &Path, out: &Path) {
    let build = Command::new(repo_root().join("sdk-python/dev.sh"))
        .arg("build")
        .arg(src)
        .arg(out)
        .output()
        .expect("sdk-python/dev.sh runs");
    assert!(
        build.status.success(),
        "sdk-python/dev.sh build failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
}

/// The built component, (re)built when missing or older than its sources; None when
/// componentize-py is not installed.
fn py_component() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !have_componentize_py() {
                return None;
            }
            let root = repo_root();
            let wasm = target_dir().join("wasm32-wasip2/release/py_status_check.wasm");
            let built = std::fs::metadata(&wasm).and_then(|m| m.modified()).ok();
            let newest_source = [
                newest_below(&root.join("plugins/py-status-check"), &["__pycache__"]),
                newest_below(&root.join("sdk-python"), &["tests", "__pycache__"]),
                newest_below(&root.join("wit"), &[]),
            ]
            .into_iter()
            .flatten()
            .max();
            if built.is_none() || newest_source > built {
                build(&root.join("plugins/py-status-check"), &wasm);
            }
            Some(wasm)
        })
        .clone()
}

/// Runs `runcap ARGS` in `sb`. CPython makes a 19 MB component: on a loaded machine its
/// first compile can take longer than runcap's default limit of 120s.
fn runcap(sb: &Sandbox, args: &[&str]) -> Run {
    let out = sb
        .runcap()
        .args(args)
        .env("RUNCAP_COMPILE_TIMEOUT", "900s")
        .output()
        .expect("runcap runs");
    Run(out)
}

fn output(run: &Run) -> String {
    format!("{}{}", run.stdout(), run.stderr())
}

#[test]
fn python_check_runs_and_reports_errors_as_errors() {
    let _serial = one_at_a_time();
    let Some(wasm) = py_component() else {
        println!("SKIPPED: componentize-py not installed (sdk-python/dev.sh setup)");
        return;
    };
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let port = svc.addr.port();
    let base = svc.url("");
    // A port on the same address that the grant does not name.
    let elsewhere = format!("http://127.0.0.1:{}/health", port.wrapping_add(1).max(1));
    let plugin = format!(
        "[plugins.{PLUGIN}]\npath = {:?}\nsha256 = \"{}\"\nlimits = {{ time = \"20s\" }}\ngrants.http = {{ allow = [\"http://127.0.0.1:{port}\"] }}\n",
        wasm.display().to_string(),
        sha256_file(&wasm),
    );
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

{plugin}
[runbooks.health]
description = "A Python check against the demo service"

[[runbooks.health.steps]]
id = "healthy"
uses = "{PLUGIN}"
with = {{ url = "{base}/health", json = {{ pointer = "/checks/db", equals = true }} }}

[[runbooks.health.steps]]
id = "wrong_status"
uses = "{PLUGIN}"
on_failure = "continue"
with = {{ url = "{base}/unhealthy" }}

[[runbooks.health.steps]]
id = "not_json"
uses = "{PLUGIN}"
on_failure = "continue"
with = {{ url = "{base}/big?bytes=16", json = {{ pointer = "/status", equals = "up" }} }}

[[runbooks.health.steps]]
id = "not_granted"
uses = "{PLUGIN}"
on_failure = "continue"
with = {{ url = "{elsewhere}" }}
"#
        ),
    );

    // Loads (wasi:sockets imported, denied at every use) and validates every step's params.
    let check = runcap(&sb, &["check"]).expect_code(0);
    assert!(
        check.stdout().contains("runbook health: 4 steps"),
        "{}",
        output(&check)
    );

    let described = runcap(&sb, &["plugin", "describe", PLUGIN, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(described["name"], "py-status-check", "{described:#}");
    assert_eq!(described["params_schema"]["required"][0], "url");
    let imports: Vec<&str> = described["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|i| i.as_str())
        .collect();
    assert!(imports.contains(&"runcap:plugin/http"), "{imports:?}");
    assert!(imports.contains(&"wasi:sockets/tcp"), "{imports:?}");

    let r = runcap(&sb, &["run", "health", "--json"])
        .expect_code(0)
        .json();
    for s in r["steps"].as_array().expect("steps") {
        assert_ne!(s["failure"]["kind"], "trap", "{s:#}");
    }

    let healthy = step(&r, "healthy");
    assert_eq!(healthy["status"], "ok", "{healthy:#}");
    assert_eq!(healthy["details"]["status"], 200);
    assert_eq!(healthy["details"]["json"]["passed"], true);
    let printed = healthy["stdout"]["text"].as_str().unwrap_or_default();
    assert!(
        printed.starts_with(&format!("GET {base}/health -> 200 in ")),
        "print() lands in the step's stdout: {healthy:#}"
    );
    assert_eq!(healthy["logs"][0]["message"], "answer", "{healthy:#}");
    assert_eq!(healthy["logs"][0]["level"], "info");
    assert!(
        healthy["metrics"].to_string().contains("response_time_ms"),
        "{healthy:#}"
    );

    let wrong = step(&r, "wrong_status");
    assert_eq!(wrong["status"], "fail", "{wrong:#}");
    assert!(
        wrong["failure"].is_null(),
        "a failed check, not an error: {wrong:#}"
    );
    assert_eq!(wrong["details"]["status"], 503);
    assert!(
        wrong["summary"]
            .as_str()
            .unwrap_or_default()
            .ends_with("status 503, expected 200"),
        "{wrong:#}"
    );

    // An uncaught exception in `run` is the step's error, with the Python traceback.
    let not_json = step(&r, "not_json");
    assert_eq!(not_json["failure"]["kind"], "plugin-error", "{not_json:#}");
    let traceback = not_json["failure"]["message"].as_str().unwrap_or_default();
    for words in [
        "Traceback (most recent call last):",
        "app.py",
        "resp.json()",
        "ValueError: the body of",
        "is not JSON",
    ] {
        assert!(traceback.contains(words), "{words:?} in:\n{traceback}");
    }
    assert!(!traceback.contains("unreachable"), "{traceback}");

    // An HTTP denial left uncaught is the step's `denied` error, naming the grant.
    let not_granted = step(&r, "not_granted");
    assert_eq!(not_granted["failure"]["kind"], "denied", "{not_granted:#}");
    assert!(
        not_granted["failure"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("grants.http.allow"),
        "{not_granted:#}"
    );

    // Params the plugin rejects: `run` answers invalid-params, naming each problem...
    let call = runcap(
        &sb,
        &[
            "call",
            PLUGIN,
            "--with",
            r#"{"url": "ftp://example.com", "expect_status": "200", "expect": 200}"#,
            "--json",
        ],
    );
    assert_eq!(call.code(), 1, "{}", output(&call));
    let called = step(&call.json(), PLUGIN).clone();
    assert_eq!(called["failure"]["kind"], "invalid-params", "{called:#}");
    let message = called["failure"]["message"].as_str().unwrap_or_default();
    for words in [
        "expect_status: expected an integer, got string \"200\"",
        "url: string \"ftp://example.com\" does not match ^https?://",
        "expect: unknown key",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    assert!(called["stdout"]["text"] == "", "nothing ran: {called:#}");

    // ...and `runcap check` finds them before anything runs, through `validate`.
    sb.write(
        "bad.toml",
        &format!(
            r#"
environment = "test"

{plugin}
[runbooks.typo]
steps = [{{ id = "typo", uses = "{PLUGIN}", with = {{ url = "{base}/health", expect_status = "two hundred" }} }}]
"#
        ),
    );
    let bad = runcap(&sb, &["check", "--env", "bad.toml"]);
    assert_ne!(bad.code(), 0, "{}", output(&bad));
    assert!(
        output(&bad).contains(&format!(
            "params rejected by `{PLUGIN}`: expect_status: expected an integer, got string \"two hundred\""
        )),
        "{}",
        output(&bad)
    );
}

/// Copies the files of `from` (not bytecode caches) into `to`.
fn copy_source(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_name() == "__pycache__" {
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
fn a_rebuild_from_a_copy_of_the_source_gives_the_pinned_bytes() {
    let _serial = one_at_a_time();
    let Some(wasm) = py_component() else {
        println!("SKIPPED: componentize-py not installed (sdk-python/dev.sh setup)");
        return;
    };
    let pinned = sha256_file(&wasm);
    let sb = Sandbox::new();
    let mut digests = Vec::new();
    for (i, dir) in [
        "elsewhere/py-status-check",
        "and/somewhere/else/py-status-check",
    ]
    .iter()
    .enumerate()
    {
        let src = sb.path().join(dir);
        copy_source(&repo_root().join("plugins/py-status-check"), &src);
        let out = sb.path().join(format!("rebuilt-{i}.wasm"));
        build(&src, &out);
        digests.push(sha256_file(&out));
    }
    assert_eq!(
        digests[0], digests[1],
        "two builds of the same source must give the same component"
    );
    assert_eq!(
        digests[0],
        pinned,
        "the same source built in another place must give the pinned component ({})",
        wasm.display()
    );
}
