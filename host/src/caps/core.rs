//! What every capability stands on, and nothing else: the [`Capability`] trait each
//! capability module implements once, the per-action state an action's wasmtime store
//! holds ([`HostState`]) with a view of it per capability ([`CapCtx`]), the recording of
//! capability calls, and the environment-wide resources capabilities are built from.
//!
//! This module imports no capability. Capabilities import it; `caps/mod.rs` lists them.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::compare::Change;
use super::wasi::Capture;
use crate::bindings::runcap::plugin::types as wit_types;
use crate::chaos::{FaultManager, ProxyDef, ProxyManager};
use crate::manifest::{KeyPath, Validator};
use crate::secrets::{SecretSource, SecretStore};
use crate::services::{ServiceDef, ServiceManager};
pub use crate::store::records::{CallRecord, Decision, now_ms};

/// One capability: its manifest grant, how grants compare, how `runcap caps` shows it,
/// what it prepares per plugin and per action, and its WIT host implementation.
///
/// A capability module implements this once on a unit struct and adds one line to
/// [`super::REGISTRY`]; every job that concerns all capabilities (validating grants,
/// diffs for overlays, lockfiles and policy ceilings, import checks, `caps` reports,
/// linking) iterates that list.
pub trait Capability: Sized + Send + Sync + 'static {
    /// Short name: the grant's key (`[plugins.NAME.grants.http]`), report labels and policy
    /// `deny` entries.
    const NAME: &'static str;
    /// The interface (without version) whose import means the plugin uses it.
    const INTERFACE: &'static str;
    /// Further interfaces (without version) the capability provides under the same grant
    /// (fs: `runcap:plugin/fs` beside WASI's file system).
    const MORE_INTERFACES: &'static [&'static str] = &[];
    /// The WIT file that defines the capability's own interface (`include_str!` of
    /// `wit/NAME.wit`), which `runcap wit` writes for plugin authors; `None` when WASI
    /// defines every interface it provides.
    const WIT: Option<&'static str> = None;
    /// How a plugin comes to have it.
    const GRANTED: Granted = Granted::ByGrant;

    /// The grant as written in the manifest (serde, `deny_unknown_fields`).
    type Config: DeserializeOwned;
    /// The grant once validated: parsed, resolved, checked against what the environment
    /// declares.
    type Grant: fmt::Debug + Send + Sync + 'static;
    /// What a plugin's actions use, built once when the plugin loads (an HTTP client, the
    /// environment's service manager).
    type Access: Send + Sync + 'static;
    /// What one action's calls share (lines logged so far); created empty when first used.
    type State: Default + Send + 'static;

    /// TOML that grants the capability to plugin `plugin` with nothing in it, to paste at
    /// the end of a manifest; shown when a component imports it without a grant.
    fn hint(plugin: &str) -> String;

    /// Checks a grant as written, recording every problem (located) in `v`.
    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: Self::Config,
        declared: &Declared,
    ) -> Option<Self::Grant>;

    /// What `new` allows that `old` did not, and what it no longer allows, entry by entry
    /// (paths relative to the grant).
    fn diff(old: &Self::Config, new: &Self::Config) -> Vec<Change>;

    /// One line per granted entry, for `runcap caps`.
    fn describe(grant: &Self::Grant) -> Vec<String>;

    /// Entries a reviewer should look at twice (a shell, a wildcard), for `runcap caps`.
    fn risks(_grant: &Self::Grant) -> Vec<String> {
        Vec::new()
    }

    /// The `[secrets.NAME]` the grant needs to be readable (checked by `runcap check`).
    fn secrets(_grant: &Self::Grant) -> Vec<String> {
        Vec::new()
    }

    /// The names a grant lets params refer to, for `kind` (`""` or one the capability
    /// defines, such as notify's `channels`): a plugin's params schema marks a field with
    /// `"x-runcap-grant": "CAP"` or `"CAP.KIND"`, and `runcap check` refuses a value not
    /// among these. `grant` is `None` when the plugin has none; `None` back means the
    /// capability has no such kind.
    fn granted_names(_grant: Option<&Self::Grant>, _kind: &str) -> Option<Vec<String>> {
        None
    }

    /// Rewrites relative paths in a grant as written to absolute ones, `dir_of` giving
    /// the directory of the file that wrote the key at a path (relative to the grant), so
    /// grants written in different files compare by where they point.
    fn resolve_paths(_raw: &mut toml::Value, _dir_of: &dyn Fn(&KeyPath) -> PathBuf) {}

    /// Builds what the plugin's actions use from its grant.
    fn prepare(grant: Arc<Self::Grant>, env: &Resources) -> Result<Self::Access, PrepareError>;

    /// Per-action set-up before the instance exists (preopening directories).
    fn begin_action(_access: &Self::Access, _setup: &mut ActionSetup) -> Result<(), PrepareError> {
        Ok(())
    }

    /// Links the capability's WIT interface; calls reach [`HostState::view`].
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
}

