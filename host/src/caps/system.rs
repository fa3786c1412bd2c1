//! `system`: read-only facts about the host a runbook checks before and after acting.
//!
//! | | |
//! |---|---|
//! | grants | reading what is listed: `[plugins.NAME.grants.system]` `memory = true`, `load = true`, `mounts = ["/", "/var"]`, `processes = ["nginx"]`, `ports = [443]`, `certificates = ["/etc/ssl/api.pem"]` |
//! | manifest | the grant only |
//! | default | no grant: the interface cannot be imported; an unlisted fact, mount or process name is denied |
//! | enforced | read-only: nothing a plugin asks changes the host, so calls run in dry runs too; facts are read by `sysinfo`, `procfs`, `statvfs` and `x509-parser`, not by parsing command output |
//! | audit | one call record per read: what was read (memory, load, a mount, a process name) and the decision |

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System,
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
        let reason = if matches!(field, "memory" | "load") {
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
        let record = CallRecord::allowed(SystemFacts::NAME, operation, target);
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
        let what = ProcessRefreshKind::nothing().with_cpu().with_memory();
        let first = blocking(move || {
            let mut sys = system(RefreshKind::nothing())?;
            sys.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
            Ok(sys)
        })
        .await;
        let read = match first {
            Ok(mut sys) => {
                // CPU use is the difference between two readings.
                tokio::time::sleep(CPU_SAMPLE).await;
                let wanted = name.clone();
                blocking(move || {
                    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
                    let mut found: Vec<wit::ProcessInfo> = sys
                        .processes_by_exact_name(OsStr::new(&wanted))
                        .map(|p| wit::ProcessInfo {
                            pid: p.pid().as_u32(),
                            name: p.name().to_string_lossy().into_owned(),
                            rss: p.memory(),
                            cpu_percent: p.cpu_usage(),
                            uptime_seconds: p.run_time(),
                        })
                        .collect();
                    found.sort_by_key(|p| p.pid);
                    Ok(found)
                })
                .await
            }
            Err(e) => Err(e),
        };
        Ok(self.answer("processes", &name, read))
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
        let mut action = testing::recorded(
            testing::prepared::<SystemFacts>(g, &Resources::none()),
            true,
            1024,
        );
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
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let g = grant("[plugins.p.grants.system]\nprocesses = [\"sleep\"]\n").unwrap();
        let mut action = testing::recorded(
            testing::prepared::<SystemFacts>(g, &Resources::none()),
            false,
            1024,
        );
        let mut ctx = action.state.view::<SystemFacts>();
        let found = wit::Host::processes(&mut ctx, "sleep".into())
            .await
            .unwrap()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let ours = found
            .iter()
            .find(|p| p.pid == child.id())
            .expect("our sleep is listed");
        assert_eq!(ours.name, "sleep");
        assert!(ours.rss > 0, "{ours:?}");
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
}
