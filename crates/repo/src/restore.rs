//! Restoring a snapshot into a directory, or a stream snapshot into a writer.
//!
//! Restore reads the file list twice. The first pass checks the list's digest and every path
//! (relative, no `.`/`..`, nothing beneath a symlink of the snapshot) and, in a dry run, is all
//! there is. The second pass decrypts chunks on the worker pool (each chunk once, even when it
//! holds many small files) while the caller's thread writes files in order: each as a new file
//! that takes its name only once complete (see [`NewFile`]), so a reader never sees half a
//! file. Every chunk is
//! authenticated and its id checked on the way; a damaged chunk fails only the files that use it.
//!
//! Durability: a file that replaces an existing one is flushed before the rename (the old
//! content is at stake); new files are flushed together at the end with one `syncfs`, which is
//! much faster than flushing thousands of small files one by one.
//!
//! Not defended: another local user racing the restore inside the target directory (swapping a
//! verified directory for a symlink between the check and the write). Restore into a directory
//! only trusted users can write.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::NewFile;
use crate::chunks::ChunkId;
use crate::direct::{self, AlignedBuf, BackgroundWriter};
use crate::error::{Error, IoContext, Result};
use crate::lock::{Mode, RepoLock};
use crate::pipeline::{Pipeline, default_workers};
use crate::repo::Repository;
use crate::snapshot::{SnapshotKind, SnapshotRecord};
use crate::tree::{Entry, EntryKind, RawPath, Slice, TreeReader};

/// Files at least this large are preallocated and written directly (around the page cache).
const DIRECT_MIN: u64 = 1024 * 1024;
/// Bytes of a large file staged before a direct write.
const STAGE_LEN: usize = 4 * 1024 * 1024;

/// Chunks a restore keeps after writing them, so a chunk that comes back soon (a disk image's
/// repeated blocks, small files deduplicated into one chunk) is not fetched again. (A chunk
/// repeated back to back is fetched once anyway.)
const RECENT_CHUNKS: usize = 4;

/// Files up to this size are collected in memory and written by the file pool's threads.
const SMALL_MAX: u64 = 256 * 1024;
/// Threads of the file pool: creating, renaming and stamping many small files is system-call
/// and inode-allocation work that runs in parallel on several cores.
const FILE_THREADS: usize = 4;
/// Small files queued for the pool (bounds their memory to this times [`SMALL_MAX`]).
const FILE_QUEUE: usize = 8;

/// Actions queued behind one chunk before a job is cut anyway (bounds memory for long runs of
/// empty files and directories).
const MAX_ACTIONS_PER_JOB: usize = 4096;

/// Options of a restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreOptions {
    /// Only report what would be written; touch nothing.
    pub dry_run: bool,
    /// Replace files that already exist in the target (otherwise they are skipped and listed).
    pub overwrite: bool,
    /// Restore only these paths (and what is beneath them); empty restores everything.
    pub paths: Vec<String>,
    /// Stops the restore (with [`Error::Cancelled`]) once set; files already restored stay.
    #[serde(skip)]
    pub cancel: Option<crate::CancelFlag>,
}

/// One entry a dry run would restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedItem {
    /// Path relative to the target.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Size in bytes (files).
    pub size: u64,
    /// Whether something already exists at that path (it would be overwritten, or skipped
    /// without `overwrite`).
    pub exists: bool,
}

/// A file that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFailure {
    /// Path relative to the target.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What a restore did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Target directory.
    pub target: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Files restored (or that would be).
    pub files: u64,
    /// Directories restored (or that would be).
    pub dirs: u64,
    /// Symlinks restored (or that would be).
    pub symlinks: u64,
    /// File bytes written (or that would be).
    pub bytes: u64,
    /// Entries whose path already exists in the target.
    pub existing: u64,
    /// Dry run only: every entry, with whether it exists already.
    pub planned: Vec<PlannedItem>,
    /// Existing files left alone because `overwrite` was off.
    pub skipped_existing: Vec<String>,
    /// Entries that could not be restored, and why.
    pub failed: Vec<RestoreFailure>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Bytes written per second, in MiB/s.
    pub throughput_mib_s: f64,
    /// True when every selected entry was restored or deliberately skipped.
    pub complete: bool,
}

/// What restoring a stream snapshot wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRestoreReport {
    /// Snapshot restored.
    pub snapshot_id: String,
    /// The stream's file name.
    pub file_name: String,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Bytes per second, in MiB/s.
    pub throughput_mib_s: f64,
}

