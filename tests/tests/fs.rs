//! Directory grants end to end: a plugin sees exactly the directories its manifest grants, in
//! the mode granted, and `..`, absolute paths and symlinks cannot take it outside them,
//! through WASI's file system or through `runcap:plugin/fs`.

use std::path::Path;

use runcap_e2e::{Sandbox, plugin_lines, step};

const OUTSIDE: &str = "OUTSIDE-THE-GRANT\n";

/// `grant/` (read-only as /input) and `out/` (read-write as /output), a file beside them that
/// the plugin must never reach, and symlinks inside the grants that point at it.
fn sandbox(runbook: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("grant/inside.txt", "inside the grant\n");
    sb.write("grant/sub/deeper.txt", "deeper\n");
    let outside = sb.write("outside.txt", OUTSIDE);
    std::fs::create_dir(sb.path().join("out")).unwrap();
    let link = |target: &Path, at: &str| {
        std::os::unix::fs::symlink(target, sb.path().join(at)).unwrap();
    };
    link(Path::new("../outside.txt"), "grant/escape-relative");
    link(&outside, "grant/escape-absolute");
    link(sb.path(), "grant/escape-dir");
    link(Path::new("../outside.txt"), "out/escape-write");
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.hostile]
{hostile}
limits = {{ time = "5s" }}
grants.http = {{ allow = [] }}

[plugins.hostile.grants.fs]
input = {{ path = "grant", mode = "ro" }}
output = {{ path = "out", mode = "rw" }}

[plugins.noop]
{noop}
grants.fs = {{ data = {{ path = "grant" }} }}
{runbook}
"#,
            hostile = plugin_lines("hostile"),
            noop = plugin_lines("noop"),
        ),
    );
    sb
}

/// How the hostile plugin reaches files: WASI's file system (its `fs-` modes) or
/// `runcap:plugin/fs` (its `files-` modes).
#[derive(Clone, Copy)]
enum Via {
    Wasi,
    Files,
}

/// A step of the hostile plugin doing `op` (`read` or `write`) on `path` through `via`.
fn step_via(via: Via, op: &str, id: &str, path: &str) -> String {
    let prefix = match via {
        Via::Wasi => "fs",
        Via::Files => "files",
    };
    format!(
        "  {{ id = \"{id}\", uses = \"hostile\", on_failure = \"continue\", with = {{ mode = \"{prefix}-{op}\", path = \"{path}\" }} }},\n"
    )
}

fn read_step(id: &str, path: &str) -> String {
    step_via(Via::Wasi, "read", id, path)
}

fn write_step(id: &str, path: &str) -> String {
    step_via(Via::Wasi, "write", id, path)
}

#[test]
fn grants_confine_reads_and_writes() {
    confine(Via::Wasi);
}

#[test]
fn grants_confine_reads_and_writes_through_files() {
    confine(Via::Files);
}

fn confine(via: Via) {
    let read_step = |id: &str, path: &str| step_via(via, "read", id, path);
    let write_step = |id: &str, path: &str| step_via(via, "write", id, path);
    let mut steps = String::from("\n[runbooks.fs]\nsteps = [\n");
    steps += &read_step("inside", "/input/inside.txt");
    steps += &read_step("deeper", "/input/sub/../sub/deeper.txt");
    steps += &read_step("dotdot", "/input/../outside.txt");
    steps += &read_step("dotdot_deep", "/input/sub/../../../../../../etc/passwd");
    steps += &read_step("absolute", "/etc/passwd");
    steps += &read_step("absolute_host", "HOST_OUTSIDE");
    steps += &read_step("symlink_relative", "/input/escape-relative");
    steps += &read_step("symlink_absolute", "/input/escape-absolute");
    steps += &read_step("symlink_dir", "/input/escape-dir/outside.txt");
    steps += &write_step("write_ro", "/input/new.txt");
    steps += &write_step("write_rw", "/output/new.txt");
    steps += &write_step("write_dotdot", "/output/../grant/planted.txt");
    steps += &write_step("write_symlink", "/output/escape-write");
    steps += "]\n";
    let sb = sandbox(&steps);
    // The absolute host path of the file outside the grant is known once the sandbox is.
    let host_outside = sb.path().join("outside.txt").display().to_string();
    let text = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace("HOST_OUTSIDE", &host_outside);
    sb.write("runcap.toml", &text);

    let out = sb.run(&["run", "fs", "--json"]);
    let r = out.json();
    let ok = |id: &str| {
        let s = step(&r, id);
        assert_eq!(s["status"], "ok", "{id} should succeed: {s:#}");
        s.clone()
    };
    let refused = |id: &str| {
        let s = step(&r, id);
        assert_eq!(s["status"], "fail", "{id} must be refused: {s:#}");
        assert_eq!(s["failure"]["kind"], "plugin-error", "{id}: {s:#}");
        assert!(
            !s.to_string().contains("OUTSIDE-THE-GRANT") && !s.to_string().contains("root:"),
            "{id} leaked content: {s:#}"
        );
    };
    assert_eq!(ok("inside")["details"]["content"], "inside the grant\n");
    assert_eq!(ok("deeper")["details"]["content"], "deeper\n");
    for id in [
        "dotdot",
        "dotdot_deep",
        "absolute",
        "absolute_host",
        "symlink_relative",
        "symlink_absolute",
        "symlink_dir",
        "write_ro",
        "write_dotdot",
        "write_symlink",
    ] {
        refused(id);
    }
    ok("write_rw");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("out/new.txt")).unwrap(),
        "written by the hostile plugin\n"
    );
    assert!(!sb.path().join("grant/new.txt").exists());
    assert!(!sb.path().join("grant/planted.txt").exists());
    assert_eq!(
        std::fs::read_to_string(sb.path().join("outside.txt")).unwrap(),
        OUTSIDE
    );
    // Each action records the directories it was given.
    let calls = step(&r, "inside")["calls"].to_string();
    assert!(
        calls.contains("\"preopen\"") && calls.contains("/input = ") && calls.contains("(ro)"),
        "{calls}"
    );
    if let Via::Files = via {
        // runcap's own file interface records what it refuses.
        let calls = step(&r, "write_ro")["calls"].to_string();
        assert!(
            calls.contains("\"denied\"") && calls.contains("/input is read-only"),
            "{calls}"
        );
    }
}

