//! `faults`: chaos-drill faults that are always reverted.
//!
//! | | |
//! |---|---|
//! | grants | per kind, the targets and the longest duration: `[plugins.NAME.grants.faults]` `kill = { targets = ["api"], max_duration = "2m" }`, plus `max_concurrent` |
//! | manifest | targets are services (`kill`, `stop`), proxies (`latency`, `drop`, `partition`; `[proxies.NAME]`), directories (`corrupt-file`, relative to the manifest) or plugins (`cert-expiry`) |
//! | default | no grant: the interface cannot be imported; an ungranted kind or target, a longer duration, or one fault too many is denied (and audited) |
//! | enforced | journal first: the fault and the recipe that undoes it are written (synced) to the store before it is applied; it is reverted when the run ends (whatever the outcome), when its duration runs out, on Ctrl-C/SIGTERM, and at the next start of runcap after a crash; proxies also drop expired faults on their own |
//! | audit | every injection, denial and revert, with the target and outcome |
//!
//! `cert-expiry` moves the target plugin's wall clock forward (the clock its actions see
//! through WASI) rather than serving an expired certificate: it exercises the check that
//! must notice expiry without breaking TLS for everything else, and needs no certificate
//! authority in the drill environment.

pub mod proxy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bindings::runcap::plugin::faults as wit;
use crate::caps::services::{self, Driver, ServiceManager, Verb};
use crate::caps::{CallRecord, HostState, now_ms};
use crate::engine::cache::write_atomically;
use crate::manifest::{KeyPath, Validator};
use crate::store::Store;

pub use proxy::{ProxyConfig, ProxyDef, ProxyManager};

/// The WIT interface this module implements.
pub const INTERFACE: &str = "runcap:plugin/faults";

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Kill,
    Stop,
    Latency,
    Drop,
    Partition,
    CorruptFile,
    CertExpiry,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Kill,
        Kind::Stop,
        Kind::Latency,
        Kind::Drop,
        Kind::Partition,
        Kind::CorruptFile,
        Kind::CertExpiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Latency => "latency",
            Kind::Drop => "drop",
            Kind::Partition => "partition",
            Kind::CorruptFile => "corrupt-file",
            Kind::CertExpiry => "cert-expiry",
        }
    }

    /// What the kind's targets are.
    fn target_noun(self) -> &'static str {
        match self {
            Kind::Kill | Kind::Stop => "service",
            Kind::Latency | Kind::Drop | Kind::Partition => "proxy",
            Kind::CorruptFile => "directory",
            Kind::CertExpiry => "plugin",
        }
    }
}

/// One kind's grant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindGrantConfig {
    pub targets: Vec<String>,
    /// `max_duration = "2m"`: the longest a fault of this kind may last.
    pub max_duration: String,
}

/// `[plugins.NAME.grants.faults]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsGrantConfig {
    pub kill: Option<KindGrantConfig>,
    pub stop: Option<KindGrantConfig>,
    pub latency: Option<KindGrantConfig>,
    pub drop: Option<KindGrantConfig>,
    pub partition: Option<KindGrantConfig>,
    #[serde(rename = "corrupt-file")]
    pub corrupt_file: Option<KindGrantConfig>,
    #[serde(rename = "cert-expiry")]
    pub cert_expiry: Option<KindGrantConfig>,
    /// `max_concurrent = 1`: faults of this plugin active at once (default 1).
    pub max_concurrent: Option<u32>,
}

/// One kind's validated grant.
#[derive(Debug, Clone)]
pub struct KindGrant {
    pub targets: BTreeSet<String>,
    pub max_duration: Duration,
    /// For corrupt-file: each target directory, resolved.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// A validated faults grant.
#[derive(Debug, Clone)]
pub struct FaultsGrant {
    pub kinds: BTreeMap<Kind, KindGrant>,
    pub max_concurrent: u32,
    pub key: String,
}

impl FaultsGrant {
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: FaultsGrantConfig,
        services: &BTreeMap<String, services::ServiceDef>,
        proxies: &BTreeMap<String, ProxyDef>,
    ) -> Option<Arc<Self>> {
        let mut ok = true;
        let mut kinds = BTreeMap::new();
        let entries = [
            (Kind::Kill, raw.kill),
            (Kind::Stop, raw.stop),
            (Kind::Latency, raw.latency),
            (Kind::Drop, raw.drop),
            (Kind::Partition, raw.partition),
            (Kind::CorruptFile, raw.corrupt_file),
            (Kind::CertExpiry, raw.cert_expiry),
        ];
        for (kind, g) in entries {
            let Some(g) = g else { continue };
            let kp = path.key(kind.as_str());
            let max_duration = v.duration(&kp.key("max_duration"), &g.max_duration);
            let mut dirs = BTreeMap::new();
            for (i, t) in g.targets.iter().enumerate() {
                let tp = kp.key("targets").index(i);
                let known = match kind {
                    Kind::Kill | Kind::Stop => services.contains_key(t),
                    Kind::Latency | Kind::Drop | Kind::Partition => proxies.contains_key(t),
                    Kind::CorruptFile => {
                        let dir = v.resolve(&tp, t);
                        let is_dir = dir.is_dir();
                        if is_dir {
                            dirs.insert(t.clone(), dir);
                        }
                        is_dir
                    }
                    Kind::CertExpiry => !t.is_empty(),
                };
                if !known {
                    ok = false;
                    let help = match kind {
                        Kind::Kill | Kind::Stop => {
                            format!("define [services.{t}] or name a defined service")
                        }
                        Kind::Latency | Kind::Drop | Kind::Partition => {
                            format!("define [proxies.{t}] with listen and upstream")
                        }
                        Kind::CorruptFile => {
                            "name an existing directory, relative to the manifest".to_string()
                        }
                        Kind::CertExpiry => "name a plugin".to_string(),
                    };
                    v.error(
                        &tp,
                        format!(
                            "`{t}` is not a {} this environment defines",
                            kind.target_noun()
                        ),
                        help,
                    );
                }
            }
            match max_duration {
                Some(d) if !d.is_zero() => {
                    kinds.insert(
                        kind,
                        KindGrant {
                            targets: g.targets.into_iter().collect(),
                            max_duration: d,
                            dirs,
                        },
                    );
                }
                _ => ok = false,
            }
        }
        let max_concurrent = raw.max_concurrent.unwrap_or(1);
        if max_concurrent == 0 {
            ok = false;
            v.error(&path.key("max_concurrent"), "must be at least 1", "");
        }
        ok.then(|| {
            Arc::new(FaultsGrant {
                kinds,
                max_concurrent,
                key: path.to_string(),
            })
        })
    }

