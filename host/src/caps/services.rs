//! `services`: status, start, stop and restart of services the manifest defines.
//!
//! | | |
//! |---|---|
//! | grants | the verbs listed per service: `[plugins.NAME.grants.services]` `api = ["status", "restart"]` |
//! | manifest | `[services.NAME]` with `driver = "process"` (runcap supervises a local process) or `driver = "command"` (operator-written shell commands per verb); see [`crate::services`] |
//! | default | no grant: the interface cannot be imported; an unlisted service or verb is denied |
//! | enforced | the plugin chooses only a service and a verb, never a command line; a pid is trusted only if the process's start time matches what the supervisor recorded; mutating verbs of one service are serialized across processes (a lock file); dry-run records them without acting |
//! | audit | one call record per verb: service, decision, resulting state |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::services as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator};
use crate::services::{ServiceDef, ServiceManager, ServiceState, Status, Verb};

/// The `services` capability.
pub struct Services;

impl Capability for Services {
    const NAME: &'static str = "services";
    const INTERFACE: &'static str = "runcap:plugin/services";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/services.wit"));
    type Config = ServicesGrantConfig;
    type Grant = ServicesGrant;
    type Access = ServicesAccess;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.services]   # service = [verbs], e.g. api = [\"status\", \"restart\"]"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: ServicesGrantConfig,
        declared: &Declared,
    ) -> Option<ServicesGrant> {
        ServicesGrant::validate(v, at, raw, declared.services)
    }

    fn diff(old: &ServicesGrantConfig, new: &ServicesGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &ServicesGrant) -> Vec<String> {
        grant.describe()
    }

    fn prepare(grant: Arc<ServicesGrant>, env: &Resources) -> Result<ServicesAccess, PrepareError> {
        Ok(ServicesAccess {
            grant,
            manager: env.services.clone(),
        })
    }

    fn granted_names(grant: Option<&ServicesGrant>, kind: &str) -> Option<Vec<String>> {
        kind.is_empty().then(|| {
            grant
                .map(|g| g.services.keys().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// `[plugins.NAME.grants.services]`: service name → verbs.
pub type ServicesGrantConfig = BTreeMap<String, Vec<String>>;

/// A validated services grant.
#[derive(Debug, Clone)]
pub struct ServicesGrant {
    pub services: BTreeMap<String, BTreeSet<Verb>>,
    /// `plugins.NAME.grants.services`, for denial messages.
    pub key: String,
}

impl ServicesGrant {
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: ServicesGrantConfig,
        declared: &BTreeMap<String, ServiceDef>,
    ) -> Option<Self> {
        let mut ok = true;
        let mut services = BTreeMap::new();
        for (name, verbs) in raw {
            let sp = path.key(&name);
            if !declared.contains_key(&name) {
                ok = false;
                let names: Vec<&str> = declared.keys().map(String::as_str).collect();
                v.error(
                    &sp,
                    format!("grants service `{name}`, which is not defined under [services]"),
                    if names.is_empty() {
                        format!(
                            "define it: [services.{name}] with driver = \"process\" or \"command\""
                        )
                    } else {
                        format!("defined services: {}", names.join(", "))
                    },
                );
            }
            let mut set = BTreeSet::new();
            for (i, verb) in verbs.iter().enumerate() {
                match Verb::parse(verb) {
                    Some(vb) => {
                        set.insert(vb);
                    }
                    None => {
                        ok = false;
                        v.error(
                            &sp.index(i),
                            format!("`{verb}` is not a verb"),
                            "verbs are status, start, stop and restart",
                        );
                    }
                }
            }
            services.insert(name, set);
        }
        ok.then(|| ServicesGrant {
            services,
            key: path.to_string(),
        })
    }

    /// One line per service, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|(name, verbs)| {
                let verbs: Vec<&str> = verbs.iter().map(|v| v.as_str()).collect();
                format!("service {name}: {}", verbs.join(", "))
            })
            .collect()
    }
}

