//! `faults`: chaos-drill faults a plugin may inject, always reverted.
//!
//! | | |
//! |---|---|
//! | grants | per kind, the targets and the longest duration: `[plugins.NAME.grants.faults]` `kill = { targets = ["api"], max_duration = "2m" }`, plus `max_concurrent` |
//! | manifest | targets are services (`kill`, `stop`), proxies (`latency`, `drop`, `partition`; `[proxies.NAME]`), directories (`corrupt-file`, relative to the manifest) or plugins (`cert-expiry`) |
//! | default | no grant: the interface cannot be imported; an ungranted kind or target, a longer duration, or one fault too many is denied (and audited) |
//! | enforced | journal first: the fault and the recipe that undoes it are written (synced) to the store before it is applied; it is reverted when the run ends (whatever the outcome), when its duration runs out, on Ctrl-C/SIGTERM, and at the next start of runcap after a crash; proxies also drop expired faults on their own (see [`crate::chaos`]) |
//! | audit | every injection, denial and revert, with the target and outcome |

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::faults as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources, now_ms,
};
use crate::chaos::{self, Allowance, FaultManager, FaultRow, InjectError, Kind, ProxyDef, Spec};
use crate::manifest::{KeyPath, Validator};
use crate::services::ServiceDef;

/// The `faults` capability.
pub struct Faults;

impl Capability for Faults {
    const NAME: &'static str = "faults";
    const INTERFACE: &'static str = "runcap:plugin/faults";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/faults.wit"));
    type Config = FaultsGrantConfig;
    type Grant = FaultsGrant;
    type Access = FaultsAccess;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.faults]   # kind = {{ targets = [...], max_duration = \"1m\" }}, e.g. kill = {{ targets = [\"api\"], max_duration = \"1m\" }}"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: FaultsGrantConfig,
        declared: &Declared,
    ) -> Option<FaultsGrant> {
        FaultsGrant::validate(v, at, raw, declared.services, declared.proxies)
    }

    fn diff(old: &FaultsGrantConfig, new: &FaultsGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &FaultsGrant) -> Vec<String> {
        grant.describe()
    }

    fn prepare(grant: Arc<FaultsGrant>, env: &Resources) -> Result<FaultsAccess, PrepareError> {
        Ok(FaultsAccess {
            grant,
            manager: env.faults.clone(),
        })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// One kind's grant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindGrantConfig {
    pub targets: Vec<String>,
    /// `max_duration = "2m"`: the longest a fault of this kind may last.
    pub max_duration: String,
}

/// `[plugins.NAME.grants.faults]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsGrantConfig {
    pub kill: Option<KindGrantConfig>,
    pub stop: Option<KindGrantConfig>,
    pub latency: Option<KindGrantConfig>,
    pub drop: Option<KindGrantConfig>,
    pub partition: Option<KindGrantConfig>,
    #[serde(rename = "corrupt-file")]
    pub corrupt_file: Option<KindGrantConfig>,
    #[serde(rename = "cert-expiry")]
    pub cert_expiry: Option<KindGrantConfig>,
    /// `max_concurrent = 1`: faults of this plugin active at once (default 1).
    pub max_concurrent: Option<u32>,
}

