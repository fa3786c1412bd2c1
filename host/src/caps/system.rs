//! `system`: read-only facts about the host a runbook checks before and after acting.
//!
//! | | |
//! |---|---|
//! | grants | reading what is listed: `[plugins.NAME.grants.system]` `memory = true`, `load = true`, `mounts = ["/", "/var"]`, `processes = ["nginx"]`, `ports = [443]`, `certificates = ["/etc/ssl/api.pem"]`, `pid_files = ["/run/api.pid"]`, `files = true`, `zombies = true` |
//! | manifest | the grant only |
//! | default | no grant: the interface cannot be imported; an unlisted fact, mount or process name is denied |
//! | enforced | read-only: nothing a plugin asks changes the host, so calls run in dry runs too; facts are read by `sysinfo`, `procfs`, `statvfs` and `x509-parser`, not by parsing command output |
//! | audit | one call record per read: what was read (memory, load, files, zombies, a mount, a process name, a pid file) and the decision |

use std::ffi::OsStr;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate,
    RefreshKind, System,
};
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::system as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator};

/// How long CPU use is sampled for (sysinfo needs at least 200 ms between two readings).
const CPU_SAMPLE: Duration = Duration::from_millis(250);

/// How much later than its pid file's last write a process may seem to have started and
/// still be the one that wrote it: start times are read in whole seconds (and from a boot
/// time in whole seconds), and the wall clock may be stepped a little.
const PID_REUSE_TOLERANCE: Duration = Duration::from_secs(2);

/// The most of a pid file read: a pid is a line of a few digits (PostgreSQL's
/// `postmaster.pid` has more lines after it, well under this).
const PID_FILE_MAX: u64 = 4096;

/// The `system` capability.
pub struct SystemFacts;

impl Capability for SystemFacts {
    const NAME: &'static str = "system";
    const INTERFACE: &'static str = "runcap:plugin/system";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/system.wit"));
    type Config = SystemGrantConfig;
    type Grant = SystemGrant;
    type Access = Arc<SystemGrant>;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.system]\nmemory = true   # and/or: load = true, mounts = [\"/\"], processes = [\"nginx\"]"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: SystemGrantConfig,
        _: &Declared,
    ) -> Option<SystemGrant> {
        SystemGrant::validate(v, at, raw)
    }

    fn diff(old: &SystemGrantConfig, new: &SystemGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &SystemGrant) -> Vec<String> {
        grant.describe()
    }

    fn prepare(grant: Arc<SystemGrant>, _: &Resources) -> Result<Arc<SystemGrant>, PrepareError> {
        Ok(grant)
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// `[plugins.NAME.grants.system]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemGrantConfig {
    /// `memory = true`: memory and swap.
    #[serde(default)]
    pub memory: bool,
    /// `load = true`: load averages, CPU count and use.
    #[serde(default)]
    pub load: bool,
    /// `mounts = ["/", "/var"]`: space and inodes of these file systems.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// `processes = ["nginx"]`: processes by exact name.
    #[serde(default)]
    pub processes: Vec<String>,
    /// `ports = [443]`: what listens on these TCP ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `certificates = ["/etc/ssl/api.pem"]`: when these certificate files expire.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// `pid_files = ["/run/api.pid"]`: the processes these pid files name.
    #[serde(default)]
    pub pid_files: Vec<String>,
    /// `files = true`: open file handles on the whole host.
    #[serde(default)]
    pub files: bool,
    /// `zombies = true`: processes on the whole host that exited unreaped.
    #[serde(default)]
    pub zombies: bool,
}

/// A validated system grant.
#[derive(Debug, Clone, Default)]
pub struct SystemGrant {
    pub memory: bool,
    pub load: bool,
    pub mounts: Vec<String>,
    pub processes: Vec<String>,
    pub ports: Vec<u16>,
    pub certificates: Vec<String>,
    pub pid_files: Vec<String>,
    pub files: bool,
    pub zombies: bool,
    /// `plugins.NAME.grants.system`, for denial messages.
    pub key: String,
}

impl SystemGrant {
    /// Checks a grant as written: mounts are absolute paths, process names are names.
    pub fn validate(v: &mut Validator, at: &KeyPath, raw: SystemGrantConfig) -> Option<Self> {
        let mut ok = true;
        for (i, m) in raw.mounts.iter().enumerate() {
            if !m.starts_with('/') {
                ok = false;
                v.error(
                    &at.key("mounts").index(i),
                    format!("`{m}` is not an absolute path"),
                    format!(
                        "name the mount point from the root, e.g. \"/{}\"",
                        m.trim_start_matches("./")
                    ),
                );
            }
        }
        for (i, c) in raw.certificates.iter().enumerate() {
            if !c.starts_with('/') {
                ok = false;
                v.error(
                    &at.key("certificates").index(i),
                    format!("`{c}` is not an absolute path"),
                    "name the certificate file from the root, e.g. \"/etc/ssl/certs/api.pem\"",
                );
            }
        }
        if raw.pid_files.iter().any(|p| !p.starts_with('/')) {
            // The fix to paste: every entry from the root, relative ones resolved against
            // the directory of the file that wrote them.
            let fixed: Vec<String> = raw
                .pid_files
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let path = if p.starts_with('/') {
                        std::path::PathBuf::from(p)
                    } else {
                        let at = at.key("pid_files").index(i);
                        let joined = v.resolve(&at, p);
                        std::path::absolute(&joined).unwrap_or(joined)
                    };
                    toml::Value::String(path.display().to_string()).to_string()
                })
                .collect();
            let line = format!("pid_files = [{}]", fixed.join(", "));
            for (i, p) in raw.pid_files.iter().enumerate() {
                if !p.starts_with('/') {
                    ok = false;
                    v.error(
                        &at.key("pid_files").index(i),
                        format!("`{p}` is not an absolute path"),
                        format!(
                            "name the pid file from the root; next to this manifest it is:\n{line}"
                        ),
                    );
                }
            }
        }
        for (i, p) in raw.processes.iter().enumerate() {
            if p.is_empty() || p.contains('/') || p.len() > 255 {
                ok = false;
                v.error(
                    &at.key("processes").index(i),
                    format!("`{p}` is not a process name"),
                    "write the executable's name as `ps -o comm` shows it, e.g. \"nginx\"",
                );
            }
        }
        ok.then(|| SystemGrant {
            memory: raw.memory,
            load: raw.load,
            mounts: raw.mounts,
            processes: raw.processes,
            ports: raw.ports,
            certificates: raw.certificates,
            pid_files: raw.pid_files,
            files: raw.files,
            zombies: raw.zombies,
            key: at.to_string(),
        })
    }

    /// One line per granted fact, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.memory {
            out.push("memory and swap".to_string());
        }
        if self.load {
            out.push("load and CPU use".to_string());
        }
        if self.files {
            out.push("open file handles on the host".to_string());
        }
        if self.zombies {
            out.push("zombie processes on the host (pid, name, parent)".to_string());
        }
        out.extend(self.mounts.iter().map(|m| format!("disk use of {m}")));
        out.extend(
            self.processes
                .iter()
                .map(|p| format!("processes named {p}")),
        );
        out.extend(
            self.ports
                .iter()
                .map(|p| format!("what listens on TCP port {p}")),
        );
        out.extend(
            self.certificates
                .iter()
                .map(|c| format!("the expiry of certificate {c}")),
        );
        out.extend(
            self.pid_files
                .iter()
                .map(|p| format!("the process pid file {p} names, and its open files")),
        );
        out
    }
}

