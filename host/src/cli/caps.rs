//! `runcap caps`: what every plugin can touch, for operators and reviewers, as text,
//! JSON or a Markdown review document; with `--diff`, what changed against another
//! environment or a lockfile.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::caps::compare::Change;
use crate::cli::{EnvArgs, StateArgs};
use crate::lockfile::{self, EnvLock, Lockfile};
use crate::manifest::compose::display_path;
use crate::manifest::{Environment, KeyPath};

/// How `runcap caps` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a terminal.
    Text,
    /// For tools.
    Json,
    /// A review document.
    Markdown,
}

/// One plugin's capability report.
#[derive(Debug, Serialize)]
pub struct PluginCaps {
    pub name: String,
    pub path: String,
    pub sha256: String,
    /// The signer whose key verified the file's signature (`FILE.sig`), if any did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Interfaces the component imports (empty when they could not be read).
    pub imports: Vec<String>,
    /// Why the component's imports could not be read (a missing file, not a component).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub limits: Limits,
    /// Capability → granted entries.
    pub grants: Vec<Grant>,
    /// Capabilities granted but never imported.
    pub over_grants: Vec<String>,
    /// Capabilities imported but not granted (the plugin will be refused).
    pub ungranted_imports: Vec<String>,
    /// Imports runcap does not provide, each with why (the plugin will be refused).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused_imports: Vec<String>,
    /// Interface families the component imports that load but whose every use is
    /// denied at runtime (`wasi:sockets`, which language runtimes import).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_at_runtime: Vec<String>,
    pub used_by: Vec<String>,
}

impl PluginCaps {
    /// The component's imports, or why they could not be read.
    pub fn imports(&self) -> Result<&[String], &str> {
        match &self.error {
            None => Ok(&self.imports),
            Some(e) => Err(e),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub memory: String,
    pub time: String,
    pub output: String,
}

#[derive(Debug, Serialize)]
pub struct Grant {
    pub capability: &'static str,
    pub entries: Vec<String>,
    /// Entries a reviewer should look at twice (a shell, a wildcard).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<String>,
    /// `file:line` where the grant is written (for a composed manifest, the file of
    /// the chain that wrote it).
    pub written_at: String,
}

pub async fn run(args: &EnvArgs, state: &StateArgs, format: Format, diff: Option<&Path>) -> u8 {
    let (env, runtime, resources) = match super::for_review(args, state) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    super::note_leftovers_if_any(args, state);
    let report = report(&env, &runtime, &resources);
    if let Some(other) = diff {
        return run_diff(&env, &report, other, args, state, &runtime, format);
    }
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "environment": env.name, "plugins": report });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Text => print_text(&env.name, &report),
        Format::Markdown => print!("{}", markdown(&env, &report)),
    }
    0
}

/// The capability report of every plugin of `env`.
pub(crate) fn report(
    env: &Environment,
    runtime: &crate::engine::Runtime,
    resources: &crate::caps::Resources,
) -> Vec<PluginCaps> {
    env.plugins
        .iter()
        .map(|(name, spec)| plugin_report(env, name, spec, imports_of(runtime, spec, resources)))
        .collect()
}

/// One plugin's report: its grants against what its component imports.
fn plugin_report(
    env: &Environment,
    name: &str,
    spec: &crate::manifest::PluginSpec,
    imports: Result<Vec<String>, ImportsError>,
) -> PluginCaps {
    let granted = granted_and_used(env, name, spec, &imports);
    let all_imports = imports.as_deref().unwrap_or_default();
    let refused_imports = crate::engine::imports::check(name, all_imports, &spec.grants)
        .into_iter()
        .filter(|p| matches!(p, crate::engine::ImportProblem::Unknown { .. }))
        .map(|p| p.to_string())
        .collect();
    let mut denied_at_runtime: Vec<String> = all_imports
        .iter()
        .filter(|i| {
            crate::caps::wasi::classify(i) == crate::caps::wasi::WasiImport::DeniedAtRuntime
        })
        .map(|i| crate::caps::wasi::family(i).to_string())
        .collect();
    denied_at_runtime.dedup();
    PluginCaps {
        name: name.to_string(),
        path: spec.path.display().to_string(),
        sha256: spec.sha256.clone(),
        signer: spec.signer.clone(),
        imports: imports.as_ref().cloned().unwrap_or_default(),
        error: imports.err().map(|e| e.to_string()),
        limits: Limits {
            memory: bytesize::ByteSize(spec.limits.memory).to_string(),
            time: humantime::format_duration(spec.limits.time).to_string(),
            output: bytesize::ByteSize(spec.limits.output).to_string(),
        },
        grants: granted.grants,
        over_grants: granted.over,
        ungranted_imports: granted.ungranted,
        refused_imports,
        denied_at_runtime,
        used_by: used_by(env, name),
    }
}

