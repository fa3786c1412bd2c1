//! Manifests that extend others: `extends = "base.toml"`.
//!
//! An environment manifest can extend a base, which can extend another (at most
//! [`MAX_CHAIN`] files; a cycle is an error that shows the chain). The chain is merged
//! from the root base up, key by key: a table in an overlay merges into the base's
//! table of the same key; any other value — a string, a number, an array — replaces
//! the base's. Arrays are replaced whole, so an overlay's `allow = [...]` is the new
//! allow list, and its `steps = [...]` the new steps. `remove = ["KEY", ...]` deletes
//! keys of the base before the overlay is merged (a plugin, a grant, a service).
//!
//! Every value remembers the file that wrote it, so a diagnostic about it names that
//! file and line, wherever it sits in the chain.
//!
//! An overlay may narrow what its base grants a plugin, but not widen it (a host
//! pattern that matches more, a new service verb, more memory) unless it lists the key
//! in `widen = ["plugins.NAME.grants.http", ...]`. What "wider" means for each grant is
//! decided next to the grant, in its capability module (see [`crate::caps::compare`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{Diagnostic, Diagnostics, KeyPath, Locate, Seg, SourceFile};

/// The longest chain of manifests `extends` may form.
pub const MAX_CHAIN: usize = 16;

/// Keys that shape composition; read and taken out before the manifest is deserialized.
const EXTENDS: &str = "extends";
const WIDEN: &str = "widen";
const REMOVE: &str = "remove";
const POLICY: &str = "policy";

/// The files a manifest was composed from, which of them wrote each value, and the
/// composed manifest itself.
#[derive(Debug)]
pub struct Sources {
    /// The chain: the manifest given first, then the base it extends, and so on.
    pub files: Vec<Arc<SourceFile>>,
    /// Key path → index in `files` of the file that wrote the value last.
    origins: BTreeMap<String, usize>,
    /// The composed manifest as written, without the composition keys.
    pub merged: toml::Table,
    /// What each file of the chain says about composition, in the order of `files`.
    pub layers: Vec<LayerInfo>,
    /// `policy = "…"`: the policy file the manifest names, resolved.
    pub policy: Option<PathBuf>,
}

/// The composition keys of one file of a chain, for `runcap config` and reports.
#[derive(Debug, Clone, Default)]
pub struct LayerInfo {
    /// `extends = "…"` as written.
    pub extends: Option<String>,
    /// `widen = [...]`: keys this file may grant more than its base.
    pub widen: Vec<String>,
    /// `remove = [...]`: keys of the base this file deletes.
    pub remove: Vec<String>,
    /// `policy = "…"` as written.
    pub policy: Option<String>,
}

impl Sources {
    /// The sources of a manifest that extends nothing.
    pub fn single(file: Arc<SourceFile>, merged: toml::Table) -> Self {
        Sources {
            files: vec![file],
            origins: BTreeMap::new(),
            merged,
            layers: vec![LayerInfo::default()],
            policy: None,
        }
    }

    /// The manifest given on the command line.
    pub fn top(&self) -> &Arc<SourceFile> {
        &self.files[0]
    }

    /// The file that wrote the value at `path`, or its nearest written ancestor.
    pub fn origin(&self, path: &KeyPath) -> &Arc<SourceFile> {
        let mut p = path.clone();
        loop {
            if let Some(i) = self.origins.get(&p.to_string()) {
                return &self.files[*i];
            }
            if p.0.pop().is_none() {
                return &self.files[0];
            }
        }
    }

    /// `file:line` of the value at `path`, for reports.
    pub fn position(&self, path: &KeyPath) -> String {
        let (file, span) = self.locate(path);
        match span {
            Some(s) => format!("{}:{}", display_path(&file.path), file.line_col(s.start).0),
            None => display_path(&file.path),
        }
    }
}

impl Locate for Sources {
    fn locate(&self, path: &KeyPath) -> (&SourceFile, Option<Range<usize>>) {
        let file = self.origin(path);
        (file, file.span_of(path))
    }
}