    /// One line per kind, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, g)| {
                let targets: Vec<&str> = g.targets.iter().map(String::as_str).collect();
                format!(
                    "fault {} on {} for at most {}",
                    k.as_str(),
                    targets.join(", "),
                    humantime::format_duration(g.max_duration)
                )
            })
            .collect();
        lines.push(format!("at most {} at once", self.max_concurrent));
        lines
    }
}

impl FaultsGrantConfig {
    fn kinds(&self) -> [(Kind, Option<&KindGrantConfig>); 7] {
        [
            (Kind::Kill, self.kill.as_ref()),
            (Kind::Stop, self.stop.as_ref()),
            (Kind::Latency, self.latency.as_ref()),
            (Kind::Drop, self.drop.as_ref()),
            (Kind::Partition, self.partition.as_ref()),
            (Kind::CorruptFile, self.corrupt_file.as_ref()),
            (Kind::CertExpiry, self.cert_expiry.as_ref()),
        ]
    }
}

/// What `new` lets a plugin inject that `old` did not, and what it no longer may.
pub fn diff(old: &FaultsGrantConfig, new: &FaultsGrantConfig) -> Vec<crate::caps::compare::Change> {
    use crate::caps::compare::{Change, ChangeKind};
    use crate::manifest::units::parse_duration;
    let mut out = Vec::new();
    for ((kind, o), (_, n)) in old.kinds().into_iter().zip(new.kinds()) {
        let k = KeyPath::root().key(kind.as_str());
        match (o, n) {
            (None, Some(n)) => out.push(Change::new(
                k,
                ChangeKind::Added,
                format!(
                    "may inject {} faults on {} for up to {}",
                    kind.as_str(),
                    n.targets.join(", "),
                    n.max_duration
                ),
            )),
            (Some(_), None) => out.push(Change::new(
                k,
                ChangeKind::Removed,
                format!("may no longer inject {} faults", kind.as_str()),
            )),
            (Some(o), Some(n)) => {
                for (i, t) in n.targets.iter().enumerate() {
                    if !o.targets.contains(t) {
                        out.push(Change::new(
                            k.key("targets").index(i),
                            ChangeKind::Added,
                            format!("may inject {} faults on `{t}`", kind.as_str()),
                        ));
                    }
                }
                for t in &o.targets {
                    if !n.targets.contains(t) {
                        out.push(Change::new(
                            k.key("targets"),
                            ChangeKind::Removed,
                            format!("may no longer inject {} faults on `{t}`", kind.as_str()),
                        ));
                    }
                }
                match (
                    parse_duration(&o.max_duration),
                    parse_duration(&n.max_duration),
                ) {
                    (Ok(a), Ok(b)) if b > a => out.push(Change::new(
                        k.key("max_duration"),
                        ChangeKind::Widened,
                        format!(
                            "{} faults may last {} instead of {}",
                            kind.as_str(),
                            n.max_duration,
                            o.max_duration
                        ),
                    )),
                    (Ok(a), Ok(b)) if b < a => out.push(Change::new(
                        k.key("max_duration"),
                        ChangeKind::Narrowed,
                        format!("{} faults may last only {}", kind.as_str(), n.max_duration),
                    )),
                    (Ok(_), Ok(_)) => {}
                    _ => out.push(Change::new(
                        k.key("max_duration"),
                        ChangeKind::Changed,
                        format!("{} → {}", o.max_duration, n.max_duration),
                    )),
                }
            }
            (None, None) => {}
        }
    }
    let (a, b) = (
        old.max_concurrent.unwrap_or(1),
        new.max_concurrent.unwrap_or(1),
    );
    if b > a {
        out.push(Change::new(
            KeyPath::root().key("max_concurrent"),
            ChangeKind::Widened,
            format!("{b} faults may be active at once instead of {a}"),
        ));
    } else if b < a {
        out.push(Change::new(
            KeyPath::root().key("max_concurrent"),
            ChangeKind::Narrowed,
            format!("at most {b} faults at once"),
        ));
    }
    out
}

