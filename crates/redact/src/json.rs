//! JSON redaction: values and keys are redacted, structure is kept.
//!
//! For JSON Lines a single-pass scanner validates each line (same grammar as `serde_json`) and
//! rewrites only the tokens that change. Everything else - key order, spacing, number
//! spelling - is copied byte for byte, and no value tree is built.
//!
//! - String values and object keys go through the rules; a key that changes gets a `#2`, `#3`…
//!   suffix when it would repeat another redacted key of its object.
//! - A number whose digits a rule matches (a card number held as a JSON number) becomes the
//!   replacement string.
//! - A string under a key that names a credential (`password`, `access_token`, `apiKey`, ...)
//!   is replaced whole (a number there is left alone: it is a count or a setting, and the
//!   host's own records hold per-rule counts under keys such as `api_key`). Under a key that
//!   names a phone number (`phone`, `mobile`, `msisdn`, ...), a string of 7 to 15 digits and
//!   separators, or a number of 10 to 15 digits, is replaced as a phone number.

use std::io::{self, BufRead, Write};

use serde_json::Value;

use crate::engine::Span;
use crate::keys::{is_secret_value, sensitive_key, suffix_key};
use crate::stream::Scanner;
use crate::{Counts, Redactor, Stats};

/// Key names whose values are phone numbers (matched like credential keys: whole, or after a
/// separator or a camelCase hump).
pub(crate) const PHONE_KEYS: &[&[u8]] = &[
    b"phone",
    b"phone_number",
    b"phonenumber",
    b"phone-number",
    b"mobile",
    b"mobile_number",
    b"mobilenumber",
    b"cell",
    b"msisdn",
    b"telephone",
    b"tel",
    b"fax",
];

/// True when a key names a phone number.
fn phone_key(key: &[u8]) -> bool {
    suffix_key(key, PHONE_KEYS)
}

/// True when `v` is written like a phone number on its own: 7 to 15 digits, with only
/// `+`, blanks, `-`, `.` and parentheses between them.
fn bare_phone(v: &[u8]) -> bool {
    let digits = v.iter().filter(|b| b.is_ascii_digit()).count();
    (7..=15).contains(&digits)
        && v.first()
            .is_some_and(|&b| b.is_ascii_digit() || b == b'+' || b == b'(')
        && v.iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'.' | b'(' | b')'))
}

/// True when a JSON number has the digits of a full phone number (10 to 15, as in
/// `4155552671` or `14155552671`).
fn phone_number(number: &[u8]) -> bool {
    (10..=15).contains(&number.len()) && number.iter().all(u8::is_ascii_digit)
}

/// What a key says about the value under it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Plain,
    Credential,
    Phone,
}

/// Nesting at which `serde_json` gives up; deeper lines are treated as invalid the same way.
const MAX_DEPTH: usize = 128;

/// Outcome of redacting one JSON line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonLine {
    Unchanged,
    Changed,
    Invalid,
}

/// Buffers reused from line to line so the JSON path allocates nothing in steady state.
#[derive(Default)]
pub(crate) struct JsonScratch {
    spans: Vec<Span>,
    decoded: Vec<u8>,
    redacted: Vec<u8>,
    pending: Vec<u32>,
}

#[derive(Clone, Copy)]
struct StrTok {
    /// First byte after the opening quote.
    start: usize,
    /// Position of the closing quote.
    end: usize,
    escaped: bool,
}

type Invalid = ();

