//! Digit-based rules: SSNs, payment cards, phone numbers and IPv4 addresses.
//!
//! One pass finds the maximal runs of digits in a line; each rule only looks at runs whose
//! length and neighbours can start its format, so timestamps, versions and ids are dismissed
//! after a couple of byte comparisons. Boundary checks are done here in code, since the `regex`
//! crate has no look-around.

use crate::chars::{DIGIT, at, before, is_word, run_end};
use crate::engine::Span;
use crate::luhn::{luhn_valid, plausible_card};

/// Rule indices of the enabled digit-based rules.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Numeric {
    pub ssn: Option<u32>,
    pub card: Option<u32>,
    pub phone: Option<u32>,
    pub ipv4: Option<u32>,
}

impl Numeric {
    pub(crate) fn any(&self) -> bool {
        self.ssn.is_some() || self.card.is_some() || self.phone.is_some() || self.ipv4.is_some()
    }

    /// Pushes spans for every enabled digit-based rule.
    ///
    /// Digit runs are found 64 bytes at a time from bit masks, and most are dismissed there in
    /// bulk: unless IPv4 addresses are wanted, by length (1-2 digits only after `+`/`(` or as
    /// the `1` of `1-800-…`; 5-12 only after `+`; see [`no_format_by_length`]) and by the bytes
    /// before them ([`glued_block`]). The few runs left are checked ([`Numeric::may_start`])
    /// and the rest of the work is a call made for those that pass.
    pub(crate) fn find(&self, line: &[u8], out: &mut Vec<Span>) {
        let len = line.len();
        let every_run = self.ipv4.is_some();
        let mut base = 0;
        // Whether the byte before this block is a digit, and whether it is `+` or `(`.
        let mut prev_digit = false;
        let mut prev_opening = false;
        while base < len {
            let digits = digit_block(line, base);
            if digits != 0 {
                let starts = digits & !((digits << 1) | u64::from(prev_digit));
                let mut candidates = if every_run {
                    starts
                } else {
                    let specials = special_block(line, base);
                    let after_opening = ((specials & !digits) << 1) | u64::from(prev_opening);
                    // Bits past the block are unknown: taken as digits for "3 or more", as
                    // non-digits for "a single 1", so that no run is dismissed wrongly.
                    let three = ((digits >> 1) | 1 << 63) & ((digits >> 2) | 3 << 62);
                    let single_one = specials & digits & !(digits >> 1);
                    starts
                        & (three | after_opening | single_one)
                        & !(no_format_by_length(digits) & !after_opening)
                };
                if candidates != 0 && base + 64 <= len {
                    candidates &= !glued_block(line, base, digits);
                }
                while candidates != 0 {
                    let s = base + candidates.trailing_zeros() as usize;
                    candidates &= candidates - 1;
                    let e = run_end_from(line, base, digits, s + 1);
                    if self.may_start(line, s, e) {
                        self.at_run(line, s, e, out);
                    }
                }
            }
            let last = base + 63;
            prev_digit = digits >> 63 == 1;
            prev_opening = last < len && matches!(line[last], b'+' | b'(');
            base += 64;
        }
    }

    /// Whether [`Numeric::at_run`] can find anything at the digit run `line[s..e]`: its own
    /// early returns and the length and next byte each format needs, tested here so that the
    /// many runs that start nothing (timestamp fields, digits inside hex ids, durations) cost
    /// no call. A test checks that `find` finds what calling `at_run` on every run finds.
    #[inline(always)]
    fn may_start(&self, line: &[u8], s: usize, e: usize) -> bool {
        let prev = before(line, s, 1);
        if prev == b'+' {
            return true;
        }
        if is_word(prev) || (matches!(prev, b'.' | b'-') && before(line, s, 2).is_ascii_digit()) {
            return false;
        }
        let next = at(line, e);
        match e - s {
            13..=19 => true,
            // A grouped card's second group has four digits or more (see `grouped_card`):
            // the year that starts most log lines (`2024-05-01T…`) is dismissed here,
            // without a call.
            4 => matches!(next, b' ' | b'-') && (1..5).all(|k| at(line, e + k).is_ascii_digit()),
            3 => prev == b'(' || matches!(next, b'-' | b'.'),
            1 if line[s] == b'1' && matches!(next, b'-' | b'.') => true,
            1 | 2 => self.ipv4.is_some() && next == b'.',
            _ => false,
        }
    }