/// Checks a recorded path is relative and stays inside the target.
pub(crate) fn check_path(p: &RawPath) -> std::result::Result<(), &'static str> {
    if p.0.is_empty() {
        return Err("has an empty path");
    }
    if p.0[0] == b'/' {
        return Err("is an absolute path");
    }
    if p.0.contains(&0) {
        return Err("contains a NUL byte");
    }
    for c in p.components() {
        if c.is_empty() || c == b"." || c == b".." {
            return Err("contains an empty, '.' or '..' component");
        }
    }
    Ok(())
}

/// Proper ancestors of a path, shortest first.
fn ancestors(p: &RawPath) -> impl Iterator<Item = &[u8]> {
    p.0.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| &p.0[..i])
}

pub(crate) fn selected(p: &RawPath, includes: &[Vec<u8>]) -> bool {
    includes.is_empty()
        || includes
            .iter()
            .any(|inc| p.0 == *inc || (p.0.starts_with(inc) && p.0.get(inc.len()) == Some(&b'/')))
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub(crate) fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / (1024.0 * 1024.0) / secs
    }
}

/// A step of the write plan, carried behind the chunk it needs.
pub(crate) enum Action {
    Begin(Entry),
    Write(Slice),
    End,
    Other(Entry),
}

struct Job {
    fetch: Option<ChunkId>,
    actions: Vec<Action>,
}

pub(crate) struct Fetched {
    pub(crate) chunk: Option<(ChunkId, std::result::Result<Vec<u8>, String>)>,
    pub(crate) actions: Vec<Action>,
}

/// Cuts the write plan into jobs of one chunk each and submits them.
struct Planner<'p> {
    pipe: &'p mut Pipeline<Job, Fetched>,
    job: Job,
    last_fetch: Option<ChunkId>,
    /// The last chunks fetched, oldest first, at most `keep`: the sink keeps the same ones,
    /// so a chunk among them is not fetched (decrypted, decompressed, checked) again.
    recent: VecDeque<ChunkId>,
    keep: usize,
}

impl Planner<'_> {
    fn push(&mut self, action: Action, sink: &mut dyn FnMut(Fetched) -> Result<()>) -> Result<()> {
        if let Action::Write(slice) = &action
            && self.last_fetch != Some(slice.0)
        {
            if !self.recent.contains(&slice.0) {
                self.cut(Some(slice.0), sink)?;
                if self.keep > 0 {
                    self.recent.push_back(slice.0);
                    if self.recent.len() > self.keep {
                        self.recent.pop_front();
                    }
                }
            }
            self.last_fetch = Some(slice.0);
        }
        self.job.actions.push(action);
        if self.job.actions.len() >= MAX_ACTIONS_PER_JOB {
            self.cut(None, sink)?;
        }
        Ok(())
    }

    fn cut(
        &mut self,
        next_fetch: Option<ChunkId>,
        sink: &mut dyn FnMut(Fetched) -> Result<()>,
    ) -> Result<()> {
        let job = std::mem::replace(
            &mut self.job,
            Job {
                fetch: next_fetch,
                actions: Vec::new(),
            },
        );
        if job.fetch.is_some() || !job.actions.is_empty() {
            self.pipe.submit(job, sink)?;
        }
        Ok(())
    }
}

enum FileState {
    Writing {
        out: NewFile,
        replaces: bool,
        /// Large files, staged in [`Writer::stage`] and written directly (see
        /// [`crate::direct`]) by [`Writer::blocks`].
        direct: Option<Direct>,
    },
    /// A small file collected in memory, written whole by a [`FilePool`] thread.
    Buffered(Vec<u8>),
    Skip,
    Failed(String),
}

/// Where a large file's direct writes stand.
struct Direct {
    /// The file, shared with the block writer's thread.
    file: Arc<File>,
    /// Bytes handed to the block writer so far.
    offset: u64,
}

struct OpenFile {
    entry: Entry,
    dest: PathBuf,
    state: FileState,
    written: u64,
}

/// Applies actions in order on the caller's thread.
struct Writer<'r> {
    target: PathBuf,
    overwrite: bool,
    as_root: bool,
    verified: HashSet<Vec<u8>>,
    /// Directories this restore created (relative paths; the empty path is the target):
    /// nothing can be in the way of what is restored into them.
    created: HashSet<Vec<u8>>,
    dirs: Vec<(PathBuf, Entry)>,
    current: Option<OpenFile>,
    /// The last chunks received, oldest first (the planner's `recent`, at least one).
    recent: VecDeque<(ChunkId, std::result::Result<Vec<u8>, String>)>,
    /// Staging buffer of the large file being written.
    stage: AlignedBuf,
    /// Writes the large file's staged blocks while the next ones are staged.
    blocks: BackgroundWriter,
    /// Threads writing small files.
    files: FilePool,
    report: &'r mut RestoreReport,
}