struct Scan<'a> {
    red: &'a Redactor,
    src: &'a [u8],
    pos: usize,
    out: &'a mut Vec<u8>,
    copied: usize,
    changed: bool,
    spans: &'a mut Vec<Span>,
    decoded: &'a mut Vec<u8>,
    redacted: &'a mut Vec<u8>,
    pending: &'a mut Vec<u32>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), Invalid> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let tok = self.string()?;
                self.string_value(tok, KeyKind::Plain);
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                self.number_value(start, KeyKind::Plain);
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// A value under a key of `kind`: strings and numbers are redacted by what the key says,
    /// containers and literals are scanned as usual.
    fn keyed_value(&mut self, depth: usize, kind: KeyKind) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'"') => {
                let tok = self.string()?;
                self.string_value(tok, kind);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                self.number_value(start, kind);
                Ok(())
            }
            _ => self.value(depth),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Invalid> {
        if depth >= MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        // Redacted keys written in this object, to keep them distinct.
        let mut renamed: Vec<Vec<u8>> = Vec::new();
        loop {
            if self.peek() != Some(b'"') {
                return Err(());
            }
            let key = self.string()?;
            let red = self.red;
            let kind = {
                let k = self.content(key);
                if red.api_key.is_some() && sensitive_key(k) {
                    KeyKind::Credential
                } else if red.has_phone() && phone_key(k) {
                    KeyKind::Phone
                } else {
                    KeyKind::Plain
                }
            };
            self.key(key, &mut renamed);
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.keyed_value(depth, kind)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Invalid> {
        if depth >= MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    fn digits(&mut self) -> Result<(), Invalid> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos > start { Ok(()) } else { Err(()) }
    }

    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    /// Validates a string token starting at the opening quote; leaves `pos` after it.
    fn string(&mut self) -> Result<StrTok, Invalid> {
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            match *self.src.get(i).ok_or(())? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match self.src.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let cp = hex4(self.src, i + 2)?;
                            i += 6;
                            if (0xD800..0xDC00).contains(&cp) {
                                if self.src.get(i) != Some(&b'\\')
                                    || self.src.get(i + 1) != Some(&b'u')
                                {
                                    return Err(());
                                }
                                let lo = hex4(self.src, i + 2)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(());
                                }
                                i += 6;
                            } else if (0xDC00..0xE000).contains(&cp) {
                                return Err(());
                            }
                        }
                        _ => return Err(()),
                    }
                }
                0..=0x1F => return Err(()),
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Ok(StrTok {
            start,
            end: i,
            escaped,
        })
    }

    /// The string's text: the raw bytes, or its unescaped form in `decoded`.
    fn content(&mut self, tok: StrTok) -> &[u8] {
        if tok.escaped {
            unescape(&self.src[tok.start..tok.end], self.decoded);
            self.decoded
        } else {
            &self.src[tok.start..tok.end]
        }
    }

    /// Writes `src[copied..from]`, then `self.redacted` as a JSON string in place of
    /// `src[from..to]`.
    fn replace_with_string(&mut self, from: usize, to: usize) {
        self.out.extend_from_slice(&self.src[self.copied..from]);
        self.out.push(b'"');
        escape_into(self.redacted, self.out);
        self.out.push(b'"');
        self.copied = to;
        self.changed = true;
    }

    /// Puts the replacement of `rule` in `redacted` and records it.
    fn whole(&mut self, rule: u32) {
        self.redacted.clear();
        self.redacted
            .extend_from_slice(self.red.replacement(rule).as_bytes());
        self.pending.push(rule);
    }

    /// Runs the rules over `content` into `redacted`; false when nothing matched.
    fn rules_over(
        red: &Redactor,
        content: &[u8],
        spans: &mut Vec<Span>,
        pending: &mut Vec<u32>,
        redacted: &mut Vec<u8>,
    ) -> bool {
        red.collect_spans(content, spans);
        if spans.is_empty() {
            return false;
        }
        align_bytes(content, spans);
        pending.extend(spans.iter().map(|s| s.rule));
        redacted.clear();
        red.write_redacted(content, spans, redacted);
        true
    }

    fn string_value(&mut self, tok: StrTok, kind: KeyKind) {
        if tok.escaped {
            unescape(&self.src[tok.start..tok.end], self.decoded);
        }
        let content: &[u8] = if tok.escaped {
            self.decoded
        } else {
            &self.src[tok.start..tok.end]
        };
        match kind {
            KeyKind::Credential if is_secret_value(content) => {
                let rule = self
                    .red
                    .api_key
                    .expect("credential keys need the api_key rule");
                self.whole(rule);
            }
            _ => {
                let matched =
                    Self::rules_over(self.red, content, self.spans, self.pending, self.redacted);
                if !matched {
                    match (kind, self.red.phone_rule()) {
                        (KeyKind::Phone, Some(rule)) if bare_phone(content) => self.whole(rule),
                        _ => return,
                    }
                }
            }
        }
        self.replace_with_string(tok.start - 1, tok.end + 1);
    }

    /// A number token `src[start..pos]`: replaced by a string when the rules (or its key) say
    /// it holds a value.
    fn number_value(&mut self, start: usize, kind: KeyKind) {
        let end = self.pos;
        let text = &self.src[start..end];
        match kind {
            // A number under a phone key is one when it has the digits of a full number (a
            // count of 1,234,567 under `phone` stays a count).
            KeyKind::Phone if phone_number(text) && self.red.phone_rule().is_some() => {
                let rule = self.red.phone_rule().expect("checked");
                self.whole(rule);
            }
            // Of the built-in rules, only `credit_card` finds a value in digits alone, and a
            // card has 13 digits or more: shorter numbers (counts, codes, durations) are not
            // scanned.
            _ if text.len() < 13 => return,
            _ => {
                if !Self::rules_over(self.red, text, self.spans, self.pending, self.redacted) {
                    return;
                }
            }
        }
        self.replace_with_string(start, end);
    }

    /// An object key: redacted by the rules, and kept distinct from the object's other
    /// redacted keys with a `#2`, `#3`… suffix.
    fn key(&mut self, tok: StrTok, renamed: &mut Vec<Vec<u8>>) {
        if tok.escaped {
            unescape(&self.src[tok.start..tok.end], self.decoded);
        }
        let content: &[u8] = if tok.escaped {
            self.decoded
        } else {
            &self.src[tok.start..tok.end]
        };
        if !Self::rules_over(self.red, content, self.spans, self.pending, self.redacted) {
            return;
        }
        let base_len = self.redacted.len();
        let mut n = 1;
        while renamed.iter().any(|k| k == self.redacted) {
            n += 1;
            self.redacted.truncate(base_len);
            self.redacted.extend_from_slice(format!("#{n}").as_bytes());
        }
        renamed.push(self.redacted.clone());
        self.replace_with_string(tok.start - 1, tok.end + 1);
    }
}

