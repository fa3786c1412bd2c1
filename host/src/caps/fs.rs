//! `fs`: directories a plugin may read, or read and write, through WASI preopens.
//!
//! | | |
//! |---|---|
//! | grants | each named directory, read-only or read-write, seen by the plugin as `/NAME` |
//! | manifest | `[plugins.NAME.grants.fs]` `input = { path = "logs", mode = "ro" }`, `output = { path = "redacted", mode = "rw" }` (`path` relative to the manifest, `mode` defaults to `"ro"`) |
//! | default | no grant: the plugin sees no file system at all (no preopens) |
//! | enforced | by wasmtime-wasi on cap-std: every path is resolved inside its preopened directory, so `..`, absolute paths and symlinks cannot leave it; a read-only directory refuses every change; in a dry run every directory is read-only and a missing read-write one is not created |
//! | audit | one call record per directory per action (`preopen`, guest path, host path, mode); single file operations are confined, not recorded one by one |
//!
//! Every Rust `wasm32-wasip2` component imports `wasi:filesystem/*` (the standard library
//! links it), so importing it needs no grant: without one there is simply nothing to open.
//! An fs grant counts as used when the component imports `wasi:filesystem/preopens`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::caps::CallRecord;
use crate::caps::compare::{Change, ChangeKind};
use crate::manifest::{KeyPath, Validator};

/// The WASI interface whose import means "uses its fs grant".
pub const INTERFACE: &str = "wasi:filesystem/preopens";

/// `[plugins.NAME.grants.fs]` as written: directory name → where and how.
pub type FsGrantConfig = BTreeMap<String, DirConfig>;

/// One granted directory as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// `path = "logs"`: the host directory, relative to the manifest.
    pub path: String,
    /// `mode = "ro"` (default) or `"rw"`.
    pub mode: Option<String>,
}

/// What a plugin may do inside a granted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadOnly,
    ReadWrite,
}

impl Mode {
    /// `ro` or `rw`, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadOnly => "ro",
            Mode::ReadWrite => "rw",
        }
    }
}

/// One validated directory grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// The name under `grants.fs`.
    pub name: String,
    /// Where the plugin sees it: `/NAME`.
    pub guest: String,
    /// The host directory, absolute (canonical when it exists).
    pub host: PathBuf,
    pub mode: Mode,
}

/// A validated fs grant.
#[derive(Debug, Clone)]
pub struct FsGrant {
    pub dirs: Vec<Dir>,
    /// The manifest key, for messages.
    pub key: String,
}

impl FsGrant {
    pub fn validate(v: &mut Validator, path: &KeyPath, raw: FsGrantConfig) -> Option<Arc<Self>> {
        let mut ok = true;
        let mut dirs: Vec<Dir> = Vec::new();
        for (name, c) in raw {
            let dp = path.key(&name);
            if !v.name(&dp, "directory", &name) {
                ok = false;
                continue;
            }
            let mode = match c.mode.as_deref() {
                None | Some("ro") => Mode::ReadOnly,
                Some("rw") => Mode::ReadWrite,
                Some(other) => {
                    v.error(
                        &dp.key("mode"),
                        format!("`{other}` is not a mode"),
                        "use \"ro\" (read-only) or \"rw\" (read and write)",
                    );
                    ok = false;
                    continue;
                }
            };
            let host = normalize(&v.resolve(&dp.key("path"), &c.path));
            match std::fs::metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    v.error(
                        &dp.key("path"),
                        format!("{} is not a directory", host.display()),
                        "grant a directory; the plugin sees it as /".to_string() + &name,
                    );
                    ok = false;
                    continue;
                }
                Err(_) if mode == Mode::ReadWrite => {
                    // Created when an action first runs with the grant (never by `check`).
                }
                Err(e) => {
                    v.error(
                        &dp.key("path"),
                        format!("cannot use directory {}: {e}", host.display()),
                        "create it or fix the path; it is relative to the manifest's directory",
                    );
                    ok = false;
                    continue;
                }
            }
            if let Some(other) = dirs
                .iter()
                .find(|d| d.host.starts_with(&host) || host.starts_with(&d.host))
            {
                v.error(
                    &dp.key("path"),
                    format!(
                        "{} overlaps `{}` ({}): one granted directory would reach into the other",
                        host.display(),
                        other.name,
                        other.host.display()
                    ),
                    "grant directories that do not contain each other",
                );
                ok = false;
                continue;
            }
            dirs.push(Dir {
                guest: format!("/{name}"),
                name,
                host,
                mode,
            });
        }
        ok.then(|| {
            Arc::new(FsGrant {
                dirs,
                key: path.to_string(),
            })
        })
    }

    /// One line per directory, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| {
                let mode = match d.mode {
                    Mode::ReadOnly => "read-only",
                    Mode::ReadWrite => "read-write",
                };
                format!("{} = {} ({mode})", d.guest, d.host.display())
            })
            .collect()
    }

    /// Adds the granted directories to a WASI context as preopens and returns the call
    /// records of the action. In a dry run every directory is read-only, and a missing
    /// read-write directory is neither created nor preopened.
    pub fn preopen(
        &self,
        builder: &mut WasiCtxBuilder,
        dry_run: bool,
    ) -> Result<Vec<CallRecord>, String> {
        let mut records = Vec::new();
        // File operations run on the thread running the action instead of being handed to a
        // blocking-pool thread each: a 64 KiB read from the page cache takes microseconds,
        // less than the hand-off. (WASI streams still read and write on blocking threads.)
        builder.allow_blocking_current_thread(true);
        for d in &self.dirs {
            let target = format!("{} = {} ({})", d.guest, d.host.display(), d.mode.as_str());
            let writable = d.mode == Mode::ReadWrite && !dry_run;
            if d.mode == Mode::ReadWrite && !d.host.exists() {
                if dry_run {
                    records.push(
                        CallRecord::dry_run("fs", "preopen", &target)
                            .with_result("not created in a dry run; not available".into()),
                    );
                    continue;
                }
                std::fs::create_dir_all(&d.host).map_err(|e| {
                    format!(
                        "cannot create the granted directory {} ({}.{}): {e}",
                        d.host.display(),
                        self.key,
                        d.name
                    )
                })?;
            }
            let perms = if writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&d.host, &d.guest, perms)
                .map_err(|e| {
                    format!(
                        "cannot open the granted directory {} ({}.{}): {e:#}",
                        d.host.display(),
                        self.key,
                        d.name
                    )
                })?;
            records.push(if d.mode == Mode::ReadWrite && dry_run {
                CallRecord::dry_run("fs", "preopen", &target)
                    .with_result("read-only in a dry run".into())
            } else {
                CallRecord::allowed("fs", "preopen", &target)
            });
        }
        Ok(records)
    }
}