/// A plugin's grants, and how they compare with the capabilities it imports.
struct GrantedAndUsed {
    grants: Vec<Grant>,
    /// Granted but not imported (only known when the imports could be read).
    over: Vec<String>,
    /// Imported but not granted.
    ungranted: Vec<String>,
}

fn granted_and_used(
    env: &Environment,
    name: &str,
    spec: &crate::manifest::PluginSpec,
    imports: &Result<Vec<String>, ImportsError>,
) -> GrantedAndUsed {
    let imported: Vec<&str> = imports
        .as_ref()
        .map(|i| {
            i.iter()
                .filter_map(|x| crate::caps::by_interface(x))
                .map(|c| c.name())
                .collect()
        })
        .unwrap_or_default();
    let mut out = GrantedAndUsed {
        grants: Vec::new(),
        over: Vec::new(),
        ungranted: Vec::new(),
    };
    for cap in crate::caps::grantable() {
        let granted = spec.grants.has(cap.name());
        if granted {
            let key = KeyPath::root()
                .key("plugins")
                .key(name)
                .key("grants")
                .key(cap.name());
            out.grants.push(Grant {
                capability: cap.name(),
                entries: cap.describe(&spec.grants),
                risks: cap.risks(&spec.grants),
                written_at: written_at(env, &key),
            });
        }
        let uses = imported.contains(&cap.name());
        if granted && !uses && imports.is_ok() {
            out.over.push(cap.name().to_string());
        }
        if uses && !granted && crate::caps::import_needs_grant(cap) {
            out.ungranted.push(cap.name().to_string());
        }
    }
    out
}

/// The runbooks with a step (handler, escalation or rollback included) that uses `plugin`.
fn used_by(env: &Environment, plugin: &str) -> Vec<String> {
    env.runbooks
        .values()
        .filter(|rb| {
            rb.steps
                .iter()
                .chain(&rb.handlers)
                .chain(rb.incident.steps())
                .any(|s| s.uses == plugin || s.rollback.as_ref().is_some_and(|r| r.uses == plugin))
        })
        .map(|rb| rb.name.clone())
        .collect()
}

/// Where the parts of a grant are written: one `file:line` per file of the chain that
/// contributes to it.
fn written_at(env: &Environment, key: &KeyPath) -> String {
    let mut at = vec![env.source.position(key)];
    let children = key_value(env, key)
        .and_then(|v| v.as_table())
        .map(|t| t.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for child in children {
        let path = key.key(&child);
        let file = env.source.origin(&path);
        let pos = env.source.position(&path);
        let seen = at
            .iter()
            .any(|a| a.rsplit_once(':').map(|(f, _)| f) == Some(display_path(&file.path).as_str()));
        if !seen {
            at.push(pos);
        }
    }
    at.join(", ")
}

/// The composed value at `path`, if there is one.
fn key_value<'a>(env: &'a Environment, path: &KeyPath) -> Option<&'a toml::Value> {
    let mut v: Option<&toml::Value> = None;
    for (i, seg) in path.0.iter().enumerate() {
        let next = match (seg, v) {
            (crate::manifest::Seg::Key(k), None) if i == 0 => env.source.merged.get(k),
            (crate::manifest::Seg::Key(k), Some(val)) => val.get(k),
            (crate::manifest::Seg::Index(n), Some(val)) => val.get(*n),
            _ => None,
        };
        v = Some(next?);
    }
    v
}

