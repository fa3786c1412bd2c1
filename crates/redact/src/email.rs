//! Email addresses, found from each `@` outwards instead of running a regex over the line.
//!
//! Most log lines contain no `@`, so they cost one `memchr`.

use memchr::memchr_iter;

use crate::chars::{DOMAIN, LOCAL, is, run_end};
use crate::engine::Span;

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// Pushes a span for every email address in `line`.
pub(crate) fn find(line: &[u8], rule: u32, out: &mut Vec<Span>) {
    let mut floor = 0;
    for at in memchr_iter(b'@', line) {
        if at < floor {
            continue;
        }
        if let Some((start, end)) = match_at(line, at, floor) {
            out.push(Span { start, end, rule });
            floor = end;
        }
    }
}

fn match_at(line: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > floor && is(line[start - 1], LOCAL) {
        start -= 1;
    }
    start += escape_len(line, start);
    while start < at && line[start] == b'.' {
        start += 1;
    }
    if start >= at || line[at - 1] == b'.' || at - start > MAX_LOCAL || in_url_userinfo(line, start)
    {
        return None;
    }
    let mut dom_end = run_end(line, at + 1, DOMAIN);
    while dom_end > at + 1 && matches!(line[dom_end - 1], b'.' | b'-') {
        dom_end -= 1;
    }
    let len = valid_domain_len(&line[at + 1..dom_end])?;
    Some((start, at + 1 + len))
}

/// When the local part found starts right after a backslash, it starts with the rest of an
/// escape sequence (`\n`, `\t`, `\u00e9` in embedded JSON), not with the address: the
/// number of bytes that belong to the escape.
fn escape_len(line: &[u8], start: usize) -> usize {
    if crate::chars::escaped_at(line, start) {
        match line[start] {
            b'u' if line.len() >= start + 5
                && line[start + 1..start + 5].iter().all(u8::is_ascii_hexdigit) =>
            {
                5
            }
            _ => 1,
        }
    } else {
        0
    }
}

/// True when the "local part" at `start` is the password of `scheme://user:password@host`
/// (the `api_key` rule's), not the start of an address.
fn in_url_userinfo(line: &[u8], start: usize) -> bool {
    if start == 0 || line[start - 1] != b':' {
        return false;
    }
    let mut i = start - 1;
    while i > 0 && !matches!(line[i - 1], b'/' | b' ' | b'\t' | b'"' | b'\'' | b'<') {
        i -= 1;
    }
    i >= 3 && &line[i - 3..i] == b"://"
}

/// Length of the longest prefix of `dom` that is a valid domain with at least two labels and an
/// alphabetic top-level label (so `pkg@1.2.3` and `user@localhost` are not addresses).
fn valid_domain_len(dom: &[u8]) -> Option<usize> {
    let mut best = None;
    let mut labels = 0;
    let mut i = 0;
    while i < dom.len() && i <= MAX_DOMAIN {
        let j = memchr::memchr(b'.', &dom[i..]).map_or(dom.len(), |k| i + k);
        let label = &dom[i..j];
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            break;
        }
        labels += 1;
        if labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            best = Some(j);
        }
        i = j + 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(s.as_bytes(), 0, &mut out);
        out.iter().map(|sp| &s[sp.start..sp.end]).collect()
    }

    #[test]
    fn finds_addresses() {
        assert_eq!(emails("mail alice@example.com now"), ["alice@example.com"]);
        assert_eq!(
            emails("<Bob.Smith+tag@mail.example.co.uk>, x"),
            ["Bob.Smith+tag@mail.example.co.uk"]
        );
        assert_eq!(emails("to:a_b-c%d@ex-ample.io."), ["a_b-c%d@ex-ample.io"]);
        assert_eq!(emails("mailto:x@y.org;z@w.net"), ["x@y.org", "z@w.net"]);
        assert_eq!(emails("u@example.com.123"), ["u@example.com"]);
        assert_eq!(emails("..dots@example.com"), ["dots@example.com"]);
        assert_eq!(
            emails(r#"{"m":"a\njohn@example.com \t\u00e9x@example.org"}"#),
            ["john@example.com", "x@example.org"]
        );
        assert_eq!(emails(r"dir\\nat@example.com"), ["nat@example.com"]);
        assert_eq!(emails("mailto:x@example.com"), ["x@example.com"]);
    }

    #[test]
    fn rejects_non_addresses() {
        assert!(emails("npm i left-pad@1.3.0").is_empty());
        assert!(emails("user@localhost").is_empty());
        assert!(emails("@here @channel").is_empty());
        assert!(emails("trailing.@example.com").is_empty());
        assert!(emails("a@b").is_empty());
        assert!(emails("x@-bad.com").is_empty());
        assert!(emails("x@example.c").is_empty());
        assert!(emails("postgres://app:s3cret@db.example.com/x").is_empty());
        assert!(emails(r"\n@example.com").is_empty());
    }
}