/// Compares two system grants as written: each fact, mount or process name not granted
/// before widens.
pub fn diff(old: &SystemGrantConfig, new: &SystemGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for (key, was, is, what) in [
        ("memory", old.memory, new.memory, "memory and swap"),
        ("load", old.load, new.load, "load and CPU use"),
        (
            "files",
            old.files,
            new.files,
            "open file handles on the host",
        ),
        (
            "zombies",
            old.zombies,
            new.zombies,
            "zombie processes on the host",
        ),
    ] {
        if is && !was {
            out.push(Change::new(
                KeyPath::root().key(key),
                ChangeKind::Added,
                format!("may read {what}"),
            ));
        } else if was && !is {
            out.push(Change::new(
                KeyPath::root().key(key),
                ChangeKind::Removed,
                format!("may no longer read {what}"),
            ));
        }
    }
    let ports =
        |g: &SystemGrantConfig| -> Vec<String> { g.ports.iter().map(u16::to_string).collect() };
    for (key, was, is, what) in [
        ("mounts", &old.mounts, &new.mounts, "the disk use of"),
        (
            "processes",
            &old.processes,
            &new.processes,
            "processes named",
        ),
        (
            "ports",
            &ports(old),
            &ports(new),
            "what listens on TCP port",
        ),
        (
            "certificates",
            &old.certificates,
            &new.certificates,
            "the expiry of certificate",
        ),
        (
            "pid_files",
            &old.pid_files,
            &new.pid_files,
            "the process named by pid file",
        ),
    ] {
        for (i, entry) in is.iter().enumerate() {
            if !was.contains(entry) {
                out.push(Change::new(
                    KeyPath::root().key(key).index(i),
                    ChangeKind::Added,
                    format!("may read {what} `{entry}`"),
                ));
            }
        }
        for entry in was.iter().filter(|e| !is.contains(e)) {
            out.push(Change::new(
                KeyPath::root().key(key),
                ChangeKind::Removed,
                format!("may no longer read {what} `{entry}`"),
            ));
        }
    }
    out
}

/// Why a fact could not be read; the plugin gets the text as `unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    System(#[from] sysinfo::Error),
    #[error("cannot read {mount}: {source}")]
    Mount {
        mount: String,
        source: std::io::Error,
    },
    #[error("the read did not finish: {0}")]
    Abandoned(#[from] tokio::task::JoinError),
    #[error("cannot read the TCP sockets: {0}")]
    Sockets(#[from] procfs::ProcError),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate: {reason}")]
    Certificate { path: String, reason: String },
    #[error("{path} {reason}")]
    PidFile { path: String, reason: &'static str },
    #[error("cannot read /proc/sys/fs/file-nr: {0}")]
    FileHandles(procfs::ProcError),
    #[error("cannot list the processes in /proc: {0}")]
    Processes(procfs::ProcError),
}

/// Space and inodes of the file system holding `mount`.
fn statvfs(mount: &str) -> std::io::Result<wit::DiskUse> {
    let path = std::ffi::CString::new(mount)?;
    // SAFETY: `path` is a NUL-terminated string and `st` a zeroed struct statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(wit::DiskUse {
        mount: mount.to_string(),
        total: st.f_blocks as u64 * unit,
        available: st.f_bavail as u64 * unit,
        inodes_total: st.f_files as u64,
        inodes_free: st.f_ffree as u64,
    })
}

/// Runs a blocking read of host facts off the action's thread.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(read).await?
}

impl CapCtx<'_, SystemFacts> {
    /// Nothing when the grant allows `allowed`, else the denial the plugin gets (recorded),
    /// naming the grant's `field` to extend.
    fn check(
        &mut self,
        operation: &str,
        target: &str,
        allowed: impl Fn(&SystemGrant) -> bool,
        field: &str,
    ) -> Result<(), wit::Error> {
        let Some(grant) = self.access else {
            let reason = self.not_granted();
            return Err(wit::Error::Denied(self.deny(operation, target, reason)));
        };
        if allowed(grant) {
            return Ok(());
        }
        let reason = if matches!(field, "memory" | "load" | "files" | "zombies") {
            format!(
                "{target} is not granted; add {field} = true to {}",
                grant.key
            )
        } else if field == "ports" {
            format!(
                "port {target} is not granted; add {target} to {}.ports",
                grant.key
            )
        } else {
            format!(
                "{target} is not granted; add \"{target}\" to {}.{field}",
                grant.key
            )
        };
        Err(wit::Error::Denied(self.deny(operation, target, reason)))
    }

    /// Records an allowed read and passes its result on.
    fn answer<T>(
        &mut self,
        operation: &str,
        target: &str,
        read: Result<T, ReadError>,
    ) -> Result<T, wit::Error> {
        let record = CallRecord::allowed(SystemFacts::NAME, operation, target).read_only();
        match read {
            Ok(v) => {
                self.record(record);
                Ok(v)
            }
            Err(e) => {
                self.record(record.with_result(format!("unavailable: {e}")));
                Err(wit::Error::Unavailable(e.to_string()))
            }
        }
    }
}

