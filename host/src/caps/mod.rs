//! Capabilities: everything a plugin can ask the host to do.
//!
//! Each capability is one module with the same parts, in the same order: a doc table
//! (what it grants, manifest key, default, how it is enforced, what is audited), its
//! grant type and validation, its per-action state, and its WIT `Host` impl on
//! [`HostState`]. Adding one means: a WIT interface, a module here, a field in
//! [`Grants`]/[`ValidGrants`]/[`HostState`], and an entry in [`CAPABILITIES`].

pub mod backup;
pub mod compare;
pub mod faults;
pub mod fs;
pub mod http;
pub mod log;
pub mod notify;
pub mod secrets;
pub mod services;
pub mod wasi;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::runcap::plugin as wit;
use crate::manifest::{KeyPath, Validator};

/// `[plugins.NAME.grants]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// `[plugins.NAME.grants.http]`
    pub http: Option<http::HttpGrantConfig>,
    /// `[plugins.NAME.grants.notify]`
    pub notify: Option<notify::NotifyGrantConfig>,
    /// `[plugins.NAME.grants.services]`
    pub services: Option<services::ServicesGrantConfig>,
    /// `secrets = ["NAME", …]` under `[plugins.NAME.grants]`
    pub secrets: Option<secrets::SecretsGrantConfig>,
    /// `[plugins.NAME.grants.faults]`
    pub faults: Option<faults::FaultsGrantConfig>,
    /// `[plugins.NAME.grants.backup]`
    pub backup: Option<backup::BackupGrantConfig>,
    /// `[plugins.NAME.grants.fs]`
    pub fs: Option<fs::FsGrantConfig>,
}

/// Validated grants of one plugin.
#[derive(Debug, Clone, Default)]
pub struct ValidGrants {
    pub http: Option<Arc<http::HttpGrant>>,
    pub notify: Option<Arc<notify::NotifyGrant>>,
    pub services: Option<Arc<services::ServicesGrant>>,
    pub secrets: Option<Arc<secrets::SecretsGrant>>,
    pub faults: Option<Arc<faults::FaultsGrant>>,
    pub backup: Option<Arc<backup::BackupGrant>>,
    pub fs: Option<Arc<fs::FsGrant>>,
}

/// What the environment declares outside the plugins, which grants refer to.
pub struct Declared<'a> {
    pub services: &'a std::collections::BTreeMap<String, services::ServiceDef>,
    pub secrets: &'a std::collections::BTreeMap<String, secrets::SecretSource>,
    pub proxies: &'a std::collections::BTreeMap<String, faults::ProxyDef>,
}

/// Validates every grant of one plugin.
pub fn validate_grants(
    v: &mut Validator,
    path: &KeyPath,
    raw: Grants,
    declared: &Declared,
) -> ValidGrants {
    ValidGrants {
        faults: raw.faults.and_then(|g| {
            faults::FaultsGrant::validate(
                v,
                &path.key("faults"),
                g,
                declared.services,
                declared.proxies,
            )
        }),
        backup: raw.backup.and_then(|g| {
            backup::BackupGrant::validate(v, &path.key("backup"), g, declared.secrets)
        }),
        secrets: raw.secrets.and_then(|g| {
            secrets::SecretsGrant::validate(v, &path.key("secrets"), g, declared.secrets)
        }),
        services: raw.services.and_then(|g| {
            services::ServicesGrant::validate(v, &path.key("services"), g, declared.services)
        }),
        http: raw
            .http
            .and_then(|g| http::HttpGrant::validate(v, &path.key("http"), g)),
        notify: raw
            .notify
            .and_then(|g| notify::NotifyGrant::validate(v, &path.key("notify"), g)),
        fs: raw
            .fs
            .and_then(|g| fs::FsGrant::validate(v, &path.key("fs"), g)),
    }
}

/// A plugin's grants turned into what its actions use (HTTP clients, webhook
/// channels), built once when the plugin loads and shared by its actions.
#[derive(Clone, Default)]
pub struct Prepared {
    pub http: Option<Arc<http::HttpClient>>,
    pub notify: Option<Arc<notify::Notifier>>,
    pub services: Option<Arc<services::ServicesAccess>>,
    pub secrets: Option<Arc<secrets::SecretsAccess>>,
    pub faults: Option<Arc<faults::FaultsAccess>>,
    /// The environment's fault manager, whose cert-expiry faults move plugin clocks.
    pub clocks: Option<Arc<faults::FaultManager>>,
    pub backup: Option<Arc<backup::BackupAccess>>,
    /// Directories preopened for each action.
    pub fs: Option<Arc<fs::FsGrant>>,
}

