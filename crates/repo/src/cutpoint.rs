//! FastCDC 2020's cut-point search, scanning four stretches of the input side by side.
//!
//! `fastcdc::v2020::cut_gear` walks the gear hash one byte after another, so each step waits
//! for the one before it (a shift and two adds per pair of bytes) and the core sits mostly
//! idle. The gear hash forgets: every step shifts it left by one, so after 64 bytes nothing of
//! an older byte is left, and the hash at any position is a function of the 64 bytes before
//! it. Four stretches of 4 KiB can then be hashed at once, each started 64 bytes early, and
//! the processor overlaps the four chains. A stretch that holds a candidate is rescanned in
//! order to find the first one, so the cut points are exactly FastCDC's (a test checks them
//! against `cut_gear`); the search runs at 2.3-2.4x its speed on 1 MiB chunks.

use fastcdc::v2020::{Normalization, get_gear_with_seed, select_masks};

use crate::config::ChunkerParams;

/// Bytes one lane hashes per round.
const LANE: usize = 4096;
/// Lanes hashed side by side.
const LANES: usize = 4;
/// Bytes the lanes hash in one round.
const ROUND: usize = LANE * LANES;
/// A byte this far back no longer affects the hash: each step shifts it one bit left.
const MEMORY: usize = 64;

/// Finds where the next chunk ends, with a repository's sizes, masks and keyed gear tables.
pub(crate) struct CutPoints {
    min: usize,
    avg: usize,
    max: usize,
    /// The stricter mask, tested before the average size.
    mask_s: u64,
    /// The looser mask, tested after it.
    mask_l: u64,
    gear: [u64; 256],
    /// `gear` shifted left by one, to advance the hash two bytes per step.
    gear_ls: [u64; 256],
}

impl CutPoints {
    /// The search for `params`, with gear tables keyed by `seed`.
    pub(crate) fn new(params: ChunkerParams, seed: u64) -> CutPoints {
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        // FastCDC tests even positions against the hash and mask both shifted left by one;
        // that equals testing them unshifted only while the mask's top bit is clear, which
        // holds for every mask FastCDC has (the highest bit any uses is 47).
        assert!(
            (mask_s | mask_l) >> 63 == 0,
            "FastCDC masks leave the top bit clear"
        );
        let (gear, gear_ls) = get_gear_with_seed(seed);
        CutPoints {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
            gear: gear[..].try_into().expect("256 gear values"),
            gear_ls: gear_ls[..].try_into().expect("256 gear values"),
        }
    }

    /// The length of the chunk that starts `src` when `src` is the rest of the stream: what
    /// `fastcdc::v2020::cut_gear` returns for the same sizes, masks and tables (the tests
    /// compare the two).
    #[cfg(test)]
    pub(crate) fn cut(&self, src: &[u8]) -> usize {
        self.cut_so_far(src, &mut 0, true)
            .expect("the end of the stream is always a cut")
    }

    /// Where the chunk that starts `src` ends, found while its bytes are still arriving.
    ///
    /// `src` holds the bytes read so far from the chunk's start, `scanned` how far earlier
    /// calls (on a shorter `src`) found no candidate (0 for a new chunk; updated here), and
    /// `last` says that no more bytes will follow. Returns FastCDC's cut on the whole rest of
    /// the stream as soon as it is known, or `None` while it depends on bytes not yet read.
    /// Each byte is searched once however the stream is split, which lets the chunker read
    /// straight into the chunk it hands on instead of copying chunks out of a larger buffer.
    pub(crate) fn cut_so_far(&self, src: &[u8], scanned: &mut usize, last: bool) -> Option<usize> {
        let len = src.len();
        if len <= self.min {
            return last.then_some(len);
        }
        // FastCDC tests positions in pairs from the minimum: with the strict mask below the
        // average size, then the loose one up to the maximum; an odd last byte is never a
        // candidate. Here only as far as the bytes go; every bound is at least the (even)
        // minimum, since `len` is above it and so are the average and maximum sizes.
        let end = len.min(self.max);
        let (strict_end, loose_end) = (self.avg.min(end) & !1, end & !1);
        let src = &src[..end];
        let from = (*scanned).max(self.min);
        // While more bytes may come, only whole rounds are searched: the rest of a round
        // would be searched one position after another, at less than half the speed.
        let complete = last || end == self.max;
        let stop = if complete {
            loose_end
        } else {
            from + (loose_end - from) / ROUND * ROUND
        };
        let search = |from: usize, to: usize, mask: u64| {
            (from < to)
                .then(|| self.first_candidate(src, from, to, mask))
                .flatten()
        };
        let found = search(from, strict_end.min(stop), self.mask_s)
            .or_else(|| search(from.max(strict_end), stop, self.mask_l));
        if found.is_some() {
            return found;
        }
        *scanned = stop;
        complete.then_some(end)
    }

    /// The hash just before position `at`: the bytes since the minimum size, at most the
    /// last [`MEMORY`] of them (older ones have been shifted out).
    fn hash_before(&self, src: &[u8], at: usize) -> u64 {
        let from = at.saturating_sub(MEMORY).max(self.min);
        src[from..at]
            .iter()
            .fold(0, |h, &b| (h << 1).wrapping_add(self.gear[b as usize]))
    }

    /// The first position in `from..to` where the hash has no bit of `mask` set.
    fn first_candidate(&self, src: &[u8], mut from: usize, to: usize, mask: u64) -> Option<usize> {
        while to.saturating_sub(from) >= ROUND {
            if self.round_has_candidate(src, from, mask) {
                return self.scan(src, from, from + ROUND, mask);
            }
            from += ROUND;
        }
        self.scan(src, from, to, mask)
    }