impl Writer<'_> {
    fn accept(&mut self, fetched: Fetched) -> Result<()> {
        if let Some(chunk) = fetched.chunk {
            self.recent.push_back(chunk);
            if self.recent.len() > RECENT_CHUNKS.max(1) {
                self.recent.pop_front();
            }
        }
        for action in fetched.actions {
            match action {
                Action::Begin(entry) => self.begin(entry)?,
                Action::Write(slice) => self.write(slice)?,
                Action::End => self.end()?,
                Action::Other(entry) => self.other(entry)?,
            }
        }
        Ok(())
    }

    /// Takes the outcomes of small files written so far into the report (all of them, waiting
    /// for the pool to finish, when `all`).
    fn collect_files(&mut self, all: bool) -> Result<()> {
        let outcomes = if all {
            self.files.finish()
        } else {
            self.files.ready()
        };
        for outcome in outcomes {
            match outcome? {
                Outcome::Restored(bytes) => {
                    self.report.files += 1;
                    self.report.bytes += bytes;
                }
                Outcome::Skipped(path) => self.report.skipped_existing.push(path),
                Outcome::Failed(path, reason) => self.fail(&path, reason),
            }
        }
        Ok(())
    }

    fn fail(&mut self, path: &RawPath, reason: String) {
        self.report.failed.push(RestoreFailure {
            path: path.display(),
            reason,
        });
    }

    /// Makes sure every ancestor of `rel` is a real directory inside the target, creating
    /// missing ones; refuses symlinks and other non-directories on the way.
    fn ensure_parents(&mut self, rel: &RawPath) -> std::result::Result<(), String> {
        for prefix in ancestors(rel) {
            if self.verified.contains(prefix) {
                continue;
            }
            let p = self.target.join(RawPath(prefix.to_vec()).as_path());
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "refused: its parent {} is a symlink or not a directory",
                        String::from_utf8_lossy(prefix)
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&p).map_err(|e| format!("cannot create directory: {e}"))?;
                    self.created.insert(prefix.to_vec());
                }
                Err(e) => return Err(format!("cannot inspect parent directory: {e}")),
            }
            self.verified.insert(prefix.to_vec());
        }
        Ok(())
    }

    /// Whether `rel`'s directory was created by this restore.
    fn created_parent(&self, rel: &RawPath) -> bool {
        self.created
            .contains(ancestors(rel).last().unwrap_or_default())
    }

    fn begin(&mut self, entry: Entry) -> Result<()> {
        let dest = self.target.join(entry.path.as_path());
        let state = match self.ensure_parents(&entry.path) {
            Err(reason) => FileState::Failed(reason),
            // Small files are checked, created and written on the pool's threads.
            Ok(()) if entry.size <= SMALL_MAX => {
                self.collect_files(false)?;
                FileState::Buffered(Vec::with_capacity(entry.size as usize))
            }
            Ok(()) => match destination(&dest, self.overwrite, self.created_parent(&entry.path)) {
                Destination::Free => self.open_new(&dest, false, entry.size)?,
                Destination::Replace => self.open_new(&dest, true, entry.size)?,
                Destination::Skip => {
                    self.report.skipped_existing.push(entry.path.display());
                    FileState::Skip
                }
                Destination::Blocked(reason) => FileState::Failed(reason),
            },
        };
        self.current = Some(OpenFile {
            entry,
            dest,
            state,
            written: 0,
        });
        Ok(())
    }

    fn open_new(&mut self, dest: &Path, replaces: bool, size: u64) -> Result<FileState> {
        Ok(match NewFile::create(dest) {
            Ok(mut out) => {
                let direct = if size >= DIRECT_MIN {
                    // Preallocate: one extent for the whole file rather than one per write.
                    // SAFETY: fallocate on a descriptor we own; a refusal is harmless.
                    unsafe { libc::fallocate(out.file().as_raw_fd(), 0, 0, size as libc::off_t) };
                    self.stage.clear();
                    let file = out.file().try_clone().ctx("open", dest)?;
                    Some(Direct {
                        file: Arc::new(file),
                        offset: 0,
                    })
                } else {
                    None
                };
                FileState::Writing {
                    out,
                    replaces,
                    direct,
                }
            }
            Err(e) => FileState::Failed(e.to_string()),
        })
    }

    fn write(&mut self, slice: Slice) -> Result<()> {
        let Some(file) = self.current.as_mut() else {
            return Err(Error::Internal("write outside a file".into()));
        };
        if !matches!(
            file.state,
            FileState::Writing { .. } | FileState::Buffered(_)
        ) {
            return Ok(());
        }
        let data = match self.recent.iter().rev().find(|(id, _)| *id == slice.0) {
            Some((_, Ok(data))) => data,
            Some((_, Err(reason))) => {
                file.state = FileState::Failed(reason.clone());
                return Ok(());
            }
            None => return Err(Error::Internal("chunk arrived out of order".into())),
        };
        let (off, len) = (slice.1 as usize, slice.2 as usize);
        let Some(bytes) = data.get(off..off + len) else {
            file.state = FileState::Failed(format!(
                "the snapshot points past the end of chunk {}",
                slice.0
            ));
            return Ok(());
        };
        match &mut file.state {
            FileState::Buffered(buf) => buf.extend_from_slice(bytes),
            FileState::Writing {
                out, direct: None, ..
            } => out.file().write_all(bytes).ctx("write", &file.dest)?,
            FileState::Writing {
                direct: Some(d), ..
            } => {
                self.stage.extend_from_slice(bytes);
                if self.stage.len() >= STAGE_LEN {
                    let n = self
                        .blocks
                        .write(&d.file, &mut self.stage, d.offset)
                        .ctx("write", &file.dest)?;
                    d.offset += n as u64;
                }
            }
            FileState::Skip | FileState::Failed(_) => {}
        }
        file.written += len as u64;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let Some(file) = self.current.take() else {
            return Err(Error::Internal("file end without a beginning".into()));
        };
        let OpenFile {
            entry,
            dest,
            state,
            written,
        } = file;
        match state {
            FileState::Skip => {}
            FileState::Failed(reason) => self.fail(&entry.path, reason),
            FileState::Buffered(data) => {
                if written != entry.size {
                    self.fail(&entry.path, size_mismatch(entry.size, written));
                    return Ok(());
                }
                let job = SmallFile {
                    fresh_parent: self.created_parent(&entry.path),
                    entry,
                    dest,
                    data,
                    overwrite: self.overwrite,
                    as_root: self.as_root,
                };
                self.files.submit(job)?;
            }
            FileState::Writing {
                out,
                replaces,
                direct,
            } => {
                if let Some(d) = direct {
                    self.blocks.wait().ctx("write", &dest)?;
                    let rest = direct::write_all_at(&d.file, self.stage.as_slice(), d.offset);
                    self.stage.clear();
                    rest.ctx("write", &dest)?;
                }
                if written != entry.size {
                    self.fail(&entry.path, size_mismatch(entry.size, written));
                    return Ok(());
                }
                match finish_file(out, &dest, &entry, replaces, self.as_root)? {
                    Outcome::Restored(_) => {
                        self.report.files += 1;
                        self.report.bytes += written;
                    }
                    Outcome::Failed(path, reason) => self.fail(&path, reason),
                    Outcome::Skipped(_) => {}
                }
            }
        }
        Ok(())
    }

    fn other(&mut self, entry: Entry) -> Result<()> {
        let dest = self.target.join(entry.path.as_path());
        if let Err(reason) = self.ensure_parents(&entry.path) {
            self.fail(&entry.path, reason);
            return Ok(());
        }
        let existing = match fs::symlink_metadata(&dest) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.fail(&entry.path, format!("cannot inspect target: {e}"));
                return Ok(());
            }
        };
        match entry.kind {
            EntryKind::Dir => {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) if !self.overwrite => {
                        self.fail(&entry.path, "a file or symlink is in the way".into());
                        return Ok(());
                    }
                    Some(_) => {
                        fs::remove_file(&dest).ctx("remove", &dest)?;
                        fs::create_dir(&dest).ctx("create directory", &dest)?;
                    }
                    None => {
                        fs::create_dir(&dest).ctx("create directory", &dest)?;
                        self.created.insert(entry.path.0.clone());
                    }
                }
                self.verified.insert(entry.path.0.clone());
                self.report.dirs += 1;
                self.dirs.push((dest, entry));
            }
            EntryKind::Symlink => {
                let Some(target) = entry.target.as_ref() else {
                    self.fail(&entry.path, "symlink without a target".into());
                    return Ok(());
                };
                match existing {
                    Some(m) if m.is_dir() => {
                        self.fail(&entry.path, "a directory is in the way".into());
                        return Ok(());
                    }
                    Some(_) if !self.overwrite => {
                        self.report.skipped_existing.push(entry.path.display());
                        return Ok(());
                    }
                    Some(_) => fs::remove_file(&dest).ctx("remove", &dest)?,
                    None => {}
                }
                std::os::unix::fs::symlink(target.as_path(), &dest).ctx("create symlink", &dest)?;
                if self.as_root {
                    let _ = std::os::unix::fs::lchown(&dest, Some(entry.uid), Some(entry.gid));
                }
                let t = filetime::FileTime::from_system_time(system_time(entry.mtime_ns));
                let _ = filetime::set_symlink_file_times(&dest, t, t);
                self.report.symlinks += 1;
            }
            EntryKind::File => return Err(Error::Internal("file passed as other".into())),
        }
        Ok(())
    }

    /// Applies directory modes and times last (writing files inside changes them), deepest
    /// first so a read-only directory does not block its children.
    fn finish_dirs(&mut self) -> Result<()> {
        self.collect_files(true)?;
        for (dest, entry) in self.dirs.iter().rev() {
            if self.as_root {
                let _ = std::os::unix::fs::lchown(dest, Some(entry.uid), Some(entry.gid));
            }
            fs::set_permissions(dest, fs::Permissions::from_mode(entry.mode & 0o7777))
                .ctx("set permissions of", dest)?;
            let t = filetime::FileTime::from_system_time(system_time(entry.mtime_ns));
            filetime::set_file_times(dest, t, t).ctx("set times of", dest)?;
        }
        Ok(())
    }
}

