//! One run of a runbook at a time, across every runcap sharing a state directory (a
//! human's `runcap run`, cron, a server): the run holds an exclusive lock on
//! `locks/runbook-NAME.lock` until it ends. Another run of the same runbook waits
//! for it or is refused, as the runbook's `overlap` says. The lock is the kernel's
//! (`flock`), so a runcap that dies releases it with its last descriptor.
//!
//! A released lock's file stays open for the next run of the runbook in this process (a
//! server runs the same runbooks every few seconds): taking it again is then one `flock`,
//! one `fstat` and one write instead of a directory check, an open, a truncate and a close.
//! Each holder still has a descriptor of its own, since `flock` does not exclude two
//! holders sharing one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::stop::{StopLevel, StopSignal};
use crate::manifest::model::Overlap;

/// Held for the length of a run; dropping it lets the next run of the runbook in.
#[derive(Debug)]
pub struct RunbookLock {
    file: Option<LockFile>,
}

/// An open lock file and what this process knows of its length.
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
    file: File,
    /// The file's length as this process last left it; `None` when not known.
    len: Option<u64>,
}

/// Released lock files kept open, at most one per path and [`MAX_IDLE`] in all.
static IDLE: Mutex<Option<HashMap<PathBuf, LockFile>>> = Mutex::new(None);

/// How many released lock files stay open: a server with more runbooks than this closes
/// the files of the ones past it, rather than spend its descriptors on them.
const MAX_IDLE: usize = 128;

impl Drop for RunbookLock {
    fn drop(&mut self) {
        let Some(lock) = self.file.take() else { return };
        // Closing would release the lock too; a file that cannot be unlocked is closed.
        if lock.file.unlock().is_err() {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        let idle = idle.get_or_insert_default();
        if idle.len() < MAX_IDLE {
            idle.entry(lock.path.clone()).or_insert(lock);
        }
    }
}

/// Holder notes are written over the last one at this width, padded with spaces, so the
/// file never needs truncating: truncating makes ext4 do work (and, to zero, flush the
/// file to disk when it is closed).
const NOTE_WIDTH: usize = 64;

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
    let mut lock = match take_idle(&path) {
        Some(l) => l,
        None => open(&dir, &path).map_err(io)?,
    };
    let mut told = false;
    loop {
        match lock.file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = holder(&lock.file);
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
    // Who holds it, for the next run that finds it taken.
    let note = format!(
        "{:<NOTE_WIDTH$}",
        format!("run {run_id} (pid {})", std::process::id())
    );
    lock.file.write_all_at(note.as_bytes(), 0).map_err(io)?;
    let len = note.len() as u64;
    if lock.len != Some(len) {
        lock.file.set_len(len).map_err(io)?;
        lock.len = Some(len);
    }
    Ok(RunbookLock { file: Some(lock) })
}

/// The idle open file of `path`, if a released lock left one and it is still the file at
/// `path`: one deleted since (a state directory cleaned by hand) would exclude nobody who
/// opens the path now.
fn take_idle(path: &Path) -> Option<LockFile> {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let lock = idle.as_mut()?.remove(path)?;
    lock.file
        .metadata()
        .is_ok_and(|m| m.nlink() > 0)
        .then_some(lock)
}

/// Opens (creating it and its directory if needed) the lock file at `path`.
fn open(dir: &Path, path: &Path) -> std::io::Result<LockFile> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(LockFile {
        path: path.to_path_buf(),
        file,
        len: None,
    })
}

/// What the holder wrote about itself, or a plain word if it could not be read.
fn holder(file: &File) -> String {
    let mut buf = [0u8; 200];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    match text.trim() {
        "" => "another run".to_string(),
        said => said.to_string(),
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
    async fn a_lock_file_kept_open_excludes_as_a_fresh_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let never = StopSignal::never();
        let long = "x".repeat(NOTE_WIDTH * 2);
        drop(
            acquire(dir.path(), "r", &long, Overlap::Refuse, &never, |_| {})
                .await
                .unwrap(),
        );
        // Taken again from the file left open: refused to a second run, and the shorter
        // note leaves nothing of the longer one behind.
        let held = acquire(dir.path(), "r", "run-2", Overlap::Refuse, &never, |_| {})
            .await
            .unwrap();
        let e = acquire(dir.path(), "r", "run-3", Overlap::Refuse, &never, |_| {})
            .await
            .unwrap_err();
        let said = format!("(run run-2 (pid {}))", std::process::id());
        assert!(
            e.to_string()
                .ends_with(&format!("{said}; its overlap policy is \"refuse\"")),
            "{e}"
        );
        drop(held);

        // The state directory cleaned by hand between runs: the next run locks the file
        // that is at the path now, which another opener sees taken.
        std::fs::remove_dir_all(dir.path().join("locks")).unwrap();
        let _held = acquire(dir.path(), "r", "run-4", Overlap::Refuse, &never, |_| {})
            .await
            .unwrap();
        let other = File::open(dir.path().join("locks/runbook-r.lock")).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    }

    #[tokio::test]
    async fn at_most_a_bounded_number_of_released_lock_files_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let never = StopSignal::never();
        for i in 0..MAX_IDLE + 10 {
            let name = format!("r{i}");
            drop(
                acquire(dir.path(), &name, "run", Overlap::Refuse, &never, |_| {})
                    .await
                    .unwrap(),
            );
        }
        let idle = IDLE.lock().unwrap();
        assert!(idle.as_ref().unwrap().len() <= MAX_IDLE);
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
