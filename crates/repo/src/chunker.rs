//! Content-defined chunking over a byte stream that may span many files.
//!
//! Built on FastCDC 2020's cut points (found by [`crate::cutpoint`]) with a buffer we manage
//! ourselves, so that several sources (the small files of a directory) can be fed into one
//! chunk stream and a boundary can be forced between sources (before and after each large file,
//! so identical large files chunk identically wherever they sit). The gear table is seeded from
//! the repository key: boundaries then depend on the key, and chunk sizes do not fingerprint
//! content for someone who can see file sizes in the chunk directory.
//!
//! Sources are read straight into the buffer of the chunk being filled, and cut points are
//! searched as the bytes arrive; a chunk's buffer is handed on whole, and comes back from the
//! worker that stored it to be filled again. Only the bytes a read brought in past a cut are
//! copied (into the next chunk).

use std::io::{self, Read};
use std::ops::Deref;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::ChunkerParams;
use crate::cutpoint::CutPoints;
use crate::error::Error;

/// Bytes asked of a source per read. Sources are read straight into the chunk being filled;
/// what a read brings in past a cut point is moved into the next chunk, so a smaller read
/// moves fewer bytes (on average half a read per chunk, about 6% of a 1 MiB chunk) for more
/// reads.
const READ_SIZE: usize = 128 * 1024;

/// Why feeding a source stopped early.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// The source failed after `bytes` bytes had been read from it.
    Source {
        /// Bytes read from this source before the error.
        bytes: u64,
        /// The read error.
        error: io::Error,
    },
    /// The consumer of chunks failed.
    Sink(Error),
}

/// One chunk's bytes, in a buffer that goes back to [`Spares`] once the chunk is stored, so
/// that chunking neither allocates nor faults in fresh pages for every chunk.
#[derive(Default)]
pub(crate) struct ChunkBuf {
    /// Initialised storage; only `..len` is the chunk (the rest is left from earlier use).
    bytes: Vec<u8>,
    len: usize,
}

impl ChunkBuf {
    /// The `more` bytes after the chunk's end, initialised: zeroed only past what this buffer
    /// has held before.
    fn room(&mut self, more: usize) -> &mut [u8] {
        let end = self.len + more;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.len..end]
    }
}

impl Deref for ChunkBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Chunk buffers handed back for reuse (at most a bounded number are kept).
#[derive(Clone)]
pub(crate) struct Spares {
    tx: Sender<ChunkBuf>,
    rx: Receiver<ChunkBuf>,
}

impl Spares {
    /// A pool keeping up to `keep` buffers.
    pub(crate) fn new(keep: usize) -> Spares {
        let (tx, rx) = bounded(keep);
        Spares { tx, rx }
    }

    /// A kept buffer, emptied, or a new one with room for `capacity` bytes (allocated, not
    /// touched: pages are only used as bytes are written).
    fn take(&self, capacity: usize) -> ChunkBuf {
        let mut buf = self.rx.try_recv().unwrap_or_else(|_| ChunkBuf {
            bytes: Vec::with_capacity(capacity),
            len: 0,
        });
        buf.len = 0;
        buf
    }

    /// Hands a buffer back; it is dropped if the pool is full.
    pub(crate) fn give(&self, buf: ChunkBuf) {
        let _ = self.tx.try_send(buf);
    }
}

/// A streaming content-defined chunker. Its memory is the chunk being filled (at most the
/// maximum chunk size) and the buffers in [`Spares`].
pub(crate) struct Chunker {
    max: usize,
    cuts: CutPoints,
    /// Bytes since the last cut.
    cur: ChunkBuf,
    /// How far into `cur` the search found no cut point.
    scanned: usize,
    spares: Spares,
}

impl Chunker {
    /// A chunker with the repository's parameters and key-derived seed, taking its buffers
    /// from `spares`.
    pub(crate) fn new(params: ChunkerParams, seed: u64, spares: Spares) -> Chunker {
        let max = params.max_size as usize;
        Chunker {
            max,
            cuts: CutPoints::new(params, seed),
            cur: spares.take(max),
            scanned: 0,
            spares,
        }
    }

    /// Bytes buffered but not yet cut into a chunk.
    pub(crate) fn pending(&self) -> usize {
        self.cur.len
    }

    /// Emits every chunk whose end is known; `last` forces a boundary at the end of the
    /// bytes buffered.
    fn cut_ready(
        &mut self,
        last: bool,
        emit: &mut dyn FnMut(ChunkBuf) -> Result<(), Error>,
    ) -> Result<(), Error> {
        while self.cur.len > 0 {
            let Some(count) = self.cuts.cut_so_far(&self.cur, &mut self.scanned, last) else {
                return Ok(());
            };
            // The bytes after the cut begin the next chunk.
            let mut next = self.spares.take(self.max);
            let rest = self.cur.len - count;
            next.room(rest)
                .copy_from_slice(&self.cur.bytes[count..self.cur.len]);
            next.len = rest;
            self.cur.len = count;
            self.scanned = 0;
            emit(std::mem::replace(&mut self.cur, next))?;
        }
        Ok(())
    }

    /// Reads `src` to its end, appending it to the chunk stream and emitting every chunk that is
    /// complete. Returns the number of bytes read. Bytes after the last cut stay buffered until
    /// more input or [`Chunker::flush`].
    pub(crate) fn feed(
        &mut self,
        src: &mut dyn Read,
        emit: &mut dyn FnMut(ChunkBuf) -> Result<(), Error>,
    ) -> Result<u64, FeedError> {
        let mut total = 0u64;
        loop {
            self.cut_ready(false, emit).map_err(FeedError::Sink)?;
            // Below the maximum now: a chunk that reaches it always has its cut.
            let want = (self.max - self.cur.len).min(READ_SIZE);
            match src.read(self.cur.room(want)) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.cur.len += n;
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(FeedError::Source {
                        bytes: total,
                        error,
                    });
                }
            }
        }
    }

    /// Cuts everything buffered, forcing a boundary at the current end of the stream.
    pub(crate) fn flush(
        &mut self,
        emit: &mut dyn FnMut(ChunkBuf) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.cut_ready(true, emit)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 4 * 1024,
            avg_size: 16 * 1024,
            max_size: 64 * 1024,
        }
    }

    /// `len` random bytes from `seed`.
    pub(crate) fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn chunks_of(data: &[u8], reads: usize) -> Vec<Vec<u8>> {
        struct Slow<'a>(&'a [u8], usize);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(self.1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let spares = Spares::new(2);
        let mut c = Chunker::new(params(), 42, spares.clone());
        let mut out = Vec::new();
        let mut emit = |v: ChunkBuf| {
            out.push(v.to_vec());
            spares.give(v);
            Ok(())
        };
        c.feed(&mut Slow(data, reads), &mut emit).unwrap();
        c.flush(&mut emit).unwrap();
        out
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let data = noise(1_000_000, 1);
        let chunks = chunks_of(&data, usize::MAX);
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= 4 * 1024 && c.len() <= 64 * 1024, "{}", c.len());
        }
        // Boundaries do not depend on how reads are split.
        assert_eq!(chunks_of(&data, 777), chunks);
    }

    #[test]
    fn insertion_only_changes_nearby_chunks() {
        let data = noise(1_000_000, 2);
        let mut edited = data.clone();
        edited.splice(500_000..500_000, b"inserted".iter().copied());
        let a = chunks_of(&data, usize::MAX);
        let b = chunks_of(&edited, usize::MAX);
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(shared + 3 >= a.len(), "{shared} of {}", a.len());
    }
}
