//! IPv6 addresses: candidate runs of hex digits, colons and dots around each `:`, confirmed by
//! the standard library's address parser.

use core::net::Ipv6Addr;

use memchr::memchr_iter;

use crate::chars::{HEX, at, before, is, is_word};
use crate::engine::Span;

fn is_v6(b: u8) -> bool {
    is(b, HEX) || b == b':' || b == b'.'
}

/// Pushes a span for every IPv6 address in `line`.
pub(crate) fn find(line: &[u8], rule: u32, out: &mut Vec<Span>) {
    let mut next_free = 0;
    for c in memchr_iter(b':', line) {
        if c < next_free {
            continue;
        }
        let mut s = c;
        while s > 0 && is_v6(line[s - 1]) {
            s -= 1;
        }
        let mut e = c + 1;
        while e < line.len() && is_v6(line[e]) {
            e += 1;
        }
        next_free = e;
        if is_word(before(line, s, 1)) || is_word(at(line, e)) {
            continue;
        }
        while s < e && line[s] == b'.' {
            s += 1;
        }
        while e > s && line[e - 1] == b'.' {
            e -= 1;
        }
        if e > s + 1 && line[e - 1] == b':' && line[e - 2] != b':' {
            e -= 1;
        }
        if let Some((start, end)) = candidate(line, s, e) {
            out.push(Span { start, end, rule });
        }
    }
}

fn candidate(line: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let text = &line[s..e];
    if text.len() < 3 || text.len() > 45 || !text.iter().any(u8::is_ascii_digit) {
        return None;
    }
    let colons = text.iter().filter(|&&b| b == b':').count();
    let compressed = memchr::memmem::find(text, b"::").is_some();
    if !(compressed || colons == 7) {
        return None;
    }
    let s_text = core::str::from_utf8(text).ok()?;
    s_text.parse::<Ipv6Addr>().ok().map(|_| (s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(s.as_bytes(), 0, &mut out);
        out.iter().map(|sp| &s[sp.start..sp.end]).collect()
    }

    #[test]
    fn addresses() {
        assert_eq!(
            v6("from 2001:db8::8a2e:370:7334 ok"),
            ["2001:db8::8a2e:370:7334"]
        );
        assert_eq!(v6("[fe80::1]:8080"), ["fe80::1"]);
        assert_eq!(v6("peer ::1: closed"), ["::1"]);
        assert_eq!(
            v6("2001:0db8:85a3:0000:0000:8a2e:0370:7334."),
            ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]
        );
        assert_eq!(v6("::ffff:192.0.2.128"), ["::ffff:192.0.2.128"]);
    }

    #[test]
    fn non_addresses() {
        for bad in [
            "12:34:56.789",
            "2024-05-01T12:34:56Z",
            "std::io::Error",
            "dead::beef",
            "00:1a:2b:3c:4d:5e",
            "a:b",
            "key: value",
            "::",
        ] {
            assert!(v6(bad).is_empty(), "{bad}");
        }
    }
}
