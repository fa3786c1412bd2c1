//! Harness for end-to-end tests: the built `runcap` binary, the first-party plugins
//! built for wasm32-wasip2, scratch directories with manifests, and real local
//! services to run them against.

pub mod demo_service;
pub mod example;
pub mod fleet_rig;
pub mod procstat;
pub mod servers;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// The workspace's target directory, found from this test binary's own path
/// (`target/debug/deps/…`), or `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The demo service binary built beside `runcap`.
pub fn demo_service_bin() -> PathBuf {
    runcap_bin().with_file_name("runcap-demo-service")
}

/// The `runcap` binary of this build profile.
pub fn runcap_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("runcap");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p runcap` (the README's test command does)",
        bin.display()
    );
    bin
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// `secs` seconds after the Unix epoch as RFC 3339 in UTC (`2026-12-04T21:54:07Z`), the
/// way stand-in application logs stamp their lines.
pub fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The newest modification time of the files below `dir`, skipping directories named
/// in `skip` (`node_modules`, tests): whether a built plugin is older than its sources.
pub fn newest_below(dir: &Path, skip: &[&str]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if skip.iter().any(|s| e.file_name() == *s) {
            continue;
        }
        let Ok(t) = e.file_type() else { continue };
        let time = if t.is_dir() {
            newest_below(&e.path(), skip)
        } else if t.is_file() {
            e.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(time);
    }
    newest
}

/// A plugin component built by `./dev plugins` (crate name with `-` as `_`).
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir().join("wasm32-wasip2/release").join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with `./dev plugins` (the README's test command does)",
        path.display()
    );
    path
}

/// Asserts that `secret` is nowhere runcap keeps or prints what run `run_id` did: not in
/// `show --json`, `history --json` or `audit verify`, and not in any file of the sandbox's
/// state directory (SQLite files included).
pub fn assert_secret_kept_nowhere(sb: &Sandbox, run_id: &str, secret: &str) {
    for args in [
        vec!["show", run_id, "--json"],
        vec!["history", "--json"],
        vec!["audit", "verify"],
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code(), 0, "{args:?}: {}", r.stderr());
        assert!(
            !r.stdout().contains(secret) && !r.stderr().contains(secret),
            "{args:?} printed the secret"
        );
    }
    for file in files_below(&sb.path().join(".runcap")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }
}

/// Every file below `dir` (symlinks are not followed; a missing `dir` has none).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("readable file")))
}

/// `path = "…"` and `sha256 = "…"` lines declaring a built plugin.
pub fn plugin_lines(crate_name: &str) -> String {
    let wasm = plugin_wasm(crate_name);
    format!(
        "path = {:?}\nsha256 = \"{}\"\n",
        wasm.display().to_string(),
        sha256_file(&wasm)
    )
}

/// A scratch directory holding manifests, state and a private compile cache.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// A `runcap` command running in this sandbox, with its own cache directory.
    pub fn runcap(&self) -> Command {
        let mut c = Command::new(runcap_bin());
        c.current_dir(self.path())
            .env("RUNCAP_CACHE_DIR", self.path().join(".cache"))
            .env_remove("RUNCAP_ENV")
            .env_remove("RUNCAP_LOG");
        c
    }

    /// Runs `runcap ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.runcap().args(args).output().expect("runcap runs");
        Run(out)
    }
}

/// The output of one `runcap` invocation.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            )
        })
    }
    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A loopback port nobody listens on, for a service a test will start. Ports come from a
/// range below the kernel's ephemeral ports and are never handed out twice in one test
/// binary, so parallel tests do not race each other for the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "ran out of test ports");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The step with id `id` in a `runcap run --json` report.
pub fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .expect("a run report has steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
}

/// A background tokio runtime for in-process servers, shared by a test binary.
pub fn background() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A demo service listening on `ip` (any free port), over TLS if `tls` is given.
pub struct Service {
    pub addr: SocketAddr,
    pub state: Arc<demo_service::ServiceState>,
}

impl Service {
    pub fn start(ip: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let state = Arc::new(demo_service::ServiceState::default());
        let listener = background()
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        background().spawn(demo_service::serve(listener, state.clone(), tls));
        Service { addr, state }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A running `runcap serve` and the address it listens on; killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (a `runcap serve`) and reads the address it prints first.
pub fn served_by(mut cmd: Command) -> Served {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("runcap serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("runcap serve prints its address");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string();
    Served { child, addr }
}

/// Kills (SIGKILL) the service and supervisor a runcap state file records, if they still run
/// as recorded. Tests call it on the way out, failed or not. A recorded process that has ended
/// is left alone: by then the system may have given its pid to another process (another
/// test's `runcap`, which would die of a signal for no reason of its own). The service must
/// carry its recorded start time; the supervisor must still lead its own session.
pub fn kill_recorded(state_file: &Path) {
    let Ok(text) = std::fs::read_to_string(state_file) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    if !v["exited_at_ms"].is_null() || !v["exit_code"].is_null() || !v["signal"].is_null() {
        return;
    }
    // After the state: ppid pgrp session … (index 2), starttime (index 18); none when gone.
    let stat = |pid: i64| procstat::stat_fields(&format!("/proc/{pid}/stat"));
    let kill = |pid: i64| {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    };
    // The supervisor first, so it cannot start the service again.
    if let Some(pid) = v["supervisor_pid"].as_i64()
        && stat(pid)
            .get(2)
            .is_some_and(|&session| session as i64 == pid)
    {
        kill(pid);
    }
    if let Some(pid) = v["pid"].as_i64()
        && v["pid_start"]
            .as_u64()
            .is_some_and(|start| stat(pid).get(18) == Some(&start))
    {
        kill(pid);
    }
}
