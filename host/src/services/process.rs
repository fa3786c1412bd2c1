//! The `process` driver: runcap starts the service under a small supervisor (a detached
//! `runcap supervise-service` process) that records the child's pid, its start time and,
//! when it ends, its exit code, in a state file. Status trusts a pid only while the
//! process with that pid still has the recorded start time, so a stale pid file can
//! never make runcap signal an unrelated process.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, LineWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    ServiceConfig, ServiceError, ServiceState, Status, Verb, only_for, parse_duration_or,
    parse_signal,
};
use crate::engine::cache::write_atomically;
use crate::manifest::{KeyPath, Validator};
use crate::redaction::Spec;
use crate::store::records::now_ms;

/// A validated process service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessDef {
    pub command: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub pid_file: Option<PathBuf>,
    pub stop_signal: (i32, String),
    pub grace: Duration,
}

pub(super) fn validate(
    v: &mut Validator,
    path: &KeyPath,
    c: ServiceConfig,
    cwd: PathBuf,
) -> Option<ProcessDef> {
    only_for(
        v,
        path,
        "process",
        &[
            ("start", c.start.is_some()),
            ("stop", c.stop.is_some()),
            ("restart", c.restart.is_some()),
            ("status", c.status.is_some()),
            ("timeout", c.timeout.is_some()),
        ],
    );
    let Some(cmd) = &c.command else {
        v.error(
            path,
            "a process service needs `command`",
            "add command = \"path/to/binary\" (and args = [...])",
        );
        return None;
    };
    // A path with a slash is relative to the manifest; a bare name is looked up on PATH.
    let command = if cmd.contains('/') {
        let p = v.resolve(&path.key("command"), cmd);
        if !p.is_file() {
            v.error(
                &path.key("command"),
                format!("{} does not exist", p.display()),
                "fix the path; it is relative to the manifest's directory",
            );
        }
        p
    } else {
        PathBuf::from(cmd)
    };
    let stop_signal = match &c.stop_signal {
        None => (libc::SIGTERM, "SIGTERM".to_string()),
        Some(s) => match parse_signal(s) {
            Some(sig) => sig,
            None => {
                v.error(
                    &path.key("stop_signal"),
                    format!("`{s}` is not a signal runcap knows"),
                    "use SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 or SIGUSR2",
                );
                (libc::SIGTERM, "SIGTERM".to_string())
            }
        },
    };
    let grace = parse_duration_or(
        v,
        &path.key("grace"),
        c.grace.as_ref(),
        Duration::from_secs(10),
    );
    Some(ProcessDef {
        command,
        args: c.args,
        cwd,
        env: c.env,
        pid_file: c.pid_file.as_ref().map(|p| {
            let at = path.key("pid_file");
            let file = v.resolve(&at, p);
            // Known now rather than at the start that cannot write it.
            if let Some(dir) = file.parent().filter(|d| !d.is_dir()) {
                v.error(
                    &at,
                    format!("the pid file's directory {} does not exist", dir.display()),
                    format!(
                        "create it (mkdir -p {}), or name a file in an existing directory",
                        dir.display()
                    ),
                );
            }
            file
        }),
        stop_signal,
        grace,
    })
}

/// What the supervisor records about its child.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub supervisor_pid: u32,
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22).
    pub pid_start: Option<u64>,
    pub command: String,
    pub started_at_ms: u64,
    pub exited_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
}

fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

pub(super) fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The lock a supervisor holds for as long as it lives: at most one instance of a
/// service is supervised, whatever happens to the runcap that started it.
fn instance_lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.instance.lock"))
}

/// Takes the instance lock without waiting; `None` when another supervisor holds it.
/// The lock lasts as long as the returned file is open (it is not inherited by the
/// service, whose descriptors runcap does not pass on).
fn try_instance_lock(dir: &Path, name: &str) -> std::io::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(instance_lock_path(dir, name))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        e => Err(e),
    }
}

/// Whether a supervisor of the service is alive (it holds the instance lock).
fn supervised(dir: &Path, name: &str) -> bool {
    matches!(try_instance_lock(dir, name), Ok(None))
}

