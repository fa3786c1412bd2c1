//! The few scans that use 128-bit vectors where every build of the target has them: x86_64
//! (SSE2 is baseline) and wasm32 built with `simd128` (the `redact` plugin is). Each returns
//! one bit per byte of a 16-byte window; callers fall back to scalar code elsewhere and for
//! lines shorter than a window.

/// Runs `body` for `k` in `0..n` (`n` at most 32) as straight-line code. A loop here would stay
/// a loop in `wasm32` (LLVM does not unroll it for that target), paying a deadline check and
/// a table load per pair; unrolled, each pair's bytes become constants.
#[allow(unused_macros)]
macro_rules! unrolled {
    ($n:expr, |$k:ident| $body:block) => {
        unrolled!(@ $n, |$k| $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31)
    };
    (@ $n:expr, |$k:ident| $body:block, $($i:literal)*) => {
        const { assert!($n <= 32) };
        $(
            if $i < $n {
                let $k = $i;
                $body
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{
    __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
    _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm_sub_epi8, _mm_subs_epu8,
};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use core::arch::wasm32::{
    i8x16_lt, i8x16_splat, u8x16_add, u8x16_bitmask, u8x16_eq, u8x16_shr, u8x16_splat, v128,
    v128_and, v128_load, v128_or,
};

/// Bit `i` set when `chunk[i]` is an ASCII digit, for the first 16 bytes of `chunk`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn digit_mask(chunk: &[u8]) -> u32 {
    assert!(chunk.len() >= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load reads 16 bytes the
    // slice holds.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let x = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
        let over = _mm_subs_epu8(x, _mm_set1_epi8(9));
        _mm_movemask_epi8(_mm_cmpeq_epi8(over, _mm_setzero_si128())) as u32
    }
}

/// All ones in the lanes of `v` holding one of the `n` bytes from `first`. Shifted so that
/// those land on the `n` smallest signed bytes: one signed compare, which x86 hosts do in
/// one instruction where an unsigned range test needs three.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn in_range(v: v128, first: u8, n: u8) -> v128 {
    let shifted = u8x16_add(v, u8x16_splat(0x80u8.wrapping_sub(first)));
    i8x16_lt(shifted, i8x16_splat(i8::MIN.wrapping_add(n as i8)))
}

/// Bit `i` set when `chunk[i]` is an ASCII digit, for the first 16 bytes of `chunk`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn digit_mask(chunk: &[u8]) -> u32 {
    assert!(chunk.len() >= 16);
    // SAFETY: the load reads 16 bytes the slice holds; `v128_load` needs no alignment.
    let v = unsafe { v128_load(chunk.as_ptr().cast()) };
    u32::from(u8x16_bitmask(in_range(v, b'0', 10)))
}

/// Bit `i` set when `chunk[i]` is one of the three bytes `set`, for the first 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn any_of3(chunk: &[u8], set: [u8; 3]) -> u32 {
    assert!(chunk.len() >= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load reads 16 bytes the
    // slice holds.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        _mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(eq(set[0]), eq(set[1])),
            eq(set[2]),
        )) as u32
    }
}

/// For the first 16 bytes of `chunk`: the ASCII letters and `_`, the bytes `.` and `-`, and
/// the backslashes, one bit per byte in each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn glue_masks(chunk: &[u8]) -> (u32, u32, u32) {
    assert!(chunk.len() >= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load reads 16 bytes the
    // slice holds.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        // Lower-cased, a letter is `a..=z`: `x - 'a'` at most 25.
        let x = _mm_sub_epi8(
            _mm_or_si128(v, _mm_set1_epi8(0x20)),
            _mm_set1_epi8(b'a' as i8),
        );
        let letter = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(25)), x);
        (
            _mm_movemask_epi8(_mm_or_si128(letter, eq(b'_'))) as u32,
            _mm_movemask_epi8(_mm_or_si128(eq(b'.'), eq(b'-'))) as u32,
            _mm_movemask_epi8(eq(b'\\')) as u32,
        )
    }
}