fn hex4(src: &[u8], at: usize) -> Result<u32, Invalid> {
    let digits = src.get(at..at + 4).ok_or(())?;
    let mut v = 0;
    for &b in digits {
        v = v * 16 + char::from(b).to_digit(16).ok_or(())?;
    }
    Ok(v)
}

/// Decodes the escapes of an already validated JSON string body.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let c = match raw[i + 1] {
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex4(raw, i + 2).unwrap_or(0xFFFD);
                i += 6;
                if (0xD800..0xDC00).contains(&cp) {
                    let lo = hex4(raw, i + 2).unwrap_or(0xDC00);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            other => other,
        };
        out.push(c);
        i += 2;
    }
}

/// Appends `text` as the body of a JSON string (quotes not included).
fn escape_into(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            0..=0x1F => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
            _ => out.push(b),
        }
    }
}

/// Widens spans over valid UTF-8 to character boundaries.
fn align_bytes(text: &[u8], spans: &mut [Span]) {
    let cont = |i: usize| i < text.len() && (text[i] & 0xC0) == 0x80;
    for sp in spans.iter_mut() {
        while sp.start > 0 && cont(sp.start) {
            sp.start -= 1;
        }
        while cont(sp.end) {
            sp.end += 1;
        }
    }
}

impl Redactor {
    /// Redacts one line of JSON into `out`. `Invalid` leaves `out` empty and counts nothing.
    pub(crate) fn redact_json_line(
        &self,
        line: &[u8],
        out: &mut Vec<u8>,
        scratch: &mut JsonScratch,
        tally: &mut [u64],
    ) -> JsonLine {
        if std::str::from_utf8(line).is_err() {
            return JsonLine::Invalid;
        }
        scratch.pending.clear();
        let base = out.len();
        let mut scan = Scan {
            red: self,
            src: line,
            pos: 0,
            out,
            copied: 0,
            changed: false,
            spans: &mut scratch.spans,
            decoded: &mut scratch.decoded,
            redacted: &mut scratch.redacted,
            pending: &mut scratch.pending,
        };
        scan.ws();
        let valid = scan.value(0).is_ok() && {
            scan.ws();
            scan.pos == line.len()
        };
        if !valid {
            scan.out.truncate(base);
            return JsonLine::Invalid;
        }
        if !scan.changed {
            return JsonLine::Unchanged;
        }
        scan.out.extend_from_slice(&line[scan.copied..]);
        for &rule in scratch.pending.iter() {
            tally[rule as usize] += 1;
        }
        JsonLine::Changed
    }

