//! Comparing a directory with a snapshot: the check at the end of a restore drill.
//!
//! Every file of the snapshot is read back from the directory and compared byte for byte with
//! the snapshot's chunks, which are decrypted, authenticated and checked against their ids on
//! the way (the same pipeline restore uses). A match therefore proves that what is on disk is
//! exactly what was backed up, not merely that a restore ran. Directories and symlinks are
//! checked for type (and symlink target); permissions and times are not compared, since a
//! restore by a non-root user cannot always reproduce ownership.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::chunks::ChunkId;
use crate::error::{Error, IoContext, Result};
use crate::lock::{Mode, RepoLock};
use crate::repo::Repository;
use crate::restore::{Action, Fetched, check_path, mib_per_s};
use crate::tree::{Entry, EntryKind, RawPath, TreeReader};

/// Differences reported in full (the count is always complete).
const MAX_DIFFERENCES: usize = 1000;

/// One way the directory differs from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Path relative to the directory.
    pub path: String,
    /// What differs.
    pub reason: String,
}

/// The result of [`Repository::compare`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Snapshot compared against.
    pub snapshot_id: String,
    /// Directory compared.
    pub target: String,
    /// Files of the snapshot checked.
    pub files: u64,
    /// Of those, files whose content matched exactly.
    pub files_matched: u64,
    /// Directories and symlinks checked.
    pub others: u64,
    /// File bytes compared.
    pub bytes: u64,
    /// The differences found (first 1000).
    pub differences: Vec<Difference>,
    /// Number of differences in total.
    pub differences_total: u64,
    /// True when every entry of the snapshot is in the directory with the same content.
    pub ok: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Bytes compared per second, in MiB/s.
    pub throughput_mib_s: f64,
}

impl CompareReport {
    fn differ(&mut self, path: &RawPath, reason: impl Into<String>) {
        self.differences_total += 1;
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(Difference {
                path: path.display(),
                reason: reason.into(),
            });
        }
    }
}

/// The file being compared.
struct Open {
    entry: Entry,
    /// `None` once a difference was found (the rest of the file is skipped).
    file: Option<BufReader<File>>,
    compared: u64,
}

struct Comparer<'r> {
    root: PathBuf,
    current: Option<Open>,
    chunk: Option<(ChunkId, std::result::Result<Vec<u8>, String>)>,
    buf: Vec<u8>,
    report: &'r mut CompareReport,
}