/// For the first 16 bytes of `chunk`: the ASCII letters and `_`, the bytes `.` and `-`, and
/// the backslashes, one bit per byte in each.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn glue_masks(chunk: &[u8]) -> (u32, u32, u32) {
    assert!(chunk.len() >= 16);
    // SAFETY: the load reads 16 bytes the slice holds; `v128_load` needs no alignment.
    let v = unsafe { v128_load(chunk.as_ptr().cast()) };
    let eq = |b: u8| u8x16_eq(v, u8x16_splat(b));
    // Lower-cased, a letter is `a..=z`.
    let letter = in_range(v128_or(v, u8x16_splat(0x20)), b'a', 26);
    (
        u32::from(u8x16_bitmask(v128_or(letter, eq(b'_')))),
        u32::from(u8x16_bitmask(v128_or(eq(b'.'), eq(b'-')))),
        u32::from(u8x16_bitmask(eq(b'\\'))),
    )
}

/// Bit `i` set when `chunk[i]` is one of the three bytes `set`, for the first 16 bytes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn any_of3(chunk: &[u8], set: [u8; 3]) -> u32 {
    assert!(chunk.len() >= 16);
    // SAFETY: the load reads 16 bytes the slice holds; `v128_load` needs no alignment.
    let v = unsafe { v128_load(chunk.as_ptr().cast()) };
    let eq = |b: u8| u8x16_eq(v, u8x16_splat(b));
    u32::from(u8x16_bitmask(v128_or(
        v128_or(eq(set[0]), eq(set[1])),
        eq(set[2]),
    )))
}

/// Bit `i` set when bytes `i` and `i + 1` of `chunk`, with `0x20` or-ed in (ASCII letters
/// lower-cased), equal one of `pairs`, for `i` in `0..16`. `chunk` holds at least 17 bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn pair_mask<const N: usize>(chunk: &[u8], pairs: &[(u8, u8); N]) -> u32 {
    assert!(chunk.len() >= 17);
    // SAFETY: SSE2 is part of the x86_64 baseline, and both unaligned loads read 16 bytes the
    // slice holds (offsets 0 and 1 of at least 17).
    unsafe {
        let fold = _mm_set1_epi8(0x20);
        let a = _mm_or_si128(_mm_loadu_si128(chunk.as_ptr().cast()), fold);
        let b = _mm_or_si128(_mm_loadu_si128(chunk.as_ptr().add(1).cast()), fold);
        let mut hits: __m128i = _mm_setzero_si128();
        unrolled!(N, |k| {
            let (x, y) = pairs[k];
            let both = _mm_and_si128(
                _mm_cmpeq_epi8(a, _mm_set1_epi8(x as i8)),
                _mm_cmpeq_epi8(b, _mm_set1_epi8(y as i8)),
            );
            hits = _mm_or_si128(hits, both);
        });
        _mm_movemask_epi8(hits) as u32
    }
}

/// `table[index[i]]` for each of the 16 lanes, every index below 16. The relaxed swizzle,
/// where the build has it (`./dev plugins` does), is one x86 `pshufb`; the plain one also
/// zeroes lanes whose index is 16 or more, which costs x86 hosts a second instruction.
/// Both agree on indices below 16.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn lookup(table: v128, index: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        core::arch::wasm32::i8x16_relaxed_swizzle(table, index)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        core::arch::wasm32::u8x16_swizzle(table, index)
    }
}

/// Bit `i` set when bytes `i`, `i + 1` and `i + 2` of `chunk`, with `0x20` or-ed in, may start
/// one of the words described by `tables` (low and high nibble of the first byte, then of the
/// second and third: each maps a nibble to the buckets of the words having it; a position is
/// a candidate when its six lookups share a bucket), for `i` in `0..16`. `chunk` holds at
/// least 18 bytes. Six `i8x16.swizzle` lookups test every word at once.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn nibble_triple_mask(chunk: &[u8], tables: &[[u8; 16]; 6]) -> u32 {
    assert!(chunk.len() >= 18);
    let fold = u8x16_splat(0x20);
    let low = u8x16_splat(0x0F);
    let mut hits = u8x16_splat(0xFF);
    for (k, pair) in tables.chunks_exact(2).enumerate() {
        // SAFETY: the byte load reads 16 bytes the slice holds (offset at most 2 of at least
        // 18), and each table load reads one 16-byte array; `v128_load` needs no alignment.
        let (v, lo, hi) = unsafe {
            (
                v128_or(v128_load(chunk.as_ptr().add(k).cast()), fold),
                v128_load(pair[0].as_ptr().cast()),
                v128_load(pair[1].as_ptr().cast()),
            )
        };
        hits = v128_and(
            hits,
            v128_and(lookup(lo, v128_and(v, low)), lookup(hi, u8x16_shr(v, 4))),
        );
    }
    !u32::from(u8x16_bitmask(u8x16_eq(hits, u8x16_splat(0)))) & 0xFFFF
}
