//! `runcap.lock`: what a reviewer approved about each environment of a directory,
//! and how an environment differs from it (or from another environment).
//!
//! An [`EnvLock`] holds what decides what an environment's plugins can do: each
//! plugin's digest, the interfaces its component imports, its limits and its grants
//! as composed from the `extends` chain, and the services and secrets the grants
//! refer to (a granted `restart` is only as safe as the command behind it). The
//! lockfile keeps one per environment, sorted, as TOML that reviews well as a diff.
//! [`diff`] compares two of them, built from manifests or read from a lockfile, with
//! the same per-capability comparison that checks overlays against their base.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caps::compare::{Change, ChangeKind, fmt_duration, fmt_size};
use crate::manifest::{Environment, KeyPath};

/// The lockfile's name, beside the manifest.
pub const FILE_NAME: &str = "runcap.lock";

/// The format version this runcap writes and reads.
pub const VERSION: u32 = 1;

const HEADER: &str = "# runcap.lock: what each environment's plugins may do, as last approved.\n\
# Written by `runcap lock --env MANIFEST`; review changes to it like code.\n\
# `runcap check --locked` fails when a manifest or a plugin no longer matches it.\n\n";

/// A lockfile: one entry per environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// The format's version, [`VERSION`].
    pub version: u32,
    /// Environment name → what was approved.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvLock>,
}

/// One environment as approved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvLock {
    /// The manifest, relative to the lockfile.
    pub manifest: String,
    /// The files it extends, in order, relative to the lockfile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extends: Vec<String>,
    /// Plugin name → what it is and may do.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginLock>,
    /// `[services.NAME]` as composed.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub services: toml::Table,
    /// `[secrets.NAME]` as composed: where values come from, never the values.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub secrets: toml::Table,
}

/// One plugin as approved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginLock {
    /// The component file's digest.
    pub sha256: String,
    /// The component's file, as the manifest writes it.
    pub path: String,
    /// The interfaces the component imports, but for WASI plumbing (see
    /// [`reviewed_imports`]).
    pub imports: Vec<String>,
    /// Effective limits (defaults filled in).
    pub limits: LimitsLock,
    /// The grants as composed, in manifest syntax.
    #[serde(default)]
    pub grants: toml::Table,
    /// The signer whose key verified the file's signature, if any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// Effective limits, written as a manifest would.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsLock {
    pub memory: String,
    pub time: String,
    pub output: String,
}

/// Why a lockfile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a runcap lockfile: {message}", path.display())]
    /// The file is not a lockfile this runcap reads.
    Invalid { path: PathBuf, message: String },
    #[error("{} has no entry for environment `{env}`{}", path.display(), list(known))]
    /// The lockfile has no entry for the environment.
    Missing {
        path: PathBuf,
        env: String,
        known: Vec<String>,
    },
}

fn list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (it locks: {})", known.join(", "))
    }
}

impl Lockfile {
    /// The lockfile beside a manifest.
    pub fn beside(manifest: &Path) -> PathBuf {
        manifest
            .parent()
            .map(|d| d.join(FILE_NAME))
            .unwrap_or_else(|| PathBuf::from(FILE_NAME))
    }

    /// Reads a lockfile; `Ok(None)` if there is none.
    pub fn read(path: &Path) -> Result<Option<Lockfile>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let lock: Lockfile = toml::from_str(&text).map_err(|e| LockError::Invalid {
            path: path.to_path_buf(),
            message: e.message().trim().to_string(),
        })?;
        if lock.version != VERSION {
            return Err(LockError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "version {} (this runcap reads version {VERSION}); write it again with `runcap lock`",
                    lock.version
                ),
            });
        }
        Ok(Some(lock))
    }

    /// Reads the entry of environment `env`.
    pub fn read_env(path: &Path, env: &str) -> Result<EnvLock, LockError> {
        let lock = Self::read(path)?.ok_or_else(|| LockError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        let known: Vec<String> = lock.environments.keys().cloned().collect();
        lock.environments
            .get(env)
            .cloned()
            .ok_or_else(|| LockError::Missing {
                path: path.to_path_buf(),
                env: env.to_string(),
                known,
            })
    }

    /// The lockfile's text: sorted, one table per plugin, arrays one entry a line.
    pub fn to_text(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!("{HEADER}{body}")
    }
}

/// Whether a file reads as a lockfile rather than a manifest.
pub fn is_lockfile(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "lock")
        || std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|t| t.contains_key("version") && t.contains_key("environments"))
}

