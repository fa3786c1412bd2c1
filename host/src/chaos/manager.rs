//! The fault manager: journals, applies, expires and reverts the faults of one
//! environment, and recovers the faults a dead runcap left open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::proxy::{self, ProxyManager};
use super::{
    Allowance, FaultError, FaultRow, FaultState, InjectError, Kind, Revert, RevertError, Spec,
};
use crate::engine::cache::write_atomically;
use crate::services::{ServiceManager, Verb};
use crate::store::Store;
use crate::store::records::now_ms;

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
    /// Runs that asked this manager for a fault: only they can have one to revert when
    /// they end, so the others end without reading the journal.
    injecting: Mutex<std::collections::HashSet<String>>,
}

impl FaultManager {
    /// The manager of an environment; its journal is in `store`, saved originals of
    /// corrupted files under `state_dir/faults`.
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
            injecting: Mutex::default(),
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

    fn store(&self) -> Result<&Arc<Store>, RevertError> {
        self.store.as_ref().ok_or(RevertError::NoStore)
    }

    /// Appends an audit row; a failure to do so is logged, never silent.
    pub fn audit(&self, kind: &str, run_id: &str, subject: &str, payload: serde_json::Value) {
        if let Some(s) = &self.store
            && let Err(e) = s.audit(kind, run_id, subject, &payload)
        {
            tracing::error!("could not audit {kind}: {e}");
        }
    }

