//! Environment manifests: TOML → validated [`Environment`].
//!
//! Loading is two steps, as in cargo-deny: [`raw`] deserializes what was written
//! (rejecting unknown keys), then [`validate`] checks meaning, resolves paths, parses
//! units, verifies plugin digests and collects every problem as a [`Diagnostic`] that
//! names the file, line, key and the fix. Nothing here runs a plugin.

pub mod model;
pub mod raw;
pub mod source;
pub mod units;
mod validate;

use std::path::Path;

pub use model::{Environment, IncidentPolicy, Limits, OnFailure, PluginSpec, Retry, Runbook, Step};
pub use source::{Diagnostic, Diagnostics, KeyPath, SourceFile};
pub use validate::{MAX_PLUGIN_FILE, Validator, file_digest, toml_to_json};

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

/// Parses and validates manifest text that claims to come from `source.path`.
pub fn parse(source: SourceFile) -> Result<Environment, Diagnostics> {
    let raw: raw::Manifest = match toml::from_str(&source.text) {
        Ok(raw) => raw,
        Err(e) => return Err(Diagnostics(vec![validate::toml_error(&source, &e)])),
    };
    let source = std::sync::Arc::new(source);
    validate::validate(&source, raw)
}
