//! A plugin cannot hold the host past its time limit through the file system, through WASI
//! or through `runcap:plugin/fs`: opening a FIFO with no writer, reading a device
//! without end, or reading a directory as a file each fail the step on time, and Ctrl-C
//! still ends the run.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, plugin_lines, step};

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("grant/sub/file.txt", "a file\n");
    let fifo = sb.path().join("grant/fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.hostile]
{hostile}
limits = {{ time = "1s", memory = "64MiB" }}
grants.http = {{ allow = [] }}

[plugins.hostile.grants.fs]
input = {{ path = "grant", mode = "ro" }}
dev = {{ path = "/dev", mode = "ro" }}

[runbooks.r]
steps = [
  {{ id = "fifo", uses = "hostile", on_failure = "continue", with = {{ mode = "fs-read", path = "/input/fifo" }} }},
  {{ id = "device", uses = "hostile", on_failure = "continue", with = {{ mode = "fs-read", path = "/dev/zero" }} }},
  {{ id = "directory", uses = "hostile", on_failure = "continue", with = {{ mode = "fs-read", path = "/input/sub" }} }},
  {{ id = "files_fifo", uses = "hostile", on_failure = "continue", with = {{ mode = "files-read", path = "/input/fifo" }} }},
  {{ id = "files_device", uses = "hostile", on_failure = "continue", with = {{ mode = "files-read", path = "/dev/zero" }} }},
  {{ id = "files_directory", uses = "hostile", on_failure = "continue", with = {{ mode = "files-read", path = "/input/sub" }} }},
  {{ id = "after", uses = "hostile", with = {{ mode = "fs-read", path = "/input/sub/file.txt" }} }},
]

[runbooks.hang]
steps = [
  {{ id = "fifo", uses = "hostile", with = {{ mode = "fs-read", path = "/input/fifo" }} }},
]

[runbooks.hang_files]
steps = [
  {{ id = "fifo", uses = "hostile", with = {{ mode = "files-read", path = "/input/fifo" }} }},
]
"#,
            hostile = plugin_lines("hostile"),
        ),
    );
    sb
}

/// Waits for `child` to exit, failing the test (and killing it) after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("runcap was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn blocking_files_fail_their_step_on_time() {
    let sb = sandbox();
    let started = Instant::now();
    let mut child = sb
        .runcap()
        .args(["run", "r", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exit_within(&mut child, Duration::from_secs(30));
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    for id in ["fifo", "device", "files_fifo", "files_device"] {
        let s = step(&report, id);
        assert_eq!(s["status"], "fail", "{id}: {s:#}");
        let text = s.to_string();
        assert!(
            text.contains("timeout") || text.contains("time limit") || text.contains("memory"),
            "{id}: {s:#}"
        );
    }
    for id in ["directory", "files_directory"] {
        let dir = step(&report, id);
        assert_eq!(dir["status"], "fail", "{dir:#}");
        assert!(
            dir.to_string().contains("cannot read /input/sub"),
            "{dir:#}"
        );
    }
    assert_eq!(step(&report, "after")["status"], "ok", "{report:#}");
    // Five limits of 1 s at most, plus start-up: nowhere near a hang.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn ctrl_c_ends_a_run_blocked_on_a_fifo() {
    ctrl_c_ends_a_run_of("hang");
}

#[test]
fn ctrl_c_ends_a_run_blocked_on_a_fifo_opened_through_files() {
    ctrl_c_ends_a_run_of("hang_files");
}

fn ctrl_c_ends_a_run_of(runbook: &str) {
    let sb = sandbox();
    // A long limit, so only the signal can end the step.
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace("time = \"1s\"", "time = \"10m\"");
    sb.write("runcap.toml", &manifest);
    let mut child = sb
        .runcap()
        .args(["run", runbook])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step has started: the run's record says so.
    let started = Instant::now();
    loop {
        let history = sb.run(&["history", "--json"]);
        if history.stdout().contains("\"running\"") {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run never started: {}{}\n{}{}",
                history.stdout(),
                history.stderr(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = exit_within(&mut child, Duration::from_secs(15));
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("cancel") || text.contains("interrupt"),
        "{text}"
    );
}
