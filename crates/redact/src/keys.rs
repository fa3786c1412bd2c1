//! The `api_key` rule (credentials recognised by a keyword, a vendor prefix, a URL's user
//! information or an HTTP `Basic` header) and the trigger of the `private_key` rule.
//!
//! Trigger words are found with a byte-pair filter: every position's two case-folded bytes are
//! looked up in an 8 KiB bitset of the triggers' first two bytes, and only the ~1-2% of
//! positions that hit are compared against the triggers. Unlike a DFA walk, the lookups do not
//! depend on each other, so the loop runs at memory-level parallelism on any target (including
//! `wasm32` without SIMD). A small hand-written check at each trigger then decides whether a
//! credential really follows.

use crate::chars::{ALNUM, DIGIT, IDENT, TOKEN, at, before, is, is_word, run_end};
use crate::engine::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Bearer,
    Sk,
    Aws,
    Github,
    GithubPat,
    Jwt,
    KeyValue,
    Slack,
    UrlCredentials,
    Basic,
    PrivateKey,
}

/// Trigger words, matched ASCII-case-insensitively (handlers check case where it matters).
const TRIGGERS: &[(&str, Trigger)] = &[
    ("bearer", Trigger::Bearer),
    ("sk-", Trigger::Sk),
    ("sk_live_", Trigger::Sk),
    ("sk_test_", Trigger::Sk),
    ("akia", Trigger::Aws),
    ("asia", Trigger::Aws),
    ("ghp_", Trigger::Github),
    ("gho_", Trigger::Github),
    ("ghu_", Trigger::Github),
    ("ghs_", Trigger::Github),
    ("ghr_", Trigger::Github),
    ("github_pat_", Trigger::GithubPat),
    ("eyj", Trigger::Jwt),
    ("token", Trigger::KeyValue),
    ("secret", Trigger::KeyValue),
    ("passw", Trigger::KeyValue),
    ("api_key", Trigger::KeyValue),
    ("apikey", Trigger::KeyValue),
    ("api-key", Trigger::KeyValue),
    ("access_key", Trigger::KeyValue),
    ("accesskey", Trigger::KeyValue),
    ("access-key", Trigger::KeyValue),
    ("private_key", Trigger::KeyValue),
    ("privatekey", Trigger::KeyValue),
    ("private-key", Trigger::KeyValue),
    ("xox", Trigger::Slack),
    ("://", Trigger::UrlCredentials),
    ("basic", Trigger::Basic),
    ("-----begin ", Trigger::PrivateKey),
];

/// The distinct folded first pairs of the triggers, computed from `TRIGGERS` at compile time
/// (at most 32), and how many there are.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn first_pairs() -> ([(u8, u8); 32], usize) {
    let mut out = [(0u8, 0u8); 32];
    let mut n = 0;
    let mut t = 0;
    while t < TRIGGERS.len() {
        let w = TRIGGERS[t].0.as_bytes();
        let pair = (w[0] | 0x20, w[1] | 0x20);
        let mut seen = false;
        let mut j = 0;
        while j < n {
            if out[j].0 == pair.0 && out[j].1 == pair.1 {
                seen = true;
            }
            j += 1;
        }
        if !seen {
            out[n] = pair;
            n += 1;
        }
        t += 1;
    }
    (out, n)
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const FIRST_PAIR_COUNT: usize = first_pairs().1;

/// The folded byte pairs a trigger can start with, for the native vector scan in
/// [`Keys::pair_block`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const FIRST_PAIRS: [(u8, u8); FIRST_PAIR_COUNT] = {
    let all = first_pairs().0;
    let mut out = [(0u8, 0u8); FIRST_PAIR_COUNT];
    let mut i = 0;
    while i < FIRST_PAIR_COUNT {
        out[i] = all[i];
        i += 1;
    }
    out
};

