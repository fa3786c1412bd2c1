//! Snapshot records and the two ways to make a snapshot: a directory tree or a byte stream.
//!
//! A record lives in `snapshots/<id>`, sealed like a chunk (`"RCS1" || nonce || seal(JSON) ||
//! tag`, associated data `"RCS1" || id`): file names and labels are as private as file contents,
//! and a record renamed to another id fails authentication. The record holds the totals and the
//! ids of the chunks that store its file list, plus a keyed digest of that list. It is written
//! only after every chunk it references has been flushed, so a crash never leaves a visible
//! half snapshot.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic::{is_temp_name, random_bytes, write_atomic};
use crate::chunks::ChunkId;
use crate::error::{Error, IoContext, Result};
use crate::ingest::{Ingest, IngestStats, Sink, store_stream};
use crate::keys::{NONCE_LEN, open_in_place, seal_in_place};
use crate::lock::{Mode, RepoLock};
use crate::repo::Repository;
use crate::tree::{Entry, EntryKind, RawPath, TreeReader, TreeWriter};
use crate::walk::{ParentCursor, Walked, unchanged, walk};

/// Directory of snapshot records.
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";
/// Magic bytes of a record file.
const MAGIC: &[u8; 4] = b"RCS1";
/// Warnings kept in a report (the total is always counted).
const MAX_WARNINGS: usize = 100;

/// What a snapshot was taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A directory tree.
    Dir,
    /// A byte stream stored as one named file (a database dump, say).
    Stream,
}

/// Counts describing one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Symbolic links in the snapshot.
    pub symlinks: u64,
    /// Items not backed up (special files, unreadable files or directories).
    pub skipped: u64,
    /// Files whose chunks were reused from the parent snapshot without reading them.
    pub files_unchanged: u64,
    /// Logical size of all files in the snapshot, in bytes.
    pub size: u64,
    /// Bytes actually read from the source this time.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks that were not in the repository before.
    pub bytes_new: u64,
    /// Bytes added to the repository for new chunks (after compression and encryption; the
    /// small record file itself is not counted).
    pub bytes_stored: u64,
    /// Chunks cut from the data read (and the file list).
    pub chunks_total: u64,
    /// Of those, chunks that were new.
    pub chunks_new: u64,
}

/// A snapshot as listed: everything but its file list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Snapshot id (32 hex characters; unique prefixes are accepted wherever an id is).
    pub id: String,
    /// When the snapshot was taken (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The caller's name for the source; retention and parent lookup group by it.
    pub source_label: String,
    /// Directory or stream.
    pub kind: SnapshotKind,
    /// Source directory (absolute) or the stream's file name.
    pub source: String,
    /// Host that took the snapshot.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Caller-supplied tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Snapshot whose unchanged files were reused, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Counts.
    pub totals: Totals,
    /// How long the snapshot took, in milliseconds.
    pub duration_ms: u64,
    /// Entries in the file list.
    pub entries: u64,
}

/// The stored record: the summary plus where its file list is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    #[serde(flatten)]
    pub(crate) summary: SnapshotSummary,
    /// Chunks holding the file list, in order.
    pub(crate) tree: Vec<ChunkId>,
    /// Keyed BLAKE3 of the file list bytes (hex).
    pub(crate) tree_digest: String,
}

impl SnapshotRecord {
    /// The digest as bytes.
    pub(crate) fn digest(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.tree_digest, &mut out).ok()?;
        Some(out)
    }
}

/// Options of a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotOptions {
    /// Tags recorded with the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    pub hostname: Option<String>,
    /// Snapshot whose unchanged files may be reused (default: the latest directory snapshot
    /// with the same source label).
    pub parent: Option<String>,
    /// Read every file even when its metadata says it is unchanged.
    pub full_read: bool,
    /// Record this time instead of now (importing a backup taken elsewhere, tests).
    #[serde(with = "time::serde::rfc3339::option")]
    pub time: Option<OffsetDateTime>,
    /// Do not cross into other file systems below the source directory.
    pub one_file_system: bool,
    /// Stops the snapshot (with [`Error::Cancelled`], recording nothing) once set.
    #[serde(skip)]
    pub cancel: Option<crate::CancelFlag>,
}