/// A capability every plugin has, with nothing to grant, compare or prepare (`log`,
/// `invocation`): its module implements this, and [`Capability`] comes with it.
pub trait Ungranted: Sized + Send + Sync + 'static {
    /// See [`Capability::NAME`].
    const NAME: &'static str;
    /// See [`Capability::INTERFACE`].
    const INTERFACE: &'static str;
    /// See [`Capability::WIT`].
    const WIT: &'static str;
    /// See [`Capability::State`].
    type State: Default + Send + 'static;

    /// See [`Capability::add_to_linker`].
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
}

impl<C: Ungranted> Capability for C {
    const NAME: &'static str = <C as Ungranted>::NAME;
    const INTERFACE: &'static str = <C as Ungranted>::INTERFACE;
    const WIT: Option<&'static str> = Some(<C as Ungranted>::WIT);
    const GRANTED: Granted = Granted::Always;
    type Config = ();
    type Grant = ();
    type Access = ();
    type State = <C as Ungranted>::State;

    fn hint(_plugin: &str) -> String {
        String::new()
    }

    fn validate(_: &mut Validator, _: &KeyPath, _: (), _: &Declared) -> Option<()> {
        Some(())
    }

    fn diff(_: &(), _: &()) -> Vec<Change> {
        Vec::new()
    }

    fn describe(_: &()) -> Vec<String> {
        Vec::new()
    }

    fn prepare(_: Arc<()>, _: &Resources) -> Result<(), PrepareError> {
        Ok(())
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        <C as Ungranted>::add_to_linker(linker)
    }
}

/// How a plugin comes to have a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// Always available; there is no grant (log).
    Always,
    /// Only with a `grants.NAME` entry; importing the interface without one is refused.
    ByGrant,
    /// Only with a `grants.NAME` entry, but every component imports the interface
    /// (WASI's file system), so importing it alone is not refused.
    ByGrantImportFree,
}

/// Why a capability could not be prepared for a plugin or an action.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

/// A grant as written that does not read as its capability's grant, met while comparing
/// two grants (validation reports it in full, with its location).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message())]
pub struct UnreadableGrant(pub toml::de::Error);

/// What the environment declares outside the plugins, which grants refer to.
pub struct Declared<'a> {
    pub services: &'a BTreeMap<String, ServiceDef>,
    pub secrets: &'a BTreeMap<String, SecretSource>,
    pub proxies: &'a BTreeMap<String, ProxyDef>,
}

/// What the environment provides every plugin: its services and where their state
/// lives, its secrets, its drill proxies and faults, and the redaction every record
/// passes through. Built once per command; cheap to clone.
#[derive(Clone)]
pub struct Resources {
    pub services: Arc<ServiceManager>,
    pub secrets: Arc<SecretStore>,
    pub proxies: Arc<ProxyManager>,
    pub faults: Arc<FaultManager>,
    /// The `[redaction]` rules plus every known secret value (see [`crate::redaction`]).
    pub redactor: Arc<runcap_redact::Redactor>,
}

