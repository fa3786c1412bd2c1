//! `fs`: directories a plugin may read, or read and write, through WASI preopens and
//! through `runcap:plugin/fs` ([`files`]).
//!
//! | | |
//! |---|---|
//! | grants | each named directory, read-only or read-write, seen by the plugin as `/NAME` |
//! | manifest | `[plugins.NAME.grants.fs]` `input = { path = "logs", mode = "ro" }`, `output = { path = "redacted", mode = "rw" }` (`path` relative to the manifest, `mode` defaults to `"ro"`) |
//! | default | no grant: the plugin sees no file system at all (no preopens; `runcap:plugin/fs` calls are denied, naming the grant to add) |
//! | enforced | by wasmtime-wasi on cap-std: every path is resolved inside its preopened directory, so `..`, absolute paths and symlinks cannot leave it; a read-only directory refuses every change; in a dry run every directory is read-only and a missing read-write one is not created |
//! | audit | one call record per directory per action (`preopen`, guest path, host path, mode); single file operations are confined, not recorded one by one (a refused `runcap:plugin/fs` open is recorded as a denial) |
//!
//! Every Rust `wasm32-wasip2` component imports `wasi:filesystem/*` (the standard library
//! links it), so importing it needs no grant: without one there is simply nothing to open.
//! An fs grant counts as used when the component imports `wasi:filesystem/preopens` or
//! `runcap:plugin/fs`, the same directories read and written in large pieces
//! ([`files`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::bindings::runcap::plugin::fs as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    ActionSetup, CallRecord, CapData, Capability, Declared, Granted, HostState, PrepareError,
    Resources,
};
use crate::manifest::{KeyPath, Validator};

pub mod files;

/// The `fs` capability.
pub struct Fs;

