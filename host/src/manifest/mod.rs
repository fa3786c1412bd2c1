//! Environment manifests: TOML → validated [`Environment`].
//!
//! Loading is two steps, as in cargo-deny: [`raw`] deserializes what was written
//! (rejecting unknown keys), then [`validate`] checks meaning, resolves paths, parses
//! units, verifies plugin digests and collects every problem as a [`Diagnostic`] that
//! names the file, line, key and the fix. Nothing here runs a plugin. A manifest that
//! `extends` another is first composed from its chain ([`compose`]), keeping for each
//! value the file and line that wrote it; a `policy` it names is then checked too.

pub mod compose;
pub mod model;
pub mod raw;
pub mod source;
pub mod units;
pub(crate) mod validate;

use std::path::Path;

pub use compose::Sources;
pub use model::{Environment, IncidentPolicy, Limits, OnFailure, PluginSpec, Retry, Runbook, Step};
pub use source::{Diagnostic, Diagnostics, KeyPath, Locate, Seg, SourceFile};
pub use validate::{MAX_PLUGIN_FILE, Validator, closest, file_digest, toml_to_json};

/// Reads, parses and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Environment, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::file(
            path,
            format!("cannot read the manifest: {e}"),
            Some("pass the path of an environment manifest with --env".into()),
        )])
    })?;
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse(SourceFile::new(file, text))
}

/// Parses and validates manifest text that claims to come from `source.path`; the
/// bases it extends are read from beside it.
pub fn parse(source: SourceFile) -> Result<Environment, Diagnostics> {
    let compose::Composed {
        sources,
        mut problems,
        composed,
    } = compose::compose(source)?;
    let raw: raw::Manifest = if composed {
        // Deserialize the composed value through its TOML text, so a shape error has a
        // position, which leads back to the key and the file that wrote it.
        let text = toml::to_string(&sources.merged).unwrap_or_default();
        let merged = SourceFile::new(sources.top().path.clone(), text);
        match toml::from_str(&merged.text) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(validate::composed_toml_error(&sources, &merged, &e));
                return Err(Diagnostics(problems));
            }
        }
    } else {
        match toml::from_str(&sources.top().text) {
            Ok(raw) => raw,
            Err(e) => return Err(Diagnostics(vec![validate::toml_error(sources.top(), &e)])),
        }
    };
    let sources = std::sync::Arc::new(sources);
    let env = match validate::validate(&sources, raw) {
        Ok(env) => env,
        Err(Diagnostics(mut d)) => {
            problems.append(&mut d);
            return Err(Diagnostics(problems));
        }
    };
    if let Some(policy) = &sources.policy {
        match crate::policy::Policy::load(policy) {
            Ok(p) => problems.extend(p.check(&env)),
            Err(Diagnostics(mut d)) => problems.append(&mut d),
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(Diagnostics(problems))
    }
}