    /// Streams JSON Lines: every record is redacted as described in this module (values, keys,
    /// numbers that hold a value), one record per output line. A line that is not valid JSON
    /// is redacted as plain text and counted in [`Stats::invalid_json_lines`]; blank lines pass
    /// through. A line longer than the line cap is redacted as text, window by window.
    pub fn redact_jsonl_stream<R: BufRead, W: Write>(
        &self,
        reader: R,
        writer: W,
        counts: &mut Counts,
    ) -> io::Result<Stats> {
        let mut scratch = JsonScratch::default();
        let mut invalid = 0u64;
        let f = |s: &mut Scanner<'_>, text: &[u8], out: &mut Vec<u8>| {
            if text.iter().all(u8::is_ascii_whitespace) {
                return false;
            }
            match self.redact_json_line(text, out, &mut scratch, &mut s.tally) {
                JsonLine::Unchanged => false,
                JsonLine::Changed => true,
                JsonLine::Invalid => {
                    invalid += 1;
                    s.text_line(text, out)
                }
            }
        };
        let (mut stats, tally) = self.drive(reader, writer, f)?;
        stats.invalid_json_lines = invalid;
        self.finish_tally(&tally, counts, stats)
    }

    /// Redacts `value` in place the way JSON Lines records are redacted (see the module
    /// documentation): string values, object keys (a changed key that would repeat another
    /// gets a `#2`, `#3`… suffix), numbers holding a value, whole strings under credential
    /// keys and phone numbers under phone keys. Returns the number of replacements, which are also added to `counts`.
    pub fn redact_json_value(&self, value: &mut Value, counts: &mut Counts) -> u64 {
        let before = counts.total();
        self.walk_json(value, KeyKind::Plain, counts);
        counts.total() - before
    }

    fn walk_json(&self, value: &mut Value, kind: KeyKind, counts: &mut Counts) {
        let whole = |rule: u32, counts: &mut Counts| {
            counts.add(self.rule_name(rule), 1);
            Value::String(self.replacement(rule).to_owned())
        };
        match value {
            Value::String(s) => {
                if kind == KeyKind::Credential
                    && let Some(rule) = self.api_key
                    && is_secret_value(s.as_bytes())
                {
                    *value = whole(rule, counts);
                    return;
                }
                if let std::borrow::Cow::Owned(new) = self.redact_str_counted(s, counts) {
                    *s = new;
                } else if kind == KeyKind::Phone
                    && let Some(rule) = self.phone_rule()
                    && bare_phone(s.as_bytes())
                {
                    *value = whole(rule, counts);
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                if kind == KeyKind::Phone
                    && let Some(rule) = self.phone_rule()
                    && phone_number(text.as_bytes())
                {
                    *value = whole(rule, counts);
                } else if text.len() >= 13
                    && let std::borrow::Cow::Owned(new) = self.redact_str_counted(&text, counts)
                {
                    *value = Value::String(new);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk_json(v, KeyKind::Plain, counts);
                }
            }
            Value::Object(map) => {
                let needs_rename = map
                    .keys()
                    .any(|k| matches!(self.redact_str(k), std::borrow::Cow::Owned(_)));
                if needs_rename {
                    let old = std::mem::take(map);
                    let mut renamed: Vec<String> = Vec::new();
                    for (k, v) in old {
                        let key = match self.redact_str_counted(&k, counts) {
                            std::borrow::Cow::Borrowed(_) => k,
                            std::borrow::Cow::Owned(key) => {
                                let mut unique = key.clone();
                                let mut n = 1;
                                while renamed.contains(&unique) || map.contains_key(&unique) {
                                    n += 1;
                                    unique = format!("{key}#{n}");
                                }
                                renamed.push(unique.clone());
                                unique
                            }
                        };
                        map.insert(key, v);
                    }
                }
                for (k, v) in map.iter_mut() {
                    let kind = if self.api_key.is_some() && sensitive_key(k.as_bytes()) {
                        KeyKind::Credential
                    } else if self.has_phone() && phone_key(k.as_bytes()) {
                        KeyKind::Phone
                    } else {
                        KeyKind::Plain
                    };
                    self.walk_json(v, kind, counts);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &Redactor, s: &str) -> (JsonLine, String) {
        let mut out = Vec::new();
        let mut scratch = JsonScratch::default();
        let mut tally = vec![0; r.rule_slots()];
        let res = r.redact_json_line(s.as_bytes(), &mut out, &mut scratch, &mut tally);
        (res, String::from_utf8(out).unwrap())
    }

    #[test]
    fn validity_matches_serde_json() {
        let r = Redactor::default();
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#"  {"a": [1, -2.5e+3, true, false, null, "x"]}  "#,
            r#""just a string""#,
            r#"0"#,
            r#"-0.0e0"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a" 1}"#,
            r#"01"#,
            r#"1."#,
            r#".5"#,
            r#"-"#,
            r#"1e"#,
            r#"tru"#,
            r#"nul"#,
            r#"{"a":1} x"#,
            r#"{"a":"\q"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":"\ud83dx"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\/\b\f\n\r\t\"\\"}"#,
            r#"{'a': 1}"#,
            r#"[1 2]"#,
            r#"{"a":{"b":{"c":[[[]]]}}}"#,
            r#"NaN"#,
            r#"{"a":1}{"b":2}"#,
        ];
        for c in cases {
            let want = serde_json::from_str::<Value>(c).is_ok();
            let got = line(&r, c).0 != JsonLine::Invalid;
            assert_eq!(got, want, "{c}");
        }
        for depth in [126, 127, 128, 129] {
            let c = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let want = serde_json::from_str::<Value>(&c).is_ok();
            let got = line(&r, &c).0 != JsonLine::Invalid;
            assert_eq!(got, want, "depth {depth}");
        }
        let bad_utf8 = b"{\"a\":\"\xff\"}";
        let mut out = Vec::new();
        let res = r.redact_json_line(
            bad_utf8,
            &mut out,
            &mut JsonScratch::default(),
            &mut vec![0; r.rule_slots()],
        );
        assert_eq!(res, JsonLine::Invalid);
    }

    #[test]
    fn validity_matches_serde_json_on_random_token_soup() {
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"a\"",
            "\"",
            "\\",
            "\\u00e9",
            "\\ud83d",
            "\\ude00",
            "\\n",
            "1",
            "0",
            "-",
            ".",
            "e",
            "+",
            "true",
            "nul",
            "null",
            "x",
            "\"bob@example.com\"",
            "\"token\"",
            "\t",
            "é",
        ];
        let r = Redactor::default();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let n = 1 + next() % 10;
            let text: String = (0..n)
                .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
                .collect();
            let want = serde_json::from_str::<Value>(&text).is_ok();
            let (res, out) = line(&r, &text);
            assert_eq!(res != JsonLine::Invalid, want, "{text}");
            if res == JsonLine::Changed {
                assert!(
                    serde_json::from_str::<Value>(&out).is_ok(),
                    "{text} -> {out}"
                );
            }
        }
    }

    #[test]
    fn redacts_values_keys_and_numbers() {
        let r = Redactor::default();
        let (res, out) = line(
            &r,
            r#"{"alice@example.com": "mail alice@example.com", "n": 1.50, "z": [ "415-555-2671" ]}"#,
        );
        assert_eq!(res, JsonLine::Changed);
        assert_eq!(
            out,
            r#"{"[EMAIL_REDACTED]": "mail [EMAIL_REDACTED]", "n": 1.50, "z": [ "[PHONE_REDACTED]" ]}"#
        );
        let (res, out) = line(
            &r,
            r#"{"msg": "nothing here", "n": 4111111111111111, "ts": 1714566896789, "id": 4111111111111112, "f": -0.5e3}"#,
        );
        assert_eq!(res, JsonLine::Changed);
        assert_eq!(
            out,
            r#"{"msg": "nothing here", "n": "[CC_REDACTED]", "ts": 1714566896789, "id": 4111111111111112, "f": -0.5e3}"#
        );
        let (_, out) = line(
            &r,
            r#"{"phone": 14155552671, "userPhone": "415 555 2671", "mobile": 1234567, "tel": [4155552671], "count": 4155552671, "api_key": 21152, "password": 1234}"#,
        );
        assert_eq!(
            out,
            r#"{"phone": "[PHONE_REDACTED]", "userPhone": "[PHONE_REDACTED]", "mobile": 1234567, "tel": [4155552671], "count": 4155552671, "api_key": 21152, "password": 1234}"#
        );
        let (_, out) = line(
            &r,
            r#"{"a@example.com": 1, "b@example.com": 2, "[EMAIL_REDACTED]": 3, "x": {"a@example.com": 4}}"#,
        );
        assert_eq!(
            out,
            r#"{"[EMAIL_REDACTED]": 1, "[EMAIL_REDACTED]#2": 2, "[EMAIL_REDACTED]": 3, "x": {"[EMAIL_REDACTED]": 4}}"#
        );
    }

    #[test]
    fn escapes_are_decoded_and_reencoded() {
        let r = Redactor::default();
        let (_, out) = line(
            &r,
            r#"{"m":"a\u0040example.com \"q\"\n bob\u0040example.org"}"#,
        );
        assert_eq!(out, r#"{"m":"[EMAIL_REDACTED] \"q\"\n [EMAIL_REDACTED]"}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["m"], "[EMAIL_REDACTED] \"q\"\n [EMAIL_REDACTED]");
    }

    #[test]
    fn sensitive_keys_replace_whole_value() {
        let r = Redactor::default();
        let (_, out) = line(
            &r,
            r#"{"password":"hunter2","accessToken":"abc","token":null,"apiKey":"","secret":{"x":"y"}}"#,
        );
        assert_eq!(
            out,
            r#"{"password":"[API_KEY_REDACTED]","accessToken":"[API_KEY_REDACTED]","token":null,"apiKey":"","secret":{"x":"y"}}"#
        );
    }

    #[test]
    fn value_tree() {
        let r = Redactor::default();
        let mut v: Value = serde_json::json!({
            "user": {"email": "bob@example.com", "password": "pw-123456"},
            "list": ["call +14155552671", 5, null],
            "bob@example.com": true,
        });
        let mut counts = Counts::new();
        assert_eq!(r.redact_json_value(&mut v, &mut counts), 4);
        assert_eq!(v["user"]["email"], "[EMAIL_REDACTED]");
        assert_eq!(v["user"]["password"], "[API_KEY_REDACTED]");
        assert_eq!(v["list"][0], "call [PHONE_REDACTED]");
        assert_eq!(v["[EMAIL_REDACTED]"], true);
        assert!(v.get("bob@example.com").is_none());

        let mut v = serde_json::json!({
            "card": 4111111111111111u64,
            "ts": 1714566896789u64,
            "phone": 14155552671u64,
            "counts": {"api_key": 21152, "phone": 8362, "email": 1234567},
            "a@example.com": 1,
            "b@example.com": 2,
        });
        let mut counts = Counts::new();
        assert_eq!(r.redact_json_value(&mut v, &mut counts), 4);
        assert_eq!(v["card"], "[CC_REDACTED]");
        assert_eq!(v["ts"], 1714566896789u64);
        assert_eq!(v["phone"], "[PHONE_REDACTED]");
        assert_eq!(
            v["counts"],
            serde_json::json!({"api_key": 21152, "phone": 8362, "email": 1234567}),
            "per-rule counts stay numbers"
        );
        assert_eq!(v["[EMAIL_REDACTED]"], 1);
        assert_eq!(v["[EMAIL_REDACTED]#2"], 2);
        assert_eq!(counts.get("email"), 2);
    }
}
