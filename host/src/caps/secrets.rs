//! `secrets`: named secret values a plugin may read.
//!
//! | | |
//! |---|---|
//! | grants | reading the secrets listed: `[plugins.NAME.grants]` `secrets = ["backup-key"]` |
//! | manifest | `[secrets.NAME]` with `env = "VAR"` (an environment variable of runcap) or `file = "path"` (its contents, trailing newline trimmed); see [`crate::secrets`] |
//! | default | no grant: the interface cannot be imported; an unlisted secret is denied |
//! | enforced | values are read when asked for, never written to the manifest, and every known value is redacted from everything runcap stores or prints |
//! | audit | one call record per read: the secret's name and the decision, never the value |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::secrets as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator};
use crate::secrets::{SecretSource, SecretStore};

/// The `secrets` capability.
pub struct Secrets;

impl Capability for Secrets {
    const NAME: &'static str = "secrets";
    const INTERFACE: &'static str = "runcap:plugin/secrets";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/secrets.wit"));
    type Config = SecretsGrantConfig;
    type Grant = SecretsGrant;
    type Access = SecretsAccess;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!("[plugins.{plugin}.grants]\nsecrets = []   # names of [secrets.NAME] it may read")
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: SecretsGrantConfig,
        declared: &Declared,
    ) -> Option<SecretsGrant> {
        SecretsGrant::validate(v, at, raw, declared.secrets)
    }

    fn diff(old: &SecretsGrantConfig, new: &SecretsGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &SecretsGrant) -> Vec<String> {
        grant.describe()
    }

    fn secrets(grant: &SecretsGrant) -> Vec<String> {
        grant.names.iter().cloned().collect()
    }

    fn prepare(grant: Arc<SecretsGrant>, env: &Resources) -> Result<SecretsAccess, PrepareError> {
        Ok(SecretsAccess {
            grant,
            store: env.secrets.clone(),
        })
    }

    fn granted_names(grant: Option<&SecretsGrant>, kind: &str) -> Option<Vec<String>> {
        kind.is_empty().then(|| {
            grant
                .map(|g| g.names.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
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
    ) -> Option<Self> {
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
        ok.then(|| SecretsGrant {
            names: raw.into_iter().collect(),
            key: path.to_string(),
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

impl wit::Host for CapCtx<'_, Secrets> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        crate::taped!(self, "secrets.get", (name), self.get_live(name))
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Secrets> {
    async fn get_live(&mut self, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny("get", &name, reason))));
        };
        if !access.grant.names.contains(&name) {
            let reason = format!(
                "secret `{name}` is not granted; add \"{name}\" to {}",
                access.grant.key
            );
            return Ok(Err(wit::Error::Denied(self.deny("get", &name, reason))));
        }
        match access.store.value(&name) {
            Ok(v) => {
                self.record(CallRecord::allowed(Secrets::NAME, "get", &name));
                Ok(Ok(v))
            }
            Err(e) => {
                self.record(
                    CallRecord::allowed(Secrets::NAME, "get", &name)
                        .with_result(format!("unavailable: {e}")),
                );
                Ok(Err(wit::Error::Unavailable(e.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing::{self, Decl};

    #[tokio::test]
    async fn a_granted_secret_is_read_and_its_value_never_recorded() {
        let (_d, dir) = testing::dir();
        std::fs::write(dir.join("db.pass"), "hunter2-very-secret\n").unwrap();
        let mut decl = Decl::default();
        for name in ["db", "other", "missing"] {
            let file = dir.join(format!("{name}.pass"));
            decl.secrets
                .insert(name.to_string(), SecretSource::File(file));
        }
        let grant = testing::grant::<Secrets>(
            "[plugins.p.grants]\nsecrets = [\"db\", \"missing\"]\n",
            &dir,
            &decl,
        )
        .unwrap();
        let env = Resources {
            secrets: Arc::new(SecretStore::new(decl.secrets.clone())),
            ..Resources::none()
        };
        let mut action = testing::recorded(testing::prepared::<Secrets>(grant, &env), false, 1024);
        let mut ctx = action.state.view::<Secrets>();
        let value = wit::Host::get(&mut ctx, "db".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, "hunter2-very-secret");
        let denied = wit::Host::get(&mut ctx, "other".into()).await.unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("add \"other\" to plugins.p.grants.secrets")),
            "{denied:?}"
        );
        let missing = wit::Host::get(&mut ctx, "missing".into()).await.unwrap();
        assert!(matches!(missing, Err(wit::Error::Unavailable(_))));
        assert_eq!(
            action.audit(),
            vec![
                ("secrets".into(), "allowed".into(), "db".into()),
                ("secrets".into(), "denied".into(), "other".into()),
                ("secrets".into(), "allowed".into(), "missing".into()),
            ]
        );
        let stored = serde_json::to_string(&action.calls()).unwrap();
        assert!(!stored.contains("hunter2"), "{stored}");
    }

    #[test]
    fn granting_an_undefined_secret_is_an_error_and_the_hint_validates() {
        let (_d, dir) = testing::dir();
        let errors = testing::grant::<Secrets>(
            "[plugins.p.grants]\nsecrets = [\"nope\"]\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errors.contains("grants secret `nope`, which is not defined"),
            "{errors}"
        );
        assert!(errors.contains("[secrets.nope]"), "{errors}");
        let errors = testing::grant::<Secrets>(
            "[plugins.p.grants.secrets]\nnames = []\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("expected a sequence"), "{errors}");
        testing::grant::<Secrets>(&Secrets::hint("p"), &dir, &Decl::default()).unwrap();
    }

    #[test]
    fn a_new_name_widens() {
        let changes = diff(&vec!["a".into()], &vec!["a".into(), "b".into()]);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].widens());
        assert!(diff(&vec!["*".into()], &vec!["x".into()]).is_empty());
    }
}