/// Host-side state shared by every plugin of an environment: its services and where
/// their state lives, its secrets, and the redaction every record passes through. Built
/// once per command.
#[derive(Clone)]
pub struct Shared {
    pub services: Arc<services::ServiceManager>,
    pub secrets: Arc<secrets::SecretStore>,
    pub proxies: Arc<faults::ProxyManager>,
    pub faults: Arc<faults::FaultManager>,
    /// The `[redaction]` rules plus every known secret value (see [`crate::redaction`]).
    pub redactor: Arc<runcap_redact::Redactor>,
}

impl Shared {
    /// The environment's shared state; faults need `store` for their journal.
    pub fn new(
        env: &crate::manifest::Environment,
        state_dir: &std::path::Path,
        store: Option<Arc<crate::store::Store>>,
    ) -> Self {
        let secrets = Arc::new(secrets::SecretStore::new(env.secrets.clone()));
        let redaction = Arc::new(crate::redaction::Spec::new(&env.redaction, &secrets));
        let services = Arc::new(services::ServiceManager::new(
            env.services.clone(),
            state_dir,
            redaction.clone(),
        ));
        let proxies = Arc::new(faults::ProxyManager::new(env.proxies.clone(), state_dir));
        Shared {
            faults: Arc::new(faults::FaultManager::new(
                store,
                services.clone(),
                proxies.clone(),
                state_dir,
            )),
            services,
            redactor: crate::redaction::host_redactor(&redaction),
            secrets,
            proxies,
        }
    }

    /// An environment with no services, secrets or faults (benchmarks, plugin tooling).
    pub fn none() -> Self {
        let dir = std::path::Path::new(".");
        let services = Arc::new(services::ServiceManager::new(
            Default::default(),
            dir,
            Arc::default(),
        ));
        let proxies = Arc::new(faults::ProxyManager::new(Default::default(), dir));
        Shared {
            faults: Arc::new(faults::FaultManager::new(
                None,
                services.clone(),
                proxies.clone(),
                dir,
            )),
            services,
            secrets: Arc::default(),
            proxies,
            redactor: Arc::default(),
        }
    }
}

impl Prepared {
    pub fn new(grants: &ValidGrants, shared: &Shared) -> Result<Self, String> {
        Ok(Prepared {
            clocks: Some(shared.faults.clone()),
            faults: grants.faults.as_ref().map(|g| {
                Arc::new(faults::FaultsAccess {
                    grant: g.clone(),
                    manager: shared.faults.clone(),
                })
            }),
            backup: grants
                .backup
                .as_ref()
                .map(|g| Arc::new(backup::BackupAccess::new(g.clone(), shared.secrets.clone()))),
            fs: grants.fs.clone(),
            secrets: grants.secrets.as_ref().map(|g| {
                Arc::new(secrets::SecretsAccess {
                    grant: g.clone(),
                    store: shared.secrets.clone(),
                })
            }),
            services: grants.services.as_ref().map(|g| {
                Arc::new(services::ServicesAccess {
                    grant: g.clone(),
                    manager: shared.services.clone(),
                })
            }),
            http: match &grants.http {
                Some(g) => Some(Arc::new(http::HttpClient::new(g.clone())?)),
                None => None,
            },
            notify: match &grants.notify {
                Some(g) => Some(Arc::new(notify::Notifier::new(g.clone())?)),
                None => None,
            },
        })
    }
}

/// A capability interface a component may import, and what it takes to be allowed to.
pub struct Capability {
    /// Short name used in reports (`http`).
    pub name: &'static str,
    /// WIT interface without version (`runcap:plugin/http`).
    pub interface: &'static str,
    /// The grant key under `[plugins.NAME]` that allows importing it, if one is needed.
    pub grant_key: Option<&'static str>,
    /// Whether these grants allow importing it.
    pub granted: fn(&ValidGrants) -> bool,
    /// One line per granted entry, for `runcap caps`.
    pub describe: fn(&ValidGrants) -> Vec<String>,
}

/// Every capability the host provides.
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "log",
        interface: log::INTERFACE,
        grant_key: None,
        granted: |_| true,
        describe: |_| Vec::new(),
    },
    Capability {
        name: "http",
        interface: http::INTERFACE,
        grant_key: Some("grants.http"),
        granted: |g| g.http.is_some(),
        describe: |g| g.http.as_ref().map(|h| h.describe()).unwrap_or_default(),
    },
    Capability {
        name: "notify",
        interface: notify::INTERFACE,
        grant_key: Some("grants.notify"),
        granted: |g| g.notify.is_some(),
        describe: |g| g.notify.as_ref().map(|n| n.describe()).unwrap_or_default(),
    },
    Capability {
        name: "services",
        interface: services::INTERFACE,
        grant_key: Some("grants.services"),
        granted: |g| g.services.is_some(),
        describe: |g| {
            g.services
                .as_ref()
                .map(|s| s.describe())
                .unwrap_or_default()
        },
    },
    Capability {
        name: "secrets",
        interface: secrets::INTERFACE,
        grant_key: Some("grants.secrets"),
        granted: |g| g.secrets.is_some(),
        describe: |g| g.secrets.as_ref().map(|s| s.describe()).unwrap_or_default(),
    },
    Capability {
        name: "faults",
        interface: faults::INTERFACE,
        grant_key: Some("grants.faults"),
        granted: |g| g.faults.is_some(),
        describe: |g| g.faults.as_ref().map(|f| f.describe()).unwrap_or_default(),
    },
    Capability {
        name: "backup",
        interface: backup::INTERFACE,
        grant_key: Some("grants.backup"),
        granted: |g| g.backup.is_some(),
        describe: |g| g.backup.as_ref().map(|b| b.describe()).unwrap_or_default(),
    },
    Capability {
        name: "fs",
        interface: fs::INTERFACE,
        grant_key: Some("grants.fs"),
        granted: |g| g.fs.is_some(),
        describe: |g| g.fs.as_ref().map(|f| f.describe()).unwrap_or_default(),
    },
];

