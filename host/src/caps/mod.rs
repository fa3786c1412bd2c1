//! Capabilities: everything a plugin can ask the host to do.
//!
//! Each capability is one module implementing [`Capability`] once (see
//! [`core`](self::core) and `README.md` in this directory for how to add one), and one
//! line in [`REGISTRY`]. Everything that concerns all capabilities iterates that list:
//! validating a plugin's grants ([`validate_grants`]), comparing grants for overlays,
//! lockfiles and policy ceilings ([`per_capability`]), checking a component's imports
//! ([`by_interface`]), describing grants for `runcap caps`, preparing a plugin's access
//! ([`prepare`]) and per-action set-up ([`begin_action`]), and linking ([`add_to_linker`]).
//!
//! Capability modules import [`core`](self::core), [`compare`] and [`wasi`], never each
//! other and never this file.

pub mod backup;
pub mod compare;
pub mod core;
pub mod exec;
pub mod faults;
pub mod fs;
pub mod http;
pub mod invocation;
pub mod log;
pub mod logs;
pub mod notify;
pub mod secrets;
pub mod services;
pub mod system;
pub mod tape;
#[cfg(test)]
pub mod testing;
pub mod wasi;

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::runcap::plugin as wit;
use crate::manifest::{KeyPath, Validator};
use compare::{Change, ChangeKind};
pub use core::{
    ActionCore, ActionInfo, ActionSetup, CallLog, CallRecord, CallSink, Capability, Decision,
    Declared, Entry, Granted, HostState, MemoryLimiter, PrepareError, Prepared, Resources,
    Ungranted, UnreadableGrant, ValidGrants, now_ms,
};

/// Every capability the host provides, in the order reports list them. Adding a
/// capability adds one line here.
pub static REGISTRY: &[&dyn Entry] = &[
    &core::Registered::<log::Log>::ENTRY,
    &core::Registered::<invocation::Invocation>::ENTRY,
    &core::Registered::<http::Http>::ENTRY,
    &core::Registered::<notify::Notify>::ENTRY,
    &core::Registered::<services::Services>::ENTRY,
    &core::Registered::<secrets::Secrets>::ENTRY,
    &core::Registered::<faults::Faults>::ENTRY,
    &core::Registered::<backup::Backup>::ENTRY,
    &core::Registered::<fs::Fs>::ENTRY,
    &core::Registered::<system::SystemFacts>::ENTRY,
    &core::Registered::<exec::Exec>::ENTRY,
    &core::Registered::<logs::Logs>::ENTRY,
];

/// `[plugins.NAME.grants]` as written: capability name → its grant as written. Each is
/// read by its capability ([`validate_grants`]); a key that names no capability is an
/// error there.
pub type Grants = BTreeMap<String, toml::Value>;

/// The WIT interface every world function's types come from; importing it needs no grant.
pub const TYPES_INTERFACE: &str = "runcap:plugin/types";

/// The registered capability with this name.
pub fn by_name(name: &str) -> Option<&'static dyn Entry> {
    REGISTRY.iter().copied().find(|c| c.name() == name)
}

/// The names `grants` lets params refer to for a schema mark `CAP` or `CAP.KIND` (see
/// [`Capability::granted_names`]); `None` when no capability defines the mark.
pub fn granted_names(grants: &ValidGrants, mark: &str) -> Option<Vec<String>> {
    let (cap, kind) = mark.split_once('.').unwrap_or((mark, ""));
    by_name(cap)?.granted_names(grants, kind)
}

/// The registered capability whose interface this is.
pub fn by_interface(interface: &str) -> Option<&'static dyn Entry> {
    REGISTRY
        .iter()
        .copied()
        .find(|c| c.interface() == interface || c.more_interfaces().contains(&interface))
}

/// The capabilities a plugin can be granted (all but the always-available ones).
pub fn grantable() -> impl Iterator<Item = &'static dyn Entry> {
    REGISTRY
        .iter()
        .copied()
        .filter(|c| c.granted() != Granted::Always)
}

