//! Policy ceilings: the most any plugin may be granted in an environment.
//!
//! A policy file (TOML) is kept apart from the manifests, typically by whoever
//! approves what runs in prod. `runcap check --policy policy.toml`, or `policy =
//! "policy.toml"` in a manifest (then every command enforces it), reports every grant
//! and limit above its ceiling, at the file and line that wrote it.
//!
//! ```toml
//! [environments.prod]
//! deny = ["secrets"]                  # capabilities no plugin may have here
//!
//! [environments.prod.limits]          # the largest limits (defaults count)
//! memory = "64MiB"
//!
//! [environments.prod.grants.http]     # written like a grant: no grant may be wider
//! allow = ["https://*.internal"]
//! addresses = ["10.0.0.0/8"]
//!
//! [environments.prod.grants.services]
//! "*" = ["status", "restart"]          # `*`: any service (secrets and channels too)
//!
//! [environments.prod.grants.fs]       # read anything, write only below /var/backups
//! any = { path = "/", mode = "ro" }
//! backups = { path = "/var/backups", mode = "rw" }
//!
//! [environments.prod.signed]          # only plugins signed by these may be granted it
//! services = ["platform"]
//!
//! [signers]                           # the keys `signed` names, kept in the policy
//! platform = "ed25519:…"
//!
//! [environments."*"]                  # ceilings for every environment
//! ```
//!
//! A ceiling grant is compared with a plugin's grant by the same per-capability
//! `diff` that checks overlays and lockfiles, so a capability added to runcap gets a
//! ceiling without any code here. A capability the ceiling does not name is not
//! capped; keys a ceiling grant leaves out take their grant defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::caps::compare::{fmt_duration, fmt_size};
use crate::caps::{self, Grants};
use crate::manifest::compose::{dir_of, display_path};
use crate::manifest::{Diagnostic, Diagnostics, Environment, KeyPath, SourceFile, raw, units};

/// A policy file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// `[environments.NAME]`, or `[environments."*"]` for all.
    #[serde(default)]
    environments: BTreeMap<String, RawCeiling>,
    /// `[signers]`: `NAME = "ed25519:…"`, the keys `signed` ceilings name.
    #[serde(default)]
    signers: BTreeMap<String, String>,
}

/// `[environments.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeiling {
    /// `deny = ["secrets"]`: capabilities no plugin may be granted.
    #[serde(default)]
    deny: Vec<String>,
    /// `[environments.NAME.limits]`: the largest limits a plugin may have.
    #[serde(default)]
    limits: raw::Limits,
    /// `[environments.NAME.grants.CAP]`: the widest grant of each capability.
    #[serde(default)]
    grants: Grants,
    /// `[environments.NAME.signed]`: `CAP = ["platform"]`, a capability only plugins
    /// signed by one of these signers may be granted.
    #[serde(default)]
    signed: BTreeMap<String, Vec<String>>,
}

/// The ceilings of one environment (or of all, for `*`).
#[derive(Debug)]
struct Ceiling {
    deny: Vec<String>,
    memory: Option<u64>,
    time: Option<std::time::Duration>,
    output: Option<u64>,
    grants: Grants,
    signed: BTreeMap<String, Vec<String>>,
}

/// A loaded, checked policy file.
#[derive(Debug)]
pub struct Policy {
    source: Arc<SourceFile>,
    ceilings: BTreeMap<String, Ceiling>,
    signers: BTreeMap<String, crate::signing::PublicKey>,
}

/// Reads a policy file and parses it as TOML.
fn read_policy(path: &Path) -> Result<(Arc<SourceFile>, RawPolicy), Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::file(
            path,
            format!("cannot read the policy: {e}"),
            Some("pass the path of a policy file (TOML with [environments.NAME] ceilings)".into()),
        )])
    })?;
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let source = Arc::new(SourceFile::new(file, text));
    let raw: RawPolicy = toml::from_str(&source.text)
        .map_err(|e| Diagnostics(vec![crate::manifest::validate::toml_error(&source, &e)]))?;
    Ok((source, raw))
}

