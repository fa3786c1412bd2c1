//! How two grants differ, and whether a difference widens what a plugin may do.
//!
//! Each capability compares two of its grants as written ([`super::Capability::diff`])
//! and says, entry by entry, what the new grant allows that the old did not (a
//! widening) and what it no longer allows, as [`Change`]s. Everything that compares
//! grants is built on those: overlays checked against their base, `runcap caps --diff`,
//! `runcap check --locked`, and policy ceilings (a ceiling is a grant that no plugin's
//! grant may widen). See [`super::per_capability`].
//!
//! Comparison works on grants as written, so it needs no plugin, no file and no
//! declared service: a lockfile or a policy compares just like a manifest.

use std::time::Duration;

use serde::Serialize;

use crate::manifest::KeyPath;

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
