//! The `private_key` rule: PEM private-key blocks, from the `-----BEGIN … PRIVATE KEY-----` line
//! to its `-----END … PRIVATE KEY-----` line.
//!
//! In one string (or one line holding an escaped key, as in JSON) the whole block is one match.
//! A line stream sees a block one line at a time: the `BEGIN` line opens it, and the stream
//! keeps replacing lines until the `END` line, or until a line that does not look like key
//! material (so a key cut short does not swallow the rest of a log).

use memchr::memmem;

use crate::engine::Span;

/// Opening of every PEM block.
pub(crate) const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";
/// Longest label looked at (`ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`).
const MAX_LABEL: usize = 40;

/// A byte of key material: base64, or a line break (raw, or the backslash and letter of an
/// escaped one).
fn body_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\\' | b'\r' | b'\n')
}

/// The label of a `-----BEGIN LABEL-----` header at `s` when it names a private key, and
/// where the header ends.
fn private_header(text: &[u8], s: usize) -> Option<(&[u8], usize)> {
    let from = s + BEGIN.len();
    let limit = (from + MAX_LABEL + DASHES.len()).min(text.len());
    let close = memmem::find(&text[from..limit], DASHES)? + from;
    let label = &text[from..close];
    let valid = label
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ');
    (valid && memmem::find(label, b"PRIVATE KEY").is_some())
        .then_some((label, close + DASHES.len()))
}

/// End of the `-----END LABEL-----` marker that closes a block, searching from `from`.
fn end_marker(text: &[u8], from: usize, label: &[u8]) -> Option<usize> {
    let mut at = from;
    while let Some(k) = memmem::find(&text[at..], END) {
        let m = at + k + END.len();
        if text[m..].starts_with(label) && text[m + label.len()..].starts_with(DASHES) {
            return Some(m + label.len() + DASHES.len());
        }
        at = m;
    }
    None
}

/// End of the `-----` closing a marker whose label starts at `from`.
fn label_close(text: &[u8], from: usize) -> Option<usize> {
    let limit = (from + MAX_LABEL + DASHES.len()).min(text.len());
    memmem::find(&text[from..limit], DASHES).map(|d| from + d + DASHES.len())
}

/// End of the run of key material starting at `from`.
fn body_end(text: &[u8], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|&b| !body_byte(b))
        .map_or(text.len(), |p| from + p)
}

/// The block whose header starts at `s`: its span, and whether it is still open at the end
/// of `text` (no `END` marker, key material up to the end).
pub(crate) fn block_at(text: &[u8], s: usize, rule: u32) -> Option<(Span, bool)> {
    let (label, header_end) = private_header(text, s)?;
    let (end, open) = match end_marker(text, header_end, label) {
        Some(e) => (e, false),
        None => {
            let e = body_end(text, header_end);
            (e, e == text.len())
        }
    };
    Some((
        Span {
            start: s,
            end,
            rule,
        },
        open,
    ))
}

/// How a line continues a block opened on an earlier line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Continues {
    /// The block goes on past this line: replace all of it (unless it is blank).
    Whole,
    /// The block ends at this offset (after its `END` marker); the rest is ordinary text.
    EndsAt(usize),
    /// The line is not key material: the block is over and the line is ordinary text.
    No,
}

/// Decides a line read while a block is open: key material, a legacy header
/// (`Proc-Type:`, `DEK-Info:`), the `END` line, or none of these.
pub(crate) fn continues(line: &[u8]) -> Continues {
    let trimmed = line.trim_ascii();
    if trimmed.starts_with(b"Proc-Type:") || trimmed.starts_with(b"DEK-Info:") {
        return Continues::Whole;
    }
    if let Some(k) = memmem::find(line, END) {
        if line[..k].trim_ascii().iter().all(|&b| body_byte(b))
            && let Some(e) = label_close(line, k + END.len())
        {
            return Continues::EndsAt(e);
        }
        return Continues::No;
    }
    if trimmed.iter().all(|&b| body_byte(b)) {
        Continues::Whole
    } else {
        Continues::No
    }
}

/// Where key material that continues an open block ends in a window of an over-long line,
/// from `from`: after the `END` marker when there is one, else at the first byte that is not
/// key material. The flag tells whether the block is still open at the end of `text`.
pub(crate) fn swallow(text: &[u8], from: usize) -> (usize, bool) {
    let run = body_end(text, from);
    if run == text.len() {
        return (run, true);
    }
    if text[run..].starts_with(END)
        && let Some(e) = label_close(text, run + END.len())
    {
        return (e, false);
    }
    (run, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yZtGZ3UK0ygQdzh2ZuHqKHNqLnWUMhUtkkTWn2Dxh6ZEB6SnpJxQ\n-----END RSA PRIVATE KEY-----";

    fn block(text: &str) -> Option<(&str, bool)> {
        let s = text.find("-----BEGIN")?;
        block_at(text.as_bytes(), s, 0).map(|(sp, open)| (&text[sp.start..sp.end], open))
    }

    #[test]
    fn whole_blocks() {
        assert_eq!(block(&format!("key: {KEY}\nnext")), Some((KEY, false)));
        let escaped = KEY.replace('\n', "\\n");
        let json = format!("{{\"key\":\"{escaped}\\n\"}}");
        assert_eq!(block(&json), Some((escaped.as_str(), false)));
        let open = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
        assert_eq!(block(open), Some((open, true)));
        let cut = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI then: words";
        assert_eq!(
            block(cut),
            Some(("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI", false))
        );
        assert_eq!(block("-----BEGIN CERTIFICATE-----\nMIIB"), None);
        assert_eq!(block("-----BEGIN PUBLIC KEY-----\nMIIB"), None);
        assert_eq!(block("-----BEGIN private key-----"), None);
    }

    #[test]
    fn line_continuation() {
        assert_eq!(
            continues(b"MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8Pb"),
            Continues::Whole
        );
        assert_eq!(continues(b"  aFDr+/==  "), Continues::Whole);
        assert_eq!(continues(b"Proc-Type: 4,ENCRYPTED"), Continues::Whole);
        assert_eq!(continues(b""), Continues::Whole);
        assert_eq!(
            continues(b"-----END RSA PRIVATE KEY----- tail"),
            Continues::EndsAt(29)
        );
        assert_eq!(continues(b"2024-05-01 INFO started"), Continues::No);
        assert_eq!(continues(b"done: -----END X-----"), Continues::No);
    }

    #[test]
    fn window_swallow() {
        assert_eq!(swallow(b"xxAAAA", 2), (6, true));
        assert_eq!(
            swallow(b"AAAA\\n-----END RSA PRIVATE KEY-----\"}", 0),
            (35, false)
        );
        assert_eq!(swallow(b"AAAA\" next", 0), (4, false));
    }
}
