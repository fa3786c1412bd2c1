//! The environment's secrets: `[secrets.NAME]` with where each value comes from, read on
//! demand. Plugins read them through the `secrets` capability ([`crate::caps::secrets`]);
//! backups use them as repository keys; redaction hides every value runcap can read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::manifest::{KeyPath, Validator};

/// `[secrets.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// `env = "BACKUP_KEY"`
    pub env: Option<String>,
    /// `file = "secrets/backup.key"`, relative to the manifest.
    pub file: Option<String>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Validates every `[secrets.NAME]`.
pub fn validate_secrets(
    v: &mut Validator,
    raw: BTreeMap<String, SecretConfig>,
) -> BTreeMap<String, SecretSource> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        let path = KeyPath::root().key("secrets").key(&name);
        if !v.name(&path, "secret", &name) {
            continue;
        }
        match (c.env, c.file) {
            (Some(var), None) => {
                out.insert(name, SecretSource::Env(var));
            }
            (None, Some(file)) => {
                out.insert(
                    name,
                    SecretSource::File(v.resolve(&path.key("file"), &file)),
                );
            }
            _ => v.error(
                &path,
                "a secret needs exactly one of `env` or `file`",
                "e.g. env = \"BACKUP_KEY\", or file = \"secrets/backup.key\"",
            ),
        }
    }
    out
}

/// Why a secret's value cannot be had. Cloneable: a read's result is kept for the
/// process, failures included, so every caller sees the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no secret `{0}` is defined")]
    Undefined(String),
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
}

/// The environment's secrets. Every value is read once, the first time any is asked
/// for (in practice when the redactor is built, before any plugin runs), and that
/// snapshot is all this process ever hands out: a secret rotated while runcap runs
/// cannot reach a plugin without also being in the redactor. The rotated value is
/// used from the next run (`runcap serve`: the next start).
#[derive(Debug, Default)]
pub struct SecretStore {
    sources: BTreeMap<String, SecretSource>,
    snapshot: std::sync::OnceLock<BTreeMap<String, Result<String, SecretError>>>,
}

impl SecretStore {
    pub fn new(sources: BTreeMap<String, SecretSource>) -> Self {
        SecretStore {
            sources,
            snapshot: std::sync::OnceLock::new(),
        }
    }

    fn snapshot(&self) -> &BTreeMap<String, Result<String, SecretError>> {
        self.snapshot.get_or_init(|| {
            self.sources
                .keys()
                .map(|n| (n.clone(), self.read(n)))
                .collect()
        })
    }

    /// The value of a secret, as it was when this process first read its secrets.
    pub fn value(&self, name: &str) -> Result<String, SecretError> {
        match self.snapshot().get(name) {
            Some(v) => v.clone(),
            None => Err(SecretError::Undefined(name.to_string())),
        }
    }

    /// Reads a secret from its source now.
    fn read(&self, name: &str) -> Result<String, SecretError> {
        match self.sources.get(name) {
            None => Err(SecretError::Undefined(name.to_string())),
            Some(SecretSource::Env(var)) => {
                std::env::var(var).map_err(|_| SecretError::EnvUnset(var.clone()))
            }
            Some(SecretSource::File(p)) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| SecretError::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Every secret value that can be read now, for redaction.
    pub fn known_values(&self) -> Vec<(String, String)> {
        self.sources
            .keys()
            .filter_map(|n| {
                self.value(n)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (n.clone(), v))
            })
            .collect()
    }
}