/// The bucket of a trigger's folded first byte in the nibble tables: one per first byte,
/// except that `t` and `x` (both followed by `o`) and the punctuation of `://` and `-----`
/// share one, so that eight buckets hold every trigger with few false candidates.
const fn bucket_of(first: u8) -> u8 {
    match first {
        b'b' => 0,
        b's' => 1,
        b'a' => 2,
        b'g' => 3,
        b'e' => 4,
        b't' | b'x' => 5,
        b'p' => 6,
        _ => 7,
    }
}

/// Nibble tables of the triggers' first three (folded) bytes: for the low and high nibble of
/// the first, second and third byte, the buckets holding a trigger with that nibble there. A
/// position whose six lookups share a bucket is a candidate; every trigger start is one, and
/// the few others are dismissed by the trigger comparison.
#[cfg_attr(
    not(all(target_arch = "wasm32", target_feature = "simd128")),
    allow(dead_code)
)]
pub(crate) const NIBBLES: [[u8; 16]; 6] = {
    let mut t = [[0u8; 16]; 6];
    let mut i = 0;
    while i < TRIGGERS.len() {
        let w = TRIGGERS[i].0.as_bytes();
        let bit = 1u8 << bucket_of(w[0] | 0x20);
        let mut k = 0;
        while k < 3 {
            let b = w[k] | 0x20;
            t[2 * k][(b & 0x0F) as usize] |= bit;
            t[2 * k + 1][(b >> 4) as usize] |= bit;
            k += 1;
        }
        i += 1;
    }
    t
};

/// The nibble-table test of one position's three folded bytes, as the vector code does it 16
/// at a time.
#[cfg(test)]
fn nibble_candidate(bytes: [u8; 3]) -> bool {
    let mut all = 0xFF;
    for (k, b) in bytes.into_iter().enumerate() {
        all &= NIBBLES[2 * k][usize::from(b & 0x0F)] & NIBBLES[2 * k + 1][usize::from(b >> 4)];
    }
    all != 0
}

/// Key names whose values are credentials. A key matches when it is one of these or ends with
/// one after `_`, `-`, `.` or a camelCase hump (`access_token`, `X-Api-Key`, `clientSecret`).
const SENSITIVE_SUFFIXES: &[&[u8]] = &[
    b"token",
    b"secret",
    b"password",
    b"passwd",
    b"api_key",
    b"apikey",
    b"api-key",
    b"access_key",
    b"accesskey",
    b"access-key",
    b"secret_key",
    b"secretkey",
    b"secret-key",
    b"private_key",
    b"privatekey",
    b"private-key",
];

const MIN_SK_BODY: usize = 20;
/// A digit-free `sk-` key needs one mixed-case segment at least this long (kebab-case words
/// are short and lower-case; random key material is neither).
const MIN_SK_MIXED_SEGMENT: usize = 16;
const MIN_SLACK_BODY: usize = 10;
const MIN_BEARER: usize = 8;
const MIN_GITHUB_BODY: usize = 30;
const MIN_GITHUB_PAT_BODY: usize = 22;
const AWS_BODY: usize = 16;

/// Two bytes folded the way the filter folds them: `| 0x20` lower-cases ASCII letters, and a
/// true case-insensitive match always folds to the same value, so the filter has no false
/// negatives.
#[inline(always)]
fn fold_pair(a: u8, b: u8) -> u16 {
    u16::from_le_bytes([a, b]) | 0x2020
}

/// Trigger finder plus the rule indices to report.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    /// One bit per folded byte pair that starts a trigger (the scan where the target has no
    /// 128-bit vectors, and the tests' reference).
    #[cfg_attr(
        any(
            target_arch = "x86_64",
            all(target_arch = "wasm32", target_feature = "simd128")
        ),
        allow(dead_code)
    )]
    pairs: Box<[u64; 1024]>,
    /// Folded first pair of each trigger, parallel to `TRIGGERS`.
    firsts: Vec<u16>,
    /// Trigger indices grouped by folded first byte, in `TRIGGERS` order within a group.
    order: Vec<u8>,
    /// For each folded first byte, its group in `order` (start, end).
    by_first: Box<[(u8, u8); 256]>,
    /// The `api_key` rule, when enabled.
    rule: Option<u32>,
    /// The `private_key` rule, when enabled.
    pem: Option<u32>,
}