/// Validates every grant of one plugin; `path` is `plugins.NAME.grants`.
pub fn validate_grants(
    v: &mut Validator,
    path: &KeyPath,
    raw: Grants,
    declared: &Declared,
) -> ValidGrants {
    let mut out = ValidGrants::default();
    for (key, value) in raw {
        match by_name(&key).filter(|c| c.granted() != Granted::Always) {
            Some(cap) => cap.validate(v, &path.key(&key), value, declared, &mut out),
            None => {
                let known: Vec<&str> = grantable().map(|c| c.name()).collect();
                let help = match crate::manifest::closest(&key, &known) {
                    Some(c) => format!("did you mean `{c}`? Capabilities: {}", known.join(", ")),
                    None => format!("capabilities that can be granted: {}", known.join(", ")),
                };
                v.error(
                    &path.key(&key),
                    format!("`{key}` is not a capability runcap grants"),
                    help,
                );
            }
        }
    }
    out
}

/// How one capability's grants compare.
#[derive(Debug)]
pub struct CapabilityDiff {
    /// The capability's name, as in `grants.NAME`.
    pub capability: &'static str,
    /// Whether the old and the new grants have it.
    pub old: bool,
    pub new: bool,
    /// When both have it: every difference, relative to `grants.NAME`; `Err` when one
    /// of them does not read as a grant.
    pub changes: Result<Vec<Change>, UnreadableGrant>,
}

/// Compares two sets of grants as written, capability by capability.
pub fn per_capability(old: &Grants, new: &Grants) -> Vec<CapabilityDiff> {
    let mut out = Vec::new();
    for cap in grantable() {
        let (o, n) = (old.get(cap.name()), new.get(cap.name()));
        if o.is_none() && n.is_none() {
            continue;
        }
        let changes = match (o, n) {
            (Some(o), Some(n)) => cap.diff(o, n),
            _ => Ok(Vec::new()),
        };
        out.push(CapabilityDiff {
            capability: cap.name(),
            old: o.is_some(),
            new: n.is_some(),
            changes,
        });
    }
    out
}

/// Every difference between two sets of grants, located below `grants`. A grant that
/// does not read as one is skipped (validation reports it).
pub fn diff_grants(old: &Grants, new: &Grants) -> Vec<Change> {
    let mut out = Vec::new();
    for d in per_capability(old, new) {
        let at = KeyPath::root().key("grants").key(d.capability);
        match (d.old, d.new) {
            (false, true) => out.push(Change::new(
                at,
                ChangeKind::Added,
                format!("grants {} (not granted before)", d.capability),
            )),
            (true, false) => out.push(Change::new(
                at,
                ChangeKind::Removed,
                format!("no longer grants {}", d.capability),
            )),
            _ => out.extend(
                d.changes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.under(&at)),
            ),
        }
    }
    out
}

/// The grants of a `[plugins.NAME]` table as written, or `None` if they do not read as a
/// table of grants (validation reports why).
pub fn grants_of(plugin: &toml::Value) -> Option<Grants> {
    match plugin.get("grants") {
        None => Some(Grants::default()),
        Some(g) => g.clone().try_into().ok(),
    }
}

/// Every difference between two `[plugins.NAME]` tables' grants and limits.
pub fn diff_plugin(old: &toml::Value, new: &toml::Value) -> Vec<Change> {
    let mut out = Vec::new();
    if let (Some(o), Some(n)) = (grants_of(old), grants_of(new)) {
        out.extend(diff_grants(&o, &n));
    }
    let limits = crate::manifest::Limits::of_plugin;
    out.extend(limits(old).diff(&limits(new)));
    out
}