/// Checks the parts of a policy file, collecting every problem with its location.
struct Check<'a> {
    source: &'a SourceFile,
    /// The capabilities a ceiling may name.
    known: Vec<&'static str>,
    problems: Vec<Diagnostic>,
}

impl Check<'_> {
    fn problem(&mut self, at: &KeyPath, message: String, help: Option<String>) {
        self.problems
            .push(Diagnostic::at(self.source, at, message, help));
    }

    /// `name` must be a capability runcap grants.
    fn capability(&mut self, at: &KeyPath, name: &str) -> bool {
        let known = self.known.contains(&name);
        if !known {
            let help = format!("capabilities: {}", self.known.join(", "));
            self.problem(
                at,
                format!("`{name}` is not a capability runcap grants"),
                Some(help),
            );
        }
        known
    }

    /// `[signers]`: each a public key.
    fn signers(
        &mut self,
        raw: BTreeMap<String, String>,
    ) -> BTreeMap<String, crate::signing::PublicKey> {
        let mut signers = BTreeMap::new();
        for (name, text) in raw {
            match text.parse::<crate::signing::PublicKey>() {
                Ok(key) => {
                    signers.insert(name, key);
                }
                Err(e) => self.problem(
                    &KeyPath::root().key("signers").key(&name),
                    e.to_string(),
                    None,
                ),
            }
        }
        signers
    }

    /// One `[environments.NAME]`: denied capabilities, limits, grant ceilings and the
    /// capabilities only signed plugins may be granted.
    fn ceiling(
        &mut self,
        env: &str,
        c: RawCeiling,
        signers: &BTreeMap<String, crate::signing::PublicKey>,
    ) -> Ceiling {
        let at = KeyPath::root().key("environments").key(env);
        for (i, name) in c.deny.iter().enumerate() {
            self.capability(&at.key("deny").index(i), name);
        }
        let lp = at.key("limits");
        let memory = self.size(&lp.key("memory"), &c.limits.memory);
        let output = self.size(&lp.key("output"), &c.limits.output);
        let time = c.limits.time.as_ref().and_then(|t| {
            units::parse_duration(t)
                .map_err(|e| self.problem(&lp.key("time"), e.to_string(), None))
                .ok()
        });
        let mut grants = c.grants;
        self.grant_ceilings(&at.key("grants"), &grants);
        self.signed(&at.key("signed"), &c.signed, signers);
        // A ceiling's relative directories are relative to the policy file.
        caps::resolve_grant_paths(&mut grants, &|_| dir_of(&self.source.path));
        Ceiling {
            deny: c.deny,
            memory,
            time,
            output,
            grants,
            signed: c.signed,
        }
    }

    fn size(&mut self, at: &KeyPath, text: &Option<String>) -> Option<u64> {
        text.as_ref().and_then(|t| {
            units::parse_size(t)
                .map_err(|e| self.problem(at, e.to_string(), None))
                .ok()
        })
    }

    /// A ceiling is written like a grant: it must read as one.
    fn grant_ceilings(&mut self, at: &KeyPath, grants: &Grants) {
        for (name, ceiling) in grants {
            let gp = at.key(name);
            if !self.capability(&gp, name) {
                continue;
            }
            if let Some(cap) = caps::by_name(name)
                && let Err(e) = cap.diff(ceiling, ceiling)
            {
                self.problem(&gp, e.to_string(), None);
            }
        }
    }

    /// `[signed]`: capabilities runcap grants, each with signers the policy declares.
    fn signed(
        &mut self,
        at: &KeyPath,
        signed: &BTreeMap<String, Vec<String>>,
        signers: &BTreeMap<String, crate::signing::PublicKey>,
    ) {
        for (cap, names) in signed {
            let sp = at.key(cap);
            self.capability(&sp, cap);
            for (i, name) in names.iter().enumerate() {
                if !signers.contains_key(name) {
                    self.problem(
                        &sp.index(i),
                        format!("`{name}` is not a signer of this policy"),
                        Some(format!(
                            "declare its key: [signers]\n{name} = \"ed25519:…\""
                        )),
                    );
                }
            }
        }
    }
}

