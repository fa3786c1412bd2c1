//! The recipe that undoes a fault: self-contained, so it works after a crash without
//! the manifest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FaultError, proxy};
use crate::engine::cache::write_atomically;
use crate::services::{self, Driver, Verb};

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
    /// Undoes the fault; `clocks` holds moved plugin clocks (absent after a crash, when
    /// they died with the process that moved them).
    pub(super) async fn run(
        &self,
        clocks: Option<&Mutex<HashMap<String, i64>>>,
        redaction: Arc<crate::redaction::Spec>,
    ) -> Result<String, FaultError> {
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
                let bytes = std::fs::read(backup).map_err(|source| FaultError::ReadOriginal {
                    backup: backup.clone(),
                    source,
                })?;
                if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                    return Err(FaultError::OriginalChanged {
                        backup: backup.clone(),
                        target: target.clone(),
                    });
                }
                write_atomically(target, &bytes).map_err(|source| FaultError::Restore {
                    target: target.clone(),
                    source,
                })?;
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