impl Keys {
    pub(crate) fn new(rule: Option<u32>, pem: Option<u32>) -> Keys {
        let mut pairs = Box::new([0u64; 1024]);
        let mut firsts = Vec::with_capacity(TRIGGERS.len());
        for (word, _) in TRIGGERS {
            let b = word.as_bytes();
            let k = fold_pair(b[0], b[1]);
            pairs[usize::from(k >> 6)] |= 1 << (k & 63);
            firsts.push(k);
        }
        let mut order: Vec<u8> = (0..TRIGGERS.len() as u8).collect();
        order.sort_by_key(|&t| firsts[usize::from(t)] & 0xFF);
        let mut by_first = Box::new([(0u8, 0u8); 256]);
        for (pos, &t) in order.iter().enumerate() {
            let slot = &mut by_first[usize::from(firsts[usize::from(t)] & 0xFF)];
            if slot.0 == slot.1 {
                *slot = (pos as u8, pos as u8);
            }
            slot.1 = pos as u8 + 1;
        }
        Keys {
            pairs,
            firsts,
            order,
            by_first,
            rule,
            pem,
        }
    }

    /// The trigger starting at `i` whose folded first pair is `k`, if any. Only the triggers
    /// sharing its first byte are compared (at most eight), not the whole list.
    fn trigger_at(&self, line: &[u8], i: usize, k: u16) -> Option<(usize, Trigger)> {
        let rest = &line[i..];
        let (start, end) = self.by_first[usize::from(k & 0xFF)];
        for &t in &self.order[usize::from(start)..usize::from(end)] {
            let t = usize::from(t);
            let (word, trigger) = TRIGGERS[t];
            if self.firsts[t] == k
                && rest.len() >= word.len()
                && rest[..word.len()].eq_ignore_ascii_case(word.as_bytes())
            {
                return Some((i + word.len(), trigger));
            }
        }
        None
    }