    #[inline(never)]
    fn at_run(&self, line: &[u8], s: usize, e: usize, out: &mut Vec<Span>) {
        let len = e - s;
        let prev = before(line, s, 1);
        let prev2 = before(line, s, 2);
        if prev == b'+' {
            if let Some(rule) = self.phone
                && !is_word(prev2)
                && let Some(end) = international(line, s)
            {
                out.push(Span {
                    start: s - 1,
                    end,
                    rule,
                });
            }
            return;
        }
        if is_word(prev) {
            return;
        }
        // A run right after `digit.` or `digit-` continues a longer number (date, version,
        // decimal, dashed id): it cannot start a match of its own.
        if matches!(prev, b'.' | b'-') && prev2.is_ascii_digit() {
            return;
        }
        let next = at(line, e);

        if let Some(rule) = self.phone {
            let found = if prev == b'(' && len == 3 && !is_word(prev2) {
                nanp(line, s - 1).map(|end| (s - 1, end))
            } else if len == 3 && matches!(next, b'-' | b'.') {
                nanp(line, s).map(|end| (s, end))
            } else if len == 1 && line[s] == b'1' && matches!(next, b'-' | b'.') {
                nanp(line, s + 2).map(|end| (s, end))
            } else {
                None
            };
            if let Some((start, end)) = found {
                out.push(Span { start, end, rule });
            }
        }
        if let Some(rule) = self.ssn
            && len == 3
            && next == b'-'
            && let Some(end) = ssn(line, s)
        {
            out.push(Span {
                start: s,
                end,
                rule,
            });
        }
        if let Some(rule) = self.card {
            let found = if (13..=19).contains(&len) {
                (right_ok(line, e) && plausible_card(&line[s..e]) && luhn_valid(&line[s..e]))
                    .then_some(e)
            } else if len == 4 && matches!(next, b' ' | b'-') {
                // A space-separated group after another number is that number's tail.
                if next == b' ' && prev == b' ' && s >= 2 && number_ends_at(line, s - 1) {
                    None
                } else {
                    grouped_card(line, s, next)
                }
            } else {
                None
            };
            if let Some(end) = found {
                out.push(Span {
                    start: s,
                    end,
                    rule,
                });
            }
        }
        if let Some(rule) = self.ipv4
            && len <= 3
            && next == b'.'
            && let Some(end) = ipv4(line, s)
        {
            out.push(Span {
                start: s,
                end,
                rule,
            });
        }
    }
}

/// The digits among the 64 bytes of `line` from `base`, one bit each (0 past the end).
#[inline(always)]
fn digit_block(line: &[u8], base: usize) -> u64 {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    {
        crate::blocks::block_of(line, base, 16, |bytes, at| {
            crate::simd::digit_mask(&bytes[at..at + 16])
        })
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        crate::blocks::scalar_block(base, line.len(), |at| line[at].is_ascii_digit())
    }
}

/// Positions of a block (given its digit mask) where a run of digits starts whose length rules
/// out every format unless a `+` comes before it ([`Numeric::may_start`]; the caller spares the
/// runs after `+` or `(`, its mask having both): 5 to 12 digits, or exactly 4 (a year, a count)
/// without four more digits one byte after them (a grouped card's second group). Bits past the
/// block are unknown: a run that may go on there is never counted as ruled out.
#[inline(always)]
fn no_format_by_length(digits: u64) -> u64 {
    // `sure(x, j)`: `x` moved down by `j`, taking what is past the block as not set;
    // `maybe`: as set. Bit `i` of `sureK` (`maybeK`): positions `i..i + K` are (may be) digits.
    let sure = |x: u64, j: u32| x >> j;
    let maybe = |x: u64, j: u32| (x >> j) | !(!0u64 >> j);
    let sure4 = {
        let two = digits & sure(digits, 1);
        two & sure(two, 2)
    };
    let sure5 = sure4 & sure(digits, 4);
    let maybe2 = digits & maybe(digits, 1);
    let maybe4 = maybe2 & maybe(maybe2, 2);
    let maybe5 = maybe4 & maybe(digits, 4);
    let maybe8 = maybe4 & maybe(maybe4, 4);
    let maybe13 = maybe8 & maybe(maybe4, 8) & maybe(digits, 12);
    let exactly4_alone = sure4 & !maybe5 & !maybe(maybe4, 5);
    exactly4_alone | (sure5 & !maybe13)
}