impl Resources {
    /// The environment's resources; faults need `store` for their journal. Fails when a
    /// secret's value cannot be redacted (too short), since runcap would leak it.
    pub fn new(
        env: &crate::manifest::Environment,
        state_dir: &Path,
        store: Option<Arc<crate::store::Store>>,
    ) -> Result<Self, runcap_redact::Error> {
        let secrets = Arc::new(SecretStore::new(env.secrets.clone()));
        let redaction = Arc::new(crate::redaction::Spec::new(&env.redaction, &secrets));
        let services = Arc::new(ServiceManager::new(
            env.services.clone(),
            state_dir,
            redaction.clone(),
        ));
        let proxies = Arc::new(ProxyManager::new(env.proxies.clone(), state_dir));
        Ok(Resources {
            faults: Arc::new(FaultManager::new(
                store,
                services.clone(),
                proxies.clone(),
                state_dir,
            )),
            services,
            redactor: crate::redaction::host_redactor(&redaction)?,
            secrets,
            proxies,
        })
    }

    /// An environment with no services, secrets or faults (benchmarks, plugin tooling).
    pub fn none() -> Self {
        let dir = Path::new(".");
        let services = Arc::new(ServiceManager::new(Default::default(), dir, Arc::default()));
        let proxies = Arc::new(ProxyManager::new(Default::default(), dir));
        Resources {
            faults: Arc::new(FaultManager::new(
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

/// Values of one plugin keyed by capability (validated grants, prepared access).
#[derive(Clone, Default)]
pub struct PerCapability {
    entries: Vec<(TypeId, &'static str, Arc<dyn Any + Send + Sync>)>,
}

impl PerCapability {
    /// Sets `C`'s value.
    pub fn insert<C: Capability, T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        let id = TypeId::of::<C>();
        self.entries.retain(|(t, _, _)| *t != id);
        self.entries.push((id, C::NAME, value));
    }

    /// `C`'s value, if it has one of type `T`.
    pub fn get<C: Capability, T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<C>();
        let (_, _, v) = self.entries.iter().find(|(t, _, _)| *t == id)?;
        v.downcast_ref::<T>()
    }

    /// `C`'s value as a shared handle, if it has one of type `T`.
    pub fn get_arc<C: Capability, T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<C>();
        let (_, _, v) = self.entries.iter().find(|(t, _, _)| *t == id)?;
        v.clone().downcast::<T>().ok()
    }

    /// Whether the capability named `name` has a value.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, n, _)| *n == name)
    }

    /// The names of the capabilities with a value.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(_, n, _)| *n)
    }

    /// The untyped value of the capability named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.entries
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, v)| v)
    }
}

impl fmt::Debug for PerCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Validated grants of one plugin, by capability.
pub type ValidGrants = PerCapability;

/// What a plugin's grants turned into (clients, channels), built once when it loads.
pub type Prepared = PerCapability;

/// The run and step an action belongs to, for capabilities that report it onward.
#[derive(Debug, Clone, Default)]
pub struct ActionInfo {
    pub run_id: String,
    pub environment: String,
    pub runbook: String,
    pub step: String,
}

/// Receives capability calls as they happen, so they are durable before the action ends.
pub type CallSink = Arc<dyn CallLog>;

/// Where an action's capability calls go (the run's store), and the promise it keeps
/// about them: everything recorded before a change is durable before the change is made.
pub trait CallLog: Send + Sync {
    /// Keeps one call's record.
    fn record(&self, call: &CallRecord);

    /// Makes every record kept so far durable; a capability calls it just before it
    /// changes something (sends a mutating request, restarts a service, runs a command).
    fn before_change(&self) {}
}

