//! On-disk cache of precompiled components.
//!
//! Deserializing a precompiled artifact is `unsafe` in wasmtime: a tampered file is
//! native code. So the cache lives in a directory only this user can write (checked
//! before every use, refused otherwise), entries are written atomically (temp file,
//! fsync, rename), and the key covers the plugin's sha256 and the engine's
//! compatibility hash (wasmtime version and configuration). The plugin file itself is
//! re-hashed against its pin before the cache is consulted.
//!
//! Each entry is two files: the artifact (`KEY.cwasm`, exactly as wasmtime wrote it, so
//! it is mapped into memory rather than read and copied) and a header beside it
//! (`KEY.sum`) binding it to its source: the sha256 of the component it was compiled
//! from, the BLAKE3 digest of the artifact, and what the component imports and exports
//! (so a cache hit needs no read of the plugin file beyond its pin). Both are checked
//! before the artifact is deserialized, so an entry copied under another plugin's key,
//! truncated or patched is recompiled instead of run. An artifact whose digest was
//! checked once and that has not changed since (see [`crate::stamps`]) is not hashed
//! again. (Someone who can write this user's files can rewrite an entry and its header
//! alike: that is outside what the cache defends, as the README's security model says.)
//!
//! The directory is bounded: after each store, the least recently used entries (by
//! their header's modification time, set at every use) are removed until the total
//! fits `RUNCAP_CACHE_MAX_MB` (default 256 MiB).

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::inspect::Declared;

/// Marks a header in this format (version 4: the header in its own file, the artifact's
/// digest BLAKE3, then the component's imports and exports; entries of earlier versions
/// are recompiled).
const MAGIC: &[u8; 8] = b"rcapc\x004\n";
/// Magic, component sha256 (the plugin's pin), artifact BLAKE3; the declarations follow.
const HEADER_LEN: usize = 8 + 32 + 32;
/// Default bound on the cache directory's size.
const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Where compiled components are kept between runs.
pub struct CompileCache {
    dir: Option<PathBuf>,
    max_bytes: u64,
    /// Artifacts whose digest was checked and that have not changed since.
    stamps: Option<crate::stamps::Stamps>,
}

