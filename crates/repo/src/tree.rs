//! The file list of a snapshot (its "tree"): one JSON line per entry, in walk order, stored as
//! ordinary chunks.
//!
//! Keeping the list in chunks rather than inside the snapshot record keeps records small, lets an
//! unchanged list deduplicate against the previous snapshot's, and lets every consumer stream it
//! (memory does not grow with the number of files). A keyed BLAKE3 digest over the exact bytes of
//! the list is kept in the record and checked by every full read.

use std::cmp::Ordering;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunks::{ChunkId, ChunkStore};
use crate::error::{Error, IoContext, Result};

/// A path inside a snapshot: relative, `/`-separated, raw bytes (Unix file names need not be
/// UTF-8). Serialized as a JSON string when it is UTF-8, else as `{"hex": "..."}`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct RawPath(pub(crate) Vec<u8>);

impl RawPath {
    /// Lossy text form for reports and messages.
    pub(crate) fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Path components (split on `/`).
    pub(crate) fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|c| *c == b'/')
    }

    /// As an OS path (Unix: the same bytes).
    pub(crate) fn as_path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

impl fmt::Debug for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

/// Orders paths the way a depth-first walk with name-sorted children visits them: component by
/// component, bytewise. Snapshot trees are written in this order, which lets the next snapshot
/// merge-join its walk with the previous tree instead of loading it into memory.
pub(crate) fn walk_order(a: &RawPath, b: &RawPath) -> Ordering {
    a.components().cmp(b.components())
}

impl Serialize for RawPath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Hex { hex: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(RawPath(t.into_bytes())),
            Repr::Hex { hex } => hex::decode(hex)
                .map(RawPath)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The kind of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EntryKind {
    /// A regular file (or the single file of a stream snapshot).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (recorded, never followed).
    Symlink,
}

/// A piece of a chunk holding part of a file: `[chunk id, offset, length]`.
///
/// Small files share chunks (they are packed into one chunk stream), so a file is a list of
/// slices rather than a list of whole chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slice(pub(crate) ChunkId, pub(crate) u32, pub(crate) u32);

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// One entry of a snapshot tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Relative path inside the snapshot.
    pub(crate) path: RawPath,
    /// File, directory or symlink.
    #[serde(rename = "type")]
    pub(crate) kind: EntryKind,
    /// Unix permission bits (including setuid/setgid/sticky).
    pub(crate) mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub(crate) mtime_ns: i64,
    /// Owner user id.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub(crate) uid: u32,
    /// Owner group id.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub(crate) gid: u32,
    /// File size in bytes.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub(crate) size: u64,
    /// Status-change time (change detection only), nanoseconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub(crate) ctime_ns: i64,
    /// Inode number (change detection only).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub(crate) inode: u64,
    /// Where the file's bytes are, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) chunks: Vec<Slice>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<RawPath>,
}

/// Collects a tree into an unnamed temporary file while hashing it, so the list never has to
/// fit in memory; the file is chunked into the store once the data is durable.
pub(crate) struct TreeWriter {
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    line: Vec<u8>,
    entries: u64,
}

impl TreeWriter {
    /// A writer spooling to an unnamed file in `tmp_dir`.
    pub(crate) fn new(tmp_dir: &Path, hasher: blake3::Hasher) -> Result<TreeWriter> {
        let file = tempfile::tempfile_in(tmp_dir).ctx("create temporary file in", tmp_dir)?;
        Ok(TreeWriter {
            out: BufWriter::with_capacity(256 * 1024, file),
            hasher,
            line: Vec::with_capacity(512),
            entries: 0,
        })
    }

    /// Appends one entry.
    pub(crate) fn push(&mut self, entry: &Entry) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry)
            .map_err(|e| Error::Internal(format!("serialize tree entry: {e}")))?;
        self.line.push(b'\n');
        self.hasher.update(&self.line);
        self.out
            .write_all(&self.line)
            .map_err(|e| Error::io("write", "temporary tree file", e))?;
        self.entries += 1;
        Ok(())
    }

    /// Number of entries written.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the list: returns the spool file rewound to its start and the digest.
    pub(crate) fn finish(self) -> Result<(File, [u8; 32])> {
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", "temporary tree file", e.into_error()))?;
        file.rewind()
            .map_err(|e| Error::io("rewind", "temporary tree file", e))?;
        Ok((file, *self.hasher.finalize().as_bytes()))
    }
}

