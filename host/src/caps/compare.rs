//! How two grants differ, and whether a difference widens what a plugin may do.
//!
//! Each capability module has one function, `diff(old, new) -> Vec<Change>`, that
//! compares two of its grants as written and says, entry by entry, what `new` allows
//! that `old` did not (a widening) and what it no longer allows. [`per_capability`]
//! calls them all, and everything that compares grants is built on it: overlays
//! checked against their base, `runcap caps --diff`, `runcap check --locked`, and
//! policy ceilings (a ceiling is a grant that no plugin's grant may widen).
//!
//! Comparison works on grants as written, so it needs no plugin, no file and no
//! declared service: a lockfile or a policy compares just like a manifest.

use std::time::Duration;

use serde::Serialize;

use super::{Grants, backup, faults, fs, http, notify, secrets, services};
use crate::manifest::{KeyPath, Limits, units};

/// What kind of difference a [`Change`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Something is granted that was not: a host, a verb, a channel, a capability, a plugin.
    Added,
    /// Something granted now allows more: a larger limit, a pattern that matches more.
    Widened,
    /// Something changed in a way that cannot be ordered (a webhook's URL, a plugin's
    /// code); it needs review, so it counts as widening.
    Changed,
    /// Something is no longer granted.
    Removed,
    /// Something granted now allows less, or a new entry stays within what was granted.
    Narrowed,
    /// A fact that follows from another change (a plugin's imports, its file's path).
    Note,
}

impl ChangeKind {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Widened => "widened",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
            ChangeKind::Narrowed => "narrowed",
            ChangeKind::Note => "note",
        }
    }
}

/// One difference between two grants (or limits, or environments).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Where, relative to what was compared: `allow[2]`, `max_body`, `api`.
    #[serde(rename = "key", serialize_with = "as_string")]
    pub path: KeyPath,
    pub kind: ChangeKind,
    /// What changed, as a phrase: "allows `https://*.example.com`, which …".
    pub what: String,
}

fn as_string<S: serde::Serializer>(path: &KeyPath, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(path)
}

impl Change {
    /// A change at `path` (relative to what was compared).
    pub fn new(path: KeyPath, kind: ChangeKind, what: impl Into<String>) -> Self {
        Change {
            path,
            kind,
            what: what.into(),
        }
    }

    /// Whether this lets a plugin do something it could not before (or may): the
    /// changes a reviewer must approve.
    pub fn widens(&self) -> bool {
        matches!(
            self.kind,
            ChangeKind::Added | ChangeKind::Widened | ChangeKind::Changed
        )
    }

    /// The same change, located below `prefix`.
    pub fn under(mut self, prefix: &KeyPath) -> Self {
        let mut p = prefix.clone();
        p.0.append(&mut self.path.0);
        self.path = p;
        self
    }
}

/// How one capability's grants compare.
#[derive(Debug)]
pub struct CapabilityDiff {
    /// The capability's name, as in `grants.NAME`.
    pub capability: &'static str,
    /// Whether the old and the new grants have it.
    pub old: bool,
    pub new: bool,
    /// When both have it: every difference, relative to `grants.NAME`.
    pub changes: Vec<Change>,
}

/// Compares two sets of grants capability by capability. Adding a capability adds one
/// line here, calling its module's `diff`.
pub fn per_capability(old: &Grants, new: &Grants) -> Vec<CapabilityDiff> {
    let mut out = Vec::new();
    one(&mut out, "http", &old.http, &new.http, http::diff);
    one(&mut out, "notify", &old.notify, &new.notify, notify::diff);
    one(
        &mut out,
        "services",
        &old.services,
        &new.services,
        services::diff,
    );
    one(
        &mut out,
        "secrets",
        &old.secrets,
        &new.secrets,
        secrets::diff,
    );
    one(&mut out, "faults", &old.faults, &new.faults, faults::diff);
    one(&mut out, "backup", &old.backup, &new.backup, backup::diff);
    one(&mut out, "fs", &old.fs, &new.fs, fs::diff);
    out
}

