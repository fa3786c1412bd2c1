//! The compiled rule set: finds match spans in a line, settles overlaps and writes the result.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use memchr::memchr;

use crate::keys::Keys;
use crate::literals::Literals;
use crate::numeric::Numeric;
use crate::rules::{Builtin, Matcher, Rule};
use crate::{Counts, Error, email, ipv6};

/// What a scan learnt beyond its spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScanInfo {
    /// A private-key block began in the text and is still open at its end; its span is the
    /// last one.
    pub pem_open: bool,
}

/// A stretch of a line to replace, and which rule found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub rule: u32,
}

/// Index of the literal-secret rule; lowest, so a known secret wins an exact tie.
const LITERAL_RULE: u32 = 0;

/// One replacement decided by the engine, as reported by [`Redactor::find_matches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match<'r> {
    /// Name of the rule that won this stretch.
    pub rule: &'r str,
    /// Byte range of the input that is replaced.
    pub range: Range<usize>,
}

/// A compiled set of redaction rules. Build it once (from a [`Config`](crate::Config) or a rule
/// list) and share it: every method takes `&self`, and it is `Send + Sync`.
#[derive(Clone)]
pub struct Redactor {
    /// Index 0 is the literal-secret rule; the configured rules follow in priority order.
    rules: Vec<Rule>,
    email: Option<u32>,
    numeric: Numeric,
    keys: Option<Keys>,
    ipv6: Option<u32>,
    patterns: Vec<(u32, regex::bytes::Regex)>,
    literals: Literals,
    pub(crate) api_key: Option<u32>,
    pub(crate) private_key: Option<u32>,
    pub(crate) max_line: usize,
}

impl Default for Redactor {
    /// The default rule set: email, ssn, credit_card, phone and api_key.
    fn default() -> Redactor {
        Redactor::new(Builtin::DEFAULT.map(Rule::builtin)).expect("default rules are valid")
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &&self.rules[1..])
            .field("literal_names", &self.literals.names())
            .field("max_line", &self.max_line)
            .finish()
    }
}