/// One kind's validated grant.
#[derive(Debug, Clone)]
pub struct KindGrant {
    pub targets: BTreeSet<String>,
    pub max_duration: Duration,
    /// For corrupt-file: each target directory, resolved.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// A validated faults grant.
#[derive(Debug, Clone)]
pub struct FaultsGrant {
    pub kinds: BTreeMap<Kind, KindGrant>,
    pub max_concurrent: u32,
    pub key: String,
}

impl FaultsGrant {
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: FaultsGrantConfig,
        services: &BTreeMap<String, ServiceDef>,
        proxies: &BTreeMap<String, ProxyDef>,
    ) -> Option<Self> {
        let mut ok = true;
        let mut kinds = BTreeMap::new();
        let entries = [
            (Kind::Kill, raw.kill),
            (Kind::Stop, raw.stop),
            (Kind::Latency, raw.latency),
            (Kind::Drop, raw.drop),
            (Kind::Partition, raw.partition),
            (Kind::CorruptFile, raw.corrupt_file),
            (Kind::CertExpiry, raw.cert_expiry),
        ];
        for (kind, g) in entries {
            let Some(g) = g else { continue };
            let kp = path.key(kind.as_str());
            let max_duration = v.duration(&kp.key("max_duration"), &g.max_duration);
            let mut dirs = BTreeMap::new();
            for (i, t) in g.targets.iter().enumerate() {
                let tp = kp.key("targets").index(i);
                let known = match kind {
                    Kind::Kill | Kind::Stop => services.contains_key(t),
                    Kind::Latency | Kind::Drop | Kind::Partition => proxies.contains_key(t),
                    Kind::CorruptFile => {
                        let dir = v.resolve(&tp, t);
                        let is_dir = dir.is_dir();
                        if is_dir {
                            dirs.insert(t.clone(), dir);
                        }
                        is_dir
                    }
                    Kind::CertExpiry => !t.is_empty(),
                };
                if !known {
                    ok = false;
                    unknown_target(v, &tp, kind, t);
                }
            }
            match max_duration {
                Some(d) if !d.is_zero() => {
                    kinds.insert(
                        kind,
                        KindGrant {
                            targets: g.targets.into_iter().collect(),
                            max_duration: d,
                            dirs,
                        },
                    );
                }
                _ => ok = false,
            }
        }
        let max_concurrent = raw.max_concurrent.unwrap_or(1);
        if max_concurrent == 0 {
            ok = false;
            v.error(&path.key("max_concurrent"), "must be at least 1", "");
        }
        ok.then(|| FaultsGrant {
            kinds,
            max_concurrent,
            key: path.to_string(),
        })
    }

    /// One line per kind, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, g)| {
                let targets: Vec<&str> = g.targets.iter().map(String::as_str).collect();
                format!(
                    "fault {} on {} for at most {}",
                    k.as_str(),
                    targets.join(", "),
                    humantime::format_duration(g.max_duration)
                )
            })
            .collect();
        lines.push(format!("at most {} at once", self.max_concurrent));
        lines
    }
}

/// Reports a target the environment does not define, with how to define one.
fn unknown_target(v: &mut Validator, tp: &KeyPath, kind: Kind, t: &str) {
    let help = match kind {
        Kind::Kill | Kind::Stop => format!("define [services.{t}] or name a defined service"),
        Kind::Latency | Kind::Drop | Kind::Partition => {
            format!("define [proxies.{t}] with listen and upstream")
        }
        Kind::CorruptFile => "name an existing directory, relative to the manifest".to_string(),
        Kind::CertExpiry => "name a plugin".to_string(),
    };
    v.error(
        tp,
        format!(
            "`{t}` is not a {} this environment defines",
            chaos::target_noun(kind)
        ),
        help,
    );
}

impl FaultsGrantConfig {
    fn kinds(&self) -> [(Kind, Option<&KindGrantConfig>); 7] {
        [
            (Kind::Kill, self.kill.as_ref()),
            (Kind::Stop, self.stop.as_ref()),
            (Kind::Latency, self.latency.as_ref()),
            (Kind::Drop, self.drop.as_ref()),
            (Kind::Partition, self.partition.as_ref()),
            (Kind::CorruptFile, self.corrupt_file.as_ref()),
            (Kind::CertExpiry, self.cert_expiry.as_ref()),
        ]
    }
}

/// How one kind's grant changed: targets added and removed, and its longest duration.
fn diff_kind(
    out: &mut Vec<Change>,
    k: &KeyPath,
    kind: Kind,
    o: &KindGrantConfig,
    n: &KindGrantConfig,
) {
    use crate::manifest::units::parse_duration;
    for (i, t) in n.targets.iter().enumerate() {
        if !o.targets.contains(t) {
            out.push(Change::new(
                k.key("targets").index(i),
                ChangeKind::Added,
                format!("may inject {} faults on `{t}`", kind.as_str()),
            ));
        }
    }
    for t in &o.targets {
        if !n.targets.contains(t) {
            out.push(Change::new(
                k.key("targets"),
                ChangeKind::Removed,
                format!("may no longer inject {} faults on `{t}`", kind.as_str()),
            ));
        }
    }
    match (
        parse_duration(&o.max_duration),
        parse_duration(&n.max_duration),
    ) {
        (Ok(a), Ok(b)) if b > a => out.push(Change::new(
            k.key("max_duration"),
            ChangeKind::Widened,
            format!(
                "{} faults may last {} instead of {}",
                kind.as_str(),
                n.max_duration,
                o.max_duration
            ),
        )),
        (Ok(a), Ok(b)) if b < a => out.push(Change::new(
            k.key("max_duration"),
            ChangeKind::Narrowed,
            format!("{} faults may last only {}", kind.as_str(), n.max_duration),
        )),
        (Ok(_), Ok(_)) => {}
        _ => out.push(Change::new(
            k.key("max_duration"),
            ChangeKind::Changed,
            format!("{} → {}", o.max_duration, n.max_duration),
        )),
    }
}