/// A path with `.` and `..` taken out lexically, for reports.
fn tidy(path: &Path) -> String {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if out
                    .components()
                    .next_back()
                    .is_some_and(|l| matches!(l, std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    display_path(&out)
}

/// Why a plugin's imports could not be read for its capability report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportsError {
    #[error(transparent)]
    Load(#[from] crate::engine::LoadError),
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Inspect(#[from] crate::engine::inspect::InspectError),
}

/// What a plugin's component imports; read even when its grants would refuse it,
/// because that is what a reviewer needs to see.
pub(crate) fn imports_of(
    runtime: &crate::engine::Runtime,
    spec: &crate::manifest::PluginSpec,
    resources: &crate::caps::Resources,
) -> Result<Vec<String>, ImportsError> {
    match runtime.load(spec, resources) {
        Ok(p) => Ok(p.imports),
        Err(crate::engine::LoadError::Imports { .. }) => inspect_only(spec),
        Err(e) => Err(e.into()),
    }
}

/// The imports a component declares, read without loading it.
fn inspect_only(spec: &crate::manifest::PluginSpec) -> Result<Vec<String>, ImportsError> {
    let wasm = std::fs::read(&spec.path)?;
    Ok(crate::engine::inspect::declared(&wasm)?.imports)
}

/// The runcap capability interfaces among a component's imports.
/// The imports a reviewer cares about: runcap's capability interfaces, and a WASI
/// interface every component imports when a grant gives it meaning (`wasi:filesystem/preopens`
/// with an fs grant).
fn capability_imports<'a>(imports: &'a [String], grants: &[Grant]) -> Vec<&'a str> {
    imports
        .iter()
        .filter(|x| {
            (x.starts_with("runcap:") && x.as_str() != crate::caps::TYPES_INTERFACE)
                || crate::caps::by_interface(x)
                    .is_some_and(|c| grants.iter().any(|g| g.capability == c.name()))
        })
        .map(String::as_str)
        .collect()
}

fn print_text(env: &str, report: &[PluginCaps]) {
    println!("environment {env}");
    for p in report {
        println!();
        println!("plugin {}", p.name);
        println!("  sha256   {}", p.sha256);
        if let Some(signer) = &p.signer {
            println!("  signed   by {signer}");
        }
        println!(
            "  limits   memory {}, time {}, output {}",
            p.limits.memory, p.limits.time, p.limits.output
        );
        match p.imports() {
            Ok(i) => {
                let caps = capability_imports(i, &p.grants);
                println!(
                    "  imports  {}",
                    if caps.is_empty() {
                        "none".into()
                    } else {
                        caps.join(", ")
                    }
                );
            }
            Err(e) => println!("  imports  unknown: {e}"),
        }
        if p.grants.is_empty() {
            println!("  grants   none");
        }
        for g in &p.grants {
            let flag = if p.over_grants.iter().any(|o| o == g.capability) {
                "   ⚠ over-grant: never imported"
            } else {
                ""
            };
            println!("  grants   {}  ({}){flag}", g.capability, g.written_at);
            for e in &g.entries {
                println!("             {e}");
            }
            for r in &g.risks {
                println!("             ⚠ risk: {r}");
            }
        }
        for d in &p.denied_at_runtime {
            println!("  imports  {d}: imported, denied at runtime");
        }
        for u in &p.ungranted_imports {
            println!("  ✘ imports {u} without a grant: the plugin is refused at load");
        }
        for r in &p.refused_imports {
            println!("  ✘ {r}: the plugin is refused at load");
        }
        println!(
            "  used by  {}",
            if p.used_by.is_empty() {
                "no runbook".into()
            } else {
                p.used_by.join(", ")
            }
        );
    }
}

/// Text safe inside a Markdown table cell or inline code.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A review document: what each plugin of the environment can touch, why, and where
/// each grant is written.
fn markdown(env: &Environment, report: &[PluginCaps]) -> String {
    let mut md = String::new();
    review_header(&mut md, env, report);
    summary_table(&mut md, report);
    for p in report {
        plugin_section(&mut md, p);
    }
    declarations(&mut md, env);
    since_approval(&mut md, env, report);
    md
}

/// The document's title, the manifest chain and policy, and the attention line.
fn review_header(md: &mut String, env: &Environment, report: &[PluginCaps]) {
    let sources = &env.source;
    let _ = writeln!(md, "# Capability review: environment `{}`\n", env.name);
    let _ = writeln!(
        md,
        "What each plugin of this environment can touch, read from the manifest and from each component's own imports. Nothing here is taken from the plugins' own claims.\n"
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| manifest | `{}` |",
        cell(&display_path(&sources.top().path))
    );
    if sources.files.len() > 1 {
        let chain: Vec<String> = sources.files[1..]
            .iter()
            .map(|f| format!("`{}`", cell(&display_path(&f.path))))
            .collect();
        let _ = writeln!(md, "| extends | {} |", chain.join(" → "));
    }
    if let Some(p) = &sources.policy {
        let _ = writeln!(
            md,
            "| policy | `{}` (no grant is above its ceilings) |",
            cell(&display_path(p))
        );
    }
    let _ = writeln!(md, "| plugins | {} |", report.len());
    let _ = writeln!(md, "| runbooks | {} |", env.runbooks.len());
    let widen: Vec<String> = sources
        .files
        .iter()
        .zip(&sources.layers)
        .flat_map(|(f, l)| {
            l.widen.iter().map(move |w| {
                format!(
                    "`{}` ({})",
                    cell(w),
                    f.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            })
        })
        .collect();
    if !widen.is_empty() {
        let _ = writeln!(md, "| widens its base | {} |", widen.join(", "));
    }
    let over: usize = report.iter().map(|p| p.over_grants.len()).sum();
    let refused: usize = report
        .iter()
        .map(|p| p.ungranted_imports.len() + p.refused_imports.len())
        .sum();
    let _ = writeln!(md);
    if over > 0 || refused > 0 {
        let _ = writeln!(
            md,
            "> **Attention:** {over} over-grant(s) (granted, never imported) and {refused} import(s) refused at load. See the plugins marked ⚠ and ✘ below.\n"
        );
    }
}

/// One row per plugin: digest, imports, grants, over-grants, runbooks.
fn summary_table(md: &mut String, report: &[PluginCaps]) {
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| plugin | sha256 | imports | granted | over-granted | used by |\n|---|---|---|---|---|---|"
    );
    for p in report {
        let imports = match p.imports() {
            Ok(i) => {
                let caps: Vec<&str> = capability_imports(i, &p.grants)
                    .into_iter()
                    .map(|c| c.rsplit('/').next().unwrap_or(c))
                    .collect();
                if caps.is_empty() {
                    "none".to_string()
                } else {
                    caps.join(", ")
                }
            }
            Err(_) => "unknown".into(),
        };
        let granted: Vec<&str> = p.grants.iter().map(|g| g.capability).collect();
        let _ = writeln!(
            md,
            "| `{}` | `{}…` | {} | {} | {} | {} |",
            p.name,
            p.sha256.chars().take(12).collect::<String>(),
            imports,
            if granted.is_empty() {
                "nothing".into()
            } else {
                granted.join(", ")
            },
            if p.over_grants.is_empty() {
                "—".into()
            } else {
                format!("⚠ {}", p.over_grants.join(", "))
            },
            if p.used_by.is_empty() {
                "—".into()
            } else {
                p.used_by.join(", ")
            }
        );
    }
}

/// One plugin in full: file, limits, imports, runbooks, each grant and where it is
/// written, over-grants and refused imports.
fn plugin_section(md: &mut String, p: &PluginCaps) {
    let _ = writeln!(md, "\n## `{}`\n", p.name);
    let _ = writeln!(md, "- **sha256** `{}`", p.sha256);
    if let Some(signer) = &p.signer {
        let _ = writeln!(md, "- **signed by** `{signer}`");
    }
    let _ = writeln!(md, "- **file** `{}`", cell(&tidy(Path::new(&p.path))));
    let _ = writeln!(
        md,
        "- **limits** memory {}, time {}, output {}",
        p.limits.memory, p.limits.time, p.limits.output
    );
    match p.imports() {
        Ok(i) => {
            let caps = capability_imports(i, &p.grants);
            let other = i.len()
                - caps.len()
                - i.iter()
                    .filter(|x| x.as_str() == crate::caps::TYPES_INTERFACE)
                    .count();
            let _ = writeln!(
                md,
                "- **imports** {}{}",
                if caps.is_empty() {
                    "no runcap capability".to_string()
                } else {
                    caps.iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                if other > 0 {
                    format!(
                        " (and {other} WASI interfaces, which reach nothing runcap does not grant)"
                    )
                } else {
                    String::new()
                }
            );
            for d in &p.denied_at_runtime {
                let _ = writeln!(md, "- **imports** `{d}`: imported, denied at runtime");
            }
        }
        Err(e) => {
            let _ = writeln!(md, "- **imports** unknown: {}", cell(e));
        }
    }
    let _ = writeln!(
        md,
        "- **used by** {}",
        if p.used_by.is_empty() {
            "no runbook".to_string()
        } else {
            p.used_by
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(md);
    grant_table(md, p);
}

/// Each grant of a plugin and where it is written, then its over-grants and the
/// imports refused for want of a grant.
fn grant_table(md: &mut String, p: &PluginCaps) {
    if p.grants.is_empty() {
        let _ = writeln!(
            md,
            "Granted nothing: it can compute and log, and nothing else."
        );
    } else {
        let _ = writeln!(md, "| capability | granted | written at |\n|---|---|---|");
        for g in &p.grants {
            let flag = if p.over_grants.iter().any(|o| o == g.capability) {
                " ⚠ over-grant"
            } else {
                ""
            };
            let entries: Vec<String> = g.entries.iter().map(|e| cell(e)).collect();
            let _ = writeln!(
                md,
                "| {}{flag} | {} | `{}` |",
                g.capability,
                if entries.is_empty() {
                    "(nothing)".into()
                } else {
                    entries.join("<br>")
                },
                cell(&g.written_at)
            );
        }
    }
    for r in p.grants.iter().flat_map(|g| &g.risks) {
        let _ = writeln!(md, "\n> ⚠ **Risk:** {}", cell(r));
    }
    for o in &p.over_grants {
        let _ = writeln!(
            md,
            "\n> ⚠ **Over-grant:** `{o}` is granted, but the component never imports it. Remove `[plugins.{}.grants.{o}]` unless a new version will need it.",
            p.name
        );
    }
    for u in &p.ungranted_imports {
        let _ = writeln!(
            md,
            "\n> ✘ **Refused:** the component imports `{u}` without a grant, so runcap refuses to load it."
        );
    }
    for r in &p.refused_imports {
        let _ = writeln!(
            md,
            "\n> ✘ **Refused:** the component {}, so runcap refuses to load it.",
            cell(r)
        );
    }
}

/// The services and secrets grants refer to: what a granted verb actually runs, and
/// where a secret comes from (never its value).
fn declarations(md: &mut String, env: &Environment) {
    for (key, title, intro) in [
        (
            "services",
            "Services",
            "What a granted verb does: plugins name a service and a verb, never a command.",
        ),
        (
            "secrets",
            "Secrets",
            "Where each secret's value comes from; values are never written anywhere by runcap.",
        ),
    ] {
        let Some(t) = env.source.merged.get(key).and_then(|v| v.as_table()) else {
            continue;
        };
        if t.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {title}\n\n{intro}\n");
        let _ = writeln!(md, "| name | definition | written at |\n|---|---|---|");
        for (name, def) in t {
            let parts: Vec<String> = def
                .as_table()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| format!("{k} = `{}`", cell(&v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| `{name}` | {} | `{}` |",
                parts.join("<br>"),
                cell(&env.source.position(&KeyPath::root().key(key).key(name)))
            );
        }
    }
}

/// What changed since the environment was last locked, if a lockfile beside the
/// manifest has an entry for it.
fn since_approval(md: &mut String, env: &Environment, report: &[PluginCaps]) {
    let path = Lockfile::beside(&env.file);
    let Ok(locked) = Lockfile::read_env(&path, &env.name) else {
        return;
    };
    let shown = display_path(&path);
    let lock_dir = crate::manifest::compose::dir_of(&path);
    let current = lockfile::snapshot(env, &import_lists(report), &lock_dir);
    let changes = locate(env, lockfile::diff(&locked, &current));
    let _ = writeln!(md, "\n## Since the last approval\n");
    if changes.is_empty() {
        let _ = writeln!(
            md,
            "The environment matches its entry in `{}`: nothing changed since it was locked.",
            cell(&shown)
        );
        return;
    }
    let _ = writeln!(
        md,
        "Differences from `{}` (`runcap check --locked` fails until they are approved and locked):\n",
        cell(&shown)
    );
    change_table(md, &changes);
}

fn change_table(md: &mut String, changes: &[LocatedChange]) {
    let _ = writeln!(
        md,
        "| change | key | what | written at |\n|---|---|---|---|"
    );
    for c in changes {
        let _ = writeln!(
            md,
            "| {}{} | `{}` | {} | {} |",
            if c.widens { "⚠ " } else { "" },
            c.change.kind.as_str(),
            cell(&c.change.path.to_string()),
            cell(&c.change.what),
            c.at.as_ref()
                .map(|a| format!("`{}`", cell(a)))
                .unwrap_or_else(|| "—".into())
        );
    }
}

/// Where a plugin's imports stand for a lock or a diff: the list, or nothing if the
/// component cannot be read (reported separately).
pub(crate) fn import_lists(report: &[PluginCaps]) -> BTreeMap<String, Vec<String>> {
    report
        .iter()
        .map(|p| (p.name.clone(), p.imports.clone()))
        .collect()
}

/// Whether `path` names a value in the composed manifest.
fn exists(env: &Environment, path: &KeyPath) -> bool {
    key_value(env, path).is_some()
}

/// A change with where the manifest writes it, for reports.
#[derive(Debug, Serialize)]
pub(crate) struct LocatedChange {
    #[serde(flatten)]
    pub change: Change,
    pub widens: bool,
    /// `file:line` of the key in the environment's manifest chain, when it is there.
    pub at: Option<String>,
}

/// Locates each change in the environment's manifest chain.
pub(crate) fn locate(env: &Environment, changes: Vec<Change>) -> Vec<LocatedChange> {
    changes
        .into_iter()
        .map(|c| LocatedChange {
            widens: c.widens(),
            at: exists(env, &c.path).then(|| env.source.position(&c.path)),
            change: c,
        })
        .collect()
}

/// One line per change: kind, key, what, where.
pub(crate) fn change_lines(changes: &[LocatedChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            format!(
                "{:<9}{}: {}{}",
                c.change.kind.as_str(),
                c.change.path,
                c.change.what,
                c.at.as_ref()
                    .map(|a| format!("  ({a})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

fn run_diff(
    env: &Environment,
    report: &[PluginCaps],
    other: &Path,
    args: &EnvArgs,
    state: &StateArgs,
    runtime: &crate::engine::Runtime,
    format: Format,
) -> u8 {
    let lock_dir = crate::manifest::compose::dir_of(&env.file);
    for p in report {
        if let Some(e) = &p.error {
            eprintln!("warning: plugin {}: cannot read its imports: {e}", p.name);
        }
    }
    let current = lockfile::snapshot(env, &import_lists(report), &lock_dir);
    let (baseline, label) = match baseline(env, other, args, state, runtime, &lock_dir) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let changes = locate(env, lockfile::diff(&baseline, &current));
    let widened = changes.iter().filter(|c| c.widens).count();
    print_diff(env, &label, &changes, widened, format);
    if widened > 0 { 1 } else { 0 }
}

/// What `--diff` compares against, and its label: a lockfile's entry for the
/// environment, or another manifest as it would be locked now.
fn baseline(
    env: &Environment,
    other: &Path,
    args: &EnvArgs,
    state: &StateArgs,
    runtime: &crate::engine::Runtime,
    lock_dir: &Path,
) -> Result<(EnvLock, String), u8> {
    if lockfile::is_lockfile(other) {
        return match Lockfile::read_env(other, &env.name) {
            Ok(l) => Ok((l, display_path(other))),
            Err(e) => {
                eprintln!("error: {e}");
                Err(2)
            }
        };
    }
    let other_args = EnvArgs {
        env: other.to_path_buf(),
    };
    let other_env = super::load_env(&other_args)?;
    let resources = super::resources(&other_env, args, state, None)?;
    let other_report = report_for(&other_env, runtime, &resources);
    Ok((
        lockfile::snapshot(&other_env, &import_lists(&other_report), lock_dir),
        format!("{} ({})", other_env.name, display_path(other)),
    ))
}

/// Prints the changes `--diff` found, in the format asked for.
fn print_diff(
    env: &Environment,
    label: &str,
    changes: &[LocatedChange],
    widened: usize,
    format: Format,
) {
    let subject = format!("{} ({})", env.name, display_path(&env.file));
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "environment": env.name,
                "manifest": display_path(&env.file),
                "against": label,
                "widened": widened > 0,
                "changes": changes,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Markdown => {
            let mut md = format!(
                "# Capability changes: `{}` against `{}`\n\n",
                cell(&subject),
                cell(label)
            );
            if changes.is_empty() {
                md.push_str("No changes.\n");
            } else {
                change_table(&mut md, changes);
                let _ = writeln!(
                    md,
                    "\n{widened} of {} changes widen what `{}` may do.",
                    changes.len(),
                    env.name
                );
            }
            print!("{md}");
        }
        Format::Text => {
            println!("{subject} against {label}");
            for line in change_lines(changes) {
                println!("  {line}");
            }
            if changes.is_empty() {
                println!("✔ no changes");
            } else if widened == 0 {
                println!(
                    "✔ {} changes, none widens what {} may do",
                    changes.len(),
                    env.name
                );
            } else {
                println!(
                    "✘ {} changes, {widened} widen what {} may do",
                    changes.len(),
                    env.name
                );
            }
        }
    }
}

fn report_for(
    env: &Environment,
    runtime: &crate::engine::Runtime,
    resources: &crate::caps::Resources,
) -> Vec<PluginCaps> {
    let r = report(env, runtime, resources);
    for p in &r {
        if let Some(e) = &p.error {
            eprintln!(
                "warning: plugin {} of {}: cannot read its imports: {e}",
                p.name, env.name
            );
        }
    }
    r
}