/// The previous snapshot of a source, for recovery-point monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSnapshot {
    /// Its id.
    pub id: String,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Seconds between it and the new snapshot.
    pub age_seconds: i64,
}

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The new snapshot.
    pub snapshot: SnapshotSummary,
    /// Share of the snapshot's bytes that needed no new storage (0 = all new, 1 = all known).
    pub dedup_ratio: f64,
    /// Plaintext bytes of new chunks per byte stored (higher is better; 1 = incompressible).
    pub compression_ratio: f64,
    /// Logical bytes of the snapshot per second, in MiB/s.
    pub throughput_mib_s: f64,
    /// Bytes read from the source per second, in MiB/s.
    pub read_throughput_mib_s: f64,
    /// The previous snapshot with the same source label, if any.
    pub previous: Option<PreviousSnapshot>,
    /// Problems that did not stop the snapshot (first 100).
    pub warnings: Vec<String>,
    /// Number of warnings in total.
    pub warnings_total: u64,
}

#[derive(Default)]
struct Warnings {
    kept: Vec<String>,
    total: u64,
}

impl Warnings {
    fn push(&mut self, w: String) {
        self.total += 1;
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(w);
        }
    }
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / (1024.0 * 1024.0) / secs
    }
}

fn validate_label(label: &str) -> Result<()> {
    if label.trim().is_empty() || label.len() > 200 || label.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "source label {label:?} is invalid; use a short name without control characters, like \"postgres-main\""
        )));
    }
    Ok(())
}

/// This machine's host name, if it has one.
fn local_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its full length; gethostname NUL-terminates on success
    // when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