#[test]
fn dry_run_makes_every_directory_read_only() {
    let mut steps = String::from("\n[runbooks.fs]\nsteps = [\n");
    steps += &write_step("write_rw", "/output/dry.txt");
    steps += &read_step("read", "/input/inside.txt");
    steps += &step_via(Via::Files, "write", "files_write_rw", "/output/dry.txt");
    steps += &step_via(Via::Files, "read", "files_read", "/input/inside.txt");
    steps += "]\n";
    let sb = sandbox(&steps);
    let r = sb.run(&["run", "fs", "--json", "--dry-run"]).json();
    for id in ["write_rw", "files_write_rw"] {
        assert_eq!(step(&r, id)["status"], "fail", "{r:#}");
        let calls = step(&r, id)["calls"].to_string();
        assert!(calls.contains("dry-run"), "{calls}");
    }
    assert!(
        step(&r, "files_write_rw")
            .to_string()
            .contains("/output is read-only in a dry run"),
        "{r:#}"
    );
    assert_eq!(step(&r, "read")["status"], "ok", "{r:#}");
    assert_eq!(step(&r, "files_read")["status"], "ok", "{r:#}");
    assert!(!sb.path().join("out/dry.txt").exists());
}

#[test]
fn a_missing_read_write_directory_is_created_when_the_action_runs() {
    let sb = sandbox(
        "\n[runbooks.fs]\nsteps = [{ uses = \"hostile\", with = { mode = \"fs-write\", path = \"/output/x.txt\" } }]\n",
    );
    let text = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace("path = \"out\"", "path = \"new/out\"");
    sb.write("runcap.toml", &text);
    sb.run(&["check"]).expect_code(0);
    assert!(
        !sb.path().join("new").exists(),
        "check must not create directories"
    );
    sb.run(&["run", "fs"]).expect_code(0);
    assert!(sb.path().join("new/out/x.txt").is_file());
}

#[test]
fn caps_lists_directories_and_modes() {
    let sb = sandbox("");
    let out = sb.run(&["caps"]).expect_code(0);
    let text = out.stdout();
    let grant = sb.path().canonicalize().unwrap().join("grant");
    let outdir = sb.path().canonicalize().unwrap().join("out");
    assert!(
        text.contains(&format!("/input = {} (read-only)", grant.display()))
            && text.contains(&format!("/output = {} (read-write)", outdir.display())),
        "{text}"
    );
    let json = sb.run(&["caps", "--json"]).expect_code(0).json();
    let plugins = json["plugins"].as_array().unwrap();
    let hostile = plugins.iter().find(|p| p["name"] == "hostile").unwrap();
    let noop = plugins.iter().find(|p| p["name"] == "noop").unwrap();
    let imports = hostile["imports"].to_string();
    assert!(
        imports.contains("wasi:filesystem/preopens") && imports.contains("runcap:plugin/fs"),
        "{hostile:#}"
    );
    // Two interfaces, one capability: `check` names it once.
    let check = sb.run(&["check"]).expect_code(0);
    assert!(
        check.stdout().contains("imports fs, http\n"),
        "{}",
        check.stdout()
    );
    assert!(
        hostile["over_grants"].as_array().unwrap().is_empty(),
        "{hostile:#}"
    );
    assert!(
        hostile["ungranted_imports"].as_array().unwrap().is_empty(),
        "{hostile:#}"
    );
    // The no-op plugin never opens a file: its fs grant is reported as an over-grant unless
    // its component imports the preopens interface.
    let noop_imports = noop["imports"].to_string();
    let over = noop["over_grants"].to_string();
    assert_eq!(
        over.contains("fs"),
        !noop_imports.contains("wasi:filesystem/preopens"),
        "{noop:#}"
    );
}

#[test]
fn bad_fs_grants_are_located() {
    let sb = sandbox("");
    let text = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    let bad = text
        .replace(
            "input = { path = \"grant\", mode = \"ro\" }",
            "input = { path = \"grant\", mode = \"write\" }\nmissing = { path = \"nowhere\" }\nInput = { path = \"grant/sub\" }\nlogs = { path = \"grant\" }",
        )
        .replace(
            "output = { path = \"out\", mode = \"rw\" }",
            "output = { path = \"grant/../grant/sub\", mode = \"rw\" }",
        );
    sb.write("runcap.toml", &bad);
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    for needle in [
        "plugins.hostile.grants.fs.input.mode: `write` is not a mode",
        "plugins.hostile.grants.fs.missing.path: cannot use directory",
        "plugins.hostile.grants.fs.Input: `Input` is not a valid directory name",
        "plugins.hostile.grants.fs.output.path:",
        "overlaps `logs`",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}