/// What undoes a fault, self-contained so it works after a crash without the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Revert {
    /// Start the service again (idempotent).
    StartService {
        service: String,
        driver: Driver,
        dir: PathBuf,
    },
    /// Remove the fault from a proxy's control file.
    RemoveNetFault {
        proxy: String,
        control: PathBuf,
        fault_id: String,
    },
    /// Put the saved original back.
    RestoreFile {
        target: PathBuf,
        backup: PathBuf,
        sha256: String,
    },
    /// Give the plugin its real clock back (held in memory only).
    ResetClock { plugin: String },
}

impl Revert {
    async fn run(
        &self,
        clocks: Option<&Mutex<HashMap<String, i64>>>,
        redaction: Arc<crate::redaction::Spec>,
    ) -> Result<String, String> {
        match self {
            Revert::StartService {
                service,
                driver,
                dir,
            } => {
                let st =
                    services::control_with(service, driver, dir, Verb::Start, redaction).await?;
                Ok(format!("{service}: {}", st.detail))
            }
            Revert::RemoveNetFault {
                proxy,
                control,
                fault_id,
            } => {
                proxy::update_control(control, |c| c.faults.retain(|f| &f.id != fault_id))?;
                // A proxy that is not running cannot apply anything; only wait for a live one.
                let (control, id) = (control.clone(), fault_id.clone());
                let acked =
                    tokio::task::spawn_blocking(move || proxy::wait_seen(&control, &id, false))
                        .await;
                match acked {
                    Ok(Ok(())) => Ok(format!("removed from proxy {proxy}")),
                    _ => Ok(format!("removed from proxy {proxy}'s control file")),
                }
            }
            Revert::RestoreFile {
                target,
                backup,
                sha256,
            } => {
                let bytes = std::fs::read(backup).map_err(|e| {
                    format!("cannot read the saved original {}: {e}", backup.display())
                })?;
                if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                    return Err(format!(
                        "the saved original {} does not match its digest; {} left as is",
                        backup.display(),
                        target.display()
                    ));
                }
                write_atomically(target, &bytes)
                    .map_err(|e| format!("cannot restore {}: {e}", target.display()))?;
                let _ = std::fs::remove_file(backup);
                Ok(format!(
                    "restored {} ({} bytes, sha256 {})",
                    target.display(),
                    bytes.len(),
                    &sha256[..12]
                ))
            }
            Revert::ResetClock { plugin } => {
                if let Some(c) = clocks {
                    c.lock().unwrap_or_else(|p| p.into_inner()).remove(plugin);
                }
                Ok(format!("{plugin}'s clock is real again"))
            }
        }
    }
}

/// A fault as the journal and `runcap faults` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRow {
    pub id: String,
    pub run_id: String,
    pub plugin: String,
    pub kind: String,
    pub target: String,
    pub state: String,
    pub detail: String,
    pub injected_at: i64,
    pub expires_at: i64,
    pub reverted_at: Option<i64>,
    pub reverted_by: Option<String>,
    pub revert_result: Option<String>,
}

/// What a plugin asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub kind: Kind,
    pub target: String,
    pub duration_ms: u64,
    pub latency_ms: Option<u32>,
    pub drop_rate: Option<f32>,
    pub path: Option<String>,
    pub days: Option<u32>,
}

/// Why a fault was not injected.
#[derive(Debug)]
pub enum InjectError {
    Denied(String),
    Failed(String),
}

/// Injects, tracks and reverts faults for one environment.
pub struct FaultManager {
    store: Option<Arc<Store>>,
    services: Arc<ServiceManager>,
    proxies: Arc<ProxyManager>,
    dir: PathBuf,
    /// cert-expiry: plugin → seconds its clock runs ahead.
    clocks: Mutex<HashMap<String, i64>>,
    /// Serializes injections, so concurrency limits hold.
    gate: tokio::sync::Mutex<()>,
}

impl FaultManager {
    pub fn new(
        store: Option<Arc<Store>>,
        services: Arc<ServiceManager>,
        proxies: Arc<ProxyManager>,
        state_dir: &Path,
    ) -> Self {
        FaultManager {
            store,
            services,
            proxies,
            dir: state_dir.join("faults"),
            clocks: Mutex::default(),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// How far ahead (seconds) a plugin's clock runs because of a cert-expiry fault.
    pub fn clock_offset(&self, plugin: &str) -> i64 {
        self.clocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
            .copied()
            .unwrap_or(0)
    }

    fn store(&self) -> Result<&Arc<Store>, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "faults need the state store (none is open)".to_string())
    }