impl<F: Fn(&CallRecord) + Send + Sync> CallLog for F {
    fn record(&self, call: &CallRecord) {
        self(call)
    }
}

/// What every capability call of one action shares: who is calling, for which run,
/// until when, and where calls are recorded (redacted first).
pub struct ActionCore {
    /// The plugin's manifest name, for messages.
    pub plugin: Arc<str>,
    /// Which run and step this action belongs to.
    pub action: ActionInfo,
    /// Receives every capability call as it happens.
    pub sink: Option<CallSink>,
    pub dry_run: bool,
    pub deadline: Instant,
    /// The plugin's `limits.output`: the most its log lines may hold.
    pub output_limit: u64,
    /// Capability calls of this action, in order.
    pub calls: Vec<CallRecord>,
    /// What every string this action reports passes through.
    pub redactor: Arc<runcap_redact::Redactor>,
    /// Where capability calls are recorded or replayed from (`runcap call`).
    pub tape: Option<crate::caps::tape::SharedTape>,
}

impl ActionCore {
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
            decision = %call.decision,
            "capability call"
        );
        if let Some(sink) = &self.sink {
            sink.record(&call);
        }
        self.calls.push(call);
    }

    /// Called just before a call changes something: see [`CallLog::before_change`].
    pub fn before_change(&self) {
        if let Some(sink) = &self.sink {
            sink.before_change();
        }
    }

    /// Time left before the action's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
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

/// What a capability may add to an action before its instance exists.
pub struct ActionSetup<'a> {
    pub wasi: &'a mut WasiCtxBuilder,
    pub dry_run: bool,
    /// Calls to record for the action (a directory preopened).
    pub records: Vec<CallRecord>,
}

/// Everything one action's store holds: its WASI context, limits, the shared core of its
/// capability calls, and per capability its prepared access and per-action state.
pub struct HostState {
    pub core: ActionCore,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub stdout: Capture,
    pub stderr: Capture,
    /// What this plugin's grants allow, ready to use (empty while it only describes
    /// itself or checks params).
    pub granted: Arc<Prepared>,
    states: Vec<(TypeId, Box<dyn Any + Send>)>,
}

impl HostState {
    /// A store's state for one action.
    pub fn new(
        core: ActionCore,
        wasi: WasiCtx,
        limiter: MemoryLimiter,
        stdout: Capture,
        stderr: Capture,
        granted: Arc<Prepared>,
    ) -> Self {
        HostState {
            core,
            wasi,
            table: ResourceTable::new(),
            limiter,
            stdout,
            stderr,
            granted,
            states: Vec::new(),
        }
    }

    /// Capability `C`'s view of this action: the shared core, its access (when granted)
    /// and its per-action state. Each capability's WIT `Host` impl is on this view.
    pub fn view<C: Capability>(&mut self) -> CapCtx<'_, C> {
        let id = TypeId::of::<C>();
        let i = match self.states.iter().position(|(t, _)| *t == id) {
            Some(i) => i,
            None => {
                self.states.push((id, Box::new(C::State::default())));
                self.states.len() - 1
            }
        };
        let state = self.states[i]
            .1
            .downcast_mut::<C::State>()
            .expect("each capability's state has its own type");
        CapCtx {
            core: &mut self.core,
            access: self.granted.get::<C, C::Access>(),
            state,
            _cap: PhantomData,
        }
    }

    /// Takes capability `C`'s per-action state out (what the action produced).
    pub fn take_state<C: Capability>(&mut self) -> C::State {
        let id = TypeId::of::<C>();
        match self.states.iter().position(|(t, _)| *t == id) {
            Some(i) => *self
                .states
                .swap_remove(i)
                .1
                .downcast::<C::State>()
                .expect("each capability's state has its own type"),
            None => C::State::default(),
        }
    }
}

