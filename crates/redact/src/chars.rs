//! Byte classes used by the hand-written scanners.
//!
//! One 256-entry table answers "is this byte a word character / hex digit / email character ..."
//! with a single load, which keeps the per-byte loops of the scanners branch-light on every target.

pub(crate) const DIGIT: u8 = 1;
/// `[A-Za-z0-9_]`: a byte that makes a neighbouring match part of a longer word.
pub(crate) const WORD: u8 = 2;
pub(crate) const HEX: u8 = 4;
/// Email local part: `[A-Za-z0-9._%+-]`.
pub(crate) const LOCAL: u8 = 8;
/// Email domain: `[A-Za-z0-9.-]`.
pub(crate) const DOMAIN: u8 = 16;
/// Bearer-token characters: `[A-Za-z0-9._~+/-]`.
pub(crate) const TOKEN: u8 = 32;
/// Identifier and base64url characters: `[A-Za-z0-9_-]`.
pub(crate) const IDENT: u8 = 64;
/// `[A-Za-z0-9]`.
pub(crate) const ALNUM: u8 = 128;

static CLASS: [u8; 256] = build();

const fn build() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u8;
        let digit = b.is_ascii_digit();
        let alpha = b.is_ascii_alphabetic();
        if digit {
            c |= DIGIT;
        }
        if digit || alpha {
            c |= WORD | LOCAL | DOMAIN | TOKEN | IDENT | ALNUM;
        }
        if b.is_ascii_hexdigit() {
            c |= HEX;
        }
        match b {
            b'_' => c |= WORD | IDENT | LOCAL,
            b'-' => c |= LOCAL | DOMAIN | TOKEN | IDENT,
            b'.' => c |= LOCAL | DOMAIN | TOKEN,
            b'%' | b'+' => c |= LOCAL,
            b'~' | b'/' => c |= TOKEN,
            _ => {}
        }
        if b == b'+' {
            c |= TOKEN;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// True when `b` belongs to any of the classes in `mask`.
#[inline(always)]
pub(crate) fn is(b: u8, mask: u8) -> bool {
    CLASS[b as usize] & mask != 0
}

/// True when `b` is `[A-Za-z0-9_]`.
#[inline(always)]
pub(crate) fn is_word(b: u8) -> bool {
    is(b, WORD)
}

/// The byte at `i`, or a space when `i` is outside the line (a line edge acts as a boundary).
#[inline(always)]
pub(crate) fn at(line: &[u8], i: usize) -> u8 {
    line.get(i).copied().unwrap_or(b' ')
}

/// The byte before `i`, or a space at the start of the line. The letter of an escape sequence
/// (`\n`, `\t`, `\r`, `\b`, `\f` in embedded JSON or a quoted string) right before `i`
/// also reads as a space: it stands for a blank, not a word character.
#[inline(always)]
pub(crate) fn before(line: &[u8], i: usize, back: usize) -> u8 {
    if i < back {
        return b' ';
    }
    let b = line[i - back];
    if back == 1 && matches!(b, b'n' | b't' | b'r' | b'b' | b'f') && escaped_at(line, i - 1) {
        return b' ';
    }
    b
}

/// True when the byte at `i` follows an unescaped backslash (an odd run of them).
#[inline]
pub(crate) fn escaped_at(line: &[u8], i: usize) -> bool {
    let mut k = i;
    while k > 0 && line[k - 1] == b'\\' {
        k -= 1;
    }
    (i - k) % 2 == 1
}

/// End of the run of bytes of class `mask` starting at `i`.
#[inline(always)]
pub(crate) fn run_end(line: &[u8], mut i: usize, mask: u8) -> usize {
    while i < line.len() && is(line[i], mask) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is(b'7', DIGIT | HEX | WORD));
        assert!(!is(b'a', DIGIT));
        assert!(is(b'f', HEX) && !is(b'g', HEX));
        assert!(is_word(b'_') && !is_word(b'-'));
        assert!(is(b'+', LOCAL) && !is(b'+', DOMAIN) && is(b'+', TOKEN));
        assert!(is(b'-', IDENT) && !is(b'.', IDENT));
        assert!(!is(0xC3, WORD | LOCAL | TOKEN));
        assert_eq!(run_end(b"abc12-x", 3, DIGIT), 5);
        assert_eq!(before(b"ab", 0, 1), b' ');
        assert_eq!(before(br"a\n4", 3, 1), b' ');
        assert_eq!(before(br"a\\n4", 4, 1), b'n');
        assert_eq!(before(b"an4", 2, 1), b'n');
        assert_eq!(at(b"ab", 5), b' ');
    }
}
