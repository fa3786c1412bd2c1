//! `runcap new`: a scaffolded plugin passes its own tests, builds, is pinned by
//! `runcap pin`, and its manifest checks and runs green, as written.

use std::process::Command;

use runcap_e2e::{Sandbox, Service, target_dir};

/// Runs `cargo ARGS` in `dir`; panics with its output unless it succeeds.
fn cargo(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `runcap ARGS` in a project directory of the sandbox.
fn in_dir(sb: &Sandbox, project: &std::path::Path, args: &[&str]) -> runcap_e2e::Run {
    let out = sb
        .runcap()
        .current_dir(project)
        .args(args)
        .output()
        .expect("runcap runs");
    runcap_e2e::Run(out)
}

/// The last steps every scaffold prints: pin, check, and a green run of `try`.
fn pin_check_and_run(sb: &Sandbox, project: &std::path::Path) {
    in_dir(sb, project, &["pin"]).expect_code(0);
    in_dir(sb, project, &["check"]).expect_code(0);
    let run = in_dir(sb, project, &["run", "try", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(run["steps"][0]["status"], "ok", "{run:#}");
}

#[test]
fn a_rust_scaffold_tests_builds_pins_checks_and_runs_green() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let url = svc.url("/health");
    let made = sb
        .run(&["new", "edge-check", "--lang", "rust", "--url", &url])
        .expect_code(0)
        .stdout();
    assert!(
        made.contains("runcap pin && runcap check && runcap run try"),
        "{made}"
    );
    let project = sb.path().join("edge-check");
    // Builds share one target directory across runs of this test (the scaffold's own
    // `target/` is where its manifest looks).
    let shared = target_dir().join("scaffold-rust");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();

    cargo(&project, &["test", "--quiet"]);
    cargo(
        &project,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );

    let pinned = in_dir(&sb, &project, &["pin"]).expect_code(0).stdout();
    assert!(
        pinned.contains("plugins.edge-check: sha256 added"),
        "{pinned}"
    );
    in_dir(&sb, &project, &["check"]).expect_code(0);
    let run = in_dir(&sb, &project, &["run", "try", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(run["steps"][0]["status"], "ok", "{run:#}");
    assert!(
        run["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("answered 200"),
        "{run:#}"
    );

    // A second scaffold in the same place is refused, and says why.
    let again = sb.run(&["new", "edge-check"]).expect_code(2).stderr();
    assert!(again.contains("already exists"), "{again}");
}

/// Runs `npm ARGS` in `dir`; panics with its output unless it succeeds.
fn npm(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_js_scaffold_tests_builds_pins_checks_and_runs_green() {
    if Command::new("npm").arg("--version").output().is_err() {
        println!("SKIPPED: npm not found (./dev setup needs Node.js for JavaScript plugins)");
        return;
    }
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let url = svc.url("/health");
    let made = sb
        .run(&["new", "edge-js", "--lang", "js", "--url", &url])
        .expect_code(0)
        .stdout();
    assert!(made.contains("npm run build"), "{made}");
    let project = sb.path().join("edge-js");
    npm(
        &project,
        &["install", "--no-audit", "--no-fund", "--offline"],
    );
    npm(&project, &["test"]);
    npm(&project, &["run", "build"]);

    pin_check_and_run(&sb, &project);
}

#[test]
fn a_python_scaffold_tests_builds_pins_checks_and_runs_green() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 not found");
        return;
    }
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    let url = svc.url("/health");
    let made = sb
        .run(&["new", "edge-py", "--lang", "python", "--url", &url])
        .expect_code(0)
        .stdout();
    let project = sb.path().join("edge-py");
    // The printed steps, run as printed (each is one shell command).
    let steps: Vec<&str> = made
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cd "))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with("runcap "))
        .collect();
    assert_eq!(steps.len(), 2, "{made}");
    for step in steps {
        let out = Command::new("sh")
            .arg("-c")
            .arg(step)
            .current_dir(&project)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "`{step}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pin_check_and_run(&sb, &project);
}