/// A sysinfo reading of what `refresh` names.
fn system(refresh: RefreshKind) -> Result<System, ReadError> {
    Ok(System::new_with_specifics(refresh)?)
}

impl wit::Host for CapCtx<'_, SystemFacts> {
    async fn memory(&mut self) -> wasmtime::Result<Result<wit::MemoryInfo, wit::Error>> {
        crate::taped!(self, "system.memory", (), self.memory_live())
    }

    async fn load(&mut self) -> wasmtime::Result<Result<wit::LoadInfo, wit::Error>> {
        crate::taped!(self, "system.load", (), self.load_live())
    }

    async fn disk(&mut self, mount: String) -> wasmtime::Result<Result<wit::DiskUse, wit::Error>> {
        crate::taped!(self, "system.disk", (mount), self.disk_live(mount))
    }

    async fn processes(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<wit::ProcessInfo>, wit::Error>> {
        crate::taped!(self, "system.processes", (name), self.processes_live(name))
    }

    async fn process_details(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<wit::ProcessDetail>, wit::Error>> {
        crate::taped!(
            self,
            "system.process_details",
            (name),
            self.process_details_live(name)
        )
    }

    async fn pid_file(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Option<wit::ProcessDetail>, wit::Error>> {
        crate::taped!(self, "system.pid_file", (path), self.pid_file_live(path))
    }

    async fn pid_file_status(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::PidFileState, wit::Error>> {
        crate::taped!(
            self,
            "system.pid_file_status",
            (path),
            self.pid_file_status_live(path)
        )
    }

    async fn zombies(&mut self) -> wasmtime::Result<Result<Vec<wit::ZombieInfo>, wit::Error>> {
        crate::taped!(self, "system.zombies", (), self.zombies_live())
    }

    async fn files(&mut self) -> wasmtime::Result<Result<wit::FileHandles, wit::Error>> {
        crate::taped!(self, "system.files", (), self.files_live())
    }

    async fn port(
        &mut self,
        port: u16,
    ) -> wasmtime::Result<Result<Option<wit::PortListener>, wit::Error>> {
        crate::taped!(self, "system.port", (port), self.port_live(port))
    }

    async fn certificate(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::CertificateInfo, wit::Error>> {
        crate::taped!(
            self,
            "system.certificate",
            (path),
            self.certificate_live(path)
        )
    }
}

/// The process listening on TCP `port` (IPv4 or IPv6), found by matching the listening
/// socket's inode among processes' open descriptors.
fn port_listener(port: u16) -> Result<Option<wit::PortListener>, ReadError> {
    use procfs::net::TcpState;
    let sockets = procfs::net::tcp()?
        .into_iter()
        .chain(procfs::net::tcp6().unwrap_or_default());
    let Some(inode) = sockets
        .filter(|s| s.state == TcpState::Listen && s.local_address.port() == port)
        .map(|s| s.inode)
        .next()
    else {
        return Ok(None);
    };
    let owner = procfs::process::all_processes()?
        .filter_map(Result::ok)
        .find(|p| {
            p.fd().is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(
                    |fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode),
                )
            })
        });
    Ok(Some(wit::PortListener {
        port,
        pid: owner.as_ref().map(|p| p.pid as u32),
        name: owner.and_then(|p| p.stat().ok()).map(|s| s.comm),
    }))
}

/// The first certificate of the PEM file at `path`, and the days it has left at `now`
/// (Unix seconds).
fn certificate_info(path: &str, now: i64) -> Result<wit::CertificateInfo, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::File {
        path: path.to_string(),
        source,
    })?;
    let bad = |reason: String| ReadError::Certificate {
        path: path.to_string(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp();
    Ok(wit::CertificateInfo {
        path: path.to_string(),
        subject: cert.subject().to_string(),
        not_after,
        days_left: (not_after - now).div_euclid(86_400),
    })
}

/// What a pid file says: a pid, written at a time.
struct PidFile {
    pid: u32,
    /// When the file was last written.
    written: SystemTime,
}

impl PidFile {
    /// Why `p`, the process with this file's pid, is not the one that wrote the file: it
    /// started after the file was last written, so its pid was reused. `now` is when
    /// `p`'s uptime was read.
    fn reused_by(&self, p: &wit::ProcessDetail, path: &str, now: SystemTime) -> Option<String> {
        let started = now.checked_sub(Duration::from_secs(p.uptime_seconds))?;
        let late = started.duration_since(self.written).ok()?;
        (late > PID_REUSE_TOLERANCE).then(|| {
            format!(
                "pid {} is now {}, started {}s after {path} was last written: the pid was reused",
                p.pid,
                p.name,
                late.as_secs()
            )
        })
    }
}

/// The pid a pid file holds (its first line, a positive decimal number) and when the
/// file was last written. At most [`PID_FILE_MAX`] bytes are read, and only from a
/// regular file (a FIFO would block).
fn read_pid_file(path: &str) -> Result<PidFile, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ReadError::File {
        path: path.to_string(),
        source,
    };
    let bad = |reason| ReadError::PidFile {
        path: path.to_string(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file, so not a pid file"));
    }
    let written = meta.modified().map_err(io)?;
    let mut bytes = Vec::new();
    file.take(PID_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > PID_FILE_MAX {
        return Err(bad("holds more than 4096 bytes, so not a pid file"));
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = std::str::from_utf8(first).unwrap_or("x").trim();
    if text.is_empty() && bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("is empty: it holds no pid"));
    }
    match text.parse::<u32>() {
        Ok(pid) if pid > 0 && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(PidFile { pid, written })
        }
        _ => Err(bad(
            "does not hold a pid (its first line is not a process id)",
        )),
    }
}

/// Which processes a reading is of.
enum Which {
    /// Every process with this exact name.
    Name(String),
    /// The one with this pid, if it runs.
    Pid(u32),
}

