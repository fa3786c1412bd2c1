//! The plugin-side view of the `system` capability: read-only host facts.

use crate::context::Context;
use crate::outcome::ActionError;

/// Memory and swap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl Memory {
    /// Share of memory in use (not available), 0–100.
    pub fn used_percent(&self) -> f64 {
        percent(self.total - self.available.min(self.total), self.total)
    }
}

/// Load averages, CPU count and CPU use (0–100 over all CPUs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub cpus: u32,
    pub cpu_percent: f32,
}

impl Load {
    /// The one-minute load average per CPU (1.0: every CPU busy).
    pub fn per_cpu(&self) -> f64 {
        self.one / f64::from(self.cpus.max(1))
    }
}

/// Space and inodes of one file system.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskUse {
    pub mount: String,
    pub total: u64,
    pub available: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

impl DiskUse {
    /// Share of space not available to unprivileged users, 0–100 (what `df` shows).
    pub fn used_percent(&self) -> f64 {
        percent(self.total - self.available.min(self.total), self.total)
    }

    /// Share of inodes in use, 0–100 (0 on file systems without an inode count).
    pub fn inodes_used_percent(&self) -> f64 {
        percent(
            self.inodes_total - self.inodes_free.min(self.inodes_total),
            self.inodes_total,
        )
    }
}

/// One running process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    /// Resident memory, in bytes.
    pub rss: u64,
    /// CPU use over a short sample (100 = one full CPU).
    pub cpu_percent: f32,
    pub uptime_seconds: u64,
}

/// One running process and the files it holds open.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessDetail {
    pub pid: u32,
    pub name: String,
    /// Resident memory, in bytes.
    pub rss: u64,
    /// CPU use over a short sample (100 = one full CPU).
    pub cpu_percent: f32,
    pub uptime_seconds: u64,
    /// Open file descriptors; `None` when the host cannot see them (another user's
    /// process, unless runcap runs as root).
    pub open_files: Option<u32>,
    /// The process's open-files limit; `None` when the host cannot see it.
    pub open_files_limit: Option<u32>,
}

impl ProcessDetail {
    /// Open files as a share of the limit, 0–100; `None` unless both are known.
    pub fn open_files_percent(&self) -> Option<f64> {
        let (open, limit) = (self.open_files?, self.open_files_limit?);
        Some(percent(u64::from(open), u64::from(limit)))
    }
}

/// Open file handles on the whole host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHandles {
    /// Handles in use.
    pub open: u64,
    /// The most the kernel hands out (`fs.file-max`).
    pub max: u64,
}

impl FileHandles {
    /// Share of the maximum in use, 0–100.
    pub fn used_percent(&self) -> f64 {
        percent(self.open.min(self.max), self.max)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What listens on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortListener {
    pub port: u16,
    /// The listening process, when the host can see it.
    pub pid: Option<u32>,
    pub name: Option<String>,
}

/// The first certificate of a PEM file and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub path: String,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Whole days left; negative once expired.
    pub days_left: i64,
}

/// A process that exited and that its parent has not reaped (`<defunct>`): it holds a
/// pid and says the parent is not doing its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zombie {
    pub pid: u32,
    pub name: String,
    /// The parent that should reap it.
    pub parent_pid: Option<u32>,
}

/// What a pid file names: its pid, and the process when that pid runs and is the one
/// that wrote the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PidFileState {
    pub pid: u32,
    pub process: Option<ProcessDetail>,
    /// Why no process is named: the pid is not running, or it was reused by a process
    /// that started after the file was last written.
    pub not_running: Option<String>,
}

/// A fact a plugin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Memory,
    Load,
    /// Space and inodes of a mount point.
    Disk(String),
    /// Processes with this exact name.
    Processes(String),
    /// Processes with this exact name, with their open files.
    ProcessDetails(String),
    /// The process this pid file names.
    PidFile(String),
    /// Open file handles on the whole host.
    Files,
    /// What listens on this TCP port.
    Port(u16),
    /// When this certificate file expires.
    Certificate(String),
    /// Every zombie process on the host.
    Zombies,
    /// The pid this pid file holds, and the process or why none.
    PidFileStatus(String),
}

