//! Crash-safe file writes: a file appears under its final name complete or not at all.
//!
//! Every repository file is written to a temporary name in the same directory, flushed to disk,
//! then renamed over its final name; the directory itself is flushed when the caller needs the new
//! name to survive a power loss at that point (chunk directories are flushed in one batch before a
//! snapshot record is written, see `ChunkStore::sync_dirs`).

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
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

/// A file being written that takes its final name only once complete, so a reader never sees
/// half of it. Where the file system allows, it is an unnamed file (`O_TMPFILE`) linked into
/// place: one directory entry instead of a temporary name created and renamed away, and a
/// crash leaves nothing behind. Elsewhere it is a temporary name beside its destination,
/// renamed into place (and removed if the file is dropped unpublished).
pub(crate) struct NewFile {
    file: File,
    /// The temporary name, when the file has one.
    temp: Option<PathBuf>,
}

impl NewFile {
    /// Creates a file to be published as `dest`, in `dest`'s directory.
    pub(crate) fn create(dest: &Path) -> Result<NewFile> {
        // Without `/proc` an unnamed file could not be linked by an unprivileged process.
        static LINKABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*LINKABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
            return NewFile::named(dest);
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let c_dir = c_path(dir).ctx("create", dest)?;
        // SAFETY: open with a NUL-terminated path we own; the descriptor is taken over below.
        let fd = unsafe {
            libc::open(
                c_dir.as_ptr(),
                libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
                FILE_MODE,
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and nothing else owns it.
            let file = unsafe { File::from_raw_fd(fd) };
            return Ok(NewFile { file, temp: None });
        }
        let e = io::Error::last_os_error();
        // File systems without unnamed files refuse in one of these ways.
        if !matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
        ) {
            return Err(Error::io("create", dest, e));
        }
        NewFile::named(dest)
    }

    /// A file under a temporary name beside `dest`.
    fn named(dest: &Path) -> Result<NewFile> {
        let temp = temp_path_for(dest)?;
        let file = create_new(&temp)?;
        Ok(NewFile {
            file,
            temp: Some(temp),
        })
    }

    /// The file, to write and stamp.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file its final name. With `replace`, whatever file is at `dest` is replaced
    /// (atomically, by a rename); without, an existing `dest` fails with
    /// [`io::ErrorKind::AlreadyExists`] and is left alone.
    pub(crate) fn publish(mut self, dest: &Path, replace: bool) -> io::Result<()> {
        let temp = match self.temp.take() {
            Some(temp) => temp,
            None if !replace => return link_unnamed(&self.file, dest),
            None => {
                // A name of its own first, then the rename that replaces atomically.
                let temp = temp_path_for(dest).map_err(io::Error::other)?;
                link_unnamed(&self.file, &temp)?;
                temp
            }
        };
        let result = if replace {
            fs::rename(&temp, dest)
        } else {
            rename_no_replace(&temp, dest)
        };
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

impl Drop for NewFile {
    /// An unpublished file leaves no name behind (an unnamed one vanishes by itself).
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Links an unnamed file at `dest`. Linking a descriptor directly needs a capability
/// (`CAP_DAC_READ_SEARCH`); without it the kernel answers `ENOENT` and the file is linked
/// through its `/proc/self/fd` entry instead.
fn link_unnamed(file: &File, dest: &Path) -> io::Result<()> {
    let c_dest = c_path(dest)?;
    // SAFETY: linkat with a descriptor we own and NUL-terminated paths.
    match os_result(unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_dest.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    }) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => link_through_proc(file, &c_dest),
        other => other,
    }
}

/// A system call's return code as a result.
fn os_result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn link_through_proc(file: &File, c_dest: &CStr) -> io::Result<()> {
    let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: linkat with NUL-terminated paths we own.
    os_result(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            c_dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Renames `from` to `to` unless `to` exists (then [`io::ErrorKind::AlreadyExists`]). A file
/// system without that kind of rename gets a hard link and an unlink, which fail the same way.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let (c_from, c_to) = (c_path(from)?, c_path(to)?);
    // SAFETY: renameat2 with NUL-terminated paths we own.
    match os_result(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    }) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        other => other,
    }
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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn written(mut f: NewFile, data: &[u8]) -> NewFile {
        f.file().write_all(data).unwrap();
        f
    }

    /// Both kinds of new file: published without replacing, refused over an existing name,
    /// replacing with `replace`, and leaving no name behind when dropped.
    #[test]
    fn new_files_appear_whole_and_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, create) in [
            ("unnamed", NewFile::create as fn(&Path) -> Result<NewFile>),
            ("named", NewFile::named),
        ] {
            let dest = dir.path().join(kind);
            let first = written(create(&dest).unwrap(), b"first");
            assert_eq!(first.temp.is_none(), kind == "unnamed");
            first.publish(&dest, false).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"first");

            let refused = written(create(&dest).unwrap(), b"second");
            let e = refused.publish(&dest, false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{kind}: {e}");
            assert_eq!(fs::read(&dest).unwrap(), b"first");

            written(create(&dest).unwrap(), b"third")
                .publish(&dest, true)
                .unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"third");

            drop(written(create(&dest).unwrap(), b"dropped"));
        }
        assert_eq!(names(dir.path()), ["named", "unnamed"]);
    }

    /// Without the capability to link a descriptor directly, the file is linked through
    /// `/proc/self/fd`.
    #[test]
    fn unnamed_files_link_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let mut f = NewFile::create(&dest).unwrap();
        f.file().write_all(b"data").unwrap();
        link_through_proc(&f.file, &c_path(&dest).unwrap()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"data");
        let e = link_through_proc(&f.file, &c_path(&dest).unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