/// The processes `which` names, with CPU use over [`CPU_SAMPLE`] and their open files,
/// sorted by pid. A zombie or dead process is not running.
async fn process_details(which: Which) -> Result<Vec<wit::ProcessDetail>, ReadError> {
    let what = ProcessRefreshKind::nothing().with_cpu().with_memory();
    let pids: Vec<Pid> = match &which {
        Which::Pid(pid) => vec![Pid::from_u32(*pid)],
        Which::Name(_) => Vec::new(),
    };
    let refresh = move |sys: &mut System, pids: &[Pid]| {
        let to_update = if pids.is_empty() {
            ProcessesToUpdate::All
        } else {
            ProcessesToUpdate::Some(pids)
        };
        sys.refresh_processes_specifics(to_update, true, what);
    };
    let first_pids = pids.clone();
    let mut sys = blocking(move || {
        let mut sys = system(RefreshKind::nothing())?;
        refresh(&mut sys, &first_pids);
        Ok(sys)
    })
    .await?;
    // CPU use is the difference between two readings.
    tokio::time::sleep(CPU_SAMPLE).await;
    blocking(move || {
        refresh(&mut sys, &pids);
        let count = |n: Option<usize>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let detail = |p: &sysinfo::Process| wit::ProcessDetail {
            pid: p.pid().as_u32(),
            name: p.name().to_string_lossy().into_owned(),
            rss: p.memory(),
            cpu_percent: p.cpu_usage(),
            uptime_seconds: p.run_time(),
            open_files: count(p.open_files()),
            open_files_limit: count(p.open_files_limit()),
        };
        let running = |p: &&sysinfo::Process| {
            !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
        };
        let mut found: Vec<wit::ProcessDetail> = match &which {
            Which::Name(name) => sys
                .processes_by_exact_name(OsStr::new(name))
                .filter(running)
                .map(detail)
                .collect(),
            Which::Pid(pid) => sys
                .process(Pid::from_u32(*pid))
                .filter(running)
                .map(detail)
                .into_iter()
                .collect(),
        };
        found.sort_by_key(|p| p.pid);
        Ok(found)
    })
    .await
}

/// Open file handles on the whole host.
fn file_handles() -> Result<wit::FileHandles, ReadError> {
    let nr = procfs::sys::fs::file_nr().map_err(ReadError::FileHandles)?;
    Ok(wit::FileHandles {
        open: nr.allocated.saturating_sub(nr.free),
        max: nr.max,
    })
}