impl Capability for Fs {
    const NAME: &'static str = "fs";
    /// The WASI interface whose import means "uses its fs grant".
    const INTERFACE: &'static str = "wasi:filesystem/preopens";
    const MORE_INTERFACES: &'static [&'static str] = &["runcap:plugin/fs"];
    const WIT: Option<&'static str> = Some(include_str!("../../../../wit/fs.wit"));
    const GRANTED: Granted = Granted::ByGrantImportFree;
    type Config = FsGrantConfig;
    type Grant = FsGrant;
    type Access = Arc<FsGrant>;
    type State = files::OpenFiles;

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.fs]   # name = {{ path = \"dir\", mode = \"ro\" }}, seen by the plugin as /name"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: FsGrantConfig,
        _: &Declared,
    ) -> Option<FsGrant> {
        FsGrant::validate(v, at, raw)
    }

    fn diff(old: &FsGrantConfig, new: &FsGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &FsGrant) -> Vec<String> {
        grant.describe()
    }

    fn resolve_paths(raw: &mut toml::Value, dir_of: &dyn Fn(&KeyPath) -> PathBuf) {
        let Some(dirs) = raw.as_table_mut() else {
            return;
        };
        for (name, dir) in dirs.iter_mut() {
            if let Some(path) = dir.get_mut("path")
                && let Some(written) = path.as_str()
            {
                let at = KeyPath::root().key(name.as_str()).key("path");
                *path = toml::Value::String(resolved(&dir_of(&at), written));
            }
        }
    }

    fn prepare(grant: Arc<FsGrant>, _: &Resources) -> Result<Arc<FsGrant>, PrepareError> {
        Ok(grant)
    }

    fn begin_action(grant: &Arc<FsGrant>, setup: &mut ActionSetup) -> Result<(), PrepareError> {
        let records = grant
            .preopen(setup.wasi, setup.dry_run)
            .map_err(|e| PrepareError(e.to_string()))?;
        setup.records.extend(records);
        Ok(())
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // WASI's file system is linked with the rest of WASI (a grant adds preopens);
        // runcap's own file interface is linked here.
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

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
    pub fn validate(v: &mut Validator, path: &KeyPath, raw: FsGrantConfig) -> Option<Self> {
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
        ok.then(|| FsGrant {
            dirs,
            key: path.to_string(),
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
    ) -> Result<Vec<CallRecord>, PreopenError> {
        let mut records = Vec::new();
        // File operations run on blocking-pool threads, never on the thread running the
        // action: a call can block without end (opening a FIFO no one writes, reading a
        // device), and only a call awaited elsewhere can be cut short by the step's time
        // limit or a signal. Such a thread is abandoned; the step fails on time.
        builder.allow_blocking_current_thread(false);
        for d in &self.dirs {
            let target = format!("{} = {} ({})", d.guest, d.host.display(), d.mode.as_str());
            let writable = d.mode == Mode::ReadWrite && !dry_run;
            if d.mode == Mode::ReadWrite && !d.host.exists() {
                if dry_run {
                    records.push(
                        CallRecord::dry_run(Fs::NAME, "preopen", &target)
                            .with_result("not created in a dry run; not available"),
                    );
                    continue;
                }
                std::fs::create_dir_all(&d.host).map_err(|source| PreopenError::Create {
                    dir: d.host.clone(),
                    grant: format!("{}.{}", self.key, d.name),
                    source,
                })?;
            }
            let perms = if writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&d.host, &d.guest, perms)
                .map_err(|error| PreopenError::Open {
                    dir: d.host.clone(),
                    grant: format!("{}.{}", self.key, d.name),
                    error,
                })?;
            records.push(if d.mode == Mode::ReadWrite && dry_run {
                CallRecord::dry_run(Fs::NAME, "preopen", &target)
                    .with_result("read-only in a dry run")
            } else {
                CallRecord::allowed(Fs::NAME, "preopen", &target)
            });
        }
        Ok(records)
    }
}

/// Why a granted directory could not be handed to an action; `grant` is the manifest
/// key that grants it.
#[derive(Debug, thiserror::Error)]
pub enum PreopenError {
    #[error("cannot create the granted directory {} ({grant}): {source}", dir.display())]
    Create {
        dir: PathBuf,
        grant: String,
        source: std::io::Error,
    },
    /// `error` is wasmtime's, shown with its causes.
    #[error("cannot open the granted directory {} ({grant}): {error:#}", dir.display())]
    Open {
        dir: PathBuf,
        grant: String,
        error: wasmtime::Error,
    },
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

/// `written`, resolved against `dir` and normalized, as text.
fn resolved(dir: &Path, written: &str) -> String {
    normalize(&dir.join(written)).to_string_lossy().into_owned()
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
    use crate::caps::testing::{self, Decl};

    fn begin(grant: &Arc<FsGrant>, dry_run: bool) -> Vec<CallRecord> {
        let out = crate::caps::wasi::Capture::new(16);
        let mut wasi = crate::caps::wasi::builder(&out, &out);
        let mut setup = ActionSetup {
            wasi: &mut wasi,
            dry_run,
            records: Vec::new(),
        };
        Fs::begin_action(grant, &mut setup).unwrap();
        setup.records
    }

    #[test]
    fn granted_directories_are_preopened_and_recorded() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("logs")).unwrap();
        let grant = testing::grant::<Fs>(
            "[plugins.p.grants.fs]\ninput = { path = \"logs\" }\noutput = { path = \"out\", mode = \"rw\" }\n",
            &dir,
            &Decl::default(),
        )
        .unwrap();
        let dry = begin(&grant, true);
        assert!(!dir.join("out").exists(), "a dry run creates nothing");
        assert_eq!(
            dry.iter().map(|r| r.decision).collect::<Vec<_>>(),
            [
                crate::caps::core::Decision::Allowed,
                crate::caps::core::Decision::DryRun
            ]
        );
        let records = begin(&grant, false);
        assert!(
            dir.join("out").is_dir(),
            "a read-write directory is created on first use"
        );
        let targets: Vec<&str> = records.iter().map(|r| r.target.as_str()).collect();
        assert!(
            targets[0].starts_with("/input = ") && targets[0].ends_with("(ro)"),
            "{targets:?}"
        );
        assert!(
            targets[1].starts_with("/output = ") && targets[1].ends_with("(rw)"),
            "{targets:?}"
        );
    }

    #[test]
    fn grant_errors_name_the_line_and_the_fix() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir_all(dir.join("logs/app")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        let errors = testing::grant::<Fs>(
            "[plugins.p.grants.fs]\na = { path = \"logs\" }\nb = { path = \"logs/app\" }\nc = { path = \"file\" }\nd = { path = \"missing\" }\ne = { path = \"logs\", mode = \"rwx\" }\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("overlaps `a`"), "{errors}");
        assert!(errors.contains("is not a directory"), "{errors}");
        assert!(errors.contains("cannot use directory"), "{errors}");
        assert!(errors.contains("`rwx` is not a mode"), "{errors}");
        testing::grant::<Fs>(&Fs::hint("p"), &dir, &Decl::default()).unwrap();
    }

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
