//! Pack files: many sealed chunks in one file, with a sealed index at its end.
//!
//! One file per chunk cost a create, a flush and a rename per chunk, and a directory entry and
//! an inode each on disk; those costs, not compression, kept chunks large (and so deduplication
//! coarse). A pack is written sequentially by one flusher thread, flushed once and renamed into
//! place once, so it is visible whole or not at all.
//!
//! ```text
//! packs/<2 hex>/<64 hex>   record* | index | len(index) as u32 LE | "RCP1"
//! record                   a chunk exactly as a chunk file holds it (see `chunks`)
//! index                    nonce(24) | seal(entry*) | tag(16), associated data "RCP1" | name
//! entry                    chunk id(32) | offset u64 LE | length u32 LE
//! ```
//!
//! Records keep their own seal, bound to their chunk id, so a record read at an offset the index
//! gives is authenticated on its own and can be copied to another pack unchanged (prune does).
//! The index is bound to the pack's name, so an index moved to another pack fails to open.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::atomic::{create_dir, create_new, fsync_dir, is_temp_name, random_bytes, temp_path_for};
use crate::chunks::ChunkId;
use crate::direct::{self, ALIGN, AlignedBuf};
use crate::error::{Error, IoContext, Result};
use crate::keys::{Keys, NONCE_LEN, TAG_LEN, open_in_place, seal_in_place};

/// Name of the pack directory inside the repository.
pub(crate) const PACKS_DIR: &str = "packs";
/// Magic bytes closing every pack file (and opening its index's associated data).
const MAGIC: &[u8; 4] = b"RCP1";
/// Bytes of one index entry.
const ENTRY_LEN: usize = 32 + 8 + 4;
/// Bytes after the index: its length and the magic.
const FOOTER_LEN: usize = 4 + MAGIC.len();
/// A writer closes its pack once it holds this many bytes of records.
pub(crate) const PACK_TARGET: u64 = 16 << 20;
/// Bytes gathered before they are written out (a multiple of the direct-I/O block).
const WRITE_AT: usize = 1 << 20;
/// Bytes read from a pack's end in one go when its index is loaded (most indexes fit).
const TAIL_GUESS: u64 = 64 << 10;
/// The largest index a pack may claim (a pack of 1 GiB of 4 KiB chunks): more is corruption.
const MAX_INDEX: u64 = 16 << 20;

/// Where a chunk's record is: which pack (an index into [`PackIndex::packs`]), where, how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) pack: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// One record as a pack's index lists it: chunk id, offset in the pack, length.
pub(crate) type Record = (ChunkId, u64, u32);

/// One pack file as its index describes it.
#[derive(Debug)]
pub(crate) struct PackInfo {
    /// File name: 64 hex characters.
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// Records in file order.
    pub(crate) entries: Vec<Record>,
}

/// Every readable pack and where each chunk is. A chunk stored in two packs (two backups wrote
/// it at once, or prune was interrupted after copying it) is found in the first by name.
#[derive(Default)]
pub(crate) struct PackIndex {
    pub(crate) packs: Vec<PackInfo>,
    pub(crate) chunks: HashMap<ChunkId, Loc>,
    /// Packs whose index could not be read: path and reason (verify reports them).
    pub(crate) unreadable: Vec<(PathBuf, String)>,
}

impl PackIndex {
    /// Brings the index up to date with the pack files on disk: reads the indexes of packs it
    /// has not seen and forgets packs that are gone. Cheap when nothing changed (one directory
    /// listing per fan-out directory).
    pub(crate) fn refresh(&mut self, dir: &Path, keys: &Keys) -> Result<()> {
        let on_disk = list_packs(dir)?;
        let unchanged = self.unreadable.is_empty() && on_disk.len() == self.packs.len() && {
            let known: HashSet<&str> = self.packs.iter().map(|p| p.name.as_str()).collect();
            on_disk
                .iter()
                .all(|(name, _)| known.contains(name.as_str()))
        };
        if unchanged {
            return Ok(());
        }
        let mut seen: HashMap<String, PackInfo> = std::mem::take(&mut self.packs)
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        self.unreadable.clear();
        self.chunks.clear();
        for (name, path) in on_disk {
            match seen
                .remove(&name)
                .map_or_else(|| read_index(&path, &name, keys), Ok)
            {
                Ok(info) => self.add(info),
                Err(reason) => self.unreadable.push((path, reason)),
            }
        }
        Ok(())
    }

    /// Adds a pack (one this process has just written, or one just read).
    pub(crate) fn add(&mut self, info: PackInfo) {
        let p = self.packs.len() as u32;
        for &(id, offset, len) in &info.entries {
            self.chunks.entry(id).or_insert(Loc {
                pack: p,
                offset,
                len,
            });
        }
        self.packs.push(info);
    }
}

