//! Remembering that a file was hashed, so an unchanged file is not hashed again: every
//! `runcap run` checks each plugin against its pin and each compiled artifact against
//! its recorded digest, and for a short command those hashes were a tenth of its time.
//!
//! A stamp records a file's identity (device, inode, size, modification and status-change
//! times, in nanoseconds) beside the digest it had. A file whose identity still matches
//! is the file that was hashed: writing to a file, or renaming another over it, changes
//! its status-change time (ctime), which only the kernel sets. Two rules keep that true:
//!
//! - a stamp is written only for a file whose ctime is more than [`SETTLED`] old, so a
//!   change made within the same clock tick as the hashing cannot hide behind an equal
//!   ctime (the rule git applies to its index);
//! - stamps live in a directory only this user can write (the compile cache's, checked
//!   before every use); someone who can write there can already replace a compiled
//!   artifact, which is outside what runcap defends.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How old a file's last change must be before its digest is remembered.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The identity of a file as `stat` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    /// The identity in `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed long enough ago for its identity to be trusted.
    fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.ctime_ns > SETTLED.as_nanos() as i128
    }

    fn line(&self, digest: &str) -> String {
        format!(
            "v1 {} {} {} {} {} {digest}\n",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

/// Where stamps are kept: a directory this user alone can write.
#[derive(Debug, Clone)]
pub struct Stamps {
    dir: PathBuf,
}

impl Stamps {
    /// Stamps in `dir` (created private if missing); `None` when it cannot be made so.
    pub fn open(dir: PathBuf) -> Option<Stamps> {
        match crate::engine::cache::prepare(&dir) {
            Ok(()) => Some(Stamps { dir }),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "not remembering digests: {e}");
                None
            }
        }
    }

    /// The stamps beside the compile cache (`$RUNCAP_CACHE_DIR/digests`, …).
    pub fn beside_cache() -> Option<Stamps> {
        Stamps::open(crate::engine::cache::CompileCache::default_dir()?.join("digests"))
    }

    /// The stamp file for `path` (by the path's bytes, so two files never share one).
    fn file_for(&self, path: &Path) -> PathBuf {
        let key = Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.dir.join(hex::encode(&key[..20]))
    }

    /// The digest `path` had when stamped, if it is still the same file (`meta` is its
    /// metadata now).
    pub fn recall(&self, path: &Path, meta: &std::fs::Metadata) -> Option<String> {
        let text = std::fs::read_to_string(self.file_for(path)).ok()?;
        let (_, digest) = text.trim_end().rsplit_once(' ')?;
        (!digest.is_empty() && Identity::of(meta).line(digest) == text).then(|| digest.to_string())
    }

    /// Remembers that `path`, as `meta` describes it, hashed to `digest`; nothing is
    /// remembered for a file changed too recently to be told apart from a later change.
    pub fn record(&self, path: &Path, meta: &std::fs::Metadata, digest: &str) {
        if Identity::of(meta).settled() {
            self.write(path, meta, digest);
        }
    }

    /// Writes a stamp as [`Stamps::record`] does for a settled file (a test's files are
    /// never settled: their ctime cannot be set back).
    #[cfg(test)]
    pub(crate) fn record_unchecked(&self, path: &Path, meta: &std::fs::Metadata, digest: &str) {
        self.write(path, meta, digest);
    }

    fn write(&self, path: &Path, meta: &std::fs::Metadata, digest: &str) {
        let line = Identity::of(meta).line(digest);
        let written = crate::engine::cache::write_atomically(&self.file_for(path), line.as_bytes());
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), "cannot remember a digest: {e}");
        }
    }

    /// Forgets `path`'s stamp.
    pub fn forget(&self, path: &Path) {
        let _ = std::fs::remove_file(self.file_for(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_recalled_and_a_changed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let stamps = Stamps::open(dir.path().join("digests")).unwrap();
        let file = dir.path().join("plugin.wasm");
        std::fs::write(&file, b"first").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        // Just written: too fresh to remember.
        stamps.record(&file, &meta, "d1");
        assert_eq!(stamps.recall(&file, &meta), None);
        // A settled file is remembered.
        stamps.record_unchecked(&file, &meta, "d1");
        assert_eq!(stamps.recall(&file, &meta).as_deref(), Some("d1"));
        // Any write changes its identity, even one that keeps its size and mtime.
        let mtime = meta.modified().unwrap();
        std::fs::write(&file, b"other").unwrap();
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(mtime).unwrap();
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(after.len(), meta.len());
        assert_eq!(after.modified().unwrap(), mtime);
        if Identity::of(&after).ctime_ns == Identity::of(&meta).ctime_ns {
            // A kernel with coarse timestamps put both writes in one clock tick: the case
            // the settling rule is for, and `record` would not have stamped the first.
            assert!(!Identity::of(&meta).settled());
        } else {
            assert_eq!(stamps.recall(&file, &after), None);
        }
        // Another file renamed over it is another file.
        let other = dir.path().join("other.wasm");
        std::fs::write(&other, b"first").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(
            stamps.recall(&file, &std::fs::metadata(&file).unwrap()),
            None
        );
        // And a stamp is per path.
        assert_eq!(stamps.recall(&other, &meta), None);
    }

    #[test]
    fn only_a_file_unchanged_for_a_while_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let mut id = Identity::of(&std::fs::metadata(&file).unwrap());
        assert!(!id.settled());
        id.ctime_ns -= (SETTLED.as_nanos() + 1_000_000) as i128;
        assert!(id.settled());
    }
}
