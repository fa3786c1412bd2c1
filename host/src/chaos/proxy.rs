//! Loopback TCP proxies for network faults. A drill environment reaches a service
//! through its proxy (`[proxies.NAME] listen = …, upstream = …`); latency, drop and
//! partition faults are entries in the proxy's control file, which the proxy re-reads
//! as it changes. Each entry carries its expiry, so the proxy itself stops applying a
//! fault whose time is up even if the runcap that injected it is gone.
//!
//! The proxy is a long-lived process (`runcap proxy-serve`) started and supervised like
//! a process service, so it outlives a single `runcap run`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::engine::cache::write_atomically;
use crate::manifest::{KeyPath, Validator};
use crate::services::{self, Driver, ProcessDef, Verb};
use crate::store::records::now_ms;

/// `[proxies.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `listen = "127.0.0.1:18095"`: where clients connect (loopback only).
    pub listen: String,
    /// `upstream = "127.0.0.1:18090"`: the real service.
    pub upstream: String,
}

/// A validated proxy.
#[derive(Debug, Clone)]
pub struct ProxyDef {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: String,
}

/// Validates every `[proxies.NAME]`.
pub fn validate_proxies(
    v: &mut Validator,
    raw: BTreeMap<String, ProxyConfig>,
) -> BTreeMap<String, ProxyDef> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        let path = KeyPath::root().key("proxies").key(&name);
        if !v.name(&path, "proxy", &name) {
            continue;
        }
        let listen = match c.listen.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(a) => {
                v.error(
                    &path.key("listen"),
                    format!("{a} is not a loopback address"),
                    "drill proxies listen on loopback only, e.g. \"127.0.0.1:18095\"",
                );
                None
            }
            Err(_) => {
                v.error(
                    &path.key("listen"),
                    format!("`{}` is not an address:port", c.listen),
                    "write it like \"127.0.0.1:18095\"",
                );
                None
            }
        };
        if !c.upstream.contains(':') {
            v.error(
                &path.key("upstream"),
                format!("`{}` has no port", c.upstream),
                "write it like \"127.0.0.1:8080\"",
            );
        }
        if let Some(listen) = listen {
            out.insert(
                name.clone(),
                ProxyDef {
                    name,
                    listen,
                    upstream: c.upstream,
                },
            );
        }
    }
    out
}

/// One network fault as the proxy applies it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetFault {
    pub id: String,
    /// latency, drop or partition.
    pub kind: String,
    #[serde(default)]
    pub latency_ms: u32,
    #[serde(default)]
    pub drop_rate: f32,
    pub expires_at_ms: u64,
}

/// The control file of one proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Control {
    pub faults: Vec<NetFault>,
}

/// Where the proxy acknowledges the faults it applies: the ids, one per line.
fn seen_path(control: &Path) -> PathBuf {
    control.with_extension("seen")
}

/// Why a proxy could not be driven or its faults written.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no proxy `{name}` is defined")]
    Undefined { name: String },
    #[error("cannot find the runcap binary: {0}")]
    NoBinary(std::io::Error),
    /// `present`: the fault was being applied (else dropped).
    #[error("the proxy did not {} the fault within 2s", if *present { "apply" } else { "drop" })]
    NotSeen { present: bool },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    WriteControl {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] services::ServiceError),
}

