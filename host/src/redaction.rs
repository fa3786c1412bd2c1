//! Host-side redaction: nothing runcap stores or prints from a run keeps personal data, a
//! credential or the value of a secret it knows.
//!
//! The rules are those of the `runcap-redact` crate, the same engine the `redact` plugin
//! streams log files through; the manifest's `[redaction]` table selects them (default: the
//! crate's default set) and adds custom ones, and the value of every `[secrets.NAME]` runcap
//! can read is added as a literal. The redactor is built once per command
//! ([`crate::caps::Resources`]) and applied:
//!
//! - to every action's report, once, where it is made ([`crate::runner`]): outcome summary,
//!   details (string values and object keys), metric names, failure message, log lines,
//!   captured stdout and stderr, and every capability call as it is recorded. The run's live
//!   output, its `--json` document, the store and later steps' templates all see the
//!   scrubbed report (so `steps.X.summary` holds `[EMAIL_REDACTED]`, never the address);
//! - to every string the store writes ([`crate::store::Store::set_scrubber`]), which also
//!   covers incident texts, rollback params and audit payloads;
//! - to what `runcap show`, `history`, `incidents` and `bundle` print from the store, as a
//!   second line of defence for records written before a rule or a secret was added;
//! - to the stdout and stderr of every service runcap supervises, line by line, on its way
//!   into `services/NAME.log` (the supervisor receives the [`Spec`] on its stdin, never in
//!   its arguments or environment).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use runcap_redact::{Config, Counts, Redactor};

use crate::secrets::SecretStore;

/// Everything a redactor is built from, so another process (a service's supervisor) can
/// build the same one.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Spec {
    /// The manifest's `[redaction]` table.
    pub config: Config,
    /// `(name, value)` of every secret that could be read.
    pub literals: Vec<(String, String)>,
}

impl Spec {
    /// The environment's rules and the secret values readable now. A secret whose value
    /// cannot be read (an unset variable) cannot leak either.
    pub fn new(config: &Config, secrets: &SecretStore) -> Spec {
        Spec {
            config: config.clone(),
            literals: secrets.known_values(),
        }
    }

    /// The redactor, or why the rules do not build.
    pub fn build(&self) -> Result<Redactor, runcap_redact::Error> {
        self.config
            .build()?
            .with_literals(self.literals.iter().cloned())
    }
}

/// The host's redactor: the configured rules plus the literal value of every secret that can
/// be read now. A secret value too short to redact safely is an error, never a redactor
/// that silently leaves it (or the others) out.
pub fn host_redactor(spec: &Spec) -> Result<Arc<Redactor>, runcap_redact::Error> {
    spec.build().map(Arc::new)
}

/// Redacts a string in place.
pub fn scrub_string(r: &Redactor, s: &mut String) {
    if let std::borrow::Cow::Owned(new) = r.redact_str(s) {
        *s = new;
    }
}

/// Redacts a JSON value in place: every string value (a value under a credential key such as
/// `password` is replaced whole) and every object key, so a plugin cannot smuggle a value out
/// as a key. Keys that become equal after redaction get a `#2`, `#3`… suffix.
pub fn scrub_json(r: &Redactor, value: &mut Value) {
    r.redact_json_value(value, &mut Counts::new());
    scrub_keys(r, value);
}

fn scrub_keys(r: &Redactor, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let needs = map
                .keys()
                .any(|k| matches!(r.redact_str(k), std::borrow::Cow::Owned(_)));
            if needs {
                let old = std::mem::take(map);
                for (k, v) in old {
                    let key = r.redact_str(&k).into_owned();
                    let mut unique = key.clone();
                    let mut n = 1;
                    while map.contains_key(&unique) {
                        n += 1;
                        unique = format!("{key}#{n}");
                    }
                    map.insert(unique, v);
                }
            }
            for v in map.values_mut() {
                scrub_keys(r, v);
            }
        }
        Value::Array(items) => {
            for v in items {
                scrub_keys(r, v);
            }
        }
        _ => {}
    }
}

/// Text that was cut at a size limit can end in the first part of a value that no rule
/// recognises any more; the cut line is dropped so no value is kept half-redacted. Returns
/// how many bytes were dropped.
pub fn drop_cut_line(text: &mut String) -> u64 {
    let keep = text.rfind('\n').map_or(0, |i| i + 1);
    let dropped = (text.len() - keep) as u64;
    text.truncate(keep);
    dropped
}

/// Redacts a printable record read back from the store, through its JSON form. A record that
/// does not survive the round trip is replaced by nothing rather than printed unredacted.
pub fn scrub_serde<T: Serialize + DeserializeOwned>(r: &Redactor, value: &T) -> Option<T> {
    let mut v = serde_json::to_value(value).ok()?;
    scrub_json(r, &mut v);
    serde_json::from_value(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::default()
            .with_literals([("db", "Zq7-hunter-Xy")])
            .unwrap()
    }

    #[test]
    fn json_values_and_keys() {
        let r = redactor();
        let mut v = serde_json::json!({
            "bob@example.com": 1,
            "alice@example.com": 2,
            "note": "pw Zq7-hunter-Xy for bob@example.com",
            "nested": [{"password": "x-123456"}],
        });
        scrub_json(&r, &mut v);
        let text = v.to_string();
        assert!(
            !text.contains("example.com") && !text.contains("Zq7"),
            "{text}"
        );
        assert_eq!(v["note"], "pw [SECRET_REDACTED] for [EMAIL_REDACTED]");
        assert_eq!(v["nested"][0]["password"], "[API_KEY_REDACTED]");
        let obj = v.as_object().unwrap();
        assert!(obj.contains_key("[EMAIL_REDACTED]") && obj.contains_key("[EMAIL_REDACTED]#2"));
    }

    #[test]
    fn cut_line_is_dropped() {
        let mut s = "line one\nsecret Zq7-hu".to_string();
        assert_eq!(drop_cut_line(&mut s), 13);
        assert_eq!(s, "line one\n");
        let mut s = "no newline".to_string();
        assert_eq!(drop_cut_line(&mut s), 10);
        assert_eq!(s, "");
    }

    #[test]
    fn host_redactor_adds_known_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, "file-secret-123\n").unwrap();
        let store =
            SecretStore::new([("k".to_string(), crate::secrets::SecretSource::File(file))].into());
        let r = host_redactor(&Spec::new(&Config::default(), &store)).unwrap();
        assert_eq!(
            r.redact_str("v=file-secret-123 mail a@example.com"),
            "v=[SECRET_REDACTED] mail [EMAIL_REDACTED]"
        );
    }
}