/// The answer to a [`Fact`].
#[derive(Debug, Clone, PartialEq)]
pub enum FactValue {
    Memory(Memory),
    Load(Load),
    Disk(DiskUse),
    Processes(Vec<ProcessInfo>),
    ProcessDetails(Vec<ProcessDetail>),
    /// `None` when the pid is not running.
    PidFile(Option<ProcessDetail>),
    Files(FileHandles),
    /// `None` when nothing listens.
    Port(Option<PortListener>),
    Certificate(CertificateInfo),
    Zombies(Vec<Zombie>),
    PidFileStatus(PidFileState),
}

/// Why a fact was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemError {
    /// Not granted; the message names the manifest entry to add.
    Denied(String),
    /// The host could not read it.
    Unavailable(String),
}

impl std::fmt::Display for SystemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SystemError::Denied(m) => write!(f, "denied: {m}"),
            SystemError::Unavailable(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for SystemError {}

impl From<SystemError> for ActionError {
    fn from(e: SystemError) -> Self {
        match e {
            SystemError::Denied(m) => ActionError::Denied(m),
            SystemError::Unavailable(m) => ActionError::Failed(m),
        }
    }
}

/// An answer of the wrong kind (only a broken mock gives one).
fn mismatch(fact: &Fact) -> SystemError {
    SystemError::Unavailable(format!("the host answered {fact:?} with another fact"))
}

impl Context<'_> {
    /// Memory and swap (needs `memory = true` in `grants.system`).
    pub fn memory(&self) -> Result<Memory, SystemError> {
        match self.fact(Fact::Memory)? {
            FactValue::Memory(m) => Ok(m),
            _ => Err(mismatch(&Fact::Memory)),
        }
    }

    /// Load and CPU use (needs `load = true`); takes about a quarter of a second.
    pub fn load(&self) -> Result<Load, SystemError> {
        match self.fact(Fact::Load)? {
            FactValue::Load(l) => Ok(l),
            _ => Err(mismatch(&Fact::Load)),
        }
    }

    /// Space and inodes of a mount point listed in `mounts`.
    pub fn disk(&self, mount: &str) -> Result<DiskUse, SystemError> {
        let fact = Fact::Disk(mount.to_string());
        match self.fact(fact.clone())? {
            FactValue::Disk(d) => Ok(d),
            _ => Err(mismatch(&fact)),
        }
    }

    /// Processes whose name is listed in `processes` (empty when none runs).
    pub fn processes(&self, name: &str) -> Result<Vec<ProcessInfo>, SystemError> {
        let fact = Fact::Processes(name.to_string());
        match self.fact(fact.clone())? {
            FactValue::Processes(p) => Ok(p),
            _ => Err(mismatch(&fact)),
        }
    }

    /// Processes whose name is listed in `processes`, with their open files and limit.
    pub fn process_details(&self, name: &str) -> Result<Vec<ProcessDetail>, SystemError> {
        let fact = Fact::ProcessDetails(name.to_string());
        match self.fact(fact.clone())? {
            FactValue::ProcessDetails(p) => Ok(p),
            _ => Err(mismatch(&fact)),
        }
    }

    /// The live process a pid file listed in `pid_files` names; `None` when that pid is
    /// not running. A missing or empty pid file, or one without a pid, is `Unavailable`.
    pub fn pid_file(&self, path: &str) -> Result<Option<ProcessDetail>, SystemError> {
        let fact = Fact::PidFile(path.to_string());
        match self.fact(fact.clone())? {
            FactValue::PidFile(p) => Ok(p),
            _ => Err(mismatch(&fact)),
        }
    }

    /// Open file handles on the whole host (needs `files = true`).
    pub fn files(&self) -> Result<FileHandles, SystemError> {
        match self.fact(Fact::Files)? {
            FactValue::Files(f) => Ok(f),
            _ => Err(mismatch(&Fact::Files)),
        }
    }

    /// What listens on a TCP port listed in `ports`; `None` when nothing does.
    pub fn port(&self, port: u16) -> Result<Option<PortListener>, SystemError> {
        let fact = Fact::Port(port);
        match self.fact(fact.clone())? {
            FactValue::Port(p) => Ok(p),
            _ => Err(mismatch(&fact)),
        }
    }

    /// When a certificate file listed in `certificates` expires.
    pub fn certificate(&self, path: &str) -> Result<CertificateInfo, SystemError> {
        let fact = Fact::Certificate(path.to_string());
        match self.fact(fact.clone())? {
            FactValue::Certificate(c) => Ok(c),
            _ => Err(mismatch(&fact)),
        }
    }

    /// Like [`Context::pid_file`], with the pid the file holds and, when no process is
    /// named, why: not running, or the pid was reused.
    pub fn pid_file_status(&self, path: &str) -> Result<PidFileState, SystemError> {
        let fact = Fact::PidFileStatus(path.to_string());
        match self.fact(fact.clone())? {
            FactValue::PidFileStatus(s) => Ok(s),
            _ => Err(mismatch(&fact)),
        }
    }

    /// Every zombie process on the host, sorted by pid (needs `zombies = true`).
    pub fn zombies(&self) -> Result<Vec<Zombie>, SystemError> {
        match self.fact(Fact::Zombies)? {
            FactValue::Zombies(z) => Ok(z),
            _ => Err(mismatch(&Fact::Zombies)),
        }
    }

    fn fact(&self, fact: Fact) -> Result<FactValue, SystemError> {
        match self.host() {
            Some(h) => h.system(&fact),
            None => wasm_fact(&fact),
        }
    }
}

