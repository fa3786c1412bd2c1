//! JSON redaction: string values are redacted, keys and structure are kept.
//!
//! For JSON Lines a single-pass scanner validates each line (same grammar as `serde_json`) and
//! rewrites only the string values that change. Everything else - key order, spacing, number
//! spelling - is copied byte for byte, and no value tree is built. Values under a key that names
//! a credential (`password`, `access_token`, `apiKey`, ...) are replaced whole.

use std::io::{self, BufRead, Write};

use serde_json::Value;

use crate::engine::Span;
use crate::keys::{is_secret_value, sensitive_key};
use crate::stream::Segment;
use crate::{Counts, Redactor, Stats};

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
                self.string_value(tok, false);
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(()),
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
        loop {
            if self.peek() != Some(b'"') {
                return Err(());
            }
            let key = self.string()?;
            let sensitive = self.red.api_key.is_some() && {
                let k = self.content(key);
                sensitive_key(k)
            };
            self.ws();
            self.expect(b':')?;
            self.ws();
            if sensitive && self.peek() == Some(b'"') {
                let tok = self.string()?;
                self.string_value(tok, true);
            } else {
                self.value(depth)?;
            }
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

    fn string_value(&mut self, tok: StrTok, sensitive: bool) {
        if tok.escaped {
            unescape(&self.src[tok.start..tok.end], self.decoded);
        }
        let content: &[u8] = if tok.escaped {
            self.decoded
        } else {
            &self.src[tok.start..tok.end]
        };
        self.redacted.clear();
        if sensitive
            && let Some(rule) = self.red.api_key
            && is_secret_value(content)
        {
            self.pending.push(rule);
            self.redacted
                .extend_from_slice(self.red.replacement(rule).as_bytes());
        } else {
            self.red.collect_spans(content, self.spans);
            if self.spans.is_empty() {
                return;
            }
            align_bytes(content, self.spans);
            self.pending.extend(self.spans.iter().map(|s| s.rule));
            self.red.write_redacted(content, self.spans, self.redacted);
        }
        self.out
            .extend_from_slice(&self.src[self.copied..tok.start]);
        escape_into(self.redacted, self.out);
        self.out.push(b'"');
        self.copied = tok.end + 1;
        self.changed = true;
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

    /// Streams JSON Lines: every string value of every record is redacted, keys and structure
    /// are kept, one record per output line. A line that is not valid JSON is redacted as
    /// plain text and counted in [`Stats::invalid_json_lines`]; blank lines pass through. A line
    /// longer than the line cap is redacted as text in pieces.
    pub fn redact_jsonl_stream<R: BufRead, W: Write>(
        &self,
        reader: R,
        writer: W,
        counts: &mut Counts,
    ) -> io::Result<Stats> {
        let mut tally = vec![0u64; self.rule_slots()];
        let mut scratch = JsonScratch::default();
        let mut text_spans: Vec<Span> = Vec::new();
        let mut invalid = 0u64;
        let f = |text: &[u8], seg: Segment, out: &mut Vec<u8>| {
            if seg == Segment::Piece {
                return self.redact_line_into(text, &mut text_spans, &mut tally, out);
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                return false;
            }
            match self.redact_json_line(text, out, &mut scratch, &mut tally) {
                JsonLine::Unchanged => false,
                JsonLine::Changed => true,
                JsonLine::Invalid => {
                    invalid += 1;
                    self.redact_line_into(text, &mut text_spans, &mut tally, out)
                }
            }
        };
        let mut stats = self.drive(reader, writer, f)?;
        stats.invalid_json_lines = invalid;
        self.finish_tally(&tally, counts, stats)
    }

    /// Redacts every string value inside `value` in place (object keys are kept; a string under
    /// a credential key is replaced whole). Returns the number of replacements, which are also
    /// added to `counts`.
    pub fn redact_json_value(&self, value: &mut Value, counts: &mut Counts) -> u64 {
        let before = counts.total();
        self.walk_json(value, counts);
        counts.total() - before
    }

    fn walk_json(&self, value: &mut Value, counts: &mut Counts) {
        match value {
            Value::String(s) => {
                if let std::borrow::Cow::Owned(new) = self.redact_str_counted(s, counts) {
                    *s = new;
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk_json(v, counts);
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if let (Some(rule), Value::String(s)) = (self.api_key, &mut *v)
                        && sensitive_key(k.as_bytes())
                        && is_secret_value(s.as_bytes())
                    {
                        *s = self.replacement(rule).to_owned();
                        counts.add(crate::Builtin::ApiKey.name(), 1);
                        continue;
                    }
                    self.walk_json(v, counts);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
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
    fn redacts_values_not_keys() {
        let r = Redactor::default();
        let (res, out) = line(
            &r,
            r#"{"alice@example.com": "mail alice@example.com", "n": 1.50, "z": [ "415-555-2671" ]}"#,
        );
        assert_eq!(res, JsonLine::Changed);
        assert_eq!(
            out,
            r#"{"alice@example.com": "mail [EMAIL_REDACTED]", "n": 1.50, "z": [ "[PHONE_REDACTED]" ]}"#
        );
        let (res, _) = line(&r, r#"{"msg": "nothing here", "n": 4111111111111111}"#);
        assert_eq!(res, JsonLine::Unchanged, "numbers are not strings");
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
        assert_eq!(r.redact_json_value(&mut v, &mut counts), 3);
        assert_eq!(v["user"]["email"], "[EMAIL_REDACTED]");
        assert_eq!(v["user"]["password"], "[API_KEY_REDACTED]");
        assert_eq!(v["list"][0], "call [PHONE_REDACTED]");
        assert_eq!(v["bob@example.com"], true);
        assert_eq!(counts.get("api_key"), 1);
        assert_eq!(counts.get("email"), 1);
    }
}
