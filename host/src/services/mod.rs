//! The environment's services: `[services.NAME]` definitions and the drivers that start,
//! stop, restart and report them (`process`: runcap supervises a local process;
//! `command`: operator-written shell commands per verb). Plugins reach them through the
//! `services` capability ([`crate::caps::services`]); chaos drills and recovery use them
//! directly.

mod command;
mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::{KeyPath, Validator};

pub use command::CommandDef;
pub use process::{ProcessDef, supervise};

/// `[services.NAME]` as written. Keys belong to one driver or the other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `driver = "process"` or `"command"`.
    pub driver: String,
    /// process: `command = "bin/api"` (relative to the manifest, or found on PATH).
    pub command: Option<String>,
    /// process: `args = ["--port", "8080"]`
    #[serde(default)]
    pub args: Vec<String>,
    /// process and command: working directory (default: the manifest's directory).
    pub cwd: Option<String>,
    /// process: extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// process: also write the pid here, for other tools.
    pub pid_file: Option<String>,
    /// process: `stop_signal = "SIGTERM"` (default).
    pub stop_signal: Option<String>,
    /// process: `grace = "10s"`: how long to wait after the stop signal before SIGKILL.
    pub grace: Option<String>,
    /// `health_url = "http://127.0.0.1:8080/health"`: where plugins can check it is up.
    pub health_url: Option<String>,
    /// command: shell command per verb.
    pub start: Option<String>,
    pub stop: Option<String>,
    /// command: default is `stop` then `start`.
    pub restart: Option<String>,
    /// command: exit 0 = running, 3 = stopped (the LSB convention), other = unknown.
    pub status: Option<String>,
    /// command: limit per command (default 60s).
    pub timeout: Option<String>,
}

/// A verb a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Status,
    Start,
    Stop,
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Status => "status",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }

    /// The verb a manifest or a CLI names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "status" => Verb::Status,
            "start" => Verb::Start,
            "stop" => Verb::Stop,
            "restart" => Verb::Restart,
            _ => return None,
        })
    }
}

/// How runcap drives one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum Driver {
    Process(process::ProcessDef),
    Command(command::CommandDef),
}

/// A validated `[services.NAME]`.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub driver: Driver,
    pub health_url: Option<String>,
}

/// Validates every `[services.NAME]`.
pub fn validate_services(
    v: &mut Validator,
    raw: BTreeMap<String, ServiceConfig>,
) -> BTreeMap<String, ServiceDef> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        let path = KeyPath::root().key("services").key(&name);
        if !v.name(&path, "service", &name) {
            continue;
        }
        let cwd = c
            .cwd
            .as_ref()
            .map(|d| v.resolve(&path.key("cwd"), d))
            .unwrap_or_else(|| v.resolve(&path, ""));
        let health_url = c.health_url.clone();
        if let Some(u) = &health_url
            && url::Url::parse(u).is_err()
        {
            v.error(&path.key("health_url"), format!("`{u}` is not a URL"), "");
        }
        let driver = match c.driver.as_str() {
            "process" => process::validate(v, &path, c, cwd).map(Driver::Process),
            "command" => command::validate(v, &path, c, cwd).map(Driver::Command),
            other => {
                v.error(&path.key("driver"), format!("`{other}` is not a driver"), "use \"process\" (runcap supervises it) or \"command\" (shell commands per verb)");
                None
            }
        };
        if let Some(driver) = driver {
            out.insert(
                name.clone(),
                ServiceDef {
                    name,
                    driver,
                    health_url,
                },
            );
        }
    }
    out
}

/// Rejects keys that belong to the other driver.
fn only_for(v: &mut Validator, path: &KeyPath, driver: &str, present: &[(&str, bool)]) {
    for (key, set) in present {
        if *set {
            v.error(
                &path.key(*key),
                format!("`{key}` does not apply to the {driver} driver"),
                "remove it, or change `driver`",
            );
        }
    }
}

/// Whether a service runs, as its driver knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
    /// The driver cannot tell (no status command, or it answered something else).
    Unknown,
}