    /// Journals, then applies, a fault the plugin's grant allows (kind, target and
    /// duration were checked by the capability; the number active is checked here).
    /// The returned row is active; the caller schedules its expiry with
    /// [`FaultManager::expire_later`].
    pub async fn inject(
        &self,
        run_id: &str,
        plugin: &str,
        allowance: &Allowance,
        spec: &Spec,
    ) -> Result<FaultRow, InjectError> {
        let _turn = self.gate.lock().await;
        self.injecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string());
        let store = self
            .store()
            .map_err(|e| InjectError::Failed(e.to_string()))?;
        self.check_concurrency(store, run_id, plugin, allowance, spec)?;
        let id = format!("f-{}", crate::runbook::new_run_id());
        let now = now_ms();
        let expires = now + spec.duration_ms;
        // Prepare everything the revert needs before anything changes.
        let (revert, prepared) = self
            .prepare(&id, allowance, spec, expires)
            .map_err(|e| InjectError::Failed(e.to_string()))?;
        let row = FaultRow {
            id: id.clone(),
            run_id: run_id.to_string(),
            plugin: plugin.to_string(),
            kind: spec.kind,
            target: spec.target.clone(),
            state: FaultState::Pending,
            detail: String::new(),
            injected_at: now as i64,
            expires_at: expires as i64,
            reverted_at: None,
            reverted_by: None,
            revert_result: None,
        };
        journal(store, &row, spec, &revert)?;
        match self.apply(spec, &revert, prepared).await {
            Ok(detail) => {
                if let Err(e) = store.set_fault_state(&id, FaultState::Active, &detail) {
                    tracing::error!("fault {id} is applied but could not be marked active: {e}");
                }
                self.audit(
                    "fault.injected",
                    run_id,
                    spec.kind.as_str(),
                    serde_json::json!({"id": id, "plugin": plugin, "target": spec.target, "expires_at": expires, "detail": detail}),
                );
                Ok(FaultRow {
                    state: FaultState::Active,
                    detail,
                    ..row
                })
            }
            Err(e) => {
                self.undo_failed_apply(store, &id, &revert, &e).await;
                Err(InjectError::Failed(e.to_string()))
            }
        }
    }

    /// Denies a fault beyond the number the grant allows active at once in a run.
    fn check_concurrency(
        &self,
        store: &Store,
        run_id: &str,
        plugin: &str,
        allowance: &Allowance,
        spec: &Spec,
    ) -> Result<(), InjectError> {
        let active_now = store
            .count_open_faults(plugin, run_id)
            .map_err(|e| InjectError::Failed(e.to_string()))?;
        if active_now < allowance.max_concurrent {
            return Ok(());
        }
        let reason = format!(
            "{plugin} already has {active_now} fault(s) active, the most {}.max_concurrent allows",
            allowance.key
        );
        self.audit(
            "fault.denied",
            run_id,
            spec.kind.as_str(),
            serde_json::json!({"plugin": plugin, "target": spec.target, "reason": reason}),
        );
        Err(InjectError::Denied(reason))
    }

    /// Undoes whatever part of a fault took hold before applying it failed, and
    /// journals how that went.
    async fn undo_failed_apply(&self, store: &Store, id: &str, revert: &Revert, e: &FaultError) {
        let undo = revert
            .run(Some(&self.clocks), self.services.redaction())
            .await;
        let (state, undo) = match undo {
            Ok(t) => (FaultState::Reverted, t),
            Err(u) => (FaultState::RevertFailed, u.to_string()),
        };
        let result = format!("apply failed: {e}; undo: {undo}");
        if let Err(j) = store.finish_fault(id, state, "apply-failed", &result) {
            tracing::error!("could not record the undo of fault {id}: {j}");
        }
    }

    /// Works out how the fault will be undone, saving what must be saved first.
    fn prepare(
        &self,
        id: &str,
        allowance: &Allowance,
        spec: &Spec,
        expires: u64,
    ) -> Result<(Revert, Prepared), FaultError> {
        Ok(match spec.kind {
            Kind::Kill | Kind::Stop => {
                let (driver, dir) =
                    self.services
                        .driver(&spec.target)
                        .ok_or_else(|| FaultError::NoService {
                            name: spec.target.clone(),
                        })?;
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
                    return Err(FaultError::NoLatency);
                }
                if spec.kind == Kind::Drop && fault.drop_rate <= 0.0 {
                    return Err(FaultError::NoDropRate);
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
            Kind::CorruptFile => self.prepare_corrupt(id, allowance, spec)?,
            Kind::CertExpiry => (
                Revert::ResetClock {
                    plugin: spec.target.clone(),
                },
                Prepared::Clock(i64::from(spec.days.unwrap_or(365)) * 86_400),
            ),
        })
    }

    /// Saves the original of the file a corrupt-file fault damages, for its revert.
    fn prepare_corrupt(
        &self,
        id: &str,
        allowance: &Allowance,
        spec: &Spec,
    ) -> Result<(Revert, Prepared), FaultError> {
        let dir = allowance.dir.as_deref().ok_or(FaultError::NoDirectory)?;
        let rel = spec.path.as_deref().ok_or(FaultError::NoPath)?;
        let target = contained_file(dir, rel)?;
        let bytes = std::fs::read(&target).map_err(|source| FaultError::Read {
            path: target.clone(),
            source,
        })?;
        std::fs::create_dir_all(&self.dir).map_err(|source| FaultError::CreateDir {
            dir: self.dir.clone(),
            source,
        })?;
        let backup = self.dir.join(format!("{id}.orig"));
        write_atomically(&backup, &bytes).map_err(FaultError::SaveOriginal)?;
        Ok((
            Revert::RestoreFile {
                target: target.clone(),
                backup,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
            Prepared::File(target, bytes.len()),
        ))
    }

    /// Applies a prepared fault; the text says what it did.
    async fn apply(
        &self,
        spec: &Spec,
        revert: &Revert,
        prepared: Prepared,
    ) -> Result<String, FaultError> {
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
                    return Err(FaultError::Internal("wrong revert for a network fault"));
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
                    .await??;
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
            _ => Err(FaultError::Internal("nothing prepared for this fault")),
        }
    }

    /// Reverts one fault, if still open; `by` says why (plugin, run-end, expiry, signal,
    /// recovery).
    pub async fn revert(&self, id: &str, by: &str) -> Result<String, RevertError> {
        let store = self.store()?;
        let Some(open) = store.open_fault(id)? else {
            return Ok(format!("{id} was already reverted"));
        };
        let revert: Revert =
            serde_json::from_str(&open.revert).map_err(|e| RevertError::Recipe {
                id: id.to_string(),
                message: e.to_string(),
            })?;
        let result = revert
            .run(Some(&self.clocks), self.services.redaction())
            .await;
        finish(store, &open.row, by, result)
    }

    /// Reverts every open fault of a run (newest first), as the run ends. A journal that
    /// cannot be read is an error of its own, never an empty list. A run that never asked
    /// this manager for a fault has none: the journal is not read.
    pub async fn revert_run(
        &self,
        run_id: &str,
        by: &str,
    ) -> Result<Vec<(FaultRow, Result<String, RevertError>)>, RevertError> {
        let asked = self
            .injecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        let store = match self.store() {
            Ok(s) if asked => s,
            // Without a store nothing could have been injected.
            _ => return Ok(Vec::new()),
        };
        let open = store.open_faults_of_run(run_id)?;
        let mut out = Vec::new();
        for row in open.into_iter().rev() {
            let r = self.revert(&row.id, by).await;
            out.push((row, r));
        }
        Ok(out)
    }

    /// Open faults of a run.
    pub fn active(&self, run_id: &str) -> Result<Vec<FaultRow>, RevertError> {
        Ok(self.store()?.open_faults_of_run(run_id)?)
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

/// Writes a fault and the recipe that undoes it to the journal, before it is applied.
fn journal(store: &Store, row: &FaultRow, spec: &Spec, revert: &Revert) -> Result<(), InjectError> {
    let encode =
        |e: serde_json::Error| InjectError::Failed(format!("cannot journal the fault: {e}"));
    let spec_json = serde_json::to_string(spec).map_err(encode)?;
    let revert_json = serde_json::to_string(revert).map_err(encode)?;
    store
        .insert_fault(
            row,
            &spec_json,
            &revert_json,
            crate::procinfo::this_process(),
        )
        .map_err(|e| {
            InjectError::Failed(format!(
                "cannot journal the fault, so it was not applied: {e}"
            ))
        })
}

/// Records how a revert went in the journal and the audit chain; the revert's own error
/// wins over a failure to record it, and both are reported.
fn finish(
    store: &Store,
    row: &FaultRow,
    by: &str,
    result: Result<String, FaultError>,
) -> Result<String, RevertError> {
    let (state, text) = match &result {
        Ok(t) => (FaultState::Reverted, t.clone()),
        Err(e) => (FaultState::RevertFailed, e.to_string()),
    };
    let journaled = store.finish_fault(&row.id, state, by, &text);
    let audited = store.audit(
        "fault.reverted",
        &row.run_id,
        row.kind.as_str(),
        &serde_json::json!({"id": row.id, "target": row.target, "by": by, "ok": result.is_ok(), "result": text}),
    );
    let result = result.map_err(RevertError::Failed)?;
    journaled?;
    audited?;
    Ok(result)
}

/// What `prepare` set aside for `apply`.
enum Prepared {
    None,
    Net(proxy::NetFault),
    File(PathBuf, usize),
    Clock(i64),
}

/// Why a corrupt-file fault's path was refused: it must name a regular file inside the
/// granted directory.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("`{rel}` must be a plain relative path inside the granted directory")]
    NotPlain { rel: String },
    #[error("{}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} leads outside {} through a symlink; faults follow links only within the granted directory",
        path.display(),
        dir.display()
    )]
    Outside { path: PathBuf, dir: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
}

