//! Turning sources into stored chunks and tree entries.
//!
//! The caller's thread reads sources one after another into a single chunk stream (small files
//! packed together, large files on their own boundaries); each chunk is handed to the worker
//! pool to be hashed, deduplicated, compressed, sealed and written. Entries travel with the
//! chunk stream as events, and the assembler, which sees chunk ids in stream order, works out
//! which slices of which chunks make up each file and emits finished entries in walk order.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::mem;
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

use crossbeam_channel::bounded;

use crate::chunker::{ChunkBuf, Chunker, FeedError, Spares};
use crate::chunks::{ChunkId, ChunkStore, Claims, PackSink, Stored, Written};
use crate::config::ChunkerParams;
use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, default_workers};
use crate::tree::{Entry, Slice, TreeWriter};

/// Entries without data accumulated before they are sent down the pipeline on their own, so a
/// snapshot where nothing changed does not hold its whole file list in memory.
const MAX_EVENTS_PER_JOB: usize = 4096;

/// Something that happened in the chunk stream, in order.
pub(crate) enum Event {
    /// A file whose bytes start at stream offset `start`.
    Begin {
        /// The file's entry (its slices are filled in by the assembler).
        entry: Entry,
        /// Stream offset of its first byte.
        start: u64,
    },
    /// The most recently begun file ended after `len` bytes; `ok` false drops it.
    End {
        /// Bytes read from it.
        len: u64,
        /// Whether it was read completely.
        ok: bool,
    },
    /// An entry with no bytes in the stream (directory, symlink, reused file).
    Whole(Entry),
}

/// A unit of work: one chunk (possibly empty) and the events that precede its end.
pub(crate) struct Job {
    data: ChunkBuf,
    events: Vec<Event>,
}

/// A finished unit of work.
pub(crate) struct Done {
    stored: Option<Stored>,
    events: Vec<Event>,
}

/// Byte and chunk counts of one ingest run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IngestStats {
    /// Bytes read from sources.
    pub(crate) bytes_read: u64,
    /// Chunks cut.
    pub(crate) chunks_total: u64,
    /// Chunks that were not yet stored.
    pub(crate) chunks_new: u64,
    /// Plaintext bytes of the new chunks.
    pub(crate) bytes_new: u64,
    /// Bytes written to disk for the new chunks.
    pub(crate) bytes_stored: u64,
}

/// Where finished entries go.
pub(crate) enum Sink<'t> {
    /// Into a snapshot tree.
    Tree(&'t mut TreeWriter),
    /// Nowhere: only the chunk ids are wanted (storing a tree itself).
    Ids(Vec<ChunkId>),
}

struct Pending {
    entry: Entry,
    /// `None` for entries without stream bytes.
    start: Option<u64>,
    end: Option<u64>,
    keep: bool,
}

/// Receives finished chunks in stream order and completes entries.
struct Assembler<'t> {
    sink: Sink<'t>,
    pending: VecDeque<Pending>,
    pos: u64,
    stats: IngestStats,
}

impl Assembler<'_> {
    fn accept(&mut self, done: Done) -> Result<()> {
        for event in done.events {
            match event {
                Event::Begin { entry, start } => self.pending.push_back(Pending {
                    entry,
                    start: Some(start),
                    end: None,
                    keep: true,
                }),
                Event::End { len, ok } => {
                    let open = self
                        .pending
                        .iter_mut()
                        .rev()
                        .find(|p| p.start.is_some() && p.end.is_none())
                        .ok_or_else(|| Error::Internal("file end without a beginning".into()))?;
                    open.end = Some(open.start.unwrap_or(0) + len);
                    open.entry.size = len;
                    open.keep = ok;
                }
                Event::Whole(entry) => self.pending.push_back(Pending {
                    entry,
                    start: None,
                    end: None,
                    keep: true,
                }),
            }
        }
        if let Some(stored) = done.stored {
            let (cs, ce) = (self.pos, self.pos + stored.len as u64);
            for p in self.pending.iter_mut() {
                let Some(start) = p.start else { continue };
                if start >= ce {
                    break;
                }
                let lo = start.max(cs);
                let hi = p.end.unwrap_or(u64::MAX).min(ce);
                if lo < hi {
                    p.entry
                        .chunks
                        .push(Slice(stored.id, (lo - cs) as u32, (hi - lo) as u32));
                }
            }
            self.pos = ce;
            self.stats.chunks_total += 1;
            if stored.stored > 0 {
                self.stats.chunks_new += 1;
                self.stats.bytes_new += stored.len as u64;
                self.stats.bytes_stored += stored.stored;
            }
            if let Sink::Ids(ids) = &mut self.sink {
                ids.push(stored.id);
            }
        }
        while let Some(front) = self.pending.front() {
            let complete = match (front.start, front.end) {
                (None, _) => true,
                (Some(_), Some(end)) => end <= self.pos,
                (Some(_), None) => false,
            };
            if !complete {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            if p.keep
                && let Sink::Tree(tree) = &mut self.sink
            {
                tree.push(&p.entry)?;
            }
        }
        Ok(())
    }
}