impl ServiceState {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
            ServiceState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a driver reports about a service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub uptime_ms: Option<u64>,
    pub last_exit_code: Option<i32>,
    pub health_url: Option<String>,
    pub detail: String,
}

impl Status {
    /// A service whose state could not be found out, and why.
    pub fn unknown(name: &str, detail: String) -> Self {
        Status {
            name: name.to_string(),
            state: ServiceState::Unknown,
            pid: None,
            uptime_ms: None,
            last_exit_code: None,
            health_url: None,
            detail,
        }
    }
}

/// Why a service could not be driven: the verb was not carried out, or its result is
/// not known. Each message says which service and what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no service `{name}` is defined")]
    Undefined { name: String },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    OpenLock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The blocking task that drives the service panicked or was cancelled.
    #[error("the service driver failed: {0}")]
    Driver(#[from] tokio::task::JoinError),
    #[error(
        "`{name}` uses the command driver, so runcap knows no pid to kill; use a stop fault instead"
    )]
    NoPid { name: String },
    /// command driver: the shell could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    /// command driver: waiting for the command failed.
    #[error("{0}")]
    Wait(std::io::Error),
    #[error("`{cmd}` did not finish within {}", humantime::format_duration(*timeout))]
    TimedOut { cmd: String, timeout: Duration },
    #[error("service `{name}` has no `{verb}` command")]
    NoCommand { name: String, verb: &'static str },
    #[error("`{cmd}` exited with code {code}: {output}")]
    CommandFailed {
        cmd: String,
        code: i32,
        output: String,
    },
    /// process driver: runcap's own executable (the supervisor) was not found.
    #[error("cannot find the runcap binary: {0}")]
    NoBinary(std::io::Error),
    #[error("cannot start the supervisor: {0}")]
    Supervisor(std::io::Error),
    #[error("cannot encode the redaction rules: {0}")]
    EncodeRules(serde_json::Error),
    #[error("cannot hand the redaction rules to the supervisor: {0}")]
    HandRules(std::io::Error),
    /// The process ended or failed as it started; `detail` is its status.
    #[error("{detail} ({}); last log lines: {log}", command.display())]
    StartFailed {
        detail: String,
        command: PathBuf,
        log: String,
    },
    #[error("{name}: the supervisor ended before it started the service")]
    SupervisorEnded { name: String },
    #[error("{name} did not start within 10s; last log lines: {log}")]
    StartTimedOut { name: String, log: String },
    #[error(
        "another supervisor of {name} holds it but runs no process ({detail}); last log lines: {log}"
    )]
    HeldElsewhere {
        name: String,
        detail: String,
        log: String,
    },
    #[error("pid {pid} did not stop after {how}")]
    DidNotStop { pid: u32, how: String },
    #[error("{name} was never started by runcap")]
    NeverStarted { name: String },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("cannot kill pid {pid}: {source}")]
    Kill { pid: u32, source: std::io::Error },
}

impl ServiceError {
    fn create_dir(dir: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| ServiceError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        }
    }
}

/// Drives the environment's services; shared by every plugin of a run.
pub struct ServiceManager {
    defs: BTreeMap<String, ServiceDef>,
    dir: PathBuf,
    /// What supervised services' output is redacted with on its way to their logs.
    redaction: Arc<crate::redaction::Spec>,
}

