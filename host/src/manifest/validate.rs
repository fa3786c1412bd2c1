//! Raw manifest → validated [`Environment`], collecting every problem.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::model::{Environment, Limits, PluginSpec, Runbook, Step};
use super::raw;
use super::source::{Diagnostic, Diagnostics, KeyPath, SourceFile};
use super::units;

/// The largest plugin file runcap will hash and compile.
pub const MAX_PLUGIN_FILE: u64 = 64 << 20;

/// Shared state while validating one manifest: where problems are collected and
/// how relative paths resolve. Capability modules validate their grants with it.
pub struct Validator<'a> {
    pub source: &'a SourceFile,
    /// Directory relative paths resolve against (the manifest's).
    pub dir: PathBuf,
    diags: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    pub fn new(source: &'a SourceFile) -> Self {
        let dir = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Validator {
            source,
            dir,
            diags: Vec::new(),
        }
    }

    /// Records a problem with the value at `path`.
    pub fn error(&mut self, path: &KeyPath, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let help = (!help.is_empty()).then_some(help);
        self.diags
            .push(Diagnostic::at(self.source, path, message, help));
    }

    /// Resolves a manifest path against the manifest's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// Parses a human duration, recording a problem if it is not one.
    pub fn duration(&mut self, path: &KeyPath, text: &str) -> Option<Duration> {
        units::parse_duration(text)
            .map_err(|e| self.error(path, e, ""))
            .ok()
    }

    /// Parses a human size, recording a problem if it is not one.
    pub fn size(&mut self, path: &KeyPath, text: &str) -> Option<u64> {
        units::parse_size(text)
            .map_err(|e| self.error(path, e, ""))
            .ok()
    }

    /// Checks a plugin, runbook or step name.
    pub fn name(&mut self, path: &KeyPath, what: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.error(
                path,
                format!("`{name}` is not a valid {what} name"),
                "use lower-case letters, digits, `-` and `_`, starting with a letter or digit (at most 64)",
            );
        }
        ok
    }

    fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.diags.is_empty() {
            Ok(value)
        } else {
            Err(Diagnostics(self.diags))
        }
    }
}

pub(super) fn validate(
    source: &std::sync::Arc<SourceFile>,
    raw: raw::Manifest,
) -> Result<Environment, Diagnostics> {
    let mut v = Validator::new(source);
    let root = KeyPath::root();
    v.name(&root.key("environment"), "environment", &raw.environment);

    let mut plugins = BTreeMap::new();
    for (name, p) in raw.plugins {
        let path = root.key("plugins").key(&name);
        if !v.name(&path, "plugin", &name) {
            continue;
        }
        if let Some(spec) = plugin(&mut v, &path, &name, p) {
            plugins.insert(name, spec);
        }
    }

    let mut runbooks = BTreeMap::new();
    for (name, rb) in raw.runbooks {
        let path = root.key("runbooks").key(&name);
        if !v.name(&path, "runbook", &name) {
            continue;
        }
        let steps = steps(&mut v, &path, rb.steps, &plugins);
        runbooks.insert(
            name.clone(),
            Runbook {
                name,
                description: rb.description,
                steps,
            },
        );
    }

    let env = Environment {
        name: raw.environment,
        file: source.path.clone(),
        source: source.clone(),
        plugins,
        runbooks,
    };
    v.finish(env)
}