/// Compares two services grants as written: a service or a verb not granted before
/// widens (`*`, in a ceiling, stands for any service).
pub fn diff(old: &ServicesGrantConfig, new: &ServicesGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, verbs) in new {
        let at = KeyPath::root().key(name);
        let bounds: Vec<&Vec<String>> = [old.get(name), old.get("*")]
            .into_iter()
            .flatten()
            .collect();
        if bounds.is_empty() {
            out.push(Change::new(
                at,
                ChangeKind::Added,
                format!("may control service `{name}`: {}", verbs.join(", ")),
            ));
            continue;
        }
        for (i, verb) in verbs.iter().enumerate() {
            if !bounds.iter().any(|b| b.contains(verb)) {
                out.push(Change::new(
                    at.index(i),
                    ChangeKind::Added,
                    format!("may `{verb}` service `{name}`"),
                ));
            }
        }
        if let Some(o) = old.get(name) {
            for verb in o.iter().filter(|v| !verbs.contains(v)) {
                out.push(Change::new(
                    at.clone(),
                    ChangeKind::Removed,
                    format!("may no longer `{verb}` service `{name}`"),
                ));
            }
        }
    }
    for name in old.keys() {
        if name != "*" && !new.contains_key(name) {
            out.push(Change::new(
                KeyPath::root(),
                ChangeKind::Removed,
                format!("may no longer control service `{name}`"),
            ));
        }
    }
    out
}

/// Per-plugin access: its grant and the environment's services.
pub struct ServicesAccess {
    pub grant: Arc<ServicesGrant>,
    pub manager: Arc<ServiceManager>,
}

fn to_wit(s: Status) -> wit::ServiceStatus {
    wit::ServiceStatus {
        name: s.name,
        state: match s.state {
            ServiceState::Running => wit::State::Running,
            ServiceState::Stopped => wit::State::Stopped,
            ServiceState::Unknown => wit::State::Unknown,
        },
        pid: s.pid,
        uptime_ms: s.uptime_ms,
        last_exit_code: s.last_exit_code,
        health_url: s.health_url,
        detail: s.detail,
    }
}

