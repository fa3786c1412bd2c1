//! Exact secret values known to the host (granted secrets), matched with one Aho-Corasick scan.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::Error;
use crate::engine::Span;

/// Values shorter than this are ignored: they would match all over ordinary text.
pub const MIN_LITERAL_LEN: usize = 4;

/// The known secret values and their automaton. Values are kept so that further literals can
/// be added; they are never printed.
#[derive(Clone, Default)]
pub(crate) struct Literals {
    names: Vec<String>,
    values: Vec<Vec<u8>>,
    ac: Option<AhoCorasick>,
}

impl Literals {
    /// Adds values (skipping short and duplicate ones) and rebuilds the automaton.
    pub(crate) fn extend<I, N, V>(&mut self, literals: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: AsRef<[u8]>,
    {
        for (name, value) in literals {
            let value = value.as_ref();
            if value.len() < MIN_LITERAL_LEN || self.values.iter().any(|v| v == value) {
                continue;
            }
            self.names.push(name.into());
            self.values.push(value.to_vec());
        }
        self.ac = if self.values.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&self.values)?,
            )
        };
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
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

    #[test]
    fn matches_longest_and_skips_short() {
        let mut l = Literals::default();
        l.extend([
            ("a", "hunter2"),
            ("b", "hunter22"),
            ("c", "abc"),
            ("d", "hunter2"),
        ])
        .unwrap();
        assert_eq!(l.names(), ["a", "b"]);
        let mut out = Vec::new();
        l.find(b"pw hunter22 and hunter2 abc", 0, &mut out);
        let got: Vec<_> = out.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(got, [(3, 11), (16, 23)]);
    }
}