/// A path as short as it can be said: relative to the working directory when below it.
pub fn display_path(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    rel.unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// A manifest read and composed, ready to deserialize.
pub struct Composed {
    pub sources: Sources,
    /// Problems of composition (widening without permission, stale `widen` or
    /// `remove` entries) that do not stop the rest of validation.
    pub problems: Vec<Diagnostic>,
    /// Whether the manifest used any composition key; if not, it is deserialized from
    /// its own text, exactly as written.
    pub composed: bool,
}

/// One file of a chain, parsed, with its composition keys taken out.
struct Layer {
    file: Arc<SourceFile>,
    table: toml::Table,
    info: LayerInfo,
    /// `widen` entries: where each is written, what it names, whether it was needed.
    widen: Vec<(KeyPath, KeyPath, bool)>,
    /// `remove` entries: where each is written and what it names.
    remove: Vec<(KeyPath, KeyPath)>,
    /// The base file as `extends` names it, resolved.
    extends: Option<(String, PathBuf)>,
}

/// Reads the chain that starts at `top`, merges it and checks every overlay against
/// its base.
pub fn compose(top: SourceFile) -> Result<Composed, Diagnostics> {
    let top = Arc::new(top);
    let mut chain: Vec<Layer> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut next = Some(top);
    while let Some(file) = next.take() {
        seen.push(canonical(&file.path));
        let layer = read_layer(file)?;
        if let Some((written, base)) = &layer.extends {
            let at = KeyPath::root().key(EXTENDS);
            if seen.contains(&canonical(base)) {
                let mut names: Vec<String> =
                    chain.iter().map(|l| display_path(&l.file.path)).collect();
                names.push(display_path(&layer.file.path));
                names.push(display_path(base));
                return Err(Diagnostics(vec![Diagnostic::at(
                    &*layer.file,
                    &at,
                    format!("`{written}` closes a cycle: {}", names.join(" → ")),
                    Some("a manifest cannot extend itself, directly or through others; remove one `extends`".into()),
                )]));
            }
            if seen.len() >= MAX_CHAIN {
                return Err(Diagnostics(vec![Diagnostic::at(
                    &*layer.file,
                    &at,
                    format!("the chain of `extends` is longer than {MAX_CHAIN} files"),
                    Some("flatten some of the bases into one".into()),
                )]));
            }
            let text = super::read_manifest(base).map_err(|e| {
                Diagnostics(vec![Diagnostic::at(
                    &*layer.file,
                    &at,
                    format!("cannot read {}: {e}", base.display()),
                    Some("`extends` names a manifest file, relative to this one".into()),
                )])
            })?;
            next = Some(Arc::new(SourceFile::new(base.clone(), text)));
        }
        chain.push(layer);
    }

    let composed = chain.iter().any(|l| {
        l.extends.is_some()
            || !l.widen.is_empty()
            || !l.remove.is_empty()
            || l.info.policy.is_some()
    });
    let mut problems = Vec::new();
    let n = chain.len();
    // Merge from the root base (the last file) up to the manifest given.
    let mut merged = toml::Table::new();
    let mut origins: BTreeMap<String, usize> = BTreeMap::new();
    let files: Vec<Arc<SourceFile>> = chain.iter().map(|l| l.file.clone()).collect();
    for idx in (0..n).rev() {
        let before = (idx + 1 < n).then(|| (merged.clone(), origins.clone()));
        let layer = &mut chain[idx];
        if before.is_none() {
            for (at, _, _) in &layer.widen {
                problems.push(Diagnostic::at(
                    &*layer.file,
                    at,
                    "`widen` applies only to a manifest that `extends` another",
                    Some("remove it, or add extends = \"base.toml\"".into()),
                ));
            }
            for (at, _) in &layer.remove {
                problems.push(Diagnostic::at(
                    &*layer.file,
                    at,
                    "`remove` applies only to a manifest that `extends` another",
                    Some("remove it, or add extends = \"base.toml\"".into()),
                ));
            }
        }
        for (at, target) in &layer.remove {
            if remove(&mut merged, target) {
                forget(&mut origins, target);
            } else {
                problems.push(Diagnostic::at(
                    &*layer.file,
                    at,
                    format!("`{target}` is not in the base, so there is nothing to remove"),
                    Some("remove the entry".into()),
                ));
            }
        }
        let table = std::mem::take(&mut layer.table);
        merge(&mut merged, table, &KeyPath::root(), &mut origins, idx);
        if let Some((old, old_origins)) = before {
            let base = Base {
                table: &old,
                origins: &old_origins,
                files: &files,
            };
            let now = Base {
                table: &merged,
                origins: &origins,
                files: &files,
            };
            check_widening(&mut chain[idx], &base, &now, &mut problems);
        }
    }
    for layer in &chain {
        for (at, target, used) in &layer.widen {
            if !used {
                problems.push(Diagnostic::at(
                    &*layer.file,
                    at,
                    format!("`{target}` widens nothing: it is not wider here than in the base"),
                    Some("remove the entry, so that a later widening needs approval again".into()),
                ));
            }
        }
    }
    let policy = chain
        .iter()
        .find_map(|l| l.info.policy.as_ref().map(|p| dir_of(&l.file.path).join(p)));
    let sources = Sources {
        layers: chain.iter().map(|l| l.info.clone()).collect(),
        files: chain.into_iter().map(|l| l.file).collect(),
        origins,
        merged,
        policy,
    };
    Ok(Composed {
        sources,
        problems,
        composed,
    })
}

/// The directory relative paths in `file` resolve against.
pub fn dir_of(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Parses one file and takes out its composition keys.
fn read_layer(file: Arc<SourceFile>) -> Result<Layer, Diagnostics> {
    let mut table: toml::Table = toml::from_str(&file.text)
        .map_err(|e| Diagnostics(vec![super::validate::toml_error(&file, &e)]))?;
    let mut problems = Vec::new();
    let mut info = LayerInfo::default();
    let mut extends = None;
    let root = KeyPath::root();
    let string = |table: &mut toml::Table, key: &str, problems: &mut Vec<Diagnostic>| match table
        .remove(key)
    {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(Diagnostic::at(
                &*file,
                &root.key(key),
                format!("`{key}` must be a string: a path relative to this file"),
                Some(format!("e.g. {key} = \"base.toml\"")),
            ));
            None
        }
    };
    if let Some(base) = string(&mut table, EXTENDS, &mut problems) {
        let path = dir_of(&file.path).join(&base);
        info.extends = Some(base.clone());
        extends = Some((base, path));
    }
    info.policy = string(&mut table, POLICY, &mut problems);
    let mut widen = Vec::new();
    for (at, target) in key_list(&file, &mut table, WIDEN, &mut problems) {
        info.widen.push(target.to_string());
        widen.push((at, target, false));
    }
    let mut removes = Vec::new();
    for (at, target) in key_list(&file, &mut table, REMOVE, &mut problems) {
        info.remove.push(target.to_string());
        removes.push((at, target));
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    Ok(Layer {
        file,
        table,
        info,
        widen,
        remove: removes,
        extends,
    })
}

/// Reads `key = ["plugins.probe.grants.http", ...]`: where each entry is written and
/// the key path it names.
fn key_list(
    file: &SourceFile,
    table: &mut toml::Table,
    key: &str,
    problems: &mut Vec<Diagnostic>,
) -> Vec<(KeyPath, KeyPath)> {
    let at = KeyPath::root().key(key);
    let help = format!("e.g. {key} = [\"plugins.http-probe.grants.http\"]");
    let items = match table.remove(key) {
        None => return Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            problems.push(Diagnostic::at(
                file,
                &at,
                format!("`{key}` must be a list of keys"),
                Some(help),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(parse_key) {
            Some(path) => out.push((at.index(i), path)),
            None => problems.push(Diagnostic::at(
                file,
                &at.index(i),
                format!("`{item}` is not a dotted key like \"plugins.NAME.grants.http\""),
                Some(help.clone()),
            )),
        }
    }
    out
}

/// Parses a dotted key (`plugins.probe.grants.http`); segments may be quoted.
pub fn parse_key(text: &str) -> Option<KeyPath> {
    let mut path = KeyPath::root();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (seg, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let bare_ok = !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*');
        if !bare_ok && !rest.starts_with('"') {
            return None;
        }
        path = path.key(seg);
        rest = match after.strip_prefix('.') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return None,
            None if after.is_empty() => "",
            None => return None,
        };
    }
    (!path.0.is_empty()).then_some(path)
}

/// Whether `prefix` is `path` or one of its ancestors (array indices ignored).
pub fn is_prefix(prefix: &KeyPath, path: &KeyPath) -> bool {
    let keys = path.0.iter().filter(|s| matches!(s, Seg::Key(_)));
    prefix.0.len() <= keys.clone().count() && prefix.0.iter().zip(keys).all(|(a, b)| a == b)
}

/// Merges `layer` into `acc`, recording that file `idx` wrote what it sets.
fn merge(
    acc: &mut toml::Table,
    layer: toml::Table,
    path: &KeyPath,
    origins: &mut BTreeMap<String, usize>,
    idx: usize,
) {
    for (k, v) in layer {
        let p = path.key(&k);
        match (acc.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => {
                origins.insert(p.to_string(), idx);
                merge(a, b, &p, origins, idx);
            }
            (_, v) => {
                forget(origins, &p);
                record(origins, &p, &v, idx);
                acc.insert(k, v);
            }
        }
    }
}

fn record(origins: &mut BTreeMap<String, usize>, path: &KeyPath, value: &toml::Value, idx: usize) {
    origins.insert(path.to_string(), idx);
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                record(origins, &path.key(k), v, idx);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                record(origins, &path.index(i), v, idx);
            }
        }
        _ => {}
    }
}