    /// Whether the folded pair `k` starts a trigger.
    #[cfg_attr(
        any(
            target_arch = "x86_64",
            all(target_arch = "wasm32", target_feature = "simd128")
        ),
        allow(dead_code)
    )]
    #[inline(always)]
    fn hit(&self, k: u16) -> bool {
        self.pairs[usize::from(k >> 6)] & (1 << (k & 63)) != 0
    }

    /// The positions among the 64 of `line` from `base` that may start a trigger, one bit
    /// each. Sixteen positions per step are tested in vector registers where the target has
    /// them: natively (x86_64, whose baseline SSE2 has no byte shuffle) by comparing the byte
    /// pair with every trigger's first pair, which is exact for pairs; in a wasm32 guest with
    /// `simd128` by six nibble-table lookups (`i8x16.swizzle`) over the first three bytes,
    /// whatever the number of triggers, which lets through a few other positions that the
    /// trigger comparison then dismisses.
    #[inline(always)]
    fn pair_block(&self, line: &[u8], base: usize) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            crate::blocks::block_of(line, base, 17, |bytes, at| {
                crate::simd::pair_mask(&bytes[at..at + 17], &FIRST_PAIRS)
            })
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            crate::blocks::block_of(line, base, 18, |bytes, at| {
                crate::simd::nibble_triple_mask(&bytes[at..at + 18], &NIBBLES)
            })
        }
        #[cfg(not(any(
            target_arch = "x86_64",
            all(target_arch = "wasm32", target_feature = "simd128")
        )))]
        {
            crate::blocks::scalar_block(base, line.len().saturating_sub(1), |at| {
                self.hit(fold_pair(line[at], line[at + 1]))
            })
        }
    }

    /// Pushes a span for every credential and private-key block in `line`; true when the
    /// last block is still open at the end of the line.
    pub(crate) fn find(&self, line: &[u8], out: &mut Vec<Span>) -> bool {
        let mut open = false;
        // Where the scan goes on: a hit's check may move it past the hit (over a value).
        let mut i = 0;
        let mut base = 0;
        // One mask per block, its hits taken in order. A loop of its own: a block function
        // passed as a closure was left out of line by LLVM once it held the last block's
        // steps (a call per block, costly in a `wasm32` guest).
        while base < line.len() {
            let mut hits = self.pair_block(line, base);
            loop {
                if i > base {
                    hits &= (!0u64).checked_shl((i - base) as u32).unwrap_or(0);
                }
                if hits == 0 {
                    break;
                }
                i = self.at_hit(line, base + hits.trailing_zeros() as usize, out, &mut open);
            }
            base = (base + 64).max(i & !63);
        }
        open
    }

    /// Decides the trigger pair at `i`: pushes a span when a credential or private key starts
    /// there, and returns where the scan goes on. Kept out of the scan loop, which then stays
    /// small (in a `wasm32` guest, small enough for its values to stay in registers).
    #[inline(never)]
    fn at_hit(&self, line: &[u8], i: usize, out: &mut Vec<Span>, open: &mut bool) -> usize {
        let k = fold_pair(line[i], line[i + 1]);
        let Some((he, trigger)) = self.trigger_at(line, i, k) else {
            return i + 1;
        };
        if trigger == Trigger::PrivateKey {
            if let Some(rule) = self.pem
                && let Some((span, still_open)) = crate::pem::block_at(line, i, rule)
            {
                out.push(span);
                *open = still_open;
                return span.end.max(i + 1);
            }
            return i + 1;
        }
        let Some(rule) = self.rule else {
            return i + 1;
        };
        let found = match trigger {
            Trigger::Bearer => bearer(line, i, he),
            Trigger::Sk => sk_key(line, i, he),
            Trigger::Aws => aws(line, i),
            Trigger::Github => github(line, i, he, MIN_GITHUB_BODY, ALNUM),
            Trigger::GithubPat => github(line, i, he, MIN_GITHUB_PAT_BODY, IDENT),
            Trigger::Jwt => jwt(line, i),
            Trigger::KeyValue => key_value(line, i, he),
            Trigger::Slack => slack(line, i, he),
            Trigger::UrlCredentials => url_password(line, i, he),
            Trigger::Basic => basic(line, i, he),
            Trigger::PrivateKey => None,
        };
        match found {
            Some((start, end)) => {
                out.push(Span { start, end, rule });
                end.max(i + 1)
            }
            None => i + 1,
        }
    }
}

/// True when a key (query parameter, header, JSON or YAML key) names a credential.
pub(crate) fn sensitive_key(key: &[u8]) -> bool {
    suffix_key(key, SENSITIVE_SUFFIXES)
}

/// True when `key` is one of `names` or ends with one after `_`, `-`, `.` or a camelCase
/// hump, ignoring ASCII case (`access_token`, `X-Api-Key`, `clientSecret`). `names` are
/// lower-case: most differ from the key in their last byte, which is compared first.
pub(crate) fn suffix_key(key: &[u8], names: &[&[u8]]) -> bool {
    let Some(last) = key.last().map(u8::to_ascii_lowercase) else {
        return false;
    };
    names.iter().any(|suffix| {
        if suffix.last() != Some(&last) {
            return false;
        }
        let Some(cut) = key.len().checked_sub(suffix.len()) else {
            return false;
        };
        if !key[cut..].eq_ignore_ascii_case(suffix) {
            return false;
        }
        cut == 0
            || matches!(key[cut - 1], b'_' | b'-' | b'.')
            || (key[cut].is_ascii_uppercase()
                && (key[cut - 1].is_ascii_lowercase() || key[cut - 1].is_ascii_digit()))
    })
}

/// True when a value next to a sensitive key is a real value rather than a placeholder
/// (`null`, `***`, an earlier redaction marker).
pub(crate) fn is_secret_value(v: &[u8]) -> bool {
    if v.is_empty() || v.iter().all(|&b| b == b'*') {
        return false;
    }
    if v.first() == Some(&b'[') && v.last() == Some(&b']') && v.ends_with(b"REDACTED]") {
        return false;
    }
    !["null", "none", "true", "false", "nil", "undefined"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w.as_bytes()))
}