/// Sets owner, mode and times of a written file, flushes it when it replaces an existing file,
/// and publishes it at `dest`. A file that appeared at `dest` since it was looked at (when
/// nothing was to be replaced) is left alone and the entry fails.
fn finish_file(
    mut out: NewFile,
    dest: &Path,
    entry: &Entry,
    replaces: bool,
    as_root: bool,
) -> Result<Outcome> {
    let file = out.file();
    if as_root {
        std::os::unix::fs::fchown(&*file, Some(entry.uid), Some(entry.gid))
            .ctx("set owner of", dest)?;
    }
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777))
        .ctx("set permissions of", dest)?;
    file.set_times(FileTimes::new().set_modified(system_time(entry.mtime_ns)))
        .ctx("set times of", dest)?;
    if replaces {
        file.sync_all().ctx("flush to disk", dest)?;
    }
    match out.publish(dest, replaces) {
        Ok(()) => Ok(Outcome::Restored(entry.size)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Outcome::Failed(
            entry.path.clone(),
            "something appeared at this path during the restore; left alone".to_string(),
        )),
        Err(e) => Err(Error::io("move into place", dest, e)),
    }
}

/// What is at a file's destination, and so what restoring the file does there.
enum Destination {
    /// Nothing: the file is created.
    Free,
    /// A file or symlink, to be replaced (`overwrite`).
    Replace,
    /// A file or symlink, left alone (no `overwrite`).
    Skip,
    /// A directory, or something that cannot be inspected; the entry fails.
    Blocked(String),
}

