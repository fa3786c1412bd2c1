//! Walking a source directory, and matching the walk against the previous snapshot's tree.
//!
//! The walk is depth-first with children sorted by name and never follows symlinks. Trees are
//! stored in that same order, so the previous snapshot's tree can be read alongside the walk as a
//! merge join ([`ParentCursor`]): unchanged files are found without loading the old list.

use std::cmp::Ordering;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::error::Result;
use crate::tree::{Entry, EntryKind, RawPath, TreeReader, walk_order};

/// One item of a directory walk.
pub(crate) enum Walked {
    /// A directory (never the root itself).
    Dir(Entry),
    /// A symbolic link, with its target.
    Symlink(Entry),
    /// A regular file and its absolute path.
    File(Entry, PathBuf),
    /// Something not backed up, with the reason (special file, unreadable directory, ...).
    Skipped(String),
}

/// Nanoseconds since the epoch from seconds and nanoseconds, saturating.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A tree entry describing `meta` at relative path `path` (no chunks yet).
pub(crate) fn entry_from_meta(path: RawPath, kind: EntryKind, meta: &Metadata) -> Entry {
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        chunks: Vec::new(),
        target: None,
    }
}

/// Walks `root`, calling `visit` for every item in depth-first, name-sorted order.
///
/// `exclude` is a directory (by device and inode) to leave out — the repository itself when it
/// lives inside the source.
pub(crate) fn walk(
    root: &Path,
    one_file_system: bool,
    exclude: Option<(u64, u64)>,
    visit: &mut dyn FnMut(Walked) -> Result<()>,
) -> Result<()> {
    let mut it = WalkDir::new(root)
        .follow_links(false)
        .same_file_system(one_file_system)
        .sort_by_file_name()
        .into_iter();
    while let Some(next) = it.next() {
        let dent = match next {
            Ok(d) => d,
            Err(e) => {
                let at = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                visit(Walked::Skipped(format!("{at}: {e}")))?;
                continue;
            }
        };
        if dent.depth() == 0 {
            continue;
        }
        let rel = match dent.path().strip_prefix(root) {
            Ok(r) => RawPath(r.as_os_str().as_bytes().to_vec()),
            Err(_) => continue,
        };
        let meta = match dent.metadata() {
            Ok(m) => m,
            Err(e) => {
                visit(Walked::Skipped(format!("{}: {e}", rel.display())))?;
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if exclude == Some((meta.dev(), meta.ino())) {
                it.skip_current_dir();
                continue;
            }
            visit(Walked::Dir(entry_from_meta(rel, EntryKind::Dir, &meta)))?;
        } else if ft.is_symlink() {
            match std::fs::read_link(dent.path()) {
                Ok(target) => {
                    let mut e = entry_from_meta(rel, EntryKind::Symlink, &meta);
                    e.target = Some(RawPath(target.as_os_str().as_bytes().to_vec()));
                    visit(Walked::Symlink(e))?;
                }
                Err(e) => visit(Walked::Skipped(format!("{}: {e}", rel.display())))?,
            }
        } else if ft.is_file() {
            let e = entry_from_meta(rel, EntryKind::File, &meta);
            visit(Walked::File(e, dent.into_path()))?;
        } else {
            let what = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "named pipe"
            } else if ft.is_block_device() || ft.is_char_device() {
                "device"
            } else {
                "special file"
            };
            visit(Walked::Skipped(format!(
                "{}: {what} not backed up",
                rel.display()
            )))?;
        }
    }
    Ok(())
}

/// Reads the previous snapshot's tree alongside the walk.
pub(crate) struct ParentCursor<'a> {
    reader: Option<TreeReader<'a>>,
    peeked: Option<Entry>,
    /// Set when the previous tree could not be read; the walk then reads every file.
    pub(crate) failed: Option<String>,
}

impl<'a> ParentCursor<'a> {
    /// A cursor over `reader`, or an empty one.
    pub(crate) fn new(reader: Option<TreeReader<'a>>) -> ParentCursor<'a> {
        ParentCursor {
            reader,
            peeked: None,
            failed: None,
        }
    }

    /// The previous entry at `path`, if any. Calls must come in walk order.
    pub(crate) fn find(&mut self, path: &RawPath) -> Option<Entry> {
        loop {
            if self.peeked.is_none() {
                let reader = self.reader.as_mut()?;
                match reader.next_entry() {
                    Ok(Some(e)) => self.peeked = Some(e),
                    Ok(None) => {
                        self.reader = None;
                        return None;
                    }
                    Err(e) => {
                        self.failed = Some(e.to_string());
                        self.reader = None;
                        return None;
                    }
                }
            }
            let peeked = self.peeked.as_ref().expect("filled above");
            match walk_order(&peeked.path, path) {
                Ordering::Less => self.peeked = None,
                Ordering::Equal => return self.peeked.take(),
                Ordering::Greater => return None,
            }
        }
    }
}

/// Whether a file's current metadata matches its entry in the previous snapshot closely enough
/// to reuse the stored chunks without reading it (size, modification and change times, inode).
pub(crate) fn unchanged(current: &Entry, previous: &Entry) -> bool {
    previous.kind == EntryKind::File
        && previous.size == current.size
        && previous.mtime_ns == current.mtime_ns
        && previous.ctime_ns == current.ctime_ns
        && previous.inode == current.inode
        && previous.chunks.iter().map(|s| u64::from(s.2)).sum::<u64>() == current.size
}