/// What reading one file into the stream gave.
pub(crate) struct FileRead {
    /// Bytes read.
    pub(crate) bytes: u64,
    /// The read error that cut the file short, if any (the file is then left out).
    pub(crate) error: Option<io::Error>,
}

/// Threads that append new chunks to packs and flush them, each writing a pack of its own.
/// They wait on the disk, not the CPU, so several run at once and compression workers never
/// stall on a write or `fsync`. Each keeps an aligned buffer of about a megabyte.
const FLUSHERS: usize = 3;
/// Encoded chunks waiting for a flusher (their bytes are in memory, so this bounds it: with
/// the workers' own, at most six encoded chunks; a flusher frees its chunk once copied).
const FLUSH_QUEUE: usize = 2;

/// One ingest run: sources in, entries and chunks out.
pub(crate) struct Ingest<'t, 'scope> {
    chunker: Chunker,
    pipe: Pipeline<Job, Done>,
    flushers: Vec<ScopedJoinHandle<'scope, Result<()>>>,
    events: Vec<Event>,
    pos: u64,
    min_size: u64,
    asm: Assembler<'t>,
}

impl<'t, 'scope> Ingest<'t, 'scope> {
    /// Starts the workers (hash, deduplicate, compress, seal, write) and the flushers in
    /// `scope`.
    pub(crate) fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'scope ChunkStore,
        params: ChunkerParams,
        sink: Sink<'t>,
    ) -> Ingest<'t, 'scope> {
        let claims = Arc::new(Claims::default());
        let (flush_tx, flush_rx) = bounded::<Written>(FLUSH_QUEUE);
        let flushers = (0..FLUSHERS)
            .map(|_| {
                let rx = flush_rx.clone();
                let claims = claims.clone();
                scope.spawn(move || {
                    let mut sink = PackSink::new(store, &claims);
                    let mut outcome = Ok(());
                    // After an error the rest is drained unwritten, so no worker blocks.
                    for written in rx {
                        if outcome.is_ok() {
                            outcome = sink.put(written);
                        }
                    }
                    outcome.and_then(|()| sink.finish())
                })
            })
            .collect();
        let workers = default_workers();
        // A worker hands each chunk's buffer back to the chunker once the chunk is encoded.
        let spares = Spares::new(workers + 2);
        let returns = spares.clone();
        // The closure owns the only sender: when the last worker exits, the flushers finish.
        let work = move |job: Job| -> Result<Done> {
            let stored = if job.data.is_empty() {
                None
            } else {
                let (stored, written) = store.write_chunk(&job.data, &claims)?;
                returns.give(job.data);
                if let Some(w) = written {
                    flush_tx
                        .send(w)
                        .map_err(|_| Error::Internal("the flusher threads stopped".into()))?;
                }
                Some(stored)
            };
            Ok(Done {
                stored,
                events: job.events,
            })
        };
        Ingest {
            chunker: Chunker::new(params, store.keys().chunker_seed, spares),
            // As many chunks queued as there are workers: twice as many held up to 16 MiB
            // more of raw chunks in memory for no measurable speed.
            pipe: Pipeline::new(scope, workers, workers, work),
            flushers,
            events: Vec::new(),
            pos: 0,
            min_size: u64::from(params.min_size),
            asm: Assembler {
                sink,
                pending: VecDeque::new(),
                pos: 0,
                stats: IngestStats::default(),
            },
        }
    }

    /// Adds an entry that has no bytes to read (directory, symlink, unchanged file).
    pub(crate) fn add_entry(&mut self, entry: Entry) -> Result<()> {
        self.events.push(Event::Whole(entry));
        if self.events.len() >= MAX_EVENTS_PER_JOB {
            self.submit(ChunkBuf::default())?;
        }
        Ok(())
    }

    fn submit(&mut self, data: ChunkBuf) -> Result<()> {
        let events = mem::take(&mut self.events);
        let asm = &mut self.asm;
        self.pipe
            .submit(Job { data, events }, &mut |done| asm.accept(done))
    }

    /// Reads a file (or stream) to its end into the chunk stream. Files of at least the minimum
    /// chunk size get chunk boundaries of their own; smaller ones are packed with their
    /// neighbours. A read error leaves the file out and is returned in [`FileRead::error`];
    /// errors of the store abort.
    pub(crate) fn add_file(&mut self, entry: Entry, src: &mut dyn Read) -> Result<FileRead> {
        let packed = entry.size < self.min_size;
        if !packed {
            self.flush_chunker()?;
        }
        self.events.push(Event::Begin {
            entry,
            start: self.pos,
        });
        let Ingest {
            chunker,
            pipe,
            events,
            asm,
            ..
        } = self;
        let mut emit = |data: ChunkBuf| {
            let events = mem::take(events);
            pipe.submit(Job { data, events }, &mut |done| asm.accept(done))
        };
        let (bytes, error) = match chunker.feed(src, &mut emit) {
            Ok(n) => (n, None),
            Err(FeedError::Source { bytes, error }) => (bytes, Some(error)),
            Err(FeedError::Sink(e)) => return Err(e),
        };
        self.pos += bytes;
        self.asm.stats.bytes_read += bytes;
        self.events.push(Event::End {
            len: bytes,
            ok: error.is_none(),
        });
        if !packed || error.is_some() {
            self.flush_chunker()?;
        }
        Ok(FileRead { bytes, error })
    }

    fn flush_chunker(&mut self) -> Result<()> {
        if self.chunker.pending() == 0 {
            return Ok(());
        }
        let Ingest {
            chunker,
            pipe,
            events,
            asm,
            ..
        } = self;
        chunker.flush(&mut |data: ChunkBuf| {
            let events = mem::take(events);
            pipe.submit(Job { data, events }, &mut |done| asm.accept(done))
        })
    }

    /// Cuts the last chunk, waits for every worker and flusher (so every new chunk is on disk
    /// under its final name) and returns the statistics and the sink.
    pub(crate) fn finish(mut self) -> Result<(IngestStats, Sink<'t>)> {
        self.flush_chunker()?;
        if !self.events.is_empty() {
            self.submit(ChunkBuf::default())?;
        }
        let Ingest {
            pipe,
            mut asm,
            flushers,
            ..
        } = self;
        let processed = pipe.finish(&mut |done| asm.accept(done));
        for handle in flushers {
            handle
                .join()
                .map_err(|_| Error::Internal("a flusher thread panicked".into()))??;
        }
        processed?;
        if !asm.pending.is_empty() {
            return Err(Error::Internal(format!(
                "{} entries left incomplete after the last chunk",
                asm.pending.len()
            )));
        }
        Ok((asm.stats, asm.sink))
    }
}

/// Stores a whole stream (a spooled tree) and returns its chunk ids in order.
pub(crate) fn store_stream(
    store: &ChunkStore,
    params: ChunkerParams,
    src: &mut dyn Read,
) -> Result<(Vec<ChunkId>, IngestStats)> {
    std::thread::scope(|scope| {
        let mut ingest = Ingest::new(scope, store, params, Sink::Ids(Vec::new()));
        let placeholder = Entry {
            path: Default::default(),
            kind: crate::tree::EntryKind::File,
            mode: 0,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            size: u64::MAX,
            ctime_ns: 0,
            inode: 0,
            chunks: Vec::new(),
            target: None,
        };
        let read = ingest.add_file(placeholder, src)?;
        if let Some(e) = read.error {
            return Err(Error::io("read", "temporary tree file", e));
        }
        match ingest.finish()? {
            (stats, Sink::Ids(ids)) => Ok((ids, stats)),
            _ => Err(Error::Internal("sink changed kind".into())),
        }
    })
}