/// One capability's view of an action's state: what its WIT `Host` impl works on.
pub struct CapCtx<'a, C: Capability> {
    /// Who is calling, and where calls are recorded.
    pub core: &'a mut ActionCore,
    /// What the plugin's grant prepared; `None` when not granted (or while the plugin
    /// only describes itself or checks params).
    pub access: Option<&'a C::Access>,
    /// This action's state for the capability.
    pub state: &'a mut C::State,
    _cap: PhantomData<C>,
}

impl<C: Capability> CapCtx<'_, C> {
    /// Records a capability call (redacted first).
    pub fn record(&mut self, call: CallRecord) {
        self.core.record(call)
    }

    /// Whether mutating calls are to be recorded, not made.
    pub fn dry_run(&self) -> bool {
        self.core.dry_run
    }

    /// The plugin's manifest name.
    pub fn plugin(&self) -> &str {
        &self.core.plugin
    }

    /// Records a denial and returns its reason, for the error value the plugin gets.
    pub fn deny(&mut self, operation: &str, target: &str, reason: String) -> String {
        self.core
            .record(CallRecord::denied(C::NAME, operation, target, &reason));
        reason
    }

    /// Before a capability call: its recorded answer when replaying (the call is then
    /// not made), else the question to keep beside the answer when recording. See
    /// [`taped!`](crate::taped).
    pub fn tape_ask<A: serde::Serialize, R: serde::de::DeserializeOwned>(
        &mut self,
        call: &str,
        args: &A,
    ) -> wasmtime::Result<crate::caps::tape::Taped<R>> {
        use crate::caps::tape::Taped;
        let Some(tape) = self.core.tape.clone() else {
            return Ok(Taped::Live(None));
        };
        let taped = tape
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ask(call, args)?;
        if matches!(taped, Taped::Replayed(_)) {
            let operation = call.split_once('.').map_or(call, |(_, f)| f);
            self.record(
                CallRecord::allowed(C::NAME, operation, "")
                    .with_result("replayed from the recording"),
            );
        }
        Ok(taped)
    }

    /// After a live capability call that is being recorded: keeps its answer.
    pub fn tape_answer<R: serde::Serialize>(
        &mut self,
        question: (String, serde_json::Value),
        answer: &R,
    ) {
        if let Some(tape) = &self.core.tape {
            tape.lock()
                .unwrap_or_else(|p| p.into_inner())
                .answer(question, answer);
        }
    }

    /// The denial reason for a call made without a grant: names the TOML to add.
    pub fn not_granted(&self) -> String {
        format!(
            "no {} grant; add to the manifest:\n{}",
            C::NAME,
            C::hint(&self.core.plugin)
        )
    }
}

/// The [`HasData`] marker for capability `C`'s view, used when linking its interface.
pub struct CapData<C>(PhantomData<C>);

impl<C: Capability> HasData for CapData<C> {
    type Data<'a> = CapCtx<'a, C>;
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for HostState {}

/// A registered capability with its types erased, so that one list can hold them all.
/// Implemented for [`Registered`]`<C>` by every [`Capability`] `C`.
pub trait Entry: Sync {
    fn name(&self) -> &'static str;
    fn interface(&self) -> &'static str;
    fn more_interfaces(&self) -> &'static [&'static str];
    fn wit(&self) -> Option<&'static str>;
    fn granted(&self) -> Granted;
    fn hint(&self, plugin: &str) -> String;
    /// Deserializes and validates a grant as written; shape errors are located at the
    /// key inside the grant that is wrong.
    fn validate(
        &self,
        v: &mut Validator,
        at: &KeyPath,
        raw: toml::Value,
        declared: &Declared,
        out: &mut ValidGrants,
    );
    /// Compares two grants as written; `Err` when one does not read as this grant.
    fn diff(&self, old: &toml::Value, new: &toml::Value) -> Result<Vec<Change>, UnreadableGrant>;
    fn describe(&self, grants: &ValidGrants) -> Vec<String>;
    fn risks(&self, grants: &ValidGrants) -> Vec<String>;
    fn secrets(&self, grants: &ValidGrants) -> Vec<String>;
    fn granted_names(&self, grants: &ValidGrants, kind: &str) -> Option<Vec<String>>;
    fn resolve_paths(&self, raw: &mut toml::Value, dir_of: &dyn Fn(&KeyPath) -> PathBuf);
    fn prepare(
        &self,
        grants: &ValidGrants,
        env: &Resources,
        out: &mut Prepared,
    ) -> Result<(), PrepareError>;
    fn begin_action(
        &self,
        prepared: &Prepared,
        setup: &mut ActionSetup,
    ) -> Result<(), PrepareError>;
    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
}