/// `Bearer <token>`: the token only, so the scheme word stays readable.
fn bearer(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    if is_word(before(line, hs, 1)) {
        return None;
    }
    let mut t = he;
    while t < line.len() && matches!(line[t], b' ' | b'\t') {
        t += 1;
    }
    if t == he {
        return None;
    }
    let body_end = run_end(line, t, TOKEN);
    let body = &line[t..body_end];
    let mut end = body_end;
    while at(line, end) == b'=' {
        end += 1;
    }
    let has_digit = body.iter().any(u8::is_ascii_digit);
    let mixed_case =
        body.iter().any(u8::is_ascii_uppercase) && body.iter().any(u8::is_ascii_lowercase);
    let plausible = body.len() >= MIN_BEARER && (has_digit || (body.len() >= 16 && mixed_case));
    (plausible && !is_word(at(line, end))).then_some((t, end))
}

/// `sk-...`, `sk-live-...`, `sk-proj-...`, `sk_live_...`: at least 20 key characters after
/// `sk-`, including a digit or a long mixed-case segment (so `sk-` in prose or kebab-case
/// names does not match).
fn sk_key(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    let prev = before(line, hs, 1);
    if is_word(prev) || prev == b'-' || !line[hs..hs + 2].eq_ignore_ascii_case(b"sk") {
        return None;
    }
    if line[hs..he].iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let body_start = hs + 3;
    let end = run_end(line, body_start, IDENT);
    let body = &line[body_start..end];
    let random = body.iter().any(|&b| is(b, DIGIT))
        || body.split(|&b| b == b'-' || b == b'_').any(|seg| {
            seg.len() >= MIN_SK_MIXED_SEGMENT
                && seg.iter().any(u8::is_ascii_uppercase)
                && seg.iter().any(u8::is_ascii_lowercase)
        });
    (body.len() >= MIN_SK_BODY && random).then_some((hs, end))
}

/// Slack tokens: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxo-`, `xoxe-` and 10+ more
/// of `[A-Za-z0-9-]`, including a digit.
fn slack(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    if &line[hs..he] != b"xox"
        || is(before(line, hs, 1), ALNUM)
        || !matches!(at(line, he), b'a' | b'b' | b'e' | b'o' | b'p' | b'r' | b's')
        || at(line, he + 1) != b'-'
    {
        return None;
    }
    let body = he + 2;
    let end = run_end(line, body, IDENT);
    let ok = end - body >= MIN_SLACK_BODY
        && line[body..end].iter().any(u8::is_ascii_digit)
        && !is_word(at(line, end));
    ok.then_some((hs, end))
}

