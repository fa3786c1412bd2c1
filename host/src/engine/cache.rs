//! On-disk cache of precompiled components.
//!
//! Deserializing a precompiled artifact is `unsafe` in wasmtime: a tampered file is
//! native code. So the cache lives in a directory only this user can write (checked
//! before every use, refused otherwise), entries are written atomically (temp file,
//! fsync, rename), and the key covers the plugin's sha256 and the engine's
//! compatibility hash (wasmtime version and configuration). The plugin file itself is
//! re-hashed against its pin before the cache is consulted.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept between runs.
pub struct CompileCache {
    dir: Option<PathBuf>,
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
        let dir = dir
            .map(|d| d.join("components"))
            .and_then(|d| match prepare(&d) {
                Ok(()) => Some(d),
                Err(e) => {
                    tracing::warn!(dir = %d.display(), "not using the compile cache: {e}");
                    None
                }
            });
        CompileCache { dir }
    }

    /// A cache that never stores anything.
    pub fn disabled() -> Self {
        CompileCache { dir: None }
    }

    fn entry(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = ShaHasher(Sha256::new());
        sha256.hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{}.cwasm", hex::encode(h.0.finalize()))))
    }

    /// Loads the compiled form of a component whose bytes hash to `sha256`, compiling
    /// and storing it if needed. Returns the component and whether it came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let Some(path) = self.entry(engine, sha256) else {
            return Ok((Component::new(engine, wasm)?, false));
        };
        if let Some(dir) = &self.dir
            && prepare(dir).is_ok()
            && path.is_file()
        {
            // SAFETY: the entry was written by this host, atomically, into a directory
            // whose ownership and permissions were just checked; its name binds it to the
            // plugin's verified digest and to this engine's configuration.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable cache entry: {e}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), "could not store compiled component: {e}");
        }
        // SAFETY: `compiled` was produced by this engine a moment ago.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }
}

/// Creates `dir` with mode 0700 if needed, and checks it belongs to this user and no
/// one else can write it.
fn prepare(dir: &Path) -> std::io::Result<()> {
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