/// Capability `C` as an [`Entry`] of the registry.
pub struct Registered<C>(PhantomData<fn() -> C>);

impl<C: Capability> Registered<C> {
    /// The registry entry.
    pub const ENTRY: Self = Registered(PhantomData);
}

impl<C: Capability> Entry for Registered<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn interface(&self) -> &'static str {
        C::INTERFACE
    }

    fn more_interfaces(&self) -> &'static [&'static str] {
        C::MORE_INTERFACES
    }

    fn wit(&self) -> Option<&'static str> {
        C::WIT
    }

    fn granted(&self) -> Granted {
        C::GRANTED
    }

    fn hint(&self, plugin: &str) -> String {
        C::hint(plugin)
    }

    fn validate(
        &self,
        v: &mut Validator,
        at: &KeyPath,
        raw: toml::Value,
        declared: &Declared,
        out: &mut ValidGrants,
    ) {
        match serde_path_to_error::deserialize::<_, C::Config>(raw) {
            Ok(config) => {
                if let Some(grant) = C::validate(v, at, config, declared) {
                    out.insert::<C, C::Grant>(Arc::new(grant));
                }
            }
            Err(e) => v.shape_error(at, e.path(), e.inner().message()),
        }
    }

    fn diff(&self, old: &toml::Value, new: &toml::Value) -> Result<Vec<Change>, UnreadableGrant> {
        let read = |v: &toml::Value| v.clone().try_into::<C::Config>().map_err(UnreadableGrant);
        Ok(C::diff(&read(old)?, &read(new)?))
    }

    fn describe(&self, grants: &ValidGrants) -> Vec<String> {
        grants
            .get::<C, C::Grant>()
            .map(|g| C::describe(g))
            .unwrap_or_default()
    }

    fn risks(&self, grants: &ValidGrants) -> Vec<String> {
        grants
            .get::<C, C::Grant>()
            .map(|g| C::risks(g))
            .unwrap_or_default()
    }

    fn secrets(&self, grants: &ValidGrants) -> Vec<String> {
        grants
            .get::<C, C::Grant>()
            .map(|g| C::secrets(g))
            .unwrap_or_default()
    }

    fn granted_names(&self, grants: &ValidGrants, kind: &str) -> Option<Vec<String>> {
        C::granted_names(grants.get::<C, C::Grant>(), kind)
    }

    fn resolve_paths(&self, raw: &mut toml::Value, dir_of: &dyn Fn(&KeyPath) -> PathBuf) {
        C::resolve_paths(raw, dir_of)
    }

    fn prepare(
        &self,
        grants: &ValidGrants,
        env: &Resources,
        out: &mut Prepared,
    ) -> Result<(), PrepareError> {
        if let Some(g) = grants.get_arc::<C, C::Grant>() {
            out.insert::<C, C::Access>(Arc::new(C::prepare(g, env)?));
        }
        Ok(())
    }

    fn begin_action(
        &self,
        prepared: &Prepared,
        setup: &mut ActionSetup,
    ) -> Result<(), PrepareError> {
        match prepared.get::<C, C::Access>() {
            Some(a) => C::begin_action(a, setup),
            None => Ok(()),
        }
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        C::add_to_linker(linker)
    }
}