/// What `new` lets a plugin inject that `old` did not, and what it no longer may.
pub fn diff(old: &FaultsGrantConfig, new: &FaultsGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for ((kind, o), (_, n)) in old.kinds().into_iter().zip(new.kinds()) {
        let k = KeyPath::root().key(kind.as_str());
        match (o, n) {
            (None, Some(n)) => out.push(Change::new(
                k,
                ChangeKind::Added,
                format!(
                    "may inject {} faults on {} for up to {}",
                    kind.as_str(),
                    n.targets.join(", "),
                    n.max_duration
                ),
            )),
            (Some(_), None) => out.push(Change::new(
                k,
                ChangeKind::Removed,
                format!("may no longer inject {} faults", kind.as_str()),
            )),
            (Some(o), Some(n)) => diff_kind(&mut out, &k, kind, o, n),
            (None, None) => {}
        }
    }
    let (a, b) = (
        old.max_concurrent.unwrap_or(1),
        new.max_concurrent.unwrap_or(1),
    );
    if b > a {
        out.push(Change::new(
            KeyPath::root().key("max_concurrent"),
            ChangeKind::Widened,
            format!("{b} faults may be active at once instead of {a}"),
        ));
    } else if b < a {
        out.push(Change::new(
            KeyPath::root().key("max_concurrent"),
            ChangeKind::Narrowed,
            format!("at most {b} faults at once"),
        ));
    }
    out
}

/// Why a fault request is outside the plugin's grant; the message names the manifest
/// entry that would allow it.
#[derive(Debug, thiserror::Error)]
pub enum FaultDenied {
    #[error(
        "{kind} faults are not granted; add {kind} = {{ targets = [\"{target}\"], max_duration = \"…\" }} to [{key}]"
    )]
    Kind {
        kind: &'static str,
        target: String,
        key: String,
    },
    #[error("{kind} on `{target}` is not granted; add \"{target}\" to {key}.{kind}.targets")]
    Target {
        kind: &'static str,
        target: String,
        key: String,
    },
    #[error(
        "a {kind} fault of {} exceeds the granted maximum of {} ({key}.{kind}.max_duration)",
        humantime::format_duration(*asked),
        humantime::format_duration(*max)
    )]
    Duration {
        kind: &'static str,
        asked: Duration,
        max: Duration,
        key: String,
    },
}

impl FaultsGrant {
    /// Checks a request's kind, target and duration against the grant; the error names
    /// the manifest entry that would allow it. What the manager may do beyond that (how
    /// many at once, which directory) is the returned [`Allowance`].
    pub fn check(&self, spec: &Spec) -> Result<Allowance, FaultDenied> {
        let kind = spec.kind.as_str();
        let Some(g) = self.kinds.get(&spec.kind) else {
            return Err(FaultDenied::Kind {
                kind,
                target: spec.target.clone(),
                key: self.key.clone(),
            });
        };
        if !g.targets.contains(&spec.target) {
            return Err(FaultDenied::Target {
                kind,
                target: spec.target.clone(),
                key: self.key.clone(),
            });
        }
        let asked = Duration::from_millis(spec.duration_ms);
        if asked.is_zero() || asked > g.max_duration {
            return Err(FaultDenied::Duration {
                kind,
                asked,
                max: g.max_duration,
                key: self.key.clone(),
            });
        }
        Ok(Allowance {
            max_concurrent: self.max_concurrent,
            key: self.key.clone(),
            dir: g.dirs.get(&spec.target).cloned(),
        })
    }
}