/// Looks at a file's destination, unless its directory was created by this restore
/// (`fresh_parent`), where nothing can be in the way.
fn destination(dest: &Path, overwrite: bool, fresh_parent: bool) -> Destination {
    if fresh_parent {
        return Destination::Free;
    }
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Destination::Blocked("a directory is in the way".to_string()),
        Ok(_) if overwrite => Destination::Replace,
        Ok(_) => Destination::Skip,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Destination::Free,
        Err(e) => Destination::Blocked(format!("cannot inspect target: {e}")),
    }
}

/// A small file to write whole.
struct SmallFile {
    entry: Entry,
    dest: PathBuf,
    data: Vec<u8>,
    overwrite: bool,
    as_root: bool,
    /// The file's directory was created by this restore, so nothing can be in the way.
    fresh_parent: bool,
}

/// What writing a small file did.
enum Outcome {
    Restored(u64),
    Skipped(String),
    Failed(RawPath, String),
}

impl SmallFile {
    /// The same steps as a large file on the caller's thread: look at what is in the way
    /// (nothing is, in a directory this restore created), write a new file, stamp it and
    /// publish it.
    fn write(self) -> Result<Outcome> {
        let SmallFile {
            entry,
            dest,
            data,
            overwrite,
            as_root,
            fresh_parent,
        } = self;
        let replaces = match destination(&dest, overwrite, fresh_parent) {
            Destination::Free => false,
            Destination::Replace => true,
            Destination::Skip => return Ok(Outcome::Skipped(entry.path.display())),
            Destination::Blocked(reason) => return Ok(Outcome::Failed(entry.path, reason)),
        };
        let mut out = match NewFile::create(&dest) {
            Ok(f) => f,
            Err(e) => return Ok(Outcome::Failed(entry.path, e.to_string())),
        };
        out.file().write_all(&data).ctx("write", &dest)?;
        finish_file(out, &dest, &entry, replaces, as_root)
    }
}