/// Reads a fact through the `system` import.
fn wasm_fact(fact: &Fact) -> Result<FactValue, SystemError> {
    use crate::bindings::runcap::plugin::system as wit;
    let detail = |p: wit::ProcessDetail| ProcessDetail {
        pid: p.pid,
        name: p.name,
        rss: p.rss,
        cpu_percent: p.cpu_percent,
        uptime_seconds: p.uptime_seconds,
        open_files: p.open_files,
        open_files_limit: p.open_files_limit,
    };
    let err = |e: wit::Error| match e {
        wit::Error::Denied(m) => SystemError::Denied(m),
        wit::Error::Unavailable(m) => SystemError::Unavailable(m),
    };
    Ok(match fact {
        Fact::Memory => {
            let m = wit::memory().map_err(err)?;
            FactValue::Memory(Memory {
                total: m.total,
                available: m.available,
                swap_total: m.swap_total,
                swap_free: m.swap_free,
            })
        }
        Fact::Load => {
            let l = wit::load().map_err(err)?;
            FactValue::Load(Load {
                one: l.one,
                five: l.five,
                fifteen: l.fifteen,
                cpus: l.cpus,
                cpu_percent: l.cpu_percent,
            })
        }
        Fact::Disk(mount) => {
            let d = wit::disk(mount).map_err(err)?;
            FactValue::Disk(DiskUse {
                mount: d.mount,
                total: d.total,
                available: d.available,
                inodes_total: d.inodes_total,
                inodes_free: d.inodes_free,
            })
        }
        Fact::Processes(name) => FactValue::Processes(
            wit::processes(name)
                .map_err(err)?
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    name: p.name,
                    rss: p.rss,
                    cpu_percent: p.cpu_percent,
                    uptime_seconds: p.uptime_seconds,
                })
                .collect(),
        ),
        Fact::ProcessDetails(name) => FactValue::ProcessDetails(
            wit::process_details(name)
                .map_err(err)?
                .into_iter()
                .map(detail)
                .collect(),
        ),
        Fact::PidFile(path) => FactValue::PidFile(wit::pid_file(path).map_err(err)?.map(detail)),
        Fact::Files => {
            let f = wit::files().map_err(err)?;
            FactValue::Files(FileHandles {
                open: f.open,
                max: f.max,
            })
        }
        Fact::Port(port) => FactValue::Port(wit::port(*port).map_err(err)?.map(|p| PortListener {
            port: p.port,
            pid: p.pid,
            name: p.name,
        })),
        Fact::Certificate(path) => {
            let c = wit::certificate(path).map_err(err)?;
            FactValue::Certificate(CertificateInfo {
                path: c.path,
                subject: c.subject,
                not_after: c.not_after,
                days_left: c.days_left,
            })
        }
        Fact::PidFileStatus(path) => {
            let s = wit::pid_file_status(path).map_err(err)?;
            FactValue::PidFileStatus(PidFileState {
                pid: s.pid,
                process: s.process.map(detail),
                not_running: s.not_running,
            })
        }
        Fact::Zombies => FactValue::Zombies(
            wit::zombies()
                .map_err(err)?
                .into_iter()
                .map(|z| Zombie {
                    pid: z.pid,
                    name: z.name,
                    parent_pid: z.parent_pid,
                })
                .collect(),
        ),
    })
}
