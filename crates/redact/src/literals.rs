//! Exact secret values known to the host (granted secrets), matched with one Aho-Corasick scan.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::Error;
use crate::engine::Span;

/// Shortest secret value accepted: a shorter one would match all over ordinary text, so
/// [`Redactor::with_literals`](crate::Redactor::with_literals) refuses it.
pub const MIN_LITERAL_LEN: usize = 4;

/// The known secret values and their automaton. Values are kept so that further literals can
/// be added; they are never printed.
#[derive(Clone, Default)]
pub(crate) struct Literals {
    names: Vec<String>,
    /// Every pattern: each value whole, and each line of a value of several lines.
    patterns: Vec<Vec<u8>>,
    /// Length of the longest pattern that fits on one line.
    longest_line: usize,
    ac: Option<AhoCorasick>,
}

impl Literals {
    /// Adds values (skipping duplicates) and rebuilds the automaton. A value shorter than
    /// [`MIN_LITERAL_LEN`] is refused, naming it; nothing is added then.
    pub(crate) fn extend<I, N, V>(&mut self, literals: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: AsRef<[u8]>,
    {
        let mut next = self.clone();
        for (name, value) in literals {
            let name = name.into();
            let value = value.as_ref();
            if value.len() < MIN_LITERAL_LEN {
                return Err(Error::LiteralTooShort {
                    name,
                    len: value.len(),
                    min: MIN_LITERAL_LEN,
                });
            }
            if next.add(value) {
                next.names.push(name);
            }
            if value.contains(&b'\n') {
                // Line streams see one line at a time: each line of the value is a secret too.
                // Lines shorter than the minimum are fragments too common to match alone.
                for line in value.split(|&b| b == b'\n') {
                    let line = line.trim_ascii();
                    if line.len() >= MIN_LITERAL_LEN {
                        next.add(line);
                    }
                }
            }
        }
        next.ac = if next.patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&next.patterns)?,
            )
        };
        *self = next;
        Ok(())
    }

    /// Adds one pattern unless it is known; true when added.
    fn add(&mut self, pattern: &[u8]) -> bool {
        if self.patterns.iter().any(|v| v == pattern) {
            return false;
        }
        if !pattern.contains(&b'\n') {
            self.longest_line = self.longest_line.max(pattern.len());
        }
        self.patterns.push(pattern.to_vec());
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Length of the longest pattern a single line can hold.
    pub(crate) fn longest_line(&self) -> usize {
        self.longest_line
    }

    /// Pushes a span for every occurrence of a known value.
    pub(crate) fn find(&self, line: &[u8], rule: u32, out: &mut Vec<Span>) {
        if let Some(ac) = &self.ac {
            for m in ac.find_iter(line) {
                out.push(Span {
                    start: m.start(),
                    end: m.end(),
                    rule,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(l: &Literals, text: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        l.find(text, 0, &mut out);
        out.iter().map(|s| (s.start, s.end)).collect()
    }

    #[test]
    fn matches_longest_and_skips_duplicates() {
        let mut l = Literals::default();
        l.extend([("a", "hunter2"), ("b", "hunter22"), ("d", "hunter2")])
            .unwrap();
        assert_eq!(l.names(), ["a", "b"]);
        assert_eq!(
            spans(&l, b"pw hunter22 and hunter2 abc"),
            [(3, 11), (16, 23)]
        );
        assert_eq!(l.longest_line(), 8);
    }

    #[test]
    fn short_values_are_refused_and_nothing_is_added() {
        let mut l = Literals::default();
        l.extend([("ok", "hunter2")]).unwrap();
        let err = l.extend([("fine", "abcdef"), ("pin", "123")]).unwrap_err();
        assert!(
            matches!(&err, Error::LiteralTooShort { name, len: 3, min: 4 } if name == "pin"),
            "{err}"
        );
        assert!(!err.to_string().contains("123"), "{err}");
        assert_eq!(l.names(), ["ok"], "a refused batch adds nothing");
        assert!(spans(&l, b"abcdef").is_empty());
    }

    #[test]
    fn multi_line_values_match_whole_and_line_by_line() {
        let mut l = Literals::default();
        l.extend([("key", "first-line-AAAA\r\n  second-line-BBBB\nxy\n")])
            .unwrap();
        assert_eq!(l.names(), ["key"]);
        let whole = b"k=first-line-AAAA\r\n  second-line-BBBB\nxy\n!";
        assert_eq!(spans(&l, whole), [(2, whole.len() - 1)]);
        assert_eq!(spans(&l, b"  second-line-BBBB"), [(2, 18)]);
        assert_eq!(spans(&l, b"first-line-AAAA"), [(0, 15)]);
        assert!(
            spans(&l, b"xy").is_empty(),
            "short fragments are not secrets alone"
        );
        assert_eq!(l.longest_line(), 16);
    }
}