/// The password of a URL's user information, `scheme://user:password@host`: the password only,
/// so the scheme, user and host stay readable. The last `@` before the host ends it, so a
/// password holding a raw `@` is covered whole.
fn url_password(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    let mut ss = hs;
    while ss > 0
        && (line[ss - 1].is_ascii_alphanumeric() || matches!(line[ss - 1], b'+' | b'.' | b'-'))
    {
        ss -= 1;
    }
    if ss == hs || !line[ss].is_ascii_alphabetic() {
        return None;
    }
    let auth_end = line[he..]
        .iter()
        .position(|&b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(
                    b,
                    b'/' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`' | b'?' | b'#'
                )
        })
        .map_or(line.len(), |p| he + p);
    let auth = &line[he..auth_end];
    let last_at = memchr::memrchr(b'@', auth)? + he;
    let colon = memchr::memchr(b':', &line[he..last_at])? + he;
    let password = &line[colon + 1..last_at];
    (is_secret_value(password) && last_at + 1 < auth_end).then_some((colon + 1, last_at))
}

/// HTTP `Basic` credentials: the base64 token after the scheme word, when it decodes to
/// printable `user:password`.
fn basic(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    use base64::Engine as _;
    const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    if is_word(before(line, hs, 1)) {
        return None;
    }
    let t = skip_blanks(line, he);
    if t == he {
        return None;
    }
    let mut end = t;
    while end < line.len()
        && (line[end].is_ascii_alphanumeric() || matches!(line[end], b'+' | b'/'))
    {
        end += 1;
    }
    while at(line, end) == b'=' {
        end += 1;
    }
    if end - t < 4 || is_word(at(line, end)) {
        return None;
    }
    let decoded = B64.decode(&line[t..end]).ok()?;
    let printable = decoded.iter().all(|&b| b >= 0x20 && b != 0x7F);
    (printable && decoded.contains(&b':')).then_some((t, end))
}

/// AWS access key ids: `AKIA` or `ASIA` and exactly 16 upper-case letters or digits.
fn aws(line: &[u8], hs: usize) -> Option<(usize, usize)> {
    let prefix = &line[hs..hs + 4];
    if prefix != b"AKIA" && prefix != b"ASIA" || is(before(line, hs, 1), ALNUM) {
        return None;
    }
    let body_end = hs + 4 + AWS_BODY;
    if body_end > line.len()
        || !line[hs + 4..body_end]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        || is(at(line, body_end), ALNUM)
    {
        return None;
    }
    Some((hs, body_end))
}

/// GitHub tokens: `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 30+ alphanumerics, or `github_pat_` +
/// 22+ of `[A-Za-z0-9_]`.
fn github(line: &[u8], hs: usize, he: usize, min: usize, class: u8) -> Option<(usize, usize)> {
    if line[hs..he].iter().any(u8::is_ascii_uppercase) || is(before(line, hs, 1), ALNUM) {
        return None;
    }
    let end = run_end(line, he, class);
    (end - he >= min && !is_word(at(line, end))).then_some((hs, end))
}

/// JSON Web Tokens: three base64url segments, the first starting `eyJ` (a JSON object).
fn jwt(line: &[u8], hs: usize) -> Option<(usize, usize)> {
    if &line[hs..hs + 3] != b"eyJ" || is_word(before(line, hs, 1)) {
        return None;
    }
    let e1 = run_end(line, hs, IDENT);
    if e1 - hs < 10 || at(line, e1) != b'.' {
        return None;
    }
    let e2 = run_end(line, e1 + 1, IDENT);
    if e2 - (e1 + 1) < 2 || at(line, e2) != b'.' {
        return None;
    }
    let e3 = run_end(line, e2 + 1, IDENT);
    Some((hs, e3))
}

/// `key=value`, `key: value`, `"key": "value"`, `key := value`, `"key" => "value"` where the key
/// names a credential: the value only, so the key stays readable.
fn key_value(line: &[u8], hs: usize, he: usize) -> Option<(usize, usize)> {
    let mut ks = hs;
    while ks > 0 && is(line[ks - 1], IDENT) {
        ks -= 1;
    }
    let ke = run_end(line, he, IDENT);
    if !sensitive_key(&line[ks..ke]) || matches!(before(line, ks, 1), b'/' | b'\\') {
        return None;
    }
    let mut p = ke;
    // Closing quote of a quoted key, possibly escaped inside a JSON string.
    match at(line, p) {
        b'"' | b'\'' => p += 1,
        b'\\' if at(line, p + 1) == b'"' => p += 2,
        _ => {}
    }
    p = skip_blanks(line, p);
    match at(line, p) {
        b'=' => {
            p += 1;
            if at(line, p) == b'>' {
                p += 1;
            }
        }
        b':' => {
            p += 1;
            match at(line, p) {
                b'=' => p += 1,
                b':' => return None,
                _ => {}
            }
        }
        _ => return None,
    }
    p = skip_blanks(line, p);
    if p >= line.len() {
        return None;
    }
    let (vs, ve) = match line[p] {
        q @ (b'"' | b'\'') => match closing_quote(line, p + 1, q) {
            Some(c) => (p + 1, c),
            None => (p + 1, unquoted_end(line, p + 1)),
        },
        b'\\' if at(line, p + 1) == b'"' => {
            let vs = p + 2;
            let ve = memchr::memmem::find(&line[vs..], b"\\\"")
                .map_or_else(|| unquoted_end(line, vs), |k| vs + k);
            (vs, ve)
        }
        b'{' | b'[' => return None,
        _ => (p, unquoted_end(line, p)),
    };
    let value = &line[vs..ve];
    if !is_secret_value(value) || value.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some((vs, ve))
}

fn skip_blanks(line: &[u8], mut p: usize) -> usize {
    while p < line.len() && matches!(line[p], b' ' | b'\t') {
        p += 1;
    }
    p
}

/// Position of the quote closing a value that starts at `from`, honouring backslash escapes.
fn closing_quote(line: &[u8], from: usize, q: u8) -> Option<usize> {
    let mut i = from;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b if b == q => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// End of an unquoted value: the next blank, separator or closing bracket.
fn unquoted_end(line: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < line.len()
        && !matches!(
            line[i],
            b' ' | b'\t'
                | b'\r'
                | b'\n'
                | b'&'
                | b','
                | b';'
                | b'"'
                | b'\''
                | b')'
                | b'}'
                | b']'
                | b'<'
                | b'>'
                | b'|'
                | b'\\'
        )
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        Keys::new(Some(0), Some(1)).find(s.as_bytes(), &mut out);
        out.iter().map(|sp| &s[sp.start..sp.end]).collect()
    }

    #[test]
    fn first_pairs_are_the_bitset() {
        let k = Keys::new(Some(0), None);
        let mut from_bits = Vec::new();
        for pair in 0..=u16::MAX {
            if k.hit(pair) {
                from_bits.push(pair);
            }
        }
        let mut listed: Vec<u16> = FIRST_PAIRS
            .iter()
            .map(|&(a, b)| u16::from_le_bytes([a, b]))
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, from_bits);
    }

    #[test]
    fn nibble_tables_pass_every_trigger_and_few_others() {
        for (word, _) in TRIGGERS {
            let w = word.as_bytes();
            let folded = [w[0] | 0x20, w[1] | 0x20, w[2] | 0x20];
            assert!(nibble_candidate(folded), "{word}");
            let upper = word.to_ascii_uppercase();
            let u = upper.as_bytes();
            assert!(
                nibble_candidate([u[0] | 0x20, u[1] | 0x20, u[2] | 0x20]),
                "{word}"
            );
        }
        // Over ordinary log text, candidates that start no trigger stay rare.
        let text = b"2024-05-01T12:34:56.789Z INFO [http] GET /api/v1/orders/8812 status=200 \
            duration_ms=15 request_id=550e8400-e29b-41d4 client=10.0.0.1 ua=\"Mozilla/5.0\" \
            retrying upstream in 250ms (attempt 2/5) cache hit ratio 0.93 keys=1200 all values \
            user 42 session=ab12 total=$12.50 [payments] upstream timeout tokenizer=v2";
        let k = Keys::new(Some(0), None);
        let mut extra = 0;
        for (i, w) in text.windows(3).enumerate() {
            let starts = k.trigger_at(text, i, fold_pair(w[0], w[1])).is_some();
            let candidate = nibble_candidate([w[0] | 0x20, w[1] | 0x20, w[2] | 0x20]);
            assert!(!starts || candidate, "{i}");
            extra += usize::from(candidate && !starts);
        }
        assert!(extra * 100 < text.len(), "{extra} false candidates");
    }

    #[test]
    fn pair_blocks_match_a_byte_by_byte_scan() {
        let k = Keys::new(Some(0), None);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let alphabet = b"abeghijkoprstxyABEGKS-_ 09=:/\"";
        for len in 0..150usize {
            for _ in 0..20 {
                let line: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        alphabet[(state % alphabet.len() as u64) as usize]
                    })
                    .collect();
                for base in (0..len.max(1)).step_by(64) {
                    let naive = crate::blocks::scalar_block(base, len.saturating_sub(1), |i| {
                        k.hit(fold_pair(line[i], line[i + 1]))
                    });
                    assert_eq!(k.pair_block(&line, base), naive, "{line:?} at {base}");
                }
            }
        }
    }

    #[test]
    fn key_names_are_lower_case() {
        for names in [SENSITIVE_SUFFIXES, crate::json::PHONE_KEYS] {
            for name in names {
                assert_eq!(name.to_ascii_lowercase(), *name, "{:?}", name);
            }
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            keys("Authorization: Bearer abc123DEF456ghi789"),
            ["abc123DEF456ghi789"]
        );
        assert_eq!(
            keys("authorization: bearer Zm9vYmFy1234=="),
            ["Zm9vYmFy1234=="]
        );
        assert!(keys("missing Bearer token in request").is_empty());
        assert!(keys("trailing Bearer ").is_empty());
        assert!(keys("Bearer").is_empty());
        assert!(keys("token= ").is_empty());
        assert!(keys("Bearer authentication failed").is_empty());
        assert!(keys(r#"WWW-Authenticate: Bearer realm="api""#).is_empty());
    }

    #[test]
    fn sk_keys() {
        for k in [
            "sk-abcdefghij0123456789ABCD",
            "sk-live-4eC39HqLyjWDarjtT1zdp7dc",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ] {
            assert_eq!(keys(&format!("key {k} end")), [k]);
        }
        for bad in [
            "sk-short123",
            "skip-this-step",
            "asking for help",
            "task-0123456789abcdefghijk",
            "sk-this-is-a-long-kebab-case-name",
            "disk-sk-0123456789abcdefghijk",
        ] {
            assert!(keys(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn vendor_prefixes() {
        assert_eq!(keys("id=AKIAIOSFODNN7EXAMPLE,"), ["AKIAIOSFODNN7EXAMPLE"]);
        assert_eq!(keys("ASIAY34FZKBOKMUTVV7A"), ["ASIAY34FZKBOKMUTVV7A"]);
        assert!(keys("AKIAIOSFODNN7EXAMPLEX").is_empty());
        assert!(keys("Asia/Tokyo ASIA PACIFIC").is_empty());
        let gh = "ghp_1234567890abcdefghijABCDEFGHIJ123456";
        assert_eq!(keys(&format!("push {gh}")), [gh]);
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        assert_eq!(keys(pat), [pat]);
        assert!(keys("ghp_short").is_empty());
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_eq!(keys(&format!("jwt={jwt}")), [jwt]);
        assert!(keys("eyJustKidding.no").is_empty());
    }

    #[test]
    fn key_values() {
        for (text, want) in [
            ("GET /x?api_key=abc123&b=2", "abc123"),
            ("url?apikey=XYZ987;", "XYZ987"),
            ("token=s3cr3t-value", "s3cr3t-value"),
            ("access_token: ya29.a0AfH6SMB", "ya29.a0AfH6SMB"),
            (r#"{"secret": "hunter2", "x": 1}"#, "hunter2"),
            ("X-Api-Key: 0123abcd", "0123abcd"),
            ("clientSecret = 'sh-h'", "sh-h"),
            ("password:=pa55", "pa55"),
            (r#"msg="login token=\"abc987\"""#, "abc987"),
            ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ] {
            assert_eq!(keys(text), [want], "{text}");
        }
        for bad in [
            "tokenizer=bert",
            "max_tokens=512",
            "token_count: 5",
            "Token expired",
            "csrftoken=abc",
            "cat /etc/passwd: denied",
            "token=null",
            r#"{"token": null}"#,
            "token: [API_KEY_REDACTED]",
            "secret={\"a\":1}",
            "token::new()",
        ] {
            assert!(keys(bad).is_empty(), "{bad}: {:?}", keys(bad));
        }
    }

    #[test]
    fn sensitive_keys() {
        for k in [
            "token",
            "access_token",
            "X-Api-Key",
            "clientSecret",
            "db.password",
            "PASSWORD",
            "apiKey",
        ] {
            assert!(sensitive_key(k.as_bytes()), "{k}");
        }
        for k in ["tokenizer", "tokens", "csrftoken", "secretary", "keys"] {
            assert!(!sensitive_key(k.as_bytes()), "{k}");
        }
    }
}
