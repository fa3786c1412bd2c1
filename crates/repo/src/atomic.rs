//! Crash-safe file writes: a file appears under its final name complete or not at all.
//!
//! Every repository file is written to a temporary name in the same directory, flushed to disk,
//! then renamed over its final name; the directory itself is flushed when the caller needs the new
//! name to survive a power loss at that point (chunk directories are flushed in one batch before a
//! snapshot record is written, see `ChunkStore::sync_dirs`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Prefix of every temporary file the repository creates; `prune` removes stale ones.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Permission bits of repository files: backups are sensitive even when encrypted.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Permission bits of repository directories.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Fills an array with bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| Error::Internal(format!("the system random generator failed: {e}")))?;
    Ok(out)
}

/// Whether a directory entry name is one of our temporary files.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// A fresh temporary path beside `path` (same directory, so rename is atomic).
pub(crate) fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let rnd = hex::encode(random_bytes::<8>()?);
    Ok(dir.join(format!("{TEMP_PREFIX}{rnd}")))
}

/// Creates a new file exclusively with repository permissions.
pub(crate) fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .ctx("create", path)
}

/// Writes `data` to `path` atomically: temp file, fsync, rename; fsyncs the directory too when
/// `sync_dir` is set.
pub(crate) fn write_atomic(path: &Path, data: &[u8], sync_dir: bool) -> Result<()> {
    let tmp = temp_path_for(path)?;
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("flush to disk", &tmp)?;
        drop(f);
        fs::rename(&tmp, path).ctx("rename into place", path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if sync_dir {
        fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Flushes a directory's entries (new names, removals) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("open directory", dir)?;
    f.sync_all().ctx("flush directory", dir)
}

/// Creates a directory (and parents) with repository permissions; existing is fine.
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .ctx("create directory", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