impl Redactor {
    /// Compiles `rules`; their order breaks exact ties between overlapping matches. Fails when
    /// two rules share a name.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Result<Redactor, Error> {
        let mut r = Redactor {
            rules: vec![Rule::literal()],
            email: None,
            numeric: Numeric::default(),
            keys: None,
            ipv6: None,
            patterns: Vec::new(),
            literals: Literals::default(),
            api_key: None,
            private_key: None,
            max_line: crate::stream::DEFAULT_MAX_LINE,
        };
        for rule in rules {
            if r.rules.iter().any(|x| x.name == rule.name) {
                return Err(Error::DuplicateRule(rule.name));
            }
            let idx = u32::try_from(r.rules.len()).expect("rule count fits u32");
            match &rule.matcher {
                Matcher::Builtin(b) => match b {
                    Builtin::Email => r.email = Some(idx),
                    Builtin::Ssn => r.numeric.ssn = Some(idx),
                    Builtin::CreditCard => r.numeric.card = Some(idx),
                    Builtin::Phone => r.numeric.phone = Some(idx),
                    Builtin::Ipv4 => r.numeric.ipv4 = Some(idx),
                    Builtin::Ipv6 => r.ipv6 = Some(idx),
                    Builtin::ApiKey => r.api_key = Some(idx),
                    Builtin::PrivateKey => r.private_key = Some(idx),
                },
                Matcher::Pattern(re) => r.patterns.push((idx, re.clone())),
                Matcher::Literal => return Err(Error::DuplicateRule(rule.name)),
            }
            r.rules.push(rule);
        }
        if r.api_key.is_some() || r.private_key.is_some() {
            r.keys = Some(Keys::new(r.api_key, r.private_key));
        }
        Ok(r)
    }

    /// Adds exact secret values (for example the secrets granted to a plugin) that must never
    /// appear in output. Each occurrence becomes `[SECRET_REDACTED]`, counted under `secret`.
    /// Names are only kept for diagnostics.
    ///
    /// A value shorter than [`MIN_LITERAL_LEN`](crate::MIN_LITERAL_LEN) bytes would match all
    /// over ordinary text and is refused with [`Error::LiteralTooShort`] naming it. A value of
    /// several lines (a PEM key) is matched whole in strings, and each of its lines (without
    /// surrounding blanks, when at least the minimum length) is matched on its own too, so line
    /// streams, which see one line at a time, redact it as well.
    pub fn with_literals<I, N, V>(mut self, names_and_values: I) -> Result<Redactor, Error>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: AsRef<[u8]>,
    {
        self.literals.extend(names_and_values)?;
        Ok(self)
    }

    /// Sets the longest line processed in one piece by the stream functions (default 1 MiB).
    /// A longer line is processed in windows of this many bytes, each scanned together with
    /// the bytes around its end (at least as many as the longest possible match or secret),
    /// so memory stays bounded and a value across a window's end is still found whole.
    pub fn with_max_line(mut self, bytes: usize) -> Redactor {
        self.max_line = bytes.max(64);
        self
    }

    /// The configured rules in priority order (the literal `secret` rule is not listed).
    pub fn rules(&self) -> &[Rule] {
        &self.rules[1..]
    }

    /// Names given to the literal secrets (never their values).
    pub fn literal_names(&self) -> &[String] {
        self.literals.names()
    }

    /// Redacts one string, borrowing it unchanged when nothing matches.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.redact_str_inner(text, None)
    }

    /// Like [`redact_str`](Self::redact_str), adding one to `counts` per replacement.
    pub fn redact_str_counted<'a>(&self, text: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        self.redact_str_inner(text, Some(counts))
    }

    /// Redacts raw bytes (log data need not be UTF-8), borrowing them when nothing matches.
    pub fn redact_bytes<'a>(&self, data: &'a [u8], counts: &mut Counts) -> Cow<'a, [u8]> {
        let mut spans = Vec::new();
        self.collect_spans(data, &mut spans);
        if spans.is_empty() {
            return Cow::Borrowed(data);
        }
        self.count_spans(&spans, counts);
        let mut out = Vec::with_capacity(data.len());
        self.write_redacted(data, &spans, &mut out);
        Cow::Owned(out)
    }

    /// The replacements the engine would make in `text`, after overlap resolution. Useful for
    /// previews and for measuring rules.
    pub fn find_matches(&self, text: &[u8]) -> Vec<Match<'_>> {
        let mut spans = Vec::new();
        self.collect_spans(text, &mut spans);
        spans
            .iter()
            .map(|s| Match {
                rule: &self.rules[s.rule as usize].name,
                range: s.start..s.end,
            })
            .collect()
    }

    fn redact_str_inner<'a>(&self, text: &'a str, counts: Option<&mut Counts>) -> Cow<'a, str> {
        let mut spans = Vec::new();
        self.collect_spans(text.as_bytes(), &mut spans);
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        align_to_chars(text, &mut spans);
        if let Some(c) = counts {
            self.count_spans(&spans, c);
        }
        let mut out = Vec::with_capacity(text.len());
        self.write_redacted(text.as_bytes(), &spans, &mut out);
        // Spans sit on character boundaries and replacements are strings, so this cannot fail;
        // the lossy path only guards the invariant.
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Finds every match in `line` and leaves `spans` sorted and non-overlapping.
    ///
    /// Each detector is gated by a cheap test (an `@`, a digit run, a keyword hit), so most
    /// lines leave here after a few linear scans and no allocation.
    pub(crate) fn collect_spans(&self, line: &[u8], spans: &mut Vec<Span>) -> ScanInfo {
        spans.clear();
        let mut info = ScanInfo::default();
        if line.is_empty() {
            return info;
        }
        if let Some(rule) = self.email
            && memchr(b'@', line).is_some()
        {
            email::find(line, rule, spans);
        }
        if self.numeric.any() {
            self.numeric.find(line, spans);
        }
        if let Some(keys) = &self.keys {
            info.pem_open = keys.find(line, spans);
        }
        if let Some(rule) = self.ipv6 {
            ipv6::find(line, rule, spans);
        }
        for (rule, re) in &self.patterns {
            for m in re.find_iter(line) {
                if !m.is_empty() {
                    spans.push(Span {
                        start: m.start(),
                        end: m.end(),
                        rule: *rule,
                    });
                }
            }
        }
        if !self.literals.is_empty() {
            self.literals.find(line, LITERAL_RULE, spans);
        }
        if spans.len() > 1 {
            resolve_overlaps(spans);
        }
        info
    }

    /// Writes `line` with each span replaced by its rule's token.
    pub(crate) fn write_redacted(&self, line: &[u8], spans: &[Span], out: &mut Vec<u8>) {
        let mut pos = 0;
        for sp in spans {
            out.extend_from_slice(&line[pos..sp.start]);
            out.extend_from_slice(self.rules[sp.rule as usize].replacement.as_bytes());
            pos = sp.end;
        }
        out.extend_from_slice(&line[pos..]);
    }

    pub(crate) fn count_spans(&self, spans: &[Span], counts: &mut Counts) {
        for sp in spans {
            counts.add(&self.rules[sp.rule as usize].name, 1);
        }
    }

    /// Length of the longest literal secret (or line of one) a single line can hold.
    pub(crate) fn longest_literal_line(&self) -> usize {
        self.literals.longest_line()
    }

    /// Number of rule slots, for per-rule tallies indexed by `Span::rule`.
    pub(crate) fn rule_slots(&self) -> usize {
        self.rules.len()
    }

    /// Adds per-slot tallies to `counts` by rule name.
    pub(crate) fn add_tally(&self, tally: &[u64], counts: &mut Counts) {
        for (rule, &n) in self.rules.iter().zip(tally) {
            counts.add(&rule.name, n);
        }
    }

    /// Name of the rule in `rule`'s slot.
    pub(crate) fn rule_name(&self, rule: u32) -> &str {
        &self.rules[rule as usize].name
    }

    /// The `phone` rule's slot, when it is enabled.
    pub(crate) fn phone_rule(&self) -> Option<u32> {
        self.numeric.phone
    }

    pub(crate) fn has_phone(&self) -> bool {
        self.numeric.phone.is_some()
    }

    pub(crate) fn replacement(&self, rule: u32) -> &str {
        &self.rules[rule as usize].replacement
    }
}