/// Positions of the block at `base` (wholly inside `line`) where a digit run cannot start a
/// format, known from the bytes before it, as [`Numeric::may_start`] would find: right after
/// a letter or `_` (inside a word, like the digits of a hex id), or after a `.` or `-` that
/// follows a digit (the rest of a date, a version, a decimal). A letter after a backslash
/// is left out (an escape such as `\n` reads as a blank), and so are the block's first two
/// positions, whose bytes before lie in the block before: `may_start` decides those.
#[inline(always)]
fn glued_block(line: &[u8], base: usize, digits: u64) -> u64 {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    {
        let window = |k: usize| {
            let (w, d, b) = crate::simd::glue_masks(&line[base + 16 * k..]);
            (
                u64::from(w) << (16 * k),
                u64::from(d) << (16 * k),
                u64::from(b) << (16 * k),
            )
        };
        let (w0, d0, b0) = window(0);
        let (w1, d1, b1) = window(1);
        let (w2, d2, b2) = window(2);
        let (w3, d3, b3) = window(3);
        let word = (w0 | w1 | w2 | w3) & !(((b0 | b1 | b2 | b3) << 1) | 1);
        let dot_after_digit = (d0 | d1 | d2 | d3) & (digits << 1);
        (word | dot_after_digit) << 1
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (line, base, digits);
        0
    }
}

/// The bytes `+`, `(` and `1` among the 64 bytes of `line` from `base`, one bit each.
#[inline(always)]
fn special_block(line: &[u8], base: usize) -> u64 {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    {
        crate::blocks::block_of(line, base, 16, |bytes, at| {
            crate::simd::any_of3(&bytes[at..at + 16], [b'+', b'(', b'1'])
        })
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        crate::blocks::scalar_block(base, line.len(), |at| {
            matches!(line[at], b'+' | b'(' | b'1')
        })
    }
}

/// End of the digit run that goes on at `from`, given the digit mask of the block at `base`
/// (which holds `from - 1`): in that block when it ends there, else block by block.
#[inline(always)]
fn run_end_from(line: &[u8], base: usize, digits: u64, from: usize) -> usize {
    let rel = from - base;
    if rel < 64 {
        let rest = !digits & (!0u64 << rel);
        if rest != 0 {
            return (base + rest.trailing_zeros() as usize).min(line.len());
        }
    }
    let mut b = base + 64;
    while b < line.len() {
        let rest = !digit_block(line, b);
        if rest != 0 {
            return (b + rest.trailing_zeros() as usize).min(line.len());
        }
        b += 64;
    }
    line.len()
}

/// True when a standalone number (digits not glued to a word, like `12` but not `af8`) ends
/// right before `end`.
fn number_ends_at(line: &[u8], end: usize) -> bool {
    let mut i = end;
    while i > 0 && line[i - 1].is_ascii_digit() {
        i -= 1;
    }
    i < end && !is_word(before(line, i, 1))
}

/// A match may end at `end` when the next byte does not extend it into a longer token:
/// not a word character, and not `.`/`-` followed by another digit.
fn right_ok(line: &[u8], end: usize) -> bool {
    let next = at(line, end);
    let continues_number = matches!(next, b'.' | b'-') && at(line, end + 1).is_ascii_digit();
    !is_word(next) && !continues_number
}