/// Forgets where `path` and everything below it came from.
fn forget(origins: &mut BTreeMap<String, usize>, path: &KeyPath) {
    let p = path.to_string();
    origins.retain(|k, _| {
        !(k == &p
            || k.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('[')))
    });
}

/// Removes the value at `path`; false if there is none.
fn remove(table: &mut toml::Table, path: &KeyPath) -> bool {
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    let mut t = table;
    for seg in parents {
        let Seg::Key(k) = seg else { return false };
        match t.get_mut(k) {
            Some(toml::Value::Table(next)) => t = next,
            _ => return false,
        }
    }
    match last {
        Seg::Key(k) => t.remove(k).is_some(),
        Seg::Index(_) => false,
    }
}

/// The composed state an overlay is merged onto.
struct Base<'a> {
    table: &'a toml::Table,
    origins: &'a BTreeMap<String, usize>,
    files: &'a [Arc<SourceFile>],
}

impl Base<'_> {
    /// The file that wrote `path`, or its nearest written ancestor.
    fn file_of(&self, path: &KeyPath) -> &Arc<SourceFile> {
        let mut p = path.clone();
        let idx = loop {
            if let Some(i) = self.origins.get(&p.to_string()) {
                break *i;
            }
            if p.0.pop().is_none() {
                break self.files.len() - 1;
            }
        };
        &self.files[idx]
    }

    /// The plugin `name` as composed so far, with its granted directories resolved
    /// against the files that wrote them, so that two layers compare where they point.
    fn plugin(&self, name: &str) -> Option<toml::Value> {
        let mut plugin = self.table.get("plugins")?.get(name)?.clone();
        let at = KeyPath::root().key("plugins").key(name).key("grants");
        crate::caps::resolve_plugin_paths(&mut plugin, &|p| {
            dir_of(&self.file_of(&concat(&at, p)).path)
        });
        Some(plugin)
    }

    /// `file:line` where the base wrote `path`.
    fn position(&self, path: &KeyPath) -> String {
        let file = self.file_of(path);
        match file.span_of(path) {
            Some(s) => format!("{}:{}", display_path(&file.path), file.line_col(s.start).0),
            None => display_path(&file.path),
        }
    }
}