/// Feeds `Hash` output into sha256 so the key is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// The default directory: `$RUNCAP_CACHE_DIR`, else `$XDG_CACHE_HOME/runcap`, else
    /// `~/.cache/runcap`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("RUNCAP_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("runcap"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("runcap"))
    }

    /// A cache in `dir`, created private if missing. A directory other users can
    /// write is not used at all (everything is compiled afresh) and a warning says why.
    pub fn open(dir: Option<PathBuf>) -> Self {
        let stamps = dir
            .as_ref()
            .and_then(|d| crate::stamps::Stamps::open(d.join("digests")));
        let dir = dir
            .map(|d| d.join("components"))
            .and_then(|d| match prepare(&d) {
                Ok(()) => Some(d),
                Err(e) => {
                    tracing::warn!(dir = %d.display(), "not using the compile cache: {e}");
                    None
                }
            });
        let max_bytes = std::env::var("RUNCAP_CACHE_MAX_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_MAX_BYTES, |mb| mb << 20);
        CompileCache {
            dir,
            max_bytes,
            stamps,
        }
    }

    /// A cache that never stores anything.
    pub fn disabled() -> Self {
        CompileCache {
            dir: None,
            max_bytes: 0,
            stamps: None,
        }
    }

    fn entry(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = ShaHasher(Sha256::new());
        sha256.hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{}.cwasm", hex::encode(h.0.finalize()))))
    }

    /// The compiled form of the component whose bytes hash to `sha256`, with what it
    /// declares, if the cache holds a sound entry for it (one that is not is removed).
    pub fn lookup(&self, engine: &Engine, sha256: &str) -> Option<(Component, Declared)> {
        let (dir, path) = (self.dir.as_ref()?, self.entry(engine, sha256)?);
        if prepare(dir).is_err() || !path.exists() {
            return None;
        }
        match self.verified_entry(&path, sha256) {
            // SAFETY: the entry was written by this host, atomically, into a directory
            // whose ownership and permissions were just checked; its name binds it to
            // this engine's configuration, and its header to the plugin's verified
            // digest and to the exact artifact bytes.
            Ok(declared) => match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    touch(&path);
                    return Some((c, declared));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable cache entry: {e}");
                }
            },
            Err(EntryProblem::OlderFormat) => {
                tracing::debug!(path = %path.display(), "recompiling: the cache entry {}", EntryProblem::OlderFormat);
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), "recompiling: the cache entry {why}");
            }
        }
        self.remove(&path);
        None
    }

    /// Compiles the component `sha256` with `compile` (which returns a serialized
    /// artifact), keeps it with what it declares, and returns it.
    pub fn compile<E>(
        &self,
        engine: &Engine,
        sha256: &str,
        declared: &Declared,
        compile: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Component, CacheError<E>> {
        let artifact = compile().map_err(CacheError::Compile)?;
        // SAFETY: `artifact` was produced for this engine's configuration a moment ago (by
        // this process or its compiler child); deserialize checks the configuration.
        let component =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(CacheError::Artifact)?;
        if let Some(path) = self.entry(engine, sha256) {
            let stored = write_atomically(&path, &artifact).and_then(|()| {
                write_atomically(&header_path(&path), &header(sha256, &artifact, declared))
            });
            if let Err(e) = stored {
                tracing::warn!(path = %path.display(), "could not store compiled component: {e}");
            } else if let Some(dir) = &self.dir {
                self.evict(dir, &path);
            }
        }
        Ok(component)
    }

    /// Checks the entry at `artifact` against its header: it must name `sha256` as its
    /// component and the artifact's own digest, which is computed unless the artifact is
    /// unchanged since it was last found right. Returns what the component declares.
    fn verified_entry(&self, artifact: &Path, sha256: &str) -> Result<Declared, EntryProblem> {
        let header = std::fs::read(header_path(artifact)).map_err(|_| EntryProblem::NoHeader)?;
        let meta = std::fs::metadata(artifact).map_err(|_| EntryProblem::Altered)?;
        let recorded = header.get(8 + 32..HEADER_LEN).unwrap_or_default();
        let unchanged = self
            .stamps
            .as_ref()
            .and_then(|s| s.recall(artifact, &meta))
            .is_some_and(|d| d == hex::encode(recorded));
        if unchanged {
            return check_header(&header, sha256, recorded);
        }
        let digest = artifact_digest(artifact)?;
        let declared = check_header(&header, sha256, &digest)?;
        if let Some(stamps) = &self.stamps {
            stamps.record(artifact, &meta, &hex::encode(digest));
        }
        Ok(declared)
    }

    fn remove(&self, artifact: &Path) {
        let _ = std::fs::remove_file(artifact);
        let _ = std::fs::remove_file(header_path(artifact));
        if let Some(stamps) = &self.stamps {
            stamps.forget(artifact);
        }
    }

    /// Removes the least recently used entries of `dir` (never `keep`) until the
    /// entries total at most the cache's bound.
    fn evict(&self, dir: &Path, keep: &Path) {
        for gone in least_recently_used(dir, self.max_bytes, keep) {
            self.remove(&gone);
            tracing::debug!(path = %gone.display(), "evicted from the compile cache");
        }
    }
}

/// Why a component could not be loaded through the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    /// Compiling failed.
    #[error("{0}")]
    Compile(E),
    /// The compiled artifact was refused by the engine.
    #[error("{0:#}")]
    Artifact(wasmtime::Error),
}

/// What is wrong with a cache entry that is not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum EntryProblem {
    #[error("has no runcap header")]
    NoHeader,
    /// Written by a runcap whose cache format was older: expected after an upgrade.
    #[error("was written by an earlier runcap")]
    OlderFormat,
    #[error("was compiled from another component")]
    OtherComponent,
    #[error("does not match its recorded digest")]
    Altered,
}

/// The header file beside an artifact.
fn header_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("sum")
}