    /// Tests positions `from..to` in order, two bytes per step as FastCDC does. Both ends are
    /// even (the minimum size is, and [`CutPoints::cut_so_far`] rounds the others down).
    fn scan(&self, src: &[u8], from: usize, to: usize, mask: u64) -> Option<usize> {
        debug_assert!(from.is_multiple_of(2) && to.is_multiple_of(2));
        let mut h = self.hash_before(src, from);
        let mask_ls = mask << 1;
        for (i, pair) in src[from..to].chunks_exact(2).enumerate() {
            h = (h << 2).wrapping_add(self.gear_ls[pair[0] as usize]);
            if h & mask_ls == 0 {
                return Some(from + 2 * i);
            }
            h = h.wrapping_add(self.gear[pair[1] as usize]);
            if h & mask == 0 {
                return Some(from + 2 * i + 1);
            }
        }
        None
    }

    /// Whether any position of the [`LANES`] lanes starting at `from` is a candidate.
    fn round_has_candidate(&self, src: &[u8], from: usize, mask: u64) -> bool {
        let lanes: [&[u8; LANE]; LANES] = std::array::from_fn(|j| {
            src[from + j * LANE..][..LANE]
                .try_into()
                .expect("a whole lane")
        });
        let mut h: [u64; LANES] = std::array::from_fn(|j| self.hash_before(src, from + j * LANE));
        let mask_ls = mask << 1;
        for t in (0..LANE).step_by(2) {
            let mut hit = false;
            for j in 0..LANES {
                h[j] = (h[j] << 2).wrapping_add(self.gear_ls[lanes[j][t] as usize]);
                hit |= h[j] & mask_ls == 0;
                h[j] = h[j].wrapping_add(self.gear[lanes[j][t + 1] as usize]);
                hit |= h[j] & mask == 0;
            }
            if hit {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::cut_gear;

    fn reference(p: ChunkerParams, seed: u64, src: &[u8]) -> usize {
        let (mask_s, mask_l) = select_masks(p.avg_size as usize, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        cut_gear(
            src,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &gear,
            &gear_ls,
        )
        .1
    }

    /// Random bytes with stretches of short repeating patterns (which give no candidates for
    /// long runs, so chunks reach the maximum size).
    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut out = crate::chunker::tests::noise(len, seed);
        for (i, b) in out.iter_mut().enumerate() {
            if (i / 150_000) % 3 == 1 {
                *b = (i % 7) as u8;
            }
        }
        out
    }

    #[test]
    fn cut_points_are_fastcdcs() {
        let params = [
            (256 * 1024, 1024 * 1024, 4 * 1024 * 1024),
            (64 * 1024, 256 * 1024, 1024 * 1024),
            (4 * 1024, 16 * 1024, 64 * 1024),
            (64, 256, 1024),
        ];
        let src = data(12 * 1024 * 1024, 3);
        for (min, avg, max) in params {
            let p = ChunkerParams {
                min_size: min,
                avg_size: avg,
                max_size: max,
            };
            for seed in [0, 0x5eed_0fc0_ffee] {
                let cuts = CutPoints::new(p, seed);
                let (min, avg, max) = (min as usize, avg as usize, max as usize);
                let mut pos = 0;
                let mut chunks = 0;
                while pos < src.len() {
                    // Whole windows, and windows that end around each size (odd ones too).
                    let ends = [
                        src.len(),
                        pos + min - 1,
                        pos + min,
                        pos + min + 1,
                        pos + min + LANE * LANES + 3,
                        pos + avg - 1,
                        pos + avg + 1,
                        pos + max - 1,
                        pos + max + 1,
                    ];
                    for end in ends.map(|e| e.min(src.len())) {
                        let window = &src[pos..end];
                        assert_eq!(
                            cuts.cut(window),
                            reference(p, seed, window),
                            "sizes {min}/{avg}/{max}, seed {seed}, at {pos}, window {}",
                            window.len()
                        );
                    }
                    pos += cuts.cut(&src[pos..]);
                    chunks += 1;
                    if chunks > 400 {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn cuts_found_as_bytes_arrive_are_the_whole_streams() {
        let src = data(6 * 1024 * 1024, 5);
        let params = [
            (256 * 1024, 1024 * 1024, 4 * 1024 * 1024),
            (4 * 1024, 16 * 1024, 64 * 1024),
            (64, 256, 1024),
        ];
        for (min, avg, max) in params {
            let p = ChunkerParams {
                min_size: min,
                avg_size: avg,
                max_size: max,
            };
            let cuts = CutPoints::new(p, 7);
            // Bytes arrive in steps of varied sizes: single bytes, odd sizes, whole lanes.
            for steps in [
                &[1, 2, 3][..],
                &[4095, 1, 16_384, 7],
                &[131_072],
                &[999_983],
            ] {
                let (mut start, mut len, mut scanned, mut step) = (0, 0, 0, 0);
                let mut found = 0;
                while start < src.len() {
                    len = (len + steps[step % steps.len()]).min(src.len() - start);
                    step += 1;
                    let last = start + len == src.len();
                    let window = &src[start..start + len];
                    if let Some(c) = cuts.cut_so_far(window, &mut scanned, last) {
                        assert_eq!(
                            c,
                            cuts.cut(&src[start..]),
                            "sizes {min}/{avg}/{max}, steps {steps:?}, chunk at {start}"
                        );
                        start += c;
                        len -= c;
                        scanned = 0;
                        found += 1;
                    } else {
                        assert!(
                            !last && len < max as usize,
                            "no cut with {len} bytes, last {last}"
                        );
                    }
                }
                assert!(found > 3, "{found} chunks");
            }
        }
    }

    #[test]
    fn every_fastcdc_mask_leaves_the_top_bit_clear() {
        assert!(fastcdc::v2020::MASKS.iter().all(|m| m >> 63 == 0));
    }
}
