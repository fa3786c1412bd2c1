//! One run of a runbook at a time, across every runcap sharing a state directory (a
//! human's `runcap run`, cron, a server): the run holds an exclusive lock on
//! `locks/runbook-NAME.lock` until it ends. Another run of the same runbook waits
//! for it or is refused, as the runbook's `overlap` says. The lock is the kernel's
//! (`flock`), so a runcap that dies releases it with its last descriptor.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::stop::{StopLevel, StopSignal};
use crate::manifest::model::Overlap;

/// Held for the length of a run; dropping it lets the next run of the runbook in.
#[derive(Debug)]
pub struct RunbookLock {
    _file: File,
}

/// Why a run did not get its runbook's lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("runbook `{runbook}` is already running ({holder}); its overlap policy is \"refuse\"")]
    Busy { runbook: String, holder: String },
    #[error("stopped while waiting for the other run of runbook `{runbook}` to end")]
    Stopped { runbook: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How often a waiting run tries the lock again.
const RETRY: Duration = Duration::from_millis(50);

/// Takes the lock of `runbook` under `state_dir` for run `run_id`. When another run
/// holds it: refuses, or waits (calling `waiting` once with who holds it) until it is
/// free or the run is stopped.
pub async fn acquire(
    state_dir: &Path,
    runbook: &str,
    run_id: &str,
    overlap: Overlap,
    stop: &StopSignal,
    mut waiting: impl FnMut(&str),
) -> Result<RunbookLock, LockError> {
    let dir = state_dir.join("locks");
    let path = dir.join(format!("runbook-{runbook}.lock"));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = holder(&mut file);
        if overlap == Overlap::Refuse {
            return Err(LockError::Busy {
                runbook: runbook.to_string(),
                holder,
            });
        }
        if !told {
            waiting(&holder);
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(StopLevel::Stop) => {
                return Err(LockError::Stopped { runbook: runbook.to_string() });
            }
        }
    }
    // Who holds it, for the next run that finds it taken. Written over the last note and
    // then cut to length: truncating to zero first would make the file system flush it
    // to disk when it is closed (ext4's replace-by-truncate heuristic), on every run.
    let note = format!("run {run_id} (pid {})", std::process::id());
    file.rewind()
        .and_then(|_| file.write_all(note.as_bytes()))
        .and_then(|_| file.set_len(note.len() as u64))
        .map_err(io)?;
    Ok(RunbookLock { _file: file })
}

/// What the holder wrote about itself, or a plain word if it could not be read.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file
        .rewind()
        .and_then(|_| file.take(200).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
        _ => "another run".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_run_waits_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let never = StopSignal::never();
        let first = acquire(dir.path(), "r", "run-1", Overlap::Wait, &never, |_| {})
            .await
            .unwrap();
        let e = acquire(dir.path(), "r", "run-2", Overlap::Refuse, &never, |_| {})
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("run run-1 (pid {})", std::process::id())),
            "{e}"
        );
        // Another runbook is not held up.
        acquire(
            dir.path(),
            "other",
            "run-3",
            Overlap::Refuse,
            &never,
            |_| {},
        )
        .await
        .unwrap();

        // A waiting run says who it waits for, and runs once the first ends.
        let (told_tx, mut told_rx) = tokio::sync::mpsc::unbounded_channel();
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move {
            acquire(
                &path,
                "r",
                "run-4",
                Overlap::Wait,
                &StopSignal::never(),
                |h| {
                    let _ = told_tx.send(h.to_string());
                },
            )
            .await
        });
        let holder = told_rx.recv().await.unwrap();
        assert!(holder.contains("run run-1"), "{holder}");
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn waiting_ends_when_the_run_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let never = StopSignal::never();
        let _held = acquire(dir.path(), "r", "run-1", Overlap::Wait, &never, |_| {})
            .await
            .unwrap();
        let (stopper, stop) = super::super::stop::channel();
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move {
            acquire(&path, "r", "run-2", Overlap::Wait, &stop, |_| {}).await
        });
        stopper.escalate();
        let e = waiter.await.unwrap().unwrap_err();
        assert!(matches!(e, LockError::Stopped { .. }), "{e}");
    }
}