/// Reads the concatenated plaintext of a list of chunks, one chunk in memory at a time.
pub(crate) struct ChunkReader<'a> {
    store: &'a ChunkStore,
    ids: std::vec::IntoIter<ChunkId>,
    current: Vec<u8>,
    pos: usize,
}

impl<'a> ChunkReader<'a> {
    /// A reader over `ids` in order.
    pub(crate) fn new(store: &'a ChunkStore, ids: Vec<ChunkId>) -> ChunkReader<'a> {
        ChunkReader {
            store,
            ids: ids.into_iter(),
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.ids.next() {
                None => return Ok(0),
                Some(id) => {
                    self.current = self.store.load(&id).map_err(io::Error::other)?;
                    self.pos = 0;
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns an io error that carries one of our errors back into it.
pub(crate) fn unwrap_io(e: io::Error, what: &'static str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        match e.into_inner().map(|b| b.downcast::<Error>()) {
            Some(Ok(inner)) => *inner,
            _ => Error::Internal("error conversion".into()),
        }
    } else {
        Error::io("read", what, e)
    }
}

/// Streams the entries of a stored tree, checking the digest when the end is reached.
pub(crate) struct TreeReader<'a> {
    input: BufReader<ChunkReader<'a>>,
    hasher: blake3::Hasher,
    expected: Option<[u8; 32]>,
    line: Vec<u8>,
    snapshot: String,
}

impl<'a> TreeReader<'a> {
    /// Reads the tree stored in `ids`; `expected` is the digest to check at the end.
    pub(crate) fn new(
        store: &'a ChunkStore,
        ids: Vec<ChunkId>,
        expected: Option<[u8; 32]>,
        snapshot: &str,
    ) -> TreeReader<'a> {
        TreeReader {
            hasher: store.keys().tree_hasher(),
            input: BufReader::with_capacity(256 * 1024, ChunkReader::new(store, ids)),
            expected,
            line: Vec::with_capacity(512),
            snapshot: snapshot.to_string(),
        }
    }

    /// The next entry, or `None` at the end (after the digest matched).
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.line.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.line)
            .map_err(|e| unwrap_io(e, "snapshot file list"))?;
        if n == 0 {
            if let Some(expected) = self.expected
                && *self.hasher.finalize().as_bytes() != expected
            {
                return Err(self.corrupt("its file list does not match the digest in its record"));
            }
            return Ok(None);
        }
        self.hasher.update(&self.line);
        if self.line.last() != Some(&b'\n') {
            return Err(self.corrupt("its file list ends in the middle of an entry"));
        }
        serde_json::from_slice(&self.line[..n - 1])
            .map(Some)
            .map_err(|e| self.corrupt_owned(format!("its file list has a malformed entry: {e}")))
    }

    fn corrupt(&self, reason: &str) -> Error {
        self.corrupt_owned(reason.to_string())
    }

    fn corrupt_owned(&self, reason: String) -> Error {
        Error::SnapshotCorrupt {
            path: Path::new("snapshots").join(&self.snapshot),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_path_serializes_text_and_bytes() {
        let t = RawPath(b"a/b c.txt".to_vec());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"a/b c.txt\"");
        let b = RawPath(vec![b'x', 0xff, b'/', b'y']);
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, "{\"hex\":\"78ff2f79\"}");
        assert_eq!(serde_json::from_str::<RawPath>(&j).unwrap(), b);
        assert_eq!(serde_json::from_str::<RawPath>("\"a/b c.txt\"").unwrap(), t);
    }

    #[test]
    fn walk_order_is_depth_first() {
        let p = |s: &str| RawPath(s.as_bytes().to_vec());
        assert_eq!(walk_order(&p("a/b"), &p("a.txt")), Ordering::Less);
        assert_eq!(walk_order(&p("a"), &p("a/b")), Ordering::Less);
        assert_eq!(walk_order(&p("b"), &p("a/z")), Ordering::Greater);
    }
}