fn one<T>(
    out: &mut Vec<CapabilityDiff>,
    capability: &'static str,
    old: &Option<T>,
    new: &Option<T>,
    diff: fn(&T, &T) -> Vec<Change>,
) {
    if old.is_none() && new.is_none() {
        return;
    }
    let changes = match (old, new) {
        (Some(o), Some(n)) => diff(o, n),
        _ => Vec::new(),
    };
    out.push(CapabilityDiff {
        capability,
        old: old.is_some(),
        new: new.is_some(),
        changes,
    });
}

/// Every difference between two sets of grants, located below `grants`.
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
            _ => out.extend(d.changes.into_iter().map(|c| c.under(&at))),
        }
    }
    out
}

/// Every difference between two sets of limits, located below `limits`.
pub fn diff_limits(old: &Limits, new: &Limits) -> Vec<Change> {
    let mut out = Vec::new();
    let at = KeyPath::root().key("limits");
    let mut push = |key: &str, o: u128, n: u128, show: &dyn Fn(u128) -> String| {
        if o == n {
            return;
        }
        let kind = if n > o {
            ChangeKind::Widened
        } else {
            ChangeKind::Narrowed
        };
        out.push(Change::new(
            at.key(key),
            kind,
            format!("{key} {} → {}", show(o), show(n)),
        ));
    };
    push("memory", old.memory.into(), new.memory.into(), &|b| {
        fmt_size(b as u64)
    });
    push("time", old.time.as_millis(), new.time.as_millis(), &|ms| {
        fmt_duration(Duration::from_millis(ms as u64))
    });
    push("output", old.output.into(), new.output.into(), &|b| {
        fmt_size(b as u64)
    });
    out
}

/// The grants of a `[plugins.NAME]` table as written, or `None` if they do not read
/// as grants (validation reports why).
pub fn grants_of(plugin: &toml::Value) -> Option<Grants> {
    match plugin.get("grants") {
        None => Some(Grants::default()),
        Some(g) => g.clone().try_into().ok(),
    }
}

/// The effective limits of a `[plugins.NAME]` table: as written, defaults for the rest
/// (and for values that do not parse, which validation reports).
pub fn limits_of(plugin: &toml::Value) -> Limits {
    limits_from(plugin.get("limits"))
}

/// Effective limits from a `limits` table as written.
pub fn limits_from(limits: Option<&toml::Value>) -> Limits {
    let mut l = Limits::default();
    let get = |k: &str| limits.and_then(|t| t.get(k)).and_then(|v| v.as_str());
    if let Some(m) = get("memory").and_then(|s| units::parse_size(s).ok()) {
        l.memory = m;
    }
    if let Some(t) = get("time").and_then(|s| units::parse_duration(s).ok()) {
        l.time = t;
    }
    if let Some(o) = get("output").and_then(|s| units::parse_size(s).ok()) {
        l.output = o;
    }
    l
}

/// Every difference between two `[plugins.NAME]` tables' grants and limits.
pub fn diff_plugin(old: &toml::Value, new: &toml::Value) -> Vec<Change> {
    let mut out = Vec::new();
    if let (Some(o), Some(n)) = (grants_of(old), grants_of(new)) {
        out.extend(diff_grants(&o, &n));
    }
    out.extend(diff_limits(&limits_of(old), &limits_of(new)));
    out
}

/// A size as a manifest would write it: `16MiB`, `1536KiB`, `100B`.
pub fn fmt_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A duration as a manifest would write it: `30s`, `1m 30s`, `500ms`.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
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

    #[test]
    fn limits_compare_by_value() {
        let old = Limits::default();
        let new = Limits {
            memory: 128 << 20,
            time: Duration::from_secs(10),
            ..Limits::default()
        };
        let c = diff_limits(&old, &new);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].kind, ChangeKind::Widened);
        assert_eq!(c[0].what, "memory 64MiB → 128MiB");
        assert_eq!(c[1].kind, ChangeKind::Narrowed);
        assert_eq!(c[1].what, "time 30s → 10s");
        assert_eq!(fmt_size(1536 << 10), "1536KiB");
        assert_eq!(fmt_size(1000), "1000B");
    }
}