/// Threads writing small files, fed in order by the caller's thread; outcomes come back in
/// any order.
struct FilePool {
    jobs: Option<crossbeam_channel::Sender<SmallFile>>,
    outcomes: crossbeam_channel::Receiver<Result<Outcome>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pending: usize,
}

impl FilePool {
    fn new(threads: usize) -> FilePool {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<SmallFile>(FILE_QUEUE);
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let threads = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = out_tx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        if tx.send(job.write()).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        FilePool {
            jobs: Some(job_tx),
            outcomes: out_rx,
            threads,
            pending: 0,
        }
    }

    fn submit(&mut self, job: SmallFile) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::Internal("file pool already finished".into()))?
            .send(job)
            .map_err(|_| Error::Internal("the file writer threads stopped".into()))?;
        self.pending += 1;
        Ok(())
    }

    /// Outcomes available now.
    fn ready(&mut self) -> Vec<Result<Outcome>> {
        let v: Vec<_> = self.outcomes.try_iter().collect();
        self.pending -= v.len();
        v
    }

    /// Waits for every submitted file.
    fn finish(&mut self) -> Vec<Result<Outcome>> {
        let mut v = Vec::new();
        while self.pending > 0 {
            match self.outcomes.recv() {
                Ok(o) => {
                    v.push(o);
                    self.pending -= 1;
                }
                Err(_) => {
                    v.push(Err(Error::Internal(
                        "the file writer threads stopped".into(),
                    )));
                    break;
                }
            }
        }
        v
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Repository {
    /// Restores a snapshot (or, with `options.paths`, part of it) into `target`.
    ///
    /// In a dry run nothing is created or changed: the report lists every entry and whether it
    /// already exists. Paths that would leave the target (absolute, `..`, beneath a symlink)
    /// make the whole restore fail with [`Error::UnsafePath`] before anything is written.
    pub fn restore(
        &self,
        snapshot_id: &str,
        target: impl AsRef<Path>,
        options: &RestoreOptions,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "restore")?;
        self.store.refresh()?;
        let record = self.find_record(snapshot_id)?;
        let id = record.summary.id.clone();
        let target_given = target.as_ref();
        let includes: Vec<Vec<u8>> = options
            .paths
            .iter()
            .map(|p| p.trim_matches('/').as_bytes().to_vec())
            .filter(|p| !p.is_empty())
            .collect();

        // When the target does not exist yet (dry run), look for existing entries nowhere.
        let target_dir = match fs::canonicalize(target_given) {
            Ok(p) => Some(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("resolve", target_given, e)),
        };
        if let Some(dir) = &target_dir
            && !dir.is_dir()
        {
            return Err(Error::InvalidArgument(format!(
                "restore target {} is not a directory; give a directory (it is created if missing)",
                target_given.display()
            )));
        }

        let mut report = RestoreReport {
            snapshot_id: id.clone(),
            target: target_dir
                .as_deref()
                .unwrap_or(target_given)
                .display()
                .to_string(),
            dry_run: options.dry_run,
            ..RestoreReport::default()
        };

        // Pass 1: digest, path safety, plan.
        let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
        let mut reader = TreeReader::new(&self.store, record.tree.clone(), record.digest(), &id);
        while let Some(entry) = reader.next_entry()? {
            let unsafe_path = |reason| Error::UnsafePath {
                snapshot: id.clone(),
                path: entry.path.display(),
                reason,
            };
            check_path(&entry.path).map_err(unsafe_path)?;
            if ancestors(&entry.path).any(|a| symlinks.contains(a)) {
                return Err(unsafe_path("lies beneath a symlink of the snapshot"));
            }
            if entry.kind == EntryKind::Symlink {
                symlinks.insert(entry.path.0.clone());
            }
            if entry.kind == EntryKind::File
                && entry.chunks.iter().map(|s| u64::from(s.2)).sum::<u64>() != entry.size
            {
                return Err(Error::SnapshotCorrupt {
                    path: PathBuf::from("snapshots").join(&id),
                    reason: format!(
                        "entry {} lists a size that its chunks do not add up to",
                        entry.path.display()
                    ),
                });
            }
            if !selected(&entry.path, &includes) || !options.dry_run {
                continue;
            }
            let exists = target_dir
                .as_ref()
                .is_some_and(|t| fs::symlink_metadata(t.join(entry.path.as_path())).is_ok());
            match entry.kind {
                EntryKind::File => {
                    report.files += 1;
                    report.bytes += entry.size;
                }
                EntryKind::Dir => report.dirs += 1,
                EntryKind::Symlink => report.symlinks += 1,
            }
            if exists {
                report.existing += 1;
            }
            report.planned.push(PlannedItem {
                path: entry.path.display(),
                kind: kind_name(entry.kind).to_string(),
                size: entry.size,
                exists,
            });
        }
        if options.dry_run {
            report.complete = true;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        // Pass 2: write.
        let target_created = target_dir.is_none();
        let target_dir = match target_dir {
            Some(t) => t,
            None => {
                crate::atomic::create_dir(target_given)?;
                fs::canonicalize(target_given).ctx("resolve", target_given)?
            }
        };
        report.target = target_dir.display().to_string();
        // SAFETY: geteuid cannot fail and touches no memory.
        let as_root = unsafe { libc::geteuid() } == 0;
        let mut writer = Writer {
            target: target_dir.clone(),
            overwrite: options.overwrite,
            as_root,
            verified: HashSet::new(),
            created: if target_created {
                HashSet::from([Vec::new()])
            } else {
                HashSet::new()
            },
            dirs: Vec::new(),
            current: None,
            recent: VecDeque::new(),
            stage: AlignedBuf::new(),
            blocks: BackgroundWriter::new(),
            files: FilePool::new(FILE_THREADS),
            report: &mut report,
        };
        let cancel = options.cancel.clone();
        self.run_restore_pipeline(&record, &includes, RECENT_CHUNKS, &mut |f| {
            if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(Error::Cancelled);
            }
            writer.accept(f)
        })?;
        writer.finish_dirs()?;
        drop(writer);
        sync_filesystem(&target_dir)?;

        let secs = started.elapsed().as_secs_f64();
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.throughput_mib_s = mib_per_s(report.bytes, secs);
        report.complete = report.failed.is_empty();
        Ok(report)
    }

    /// Streams the selected entries of a snapshot through the worker pool to `sink`.
    pub(crate) fn run_restore_pipeline(
        &self,
        record: &SnapshotRecord,
        includes: &[Vec<u8>],
        keep: usize,
        sink: &mut dyn FnMut(Fetched) -> Result<()>,
    ) -> Result<()> {
        let store = &self.store;
        let workers = default_workers();
        let work = move |job: Job| -> Result<Fetched> {
            let chunk = job
                .fetch
                .map(|id| (id, store.load(&id).map_err(|e| e.to_string())));
            Ok(Fetched {
                chunk,
                actions: job.actions,
            })
        };
        std::thread::scope(|scope| -> Result<()> {
            // Four fetched chunks per worker in flight, so the workers keep decrypting while
            // the writer waits on a large file's direct write (memory: each is a decrypted
            // chunk, of at most 1 MiB with the default chunk sizes).
            let mut pipe = Pipeline::new(scope, workers, 4 * workers, work);
            let mut planner = Planner {
                pipe: &mut pipe,
                job: Job {
                    fetch: None,
                    actions: Vec::new(),
                },
                last_fetch: None,
                recent: VecDeque::new(),
                keep,
            };
            let mut reader = TreeReader::new(
                store,
                record.tree.clone(),
                record.digest(),
                &record.summary.id,
            );
            while let Some(mut entry) = reader.next_entry()? {
                if !selected(&entry.path, includes) {
                    continue;
                }
                if entry.kind == EntryKind::File {
                    let slices = std::mem::take(&mut entry.chunks);
                    planner.push(Action::Begin(entry), sink)?;
                    for s in slices {
                        planner.push(Action::Write(s), sink)?;
                    }
                    planner.push(Action::End, sink)?;
                } else {
                    planner.push(Action::Other(entry), sink)?;
                }
            }
            planner.cut(None, sink)?;
            pipe.finish(sink)
        })
    }

    /// Writes the file of a stream snapshot to `writer`, verifying every chunk; any damage is
    /// an error (the writer may then hold a partial copy).
    pub fn restore_stream(
        &self,
        snapshot_id: &str,
        mut writer: impl Write,
    ) -> Result<StreamRestoreReport> {
        let started = Instant::now();
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "restore")?;
        self.store.refresh()?;
        let record = self.find_record(snapshot_id)?;
        if record.summary.kind != SnapshotKind::Stream {
            return Err(Error::WrongKind {
                snapshot: record.summary.id.clone(),
                reason: "is a directory snapshot; restore it into a directory instead",
            });
        }
        let mut bytes = 0u64;
        let mut chunk: Option<(ChunkId, Vec<u8>)> = None;
        self.run_restore_pipeline(&record, &[], 0, &mut |fetched| {
            if let Some((id, data)) = fetched.chunk {
                let data = data.map_err(|reason| Error::ChunkCorrupt {
                    id: id.to_hex(),
                    path: self.store.location(&id),
                    reason,
                })?;
                chunk = Some((id, data));
            }
            for action in fetched.actions {
                if let Action::Write(slice) = action {
                    let data = match &chunk {
                        Some((id, data)) if *id == slice.0 => data,
                        _ => return Err(Error::Internal("chunk arrived out of order".into())),
                    };
                    let (off, len) = (slice.1 as usize, slice.2 as usize);
                    let part = data
                        .get(off..off + len)
                        .ok_or_else(|| Error::ChunkCorrupt {
                            id: slice.0.to_hex(),
                            path: self.store.location(&slice.0),
                            reason: "the snapshot points past the end of the chunk".into(),
                        })?;
                    writer
                        .write_all(part)
                        .map_err(|e| Error::io("write", "the restore output", e))?;
                    bytes += len as u64;
                }
            }
            Ok(())
        })?;
        writer
            .flush()
            .map_err(|e| Error::io("flush", "the restore output", e))?;
        let secs = started.elapsed().as_secs_f64();
        Ok(StreamRestoreReport {
            snapshot_id: record.summary.id.clone(),
            file_name: record.summary.source.clone(),
            bytes,
            duration_ms: started.elapsed().as_millis() as u64,
            throughput_mib_s: mib_per_s(bytes, secs),
        })
    }
}

