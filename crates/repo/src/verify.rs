//! Checking a repository: every snapshot readable, every referenced chunk present and, when
//! asked, every referenced chunk intact.
//!
//! Verification never stops at the first problem: an operator needs the whole damage report
//! (which chunks, which snapshots, which files) to decide what to re-back-up.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::chunks::ChunkId;
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::pipeline::{Pipeline, default_workers};
use crate::repo::Repository;
use crate::tree::{EntryKind, TreeReader};

/// Problems reported in full (the counts are always complete).
const MAX_PROBLEMS: usize = 1000;
/// Detail of a missing chunk.
const MISSING: &str = "no pack holds this chunk";

/// Kind of a problem found by verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A referenced chunk is in no pack (nor loose chunk file).
    MissingChunk,
    /// A chunk failed authentication, decompression or its id check.
    CorruptChunk,
    /// A snapshot record or its file list cannot be read.
    UnreadableSnapshot,
    /// A snapshot's file list contradicts itself or its chunks.
    Inconsistent,
    /// A pack file's index cannot be read: none of its chunks can be found.
    CorruptPack,
}

/// One problem found by verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Chunk id, for chunk problems.
    pub chunk: Option<String>,
    /// The file holding the chunk (its pack), for damaged chunks and packs.
    pub chunk_path: Option<String>,
    /// A snapshot affected (the first that references the chunk).
    pub snapshot: Option<String>,
    /// A file affected, as recorded in that snapshot (`None` for the snapshot's file list).
    pub file: Option<String>,
    /// Snapshots referencing the chunk.
    pub snapshots_affected: u64,
    /// Details.
    pub detail: String,
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether chunk contents were read and checked.
    pub read_data: bool,
    /// Snapshot records found.
    pub snapshots: u64,
    /// Distinct chunks referenced by readable snapshots.
    pub chunks_referenced: u64,
    /// Chunks whose content was checked (read_data only).
    pub chunks_read: u64,
    /// Bytes of chunk records read (read_data only).
    pub bytes_read: u64,
    /// Referenced chunks that are missing.
    pub chunks_missing: u64,
    /// Referenced chunks that are damaged.
    pub chunks_corrupt: u64,
    /// Snapshots that could not be read.
    pub snapshots_unreadable: u64,
    /// Stored chunks no snapshot references (harmless; `prune` removes them).
    pub chunks_unreferenced: u64,
    /// The problems found (first 1000).
    pub problems: Vec<Problem>,
    /// Number of problems in total.
    pub problems_total: u64,
    /// True when no problem was found.
    pub ok: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl VerifyReport {
    fn add(&mut self, p: Problem) {
        self.problems_total += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// First place a chunk is used, and how much of it is used.
struct Use {
    snapshot: usize,
    file: Option<String>,
    snapshots: u64,
    last_snapshot: usize,
    max_end: u64,
}

impl Repository {
    /// Checks every snapshot and chunk reference; with `read_data`, also reads, decrypts,
    /// decompresses and re-hashes every referenced chunk. Reports every problem found.
    pub fn verify(&self, read_data: bool) -> Result<VerifyReport> {
        let started = Instant::now();
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "verify")?;
        self.store.reload()?;
        let mut report = VerifyReport {
            read_data,
            ..VerifyReport::default()
        };
        for (path, reason) in self.store.unreadable_packs() {
            report.add(Problem {
                kind: ProblemKind::CorruptPack,
                chunk: None,
                chunk_path: Some(path.display().to_string()),
                snapshot: None,
                file: None,
                snapshots_affected: 0,
                detail: reason,
            });
        }
        let ids = self.record_ids()?;
        report.snapshots = ids.len() as u64;
        let mut uses: HashMap<ChunkId, Use> = HashMap::new();
        let add_use = |uses: &mut HashMap<ChunkId, Use>,
                       id: ChunkId,
                       snap: usize,
                       file: Option<&str>,
                       end: u64| {
            let u = uses.entry(id).or_insert_with(|| Use {
                snapshot: snap,
                file: file.map(str::to_string),
                snapshots: 0,
                last_snapshot: usize::MAX,
                max_end: 0,
            });
            if u.last_snapshot != snap {
                u.last_snapshot = snap;
                u.snapshots += 1;
            }
            u.max_end = u.max_end.max(end);
        };

        for (snap, id) in ids.iter().enumerate() {
            let unreadable = |detail: String| Problem {
                kind: ProblemKind::UnreadableSnapshot,
                chunk: None,
                chunk_path: None,
                snapshot: Some(id.clone()),
                file: None,
                snapshots_affected: 1,
                detail,
            };
            let record = match self.read_record(id) {
                Ok(r) => r,
                Err(Error::SnapshotNotFound { .. }) => continue,
                Err(e) => {
                    report.snapshots_unreadable += 1;
                    report.add(unreadable(e.to_string()));
                    continue;
                }
            };
            for cid in &record.tree {
                add_use(&mut uses, *cid, snap, None, 0);
            }
            let mut reader = TreeReader::new(&self.store, record.tree.clone(), record.digest(), id);
            loop {
                match reader.next_entry() {
                    Ok(None) => break,
                    Ok(Some(entry)) => {
                        if entry.kind != EntryKind::File {
                            continue;
                        }
                        let path = entry.path.display();
                        let total: u64 = entry.chunks.iter().map(|s| u64::from(s.2)).sum();
                        if total != entry.size {
                            report.add(Problem {
                                kind: ProblemKind::Inconsistent,
                                chunk: None,
                                chunk_path: None,
                                snapshot: Some(id.clone()),
                                file: Some(path.clone()),
                                snapshots_affected: 1,
                                detail: format!(
                                    "size {} but its chunks hold {total} bytes",
                                    entry.size
                                ),
                            });
                        }
                        for s in &entry.chunks {
                            let end = u64::from(s.1) + u64::from(s.2);
                            add_use(&mut uses, s.0, snap, Some(&path), end);
                        }
                    }
                    Err(e) => {
                        report.snapshots_unreadable += 1;
                        report.add(unreadable(format!("its file list cannot be read: {e}")));
                        break;
                    }
                }
            }
        }
        report.chunks_referenced = uses.len() as u64;

        let mut ordered: Vec<(ChunkId, Use)> = uses.into_iter().collect();
        ordered.sort_by_key(|(id, _)| *id);
        let chunk_problem = |kind, id: &ChunkId, u: &Use, detail: String| Problem {
            kind,
            chunk: Some(id.to_hex()),
            chunk_path: (kind != ProblemKind::MissingChunk)
                .then(|| self.store.location(id).display().to_string()),
            snapshot: ids.get(u.snapshot).cloned(),
            file: u.file.clone(),
            snapshots_affected: u.snapshots,
            detail,
        };

        if !read_data {
            for (id, u) in &ordered {
                if !self.store.exists(id) {
                    report.chunks_missing += 1;
                    report.add(chunk_problem(
                        ProblemKind::MissingChunk,
                        id,
                        u,
                        MISSING.into(),
                    ));
                }
            }
        } else {
            let store = &self.store;
            let ordered = &ordered;
            let work = |i: usize| -> Result<(usize, Result<usize>)> {
                Ok((i, store.load(&ordered[i].0).map(|d| d.len())))
            };
            let workers = default_workers();
            std::thread::scope(|scope| -> Result<()> {
                let mut pipe = Pipeline::new(scope, workers, workers * 2, work);
                let mut sink = |(i, r): (usize, Result<usize>)| -> Result<()> {
                    let (id, u) = &ordered[i];
                    match r {
                        Ok(len) => {
                            report.chunks_read += 1;
                            report.bytes_read += store.stored_len(id).unwrap_or(0);
                            if u.max_end > len as u64 {
                                report.add(chunk_problem(
                                    ProblemKind::Inconsistent,
                                    id,
                                    u,
                                    format!(
                                        "a file uses bytes up to {} but the chunk holds {len}",
                                        u.max_end
                                    ),
                                ));
                            }
                        }
                        Err(Error::ChunkMissing { .. }) => {
                            report.chunks_missing += 1;
                            report.add(chunk_problem(
                                ProblemKind::MissingChunk,
                                id,
                                u,
                                MISSING.into(),
                            ));
                        }
                        Err(Error::ChunkCorrupt { reason, .. }) => {
                            report.chunks_corrupt += 1;
                            report.add(chunk_problem(ProblemKind::CorruptChunk, id, u, reason));
                        }
                        Err(e) => return Err(e),
                    }
                    Ok(())
                };
                for i in 0..ordered.len() {
                    pipe.submit(i, &mut sink)?;
                }
                pipe.finish(&mut sink)
            })?;
        }

        // Unreferenced chunks are harmless (an interrupted backup, forgotten snapshots);
        // they are counted only when every snapshot was readable, else the count means nothing.
        if report.snapshots_unreadable == 0 {
            report.chunks_unreferenced = self
                .store
                .stored_ids()?
                .iter()
                .filter(|id| ordered.binary_search_by_key(id, |(o, _)| o).is_err())
                .count() as u64;
        }

        report.ok = report.problems_total == 0;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// One pack file and the chunk records in it, as its index lists them: what an operator (or a
/// test) needs to see how data is laid out, or to find a damaged chunk's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackListing {
    /// The pack file.
    pub path: String,
    /// Its records in file order.
    pub chunks: Vec<PackedChunk>,
}

/// Where one chunk's record is in its pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedChunk {
    /// Chunk id (hex).
    pub id: String,
    /// Offset of the record in the pack.
    pub offset: u64,
    /// Length of the record (sealed, compressed).
    pub length: u32,
}

impl Repository {
    /// Lists every readable pack and the chunk records in it (packs whose index cannot be read
    /// are left out; [`Repository::verify`] reports them).
    pub fn packs(&self) -> Result<Vec<PackListing>> {
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "list packs")?;
        self.store.refresh()?;
        Ok(self.store.pack_listing())
    }
}