/// The BLAKE3 digest of an artifact, hashed as it is read, in pieces, so checking costs
/// no copy of it in memory.
fn artifact_digest(artifact: &Path) -> Result<[u8; 32], EntryProblem> {
    let mut file = std::fs::File::open(artifact).map_err(|_| EntryProblem::Altered)?;
    let mut hasher = blake3::Hasher::new();
    // In 64 KiB reads, not `io::copy`'s 8 KiB.
    hasher
        .update_reader(&mut file)
        .map_err(|_| EntryProblem::Altered)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Whether `header` names `sha256` as the component and `digest` as the artifact's;
/// what the component declares.
fn check_header(header: &[u8], sha256: &str, digest: &[u8]) -> Result<Declared, EntryProblem> {
    if header.len() >= 8 && header[..6] == MAGIC[..6] && header[..8] != MAGIC[..] {
        return Err(EntryProblem::OlderFormat);
    }
    if header.len() < HEADER_LEN || &header[..8] != MAGIC {
        return Err(EntryProblem::NoHeader);
    }
    let (component, recorded) = header[8..HEADER_LEN].split_at(32);
    if hex::encode(component) != sha256 {
        return Err(EntryProblem::OtherComponent);
    }
    if recorded != digest {
        return Err(EntryProblem::Altered);
    }
    serde_json::from_slice(&header[HEADER_LEN..]).map_err(|_| EntryProblem::NoHeader)
}

/// The header of an entry compiled from the component `sha256`, which declares
/// `declared`, into `artifact`.
fn header(sha256: &str, artifact: &[u8], declared: &Declared) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&hex::decode(sha256).unwrap_or_else(|_| vec![0; 32]));
    out.extend_from_slice(blake3::hash(artifact).as_bytes());
    out.extend_from_slice(&serde_json::to_vec(declared).unwrap_or_default());
    out
}

