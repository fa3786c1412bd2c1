//! An example environment (`examples/NAME`) run end to end as an operator would: copied
//! into a sandbox with its plugin paths made absolute, its ports replaced by free ones and
//! its pages sent to an in-process webhook sink, and stopped (whatever it left killed, drill
//! proxies too) when dropped, so a failing assertion leaves nothing running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Sandbox, Service, demo_service_bin, free_port, repo_root, target_dir};

/// What an example's manifest writes that a test rewrites.
pub struct Layout<'a> {
    /// The directory below `examples/`.
    pub name: &'a str,
    /// Every port the manifest writes, in an order the test indexes by.
    pub ports: &'a [u16],
    /// The pager stand-in's port: its `/hooks/` go to the test's sink instead.
    pub pager: u16,
    /// Top-level names running the example by hand leaves behind, not copied.
    pub skip: &'a [&'a str],
}

/// Sets the host-wide levels a `resources` check judges (memory and CPU percent, load per
/// CPU, the root disk's space and inodes) to 100, which no machine reaches. Those figures
/// belong to whatever machine runs the test (a shared CI host with a nearly full disk or
/// both cores busy is not a failing platform), so an example's test judges its own
/// processes, ports and files and leaves the machine's figures to `tests/system_facts.rs`.
fn out_of_the_machines_reach(manifest: &str) -> String {
    // `cpu = {` also finds `load_per_cpu = {`.
    const TABLES: [&str; 4] = [
        "memory = {",
        "cpu = {",
        r#"disks = { "/" = {"#,
        r#"inodes = { "/" = {"#,
    ];
    let mut text = manifest.to_string();
    for table in TABLES {
        let mut from = 0;
        while let Some(found) = text[from..].find(table) {
            let start = from + found + table.len();
            let end = start + text[start..].find('}').expect("the table is closed");
            let levels = text[start..end]
                .split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((key, level)) if key.trim().ends_with("_above") => {
                        format!("{key}={}", level.replace(level.trim(), "100"))
                    }
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            text.replace_range(start..end, &levels);
            from = start + levels.len();
        }
    }
    text
}

/// An example in a sandbox.
pub struct Example {
    pub sb: Sandbox,
    /// (the manifest's port, the free one that replaced it)
    ports: Vec<(u16, u16)>,
}

impl Example {
    /// Copies the example and rewrites its manifest; `more` are further (text, with)
    /// rewrites, with `{sandbox}` in `with` standing for the sandbox's directory.
    pub fn new(layout: &Layout, hooks: &Service, more: &[(&str, &str)]) -> Example {
        let sb = Sandbox::new();
        copy_example(
            &repo_root().join("examples").join(layout.name),
            sb.path(),
            layout.skip,
        );
        let mut text = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
        // Pages go to a sink the test can read; the pager stand-in still runs.
        text = text.replace(
            &format!("http://127.0.0.1:{}/hooks/", layout.pager),
            &hooks.url("/hooks/"),
        );
        text = text.replace(
            "../../target/debug/runcap-demo-service",
            &demo_service_bin().display().to_string(),
        );
        text = text.replace("../../target/", &format!("{}/", target_dir().display()));
        let dir = sb.path().display().to_string();
        for (from, to) in more {
            assert!(
                text.contains(from),
                "the {} manifest no longer holds `{from}`: update the test's rewrites",
                layout.name
            );
            text = text.replace(from, &to.replace("{sandbox}", &dir));
        }
        text = out_of_the_machines_reach(&text);
        let mut ports = Vec::new();
        for &port in layout.ports {
            let new = free_port();
            // Bare numbers too: `resources` grants and checks name ports alone.
            text = text.replace(&port.to_string(), &new.to_string());
            ports.push((port, new));
        }
        assert!(
            !text.contains("../../target")
                && layout.ports.iter().all(|p| !text.contains(&p.to_string())),
            "every path and port was rewritten:\n{text}"
        );
        sb.write("runcap.toml", &text);
        Example { sb, ports }
    }

    /// The free port that replaced the manifest's `example_port`.
    pub fn port(&self, example_port: u16) -> u16 {
        self.ports
            .iter()
            .find(|(p, _)| *p == example_port)
            .map(|(_, new)| *new)
            .unwrap_or_else(|| panic!("{example_port} is not one of the example's ports"))
    }

