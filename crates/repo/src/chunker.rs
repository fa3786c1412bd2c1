//! Content-defined chunking over a byte stream that may span many files.
//!
//! Built on FastCDC 2020's cut points (found by [`crate::cutpoint`]) with a buffer we manage
//! ourselves, so that several sources (the small files of a directory) can be fed into one
//! chunk stream and a boundary can be forced between sources (before and after each large file,
//! so identical large files chunk identically wherever they sit). The gear table is seeded from
//! the repository key: boundaries then depend on the key, and chunk sizes do not fingerprint
//! content for someone who can see file sizes in the chunk directory.

use std::io::{self, Read};

use crate::config::ChunkerParams;
use crate::cutpoint::CutPoints;
use crate::error::Error;

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

/// A streaming content-defined chunker with a fixed, bounded buffer.
pub(crate) struct Chunker {
    max: usize,
    cuts: CutPoints,
    /// Holds at most two maximum-size chunks.
    buf: Vec<u8>,
    /// Start of bytes not yet cut.
    start: usize,
    /// End of valid bytes.
    len: usize,
}

impl Chunker {
    /// A chunker with the repository's parameters and key-derived seed.
    pub(crate) fn new(params: ChunkerParams, seed: u64) -> Chunker {
        let max = params.max_size as usize;
        Chunker {
            max,
            cuts: CutPoints::new(params, seed),
            buf: vec![0u8; 2 * max],
            start: 0,
            len: 0,
        }
    }

    /// Bytes buffered but not yet cut into a chunk.
    pub(crate) fn pending(&self) -> usize {
        self.len - self.start
    }

    fn cut_one(&mut self, emit: &mut dyn FnMut(Vec<u8>) -> Result<(), Error>) -> Result<(), Error> {
        // A cut is empty only for empty input, which callers never pass.
        let count = self.cuts.cut(&self.buf[self.start..self.len]).max(1);
        let chunk = self.buf[self.start..self.start + count].to_vec();
        self.start += count;
        if self.start == self.len {
            self.start = 0;
            self.len = 0;
        }
        emit(chunk)
    }

    /// Reads `src` to its end, appending it to the chunk stream and emitting every chunk that is
    /// complete. Returns the number of bytes read. Bytes after the last cut stay buffered until
    /// more input or [`Chunker::flush`].
    pub(crate) fn feed(
        &mut self,
        src: &mut dyn Read,
        emit: &mut dyn FnMut(Vec<u8>) -> Result<(), Error>,
    ) -> Result<u64, FeedError> {
        let mut total = 0u64;
        loop {
            while self.pending() >= self.max {
                self.cut_one(emit).map_err(FeedError::Sink)?;
            }
            if self.len == self.buf.len() {
                self.buf.copy_within(self.start..self.len, 0);
                self.len -= self.start;
                self.start = 0;
            }
            match src.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.len += n;
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
        emit: &mut dyn FnMut(Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        while self.pending() > 0 {
            self.cut_one(emit)?;
        }
        Ok(())
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
        let mut c = Chunker::new(params(), 42);
        let mut out = Vec::new();
        let mut emit = |v: Vec<u8>| {
            out.push(v);
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