impl wit::Host for CapCtx<'_, Services> {
    async fn control(
        &mut self,
        service: String,
        verb: wit::Verb,
    ) -> wasmtime::Result<Result<wit::ServiceStatus, wit::Error>> {
        crate::taped!(
            self,
            "services.control",
            (service, verb),
            self.control_live(service, verb)
        )
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Services> {
    async fn control_live(
        &mut self,
        service: String,
        verb: wit::Verb,
    ) -> wasmtime::Result<Result<wit::ServiceStatus, wit::Error>> {
        let verb = match verb {
            wit::Verb::Status => Verb::Status,
            wit::Verb::Start => Verb::Start,
            wit::Verb::Stop => Verb::Stop,
            wit::Verb::Restart => Verb::Restart,
        };
        let op = verb.as_str();
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny(op, &service, reason))));
        };
        let allowed = access
            .grant
            .services
            .get(&service)
            .is_some_and(|v| v.contains(&verb));
        if !allowed {
            let reason = match access.grant.services.get(&service) {
                None => format!(
                    "service `{service}` is not granted; add {service} = [\"{op}\"] to [{}]",
                    access.grant.key
                ),
                Some(_) => format!(
                    "`{op}` of service `{service}` is not granted; add \"{op}\" to {}.{service}",
                    access.grant.key
                ),
            };
            return Ok(Err(wit::Error::Denied(self.deny(op, &service, reason))));
        }
        if self.dry_run() && verb != Verb::Status {
            let mut status = access
                .manager
                .control(&service, Verb::Status)
                .await
                .unwrap_or_else(|e| Status::unknown(&service, e.to_string()));
            status.detail = format!("dry run: would {op} {service} (now {})", status.state);
            self.record(
                CallRecord::dry_run(Services::NAME, op, &service)
                    .with_result(status.detail.clone()),
            );
            return Ok(Ok(to_wit(status)));
        }
        let changes = verb != Verb::Status;
        if changes {
            self.core.before_change();
        }
        let allowed = || {
            let record = CallRecord::allowed(Services::NAME, op, &service);
            if changes { record } else { record.read_only() }
        };
        match access.manager.control(&service, verb).await {
            Ok(status) => {
                self.record(allowed().with_result(format!("{}: {}", status.state, status.detail)));
                Ok(Ok(to_wit(status)))
            }
            Err(e) => {
                self.record(allowed().with_result(format!("failed: {e}")));
                Ok(Err(wit::Error::Failed(e.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing;

    const SERVICES: &str = r#"
[services.web]
driver = "command"
start = "touch up"
stop = "rm -f up"
status = "test -f up || exit 3"

[services.db]
driver = "command"
status = "exit 0"
"#;

    #[tokio::test]
    async fn granted_verbs_run_the_operators_commands_and_others_are_denied() {
        let (_d, dir) = testing::dir();
        let decl = testing::declared(SERVICES, &dir);
        let manifest =
            format!("{SERVICES}\n[plugins.p.grants.services]\nweb = [\"status\", \"restart\"]\n");
        let grant = testing::grant::<Services>(&manifest, &dir, &decl).unwrap();
        let env = testing::resources(&decl, &dir.join(".runcap"), None);
        let mut action = testing::recorded(testing::prepared::<Services>(grant, &env), false, 1024);
        let mut ctx = action.state.view::<Services>();
        let before = wit::Host::control(&mut ctx, "web".into(), wit::Verb::Status)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(before.state, wit::State::Stopped));
        wit::Host::control(&mut ctx, "web".into(), wit::Verb::Restart)
            .await
            .unwrap()
            .unwrap();
        assert!(dir.join("up").exists(), "the restart ran the start command");
        let stop = wit::Host::control(&mut ctx, "web".into(), wit::Verb::Stop)
            .await
            .unwrap();
        assert!(
            matches!(&stop, Err(wit::Error::Denied(m)) if m.contains("add \"stop\" to plugins.p.grants.services.web")),
            "{stop:?}"
        );
        let db = wit::Host::control(&mut ctx, "db".into(), wit::Verb::Status)
            .await
            .unwrap();
        assert!(matches!(db, Err(wit::Error::Denied(_))));
        assert!(dir.join("up").exists(), "the denied stop did nothing");
        let decisions: Vec<(String, String)> =
            action.audit().into_iter().map(|(_, d, t)| (d, t)).collect();
        assert_eq!(
            decisions,
            [
                ("allowed".into(), "web".into()),
                ("allowed".into(), "web".into()),
                ("denied".into(), "web".into()),
                ("denied".into(), "db".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_dry_run_restart_only_looks() {
        let (_d, dir) = testing::dir();
        let decl = testing::declared(SERVICES, &dir);
        let manifest = format!("{SERVICES}\n[plugins.p.grants.services]\nweb = [\"restart\"]\n");
        let grant = testing::grant::<Services>(&manifest, &dir, &decl).unwrap();
        let env = testing::resources(&decl, &dir.join(".runcap"), None);
        let mut action = testing::recorded(testing::prepared::<Services>(grant, &env), true, 1024);
        let mut ctx = action.state.view::<Services>();
        let st = wit::Host::control(&mut ctx, "web".into(), wit::Verb::Restart)
            .await
            .unwrap()
            .unwrap();
        assert!(
            st.detail.contains("dry run: would restart web"),
            "{}",
            st.detail
        );
        assert!(!dir.join("up").exists());
        assert_eq!(action.audit()[0].1, "dry-run");
    }

    #[test]
    fn grant_errors_diffs_and_the_hint() {
        let (_d, dir) = testing::dir();
        let decl = testing::declared(SERVICES, &dir);
        let errors = testing::grant::<Services>(
            "[plugins.p.grants.services]\napi = [\"status\"]\nweb = [\"reboot\"]\n",
            &dir,
            &decl,
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errors.contains("grants service `api`, which is not defined"),
            "{errors}"
        );
        assert!(errors.contains("defined services: db, web"), "{errors}");
        assert!(errors.contains("`reboot` is not a verb"), "{errors}");
        testing::grant::<Services>(&Services::hint("p"), &dir, &decl).unwrap();
        let old: ServicesGrantConfig = toml::from_str("web = [\"status\"]").unwrap();
        let new: ServicesGrantConfig = toml::from_str("web = [\"status\", \"stop\"]").unwrap();
        assert!(diff(&old, &new).iter().any(|c| c.widens()));
        assert!(diff(&new, &old).iter().all(|c| !c.widens()));
    }
}
