//! `secrets`: named secret values a plugin may read.
//!
//! | | |
//! |---|---|
//! | grants | reading the secrets listed: `[plugins.NAME.grants]` `secrets = ["backup-key"]` |
//! | manifest | `[secrets.NAME]` with `env = "VAR"` (an environment variable of runcap) or `file = "path"` (its contents, trailing newline trimmed) |
//! | default | no grant: the interface cannot be imported; an unlisted secret is denied |
//! | enforced | values are read when asked for, never written to the manifest, and every known value is redacted from everything runcap stores or prints |
//! | audit | one call record per read: the secret's name and the decision, never the value |

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::bindings::runcap::plugin::secrets as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::{CallRecord, HostState};
use crate::manifest::{KeyPath, Validator};

/// The WIT interface this module implements.
pub const INTERFACE: &str = "runcap:plugin/secrets";

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

/// The environment's secrets; values are read on demand.
#[derive(Debug, Default)]
pub struct SecretStore {
    sources: BTreeMap<String, SecretSource>,
}

impl SecretStore {
    pub fn new(sources: BTreeMap<String, SecretSource>) -> Self {
        SecretStore { sources }
    }

    /// The current value of a secret.
    pub fn value(&self, name: &str) -> Result<String, String> {
        match self.sources.get(name) {
            None => Err(format!("no secret `{name}` is defined")),
            Some(SecretSource::Env(var)) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            Some(SecretSource::File(p)) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
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

/// `grants.secrets = ["NAME", …]`
pub type SecretsGrantConfig = Vec<String>;

/// A validated secrets grant.
#[derive(Debug, Clone)]
pub struct SecretsGrant {
    pub names: BTreeSet<String>,
    pub key: String,
}

impl SecretsGrant {
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: SecretsGrantConfig,
        declared: &BTreeMap<String, SecretSource>,
    ) -> Option<Arc<Self>> {
        let mut ok = true;
        for (i, name) in raw.iter().enumerate() {
            if !declared.contains_key(name) {
                ok = false;
                v.error(
                    &path.index(i),
                    format!("grants secret `{name}`, which is not defined under [secrets]"),
                    format!("define it: [secrets.{name}] with env = \"VAR\" or file = \"path\""),
                );
            }
        }
        ok.then(|| {
            Arc::new(SecretsGrant {
                names: raw.into_iter().collect(),
                key: path.to_string(),
            })
        })
    }

    /// One line per secret, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        self.names.iter().map(|n| format!("secret {n}")).collect()
    }
}

/// Compares two secrets grants as written: every name not granted before widens
/// (`*`, in a ceiling, stands for any name).
pub fn diff(old: &SecretsGrantConfig, new: &SecretsGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let any = old.iter().any(|n| n == "*");
    for (i, name) in new.iter().enumerate() {
        if !any && !old.contains(name) {
            out.push(Change::new(
                KeyPath::root().index(i),
                ChangeKind::Added,
                format!("may read secret `{name}`"),
            ));
        }
    }
    for name in old {
        if name != "*" && !new.contains(name) {
            out.push(Change::new(
                KeyPath::root(),
                ChangeKind::Removed,
                format!("may no longer read secret `{name}`"),
            ));
        }
    }
    out
}

/// Per-plugin access: its grant and the environment's secrets.
pub struct SecretsAccess {
    pub grant: Arc<SecretsGrant>,
    pub store: Arc<SecretStore>,
}

impl wit::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let Some(access) = self.granted.secrets.clone() else {
            let reason = format!(
                "no secrets grant; add secrets = [\"{name}\"] under [plugins.{}.grants]",
                self.plugin
            );
            self.record(CallRecord::denied("secrets", "get", &name, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        };
        if !access.grant.names.contains(&name) {
            let reason = format!(
                "secret `{name}` is not granted; add \"{name}\" to {}",
                access.grant.key
            );
            self.record(CallRecord::denied("secrets", "get", &name, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        }
        match access.store.value(&name) {
            Ok(v) => {
                self.record(CallRecord::allowed("secrets", "get", &name));
                Ok(Ok(v))
            }
            Err(e) => {
                self.record(
                    CallRecord::allowed("secrets", "get", &name)
                        .with_result(format!("unavailable: {e}")),
                );
                Ok(Err(wit::Error::Unavailable(e)))
            }
        }
    }
}