/// Marks an entry as just used, for eviction: its header's time, so the artifact's own
/// identity stays as it was checked.
fn touch(artifact: &Path) {
    if let Ok(f) = std::fs::File::options()
        .append(true)
        .open(header_path(artifact))
    {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The entries of `dir` (never `keep`) to remove, least recently used first, for the
/// rest to total at most `max_bytes`.
fn least_recently_used(dir: &Path, max_bytes: u64, keep: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = read
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let len = e.metadata().ok()?.len();
            let used = std::fs::metadata(header_path(&e.path()))
                .or_else(|_| e.metadata())
                .ok()?
                .modified()
                .ok()?;
            Some((used, len, e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    let mut out = Vec::new();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path != keep {
            total -= len;
            out.push(path);
        }
    }
    out
}

/// Creates `dir` with mode 0700 if needed, and checks it belongs to this user and no
/// one else can write it.
pub(crate) fn prepare(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = rustix_uid();
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    if meta.uid() != uid {
        return Err(std::io::Error::other("owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other("writable by group or others"));
    }
    Ok(())
}

fn rustix_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache in a fresh directory, and the directory.
    fn cache() -> (CompileCache, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (CompileCache::open(Some(dir.path().to_path_buf())), dir)
    }

    fn declared() -> Declared {
        Declared {
            imports: vec!["runcap:plugin/http".into()],
            exports: vec!["run".into()],
        }
    }

    #[test]
    fn an_entry_is_bound_to_its_component_and_its_bytes() {
        let (cache, dir) = cache();
        let artifact = dir.path().join("components").join("k.cwasm");
        std::fs::write(&artifact, b"artifact").unwrap();
        let sha = hex::encode(Sha256::digest(b"component"));
        assert_eq!(
            cache.verified_entry(&artifact, &sha),
            Err(EntryProblem::NoHeader),
            "an artifact without a header is not used"
        );
        std::fs::write(
            header_path(&artifact),
            header(&sha, b"artifact", &declared()),
        )
        .unwrap();
        assert_eq!(cache.verified_entry(&artifact, &sha), Ok(declared()));
        let other = hex::encode(Sha256::digest(b"another component"));
        assert_eq!(
            cache.verified_entry(&artifact, &other),
            Err(EntryProblem::OtherComponent)
        );
        std::fs::write(&artifact, b"artifacT").unwrap();
        assert_eq!(
            cache.verified_entry(&artifact, &sha),
            Err(EntryProblem::Altered)
        );
        std::fs::write(&artifact, b"artifac").unwrap();
        assert_eq!(
            cache.verified_entry(&artifact, &sha),
            Err(EntryProblem::Altered)
        );
    }

    #[test]
    fn an_artifact_changed_since_its_stamp_is_hashed_again_and_refused() {
        let (cache, dir) = cache();
        let artifact = dir.path().join("components").join("k.cwasm");
        std::fs::write(&artifact, b"artifact").unwrap();
        let sha = hex::encode(Sha256::digest(b"component"));
        std::fs::write(
            header_path(&artifact),
            header(&sha, b"artifact", &declared()),
        )
        .unwrap();
        // A stamp saying the file hashed right (as a check of a settled file leaves).
        let stamps = cache.stamps.as_ref().unwrap();
        let digest = hex::encode(blake3::hash(b"artifact").as_bytes());
        let meta = std::fs::metadata(&artifact).unwrap();
        assert_eq!(stamps.recall(&artifact, &meta), None);
        stamps.record_unchecked(&artifact, &meta, &digest);
        assert_eq!(stamps.recall(&artifact, &meta), Some(digest));
        assert_eq!(cache.verified_entry(&artifact, &sha), Ok(declared()));
        // Replaced by a file of the same size and time: the stamp no longer matches, so
        // the artifact is hashed, and refused. (A rewrite in place is the stamps' own
        // test's case.)
        let mtime = meta.modified().unwrap();
        let patched = dir.path().join("patched");
        std::fs::write(&patched, b"artifacT").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&patched)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&patched, &artifact).unwrap();
        assert_eq!(
            cache.verified_entry(&artifact, &sha),
            Err(EntryProblem::Altered)
        );
        // Using an entry touches its header, never the artifact.
        std::fs::write(&artifact, b"artifact").unwrap();
        let before = std::fs::metadata(&artifact).unwrap();
        touch(&artifact);
        let after = std::fs::metadata(&artifact).unwrap();
        assert_eq!(
            crate::stamps::Identity::of(&before),
            crate::stamps::Identity::of(&after)
        );
    }

    #[test]
    fn an_entry_of_an_earlier_format_is_recompiled_quietly_and_junk_is_not() {
        let sha = hex::encode(Sha256::digest(b"component"));
        let mut older = header(&sha, b"artifact", &declared());
        older[6] = b'2'; // "rcapc\0" then the version
        assert!(matches!(
            check_header(&older, &sha, blake3::hash(b"artifact").as_bytes()),
            Err(EntryProblem::OlderFormat)
        ));
        assert!(matches!(
            check_header(b"not a header at all", &sha, &[0; 32]),
            Err(EntryProblem::NoHeader)
        ));
        let current = header(&sha, b"artifact", &declared());
        assert_eq!(
            check_header(&current, &sha, blake3::hash(b"artifact").as_bytes()),
            Ok(declared())
        );
    }

    #[test]
    fn eviction_removes_the_least_recently_used_entries_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut paths = Vec::new();
        for (i, age) in [30u64, 10, 20, 40].iter().enumerate() {
            let p = dir.path().join(format!("{i}.cwasm"));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            // When an entry was last used is its header's time.
            std::fs::write(header_path(&p), b"h").unwrap();
            let f = std::fs::File::options()
                .append(true)
                .open(header_path(&p))
                .unwrap();
            f.set_modified(now - std::time::Duration::from_secs(*age))
                .unwrap();
            paths.push(p);
        }
        std::fs::write(dir.path().join("unrelated.txt"), vec![0u8; 5000]).unwrap();
        // Keep 2 KB: the two oldest go, except the one just stored (the oldest here).
        let cache = CompileCache {
            dir: Some(dir.path().to_path_buf()),
            max_bytes: 2000,
            stamps: None,
        };
        cache.evict(dir.path(), &paths[3]);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, vec![false, true, false, true]);
        assert!(dir.path().join("unrelated.txt").exists());
    }
}