impl Capability {
    /// Whether importing the interface without a grant refuses the plugin. WASI interfaces
    /// (the file system) are imported by every standard-library component and grant
    /// nothing by themselves, so only runcap's own interfaces need a grant to be imported.
    pub fn import_needs_grant(&self) -> bool {
        self.grant_key.is_some() && !self.interface.starts_with("wasi:")
    }
}

/// The WIT interface every world function's types come from; importing it needs no grant.
pub const TYPES_INTERFACE: &str = "runcap:plugin/types";

/// Links WASI and every capability interface into the one linker all plugins share;
/// what a given action may do is decided by the grants in its [`HostState`].
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::http::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::notify::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::services::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::secrets::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::faults::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::backup::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// One use of a capability, allowed or denied, as run records and the audit log keep it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    pub capability: &'static str,
    pub operation: String,
    pub target: String,
    /// `allowed`, `denied`, or `dry-run` (allowed, recorded, not carried out).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub at_ms: u64,
}

impl CallRecord {
    fn new(
        capability: &'static str,
        operation: &str,
        target: &str,
        decision: &'static str,
    ) -> Self {
        CallRecord {
            capability,
            operation: operation.to_string(),
            target: target.to_string(),
            decision,
            reason: None,
            result: None,
            at_ms: now_ms(),
        }
    }

    pub fn allowed(capability: &'static str, operation: &str, target: &str) -> Self {
        Self::new(capability, operation, target, "allowed")
    }

    pub fn denied(capability: &'static str, operation: &str, target: &str, reason: &str) -> Self {
        let mut r = Self::new(capability, operation, target, "denied");
        r.reason = Some(reason.to_string());
        r
    }

    pub fn dry_run(capability: &'static str, operation: &str, target: &str) -> Self {
        Self::new(capability, operation, target, "dry-run")
    }

    pub fn with_result(mut self, result: String) -> Self {
        self.result = Some(result);
        self
    }
}

/// Receives capability calls as they happen, so they are durable before the action ends.
pub type CallSink = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// The run and step an action belongs to, for capabilities that report it onward.
#[derive(Debug, Clone, Default)]
pub struct ActionInfo {
    pub run_id: String,
    pub environment: String,
    pub runbook: String,
    pub step: String,
}

/// Caps the linear memory and tables of one action, and remembers whether the cap was hit
/// so a resulting trap can be reported as "out of memory".
pub struct MemoryLimiter {
    pub memory_limit: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Everything one action's store holds: its WASI context, limits, and one field of
/// per-action state per capability.
pub struct HostState {
    /// The plugin's manifest name, for messages.
    pub plugin: Arc<str>,
    /// Which run and step this action belongs to.
    pub action: ActionInfo,
    /// Receives every capability call as it happens.
    pub sink: Option<CallSink>,
    pub dry_run: bool,
    pub deadline: Instant,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub stdout: wasi::Capture,
    pub stderr: wasi::Capture,
    pub log: log::LogState,
    /// What this plugin's grants allow, ready to use.
    pub granted: Prepared,
    /// Capability calls of this action, in order.
    pub calls: Vec<CallRecord>,
    /// What every string this action reports passes through.
    pub redactor: Arc<runcap_redact::Redactor>,
}

impl HostState {
    /// Records a capability call for the run record and audit log, redacted first.
    pub fn record(&mut self, mut call: CallRecord) {
        crate::redaction::scrub_string(&self.redactor, &mut call.target);
        for s in [&mut call.reason, &mut call.result].into_iter().flatten() {
            crate::redaction::scrub_string(&self.redactor, s);
        }
        tracing::debug!(
            plugin = %self.plugin,
            capability = call.capability,
            operation = %call.operation,
            decision = call.decision,
            "capability call"
        );
        if let Some(sink) = &self.sink {
            sink(&call);
        }
        self.calls.push(call);
    }

    /// Time left before the action's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::types::Host for HostState {}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
