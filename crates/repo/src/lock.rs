//! Repository lock: shared for operations that add or read data, exclusive for `prune`.
//!
//! `prune` deletes chunks no snapshot references; a backup running at the same time may just
//! have decided a chunk "already exists" and be about to reference it. An advisory `flock` on
//! `locks/repo.lock` keeps them apart. The kernel drops the lock when the holder exits, even on
//! SIGKILL, so a crashed backup never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::atomic::FILE_MODE;
use crate::error::{Error, IoContext, Result};

/// Directory holding the lock file.
pub(crate) const LOCKS_DIR: &str = "locks";

/// A held lock; released on drop.
pub(crate) struct RepoLock {
    _file: Option<File>,
}

/// Lock mode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Many holders (snapshot, restore, verify, forget).
    Shared,
    /// One holder, nobody else (prune).
    Exclusive,
}

impl RepoLock {
    /// Takes the lock without waiting; `operation` names the caller in the error.
    pub(crate) fn acquire(root: &Path, mode: Mode, operation: &'static str) -> Result<RepoLock> {
        let dir = root.join(LOCKS_DIR);
        let path = dir.join("repo.lock");
        let opened = crate::atomic::create_dir(&dir).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(&path)
                .ctx("open lock file", &path)
        });
        let file = match opened {
            Ok(f) => f,
            // A repository on read-only media (restoring from a mounted copy) cannot be
            // changed by anyone, so readers need no lock there.
            Err(_) if mode == Mode::Shared && read_only(root) => {
                return Ok(RepoLock { _file: None });
            }
            Err(e) => return Err(e),
        };
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | libc::LOCK_NB;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(RepoLock { _file: Some(file) });
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(Error::Locked {
                        path: root.to_path_buf(),
                        wanted: operation,
                        mode: match mode {
                            Mode::Shared => "shared",
                            Mode::Exclusive => "exclusive",
                        },
                    });
                }
                _ => return Err(Error::io("lock", &path, err)),
            }
        }
    }
}

/// Whether the repository directory cannot be written (read-only mount or permissions).
fn read_only(root: &Path) -> bool {
    let c = match std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(root.as_os_str())) {
        Ok(c) => c,
        Err(_) => return false,
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) != 0 }
}