/// Every zombie on the host, sorted by pid: a process whose `/proc/PID/stat` state is
/// `Z`. One that vanishes while the list is read is left out.
fn zombies() -> Result<Vec<wit::ZombieInfo>, ReadError> {
    let mut found: Vec<wit::ZombieInfo> = procfs::process::all_processes()
        .map_err(ReadError::Processes)?
        .filter_map(|p| p.ok()?.stat().ok())
        .filter(|stat| stat.state == 'Z')
        .map(|stat| wit::ZombieInfo {
            pid: stat.pid.unsigned_abs(),
            name: stat.comm,
            parent_pid: u32::try_from(stat.ppid).ok().filter(|p| *p > 0),
        })
        .collect();
    found.sort_by_key(|z| z.pid);
    Ok(found)
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, SystemFacts> {
    async fn memory_live(&mut self) -> wasmtime::Result<Result<wit::MemoryInfo, wit::Error>> {
        if let Err(e) = self.check("memory", "memory", |g| g.memory, "memory") {
            return Ok(Err(e));
        }
        let read = blocking(|| {
            let sys = system(RefreshKind::nothing().with_memory(MemoryRefreshKind::everything()))?;
            Ok(wit::MemoryInfo {
                total: sys.total_memory(),
                available: sys.available_memory(),
                swap_total: sys.total_swap(),
                swap_free: sys.free_swap(),
            })
        })
        .await;
        Ok(self.answer("memory", "memory", read))
    }

    async fn load_live(&mut self) -> wasmtime::Result<Result<wit::LoadInfo, wit::Error>> {
        if let Err(e) = self.check("load", "load", |g| g.load, "load") {
            return Ok(Err(e));
        }
        let cpu = RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_usage());
        let read = match blocking(move || system(cpu)).await {
            Ok(mut sys) => {
                // CPU use is the difference between two readings.
                tokio::time::sleep(CPU_SAMPLE).await;
                blocking(move || {
                    sys.refresh_cpu_usage();
                    let avg = System::load_average()?;
                    Ok(wit::LoadInfo {
                        one: avg.one,
                        five: avg.five,
                        fifteen: avg.fifteen,
                        cpus: sys.cpus().len() as u32,
                        cpu_percent: sys.global_cpu_usage(),
                    })
                })
                .await
            }
            Err(e) => Err(e),
        };
        Ok(self.answer("load", "load", read))
    }

    async fn disk_live(
        &mut self,
        mount: String,
    ) -> wasmtime::Result<Result<wit::DiskUse, wit::Error>> {
        if let Err(e) = self.check("disk", &mount, |g| g.mounts.contains(&mount), "mounts") {
            return Ok(Err(e));
        }
        let at = mount.clone();
        let read =
            blocking(move || statvfs(&at).map_err(|source| ReadError::Mount { mount: at, source }))
                .await;
        Ok(self.answer("disk", &mount, read))
    }

    async fn processes_live(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<wit::ProcessInfo>, wit::Error>> {
        if let Err(e) = self.check(
            "processes",
            &name,
            |g| g.processes.contains(&name),
            "processes",
        ) {
            return Ok(Err(e));
        }
        let read = process_details(Which::Name(name.clone()))
            .await
            .map(|found| {
                found
                    .into_iter()
                    .map(|p| wit::ProcessInfo {
                        pid: p.pid,
                        name: p.name,
                        rss: p.rss,
                        cpu_percent: p.cpu_percent,
                        uptime_seconds: p.uptime_seconds,
                    })
                    .collect()
            });
        Ok(self.answer("processes", &name, read))
    }

    async fn process_details_live(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<wit::ProcessDetail>, wit::Error>> {
        if let Err(e) = self.check(
            "process-details",
            &name,
            |g| g.processes.contains(&name),
            "processes",
        ) {
            return Ok(Err(e));
        }
        let read = process_details(Which::Name(name.clone())).await;
        Ok(self.answer("process-details", &name, read))
    }

    async fn pid_file_live(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Option<wit::ProcessDetail>, wit::Error>> {
        Ok(self
            .pid_file_read("pid-file", &path)
            .await
            .map(|s| s.process))
    }

    async fn pid_file_status_live(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::PidFileState, wit::Error>> {
        Ok(self.pid_file_read("pid-file-status", &path).await)
    }

    /// What a granted pid file names: the process, or why none runs. A process that
    /// started after the file was last written reused the pid, and is not the one.
    async fn pid_file_read(
        &mut self,
        operation: &str,
        path: &str,
    ) -> Result<wit::PidFileState, wit::Error> {
        self.check(
            operation,
            path,
            |g| g.pid_files.iter().any(|p| p == path),
            "pid_files",
        )?;
        let at = path.to_string();
        let file = match blocking(move || read_pid_file(&at)).await {
            Ok(file) => file,
            Err(e) => return self.answer(operation, path, Err(e)),
        };
        let found = match process_details(Which::Pid(file.pid)).await {
            Ok(found) => found.into_iter().next(),
            Err(e) => return self.answer(operation, path, Err(e)),
        };
        let state = |process, not_running| wit::PidFileState {
            pid: file.pid,
            process,
            not_running,
        };
        match found {
            Some(p) => match file.reused_by(&p, path, SystemTime::now()) {
                Some(reason) => {
                    tracing::info!(pid_file = %path, "not running: {reason}");
                    self.record(
                        CallRecord::allowed(SystemFacts::NAME, operation, path)
                            .read_only()
                            .with_result(format!("not running: {reason}")),
                    );
                    Ok(state(None, Some(reason)))
                }
                None => self.answer(operation, path, Ok(state(Some(p), None))),
            },
            None => {
                let reason = format!("no process has pid {}", file.pid);
                self.answer(operation, path, Ok(state(None, Some(reason))))
            }
        }
    }

    async fn zombies_live(&mut self) -> wasmtime::Result<Result<Vec<wit::ZombieInfo>, wit::Error>> {
        if let Err(e) = self.check("zombies", "zombies", |g| g.zombies, "zombies") {
            return Ok(Err(e));
        }
        let read = blocking(zombies).await;
        Ok(self.answer("zombies", "zombies", read))
    }

    async fn files_live(&mut self) -> wasmtime::Result<Result<wit::FileHandles, wit::Error>> {
        if let Err(e) = self.check("files", "files", |g| g.files, "files") {
            return Ok(Err(e));
        }
        let read = blocking(file_handles).await;
        Ok(self.answer("files", "files", read))
    }

    async fn port_live(
        &mut self,
        port: u16,
    ) -> wasmtime::Result<Result<Option<wit::PortListener>, wit::Error>> {
        let target = port.to_string();
        if let Err(e) = self.check("port", &target, |g| g.ports.contains(&port), "ports") {
            return Ok(Err(e));
        }
        let read = blocking(move || port_listener(port)).await;
        Ok(self.answer("port", &target, read))
    }

    async fn certificate_live(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::CertificateInfo, wit::Error>> {
        if let Err(e) = self.check(
            "certificate",
            &path,
            |g| g.certificates.contains(&path),
            "certificates",
        ) {
            return Ok(Err(e));
        }
        let at = path.clone();
        let now = crate::caps::core::now_ms() as i64 / 1000;
        let read = blocking(move || certificate_info(&at, now)).await;
        Ok(self.answer("certificate", &path, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing::{self, Decl};

    /// An action of a plugin granted `g`, recording its calls.
    fn recording(g: Arc<SystemGrant>, dry_run: bool) -> testing::Action {
        testing::recorded(
            testing::prepared::<SystemFacts>(g, &Resources::none()),
            dry_run,
            1024,
        )
    }

    fn grant(toml: &str) -> Result<Arc<SystemGrant>, String> {
        let (_d, dir) = testing::dir();
        testing::grant::<SystemFacts>(toml, &dir, &Decl::default()).map_err(|e| e.join("\n"))
    }

    #[test]
    fn a_grant_names_absolute_mounts_and_process_names_and_the_hint_validates() {
        let errors = grant(
            "[plugins.p.grants.system]\nmounts = [\"var\"]\nprocesses = [\"/usr/bin/nginx\"]\n",
        )
        .unwrap_err();
        assert!(errors.contains("`var` is not an absolute path"), "{errors}");
        assert!(errors.contains("e.g. \"/var\""), "{errors}");
        assert!(
            errors.contains("`/usr/bin/nginx` is not a process name"),
            "{errors}"
        );
        let errors = grant("[plugins.p.grants.system]\ndisks = [\"/\"]\n").unwrap_err();
        assert!(errors.contains("unknown field `disks`"), "{errors}");
        let g = grant(&SystemFacts::hint("p")).unwrap();
        assert!(g.memory && !g.load && g.mounts.is_empty());
    }

    #[tokio::test]
    async fn granted_facts_are_read_and_recorded_and_the_rest_denied() {
        let g = grant(
            "[plugins.p.grants.system]\nmemory = true\nmounts = [\"/\"]\nprocesses = [\"no-such-process-name\"]\n",
        )
        .unwrap();
        let mut action = recording(g, true);
        let mut ctx = action.state.view::<SystemFacts>();
        let memory = wit::Host::memory(&mut ctx).await.unwrap().unwrap();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(memory.total, total_kib * 1024);
        assert!(memory.available <= memory.total);
        let root = wit::Host::disk(&mut ctx, "/".into())
            .await
            .unwrap()
            .unwrap();
        assert!(root.total > 0 && root.available <= root.total, "{root:?}");
        let none = wit::Host::processes(&mut ctx, "no-such-process-name".into())
            .await
            .unwrap()
            .unwrap();
        assert!(none.is_empty());
        let denied = wit::Host::load(&mut ctx).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add load = true to plugins.p.grants.system")),
            "{denied:?}"
        );
        let denied = wit::Host::disk(&mut ctx, "/tmp".into()).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add \"/tmp\" to plugins.p.grants.system.mounts")),
            "{denied:?}"
        );
        assert_eq!(
            action.audit(),
            vec![
                ("system".into(), "allowed".into(), "memory".into()),
                ("system".into(), "allowed".into(), "/".into()),
                (
                    "system".into(),
                    "allowed".into(),
                    "no-such-process-name".into()
                ),
                ("system".into(), "denied".into(), "load".into()),
                ("system".into(), "denied".into(), "/tmp".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_running_process_is_found_by_name_with_its_memory() {
        let child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let g = grant("[plugins.p.grants.system]\nprocesses = [\"sleep\"]\n").unwrap();
        let mut action = recording(g, false);
        let mut ctx = action.state.view::<SystemFacts>();
        let found = wit::Host::processes(&mut ctx, "sleep".into())
            .await
            .unwrap()
            .unwrap();
        let ours = found
            .iter()
            .find(|p| p.pid == child.0.id())
            .expect("our sleep is listed");
        assert_eq!(ours.name, "sleep");
        assert!(ours.rss > 0, "{ours:?}");
    }

    /// A child that has exited and that nobody reaps until this is dropped: a zombie.
    struct Unreaped(std::process::Child);

    impl Unreaped {
        /// Starts `true` and waits (polling, with a deadline) until it is a zombie.
        fn start() -> Self {
            let child = std::process::Command::new("true").spawn().unwrap();
            let guard = Unreaped(child);
            let stat = format!("/proc/{}/stat", guard.0.id());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            // The state follows the parenthesised name: "PID (true) Z ...".
            while !std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            }) {
                assert!(std::time::Instant::now() < deadline, "`true` did not exit");
                std::thread::yield_now();
            }
            guard
        }
    }

    impl Drop for Unreaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn an_unreaped_child_is_listed_as_a_zombie_with_its_parent_until_reaped() {
        let zombie = Unreaped::start();
        let pid = zombie.0.id();
        let g =
            grant("[plugins.p.grants.system]\nzombies = true\nprocesses = [\"true\"]\n").unwrap();
        assert!(
            g.describe()
                .contains(&"zombie processes on the host (pid, name, parent)".to_string())
        );
        let mut action = recording(g, false);
        let mut ctx = action.state.view::<SystemFacts>();
        let found = wit::Host::zombies(&mut ctx).await.unwrap().unwrap();
        let ours = found
            .iter()
            .find(|z| z.pid == pid)
            .expect("our child is a zombie");
        assert_eq!(ours.name, "true");
        assert_eq!(ours.parent_pid, Some(std::process::id()));
        assert!(found.windows(2).all(|w| w[0].pid < w[1].pid), "{found:?}");
        let running = wit::Host::processes(&mut ctx, "true".into())
            .await
            .unwrap()
            .unwrap();
        assert!(
            running.iter().all(|p| p.pid != pid),
            "a zombie is not running: {running:?}"
        );
        drop(zombie);
        let found = wit::Host::zombies(&mut ctx).await.unwrap().unwrap();
        assert!(found.iter().all(|z| z.pid != pid), "reaped: {found:?}");
        assert_eq!(
            action.audit()[0],
            ("system".into(), "allowed".into(), "zombies".into())
        );

        let g = grant("[plugins.p.grants.system]\nload = true\n").unwrap();
        let mut action = recording(g, false);
        let mut ctx = action.state.view::<SystemFacts>();
        let denied = wit::Host::zombies(&mut ctx).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add zombies = true to plugins.p.grants.system")),
            "{denied:?}"
        );
        let old = SystemGrantConfig::default();
        let new = SystemGrantConfig {
            zombies: true,
            ..Default::default()
        };
        let changes = diff(&old, &new);
        assert_eq!(changes[0].kind, ChangeKind::Added);
        assert_eq!(changes[0].what, "may read zombie processes on the host");
    }

    /// A child that sleeps until this is dropped, then is killed and reaped.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn a_pid_file_older_than_its_process_names_no_process_and_says_why() {
        let (_d, dir) = testing::dir();
        let child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid_file = dir.join("api.pid");
        std::fs::write(&pid_file, format!("{}\n", child.0.id())).unwrap();
        let path = pid_file.display().to_string();
        let g = grant(&format!(
            "[plugins.p.grants.system]\npid_files = [\"{path}\"]\n"
        ))
        .unwrap();
        let mut action = recording(g, false);
        let mut ctx = action.state.view::<SystemFacts>();
        let set_written = |when: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(&pid_file)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };

        // Written an hour before the sleep started: another process wrote it, and the
        // sleep was given the same pid later.
        set_written(SystemTime::now() - Duration::from_secs(3600));
        let reused = wit::Host::pid_file(&mut ctx, path.clone()).await.unwrap();
        assert!(matches!(reused, Ok(None)), "{reused:?}");
        let calls = action.calls();
        let result = calls[0]["result"].as_str().unwrap_or_default().to_string();
        assert!(
            result.starts_with(&format!(
                "not running: pid {} is now sleep, started ",
                child.0.id()
            )) && result.ends_with(&format!(
                "after {path} was last written: the pid was reused"
            )),
            "{result}"
        );

        let mut ctx = action.state.view::<SystemFacts>();
        let state = wit::Host::pid_file_status(&mut ctx, path.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.pid, child.0.id());
        assert!(state.process.is_none(), "{state:?}");
        assert!(
            state
                .not_running
                .as_deref()
                .is_some_and(|r| r.ends_with("the pid was reused")),
            "{state:?}"
        );

        // Written after the sleep started, as a daemon writes its own: it is running.
        set_written(SystemTime::now());
        let live = wit::Host::pid_file(&mut ctx, path.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.map(|p| p.pid), Some(child.0.id()));
        let state = wit::Host::pid_file_status(&mut ctx, path.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.process.map(|p| p.pid), Some(child.0.id()));
        assert_eq!(state.not_running, None);
        drop(child);
        let state = wit::Host::pid_file_status(&mut ctx, path.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.not_running,
            Some(format!("no process has pid {}", state.pid))
        );
    }

    #[test]
    fn a_process_started_within_the_tolerance_of_the_write_is_not_a_reuse() {
        let written = SystemTime::now() - Duration::from_secs(100);
        let file = PidFile { pid: 7, written };
        let at = |uptime: u64| wit::ProcessDetail {
            pid: 7,
            name: "api".into(),
            rss: 0,
            cpu_percent: 0.0,
            uptime_seconds: uptime,
            open_files: None,
            open_files_limit: None,
        };
        let now = written + Duration::from_secs(100);
        assert!(
            file.reused_by(&at(200), "/run/api.pid", now).is_none(),
            "started before"
        );
        assert!(
            file.reused_by(&at(99), "/run/api.pid", now).is_none(),
            "1s after"
        );
        assert!(
            file.reused_by(&at(98), "/run/api.pid", now).is_none(),
            "2s after"
        );
        assert_eq!(
            file.reused_by(&at(90), "/run/api.pid", now).as_deref(),
            Some(
                "pid 7 is now api, started 10s after /run/api.pid was last written: the pid was reused"
            )
        );
    }

    #[tokio::test]
    async fn without_a_grant_every_read_is_denied_with_the_hint() {
        let mut action = testing::recorded(Default::default(), false, 1024);
        let mut ctx = action.state.view::<SystemFacts>();
        let denied = wit::Host::memory(&mut ctx).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("[plugins.") && m.contains(".grants.system]")),
            "{denied:?}"
        );
    }

    #[test]
    fn a_new_fact_mount_or_name_widens_and_a_dropped_one_narrows() {
        let old = SystemGrantConfig {
            memory: true,
            mounts: vec!["/".into()],
            ..Default::default()
        };
        let new = SystemGrantConfig {
            load: true,
            mounts: vec!["/".into(), "/var".into()],
            processes: vec!["nginx".into()],
            ..Default::default()
        };
        let changes: Vec<(String, ChangeKind)> = diff(&old, &new)
            .into_iter()
            .map(|c| (c.path.to_string(), c.kind))
            .collect();
        assert_eq!(
            changes,
            vec![
                ("memory".to_string(), ChangeKind::Removed),
                ("load".to_string(), ChangeKind::Added),
                ("mounts[1]".to_string(), ChangeKind::Added),
                ("processes[0]".to_string(), ChangeKind::Added),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[tokio::test]
    async fn a_granted_port_names_its_listener_and_a_certificate_its_days_left() {
        let (_d, dir) = testing::dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);
        let mut params = rcgen::CertificateParams::new(vec!["api.test".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join("api.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        let pem = pem.display().to_string();
        let manifest = format!(
            "[plugins.p.grants.system]\nports = [{port}, {free_port}]\ncertificates = [\"{pem}\"]\n"
        );
        let grant = testing::grant::<SystemFacts>(&manifest, &dir, &Decl::default()).unwrap();
        let env = testing::resources(&Decl::default(), &dir, None);
        let mut action =
            testing::recorded(testing::prepared::<SystemFacts>(grant, &env), false, 1024);
        let mut ctx = action.state.view::<SystemFacts>();
        let held = wit::Host::port(&mut ctx, port)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(held.pid, Some(std::process::id()));
        assert!(held.name.is_some());
        assert!(
            wit::Host::port(&mut ctx, free_port)
                .await
                .unwrap()
                .unwrap()
                .is_none()
        );
        let denied = wit::Host::port(&mut ctx, 1).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add 1 to plugins.p.grants.system.ports")),
            "{denied:?}"
        );
        let c = wit::Host::certificate(&mut ctx, pem.clone())
            .await
            .unwrap()
            .unwrap();
        assert!(c.days_left > 365 * 70, "{c:?}");
        assert!(c.subject.contains("CN=rcgen"), "{c:?}");
        let not_pem = dir.join("runcap.toml").display().to_string();
        let denied = wit::Host::certificate(&mut ctx, not_pem).await.unwrap();
        assert!(matches!(denied, Err(wit::Error::Denied(_))));
        drop(listener);
        let decisions: Vec<String> = action.audit().into_iter().map(|(_, d, _)| d).collect();
        assert_eq!(
            decisions,
            ["allowed", "allowed", "denied", "allowed", "denied"]
        );
    }

    #[test]
    fn a_relative_pid_file_is_refused_with_the_line_to_paste() {
        let (_d, dir) = testing::dir();
        let manifest =
            "[plugins.p.grants.system]\npid_files = [\"/run/db.pid\", \"run/api.pid\"]\n";
        let errors = testing::grant::<SystemFacts>(manifest, &dir, &Decl::default())
            .unwrap_err()
            .join("\n");
        assert!(
            errors.contains(
                "plugins.p.grants.system.pid_files[1]: `run/api.pid` is not an absolute path"
            ),
            "{errors}"
        );
        assert!(errors.contains("runcap.toml:2:"), "{errors}");
        let fixed = format!(
            "pid_files = [\"/run/db.pid\", \"{}\"]",
            dir.join("run/api.pid").display()
        );
        assert!(errors.contains(&fixed), "{errors}");
        let pasted = format!("[plugins.p.grants.system]\n{fixed}\n");
        let g = testing::grant::<SystemFacts>(&pasted, &dir, &Decl::default()).unwrap();
        assert_eq!(
            g.pid_files[1],
            dir.join("run/api.pid").display().to_string()
        );
        assert!(
            g.describe()
                .contains(&"the process pid file /run/db.pid names, and its open files".into())
        );
    }

    #[tokio::test]
    async fn a_pid_file_names_a_live_process_until_it_is_killed() {
        let (_d, dir) = testing::dir();
        let mut child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid_file = dir.join("api.pid");
        std::fs::write(&pid_file, format!("{}\n", child.0.id())).unwrap();
        let [live, empty, junk, missing] = ["api.pid", "empty.pid", "junk.pid", "missing.pid"]
            .map(|f| dir.join(f).display().to_string());
        std::fs::write(&empty, "\n").unwrap();
        std::fs::write(&junk, "api running\n").unwrap();
        let manifest = format!(
            "[plugins.p.grants.system]\npid_files = [\"{live}\", \"{empty}\", \"{junk}\", \"{missing}\"]\n"
        );
        let g = testing::grant::<SystemFacts>(&manifest, &dir, &Decl::default()).unwrap();
        let mut action = recording(g, true);
        let mut ctx = action.state.view::<SystemFacts>();
        let found = wit::Host::pid_file(&mut ctx, live.clone())
            .await
            .unwrap()
            .unwrap()
            .expect("the sleep runs");
        assert_eq!(found.pid, child.0.id());
        assert_eq!(found.name, "sleep");
        assert!(found.rss > 0, "{found:?}");
        assert!(found.open_files.is_some_and(|n| n >= 1), "{found:?}");
        assert!(found.open_files_limit.is_some_and(|n| n > 0), "{found:?}");
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let gone = wit::Host::pid_file(&mut ctx, live.clone()).await.unwrap();
        assert!(matches!(gone, Ok(None)), "{gone:?}");
        for (path, says) in [
            (&empty, "is empty"),
            (&junk, "does not hold a pid"),
            (&missing, "cannot read"),
        ] {
            let e = wit::Host::pid_file(&mut ctx, path.clone()).await.unwrap();
            assert!(
                matches!(&e, Err(wit::Error::Unavailable(m)) if m.contains(says) && m.contains(path.as_str())),
                "{e:?}"
            );
        }
        let other = dir.join("other.pid").display().to_string();
        let denied = wit::Host::pid_file(&mut ctx, other.clone()).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains(&format!("add \"{other}\" to plugins.p.grants.system.pid_files"))),
            "{denied:?}"
        );
        let audit: Vec<(String, String)> =
            action.audit().into_iter().map(|(_, d, t)| (d, t)).collect();
        assert_eq!(
            audit,
            vec![
                ("allowed".into(), live.clone()),
                ("allowed".into(), live),
                ("allowed".into(), empty),
                ("allowed".into(), junk),
                ("allowed".into(), missing),
                ("denied".into(), other),
            ]
        );
    }

    /// Open descriptors of this process, and its soft open-files limit.
    fn own_open_files() -> (u32, u32) {
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u32;
        // SAFETY: getrlimit fills the zeroed struct it is given.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        (open, limit.rlim_cur as u32)
    }

    #[tokio::test]
    async fn the_test_process_own_open_files_and_the_host_file_handles_are_read() {
        let (_d, dir) = testing::dir();
        let held: Vec<std::fs::File> = (0..32)
            .map(|i| std::fs::File::create(dir.join(format!("held-{i}"))).unwrap())
            .collect();
        let pid_file = dir.join("self.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let pid_file = pid_file.display().to_string();
        let manifest =
            format!("[plugins.p.grants.system]\nfiles = true\npid_files = [\"{pid_file}\"]\n");
        let g = testing::grant::<SystemFacts>(&manifest, &dir, &Decl::default()).unwrap();
        let mut action = recording(g, false);
        let mut ctx = action.state.view::<SystemFacts>();
        let (before, limit) = own_open_files();
        let me = wit::Host::pid_file(&mut ctx, pid_file.clone())
            .await
            .unwrap()
            .unwrap()
            .expect("this process runs");
        let (after, _) = own_open_files();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.open_files_limit, Some(limit));
        // Other tests' threads open and close files meanwhile.
        let open = me.open_files.unwrap();
        assert!(open >= held.len() as u32, "{open} < {}", held.len());
        assert!(
            open.abs_diff(before.max(after)) < 64,
            "{open} vs {before}/{after} in /proc/self/fd"
        );
        let files = wit::Host::files(&mut ctx).await.unwrap().unwrap();
        let nr = std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap();
        let nr: Vec<u64> = nr.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(files.max, nr[2]);
        assert!(
            files.open >= held.len() as u64 && files.open <= files.max,
            "{files:?}"
        );
        assert!(
            files.open.abs_diff(nr[0] - nr[1]) < 10_000,
            "{files:?} vs {nr:?}"
        );
        drop(held);
        let decisions: Vec<(String, String)> =
            action.audit().into_iter().map(|(_, d, t)| (d, t)).collect();
        assert_eq!(
            decisions,
            vec![
                ("allowed".into(), pid_file),
                ("allowed".into(), "files".into())
            ]
        );
    }

    #[tokio::test]
    async fn process_details_need_the_process_name_and_files_their_own_grant() {
        let child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let g = grant("[plugins.p.grants.system]\nprocesses = [\"sleep\"]\n").unwrap();
        let mut action = recording(g, true);
        let mut ctx = action.state.view::<SystemFacts>();
        let found = wit::Host::process_details(&mut ctx, "sleep".into())
            .await
            .unwrap()
            .unwrap();
        let ours = found
            .iter()
            .find(|p| p.pid == child.0.id())
            .expect("our sleep is listed");
        assert!(
            ours.open_files.is_some() && ours.open_files_limit.is_some(),
            "{ours:?}"
        );
        let denied = wit::Host::files(&mut ctx).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add files = true to plugins.p.grants.system")),
            "{denied:?}"
        );
        let denied = wit::Host::process_details(&mut ctx, "nginx".into())
            .await
            .unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add \"nginx\" to plugins.p.grants.system.processes")),
            "{denied:?}"
        );
    }

    #[test]
    fn a_new_pid_file_or_files_widens() {
        let old = SystemGrantConfig {
            pid_files: vec!["/run/a.pid".into()],
            ..Default::default()
        };
        let new = SystemGrantConfig {
            files: true,
            pid_files: vec!["/run/b.pid".into()],
            ..Default::default()
        };
        let changes: Vec<(String, ChangeKind, String)> = diff(&old, &new)
            .into_iter()
            .map(|c| (c.path.to_string(), c.kind, c.what.clone()))
            .collect();
        assert_eq!(
            changes,
            vec![
                (
                    "files".to_string(),
                    ChangeKind::Added,
                    "may read open file handles on the host".to_string()
                ),
                (
                    "pid_files[0]".to_string(),
                    ChangeKind::Added,
                    "may read the process named by pid file `/run/b.pid`".to_string()
                ),
                (
                    "pid_files".to_string(),
                    ChangeKind::Removed,
                    "may no longer read the process named by pid file `/run/a.pid`".to_string()
                ),
            ]
        );
    }
}
