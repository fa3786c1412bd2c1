//! Per-rule redaction counters and per-stream statistics, reported by the plugin in its outcome
//! and recorded by the host, so an operator can see what was removed without seeing it.

use std::collections::BTreeMap;

use serde::Serialize;

/// How many replacements each rule made, keyed by rule name. Serialises as a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Counts {
    by_rule: BTreeMap<String, u64>,
}

impl Counts {
    /// Empty counters.
    pub fn new() -> Counts {
        Counts::default()
    }

    /// Replacements made by `rule` (0 when it never matched).
    pub fn get(&self, rule: &str) -> u64 {
        self.by_rule.get(rule).copied().unwrap_or(0)
    }

    /// Adds `n` replacements for `rule`.
    pub fn add(&mut self, rule: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.by_rule.get_mut(rule) {
            Some(v) => *v += n,
            None => {
                self.by_rule.insert(rule.to_owned(), n);
            }
        }
    }

    /// Adds every counter of `other` (for example per-file counts into a run total).
    pub fn merge(&mut self, other: &Counts) {
        for (rule, &n) in &other.by_rule {
            self.add(rule, n);
        }
    }

    /// Replacements made by all rules together.
    pub fn total(&self) -> u64 {
        self.by_rule.values().sum()
    }

    /// True when nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.by_rule.is_empty()
    }

    /// `(rule, count)` pairs in rule-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_rule.iter().map(|(k, &v)| (k.as_str(), v))
    }
}

/// What one streaming pass did; returned by the stream functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Lines read (a final line without a newline counts).
    pub lines: u64,
    /// Lines in which at least one replacement was made.
    pub lines_redacted: u64,
    /// Replacements made.
    pub redactions: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Lines longer than the line cap, processed in pieces.
    pub oversized_lines: u64,
    /// JSON Lines mode: lines that were not valid JSON and were redacted as plain text.
    pub invalid_json_lines: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merge_total() {
        let mut a = Counts::new();
        a.add("email", 2);
        a.add("ssn", 0);
        let mut b = Counts::new();
        b.add("email", 1);
        b.add("phone", 4);
        a.merge(&b);
        assert_eq!(a.get("email"), 3);
        assert_eq!(a.get("ssn"), 0);
        assert_eq!(a.total(), 7);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"email":3,"phone":4}"#
        );
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["email", "phone"]
        );
    }
}