    /// `runcap ARGS --json`, expecting exit `code`.
    pub fn run_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.sb.run(&all).expect_code(code).json()
    }

    /// Processes whose working directory is inside the sandbox (services, their
    /// supervisors, drill proxies), as (pid, command line): none once the stack is stopped.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let root = self.sb.path().canonicalize().unwrap();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root))
            {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }

    /// The pid `runcap services` reports for `service`.
    pub fn pid(&self, service: &str) -> i64 {
        let services = self.run_json(&["services"], 0);
        services
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["pid"].as_i64())
            .unwrap_or_else(|| panic!("{service} has no pid: {services:#}"))
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.sb.run(&["run", "stop"]);
        let _ = self.sb.run(&["proxies", "--stop"]);
        // Whatever the stops left (a supervisor, a service or a drill proxy they could not
        // reach) is killed.
        let state = self.sb.path().join(".runcap");
        let files = ["services", "proxies"].into_iter().flat_map(|d| {
            std::fs::read_dir(state.join(d))
                .into_iter()
                .flatten()
                .flatten()
        });
        for file in files {
            if file.path().extension().is_some_and(|e| e == "json") {
                crate::kill_recorded(&file.path());
            }
        }
    }
}

/// Copies an example's files, leaving out `skip` and SQLite's WAL side files, keeping
/// links links (release links) and modes (bin/ stays executable).
fn copy_example(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if skip.contains(&name.as_ref()) || name.ends_with("-wal") || name.ends_with("-shm") {
            continue;
        }
        let dest = to.join(&*name);
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else if kind.is_dir() {
            copy_example(&entry.path(), &dest, skip);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Whether something accepts connections on the loopback `port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A plain HTTP/1.0 request on loopback, as a person with curl would send it (to flip a
/// stand-in's failure switch, or read what it serves): the status code and the body.
pub fn http(method: &str, port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The pages the sink received on `channel`, in order.
pub fn pages(hooks: &Service, channel: &str) -> Vec<serde_json::Value> {
    hooks
        .state
        .hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _)| c == channel)
        .map(|(_, p)| p.clone())
        .collect()
}

/// Kills `pid` outright, as a crash would (SIGKILL), and waits until nothing listens on
/// `port` any more; `what` names the stand-in in the failure message.
pub fn crash(pid: impl std::fmt::Display, port: u16, what: &str) {
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -9 {pid} ({what}) failed");
    wait_for(&format!("{what}'s port to close"), || !listening(port));
}

/// Now as RFC 3339 in UTC, the way stand-in application logs stamp their lines.
pub fn now_rfc3339() -> String {
    crate::rfc3339(crate::unix_now())
}

/// Appends `text` to an existing file (fresh lines in a stand-in's log).
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Polls `cond` every 50 ms until it holds, for at most 15 s.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that every step of a run report is `ok`, naming the first that is not.
pub fn all_ok(report: &serde_json::Value) {
    for (id, status) in statuses(report) {
        assert_eq!(status, "ok", "{id}: {report:#}");
    }
}

/// A run report's steps as (id, status).
pub fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machines_levels_are_moved_and_nothing_else() {
        let line = r#"with = { memory = { warn_above = 85, fail_above = 95 }, cpu = { warn_above = 80 }, load_per_cpu = { fail_above = 4 }, disks = { "/" = { warn_above = 80, fail_above = 95 } }, inodes = { "/" = { fail_above = 90 } }, processes = { x = { min = 2, max_rss_mib = 512 } }, zombies = { warn_above = 0 } }"#;
        assert_eq!(
            super::out_of_the_machines_reach(line),
            r#"with = { memory = { warn_above = 100, fail_above = 100 }, cpu = { warn_above = 100 }, load_per_cpu = { fail_above = 100 }, disks = { "/" = { warn_above = 100, fail_above = 100 } }, inodes = { "/" = { fail_above = 100 } }, processes = { x = { min = 2, max_rss_mib = 512 } }, zombies = { warn_above = 0 } }"#
        );
    }
}