impl Policy {
    /// Reads and checks a policy file; problems name the policy's file and line.
    pub fn load(path: &Path) -> Result<Policy, Diagnostics> {
        let (source, raw) = read_policy(path)?;
        let mut check = Check {
            source: &source,
            known: caps::grantable().map(|c| c.name()).collect(),
            problems: Vec::new(),
        };
        let signers = check.signers(raw.signers);
        let mut ceilings = BTreeMap::new();
        for (env, c) in raw.environments {
            let ceiling = check.ceiling(&env, c, &signers);
            ceilings.insert(env, ceiling);
        }
        if check.problems.is_empty() {
            Ok(Policy {
                source,
                ceilings,
                signers,
            })
        } else {
            Err(Diagnostics(check.problems))
        }
    }

    /// `file:line` of a key of the policy.
    fn position(&self, path: &KeyPath) -> String {
        match self.source.span_of(path) {
            Some(s) => format!(
                "{}:{}",
                display_path(&self.source.path),
                self.source.line_col(s.start).0
            ),
            None => display_path(&self.source.path),
        }
    }

    /// Every grant and limit of `env` above a ceiling, located where the manifest (or
    /// the base it extends) wrote it.
    pub fn check(&self, env: &Environment) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let plugins = env
            .source
            .merged
            .get("plugins")
            .and_then(|p| p.as_table())
            .cloned()
            .unwrap_or_default();
        let policy_name = self
            .source
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Each plugin's grants, read once, with its directories resolved against the files
        // that wrote them (ceilings' were resolved against the policy file at load).
        let granted: Vec<(&String, &toml::Value, Option<Grants>)> = plugins
            .iter()
            .map(|(name, table)| {
                let mut grants = caps::grants_of(table);
                if let Some(g) = grants.as_mut() {
                    let gp = KeyPath::root().key("plugins").key(name).key("grants");
                    caps::resolve_grant_paths(g, &|p| {
                        let at = crate::manifest::compose::concat(&gp, p);
                        dir_of(&env.source.origin(&at).path)
                    });
                }
                (name, table, grants)
            })
            .collect();
        for (scope, ceiling) in &self.ceilings {
            if scope != "*" && scope != &env.name {
                continue;
            }
            let check = CeilingCheck {
                policy: self,
                env,
                ceiling,
                at: KeyPath::root().key("environments").key(scope),
                label: if scope == "*" {
                    "every environment's".to_string()
                } else {
                    format!("the {scope}")
                },
                policy_name: &policy_name,
            };
            for &(name, table, ref grants) in &granted {
                let at = KeyPath::root().key("plugins").key(name);
                let Some(grants) = grants else {
                    continue;
                };
                check.grants(&at, grants, &mut out);
                if let Some(spec) = env.plugins.get(name) {
                    check.limits(&at, spec, table, &mut out);
                    check.signed(&at, spec, grants, &mut out);
                }
            }
        }
        out
    }
}

/// One ceiling held against one environment's plugins.
struct CeilingCheck<'a> {
    policy: &'a Policy,
    env: &'a Environment,
    ceiling: &'a Ceiling,
    /// `environments.SCOPE` in the policy file.
    at: KeyPath,
    /// "the prod" or "every environment's", for messages.
    label: String,
    policy_name: &'a str,
}