/// The file `rel` inside `dir`, refusing absolute paths and `..`. Symlinks on the way are
/// followed only while they stay inside `dir` (a release layout's `current/app.db`), so a
/// fault can only damage what the grant names; the resolved path is returned.
pub fn contained_file(dir: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(PathError::NotPlain {
            rel: rel.to_string(),
        });
    }
    let canonical = |path: &Path| {
        std::fs::canonicalize(path).map_err(|source| PathError::Resolve {
            path: path.to_path_buf(),
            source,
        })
    };
    let root = canonical(dir)?;
    let joined = dir.join(rel_path);
    let resolved = canonical(&joined)?;
    if !resolved.starts_with(&root) {
        return Err(PathError::Outside {
            path: joined,
            dir: dir.to_path_buf(),
        });
    }
    if !std::fs::metadata(&resolved)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(PathError::NotAFile { path: joined });
    }
    Ok(resolved)
}

/// Damages a file in place: flips every bit of up to 4 KiB in its middle (or, for an
/// empty file, writes garbage).
fn corrupt(target: &Path, len: usize) -> Result<(), FaultError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(|source| FaultError::Open {
            path: target.to_path_buf(),
            source,
        })?;
    if len == 0 {
        f.write_all(b"\xde\xad\xbe\xef")
            .map_err(FaultError::Write)?;
    } else {
        let n = len.min(4096);
        let start = (len - n) / 2;
        let mut buf = vec![0u8; n];
        f.seek(SeekFrom::Start(start as u64))
            .map_err(FaultError::Write)?;
        f.read_exact(&mut buf).map_err(FaultError::Write)?;
        for b in &mut buf {
            *b = !*b;
        }
        f.seek(SeekFrom::Start(start as u64))
            .map_err(FaultError::Write)?;
        f.write_all(&buf).map_err(FaultError::Write)?;
    }
    f.sync_all().map_err(FaultError::Write)
}