    fn audit(&self, kind: &str, run_id: &str, subject: &str, payload: serde_json::Value) {
        if let Some(s) = &self.store
            && let Err(e) = s.audit(kind, run_id, subject, &payload)
        {
            tracing::error!("could not audit {kind}: {e}");
        }
    }

    /// Checks a request against the grant; the error names the manifest entry.
    fn check(
        &self,
        grant: &FaultsGrant,
        plugin: &str,
        spec: &Spec,
        active_now: u32,
    ) -> Result<(), String> {
        let kind = spec.kind.as_str();
        let Some(g) = grant.kinds.get(&spec.kind) else {
            return Err(format!(
                "{kind} faults are not granted; add {kind} = {{ targets = [\"{}\"], max_duration = \"…\" }} to [{}]",
                spec.target, grant.key
            ));
        };
        if !g.targets.contains(&spec.target) {
            return Err(format!(
                "{kind} on `{}` is not granted; add \"{}\" to {}.{kind}.targets",
                spec.target, spec.target, grant.key
            ));
        }
        let asked = Duration::from_millis(spec.duration_ms);
        if asked.is_zero() || asked > g.max_duration {
            return Err(format!(
                "a {kind} fault of {} exceeds the granted maximum of {} ({}.{kind}.max_duration)",
                humantime::format_duration(asked),
                humantime::format_duration(g.max_duration),
                grant.key
            ));
        }
        if active_now >= grant.max_concurrent {
            return Err(format!(
                "{plugin} already has {active_now} fault(s) active, the most {}.max_concurrent allows",
                grant.key
            ));
        }
        Ok(())
    }

    /// Journals, then applies, a fault. The returned row is active; the caller schedules
    /// its expiry with [`FaultManager::expire_later`].
    pub async fn inject(
        &self,
        run_id: &str,
        plugin: &str,
        grant: &FaultsGrant,
        spec: &Spec,
    ) -> Result<FaultRow, InjectError> {
        let _turn = self.gate.lock().await;
        let store = self.store().map_err(InjectError::Failed)?;
        let active_now =
            journal::count_active(store, plugin, run_id).map_err(InjectError::Failed)?;
        if let Err(reason) = self.check(grant, plugin, spec, active_now) {
            self.audit(
                "fault.denied",
                run_id,
                spec.kind.as_str(),
                serde_json::json!({"plugin": plugin, "target": spec.target, "reason": reason}),
            );
            return Err(InjectError::Denied(reason));
        }
        let id = format!("f-{}", crate::runbook::new_run_id());
        let now = now_ms();
        let expires = now + spec.duration_ms;
        // Prepare everything the revert needs before anything changes.
        let (revert, prepared) = self
            .prepare(&id, grant, spec, expires)
            .map_err(InjectError::Failed)?;
        let row = FaultRow {
            id: id.clone(),
            run_id: run_id.to_string(),
            plugin: plugin.to_string(),
            kind: spec.kind.as_str().to_string(),
            target: spec.target.clone(),
            state: "pending".into(),
            detail: String::new(),
            injected_at: now as i64,
            expires_at: expires as i64,
            reverted_at: None,
            reverted_by: None,
            revert_result: None,
        };
        journal::insert(store, &row, spec, &revert).map_err(InjectError::Failed)?;
        match self.apply(spec, &revert, prepared).await {
            Ok(detail) => {
                journal::set_state(store, &id, "active", &detail).map_err(InjectError::Failed)?;
                self.audit(
                    "fault.injected",
                    run_id,
                    spec.kind.as_str(),
                    serde_json::json!({"id": id, "plugin": plugin, "target": spec.target, "expires_at": expires, "detail": detail}),
                );
                Ok(FaultRow {
                    state: "active".into(),
                    detail,
                    ..row
                })
            }
            Err(e) => {
                // Undo whatever part of it took hold, then report.
                let undo = revert
                    .run(Some(&self.clocks), self.services.redaction())
                    .await;
                let result = format!("apply failed: {e}; undo: {}", undo.unwrap_or_else(|u| u));
                let _ = journal::finish(store, &id, "reverted", "apply-failed", &result);
                Err(InjectError::Failed(e))
            }
        }
    }