impl CeilingCheck<'_> {
    /// A capability the ceiling reserves for signed plugins, granted to a plugin none of
    /// its signers signed (checked with the policy's own keys).
    fn signed(
        &self,
        at: &KeyPath,
        spec: &crate::manifest::PluginSpec,
        grants: &Grants,
        out: &mut Vec<Diagnostic>,
    ) {
        for (cap, names) in &self.ceiling.signed {
            if !grants.contains_key(cap) {
                continue;
            }
            let keys = names
                .iter()
                .filter_map(|n| self.policy.signers.get_key_value(n))
                .map(|(n, k)| (n.as_str(), k));
            let Err(e) = crate::signing::signer_of(&spec.path, &spec.sha256, keys) else {
                continue;
            };
            out.push(Diagnostic::at(
                &self.env.source,
                &at.key("grants").key(cap),
                format!(
                    "grants {cap}, which {} policy allows only to plugins signed by {} ({}): {e}",
                    self.label,
                    names.join(" or "),
                    self.policy.position(&self.at.key("signed").key(cap))
                ),
                Some(format!(
                    "have a signer sign the reviewed file (runcap sign {} --key KEY_FILE), or remove the grant",
                    spec.path.display()
                )),
            ));
        }
    }

    fn help(&self) -> String {
        format!("narrow it, or raise the ceiling in {}", self.policy_name)
    }

    /// A denied capability granted, and each entry of a grant above the ceiling's.
    fn grants(&self, at: &KeyPath, grants: &Grants, out: &mut Vec<Diagnostic>) {
        let (env, ceiling, label, cp) = (self.env, self.ceiling, &self.label, &self.at);
        for d in caps::per_capability(&ceiling.grants, grants) {
            let gp = at.key("grants").key(d.capability);
            if d.new && ceiling.deny.iter().any(|x| x == d.capability) {
                let i = ceiling
                    .deny
                    .iter()
                    .position(|x| x == d.capability)
                    .unwrap_or(0);
                out.push(Diagnostic::at(
                    &env.source,
                    &gp,
                    format!(
                        "grants {}, which {label} policy denies ({})",
                        d.capability,
                        self.policy.position(&cp.key("deny").index(i))
                    ),
                    Some(format!(
                        "remove the grant, or the denial in {}",
                        self.policy_name
                    )),
                ));
                continue;
            }
            if !(d.old && d.new) {
                continue;
            }
            let ceiling_at = self.policy.position(&cp.key("grants").key(d.capability));
            let changes = d.changes.unwrap_or_default();
            for c in changes.into_iter().filter(|c| c.widens()) {
                let path = crate::manifest::compose::concat(&gp, &c.path);
                out.push(Diagnostic::at(
                    &env.source,
                    &path,
                    format!("{}: above {label} ceiling ({ceiling_at})", c.what),
                    Some(self.help()),
                ));
            }
        }
    }

    /// Each limit of a plugin (written or default) above the ceiling's.
    fn limits(
        &self,
        at: &KeyPath,
        spec: &crate::manifest::PluginSpec,
        table: &toml::Value,
        out: &mut Vec<Diagnostic>,
    ) {
        let (ceiling, label, cp) = (self.ceiling, &self.label, &self.at);
        let lp = at.key("limits");
        let limits = [
            (
                "memory",
                ceiling.memory.map(|c| {
                    (
                        spec.limits.memory > c,
                        fmt_size(spec.limits.memory),
                        fmt_size(c),
                    )
                }),
            ),
            (
                "time",
                ceiling.time.map(|c| {
                    (
                        spec.limits.time > c,
                        fmt_duration(spec.limits.time),
                        fmt_duration(c),
                    )
                }),
            ),
            (
                "output",
                ceiling.output.map(|c| {
                    (
                        spec.limits.output > c,
                        fmt_size(spec.limits.output),
                        fmt_size(c),
                    )
                }),
            ),
        ];
        for (key, check) in limits {
            let Some((true, value, max)) = check else {
                continue;
            };
            let written = table.get("limits").and_then(|l| l.get(key)).is_some();
            out.push(Diagnostic::at(
                &self.env.source,
                &lp.key(key),
                format!(
                    "{key} {value}{} is above {label} ceiling of {max} ({})",
                    if written { "" } else { " (the default)" },
                    self.policy.position(&cp.key("limits").key(key))
                ),
                Some(self.help()),
            ));
        }
    }
}