/// Per-plugin access: its grant and the environment's fault manager.
pub struct FaultsAccess {
    pub grant: Arc<FaultsGrant>,
    pub manager: Arc<FaultManager>,
}

fn kind_from_wit(k: wit::Kind) -> Kind {
    match k {
        wit::Kind::Kill => Kind::Kill,
        wit::Kind::Stop => Kind::Stop,
        wit::Kind::Latency => Kind::Latency,
        wit::Kind::Drop => Kind::Drop,
        wit::Kind::Partition => Kind::Partition,
        wit::Kind::CorruptFile => Kind::CorruptFile,
        wit::Kind::CertExpiry => Kind::CertExpiry,
    }
}

fn kind_to_wit(k: Kind) -> wit::Kind {
    match k {
        Kind::Kill => wit::Kind::Kill,
        Kind::Stop => wit::Kind::Stop,
        Kind::Latency => wit::Kind::Latency,
        Kind::Drop => wit::Kind::Drop,
        Kind::Partition => wit::Kind::Partition,
        Kind::CorruptFile => wit::Kind::CorruptFile,
        Kind::CertExpiry => wit::Kind::CertExpiry,
    }
}

fn to_wit(r: &FaultRow) -> wit::Fault {
    wit::Fault {
        id: r.id.clone(),
        kind: kind_to_wit(r.kind),
        target: r.target.clone(),
        injected_at_ms: r.injected_at as u64,
        expires_at_ms: r.expires_at as u64,
        detail: r.detail.clone(),
    }
}

impl CapCtx<'_, Faults> {
    /// Records and audits a denied injection; returns the error value.
    fn refuse(&mut self, manager: Option<&FaultManager>, s: &Spec, reason: String) -> wit::Error {
        if let Some(m) = manager {
            m.audit(
                "fault.denied",
                &self.core.action.run_id,
                s.kind.as_str(),
                serde_json::json!({"plugin": self.plugin(), "target": s.target, "reason": reason}),
            );
        }
        wit::Error::Denied(self.deny(s.kind.as_str(), &s.target, reason))
    }
}