/// Resolves the relative paths of every grant in a `[plugins.NAME]` table as written;
/// `dir_of` gets the key path below `grants` (`fs.logs.path`) and answers the directory
/// of the file that wrote it.
pub fn resolve_plugin_paths(plugin: &mut toml::Value, dir_of: &dyn Fn(&KeyPath) -> PathBuf) {
    let Some(grants) = plugin.get_mut("grants").and_then(|g| g.as_table_mut()) else {
        return;
    };
    for (name, raw) in grants.iter_mut() {
        if let Some(cap) = by_name(name) {
            let at = KeyPath::root().key(name);
            cap.resolve_paths(raw, &|p| dir_of(&crate::manifest::compose::concat(&at, p)));
        }
    }
}

/// Resolves the relative paths of a set of grants as written (a policy's ceiling).
pub fn resolve_grant_paths(grants: &mut Grants, dir_of: &dyn Fn(&KeyPath) -> PathBuf) {
    for (name, raw) in grants.iter_mut() {
        if let Some(cap) = by_name(name) {
            let at = KeyPath::root().key(name);
            cap.resolve_paths(raw, &|p| dir_of(&crate::manifest::compose::concat(&at, p)));
        }
    }
}

/// Builds what a plugin's actions use from its grants, once per plugin load.
pub fn prepare(grants: &ValidGrants, env: &Resources) -> Result<Prepared, PrepareError> {
    let mut out = Prepared::default();
    for cap in REGISTRY {
        cap.prepare(grants, env, &mut out)
            .map_err(|e| PrepareError(format!("{}: {e}", cap.name())))?;
    }
    Ok(out)
}

/// Per-action set-up of every granted capability (directories preopened).
pub fn begin_action(prepared: &Prepared, setup: &mut ActionSetup) -> Result<(), PrepareError> {
    for cap in REGISTRY {
        cap.begin_action(prepared, setup)?;
    }
    Ok(())
}

/// Links WASI and every capability interface into the one linker all plugins share;
/// what a given action may do is decided by the grants in its [`HostState`].
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    for cap in REGISTRY {
        cap.add_to_linker(linker)?;
    }
    Ok(())
}