fn read_state(dir: &Path, name: &str) -> Option<StateFile> {
    let text = std::fs::read_to_string(state_path(dir, name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `pid` is still the process the state file describes.
fn is_ours(s: &StateFile) -> Option<u32> {
    let pid = s.pid?;
    (s.exited_at_ms.is_none() && crate::procinfo::start_time(pid)? == s.pid_start?).then_some(pid)
}

fn status_of(name: &str, dir: &Path) -> Status {
    let mut st = Status {
        name: name.to_string(),
        state: ServiceState::Stopped,
        pid: None,
        uptime_ms: None,
        last_exit_code: None,
        health_url: None,
        detail: "never started by runcap".into(),
    };
    let Some(mut s) = read_state(dir, name) else {
        return st;
    };
    // The process just ended and its supervisor is still writing down how: wait a moment
    // so the exit code is reported rather than missed.
    let deadline = Instant::now() + Duration::from_millis(500);
    while is_ours(&s).is_none()
        && s.exited_at_ms.is_none()
        && s.pid.is_some()
        && Instant::now() < deadline
        && crate::procinfo::start_time(s.supervisor_pid).is_some()
    {
        std::thread::sleep(Duration::from_millis(5));
        match read_state(dir, name) {
            Some(fresh) => s = fresh,
            None => break,
        }
    }
    if let Some(pid) = is_ours(&s) {
        st.state = ServiceState::Running;
        st.pid = Some(pid);
        st.uptime_ms = Some(now_ms().saturating_sub(s.started_at_ms));
        st.detail = format!("running as pid {pid}");
        return st;
    }
    st.last_exit_code = match (s.exit_code, s.signal) {
        (Some(c), _) => Some(c),
        (None, Some(sig)) => Some(128 + sig),
        _ => None,
    };
    st.detail = match (&s.error, s.exit_code, s.signal, s.pid) {
        (Some(e), _, _, _) => format!("failed to start: {e}"),
        (_, Some(c), _, _) => format!("exited with code {c}"),
        (_, _, Some(sig), _) => format!("killed by signal {sig}"),
        (_, _, _, Some(pid)) => format!(
            "pid {pid} is gone (or belongs to another process now); not trusting the old pid"
        ),
        _ => "not running".into(),
    };
    st
}

pub(super) fn control(
    name: &str,
    def: &ProcessDef,
    dir: &Path,
    verb: Verb,
    redaction: &Spec,
) -> Result<Status, ServiceError> {
    match verb {
        Verb::Status => Ok(status_of(name, dir)),
        Verb::Start => start(name, def, dir, redaction),
        Verb::Stop => stop(name, def, dir),
        Verb::Restart => {
            stop(name, def, dir)?;
            let mut st = start(name, def, dir, redaction)?;
            st.detail = format!("restarted: {}", st.detail);
            Ok(st)
        }
    }
}

fn start(
    name: &str,
    def: &ProcessDef,
    dir: &Path,
    redaction: &Spec,
) -> Result<Status, ServiceError> {
    let current = status_of(name, dir);
    if current.state == ServiceState::Running {
        let mut st = current;
        st.detail = format!("already running as pid {}", st.pid.unwrap_or_default());
        return Ok(st);
    }
    // A supervisor that a runcap killed mid-start left behind may still be bringing the
    // service up, or the one a stop just ended may still be writing down how: either way
    // it holds the instance lock. Wait for it to run the service or to end, rather than
    // start a second one.
    if let Some(st) = other_supervisor(name, dir)? {
        return Ok(st);
    }
    let supervisor = spawn_supervisor(name, def, dir, redaction)?;
    let result = wait_started(name, def, dir, &supervisor);
    // Reap the supervisor if it ends while this process still runs.
    std::thread::spawn(move || supervisor.wait());
    result
}

/// A supervisor this process started.
struct Supervisor(std::sync::Mutex<std::process::Child>);

impl Supervisor {
    fn id(&self) -> u32 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).id()
    }

    /// Whether it has ended (without reaping anything else).
    fn ended(&self) -> bool {
        let mut child = self.0.lock().unwrap_or_else(|p| p.into_inner());
        !matches!(child.try_wait(), Ok(None))
    }

    fn wait(self) {
        let _ = self
            .0
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .wait();
    }
}

/// Starts `runcap supervise-service` for the service, in a session of its own, and hands
/// it the redaction rules through a pipe.
fn spawn_supervisor(
    name: &str,
    def: &ProcessDef,
    dir: &Path,
    redaction: &Spec,
) -> Result<Supervisor, ServiceError> {
    let exe = std::env::current_exe().map_err(ServiceError::NoBinary)?;
    let mut cmd = Command::new(exe);
    cmd.arg("supervise-service")
        .arg("--state")
        .arg(state_path(dir, name))
        .arg("--log")
        .arg(log_path(dir, name))
        .arg("--cwd")
        .arg(&def.cwd);
    if let Some(p) = &def.pid_file {
        cmd.arg("--pid-file").arg(p);
    }
    cmd.arg("--").arg(&def.command).args(&def.args);
    cmd.envs(&def.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the supervisor leaves runcap's session so a
    // Ctrl-C in runcap's terminal does not reach the service.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ServiceError::Supervisor)?;
    // The redaction rules and secret values go through a pipe, never into the supervisor's
    // arguments or environment, where other local users could read them.
    if let Some(mut stdin) = child.stdin.take() {
        let spec = serde_json::to_vec(redaction).map_err(ServiceError::EncodeRules)?;
        if let Err(e) = stdin.write_all(&spec) {
            let _ = child.kill();
            return Err(ServiceError::HandRules(e));
        }
    }
    Ok(Supervisor(std::sync::Mutex::new(child)))
}

/// Waits until the supervisor this start spawned runs the service, and checks that the
/// process it started is the one running; a supervisor that lost the instance lock to an
/// earlier one (started by a runcap that died) defers to it.
fn wait_started(
    name: &str,
    def: &ProcessDef,
    dir: &Path,
    supervisor: &Supervisor,
) -> Result<Status, ServiceError> {
    let ours = supervisor.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Only this start's supervisor counts, not a late word from another one.
        if let Some(s) = read_state(dir, name).filter(|s| s.supervisor_pid == ours) {
            if let Some(pid) = is_ours(&s) {
                // A child that dies at once (bad args, a port in use) is a failed start.
                std::thread::sleep(Duration::from_millis(50));
                let now = read_state(dir, name);
                if is_ours(&s).is_some() && now.is_some_and(|n| n.supervisor_pid == ours) {
                    let mut st = status_of(name, dir);
                    st.detail = format!("started as pid {pid}");
                    return Ok(st);
                }
            }
            if s.exited_at_ms.is_some() || s.error.is_some() {
                let st = status_of(name, dir);
                return Err(ServiceError::StartFailed {
                    detail: st.detail,
                    command: def.command.clone(),
                    log: log_tail(dir, name),
                });
            }
        } else if supervisor.ended() {
            // It never wrote a state: another supervisor took the service first.
            return other_supervisor(name, dir)?.ok_or_else(|| ServiceError::SupervisorEnded {
                name: name.to_string(),
            });
        }
        if Instant::now() > deadline {
            return Err(ServiceError::StartTimedOut {
                name: name.to_string(),
                log: log_tail(dir, name),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits while another supervisor holds the service: `Some` once it runs the service
/// (reported as already running), `None` once it has ended and a new one may start.
fn other_supervisor(name: &str, dir: &Path) -> Result<Option<Status>, ServiceError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while supervised(dir, name) {
        let st = status_of(name, dir);
        if st.state == ServiceState::Running {
            let mut st = st;
            st.detail = format!("already running as pid {}", st.pid.unwrap_or_default());
            return Ok(Some(st));
        }
        if Instant::now() > deadline {
            return Err(ServiceError::HeldElsewhere {
                name: name.to_string(),
                detail: st.detail,
                log: log_tail(dir, name),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

fn stop(name: &str, def: &ProcessDef, dir: &Path) -> Result<Status, ServiceError> {
    let Some(s) = read_state(dir, name) else {
        let mut st = status_of(name, dir);
        st.detail = "already stopped".into();
        return Ok(st);
    };
    let Some(pid) = is_ours(&s) else {
        let mut st = status_of(name, dir);
        st.detail = format!("already stopped ({})", st.detail);
        return Ok(st);
    };
    let signal = |sig: i32| {
        // SAFETY: plain kill(2) on a pid whose identity was just checked.
        unsafe { libc::kill(pid as i32, sig) }
    };
    signal(def.stop_signal.0);
    let mut how = def.stop_signal.1.clone();
    let deadline = Instant::now() + def.grace;
    while is_ours(&s).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_ours(&s).is_some() {
        signal(libc::SIGKILL);
        how = format!(
            "{how}, then SIGKILL after {}",
            humantime::format_duration(def.grace)
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_ours(&s).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Give the supervisor a moment to record the exit code.
    let deadline = Instant::now() + Duration::from_secs(2);
    while read_state(dir, name).is_some_and(|s| s.exited_at_ms.is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut st = status_of(name, dir);
    if st.state == ServiceState::Running {
        return Err(ServiceError::DidNotStop { pid, how });
    }
    st.detail = format!("stopped pid {pid} with {how}; {}", st.detail);
    Ok(st)
}

/// Kills the service's process with SIGKILL, as a crash would; returns the pid killed.
pub(super) fn kill(name: &str, dir: &Path) -> Result<u32, ServiceError> {
    let name_of = || name.to_string();
    let s = read_state(dir, name).ok_or_else(|| ServiceError::NeverStarted { name: name_of() })?;
    let pid = is_ours(&s).ok_or_else(|| ServiceError::NotRunning { name: name_of() })?;
    // SAFETY: kill(2) on a pid whose identity (start time) was just checked.
    if unsafe { libc::kill(pid as i32, libc::SIGKILL) } != 0 {
        return Err(ServiceError::Kill {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_ours(&s).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(pid)
}

/// Why the supervisor has no redaction rules to write the service's log with.
#[derive(Debug, thiserror::Error)]
enum RulesError {
    #[error("cannot read the rules: {0}")]
    Read(std::io::Error),
    #[error("bad rules: {0}")]
    Parse(serde_json::Error),
    #[error("{0}")]
    Build(#[from] runcap_redact::Error),
}

/// Reads the redaction [`Spec`] runcap writes to the supervisor's stdin, and builds it.
fn read_spec() -> Result<runcap_redact::Redactor, RulesError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(RulesError::Read)?;
    let spec: Spec = serde_json::from_str(&text).map_err(RulesError::Parse)?;
    Ok(spec.build()?.with_max_line(PUMP_LINE))
}

/// The longest line redacted in one piece in a service's log (longer ones are cut).
const PUMP_LINE: usize = 64 * 1024;

/// Copies one output stream of the service into its log, redacted, whole lines at a time
/// so that stdout and stderr interleave by line.
fn pump(redactor: &runcap_redact::Redactor, output: Box<dyn Read + Send>, log: &Mutex<File>) {
    let reader = BufReader::with_capacity(PUMP_LINE, output);
    let writer = LineWriter::with_capacity(PUMP_LINE, SharedLog(log));
    let mut counts = runcap_redact::Counts::new();
    let _ = redactor.redact_text_stream(reader, writer, &mut counts);
}

/// The log file, locked for each write.
struct SharedLog<'a>(&'a Mutex<File>);

impl Write for SharedLog<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The last three lines of a service's log, for the message that says it did not start:
/// read from the file's last 64 KiB, however large the log has grown.
fn log_tail(dir: &Path, name: &str) -> String {
    let end = crate::caps::logs::read_end(&log_path(dir, name), 64 << 10).unwrap_or_default();
    let text = String::from_utf8_lossy(&end);
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    if lines.is_empty() {
        "(none)".into()
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// The supervisor's main: start `command`, record it, wait, record how it ended.
/// Runs as `runcap supervise-service` in its own session.
pub fn supervise(
    state: &Path,
    log: &Path,
    cwd: &Path,
    pid_file: Option<&Path>,
    command: &[String],
) -> i32 {
    let mut record = StateFile {
        supervisor_pid: std::process::id(),
        command: command.join(" "),
        started_at_ms: now_ms(),
        ..StateFile::default()
    };
    let save = |r: &StateFile| save_state(state, r);
    // Records why the service was not started, and the exit code that says so.
    let fail = |record: &mut StateFile, error: String, code: i32| {
        record.error = Some(error);
        record.exited_at_ms = Some(now_ms());
        save(record);
        code
    };
    let Some((program, args)) = command.split_first() else {
        record.error = Some("no command".into());
        save(&record);
        return 2;
    };
    // One supervisor per service: one that loses the instance lock to a live one leaves
    // without touching the state file (the runcap that started it defers to the other).
    let (dir, name) = service_of(state);
    let _instance = match try_instance_lock(dir, &name) {
        Ok(Some(lock)) => lock,
        Ok(None) => return 3,
        Err(e) => {
            return fail(
                &mut record,
                format!("cannot take the instance lock: {e}"),
                2,
            );
        }
    };
    // The state names this supervisor before the service exists, so a start that
    // follows (after a crash of the runcap that started it) finds it.
    save(&record);
    // A service whose output cannot be redacted is not started: its log would keep what
    // runcap promises never to store.
    let redactor = match read_spec() {
        Ok(r) => Arc::new(r),
        Err(e) => return fail(&mut record, format!("cannot set up log redaction: {e}"), 2),
    };
    let log_file = match open_log(log) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            return fail(
                &mut record,
                format!("cannot open {}: {e}", log.display()),
                2,
            );
        }
    };
    let spawned = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return fail(&mut record, format!("cannot run {program}: {e}"), 1),
    };
    let pumps = start_pumps(&mut child, &redactor, &log_file);
    record.pid = Some(child.id());
    record.pid_start = crate::procinfo::start_time(child.id());
    // A pid file other tools rely on that cannot be written fails the start: the
    // service is stopped again rather than left running where they cannot find it.
    if let Some(p) = pid_file
        && let Err(e) = write_atomically(p, format!("{}\n", child.id()).as_bytes())
    {
        let _ = child.kill();
        let _ = child.wait();
        return fail(
            &mut record,
            format!("cannot write the pid file {}: {e}", p.display()),
            2,
        );
    }
    save(&record);
    let status = child.wait();
    let exited_at = now_ms();
    // Let the pumps write the service's last lines before the exit is recorded (whoever
    // waits for the exit then finds them in the log). A process the service left behind
    // may hold its pipes open, so wait only a moment for that (well within the moment
    // `status_of` gives a supervisor to record an exit).
    pumps.wait(Duration::from_millis(300));
    record.exited_at_ms = Some(exited_at);
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            record.exit_code = s.code();
            record.signal = s.signal();
        }
        Err(e) => record.error = Some(format!("lost track of the child: {e}")),
    }
    record_exit(state, pid_file, &record);
    0
}

/// The directory and name of the service whose state file is `state`.
fn service_of(state: &Path) -> (&Path, String) {
    let dir = state.parent().unwrap_or(Path::new("."));
    let name = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// The service's log, appended to and readable by its owner only.
fn open_log(log: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
}

/// Writes the supervisor's record of its child; a failure is left for status to notice.
fn save_state(state: &Path, r: &StateFile) {
    let _ = write_atomically(
        state,
        serde_json::to_string_pretty(r)
            .unwrap_or_default()
            .as_bytes(),
    );
}

/// Records how the child ended and removes its pid file, unless a restart already
/// handed the state file (and the pid file) to a new supervisor; those are left to it.
fn record_exit(state: &Path, pid_file: Option<&Path>, record: &StateFile) {
    let current = std::fs::read_to_string(state)
        .ok()
        .and_then(|t| serde_json::from_str::<StateFile>(&t).ok());
    if current.is_some_and(|c| c.supervisor_pid != record.supervisor_pid) {
        return;
    }
    save_state(state, record);
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
}

/// The threads copying the child's stdout and stderr into its log.
struct Pumps {
    count: usize,
    done: std::sync::mpsc::Receiver<()>,
}

impl Pumps {
    /// Waits up to `limit` for every pump to reach the end of its stream.
    fn wait(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..self.count {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                break;
            }
        }
    }
}

/// Starts a pump per output stream of the child, each redacting into the shared log.
fn start_pumps(
    child: &mut std::process::Child,
    redactor: &Arc<runcap_redact::Redactor>,
    log_file: &Arc<Mutex<File>>,
) -> Pumps {
    let (done_tx, done) = std::sync::mpsc::channel();
    let mut count = 0;
    let outputs: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|o| Box::new(o) as _),
        child.stderr.take().map(|e| Box::new(e) as _),
    ];
    for output in outputs.into_iter().flatten() {
        let (redactor, log_file, done) = (redactor.clone(), log_file.clone(), done_tx.clone());
        count += 1;
        std::thread::spawn(move || {
            pump(&redactor, output, &log_file);
            let _ = done.send(());
        });
    }
    Pumps { count, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_quotes_the_last_lines_of_however_large_a_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(log_tail(dir.path(), "api"), "(none)");
        // 200 KiB of earlier output, then the lines that explain the failure.
        let mut log = "x".repeat(99) + "\n";
        log = log.repeat(2048);
        log += "starting\nbinding 127.0.0.1:80\nerror: permission denied\n";
        std::fs::write(log_path(dir.path(), "api"), log).unwrap();
        assert_eq!(
            log_tail(dir.path(), "api"),
            "starting | binding 127.0.0.1:80 | error: permission denied"
        );
    }
}