/// Sorts spans by earliest start, then longest, then rule priority, and merges overlaps: the
/// first span of a cluster wins and is widened to cover everything it overlaps, so no part of
/// any matched text survives.
fn resolve_overlaps(spans: &mut Vec<Span>) {
    spans.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.rule.cmp(&b.rule))
    });
    let mut w = 0;
    for r in 1..spans.len() {
        let cur = spans[r];
        if cur.start < spans[w].end {
            if cur.end > spans[w].end {
                spans[w].end = cur.end;
            }
        } else {
            w += 1;
            spans[w] = cur;
        }
    }
    spans.truncate(w + 1);
}

/// Widens spans to UTF-8 character boundaries (a custom byte pattern or a non-UTF-8 literal
/// could otherwise cut a character in half), merging any that then touch.
pub(crate) fn align_to_chars(text: &str, spans: &mut Vec<Span>) {
    let mut changed = false;
    for sp in spans.iter_mut() {
        while !text.is_char_boundary(sp.start) {
            sp.start -= 1;
            changed = true;
        }
        while !text.is_char_boundary(sp.end) {
            sp.end += 1;
            changed = true;
        }
    }
    if changed && spans.len() > 1 {
        resolve_overlaps(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(start: usize, end: usize, rule: u32) -> Span {
        Span { start, end, rule }
    }

    #[test]
    fn overlap_earliest_then_longest() {
        let mut v = vec![sp(5, 9, 2), sp(0, 4, 1), sp(5, 12, 3), sp(3, 6, 4)];
        resolve_overlaps(&mut v);
        // (0,4) wins over (3,6) and absorbs it; (5,12) is longer than (5,9) but starts inside
        // the widened (0,6) so it is absorbed too.
        assert_eq!(v, [sp(0, 12, 1)]);

        let mut v = vec![sp(10, 14, 2), sp(10, 20, 3), sp(0, 2, 1)];
        resolve_overlaps(&mut v);
        assert_eq!(v, [sp(0, 2, 1), sp(10, 20, 3)]);

        let mut v = vec![sp(4, 8, 3), sp(4, 8, 1)];
        resolve_overlaps(&mut v);
        assert_eq!(v, [sp(4, 8, 1)], "exact tie goes to the earlier rule");

        let mut v = vec![sp(0, 4, 1), sp(4, 8, 2)];
        resolve_overlaps(&mut v);
        assert_eq!(v, [sp(0, 4, 1), sp(4, 8, 2)], "touching spans stay apart");
    }

    #[test]
    fn char_alignment() {
        let text = "aé b";
        let mut v = vec![sp(2, 3, 1)];
        align_to_chars(text, &mut v);
        assert_eq!(v, [sp(1, 3, 1)]);
    }
}