    /// Works out how the fault will be undone, saving what must be saved first.
    fn prepare(
        &self,
        id: &str,
        grant: &FaultsGrant,
        spec: &Spec,
        expires: u64,
    ) -> Result<(Revert, Prepared), String> {
        Ok(match spec.kind {
            Kind::Kill | Kind::Stop => {
                let (driver, dir) = self
                    .services
                    .driver(&spec.target)
                    .ok_or_else(|| format!("no service `{}`", spec.target))?;
                (
                    Revert::StartService {
                        service: spec.target.clone(),
                        driver,
                        dir,
                    },
                    Prepared::None,
                )
            }
            Kind::Latency | Kind::Drop | Kind::Partition => {
                let control = self.proxies.control_path(&spec.target);
                let fault = proxy::NetFault {
                    id: id.to_string(),
                    kind: spec.kind.as_str().to_string(),
                    latency_ms: spec.latency_ms.unwrap_or(0),
                    drop_rate: spec.drop_rate.unwrap_or(0.0).clamp(0.0, 1.0),
                    expires_at_ms: expires,
                };
                if spec.kind == Kind::Latency && fault.latency_ms == 0 {
                    return Err("a latency fault needs latency-ms".into());
                }
                if spec.kind == Kind::Drop && fault.drop_rate <= 0.0 {
                    return Err("a drop fault needs a drop-rate above 0".into());
                }
                (
                    Revert::RemoveNetFault {
                        proxy: spec.target.clone(),
                        control,
                        fault_id: id.to_string(),
                    },
                    Prepared::Net(fault),
                )
            }
            Kind::CorruptFile => {
                let dir = grant
                    .kinds
                    .get(&Kind::CorruptFile)
                    .and_then(|g| g.dirs.get(&spec.target))
                    .ok_or("no such directory")?;
                let rel = spec
                    .path
                    .as_deref()
                    .ok_or("a corrupt-file fault needs a path")?;
                let target = contained_file(dir, rel)?;
                let bytes = std::fs::read(&target)
                    .map_err(|e| format!("cannot read {}: {e}", target.display()))?;
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
                let backup = self.dir.join(format!("{id}.orig"));
                write_atomically(&backup, &bytes)
                    .map_err(|e| format!("cannot save the original: {e}"))?;
                (
                    Revert::RestoreFile {
                        target: target.clone(),
                        backup,
                        sha256: hex::encode(Sha256::digest(&bytes)),
                    },
                    Prepared::File(target, bytes.len()),
                )
            }
            Kind::CertExpiry => (
                Revert::ResetClock {
                    plugin: spec.target.clone(),
                },
                Prepared::Clock(i64::from(spec.days.unwrap_or(365)) * 86_400),
            ),
        })
    }

    async fn apply(
        &self,
        spec: &Spec,
        revert: &Revert,
        prepared: Prepared,
    ) -> Result<String, String> {
        match (spec.kind, prepared) {
            (Kind::Kill, _) => {
                let pid = self.services.kill(&spec.target).await?;
                Ok(format!("killed {} (pid {pid}) with SIGKILL", spec.target))
            }
            (Kind::Stop, _) => {
                let st = self.services.control(&spec.target, Verb::Stop).await?;
                Ok(format!("stopped {}: {}", spec.target, st.detail))
            }
            (_, Prepared::Net(fault)) => {
                let Revert::RemoveNetFault { control, .. } = revert else {
                    return Err("internal: wrong revert for a network fault".into());
                };
                self.proxies.control(&spec.target, Verb::Start).await?;
                let what = match fault.kind.as_str() {
                    "latency" => format!("+{} ms per connection", fault.latency_ms),
                    "drop" => format!("dropping {:.0}% of connections", fault.drop_rate * 100.0),
                    _ => "every connection cut".to_string(),
                };
                let id = fault.id.clone();
                proxy::update_control(control, |c| c.faults.push(fault))?;
                let control = control.clone();
                tokio::task::spawn_blocking(move || proxy::wait_seen(&control, &id, true))
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(format!(
                    "{} through proxy {}: {what}",
                    spec.kind.as_str(),
                    spec.target
                ))
            }
            (Kind::CorruptFile, Prepared::File(target, len)) => {
                corrupt(&target, len)?;
                Ok(format!("corrupted {} (original saved)", target.display()))
            }
            (Kind::CertExpiry, Prepared::Clock(secs)) => {
                self.clocks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.target.clone(), secs);
                Ok(format!(
                    "{}'s clock moved {} days ahead",
                    spec.target,
                    secs / 86_400
                ))
            }
            _ => Err("internal: nothing prepared for this fault".into()),
        }
    }

    /// Reverts one fault, if still open; `by` says why (plugin, run-end, expiry, signal, recovery).
    pub async fn revert(&self, id: &str, by: &str) -> Result<String, String> {
        let store = self.store()?;
        let Some((row, revert)) = journal::open_fault(store, id)? else {
            return Ok(format!("{id} was already reverted"));
        };
        let result = revert
            .run(Some(&self.clocks), self.services.redaction())
            .await;
        let (state, text) = match &result {
            Ok(t) => ("reverted", t.clone()),
            Err(e) => ("revert-failed", e.clone()),
        };
        journal::finish(store, id, state, by, &text)?;
        self.audit(
            "fault.reverted",
            &row.run_id,
            &row.kind,
            serde_json::json!({"id": id, "target": row.target, "by": by, "ok": result.is_ok(), "result": text}),
        );
        result
    }

    /// Reverts every open fault of a run (newest first).
    pub async fn revert_run(
        &self,
        run_id: &str,
        by: &str,
    ) -> Vec<(FaultRow, Result<String, String>)> {
        let Ok(store) = self.store() else {
            return Vec::new();
        };
        let open = journal::open_of_run(store, run_id).unwrap_or_default();
        let mut out = Vec::new();
        for row in open.into_iter().rev() {
            let r = self.revert(&row.id, by).await;
            out.push((row, r));
        }
        out
    }

    /// Open faults of a run.
    pub fn active(&self, run_id: &str) -> Vec<FaultRow> {
        self.store()
            .ok()
            .and_then(|s| journal::open_of_run(s, run_id).ok())
            .unwrap_or_default()
    }

    /// Reverts `id` when its time is up, unless something reverted it first.
    pub fn expire_later(self: &Arc<Self>, id: String, expires_at_ms: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            let wait = expires_at_ms.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if let Err(e) = me.revert(&id, "expiry").await {
                tracing::error!("could not revert expired fault {id}: {e}");
            }
        });
    }
}