fn plugin(v: &mut Validator, path: &KeyPath, name: &str, p: raw::Plugin) -> Option<PluginSpec> {
    let file = v.resolve(&p.path);
    let pin = p.sha256.trim().to_ascii_lowercase();
    let pin_ok = pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit());
    if !pin_ok {
        v.error(
            &path.key("sha256"),
            "is not a sha256 digest (64 hex characters)",
            format!("set it to the output of `sha256sum {}`", p.path),
        );
    }
    match file_digest(&file) {
        Err(e) => v.error(
            &path.key("path"),
            format!("cannot use plugin file {}: {e}", file.display()),
            "build the plugin (`./dev plugins` builds the first-party ones) or fix the path; it is relative to the manifest's directory",
        ),
        Ok(actual) if pin_ok && actual != pin => v.error(
            &path.key("sha256"),
            format!("{} has sha256 {actual}, not the pinned {pin}", file.display()),
            format!(
                "the file changed since it was pinned. If you built or reviewed this version, pin it:\n  sha256 = \"{actual}\""
            ),
        ),
        Ok(_) => {}
    }

    let lp = path.key("limits");
    let mut limits = Limits::default();
    if let Some(m) = &p.limits.memory
        && let Some(bytes) = v.size(&lp.key("memory"), m)
    {
        if bytes == 0 || bytes > Limits::MAX_MEMORY {
            v.error(
                &lp.key("memory"),
                format!("{m} is outside 1 byte ..= 1GiB"),
                "runcap gives a plugin at most 1GiB of linear memory",
            );
        }
        limits.memory = bytes;
    }
    if let Some(t) = &p.limits.time
        && let Some(d) = v.duration(&lp.key("time"), t)
    {
        if d.is_zero() {
            v.error(&lp.key("time"), "must be more than zero", "");
        }
        limits.time = d;
    }
    if let Some(o) = &p.limits.output
        && let Some(bytes) = v.size(&lp.key("output"), o)
    {
        if bytes < 1024 {
            v.error(&lp.key("output"), "must be at least 1KiB", "");
        }
        limits.output = bytes;
    }

    let grants = crate::caps::validate_grants(v, &path.key("grants"), p.grants);
    Some(PluginSpec {
        name: name.to_string(),
        path: file,
        sha256: pin,
        limits,
        grants,
    })
}

fn steps(
    v: &mut Validator,
    path: &KeyPath,
    raw_steps: Vec<raw::Step>,
    plugins: &BTreeMap<String, PluginSpec>,
) -> Vec<Step> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, s) in raw_steps.into_iter().enumerate() {
        let sp = path.key("steps").index(i);
        let id = s.id.clone().unwrap_or_else(|| s.uses.clone());
        let id_path = if s.id.is_some() {
            sp.key("id")
        } else {
            sp.key("uses")
        };
        if v.name(&id_path, "step", &id) && !seen.insert(id.clone()) {
            v.error(
                &id_path,
                format!("step id `{id}` is used twice in this runbook"),
                "give each step a distinct `id = \"…\"`",
            );
        }
        if !plugins.contains_key(&s.uses) {
            let declared: Vec<&str> = plugins.keys().map(String::as_str).collect();
            let help = match closest(&s.uses, &declared) {
                Some(c) => format!(
                    "did you mean `{c}`? Declared plugins: {}",
                    declared.join(", ")
                ),
                None if declared.is_empty() => {
                    "declare it first under [plugins.NAME] with `path` and `sha256`".into()
                }
                None => format!(
                    "declare it under [plugins.{}], or use one of: {}",
                    s.uses,
                    declared.join(", ")
                ),
            };
            v.error(
                &sp.key("uses"),
                format!("uses `{}`, which is not declared under [plugins]", s.uses),
                help,
            );
        }
        let with = toml_to_json(toml::Value::Table(s.with));
        out.push(Step {
            id,
            uses: s.uses,
            with,
        });
    }
    out
}

/// The hex sha256 of a plugin file, refusing files too large to compile.
pub fn file_digest(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_PLUGIN_FILE {
        return Err(format!(
            "{} bytes is more than the {} runcap accepts for a plugin",
            meta.len(),
            bytesize::ByteSize(MAX_PLUGIN_FILE)
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Converts a TOML value to JSON; datetimes become RFC 3339 strings.
pub fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Turns a TOML syntax or shape error into a diagnostic with a suggestion.
pub(super) fn toml_error(source: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().to_string();
    let key = e
        .span()
        .and_then(|s| source.path_at(s.start))
        .map(|p| p.to_string())
        .unwrap_or_default();
    let help = if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        match closest(field, &choices) {
            Some(c) => format!("did you mean `{c}`?"),
            None if choices.is_empty() => format!("remove `{field}`"),
            None => format!(
                "remove `{field}`; this table accepts: {}",
                choices.join(", ")
            ),
        }
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        format!("add `{field} = …` to this table")
    } else {
        "see the manifest reference in README.md".into()
    };
    Diagnostic::at_span(source, e.span(), key, message, Some(help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("http-prob", &["http-probe", "redact"]),
            Some("http-probe")
        );
        assert_eq!(closest("backup", &["http-probe", "redact"]), None);
    }
}