impl wit::Host for CapCtx<'_, Faults> {
    async fn inject(
        &mut self,
        spec: wit::Spec,
    ) -> wasmtime::Result<Result<wit::Fault, wit::Error>> {
        crate::taped!(self, "faults.inject", (spec), self.inject_live(spec))
    }

    async fn revert(&mut self, id: String) -> wasmtime::Result<Result<(), wit::Error>> {
        crate::taped!(self, "faults.revert", (id), self.revert_live(id))
    }

    async fn active(&mut self) -> wasmtime::Result<Vec<wit::Fault>> {
        crate::taped!(self, "faults.active", (), self.active_live())
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Faults> {
    async fn inject_live(
        &mut self,
        spec: wit::Spec,
    ) -> wasmtime::Result<Result<wit::Fault, wit::Error>> {
        let s = Spec {
            kind: kind_from_wit(spec.kind),
            target: spec.target,
            duration_ms: spec.duration_ms,
            latency_ms: spec.latency_ms,
            drop_rate: spec.drop_rate,
            path: spec.path,
            days: spec.days,
        };
        let op = s.kind.as_str();
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(self.refuse(None, &s, reason)));
        };
        let allowance = match access.grant.check(&s) {
            Ok(a) => a,
            Err(denied) => {
                let reason = denied.to_string();
                return Ok(Err(self.refuse(Some(&access.manager), &s, reason)));
            }
        };
        if self.dry_run() {
            let detail = format!(
                "dry run: would inject {op} on {} for {}",
                s.target,
                humantime::format_duration(Duration::from_millis(s.duration_ms))
            );
            self.record(
                CallRecord::dry_run(Faults::NAME, op, &s.target).with_result(detail.clone()),
            );
            let now = now_ms();
            return Ok(Ok(wit::Fault {
                id: "dry-run".into(),
                kind: spec.kind,
                target: s.target,
                injected_at_ms: now,
                expires_at_ms: now + s.duration_ms,
                detail,
            }));
        }
        let run_id = self.core.action.run_id.clone();
        let plugin = self.plugin().to_string();
        match access
            .manager
            .inject(&run_id, &plugin, &allowance, &s)
            .await
        {
            Ok(row) => {
                access
                    .manager
                    .expire_later(row.id.clone(), row.expires_at as u64);
                self.record(
                    CallRecord::allowed(Faults::NAME, op, &s.target)
                        .with_result(format!("{}: {}", row.id, row.detail)),
                );
                Ok(Ok(to_wit(&row)))
            }
            Err(InjectError::Denied(reason)) => {
                Ok(Err(wit::Error::Denied(self.deny(op, &s.target, reason))))
            }
            Err(InjectError::Failed(e)) => {
                self.record(
                    CallRecord::allowed(Faults::NAME, op, &s.target)
                        .with_result(format!("failed: {e}")),
                );
                Ok(Err(wit::Error::Failed(e)))
            }
        }
    }

    async fn revert_live(&mut self, id: String) -> wasmtime::Result<Result<(), wit::Error>> {
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny("revert", &id, reason))));
        };
        if id == "dry-run" {
            self.record(CallRecord::dry_run(Faults::NAME, "revert", &id));
            return Ok(Ok(()));
        }
        // A plugin may revert only faults of its own run.
        let mine = match access.manager.active(&self.core.action.run_id) {
            Ok(active) => active.iter().any(|f| f.id == id),
            Err(e) => {
                let m = format!("cannot read the fault journal: {e}");
                self.record(
                    CallRecord::allowed(Faults::NAME, "revert", &id).with_result(m.clone()),
                );
                return Ok(Err(wit::Error::Failed(m)));
            }
        };
        if !mine {
            let reason = format!("{id} is not an active fault of this run");
            return Ok(Err(wit::Error::Denied(self.deny("revert", &id, reason))));
        }
        match access.manager.revert(&id, "plugin").await {
            Ok(t) => {
                self.record(CallRecord::allowed(Faults::NAME, "revert", &id).with_result(t));
                Ok(Ok(()))
            }
            Err(e) => {
                self.record(
                    CallRecord::allowed(Faults::NAME, "revert", &id)
                        .with_result(format!("failed: {e}")),
                );
                Ok(Err(wit::Error::Failed(e.to_string())))
            }
        }
    }

    async fn active_live(&mut self) -> wasmtime::Result<Vec<wit::Fault>> {
        let Some(access) = self.access else {
            return Ok(Vec::new());
        };
        match access.manager.active(&self.core.action.run_id) {
            Ok(rows) => Ok(rows.iter().map(to_wit).collect()),
            Err(e) => {
                tracing::error!("cannot read the fault journal for a plugin: {e}");
                Ok(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> FaultsGrantConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn diff_names_new_kinds_targets_longer_durations_and_concurrency() {
        let old = grant("kill = { targets = [\"api\"], max_duration = \"1m\" }");
        let new = grant(
            "kill = { targets = [\"api\", \"db\"], max_duration = \"5m\" }\npartition = { targets = [\"api\"], max_duration = \"1m\" }\nmax_concurrent = 3",
        );
        let changes = diff(&old, &new);
        let widening: Vec<String> = changes
            .iter()
            .filter(|c| c.widens())
            .map(|c| c.path.to_string())
            .collect();
        assert_eq!(
            widening,
            [
                "kill.targets[1]",
                "kill.max_duration",
                "partition",
                "max_concurrent"
            ]
        );
        assert!(
            diff(&new, &old).iter().all(|c| !c.widens()),
            "the reverse only narrows"
        );
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::caps::testing;

    fn spec(kind: wit::Kind, target: &str, ms: u64) -> wit::Spec {
        wit::Spec {
            kind,
            target: target.into(),
            duration_ms: ms,
            latency_ms: None,
            drop_rate: None,
            path: None,
            days: Some(30),
        }
    }

    #[tokio::test]
    async fn granted_faults_are_journaled_applied_and_reverted_others_denied() {
        let (_d, dir) = testing::dir();
        let decl = testing::Decl::default();
        let grant = testing::grant::<Faults>(
            "[plugins.p.grants.faults]\ncert-expiry = { targets = [\"checker\"], max_duration = \"1m\" }\n",
            &dir,
            &decl,
        )
        .unwrap();
        let mut action = testing::recorded(crate::caps::core::Prepared::default(), false, 1024);
        let env = testing::resources(&decl, &dir, Some(action.store.clone()));
        action.state.granted = Arc::new(testing::prepared::<Faults>(grant, &env));
        let mut ctx = action.state.view::<Faults>();
        let fault = wit::Host::inject(&mut ctx, spec(wit::Kind::CertExpiry, "checker", 30_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.faults.clock_offset("checker"), 30 * 86_400);
        for (s, why) in [
            (
                spec(wit::Kind::Kill, "checker", 1000),
                "kill faults are not granted",
            ),
            (
                spec(wit::Kind::CertExpiry, "other", 1000),
                "cert-expiry on `other` is not granted",
            ),
            (
                spec(wit::Kind::CertExpiry, "checker", 120_000),
                "exceeds the granted maximum of 1m",
            ),
            (
                spec(wit::Kind::CertExpiry, "checker", 1000),
                "already has 1 fault(s) active",
            ),
        ] {
            let r = wit::Host::inject(&mut ctx, s).await.unwrap();
            assert!(
                matches!(&r, Err(wit::Error::Denied(m)) if m.contains(why)),
                "{why}: {r:?}"
            );
        }
        wit::Host::revert(&mut ctx, fault.id.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.faults.clock_offset("checker"), 0);
        let journal = action.store.faults(10).unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].state, crate::chaos::FaultState::Reverted);
        assert_eq!(journal[0].reverted_by.as_deref(), Some("plugin"));
        let audit = action.store.audit_since(0).unwrap();
        let kinds: Vec<&str> = audit.iter().filter_map(|r| r["kind"].as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "fault.denied").count(),
            4,
            "{kinds:?}"
        );
        assert!(kinds.contains(&"fault.injected") && kinds.contains(&"fault.reverted"));
    }

    #[tokio::test]
    async fn a_corrupted_file_is_restored_byte_for_byte() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("data")).unwrap();
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("data/index.db"), &original).unwrap();
        let decl = testing::Decl::default();
        let grant = testing::grant::<Faults>(
            "[plugins.p.grants.faults]\ncorrupt-file = { targets = [\"data\"], max_duration = \"1m\" }\n",
            &dir,
            &decl,
        )
        .unwrap();
        let mut action = testing::recorded(crate::caps::core::Prepared::default(), false, 1024);
        let env = testing::resources(&decl, &dir.join(".runcap"), Some(action.store.clone()));
        action.state.granted = Arc::new(testing::prepared::<Faults>(grant, &env));
        let mut ctx = action.state.view::<Faults>();
        let mut s = spec(wit::Kind::CorruptFile, "data", 10_000);
        s.path = Some("index.db".into());
        let f = wit::Host::inject(&mut ctx, s).await.unwrap().unwrap();
        assert_ne!(std::fs::read(dir.join("data/index.db")).unwrap(), original);
        let mut escape = spec(wit::Kind::CorruptFile, "data", 10_000);
        escape.path = Some("../runcap.toml".into());
        let r = wit::Host::inject(&mut ctx, escape).await.unwrap();
        assert!(matches!(
            r,
            Err(wit::Error::Denied(_) | wit::Error::Failed(_))
        ));
        let reverted = env.faults.revert_run("run-1", "run-end").await.unwrap();
        assert_eq!(reverted.len(), 1);
        assert_eq!(reverted[0].0.id, f.id);
        assert_eq!(std::fs::read(dir.join("data/index.db")).unwrap(), original);
    }

    #[test]
    fn grant_errors_and_the_hint() {
        let (_d, dir) = testing::dir();
        let errors = testing::grant::<Faults>(
            "[plugins.p.grants.faults]\nkill = { targets = [\"api\"], max_duration = \"soon\" }\nmax_concurrent = 0\n",
            &dir,
            &testing::Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errors.contains("`api` is not a service this environment defines"),
            "{errors}"
        );
        assert!(errors.contains("must be at least 1"), "{errors}");
        testing::grant::<Faults>(&Faults::hint("p"), &dir, &testing::Decl::default()).unwrap();
    }
}