/// An environment as it is now. `imports` holds each plugin's imported interfaces;
/// paths are written relative to `lock_dir`.
pub fn snapshot(
    env: &Environment,
    imports: &BTreeMap<String, Vec<String>>,
    lock_dir: &Path,
) -> EnvLock {
    let merged = &env.source.merged;
    let table = |key: &str| {
        merged
            .get(key)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let written = table("plugins");
    let plugins = env
        .plugins
        .iter()
        .map(|(name, spec)| {
            let raw = written.get(name);
            let lock = PluginLock {
                signer: spec.signer.clone(),
                sha256: spec.sha256.clone(),
                path: raw
                    .and_then(|p| p.get("path"))
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| spec.path.display().to_string()),
                imports: imports
                    .get(name)
                    .map(|i| reviewed_imports(i))
                    .unwrap_or_default(),
                limits: LimitsLock {
                    memory: fmt_size(spec.limits.memory),
                    time: fmt_duration(spec.limits.time),
                    output: fmt_size(spec.limits.output),
                },
                grants: raw
                    .and_then(|p| p.get("grants"))
                    .and_then(|g| g.as_table())
                    .cloned()
                    .unwrap_or_default(),
            };
            (name.clone(), lock)
        })
        .collect();
    let rel = |p: &Path| relative(p, lock_dir);
    EnvLock {
        manifest: rel(&env.source.top().path),
        extends: env.source.files[1..].iter().map(|f| rel(&f.path)).collect(),
        plugins,
        services: table("services"),
        secrets: table("secrets"),
    }
}

/// The imports a reviewer needs to see: capability interfaces, and any WASI interface
/// beyond the plumbing every component imports (cli, io, clocks, random), which
/// reaches nothing runcap does not grant.
pub fn reviewed_imports(imports: &[String]) -> Vec<String> {
    const PLUMBING: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];
    imports
        .iter()
        .filter(|i| {
            i.as_str() != crate::caps::TYPES_INTERFACE && !PLUMBING.iter().any(|p| i.starts_with(p))
        })
        .cloned()
        .collect()
}

/// `path` relative to `dir` when below it, else as it is.
fn relative(path: &Path, dir: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, dir) = (abs(path), abs(dir));
    path.strip_prefix(&dir)
        .map(Path::to_path_buf)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every difference from `old` to `new`, located by manifest key.
pub fn diff(old: &EnvLock, new: &EnvLock) -> Vec<Change> {
    let mut out = Vec::new();
    let plugins = KeyPath::root().key("plugins");
    for (name, n) in &new.plugins {
        let at = plugins.key(name);
        match old.plugins.get(name) {
            Some(o) => diff_plugin(&mut out, &at, o, n),
            None => out.push(new_plugin(at, name, n)),
        }
    }
    for name in old.plugins.keys() {
        if !new.plugins.contains_key(name) {
            out.push(Change::new(
                plugins.key(name),
                ChangeKind::Removed,
                format!("plugin `{name}` is gone"),
            ));
        }
    }
    declarations(
        &mut out,
        "services",
        "service",
        &old.services,
        &new.services,
    );
    declarations(&mut out, "secrets", "secret", &old.secrets, &new.secrets);
    out
}