/// What `prepare` set aside for `apply`.
enum Prepared {
    None,
    Net(proxy::NetFault),
    File(PathBuf, usize),
    Clock(i64),
}

/// The file `rel` inside `dir`, refusing absolute paths, `..` and symlinks anywhere on
/// the way, so a fault can only damage what the grant names.
fn contained_file(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "`{rel}` must be a plain relative path inside the granted directory"
        ));
    }
    let mut p = dir.to_path_buf();
    for c in rel_path.components() {
        p.push(c);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{} is a symlink; faults do not follow links",
                p.display()
            ));
        }
    }
    if !std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
        return Err(format!("{} is not a regular file", p.display()));
    }
    Ok(p)
}

/// Damages a file in place: flips every bit of up to 4 KiB in its middle (or, for an
/// empty file, writes garbage).
fn corrupt(target: &Path, len: usize) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(|e| format!("cannot open {}: {e}", target.display()))?;
    if len == 0 {
        f.write_all(b"\xde\xad\xbe\xef")
            .map_err(|e| e.to_string())?;
    } else {
        let n = len.min(4096);
        let start = (len - n) / 2;
        let mut buf = vec![0u8; n];
        f.seek(SeekFrom::Start(start as u64))
            .map_err(|e| e.to_string())?;
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        for b in &mut buf {
            *b = !*b;
        }
        f.seek(SeekFrom::Start(start as u64))
            .map_err(|e| e.to_string())?;
        f.write_all(&buf).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// Reverts faults left open by runcap processes that are gone, using only the journal.
/// Every command that opens the store calls this; returns what it did, for the operator.
pub async fn recover(store: &Arc<Store>) -> Vec<(FaultRow, Result<String, String>)> {
    let orphans = match journal::orphaned(store) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("cannot read the fault journal: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (row, revert) in orphans {
        // Without the manifest at hand, a restarted service's log gets the default rules.
        let result = revert.run(None, Arc::default()).await;
        let (state, text) = match &result {
            Ok(t) => ("reverted", t.clone()),
            Err(e) => ("revert-failed", e.clone()),
        };
        let _ = journal::finish(store, &row.id, state, "recovery", &text);
        let _ = store.audit(
            "fault.reverted",
            &row.run_id,
            &row.kind,
            &serde_json::json!({"id": row.id, "target": row.target, "by": "recovery", "ok": result.is_ok(), "result": text}),
        );
        out.push((row, result));
    }
    out
}

/// Faults, newest first, for `runcap faults`.
pub fn list(store: &Store, limit: usize) -> Result<Vec<FaultRow>, String> {
    journal::list(store, limit)
}

mod journal {
    //! The fault journal's table (store schema 3).

    use super::*;

    fn row(r: &rusqlite::Row) -> rusqlite::Result<FaultRow> {
        Ok(FaultRow {
            id: r.get(0)?,
            run_id: r.get(1)?,
            plugin: r.get(2)?,
            kind: r.get(3)?,
            target: r.get(4)?,
            state: r.get(5)?,
            detail: r.get(6)?,
            injected_at: r.get(7)?,
            expires_at: r.get(8)?,
            reverted_at: r.get(9)?,
            reverted_by: r.get(10)?,
            revert_result: r.get(11)?,
        })
    }

    const COLUMNS: &str = "id, run_id, plugin, kind, target, state, detail, injected_at, expires_at, reverted_at, reverted_by, revert_result";

    /// Writes a pending fault with its revert recipe, synced to disk before returning.
    pub fn insert(store: &Store, r: &FaultRow, spec: &Spec, revert: &Revert) -> Result<(), String> {
        let (pid, start) = crate::procinfo::this_process();
        let spec = serde_json::to_string(spec).unwrap_or_default();
        let revert = serde_json::to_string(revert).unwrap_or_default();
        store
            .with_conn(|c| {
                c.pragma_update(None, "synchronous", "FULL")?;
                let res = c.execute(
                    "INSERT INTO faults (id, run_id, plugin, kind, target, spec, revert, state, injected_at, expires_at, pid, pid_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11)",
                    params![r.id, r.run_id, r.plugin, r.kind, r.target, spec, revert, r.injected_at, r.expires_at, pid, start as i64],
                );
                c.pragma_update(None, "synchronous", "NORMAL")?;
                res.map(|_| ())
            })
            .map_err(|e| format!("cannot journal the fault, so it was not applied: {e}"))
    }

    pub fn set_state(store: &Store, id: &str, state: &str, detail: &str) -> Result<(), String> {
        store
            .with_conn(|c| {
                c.execute(
                    "UPDATE faults SET state = ?2, detail = ?3 WHERE id = ?1",
                    params![id, state, detail],
                )
                .map(|_| ())
            })
            .map_err(|e| e.to_string())
    }

    pub fn finish(
        store: &Store,
        id: &str,
        state: &str,
        by: &str,
        result: &str,
    ) -> Result<(), String> {
        store
            .with_conn(|c| {
                c.execute(
                    "UPDATE faults SET state = ?2, reverted_at = ?3, reverted_by = ?4, revert_result = ?5 WHERE id = ?1",
                    params![id, state, now_ms() as i64, by, result],
                )
                .map(|_| ())
            })
            .map_err(|e| e.to_string())
    }

    pub fn count_active(store: &Store, plugin: &str, run_id: &str) -> Result<u32, String> {
        store
            .with_conn(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM faults WHERE plugin = ?1 AND run_id = ?2 AND state IN ('pending', 'active')",
                    params![plugin, run_id],
                    |r| r.get(0),
                )
            })
            .map_err(|e| e.to_string())
    }

    /// An open fault with its recipe, or `None` if it is closed.
    pub fn open_fault(store: &Store, id: &str) -> Result<Option<(FaultRow, Revert)>, String> {
        let found: Option<(FaultRow, String)> = store
            .with_conn(|c| {
                let sql = format!("SELECT {COLUMNS}, revert FROM faults WHERE id = ?1 AND state IN ('pending', 'active')");
                let mut stmt = c.prepare(&sql)?;
                let mut rows = stmt.query([id])?;
                Ok(match rows.next()? {
                    Some(r) => Some((row(r)?, r.get(12)?)),
                    None => None,
                })
            })
            .map_err(|e| e.to_string())?;
        match found {
            None => Ok(None),
            Some((r, recipe)) => {
                let revert = serde_json::from_str(&recipe)
                    .map_err(|e| format!("fault {id} has an unreadable revert recipe: {e}"))?;
                Ok(Some((r, revert)))
            }
        }
    }

    pub fn open_of_run(store: &Store, run_id: &str) -> Result<Vec<FaultRow>, String> {
        store
            .with_conn(|c| {
                let sql = format!("SELECT {COLUMNS} FROM faults WHERE run_id = ?1 AND state IN ('pending', 'active') ORDER BY injected_at");
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map([run_id], row)?;
                rows.collect()
            })
            .map_err(|e| e.to_string())
    }

    /// Open faults whose runcap is gone.
    pub fn orphaned(store: &Store) -> Result<Vec<(FaultRow, Revert)>, String> {
        let rows: Vec<(FaultRow, String, i64, i64)> = store
            .with_conn(|c| {
                let sql = format!("SELECT {COLUMNS}, revert, pid, pid_start FROM faults WHERE state IN ('pending', 'active') ORDER BY injected_at DESC");
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map([], |r| Ok((row(r)?, r.get(12)?, r.get(13)?, r.get(14)?)))?;
                rows.collect()
            })
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, pid, start)| !crate::procinfo::alive(*pid as u32, *start as u64))
            .filter_map(|(r, recipe, _, _)| serde_json::from_str(&recipe).ok().map(|rv| (r, rv)))
            .collect())
    }

    pub fn list(store: &Store, limit: usize) -> Result<Vec<FaultRow>, String> {
        store
            .with_conn(|c| {
                let sql =
                    format!("SELECT {COLUMNS} FROM faults ORDER BY injected_at DESC LIMIT ?1");
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map([limit as i64], row)?;
                rows.collect()
            })
            .map_err(|e| e.to_string())
    }
}