fn record_aad(id: &str) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn is_snapshot_id(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Repository {
    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR).join(id)
    }

    /// Seals and writes a record atomically and durably.
    pub(crate) fn write_record(&self, record: &SnapshotRecord) -> Result<()> {
        let id = &record.summary.id;
        let mut buf = MAGIC.to_vec();
        buf.resize(MAGIC.len() + NONCE_LEN, 0);
        serde_json::to_writer(&mut buf, record)
            .map_err(|e| Error::Internal(format!("serialize snapshot record: {e}")))?;
        seal_in_place(
            &self.store.keys().cipher,
            &mut buf,
            MAGIC.len() + NONCE_LEN,
            &record_aad(id),
        )?;
        write_atomic(&self.record_path(id), &buf, true)
    }

    /// Reads and opens the record with exactly this id.
    pub(crate) fn read_record(&self, id: &str) -> Result<SnapshotRecord> {
        let path = self.record_path(id);
        let mut buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound { id: id.to_string() });
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let corrupt = |reason: &str| Error::SnapshotCorrupt {
            path: path.clone(),
            reason: reason.to_string(),
        };
        if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a snapshot record"));
        }
        open_in_place(
            &self.store.keys().cipher,
            &mut buf,
            MAGIC.len() + NONCE_LEN,
            &record_aad(id),
        )
        .ok_or_else(|| corrupt("authentication failed: the file was altered or renamed"))?;
        let record: SnapshotRecord = serde_json::from_slice(&buf[MAGIC.len() + NONCE_LEN..])
            .map_err(|e| corrupt(&format!("malformed record: {e}")))?;
        if record.summary.id != id {
            return Err(corrupt("record id does not match its file name"));
        }
        Ok(record)
    }

    /// Ids of all records on disk (unsorted by time).
    pub(crate) fn record_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .read_dir_names(SNAPSHOTS_DIR)?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| !is_temp_name(n) && is_snapshot_id(n))
            .collect())
    }

    /// Every record, newest first.
    pub(crate) fn records(&self) -> Result<Vec<SnapshotRecord>> {
        let mut out = Vec::new();
        for id in self.record_ids()? {
            match self.read_record(&id) {
                Ok(r) => out.push(r),
                // Removed by a concurrent forget between listing and reading.
                Err(Error::SnapshotNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            b.summary
                .time
                .cmp(&a.summary.time)
                .then_with(|| b.summary.id.cmp(&a.summary.id))
        });
        Ok(out)
    }

    /// Resolves a full id or unique prefix to a record.
    pub(crate) fn find_record(&self, id_or_prefix: &str) -> Result<SnapshotRecord> {
        let wanted = id_or_prefix.trim().to_ascii_lowercase();
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound {
                id: id_or_prefix.to_string(),
            });
        }
        if is_snapshot_id(&wanted) {
            return self.read_record(&wanted);
        }
        let matches: Vec<String> = self
            .record_ids()?
            .into_iter()
            .filter(|id| id.starts_with(&wanted))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound {
                id: id_or_prefix.to_string(),
            }),
            1 => self.read_record(&matches[0]),
            count => Err(Error::AmbiguousSnapshot {
                id: id_or_prefix.to_string(),
                count,
            }),
        }
    }

    /// Every snapshot, newest first.
    pub fn list(&self) -> Result<Vec<SnapshotSummary>> {
        Ok(self.records()?.into_iter().map(|r| r.summary).collect())
    }

    /// The newest snapshot of a source label, if there is one.
    pub fn latest(&self, source_label: &str) -> Result<Option<SnapshotSummary>> {
        Ok(self.latest_record(source_label)?.map(|r| r.summary))
    }

    /// One snapshot by id or unique id prefix.
    pub fn snapshot(&self, id_or_prefix: &str) -> Result<SnapshotSummary> {
        Ok(self.find_record(id_or_prefix)?.summary)
    }

    fn latest_record(&self, source_label: &str) -> Result<Option<SnapshotRecord>> {
        Ok(self
            .records()?
            .into_iter()
            .find(|r| r.summary.source_label == source_label))
    }

    /// Backs up a directory tree.
    ///
    /// Files whose size, modification time, change time and inode match the parent snapshot
    /// (by default the latest directory snapshot of the same label) are not read again: their
    /// stored chunks are reused. Symlinks are recorded, not followed; special files and
    /// unreadable items are skipped with a warning. The repository directory itself is skipped
    /// when it lies inside the source.
    pub fn snapshot_dir(
        &self,
        source_label: &str,
        path: impl AsRef<Path>,
        options: &SnapshotOptions,
    ) -> Result<SnapshotReport> {
        let started = Instant::now();
        validate_label(source_label)?;
        let given = path.as_ref();
        let invalid = |reason: String| Error::InvalidSource {
            path: given.to_path_buf(),
            reason,
        };
        let meta = fs::metadata(given).map_err(|e| {
            invalid(format!(
                "{e}; check the path and that runcap is granted read access"
            ))
        })?;
        if !meta.is_dir() {
            return Err(invalid(
                "it is not a directory; use a stream snapshot for a single file or command output"
                    .into(),
            ));
        }
        let src = fs::canonicalize(given).ctx("resolve", given)?;
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "backup")?;
        self.store.refresh()?;
        let time = snapshot_time(options);

        let previous = self.latest_record(source_label)?;
        let parent = if options.full_read {
            None
        } else if let Some(id) = &options.parent {
            Some(self.find_record(id)?)
        } else {
            previous
                .clone()
                .filter(|r| r.summary.kind == SnapshotKind::Dir)
        };
        let repo_dir = fs::metadata(&self.root).ok().map(|m| (m.dev(), m.ino()));

        let mut tree = TreeWriter::new(&self.tmp_dir(), self.store.keys().tree_hasher())?;
        let mut totals = Totals::default();
        let mut warnings = Warnings::default();
        let stats = std::thread::scope(|scope| -> Result<IngestStats> {
            let mut ingest = Ingest::new(
                scope,
                &self.store,
                self.config.chunker,
                Sink::Tree(&mut tree),
            );
            let mut cursor = ParentCursor::new(
                parent
                    .as_ref()
                    .map(|p| TreeReader::new(&self.store, p.tree.clone(), None, &p.summary.id)),
            );
            let mut last_present: Option<ChunkId> = None;
            walk(&src, options.one_file_system, repo_dir, &mut |item| {
                if options.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                    return Err(Error::Cancelled);
                }
                match item {
                    Walked::Dir(e) => {
                        totals.dirs += 1;
                        ingest.add_entry(e)
                    }
                    Walked::Symlink(e) => {
                        totals.symlinks += 1;
                        ingest.add_entry(e)
                    }
                    Walked::Skipped(msg) => {
                        totals.skipped += 1;
                        warnings.push(msg);
                        Ok(())
                    }
                    Walked::File(mut e, abs) => {
                        if let Some(prev) = cursor.find(&e.path)
                            && unchanged(&e, &prev)
                            && self.chunks_present(&prev, &mut last_present)
                        {
                            e.chunks = prev.chunks;
                            totals.files += 1;
                            totals.files_unchanged += 1;
                            totals.size += e.size;
                            return ingest.add_entry(e);
                        }
                        let shown = e.path.display();
                        let mut file = match File::open(&abs) {
                            Ok(f) => f,
                            Err(err) => {
                                totals.skipped += 1;
                                warnings.push(format!("{shown}: {err}; left out"));
                                return Ok(());
                            }
                        };
                        let expected = e.size;
                        let read = ingest.add_file(e, &mut file)?;
                        if options.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                            return Err(Error::Cancelled);
                        }
                        if let Some(err) = read.error {
                            totals.skipped += 1;
                            warnings.push(format!(
                                "{shown}: read failed after {} bytes ({err}); left out",
                                read.bytes
                            ));
                        } else {
                            totals.files += 1;
                            totals.size += read.bytes;
                            if read.bytes != expected {
                                warnings.push(format!(
                                    "{shown}: changed size while being read ({expected} -> {} bytes)",
                                    read.bytes
                                ));
                            }
                        }
                        Ok(())
                    }
                }
            })?;
            if let Some(msg) = cursor.failed.take() {
                warnings.push(format!(
                    "the parent snapshot's file list could not be read ({msg}); files were read again"
                ));
            }
            Ok(ingest.finish()?.0)
        })?;

        self.commit(
            CommitInput {
                started,
                time,
                source_label,
                kind: SnapshotKind::Dir,
                source: src.display().to_string(),
                parent: parent.map(|p| p.summary.id),
                previous,
                options,
                totals,
                stats,
                warnings,
            },
            tree,
        )
    }

    /// Backs up a byte stream (the output of `pg_dump`, `sqlite3 .backup`, ...) as one file
    /// named `file_name`.
    ///
    /// If the reader fails, no snapshot is recorded and [`Error::SourceRead`] says after how many
    /// bytes; chunks already written stay as unreferenced data that `prune` removes.
    pub fn snapshot_stream(
        &self,
        source_label: &str,
        file_name: &str,
        mut reader: impl Read,
        options: &SnapshotOptions,
    ) -> Result<SnapshotReport> {
        let started = Instant::now();
        validate_label(source_label)?;
        if file_name.is_empty()
            || file_name == "."
            || file_name == ".."
            || file_name.contains('/')
            || file_name.contains('\0')
        {
            return Err(Error::InvalidArgument(format!(
                "stream file name {file_name:?} must be a plain file name such as \"db.sql\""
            )));
        }
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "backup")?;
        self.store.refresh()?;
        let time = snapshot_time(options);
        let previous = self.latest_record(source_label)?;
        let mut tree = TreeWriter::new(&self.tmp_dir(), self.store.keys().tree_hasher())?;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let entry = Entry {
            path: RawPath(file_name.as_bytes().to_vec()),
            kind: EntryKind::File,
            mode: 0o600,
            mtime_ns: (time.unix_timestamp_nanos()).clamp(i64::MIN as i128, i64::MAX as i128)
                as i64,
            uid,
            gid,
            // Unknown until the end: large enough to get chunk boundaries of its own.
            size: u64::MAX,
            ctime_ns: 0,
            inode: 0,
            chunks: Vec::new(),
            target: None,
        };
        let stats = std::thread::scope(|scope| -> Result<IngestStats> {
            let mut ingest = Ingest::new(
                scope,
                &self.store,
                self.config.chunker,
                Sink::Tree(&mut tree),
            );
            let read = ingest.add_file(entry, &mut reader)?;
            if let Some(source) = read.error {
                return Err(Error::SourceRead {
                    bytes: read.bytes,
                    source,
                });
            }
            Ok(ingest.finish()?.0)
        })?;
        let totals = Totals {
            files: 1,
            size: stats.bytes_read,
            ..Totals::default()
        };
        self.commit(
            CommitInput {
                started,
                time,
                source_label,
                kind: SnapshotKind::Stream,
                source: file_name.to_string(),
                parent: None,
                previous,
                options,
                totals,
                stats,
                warnings: Warnings::default(),
            },
            tree,
        )
    }

    /// Makes the data durable, stores the file list, writes the record and builds the report.
    fn commit(&self, input: CommitInput<'_>, tree: TreeWriter) -> Result<SnapshotReport> {
        let CommitInput {
            started,
            time,
            source_label,
            kind,
            source,
            parent,
            previous,
            options,
            mut totals,
            stats,
            warnings,
        } = input;
        self.store.sync_dirs()?;
        let entries = tree.entries();
        let (mut spool, digest) = tree.finish()?;
        let (tree_ids, tree_stats) = store_stream(&self.store, self.config.chunker, &mut spool)?;
        drop(spool);
        self.store.sync_dirs()?;

        totals.bytes_read = stats.bytes_read;
        totals.bytes_new = stats.bytes_new + tree_stats.bytes_new;
        totals.bytes_stored = stats.bytes_stored + tree_stats.bytes_stored;
        totals.chunks_total = stats.chunks_total + tree_stats.chunks_total;
        totals.chunks_new = stats.chunks_new + tree_stats.chunks_new;

        let elapsed = started.elapsed();
        let summary = SnapshotSummary {
            id: hex::encode(random_bytes::<16>()?),
            time,
            source_label: source_label.to_string(),
            kind,
            source,
            hostname: options.hostname.clone().or_else(local_hostname),
            tags: options.tags.clone(),
            parent,
            totals,
            duration_ms: elapsed.as_millis() as u64,
            entries,
        };
        let record = SnapshotRecord {
            summary,
            tree: tree_ids,
            tree_digest: hex::encode(digest),
        };
        self.write_record(&record)?;

        let t = &record.summary.totals;
        let secs = elapsed.as_secs_f64();
        Ok(SnapshotReport {
            dedup_ratio: if t.size == 0 {
                1.0
            } else {
                1.0 - (stats.bytes_new as f64 / t.size as f64).min(1.0)
            },
            compression_ratio: if t.bytes_stored == 0 {
                1.0
            } else {
                t.bytes_new as f64 / t.bytes_stored as f64
            },
            throughput_mib_s: mib_per_s(t.size, secs),
            read_throughput_mib_s: mib_per_s(t.bytes_read, secs),
            previous: previous.map(|p| PreviousSnapshot {
                age_seconds: (record.summary.time - p.summary.time).whole_seconds(),
                id: p.summary.id,
                time: p.summary.time,
            }),
            warnings: warnings.kept,
            warnings_total: warnings.total,
            snapshot: record.summary,
        })
    }

    /// Whether every chunk of a previous entry is still stored (consecutive slices of one chunk
    /// are checked once).
    fn chunks_present(&self, prev: &Entry, last_present: &mut Option<ChunkId>) -> bool {
        for slice in &prev.chunks {
            if *last_present == Some(slice.0) {
                continue;
            }
            if !self.store.exists(&slice.0) {
                return false;
            }
            *last_present = Some(slice.0);
        }
        true
    }
}

/// Everything `commit` needs besides the file list.
struct CommitInput<'a> {
    started: Instant,
    time: OffsetDateTime,
    source_label: &'a str,
    kind: SnapshotKind,
    source: String,
    parent: Option<String>,
    previous: Option<SnapshotRecord>,
    options: &'a SnapshotOptions,
    totals: Totals,
    stats: IngestStats,
    warnings: Warnings,
}

fn snapshot_time(options: &SnapshotOptions) -> OffsetDateTime {
    options
        .time
        .unwrap_or_else(OffsetDateTime::now_utc)
        .to_offset(time::UtcOffset::UTC)
}