/// A plugin the old lock did not have: its code and what it is granted.
fn new_plugin(at: KeyPath, name: &str, n: &PluginLock) -> Change {
    let caps: Vec<&String> = n.grants.keys().collect();
    Change::new(
        at,
        ChangeKind::Added,
        format!(
            "new plugin `{name}` (sha256 {}…, grants {})",
            short(&n.sha256),
            if caps.is_empty() {
                "nothing".to_string()
            } else {
                caps.iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    )
}

/// How a plugin in both locks changed: code, signer, file, imports, limits and grants.
fn diff_plugin(out: &mut Vec<Change>, at: &KeyPath, o: &PluginLock, n: &PluginLock) {
    if o.sha256 != n.sha256 {
        out.push(Change::new(
            at.key("sha256"),
            ChangeKind::Changed,
            format!(
                "different code: sha256 {}… → {}…",
                short(&o.sha256),
                short(&n.sha256)
            ),
        ));
    }
    if o.signer != n.signer {
        let who = |s: &Option<String>| s.clone().unwrap_or_else(|| "nobody".into());
        out.push(Change::new(
            at.key("signed_by"),
            ChangeKind::Changed,
            format!("signed by {} → {}", who(&o.signer), who(&n.signer)),
        ));
    }
    if o.path != n.path {
        out.push(Change::new(
            at.key("path"),
            ChangeKind::Note,
            format!("file `{}` → `{}`", o.path, n.path),
        ));
    }
    let (oi, ni): (BTreeSet<&String>, BTreeSet<&String>) =
        (o.imports.iter().collect(), n.imports.iter().collect());
    for i in ni.difference(&oi) {
        out.push(Change::new(
            at.clone(),
            ChangeKind::Note,
            format!("now imports `{i}`"),
        ));
    }
    for i in oi.difference(&ni) {
        out.push(Change::new(
            at.clone(),
            ChangeKind::Note,
            format!("no longer imports `{i}`"),
        ));
    }
    out.extend(
        limits(&o.limits)
            .diff(&limits(&n.limits))
            .into_iter()
            .map(|c| c.under(at)),
    );
    diff_plugin_grants(out, at, &o.grants, &n.grants);
}

/// How a plugin's grants changed, or that they changed when they cannot be compared.
fn diff_plugin_grants(out: &mut Vec<Change>, at: &KeyPath, o: &toml::Table, n: &toml::Table) {
    let grants = |t: &toml::Table| -> crate::caps::Grants {
        t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let readable = crate::caps::per_capability(&grants(o), &grants(n))
        .iter()
        .all(|d| d.changes.is_ok());
    if readable {
        out.extend(
            crate::caps::diff_grants(&grants(o), &grants(n))
                .into_iter()
                .map(|c| c.under(at)),
        );
    } else if o != n {
        out.push(Change::new(
            at.key("grants"),
            ChangeKind::Changed,
            "grants changed and cannot be compared (they do not read as grants)",
        ));
    }
}

/// Services and secrets: added, removed, or defined differently.
fn declarations(
    out: &mut Vec<Change>,
    key: &str,
    what: &str,
    old: &toml::Table,
    new: &toml::Table,
) {
    let root = KeyPath::root().key(key);
    for (name, n) in new {
        match old.get(name) {
            None => out.push(Change::new(
                root.key(name),
                ChangeKind::Added,
                format!("defines {what} `{name}`"),
            )),
            Some(o) if o != n => {
                let keys = changed_keys(o, n);
                out.push(Change::new(
                    root.key(name),
                    ChangeKind::Changed,
                    format!(
                        "{what} `{name}` is defined differently ({})",
                        keys.join(", ")
                    ),
                ));
            }
            _ => {}
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(Change::new(
                root.key(name),
                ChangeKind::Removed,
                format!("{what} `{name}` is gone"),
            ));
        }
    }
}

fn changed_keys(old: &toml::Value, new: &toml::Value) -> Vec<String> {
    let (Some(o), Some(n)) = (old.as_table(), new.as_table()) else {
        return vec!["value".into()];
    };
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| format!("`{k}`"))
        .collect()
}

fn limits(l: &LimitsLock) -> crate::manifest::Limits {
    let mut t = toml::Table::new();
    t.insert("memory".into(), l.memory.clone().into());
    t.insert("time".into(), l.time.clone().into());
    t.insert("output".into(), l.output.clone().into());
    crate::manifest::Limits::from_written(Some(&toml::Value::Table(t)))
}

/// The first characters of a digest, for messages (a lockfile is user input: never
/// split a character).
fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(sha: &str, grants: &str) -> PluginLock {
        PluginLock {
            sha256: sha.into(),
            path: "p.wasm".into(),
            imports: vec!["runcap:plugin/http".into()],
            limits: LimitsLock {
                memory: "16MiB".into(),
                time: "5s".into(),
                output: "64KiB".into(),
            },
            grants: toml::from_str(grants).unwrap(),
            signer: None,
        }
    }

    fn env(plugins: Vec<(&str, PluginLock)>) -> EnvLock {
        EnvLock {
            manifest: "prod.toml".into(),
            extends: vec!["base.toml".into()],
            plugins: plugins
                .into_iter()
                .map(|(n, p)| (n.to_string(), p))
                .collect(),
            services: toml::Table::new(),
            secrets: toml::Table::new(),
        }
    }

    #[test]
    fn round_trips_as_sorted_toml() {
        let mut lock = Lockfile {
            version: VERSION,
            environments: BTreeMap::new(),
        };
        lock.environments.insert(
            "prod".into(),
            env(vec![(
                "probe",
                plugin(
                    &"a".repeat(64),
                    "[http]\nallow = [\"https://api.internal\"]\n",
                ),
            )]),
        );
        let text = lock.to_text();
        assert!(text.starts_with("# runcap.lock"));
        assert!(
            text.contains("[environments.prod.plugins.probe.grants.http]"),
            "{text}"
        );
        let back: Lockfile = toml::from_str(&text).unwrap();
        assert_eq!(back, lock);
        assert_eq!(text, back.to_text());
    }

    #[test]
    fn diff_names_digests_grants_and_new_plugins() {
        let old = env(vec![(
            "probe",
            plugin(
                &"a".repeat(64),
                "[http]\nallow = [\"https://api.internal\"]\n",
            ),
        )]);
        let mut new = env(vec![
            (
                "probe",
                plugin(
                    &"b".repeat(64),
                    "[http]\nallow = [\"https://api.internal\", \"https://*.example.com\"]\n",
                ),
            ),
            ("extra", plugin(&"c".repeat(64), "secrets = [\"k\"]\n")),
        ]);
        new.plugins.get_mut("probe").unwrap().limits.memory = "32MiB".into();
        let changes = diff(&old, &new);
        let text: Vec<String> = changes
            .iter()
            .map(|c| format!("{} {}: {}", c.kind.as_str(), c.path, c.what))
            .collect();
        let all = text.join("\n");
        assert!(
            all.contains("added plugins.extra: new plugin `extra`"),
            "{all}"
        );
        assert!(
            all.contains("changed plugins.probe.sha256: different code"),
            "{all}"
        );
        assert!(
            all.contains("widened plugins.probe.limits.memory: memory 16MiB → 32MiB"),
            "{all}"
        );
        assert!(
            all.contains(
                "added plugins.probe.grants.http.allow[1]: allows `https://*.example.com`"
            ),
            "{all}"
        );
        assert!(diff(&old, &old).is_empty());
        let back = diff(&new, &old);
        assert!(
            back.iter()
                .all(|c| !c.widens() || c.kind == ChangeKind::Changed),
            "{back:?}"
        );
    }
}
