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
pub mod params;
pub mod raw;
pub mod source;
pub mod units;
pub(crate) mod validate;

use std::path::Path;

pub use compose::Sources;
pub use model::{
    Environment, IncidentPolicy, Limits, OnFailure, PluginSpec, Retry, Runbook, Step, Tier,
    TierAfter,
};
pub use source::{Diagnostic, Diagnostics, KeyPath, Locate, Seg, SourceFile};
pub use validate::{DigestError, MAX_PLUGIN_FILE, Validator, closest, file_digest, toml_to_json};

/// The largest manifest file runcap reads: far beyond any real environment (a
/// thousand runbooks of a hundred steps is a few MB), small enough that checking one
/// stays fast and bounded in memory.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Why a manifest file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the file is {0} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes")]
    TooLarge(u64),
}

/// The text of a manifest file, refusing one larger than [`MAX_MANIFEST_BYTES`] before
/// reading it.
pub fn read_manifest(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_MANIFEST_BYTES {
        return Err(ReadError::TooLarge(len));
    }
    let mut text = String::with_capacity(len as usize);
    // Read one byte past the limit: a file that grew since its size was read is refused too.
    let read = file
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)?;
    if read as u64 > MAX_MANIFEST_BYTES {
        return Err(ReadError::TooLarge(read as u64));
    }
    Ok(text)
}

/// Reads, parses and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Environment, Diagnostics> {
    parse(source_file(path)?)
}

/// The manifest file at `path`, read (within [`MAX_MANIFEST_BYTES`]) and named by its
/// absolute path: what every command that reads a manifest starts from.
pub fn source_file(path: &Path) -> Result<SourceFile, Diagnostics> {
    let text = read_manifest(path).map_err(|e| {
        let help = match e {
            ReadError::TooLarge(_) => {
                "split the environment: keep what several manifests share in a base they `extends`"
            }
            ReadError::Io(_) => "pass the path of an environment manifest with --env",
        };
        Diagnostics(vec![Diagnostic::file(
            path,
            format!("cannot read the manifest: {e}"),
            Some(help.into()),
        )])
    })?;
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(SourceFile::new(file, text))
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