/// Waits (up to 2 s) until the proxy has applied (`present`) or dropped a fault, so a
/// fault is in effect when inject returns, and gone when revert returns.
pub fn wait_seen(control: &Path, id: &str, present: bool) -> Result<(), ProxyError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let seen = std::fs::read_to_string(seen_path(control)).unwrap_or_default();
        if seen.lines().any(|l| l == id) == present {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(ProxyError::NotSeen { present });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a control file; a missing or damaged one means no faults.
pub fn read_control(path: &Path) -> Control {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Rewrites a control file atomically with `change` applied. Callers serialize through
/// the fault manager; the proxy only reads.
pub fn update_control(path: &Path, change: impl FnOnce(&mut Control)) -> Result<(), ProxyError> {
    let mut c = read_control(path);
    change(&mut c);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ProxyError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    write_atomically(
        path,
        serde_json::to_string_pretty(&c)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|source| ProxyError::WriteControl {
        path: path.to_path_buf(),
        source,
    })
}

/// The environment's proxies, their processes and control files.
pub struct ProxyManager {
    defs: BTreeMap<String, ProxyDef>,
    dir: PathBuf,
}

impl ProxyManager {
    pub fn new(defs: BTreeMap<String, ProxyDef>, state_dir: &Path) -> Self {
        ProxyManager {
            defs,
            dir: state_dir.join("proxies"),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.defs.keys()
    }

    /// Where a proxy's faults are written.
    pub fn control_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.faults.json"))
    }

    fn process(&self, def: &ProxyDef) -> Result<Driver, ProxyError> {
        let exe = std::env::current_exe().map_err(ProxyError::NoBinary)?;
        Ok(Driver::Process(ProcessDef {
            command: exe,
            args: vec![
                "proxy-serve".into(),
                "--listen".into(),
                def.listen.to_string(),
                "--upstream".into(),
                def.upstream.clone(),
                "--control".into(),
                self.control_path(&def.name).display().to_string(),
            ],
            cwd: self.dir.clone(),
            env: BTreeMap::new(),
            pid_file: None,
            stop_signal: (libc::SIGTERM, "SIGTERM".into()),
            grace: Duration::from_secs(2),
        }))
    }

    /// Applies a verb to a proxy's process (start is idempotent).
    pub async fn control(&self, name: &str, verb: Verb) -> Result<services::Status, ProxyError> {
        let def = self.defs.get(name).ok_or_else(|| ProxyError::Undefined {
            name: name.to_string(),
        })?;
        let driver = self.process(def)?;
        let mut st = services::control_with(name, &driver, &self.dir, verb, Arc::default()).await?;
        st.detail = format!("{} → {}: {}", def.listen, def.upstream, st.detail);
        Ok(st)
    }

    /// Starts every proxy that is not running, so drills can reach services through them.
    /// Starts the named proxies that are not running; returns those it started (they are
    /// left running after the command, on purpose) and the problems it met.
    pub async fn ensure<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<String>) {
        let (mut started, mut problems) = (Vec::new(), Vec::new());
        for name in names {
            let running = matches!(
                self.control(name, Verb::Status).await,
                Ok(s) if s.state == services::ServiceState::Running
            );
            if running {
                continue;
            }
            match self.control(name, Verb::Start).await {
                Ok(_) => started.push(name.to_string()),
                Err(e) => problems.push(format!("proxy {name}: {e}")),
            }
        }
        (started, problems)
    }

    /// Where a proxy listens, for messages.
    pub fn listen(&self, name: &str) -> Option<SocketAddr> {
        self.defs.get(name).map(|d| d.listen)
    }
}

/// The proxy's main: forward `listen` to `upstream`, applying the control file's faults.
pub async fn serve(listen: SocketAddr, upstream: String, control: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let faults: Arc<RwLock<Vec<NetFault>>> = Arc::default();
    // Bumped when a partition starts, to cut connections that are already open.
    let (cut_tx, cut_rx) = watch::channel(0u64);
    {
        let faults = faults.clone();
        tokio::spawn(async move {
            let mut seen: Option<SystemTime> = None;
            let mut partitioned = false;
            loop {
                let modified = std::fs::metadata(&control).and_then(|m| m.modified()).ok();
                if modified != seen {
                    seen = modified;
                    let current = read_control(&control).faults;
                    let ids: String = current.iter().map(|f| format!("{}\n", f.id)).collect();
                    *faults.write().unwrap_or_else(|p| p.into_inner()) = current;
                    let _ = write_atomically(&seen_path(&control), ids.as_bytes());
                }
                let now = now_ms();
                let active = faults
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|f| f.kind == "partition" && f.expires_at_ms > now);
                if active && !partitioned {
                    cut_tx.send_modify(|n| *n += 1);
                }
                partitioned = active;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let now = now_ms();
        let active: Vec<NetFault> = faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.expires_at_ms > now)
            .cloned()
            .collect();
        if active.iter().any(|f| f.kind == "partition") {
            drop(inbound);
            continue;
        }
        let drop_rate = active
            .iter()
            .filter(|f| f.kind == "drop")
            .map(|f| f.drop_rate)
            .fold(0.0f32, f32::max);
        if drop_rate > 0.0 && rand::rng().random::<f32>() < drop_rate {
            drop(inbound);
            continue;
        }
        let latency: u32 = active
            .iter()
            .filter(|f| f.kind == "latency")
            .map(|f| f.latency_ms)
            .sum();
        let upstream = upstream.clone();
        let mut cut = cut_rx.clone();
        cut.mark_unchanged();
        tokio::spawn(async move {
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency.into())).await;
            }
            let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