/// Path of the pack called `name` (64 hex) under `dir`.
pub(crate) fn pack_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(&name[..2]).join(name)
}

/// Every pack file under `dir` (name, path), sorted by name; temporary files are left out.
fn list_packs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let subs = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for sub in subs {
        let sub = sub.ctx("list", dir)?;
        if !sub.file_type().ctx("inspect", sub.path())?.is_dir() {
            continue;
        }
        let sub = sub.path();
        for entry in fs::read_dir(&sub).ctx("list", &sub)? {
            let entry = entry.ctx("list", &sub)?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((name, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Temporary files left in the pack directories by interrupted writes.
pub(crate) fn temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(subs) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for sub in subs {
        let sub = sub.ctx("list", dir)?.path();
        let Ok(rd) = fs::read_dir(&sub) else { continue };
        for entry in rd {
            let entry = entry.ctx("list", &sub)?;
            if entry.file_name().to_str().is_some_and(is_temp_name) {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Associated data of a pack's index: magic and the pack's name.
fn index_aad(name: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Reads and opens the index at the end of a pack; the error is a reason for an operator.
fn read_index(path: &Path, name: &str, keys: &Keys) -> std::result::Result<PackInfo, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?
        .len();
    if size < (FOOTER_LEN + NONCE_LEN + TAG_LEN) as u64 {
        return Err("too short to be a pack".into());
    }
    let guess = size.min(TAIL_GUESS);
    let mut tail = vec![0u8; guess as usize];
    file.read_exact_at(&mut tail, size - guess)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if &tail[tail.len() - MAGIC.len()..] != MAGIC {
        return Err("not a pack file (bad trailer)".into());
    }
    let len_at = tail.len() - FOOTER_LEN;
    let index_len = u64::from(u32::from_le_bytes(
        tail[len_at..len_at + 4].try_into().expect("4 bytes"),
    ));
    if index_len > MAX_INDEX || index_len + FOOTER_LEN as u64 > size {
        return Err("its index length is impossible".into());
    }
    let index_start = size - FOOTER_LEN as u64 - index_len;
    let mut sealed = if index_len + FOOTER_LEN as u64 <= guess {
        let from = tail.len() - FOOTER_LEN - index_len as usize;
        tail[from..len_at].to_vec()
    } else {
        let mut v = vec![0u8; index_len as usize];
        file.read_exact_at(&mut v, index_start)
            .map_err(|e| format!("cannot read its index: {e}"))?;
        v
    };
    open_in_place(&keys.cipher, &mut sealed, NONCE_LEN, &index_aad(name))
        .ok_or("its index failed authentication: the file was altered or renamed")?;
    let plain = &sealed[NONCE_LEN..];
    if plain.len() % ENTRY_LEN != 0 {
        return Err("its index has a partial entry".into());
    }
    let mut entries = Vec::with_capacity(plain.len() / ENTRY_LEN);
    for e in plain.chunks_exact(ENTRY_LEN) {
        let id = ChunkId(e[..32].try_into().expect("32 bytes"));
        let offset = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(e[40..44].try_into().expect("4 bytes"));
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > index_start)
        {
            return Err("its index points past its records".into());
        }
        entries.push((id, offset, len));
    }
    Ok(PackInfo {
        name: name.to_string(),
        path: path.to_path_buf(),
        entries,
    })
}

/// Reads the record of `len` bytes at `offset` of an open pack into `out`.
pub(crate) fn read_record(file: &File, offset: u64, len: u32, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.resize(len as usize, 0);
    file.read_exact_at(out, offset)
}

/// A pack being written: records are gathered in an aligned buffer and written directly (see
/// [`crate::direct`]) a megabyte at a time; [`PackWriter::finish`] adds the index, flushes the
/// file and renames it into place.
pub(crate) struct PackWriter {
    name: String,
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    buf: AlignedBuf,
    /// Bytes already in the file.
    written: u64,
    /// Bytes of records so far (written or buffered).
    len: u64,
    entries: Vec<Record>,
}

impl PackWriter {
    /// Starts a pack with a fresh random name in `dir` (directories are created if missing).
    pub(crate) fn create(dir: &Path) -> Result<PackWriter> {
        let name = hex::encode(random_bytes::<32>()?);
        let path = pack_path(dir, &name);
        let sub = path.parent().expect("fan-out directory");
        if !sub.is_dir() {
            // A repository of format 1 gets its pack directory with its first pack.
            if !dir.is_dir() {
                create_dir(dir)?;
                fsync_dir(dir.parent().unwrap_or(Path::new(".")))?;
            }
            create_dir(sub)?;
            fsync_dir(dir)?;
        }
        let tmp = temp_path_for(&path)?;
        let file = create_new(&tmp)?;
        Ok(PackWriter {
            name,
            path,
            tmp,
            file,
            buf: AlignedBuf::new(),
            written: 0,
            len: 0,
            entries: Vec::new(),
        })
    }

    /// Bytes of records added so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one sealed chunk record.
    pub(crate) fn add(&mut self, id: ChunkId, record: &[u8]) -> Result<()> {
        let len = u32::try_from(record.len())
            .map_err(|_| Error::Internal("a chunk record over 4 GiB".into()))?;
        self.entries.push((id, self.len, len));
        self.buf.extend_from_slice(record);
        self.len += record.len() as u64;
        if self.buf.len() >= WRITE_AT {
            self.write_out(false)?;
        }
        Ok(())
    }

    /// Writes the buffer's whole blocks directly; with `tail`, the rest through the page cache.
    fn write_out(&mut self, tail: bool) -> Result<()> {
        let direct = if self.written.is_multiple_of(ALIGN as u64) {
            direct::write_blocks_at(&self.file, self.buf.as_slice(), self.written)
                .ctx("write", &self.tmp)?
        } else {
            0
        };
        // Direct I/O refused (or the offset unaligned after that): all of it, buffered.
        let n = if tail || direct == 0 {
            self.file
                .write_all_at(&self.buf.as_slice()[direct..], self.written + direct as u64)
                .ctx("write", &self.tmp)?;
            self.buf.len()
        } else {
            direct
        };
        self.written += n as u64;
        self.buf.consume(n);
        Ok(())
    }

    /// Adds the index, flushes the pack to disk and renames it into place. Its directory entry
    /// becomes durable when the caller flushes the fan-out directory.
    pub(crate) fn finish(mut self, keys: &Keys) -> Result<PackInfo> {
        let mut index = vec![0u8; NONCE_LEN];
        index.reserve(self.entries.len() * ENTRY_LEN + TAG_LEN);
        for (id, offset, len) in &self.entries {
            index.extend_from_slice(&id.0);
            index.extend_from_slice(&offset.to_le_bytes());
            index.extend_from_slice(&len.to_le_bytes());
        }
        seal_in_place(&keys.cipher, &mut index, NONCE_LEN, &index_aad(&self.name))?;
        let index_len = index.len() as u32;
        self.buf.extend_from_slice(&index);
        self.buf.extend_from_slice(&index_len.to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        let result = (|| {
            self.write_out(true)?;
            self.file.sync_all().ctx("flush to disk", &self.tmp)?;
            fs::rename(&self.tmp, &self.path).ctx("rename into place", &self.tmp)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&self.tmp);
            return Err(e);
        }
        Ok(PackInfo {
            name: std::mem::take(&mut self.name),
            path: std::mem::take(&mut self.path),
            entries: std::mem::take(&mut self.entries),
        })
    }

    /// Gives up the pack: its temporary file is removed.
    pub(crate) fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_reads_back_and_every_kind_of_damage_to_its_index_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::from_master(&[7u8; 32]);
        let records: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; 3000 + 1000 * i as usize])
            .collect();
        let mut w = PackWriter::create(dir.path()).unwrap();
        for (i, r) in records.iter().enumerate() {
            w.add(ChunkId([i as u8; 32]), r).unwrap();
        }
        let info = w.finish(&keys).unwrap();
        let read = read_index(&info.path, &info.name, &keys).unwrap();
        assert_eq!(read.entries, info.entries);
        let file = File::open(&info.path).unwrap();
        let mut out = Vec::new();
        for ((_, offset, len), r) in read.entries.iter().zip(&records) {
            read_record(&file, *offset, *len, &mut out).unwrap();
            assert_eq!(&out, r);
        }

        let bytes = fs::read(&info.path).unwrap();
        let damaged = |edit: &dyn Fn(&mut Vec<u8>), name: &str| {
            let path = dir.path().join("damaged");
            let mut b = bytes.clone();
            edit(&mut b);
            fs::write(&path, b).unwrap();
            read_index(&path, name, &keys).unwrap_err()
        };
        let last = bytes.len() - 1;
        assert!(damaged(&|b| b.truncate(3), &info.name).contains("too short"));
        assert!(damaged(&|b| b.truncate(last), &info.name).contains("bad trailer"));
        assert!(damaged(&|b| b[last - 10] ^= 1, &info.name).contains("authentication"));
        assert!(damaged(&|b| b[last - 4] = 0xff, &info.name).contains("impossible"));
        let other = "0".repeat(64);
        assert!(
            damaged(&|_| {}, &other).contains("authentication"),
            "renamed"
        );
        let mut refresh = PackIndex::default();
        refresh.refresh(dir.path(), &keys).unwrap();
        assert_eq!(refresh.chunks.len(), 5);
        assert_eq!(refresh.chunks[&ChunkId([3; 32])].len, 6000);
    }
}