/// Reports every way the overlay `layer` widens what its base grants a plugin, unless
/// the overlay's `widen` list covers it.
fn check_widening(layer: &mut Layer, base: &Base, now: &Base, problems: &mut Vec<Diagnostic>) {
    let Some(old) = base.table.get("plugins").and_then(|p| p.as_table()) else {
        return;
    };
    let base_name = layer
        .extends
        .as_ref()
        .map(|(w, _)| w.clone())
        .unwrap_or_default();
    for name in old.keys() {
        let (Some(old_plugin), Some(new_plugin)) = (base.plugin(name), now.plugin(name)) else {
            continue;
        };
        let at = KeyPath::root().key("plugins").key(name);
        for change in crate::caps::diff_plugin(&old_plugin, &new_plugin) {
            if !change.widens() {
                continue;
            }
            let full = concat(&at, &change.path);
            if let Some(w) = layer
                .widen
                .iter_mut()
                .find(|(_, target, _)| is_prefix(target, &full))
            {
                w.2 = true;
                continue;
            }
            let grant_key = widen_key(&full);
            let removed_at = layer
                .remove
                .iter()
                .find(|(_, target)| is_prefix(target, &full))
                .map(|(where_, _)| where_.clone());
            let located = removed_at.unwrap_or_else(|| full.clone());
            let mut d = Diagnostic::at(
                &*layer.file,
                &located,
                format!(
                    "{}: wider than the base grants ({})",
                    change.what,
                    base.position(&full)
                ),
                Some(format!(
                    "an overlay may narrow {base_name}, not widen it. Narrow this, or, if this environment needs more, say so at the top of {}:\n  widen = [\"{grant_key}\"]",
                    layer
                        .file
                        .path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )),
            );
            d.key = full.to_string();
            problems.push(d);
        }
    }
}

/// The key a `widen` entry would name for a change at `path`: the grant
/// (`plugins.NAME.grants.CAP`) or the limit (`plugins.NAME.limits.KEY`).
fn widen_key(path: &KeyPath) -> KeyPath {
    let keys: Vec<Seg> = path
        .0
        .iter()
        .filter(|s| matches!(s, Seg::Key(_)))
        .take(4)
        .cloned()
        .collect();
    KeyPath(keys)
}