impl ServiceManager {
    /// Services of an environment, with their state files under `state_dir/services`.
    pub fn new(
        defs: BTreeMap<String, ServiceDef>,
        state_dir: &Path,
        redaction: Arc<crate::redaction::Spec>,
    ) -> Self {
        ServiceManager {
            defs,
            dir: state_dir.join("services"),
            redaction,
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.defs.keys()
    }

    /// Applies a verb. Mutating verbs hold the service's lock, so concurrent restarts of
    /// one service (from any runcap process) happen one after the other.
    pub async fn control(&self, name: &str, verb: Verb) -> Result<Status, ServiceError> {
        let def = self.def(name)?.clone();
        let dir = self.dir.clone();
        let redaction = self.redaction.clone();
        tokio::task::spawn_blocking(move || -> Result<Status, ServiceError> {
            std::fs::create_dir_all(&dir).map_err(ServiceError::create_dir(&dir))?;
            let _lock = if verb == Verb::Status {
                None
            } else {
                Some(lock(&dir, &def.name)?)
            };
            let mut status = match &def.driver {
                Driver::Process(p) => process::control(&def.name, p, &dir, verb, &redaction),
                Driver::Command(c) => command::control(&def.name, c, verb),
            }?;
            status.health_url = def.health_url.clone();
            Ok(status)
        })
        .await?
    }

    fn def(&self, name: &str) -> Result<&ServiceDef, ServiceError> {
        self.defs.get(name).ok_or_else(|| ServiceError::Undefined {
            name: name.to_string(),
        })
    }
}

impl ServiceManager {
    /// What supervised services' output is redacted with.
    pub fn redaction(&self) -> Arc<crate::redaction::Spec> {
        self.redaction.clone()
    }

    /// Whether a service is defined.
    pub fn has(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    /// SIGKILLs a process-driver service, as a crash would. Only process services have a
    /// pid runcap can vouch for.
    pub async fn kill(&self, name: &str) -> Result<u32, ServiceError> {
        let def = self.def(name)?.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = lock(&dir, &def.name)?;
            match &def.driver {
                Driver::Process(_) => process::kill(&def.name, &dir),
                Driver::Command(_) => Err(ServiceError::NoPid {
                    name: def.name.clone(),
                }),
            }
        })
        .await?
    }
}

/// Applies a verb to a service known only by its driver (a proxy, or a service being
/// restored after a crash, when the manifest is not at hand and `redaction` holds only
/// the default rules).
pub async fn control_with(
    name: &str,
    driver: &Driver,
    dir: &Path,
    verb: Verb,
    redaction: Arc<crate::redaction::Spec>,
) -> Result<Status, ServiceError> {
    let (name, driver, dir) = (name.to_string(), driver.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(ServiceError::create_dir(&dir))?;
        let _lock = if verb == Verb::Status {
            None
        } else {
            Some(lock(&dir, &name)?)
        };
        match &driver {
            Driver::Process(p) => process::control(&name, p, &dir, verb, &redaction),
            Driver::Command(c) => command::control(&name, c, verb),
        }
    })
    .await?
}

impl ServiceManager {
    /// A service's driver and the directory its state lives in, for a fault journal
    /// that must be able to restart it without the manifest.
    pub fn driver(&self, name: &str) -> Option<(Driver, PathBuf)> {
        self.defs
            .get(name)
            .map(|d| (d.driver.clone(), self.dir.clone()))
    }

    /// The log runcap keeps of a supervised (`driver = "process"`) service's output,
    /// redacted as it is written; `None` for another driver or an unknown service.
    pub fn log_file(&self, name: &str) -> Option<PathBuf> {
        match &self.defs.get(name)?.driver {
            Driver::Process(_) => Some(process::log_path(&self.dir, name)),
            _ => None,
        }
    }
}

/// An exclusive lock on one service, released when dropped.
struct ServiceLock(std::fs::File);

fn lock(dir: &Path, name: &str) -> Result<ServiceLock, ServiceError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(source) => return Err(ServiceError::OpenLock { path, source }),
    };
    // SAFETY: flock on a descriptor we own; blocks until the other holder releases it.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(ServiceError::Lock {
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ServiceLock(file))
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Parses a signal name (`SIGTERM`, `TERM`, `sigint`).
pub(crate) fn parse_signal(name: &str) -> Option<(i32, String)> {
    let upper = name.trim().to_ascii_uppercase();
    let short = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match short {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    };
    Some((n, format!("SIG{short}")))
}

fn parse_duration_or(
    v: &mut Validator,
    path: &KeyPath,
    text: Option<&String>,
    default: Duration,
) -> Duration {
    text.and_then(|t| v.duration(path, t)).unwrap_or(default)
}