impl Comparer<'_> {
    fn accept(&mut self, fetched: Fetched) -> Result<()> {
        if fetched.chunk.is_some() {
            self.chunk = fetched.chunk;
        }
        for action in fetched.actions {
            match action {
                Action::Begin(entry) => self.begin(entry),
                Action::Write(slice) => {
                    let Some(open) = self.current.as_mut() else {
                        return Err(Error::Internal("data outside a file".into()));
                    };
                    let Some(file) = open.file.as_mut() else {
                        continue;
                    };
                    let data = match &self.chunk {
                        Some((id, Ok(data))) if *id == slice.0 => data,
                        Some((id, Err(reason))) if *id == slice.0 => {
                            let reason =
                                format!("cannot read its data from the repository: {reason}");
                            open.file = None;
                            let path = open.entry.path.clone();
                            self.report.differ(&path, reason);
                            continue;
                        }
                        _ => return Err(Error::Internal("chunk arrived out of order".into())),
                    };
                    let (off, len) = (slice.1 as usize, slice.2 as usize);
                    let Some(expected) = data.get(off..off + len) else {
                        open.file = None;
                        let path = open.entry.path.clone();
                        self.report
                            .differ(&path, "the snapshot points past the end of a chunk");
                        continue;
                    };
                    self.buf.resize(len, 0);
                    let mismatch = match file.read_exact(&mut self.buf) {
                        Ok(()) if self.buf == expected => None,
                        Ok(()) => Some(format!(
                            "content differs within bytes {}..{}",
                            open.compared,
                            open.compared + len as u64
                        )),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(format!(
                            "shorter than in the snapshot ({} bytes expected)",
                            open.entry.size
                        )),
                        Err(e) => Some(format!("cannot read it: {e}")),
                    };
                    open.compared += len as u64;
                    self.report.bytes += len as u64;
                    if let Some(reason) = mismatch {
                        open.file = None;
                        let path = open.entry.path.clone();
                        self.report.differ(&path, reason);
                    }
                }
                Action::End => {
                    let Some(open) = self.current.take() else {
                        return Err(Error::Internal("file end without a beginning".into()));
                    };
                    if let Some(mut file) = open.file {
                        let mut one = [0u8; 1];
                        match file.read(&mut one) {
                            Ok(0) => self.report.files_matched += 1,
                            Ok(_) => self.report.differ(
                                &open.entry.path,
                                format!(
                                    "longer than in the snapshot ({} bytes expected)",
                                    open.entry.size
                                ),
                            ),
                            Err(e) => self
                                .report
                                .differ(&open.entry.path, format!("cannot read it: {e}")),
                        }
                    }
                }
                Action::Other(entry) => self.other(&entry),
            }
        }
        Ok(())
    }

    fn begin(&mut self, entry: Entry) {
        self.report.files += 1;
        let path = self.root.join(entry.path.as_path());
        let file = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() != entry.size => {
                self.report.differ(
                    &entry.path,
                    format!("size is {} bytes, the snapshot has {}", m.len(), entry.size),
                );
                None
            }
            Ok(m) if m.is_file() => match File::open(&path) {
                Ok(f) => Some(BufReader::with_capacity(256 * 1024, f)),
                Err(e) => {
                    self.report
                        .differ(&entry.path, format!("cannot open it: {e}"));
                    None
                }
            },
            Ok(_) => {
                self.report
                    .differ(&entry.path, "is not a regular file in the directory");
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.report.differ(&entry.path, "missing");
                None
            }
            Err(e) => {
                self.report
                    .differ(&entry.path, format!("cannot inspect it: {e}"));
                None
            }
        };
        self.current = Some(Open {
            entry,
            file,
            compared: 0,
        });
    }

    fn other(&mut self, entry: &Entry) {
        self.report.others += 1;
        let path = self.root.join(entry.path.as_path());
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.report.differ(&entry.path, "missing");
                return;
            }
            Err(e) => {
                self.report
                    .differ(&entry.path, format!("cannot inspect it: {e}"));
                return;
            }
        };
        match entry.kind {
            EntryKind::Dir if !meta.is_dir() => {
                self.report.differ(&entry.path, "is not a directory")
            }
            EntryKind::Symlink if !meta.file_type().is_symlink() => {
                self.report.differ(&entry.path, "is not a symlink")
            }
            EntryKind::Symlink => {
                let want = entry.target.as_ref().map(|t| t.as_path().to_path_buf());
                match fs::read_link(&path) {
                    Ok(t) if Some(&t) == want.as_ref() => {}
                    Ok(t) => self.report.differ(
                        &entry.path,
                        format!("points to {}, not to the snapshot's target", t.display()),
                    ),
                    Err(e) => self
                        .report
                        .differ(&entry.path, format!("cannot read the link: {e}")),
                }
            }
            _ => {}
        }
    }
}

impl Repository {
    /// Compares `dir` with a snapshot: every file's bytes against the snapshot's (authenticated)
    /// chunks, and the type of every directory and symlink. Files in `dir` that the snapshot does
    /// not have are not reported. Nothing is written.
    pub fn compare(&self, snapshot_id: &str, dir: impl AsRef<Path>) -> Result<CompareReport> {
        let started = Instant::now();
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "compare")?;
        self.store.refresh()?;
        let record = self.find_record(snapshot_id)?;
        let given = dir.as_ref();
        let root = fs::canonicalize(given).ctx("resolve", given)?;
        if !root.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory; compare a snapshot with the directory it was restored into",
                given.display()
            )));
        }
        // The paths must be safe to join before any file is opened.
        let mut reader = TreeReader::new(
            &self.store,
            record.tree.clone(),
            record.digest(),
            &record.summary.id,
        );
        while let Some(entry) = reader.next_entry()? {
            check_path(&entry.path).map_err(|reason| Error::UnsafePath {
                snapshot: record.summary.id.clone(),
                path: entry.path.display(),
                reason,
            })?;
        }
        let mut report = CompareReport {
            snapshot_id: record.summary.id.clone(),
            target: root.display().to_string(),
            ..CompareReport::default()
        };
        let mut comparer = Comparer {
            root,
            current: None,
            chunk: None,
            buf: Vec::new(),
            report: &mut report,
        };
        self.run_restore_pipeline(&record, &[], 0, &mut |f| comparer.accept(f))?;
        drop(comparer);
        report.ok = report.differences_total == 0;
        let elapsed = started.elapsed();
        report.duration_ms = elapsed.as_millis() as u64;
        report.throughput_mib_s = mib_per_s(report.bytes, elapsed.as_secs_f64());
        Ok(report)
    }
}