/// What recovery after a crash found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Each orphaned fault and how reverting it went.
    pub reverted: Vec<(FaultRow, Result<String, RevertError>)>,
    /// What stopped recovery from even trying (an unreadable journal).
    pub errors: Vec<RevertError>,
}

impl Recovery {
    /// Whether everything that needed reverting was reverted.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.reverted.iter().all(|(_, r)| r.is_ok())
    }
}

/// Reverts faults left open by runcap processes that are gone, using only the journal.
/// `run`, `recover` and `serve` call this explicitly; read-only commands do not.
pub async fn recover(store: &Arc<Store>) -> Recovery {
    let mut out = Recovery::default();
    let open = match store.open_faults() {
        Ok(o) => o,
        Err(e) => {
            out.errors.push(RevertError::Journal(e));
            return out;
        }
    };
    for f in open {
        if crate::procinfo::alive(f.pid, f.pid_start) {
            continue;
        }
        let result = match serde_json::from_str::<Revert>(&f.revert) {
            // Without the manifest at hand, a restarted service's log gets the default rules.
            Ok(revert) => {
                let done = revert.run(None, Arc::default()).await;
                finish(store, &f.row, "recovery", done)
            }
            Err(e) => Err(RevertError::Recipe {
                id: f.row.id.clone(),
                message: e.to_string(),
            }),
        };
        out.reverted.push((f.row, result));
    }
    out
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

    #[test]
    fn paths_cannot_leave_the_granted_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.db"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("up")).unwrap();
        // A release layout: `current` points at a release inside the grant.
        std::fs::create_dir_all(dir.path().join("releases/v2")).unwrap();
        std::fs::write(dir.path().join("releases/v2/app.db"), b"x").unwrap();
        std::os::unix::fs::symlink("releases/v2", dir.path().join("current")).unwrap();
        assert!(contained_file(dir.path(), "ok.db").is_ok());
        let followed = contained_file(dir.path(), "current/app.db").unwrap();
        assert!(
            followed.ends_with("releases/v2/app.db"),
            "{}",
            followed.display()
        );
        for bad in [
            "../ok.db",
            "/etc/passwd",
            "link",
            "./ok.db",
            "missing",
            "current",
            "up/x",
        ] {
            assert!(contained_file(dir.path(), bad).is_err(), "{bad}");
        }
        let outside = contained_file(dir.path(), "link").unwrap_err().to_string();
        assert!(outside.contains("leads outside"), "{outside}");
    }
}
