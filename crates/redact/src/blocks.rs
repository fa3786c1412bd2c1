//! Finding the next position that passes a byte test, 64 positions at a time.
//!
//! A scanner computes one 64-bit mask per 64-byte block of a line (with 128-bit vectors where
//! the target has them) and then walks set and clear bits with `trailing_zeros`, so a line
//! with dozens of digit runs or trigger hits costs a few vector steps per block instead of a
//! scan per run. That matters most in a `wasm32` guest, which pays a deadline check for every
//! loop iteration.

/// Builds the mask of the block of `line` at `base` from a 16-position window function:
/// `window(bytes, at)` gives the bits of positions `at..at + 16` of `bytes` and reads
/// `bytes[at..at + span]`. The last block of a line is copied into a zero-padded buffer first,
/// so every block takes the same four window steps; bits for positions whose `span` bytes do
/// not fit in the line are cleared.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
#[inline(always)]
pub(crate) fn block_of(
    line: &[u8],
    base: usize,
    span: usize,
    window: impl Fn(&[u8], usize) -> u32,
) -> u64 {
    if base + 64 + span - 16 <= line.len() {
        return u64::from(window(line, base))
            | u64::from(window(line, base + 16)) << 16
            | u64::from(window(line, base + 32)) << 32
            | u64::from(window(line, base + 48)) << 48;
    }
    last_block(line, base, span, window)
}

/// [`block_of`] for the last block of a line. Each window that runs past the end reads the
/// line's last `span` bytes instead and is shifted into place (a line shorter than one window
/// goes through a zero-padded copy). Inlined although every line needs it only once per
/// scan: as a call it cost a `wasm32` guest about 100 instructions of entry and exit (saved
/// registers, stack and deadline checks) on top of its windows, counted per call with
/// `valgrind --tool=callgrind`; inlined, the guest ran 6.5 % fewer instructions over a
/// 20 MB log and native code 3.9 % fewer.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
#[inline(always)]
fn last_block(line: &[u8], base: usize, span: usize, window: impl Fn(&[u8], usize) -> u32) -> u64 {
    let len = line.len();
    // Positions that can pass: those whose `span` bytes fit in the line.
    let fit = (len + 16).saturating_sub(span).saturating_sub(base);
    let m = if len >= span {
        let last = len - span;
        let step = |k: usize| {
            let at = base + 16 * k;
            if at <= last {
                u64::from(window(line, at))
            } else if at - last < 16 {
                u64::from(window(line, last) >> (at - last))
            } else {
                0
            }
        };
        step(0) | step(1) << 16 | step(2) << 32 | step(3) << 48
    } else {
        let mut padded = [0u8; 64];
        padded[..len - base].copy_from_slice(&line[base..]);
        u64::from(window(&padded, 0)) | u64::from(window(&padded, 16)) << 16
    };
    if fit >= 64 {
        m
    } else {
        m & ((1u64 << fit) - 1)
    }
}

/// The same mask, one position at a time: `one(at)` for positions `base..end` (at most 64).
/// Used where the target has no 128-bit vectors, and by tests as the reference.
#[cfg_attr(
    any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ),
    allow(dead_code)
)]
#[inline]
pub(crate) fn scalar_block(base: usize, end: usize, one: impl Fn(usize) -> bool) -> u64 {
    let mut m = 0u64;
    let mut at = base;
    while at < end && at < base + 64 {
        m |= u64::from(one(at)) << (at - base);
        at += 1;
    }
    m
}