/// Per-plugin access: its grant and the environment's fault manager.
pub struct FaultsAccess {
    pub grant: Arc<FaultsGrant>,
    pub manager: Arc<FaultManager>,
}

fn kind_from_wit(k: wit::Kind) -> Kind {
    match k {
        wit::Kind::Kill => Kind::Kill,
        wit::Kind::Stop => Kind::Stop,
        wit::Kind::Latency => Kind::Latency,
        wit::Kind::Drop => Kind::Drop,
        wit::Kind::Partition => Kind::Partition,
        wit::Kind::CorruptFile => Kind::CorruptFile,
        wit::Kind::CertExpiry => Kind::CertExpiry,
    }
}

fn kind_to_wit(k: &str) -> wit::Kind {
    match k {
        "kill" => wit::Kind::Kill,
        "stop" => wit::Kind::Stop,
        "latency" => wit::Kind::Latency,
        "drop" => wit::Kind::Drop,
        "partition" => wit::Kind::Partition,
        "corrupt-file" => wit::Kind::CorruptFile,
        _ => wit::Kind::CertExpiry,
    }
}

fn to_wit(r: &FaultRow) -> wit::Fault {
    wit::Fault {
        id: r.id.clone(),
        kind: kind_to_wit(&r.kind),
        target: r.target.clone(),
        injected_at_ms: r.injected_at as u64,
        expires_at_ms: r.expires_at as u64,
        detail: r.detail.clone(),
    }
}