/// An absolute path with `.` and `..` settled: canonical for the part that exists, the
/// rest appended as written, so two grants can be compared before either is created.
fn normalize(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    let mut out = loop {
        if let Ok(canon) = existing.canonicalize() {
            break canon;
        }
        match existing.parent() {
            Some(parent) => {
                rest.extend(existing.components().next_back());
                existing = parent;
            }
            None => break PathBuf::from("/"),
        }
    };
    for c in rest.iter().rev() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// Compares two fs grants by what they reach: a directory widens unless an old one (of
/// any name) contains it with at least its mode, so a ceiling can say "read anything,
/// write only below /var/backups" with `any = { path = "/", mode = "ro" }` and `backups =
/// { path = "/var/backups", mode = "rw" }`. Paths compare as written once `.` and `..` are
/// settled; [`resolve_paths`] first when the two grants were written in different places.
pub fn diff(old: &FsGrantConfig, new: &FsGrantConfig) -> Vec<Change> {
    let mode = |c: &DirConfig| c.mode.clone().unwrap_or_else(|| "ro".into());
    let covers = |o: &DirConfig, n: &DirConfig| {
        lexical(&n.path).starts_with(lexical(&o.path)) && (mode(n) == "ro" || mode(o) == "rw")
    };
    let mut out = Vec::new();
    for (name, n) in new {
        let at = KeyPath::root().key(name);
        let same = old.get(name);
        if same.is_some_and(|o| lexical(&o.path) == lexical(&n.path) && mode(o) == mode(n)) {
            continue;
        }
        let change = match same {
            _ if old.values().any(|o| covers(o, n)) => Change::new(
                at,
                ChangeKind::Narrowed,
                format!(
                    "/{name} = {} ({}), within what was granted",
                    n.path,
                    mode(n)
                ),
            ),
            None => Change::new(
                at,
                ChangeKind::Added,
                format!("may use directory {} as /{name} ({})", n.path, mode(n)),
            ),
            Some(o) if lexical(&o.path) == lexical(&n.path) => Change::new(
                at.key("mode"),
                ChangeKind::Widened,
                format!("/{name} is now {} (was {})", mode(n), mode(o)),
            ),
            Some(o) => Change::new(
                at.key("path"),
                ChangeKind::Changed,
                format!("/{name} is now {} (was {})", n.path, o.path),
            ),
        };
        out.push(change);
    }
    for name in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(Change::new(
            KeyPath::root(),
            ChangeKind::Removed,
            format!("may no longer use directory /{name}"),
        ));
    }
    out
}

/// Makes every directory of `grant` absolute, resolving a relative one against
/// `dir_of(name)` (the directory of the file that wrote it), as the grant itself does.
pub fn resolve_paths(grant: &mut FsGrantConfig, dir_of: impl Fn(&str) -> PathBuf) {
    for (name, d) in grant.iter_mut() {
        d.path = resolved(&dir_of(name), &d.path);
    }
}

/// `written`, resolved against `dir` and normalized, as text.
fn resolved(dir: &Path, written: &str) -> String {
    normalize(&dir.join(written)).to_string_lossy().into_owned()
}

/// [`resolve_paths`] on a plugin's table as written (`grants.fs.NAME.path`), for
/// comparisons made before the grants are read.
pub fn resolve_plugin_paths(plugin: &mut toml::Value, dir_of: impl Fn(&str) -> PathBuf) {
    let Some(dirs) = plugin
        .get_mut("grants")
        .and_then(|g| g.get_mut("fs"))
        .and_then(|f| f.as_table_mut())
    else {
        return;
    };
    for (name, dir) in dirs.iter_mut() {
        if let Some(path) = dir.get_mut("path")
            && let Some(written) = path.as_str()
        {
            *path = toml::Value::String(resolved(&dir_of(name), written));
        }
    }
}

/// `path` with `.` dropped and each `..` taking away the name before it, without looking
/// at the disk.
fn lexical(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_settles_dots_and_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("logs")).unwrap();
        assert_eq!(normalize(&base.join("logs/./../logs")), base.join("logs"));
        assert_eq!(
            normalize(&base.join("out/new/../deep")),
            base.join("out/deep")
        );
    }
}