/// `a` followed by `b`.
pub fn concat(a: &KeyPath, b: &KeyPath) -> KeyPath {
    let mut p = a.clone();
    p.0.extend(b.0.iter().cloned());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn compose_file(path: &Path) -> Result<Composed, Diagnostics> {
        let text = std::fs::read_to_string(path).unwrap();
        compose(SourceFile::new(path.to_path_buf(), text))
    }

    #[test]
    fn keys_parse_and_prefix() {
        let k = parse_key("plugins.probe.grants.http").unwrap();
        assert_eq!(k.to_string(), "plugins.probe.grants.http");
        assert_eq!(
            parse_key("services.\"a.b\".verbs").unwrap().0[1],
            Seg::Key("a.b".into())
        );
        assert!(parse_key("plugins..x").is_none());
        assert!(parse_key("plugins.x.").is_none());
        assert!(parse_key("").is_none());
        let full = KeyPath::root()
            .key("plugins")
            .key("probe")
            .key("grants")
            .key("http")
            .key("allow")
            .index(2);
        assert!(is_prefix(&k, &full));
        assert!(!is_prefix(
            &parse_key("plugins.probe.limits").unwrap(),
            &full
        ));
        assert!(!is_prefix(&parse_key("plugins.prob").unwrap(), &full));
    }

    #[test]
    fn overlays_merge_by_key_and_remember_origins() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            "environment = \"base\"\n\n[vars]\na = \"1\"\nb = \"2\"\n\n[services.api]\ndriver = \"command\"\nstatus = \"true\"\n",
        );
        let top = write(
            dir.path(),
            "prod.toml",
            "extends = \"base.toml\"\nenvironment = \"prod\"\nremove = [\"services.api\"]\n\n[vars]\nb = \"3\"\n",
        );
        let c = compose_file(&top).unwrap();
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let m = &c.sources.merged;
        assert_eq!(m["environment"].as_str(), Some("prod"));
        assert_eq!(m["vars"]["a"].as_str(), Some("1"));
        assert_eq!(m["vars"]["b"].as_str(), Some("3"));
        assert!(m.get("services").unwrap().as_table().unwrap().is_empty());
        assert!(!m.contains_key("extends") && !m.contains_key("remove"));
        let a = KeyPath::root().key("vars").key("a");
        let b = KeyPath::root().key("vars").key("b");
        assert!(c.sources.origin(&a).path.ends_with("base.toml"));
        assert!(c.sources.origin(&b).path.ends_with("prod.toml"));
        assert!(c.sources.position(&a).ends_with("base.toml:4"));
        assert!(c.sources.position(&b).ends_with("prod.toml:6"));
    }

    #[test]
    fn cycles_show_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "extends = \"b.toml\"\nenvironment = \"a\"\n",
        );
        write(
            dir.path(),
            "b.toml",
            "environment = \"b\"\nextends = \"a.toml\"\n",
        );
        let e = compose_file(&dir.path().join("a.toml")).err().unwrap();
        let text = e.to_string();
        assert!(text.contains("closes a cycle"), "{text}");
        assert!(
            text.contains("a.toml → ") && text.contains("b.toml → "),
            "{text}"
        );
        assert!(text.contains("b.toml:2:"), "{text}");
    }

    #[test]
    fn a_missing_base_is_located_at_extends() {
        let dir = tempfile::tempdir().unwrap();
        let top = write(
            dir.path(),
            "prod.toml",
            "environment = \"prod\"\nextends = \"nope.toml\"\n",
        );
        let text = compose_file(&top).err().unwrap().to_string();
        assert!(
            text.contains("prod.toml:2:") && text.contains("nope.toml"),
            "{text}"
        );
    }

    #[test]
    fn stale_remove_and_widen_entries_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", "environment = \"base\"\n");
        let top = write(
            dir.path(),
            "prod.toml",
            "extends = \"base.toml\"\nremove = [\"plugins.gone\"]\nwiden = [\"plugins.x.grants.http\"]\n",
        );
        let c = compose_file(&top).unwrap();
        let text = Diagnostics(c.problems).to_string();
        assert!(text.contains("nothing to remove"), "{text}");
        assert!(text.contains("widens nothing"), "{text}");
        assert!(
            text.contains("prod.toml:2:") && text.contains("prod.toml:3:"),
            "{text}"
        );
    }
}