/// Whether importing a capability's interface without a grant refuses the plugin.
pub fn import_needs_grant(cap: &dyn Entry) -> bool {
    cap.granted() == Granted::ByGrant
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(text: &str) -> Grants {
        toml::from_str(text).unwrap()
    }

    fn widening(old: &str, new: &str) -> Vec<String> {
        diff_grants(&grants(old), &grants(new))
            .into_iter()
            .filter(Change::widens)
            .map(|c| format!("{}: {}", c.path, c.what))
            .collect()
    }

    #[test]
    fn http_narrowing_is_not_widening() {
        let base = "[http]\nallow = [\"https://api.internal\", \"https://*.db.internal\"]\naddresses = [\"10.0.0.0/8\"]\nmax_body = \"1MiB\"\n";
        let narrower = "[http]\nallow = [\"https://api.internal\", \"https://main.db.internal\"]\naddresses = [\"10.1.0.0/16\"]\nmax_body = \"256KiB\"\n";
        assert!(widening(base, narrower).is_empty());
        let changes = diff_grants(&grants(base), &grants(narrower));
        assert!(
            changes
                .iter()
                .any(|c| c.kind == ChangeKind::Removed && c.what.contains("*.db.internal"))
        );
        assert!(widening(base, base).is_empty());
    }

    #[test]
    fn http_widening_names_each_entry() {
        let base = "[http]\nallow = [\"https://api.internal\"]\n";
        let w = widening(
            base,
            "[http]\nallow = [\"https://*.internal\", \"http://127.0.0.1:*\"]\naddresses = [\"10.0.0.0/8\"]\nmax_body = \"2MiB\"\nca = [\"ca.pem\"]\n",
        );
        let all = w.join("\n");
        assert!(
            all.contains("grants.http.allow[0]: allows `https://*.internal`, which matches more than `https://api.internal`"),
            "{all}"
        );
        assert!(
            all.contains("allow[1]") && all.contains("127.0.0.1"),
            "{all}"
        );
        assert!(all.contains("addresses[0]"), "{all}");
        assert!(all.contains("max_body 1MiB → 2MiB"), "{all}");
        assert!(all.contains("ca[0]"), "{all}");
        // Naming a private address unlocks it even under a `*` host.
        let w = widening(
            "[http]\nallow = [\"*://*:*\"]\n",
            "[http]\nallow = [\"*://*:*\", \"http://10.0.0.5\"]\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn services_secrets_and_notify_widen_by_entry() {
        let w = widening(
            "[services]\napi = [\"status\"]\n",
            "[services]\napi = [\"status\", \"restart\"]\nweb = [\"status\"]\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("services.api[1]") && w[0].contains("restart"),
            "{w:?}"
        );
        assert!(w[1].contains("services.web"), "{w:?}");
        assert!(
            widening(
                "[services]\napi = [\"status\", \"restart\"]\n",
                "[services]\napi = [\"status\"]\n"
            )
            .is_empty()
        );
        assert!(
            widening(
                "[services]\n\"*\" = [\"status\"]\n",
                "[services]\napi = [\"status\"]\n"
            )
            .is_empty()
        );
        let w = widening("secrets = [\"a\"]\n", "secrets = [\"a\", \"b\"]\n");
        assert_eq!(
            w,
            vec!["grants.secrets[1]: may read secret `b`".to_string()]
        );
        let w = widening(
            "[notify.channels.ops]\nurl = \"https://hooks.internal/a\"\n",
            "[notify.channels.ops]\nurl = \"https://evil.example/a\"\n[notify.channels.dev]\nurl = \"https://hooks.internal/b\"\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        let w = widening(
            "[notify.channels.\"*\"]\nurl = \"https://hooks.internal/\"\n",
            "[notify.channels.ops]\nurl = \"https://hooks.internal/a\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn fs_directories_widen_when_added_moved_or_made_writable() {
        let base = "[fs]\nlogs = { path = \"logs\" }\nout = { path = \"out\", mode = \"rw\" }\n";
        assert!(widening(base, "[fs]\nlogs = { path = \"logs\", mode = \"ro\" }\n").is_empty());
        assert!(
            widening(
                base,
                "[fs]\nlogs = { path = \"logs\" }\nout = { path = \"out\", mode = \"ro\" }\n"
            )
            .is_empty()
        );
        let w = widening(
            base,
            "[fs]\nlogs = { path = \"logs\", mode = \"rw\" }\nout = { path = \"/var\", mode = \"rw\" }\netc = { path = \"/etc\" }\n",
        );
        assert_eq!(
            w,
            vec![
                "grants.fs.etc: may use directory /etc as /etc (ro)".to_string(),
                "grants.fs.logs.mode: /logs is now rw (was ro)".to_string(),
                "grants.fs.out.path: /out is now /var (was out)".to_string(),
            ]
        );
    }

    #[test]
    fn an_fs_ceiling_bounds_directories_by_path_and_mode() {
        let ceiling = "[fs]\nany = { path = \"/\", mode = \"ro\" }\nbackups = { path = \"/var/backups\", mode = \"rw\" }\n";
        assert!(
            widening(
                ceiling,
                "[fs]\ndump = { path = \"/var/backups/db\", mode = \"rw\" }\nlogs = { path = \"/var/log\" }\n"
            )
            .is_empty()
        );
        assert_eq!(
            widening(
                ceiling,
                "[fs]\nout = { path = \"/srv/out\", mode = \"rw\" }\nsly = { path = \"/var/backups/../../etc\", mode = \"rw\" }\n"
            ),
            vec![
                "grants.fs.out: may use directory /srv/out as /out (rw)".to_string(),
                "grants.fs.sly: may use directory /var/backups/../../etc as /sly (rw)".to_string(),
            ]
        );
    }

    #[test]
    fn a_new_capability_widens_and_a_dropped_one_narrows() {
        let w = widening("", "secrets = []\n");
        assert_eq!(
            w,
            vec!["grants.secrets: grants secrets (not granted before)".to_string()]
        );
        assert!(widening("secrets = []\n", "").is_empty());
    }
}