impl wit::Host for HostState {
    async fn inject(
        &mut self,
        spec: wit::Spec,
    ) -> wasmtime::Result<Result<wit::Fault, wit::Error>> {
        let s = Spec {
            kind: kind_from_wit(spec.kind),
            target: spec.target,
            duration_ms: spec.duration_ms,
            latency_ms: spec.latency_ms,
            drop_rate: spec.drop_rate,
            path: spec.path,
            days: spec.days,
        };
        let op = s.kind.as_str();
        let Some(access) = self.granted.faults.clone() else {
            let reason = format!(
                "no faults grant; add [plugins.{}.grants.faults] with {op} = {{ targets = [\"{}\"], max_duration = \"…\" }}",
                self.plugin, s.target
            );
            self.record(CallRecord::denied("faults", op, &s.target, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        };
        if self.dry_run {
            if let Err(reason) = access.manager.check(&access.grant, &self.plugin, &s, 0) {
                self.record(CallRecord::denied("faults", op, &s.target, &reason));
                return Ok(Err(wit::Error::Denied(reason)));
            }
            let detail = format!(
                "dry run: would inject {op} on {} for {}",
                s.target,
                humantime::format_duration(Duration::from_millis(s.duration_ms))
            );
            self.record(CallRecord::dry_run("faults", op, &s.target).with_result(detail.clone()));
            let now = now_ms();
            return Ok(Ok(wit::Fault {
                id: "dry-run".into(),
                kind: spec.kind,
                target: s.target,
                injected_at_ms: now,
                expires_at_ms: now + s.duration_ms,
                detail,
            }));
        }
        let run_id = self.action.run_id.clone();
        match access
            .manager
            .inject(&run_id, &self.plugin, &access.grant, &s)
            .await
        {
            Ok(row) => {
                access
                    .manager
                    .expire_later(row.id.clone(), row.expires_at as u64);
                self.record(
                    CallRecord::allowed("faults", op, &s.target)
                        .with_result(format!("{}: {}", row.id, row.detail)),
                );
                Ok(Ok(to_wit(&row)))
            }
            Err(InjectError::Denied(reason)) => {
                self.record(CallRecord::denied("faults", op, &s.target, &reason));
                Ok(Err(wit::Error::Denied(reason)))
            }
            Err(InjectError::Failed(e)) => {
                self.record(
                    CallRecord::allowed("faults", op, &s.target)
                        .with_result(format!("failed: {e}")),
                );
                Ok(Err(wit::Error::Failed(e)))
            }
        }
    }

    async fn revert(&mut self, id: String) -> wasmtime::Result<Result<(), wit::Error>> {
        let Some(access) = self.granted.faults.clone() else {
            return Ok(Err(wit::Error::Denied("no faults grant".into())));
        };
        if id == "dry-run" {
            self.record(CallRecord::dry_run("faults", "revert", &id));
            return Ok(Ok(()));
        }
        // A plugin may revert only faults of its own run.
        if !access
            .manager
            .active(&self.action.run_id)
            .iter()
            .any(|f| f.id == id)
        {
            let reason = format!("{id} is not an active fault of this run");
            self.record(CallRecord::denied("faults", "revert", &id, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        }
        match access.manager.revert(&id, "plugin").await {
            Ok(t) => {
                self.record(CallRecord::allowed("faults", "revert", &id).with_result(t));
                Ok(Ok(()))
            }
            Err(e) => {
                self.record(
                    CallRecord::allowed("faults", "revert", &id)
                        .with_result(format!("failed: {e}")),
                );
                Ok(Err(wit::Error::Failed(e)))
            }
        }
    }

    async fn active(&mut self) -> wasmtime::Result<Vec<wit::Fault>> {
        let Some(access) = self.granted.faults.clone() else {
            return Ok(Vec::new());
        };
        Ok(access
            .manager
            .active(&self.action.run_id)
            .iter()
            .map(to_wit)
            .collect())
    }
}

/// A wall clock running `offset` seconds ahead of the real one (cert-expiry faults).
pub struct OffsetClock(pub i64);

impl wasmtime_wasi::HostWallClock for OffsetClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if self.0 >= 0 {
            real + Duration::from_secs(self.0 as u64)
        } else {
            real.saturating_sub(Duration::from_secs(self.0.unsigned_abs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> FaultsGrantConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn diff_names_new_kinds_targets_longer_durations_and_concurrency() {
        let old = grant("kill = { targets = [\"api\"], max_duration = \"1m\" }");
        let new = grant(
            "kill = { targets = [\"api\", \"db\"], max_duration = \"5m\" }\npartition = { targets = [\"api\"], max_duration = \"1m\" }\nmax_concurrent = 3",
        );
        let changes = diff(&old, &new);
        let widening: Vec<String> = changes
            .iter()
            .filter(|c| c.widens())
            .map(|c| c.path.to_string())
            .collect();
        assert_eq!(
            widening,
            [
                "kill.targets[1]",
                "kill.max_duration",
                "partition",
                "max_concurrent"
            ]
        );
        assert!(
            diff(&new, &old).iter().all(|c| !c.widens()),
            "the reverse only narrows"
        );
    }

    #[test]
    fn paths_cannot_leave_the_granted_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.db"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert!(contained_file(dir.path(), "ok.db").is_ok());
        for bad in ["../ok.db", "/etc/passwd", "link", "./ok.db", "missing"] {
            assert!(contained_file(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