/// Exactly `count` digits at `pos`, followed by a non-digit; returns their value.
fn digits_exact(line: &[u8], pos: usize, count: usize) -> Option<u32> {
    if pos + count > line.len() || at(line, pos + count).is_ascii_digit() {
        return None;
    }
    let mut v = 0u32;
    for &b in &line[pos..pos + count] {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// `ddd-dd-dddd` at `s` with valid area, group and serial numbers.
fn ssn(line: &[u8], s: usize) -> Option<usize> {
    let area = digits_exact(line, s, 3)?;
    if at(line, s + 3) != b'-' || at(line, s + 6) != b'-' {
        return None;
    }
    let group = digits_exact(line, s + 4, 2)?;
    let serial = digits_exact(line, s + 7, 4)?;
    let end = s + 11;
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    (valid && right_ok(line, end)).then_some(end)
}

/// Card numbers written in groups: `4-4-4-4` (last group 1-4 digits, 4-5 groups) or the
/// Amex/Diners `4-6-5` / `4-6-4` layouts, with one consistent separator.
fn grouped_card(line: &[u8], s: usize, sep: u8) -> Option<usize> {
    // Every layout has a second group of 4 or 6 digits: the many numbers shaped like a first
    // group (the year of a date, a time) are ruled out here.
    let second = run_end(line, s + 5, DIGIT) - (s + 5).min(line.len());
    if second != 4 && second != 6 {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut count = 0;
    let mut groups = [0usize; 5];
    let mut ngroups = 0;
    let mut pos = s;
    loop {
        let end = run_end(line, pos, DIGIT);
        let glen = end - pos;
        if ngroups == groups.len() || count + glen > digits.len() {
            return None;
        }
        digits[count..count + glen].copy_from_slice(&line[pos..end]);
        count += glen;
        groups[ngroups] = glen;
        ngroups += 1;
        if at(line, end) == sep && at(line, end + 1).is_ascii_digit() {
            pos = end + 1;
        } else {
            pos = end;
            break;
        }
    }
    let g = &groups[..ngroups];
    let layout_ok = match g {
        [4, 6, 5] | [4, 6, 4] => true,
        [first @ .., last] if ngroups >= 4 => {
            first.iter().all(|&x| x == 4) && (1..=4).contains(last)
        }
        _ => false,
    };
    let d = &digits[..count];
    (layout_ok && right_ok(line, pos) && plausible_card(d) && luhn_valid(d)).then_some(pos)
}

/// North American numbers from `p`: `(415) 555-2671`, `(415)555-2671`, `415-555-2671`,
/// `415.555.2671`, optionally after `1-`. Area code and exchange must start with 2-9.
fn nanp(line: &[u8], p: usize) -> Option<usize> {
    let (area_pos, mut q, sep) = if at(line, p) == b'(' {
        if at(line, p + 4) != b')' {
            return None;
        }
        let mut q = p + 5;
        if at(line, q) == b' ' {
            q += 1;
        }
        (p + 1, q, None)
    } else {
        // Space-only layouts (`415 555 2671`) are left out: too many log lines carry three
        // space-separated numbers (status, size, latency).
        let sep = at(line, p + 3);
        if !matches!(sep, b'-' | b'.') {
            return None;
        }
        (p, p + 4, Some(sep))
    };
    let area = digits_exact(line, area_pos, 3)?;
    let exchange = digits_exact(line, q, 3)?;
    let sep2 = at(line, q + 3);
    match sep {
        Some(s) if s != sep2 => return None,
        None if !matches!(sep2, b'-' | b'.' | b' ') => return None,
        _ => {}
    }
    q += 4;
    digits_exact(line, q, 4)?;
    let end = q + 4;
    let valid = area >= 200 && exchange >= 200;
    (valid && right_ok(line, end)).then_some(end)
}

/// International numbers after a `+` (the `+` is at `s - 1`): E.164 `+14155552671`, or a
/// country code followed by groups separated by single spaces, dashes or dots, optionally with
/// a parenthesised area code: `+44 20 7946 0958`, `+1 (415) 555-2671`. 8-15 digits in all.
fn international(line: &[u8], s: usize) -> Option<usize> {
    let mut pos = s;
    let mut digits = 0;
    let mut groups = 0;
    let mut first_len = 0;
    let mut short_groups = 0;
    let mut best = None;
    loop {
        let paren = groups > 0 && at(line, pos) == b'(';
        let dstart = pos + usize::from(paren);
        let dend = run_end(line, dstart, DIGIT);
        let glen = dend - dstart;
        if glen == 0 || glen > 12 {
            break;
        }
        let mut gend = dend;
        if paren {
            if at(line, dend) != b')' {
                break;
            }
            gend += 1;
        }
        digits += glen;
        groups += 1;
        if groups == 1 {
            first_len = glen;
        } else if glen == 1 {
            short_groups += 1;
        }
        if digits > 15 || short_groups > 1 {
            break;
        }
        if digits >= 8 && (groups == 1 || first_len <= 3) && !is_word(at(line, gend)) {
            best = Some(gend);
        }
        let mut q = gend;
        if matches!(at(line, q), b' ' | b'-' | b'.') {
            q += 1;
        } else if !paren {
            break;
        }
        let nb = at(line, q);
        if nb.is_ascii_digit() || nb == b'(' {
            pos = q;
        } else {
            break;
        }
    }
    let end = best?;
    (!(at(line, end) == b'.' && at(line, end + 1).is_ascii_digit())).then_some(end)
}

/// Dotted-quad IPv4 address at `s`, octets 0-255 without leading zeros.
fn ipv4(line: &[u8], s: usize) -> Option<usize> {
    let mut pos = s;
    for k in 0..4 {
        let end = run_end(line, pos, DIGIT);
        let len = end - pos;
        if len == 0 || len > 3 || (len > 1 && line[pos] == b'0') {
            return None;
        }
        let v = line[pos..end]
            .iter()
            .fold(0u32, |a, &b| a * 10 + u32::from(b - b'0'));
        if v > 255 {
            return None;
        }
        pos = end;
        if k < 3 {
            if at(line, pos) != b'.' {
                return None;
            }
            pos += 1;
        }
    }
    right_ok(line, pos).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Numeric = Numeric {
        ssn: Some(0),
        card: Some(1),
        phone: Some(2),
        ipv4: Some(3),
    };
    const NAMES: [&str; 4] = ["ssn", "card", "phone", "ipv4"];

    fn found(s: &str) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        ALL.find(s.as_bytes(), &mut out);
        // Drop spans nested in an earlier one (the engine's overlap pass does the same).
        let mut kept: Vec<Span> = Vec::new();
        for sp in out {
            if !kept.iter().any(|k| k.start <= sp.start && sp.end <= k.end) {
                kept.push(sp);
            }
        }
        kept.iter()
            .map(|sp| (NAMES[sp.rule as usize], &s[sp.start..sp.end]))
            .collect()
    }

    /// Every digit run, one by one, each given to `at_run`: what `find` does without its
    /// bulk dismissal and without `may_start`.
    fn find_visiting_every_run(n: &Numeric, line: &[u8]) -> Vec<Span> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < line.len() {
            if !line[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let e = run_end(line, i, DIGIT);
            n.at_run(line, i, e, &mut out);
            i = e;
        }
        out
    }

    #[test]
    fn bulk_dismissal_keeps_every_match() {
        let default = Numeric { ipv4: None, ..ALL };
        let parts: &[&str] = &[
            "1",
            "12",
            "415",
            "4111",
            "555",
            "2671",
            "078",
            "05",
            "1120",
            "6789",
            "+",
            "(",
            ")",
            " ",
            "-",
            ".",
            "a",
            "x",
            "1111111111111111",
            "4111111111111111",
            "4222222222222",
            "30569309025904",
            "378282246310005",
            "192.168.0.1",
            "+1 ",
            "1-800-555-0199",
            "(415) 555-2671",
            "\\n",
            "\\",
            "n",
            ":",
            "5555-5555-5555-4444",
            "2024-05-01T12:00:00.123Z",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            let mut line = String::new();
            let n = 1 + state % 60;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                line.push_str(parts[(state % parts.len() as u64) as usize]);
            }
            for n in [&default, &ALL] {
                let mut got = Vec::new();
                n.find(line.as_bytes(), &mut got);
                assert_eq!(got, find_visiting_every_run(n, line.as_bytes()), "{line}");
            }
        }
    }

    #[test]
    fn digit_blocks_match_a_byte_by_byte_scan() {
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 100, 128, 200, 300] {
            let text: Vec<u8> = (0..len)
                .map(|i| {
                    if (i * 7 + i / 5) % 3 == 0 {
                        b'0' + (i % 10) as u8
                    } else {
                        b'a' + (i % 26) as u8
                    }
                })
                .collect();
            for base in (0..len.max(1)).step_by(64) {
                let want = crate::blocks::scalar_block(base, len, |i| text[i].is_ascii_digit());
                assert_eq!(digit_block(&text, base), want, "len {len} base {base}");
            }
        }
    }

    #[test]
    fn ssn_forms() {
        assert_eq!(found("ssn 123-45-6789."), [("ssn", "123-45-6789")]);
        assert_eq!(found("id=078-05-1120,"), [("ssn", "078-05-1120")]);
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "1123-45-6789",
            "123-45-67890",
            "x123-45-6789",
            "1-123-45-6789",
            "123-45-6789-1",
            "123-45-6789.5",
        ] {
            assert!(found(bad).is_empty(), "{bad}: {:?}", found(bad));
        }
    }

    #[test]
    fn card_forms() {
        assert_eq!(
            found("cc 4111111111111111 ok"),
            [("card", "4111111111111111")]
        );
        assert_eq!(
            found("cc 4111 1111 1111 1111 ok"),
            [("card", "4111 1111 1111 1111")]
        );
        assert_eq!(
            found("cc 5555-5555-5555-4444"),
            [("card", "5555-5555-5555-4444")]
        );
        assert_eq!(
            found("amex 3782 822463 10005"),
            [("card", "3782 822463 10005")]
        );
        assert_eq!(
            found("t=12:00 4111111111111111"),
            [("card", "4111111111111111")]
        );
        assert_eq!(
            found("sha af8 4111 1111 1111 1111"),
            [("card", "4111 1111 1111 1111")]
        );
        for bad in [
            "4111111111111112",
            "41111111111111111111",
            "order 1234567812345678",
            "ts 1714566896789",
            "isbn 9780306406157",
            "4111-1111 1111-1111",
            "x4111111111111111",
            "0.4111111111111111",
            "4111111111111111.5",
            "7 4111 1111 1111 1111",
            "12 4111 1111 1111 1111",
            "4111 1111 1111 1111 1111 1",
        ] {
            assert!(found(bad).is_empty(), "{bad}: {:?}", found(bad));
        }
    }

    #[test]
    fn phone_forms() {
        for (text, want) in [
            ("call +14155552671 now", "+14155552671"),
            ("(415) 555-2671", "(415) 555-2671"),
            ("tel:(415)555-2671", "(415)555-2671"),
            ("415-555-2671", "415-555-2671"),
            ("415.555.2671", "415.555.2671"),
            ("+44 20 7946 0958", "+44 20 7946 0958"),
            ("+1 (415) 555-2671", "+1 (415) 555-2671"),
            ("+1-415-555-2671", "+1-415-555-2671"),
            ("1-800-555-0199", "1-800-555-0199"),
            ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
        ] {
            assert_eq!(found(text), [("phone", want)], "{text}");
        }
        for bad in [
            "+05:30",
            "+1234",
            "123-456-7890",
            "415-155-2671",
            "415-555-26710",
            "415-555.2671",
            "v415.555.2671",
            "2024-05-01",
            "c++14",
            "+12.50",
            "+1 2 3 4 5 6 7 8",
            "GET /x 200 512 1234 ms",
        ] {
            assert!(found(bad).is_empty(), "{bad}: {:?}", found(bad));
        }
    }

    #[test]
    fn ipv4_forms() {
        assert_eq!(found("from 10.0.0.1:8080"), [("ipv4", "10.0.0.1")]);
        assert_eq!(found("ip=192.168.1.254."), [("ipv4", "192.168.1.254")]);
        for bad in [
            "1.2.3",
            "v1.2.3.4",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "10.4.1-rc2",
        ] {
            assert!(found(bad).is_empty(), "{bad}: {:?}", found(bad));
        }
    }
}