/// Flushes the file system holding `dir` (all restored files at once).
fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("open directory", dir)?;
    // SAFETY: syncfs on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::io(
            "flush file system of",
            dir,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Why a file whose chunks do not add up to its listed size is not restored.
fn size_mismatch(listed: u64, written: u64) -> String {
    format!("the snapshot lists {listed} bytes but its chunks hold {written}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_checks() {
        let p = |s: &str| RawPath(s.as_bytes().to_vec());
        assert!(check_path(&p("a/b.txt")).is_ok());
        assert!(check_path(&p("../x")).is_err());
        assert!(check_path(&p("a/../../x")).is_err());
        assert!(check_path(&p("/etc/passwd")).is_err());
        assert!(check_path(&p("a//b")).is_err());
        assert!(check_path(&p("./a")).is_err());
        assert!(check_path(&p("")).is_err());
        let abc = p("a/b/c");
        let anc: Vec<&[u8]> = ancestors(&abc).collect();
        assert_eq!(anc, vec![&b"a"[..], &b"a/b"[..]]);
        let inc = vec![b"a/b".to_vec()];
        assert!(selected(&p("a/b"), &inc));
        assert!(selected(&p("a/b/c"), &inc));
        assert!(!selected(&p("a/bc"), &inc));
        assert!(!selected(&p("a"), &inc));
    }

    /// A file that appears at a path after it was found free (or in a directory the restore
    /// created, where it is not looked up) is left alone, and the entry fails saying why; with
    /// `replaces`, the restored file takes its place.
    #[test]
    fn a_file_that_appears_meanwhile_is_left_alone_unless_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.conf");
        let entry: Entry = serde_json::from_value(serde_json::json!({
            "path": "app.conf", "type": "file", "mode": 0o640, "mtime_ns": 1_700_000_000_000_000_000i64, "size": 8
        }))
        .unwrap();
        let restored = || {
            let mut out = NewFile::create(&dest).unwrap();
            out.file().write_all(b"restored").unwrap();
            out
        };
        let out = restored();
        fs::write(&dest, "someone else's").unwrap();
        match finish_file(out, &dest, &entry, false, false).unwrap() {
            Outcome::Failed(path, reason) => {
                assert_eq!(path.display(), "app.conf");
                assert!(reason.contains("appeared"), "{reason}");
            }
            _ => panic!("the file that appeared was not reported"),
        }
        assert_eq!(fs::read(&dest).unwrap(), b"someone else's");

        let out = restored();
        assert!(matches!(
            finish_file(out, &dest, &entry, true, false).unwrap(),
            Outcome::Restored(8)
        ));
        assert_eq!(fs::read(&dest).unwrap(), b"restored");
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            meta.modified().unwrap(),
            system_time(1_700_000_000_000_000_000)
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary name is left");
    }
}
