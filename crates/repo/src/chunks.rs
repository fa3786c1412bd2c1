//! The content-addressed chunk store: chunks live in pack files (see [`crate::packs`]);
//! repositories of format 1 also hold loose chunk files, `chunks/<2 hex>/<64 hex>`, which are
//! still read (and pruned) but no longer written.
//!
//! A chunk record (a whole loose chunk file, or one record in a pack) is
//! `"RCK1" || nonce(24) || seal(codec(1) || body) || tag(16)`, sealed with XChaCha20-Poly1305
//! under the data key and the associated data `"RCK1" || id`, so a record moved to another id
//! fails authentication. `codec` 0 stores the body raw (data zstd could not
//! shrink), 1 stores a zstd frame; it sits inside the ciphertext so the store does not reveal
//! which chunks compressed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::atomic::{create_dir, fsync_dir};
use crate::error::{Error, IoContext, Result};
use crate::forget::PruneReport;
use crate::keys::{Keys, NONCE_LEN, TAG_LEN, open_in_place, seal_in_place};
use crate::packs::{PACK_TARGET, PACKS_DIR, PackIndex, PackInfo, PackWriter, Record, read_record};

/// Magic bytes opening every chunk file (and part of its associated data).
const MAGIC: &[u8; 4] = b"RCK1";
/// Offset of the sealed payload in a chunk file.
const BODY_START: usize = MAGIC.len() + NONCE_LEN;
/// Codec byte: body stored as is.
const CODEC_RAW: u8 = 0;
/// Codec byte: body is one zstd frame.
const CODEC_ZSTD: u8 = 1;
/// Name of the directory of loose chunk files (format 1) inside the repository.
pub(crate) const CHUNKS_DIR: &str = "chunks";

/// The id of a chunk: keyed BLAKE3 of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkId(pub(crate) [u8; 32]);

impl ChunkId {
    /// Lower-case hex form, as used in file names and records.
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub(crate) fn from_hex(s: &str) -> Option<ChunkId> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChunkId(out))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64 bytes");
        s.serialize_str(std::str::from_utf8(&buf).expect("hex is ascii"))
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChunkId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad chunk id"))
    }
}

/// A new chunk, encoded (compressed and sealed) but not yet on disk nor visible.
///
/// It holds the record's bytes: an I/O thread appends it to the pack it is writing (a write
/// waits on the disk, which compression workers should not).
pub(crate) struct Written {
    id: ChunkId,
    bytes: Vec<u8>,
}

/// What storing one chunk did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// The chunk's id.
    pub(crate) id: ChunkId,
    /// Plaintext length.
    pub(crate) len: usize,
    /// Bytes written to disk (0 when the chunk was already stored).
    pub(crate) stored: u64,
}

thread_local! {
    /// A zstd compression context per worker thread, reused across chunks (level, context).
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    /// A zstd decompression context per worker thread.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Threads flushing pack directories at the end of a snapshot.
const DIR_SYNC_THREADS: usize = 16;
/// Packs holding less than this are combined by prune (a quarter of a full pack).
const SMALL_PACK: u64 = PACK_TARGET / 4;
/// Open pack files kept for reading; past this many the cache starts over.
const OPEN_PACKS: usize = 256;

/// Chunks one operation is writing and has not yet published in a pack.
///
/// Two workers of one snapshot holding the same new chunk write it once: the second counts it
/// as known, which is safe because the snapshot waits for all of its own packs before its
/// record is written. The set is per operation on purpose: a concurrent snapshot does not wait
/// for this one's packs, so it must not rely on them; it writes its own copy instead (a chunk
/// in two packs is read from the first, and prune drops the other).
#[derive(Default)]
pub(crate) struct Claims(Mutex<HashSet<ChunkId>>);

/// Reads and writes chunks; shared by the worker threads of one repository.
pub(crate) struct ChunkStore {
    /// Loose chunk files of format 1 (`chunks/`), if the repository has them.
    loose: Option<PathBuf>,
    packs_dir: PathBuf,
    keys: Arc<Keys>,
    level: i32,
    max_chunk: usize,
    index: RwLock<PackIndex>,
    /// Pack files open for reading, by path.
    open: Mutex<HashMap<PathBuf, Arc<File>>>,
    /// Pack fan-out directories that received new names since the last
    /// [`ChunkStore::sync_dirs`].
    touched: Mutex<HashSet<PathBuf>>,
}

impl ChunkStore {
    /// A store over the repository at `root`; call [`ChunkStore::refresh`] before use.
    pub(crate) fn new(root: &Path, keys: Arc<Keys>, level: i32, max_chunk: usize) -> ChunkStore {
        let loose = root.join(CHUNKS_DIR);
        ChunkStore {
            loose: loose.is_dir().then_some(loose),
            packs_dir: root.join(PACKS_DIR),
            keys,
            level,
            max_chunk,
            index: RwLock::new(PackIndex::default()),
            open: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashSet::new()),
        }
    }

    /// Creates the pack directory and its 256 fan-out subdirectories (at init).
    pub(crate) fn create_layout(root: &Path) -> Result<()> {
        let dir = root.join(PACKS_DIR);
        create_dir(&dir)?;
        for i in 0..=255u8 {
            create_dir(&dir.join(hex::encode([i])))?;
        }
        // The new names live in `packs/`; flushing it makes all 256 durable at once.
        fsync_dir(&dir)
    }

    /// The keys this store encrypts with.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads the indexes of packs written since the last refresh (by any process) and forgets
    /// packs that were deleted. Every operation calls it once it holds the repository lock.
    pub(crate) fn refresh(&self) -> Result<()> {
        self.reindex(false)
    }

    /// Reads the index of every pack again, even of packs seen before (verify does, so damage
    /// done since the repository was opened is found).
    pub(crate) fn reload(&self) -> Result<()> {
        self.reindex(true)
    }

    fn reindex(&self, all: bool) -> Result<()> {
        let mut index = self.index.write().expect("lock");
        if all {
            *index = PackIndex::default();
            self.open.lock().expect("lock").clear();
        }
        index.refresh(&self.packs_dir, &self.keys)?;
        let live: HashSet<&Path> = index.packs.iter().map(|p| p.path.as_path()).collect();
        self.open
            .lock()
            .expect("lock")
            .retain(|path, _| live.contains(path.as_path()));
        Ok(())
    }

    /// Where a loose chunk file with `id` would be.
    fn loose_path(&self, id: &ChunkId) -> Option<PathBuf> {
        let hex = id.to_hex();
        self.loose.as_ref().map(|d| d.join(&hex[..2]).join(hex))
    }

    /// The file that holds a chunk (its pack, or its loose file), or where a missing one was
    /// looked for, for messages.
    pub(crate) fn location(&self, id: &ChunkId) -> PathBuf {
        let index = self.index.read().expect("lock");
        if let Some(loc) = index.chunks.get(id) {
            return index.packs[loc.pack as usize].path.clone();
        }
        self.loose_path(id)
            .filter(|p| p.is_file())
            .unwrap_or_else(|| self.packs_dir.clone())
    }

    /// Bytes a stored chunk takes on disk (its record), if it is stored.
    pub(crate) fn stored_len(&self, id: &ChunkId) -> Option<u64> {
        if let Some(loc) = self.index.read().expect("lock").chunks.get(id) {
            return Some(u64::from(loc.len));
        }
        let meta = fs::symlink_metadata(self.loose_path(id)?).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// Whether a chunk is stored (without reading it).
    pub(crate) fn exists(&self, id: &ChunkId) -> bool {
        self.index.read().expect("lock").chunks.contains_key(id)
            || self
                .loose_path(id)
                .is_some_and(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Every stored chunk id (in packs and loose files).
    pub(crate) fn stored_ids(&self) -> Result<HashSet<ChunkId>> {
        let mut ids: HashSet<ChunkId> = self
            .index
            .read()
            .expect("lock")
            .chunks
            .keys()
            .copied()
            .collect();
        for (_, id, _) in self.list_loose_files()? {
            ids.extend(id);
        }
        Ok(ids)
    }

    /// Every indexed pack (by name) and its records, for [`crate::Repository::packs`].
    pub(crate) fn pack_listing(&self) -> Vec<crate::verify::PackListing> {
        let index = self.index.read().expect("lock");
        let mut packs: Vec<&PackInfo> = index.packs.iter().collect();
        packs.sort_by(|a, b| a.name.cmp(&b.name));
        packs
            .into_iter()
            .map(|p| crate::verify::PackListing {
                path: p.path.display().to_string(),
                chunks: p
                    .entries
                    .iter()
                    .map(|&(id, offset, length)| crate::verify::PackedChunk {
                        id: id.to_hex(),
                        offset,
                        length,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Packs whose index cannot be read: path and reason.
    pub(crate) fn unreadable_packs(&self) -> Vec<(PathBuf, String)> {
        self.index.read().expect("lock").unreadable.clone()
    }

    /// Stores a chunk unless it is already present, publishing its pack before returning.
    #[cfg(test)]
    pub(crate) fn store(&self, data: &[u8]) -> Result<Stored> {
        let claims = Claims::default();
        let (stored, written) = self.write_chunk(data, &claims)?;
        if let Some(w) = written {
            let mut sink = PackSink::new(self, &claims);
            sink.put(w)?;
            sink.finish()?;
        }
        Ok(stored)
    }

    /// Encodes a chunk unless it is already present (or being written by another worker of the
    /// same operation).
    ///
    /// A new chunk is hashed, compressed and sealed, and returned as [`Written`]; a
    /// [`PackSink`] appends it to a pack, and it becomes visible when that pack is complete and
    /// flushed, so a chunk the index knows is always whole on disk. Splitting the two lets
    /// compression workers hand the disk waits (write, flush) to I/O threads.
    pub(crate) fn write_chunk(
        &self,
        data: &[u8],
        claims: &Claims,
    ) -> Result<(Stored, Option<Written>)> {
        let id = ChunkId(self.keys.chunk_id(data));
        let mut stored = Stored {
            id,
            len: data.len(),
            stored: 0,
        };
        {
            let mut writing = claims.0.lock().expect("lock");
            if writing.contains(&id) || self.exists(&id) {
                return Ok((stored, None));
            }
            writing.insert(id);
        }
        match self.encode(&id, data) {
            Ok(bytes) => {
                stored.stored = bytes.len() as u64;
                Ok((stored, Some(Written { id, bytes })))
            }
            Err(e) => {
                claims.0.lock().expect("lock").remove(&id);
                Err(e)
            }
        }
    }

    /// Makes a finished pack's chunks visible and releases their claims.
    fn publish(&self, info: PackInfo, claims: &Claims) {
        if let Some(sub) = info.path.parent() {
            self.touched.lock().expect("lock").insert(sub.to_path_buf());
        }
        let ids: Vec<ChunkId> = info.entries.iter().map(|e| e.0).collect();
        self.index.write().expect("lock").add(info);
        let mut writing = claims.0.lock().expect("lock");
        for id in ids {
            writing.remove(&id);
        }
    }

    /// Compresses and seals a chunk into its record bytes.
    ///
    /// Chunks that do not compress are stored raw. (Probing a few samples of a chunk before
    /// compressing it whole was tried and dropped: a chunk of a disk image whose megabyte
    /// repeats looks random in every sample but compresses to almost nothing, and zstd passes
    /// over truly random data at about 2 GB/s anyway.)
    fn encode(&self, id: &ChunkId, data: &[u8]) -> Result<Vec<u8>> {
        let bound = zstd::zstd_safe::compress_bound(data.len());
        let mut out = Vec::with_capacity(BODY_START + 1 + bound.max(data.len()) + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.resize(BODY_START, 0);
        out.push(CODEC_ZSTD);
        let compressed = COMPRESSOR.with(|cell| -> io::Result<usize> {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(level, _)| *level != self.level) {
                *slot = Some((self.level, zstd::bulk::Compressor::new(self.level)?));
            }
            let (_, compressor) = slot.as_mut().expect("set above");
            let mut cursor = Cursor::new(&mut out);
            cursor.set_position((BODY_START + 1) as u64);
            compressor.compress_to_buffer(data, &mut cursor)
        });
        let keep_compressed = matches!(compressed, Ok(n) if n < data.len());
        if !keep_compressed {
            out.truncate(BODY_START);
            out.push(CODEC_RAW);
            out.extend_from_slice(data);
        }
        seal_in_place(&self.keys.cipher, &mut out, BODY_START, &aad(id))?;
        Ok(out)
    }

    /// Reads a chunk and returns its verified plaintext.
    pub(crate) fn load(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let found = {
            let index = self.index.read().expect("lock");
            index
                .chunks
                .get(id)
                .map(|loc| (*loc, index.packs[loc.pack as usize].path.clone()))
        };
        let (mut bytes, path) = match found {
            Some((loc, path)) => {
                let mut bytes = Vec::new();
                let read = self
                    .pack_file(&path)
                    .and_then(|f| read_record(&f, loc.offset, loc.len, &mut bytes));
                match read {
                    Ok(()) => (bytes, path),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::ChunkMissing {
                            id: id.to_hex(),
                            path,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(Error::ChunkCorrupt {
                            id: id.to_hex(),
                            path,
                            reason: "the pack is shorter than its index says".into(),
                        });
                    }
                    Err(e) => return Err(Error::io("read chunk", &path, e)),
                }
            }
            None => {
                // In no pack: a loose chunk file of format 1, or missing.
                let read = self.loose_path(id).map(|path| (fs::read(&path), path));
                match read {
                    Some((Ok(b), path)) => (b, path),
                    Some((Err(e), path)) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io("read chunk", &path, e));
                    }
                    _ => {
                        return Err(Error::ChunkMissing {
                            id: id.to_hex(),
                            path: self.packs_dir.clone(),
                        });
                    }
                }
            }
        };
        let mut plain = Vec::new();
        self.decode(id, &mut bytes, &mut plain)
            .map_err(|reason| Error::ChunkCorrupt {
                id: id.to_hex(),
                path,
                reason,
            })?;
        Ok(plain)
    }

    /// A pack opened for reading, shared by the threads that read it.
    fn pack_file(&self, path: &Path) -> io::Result<Arc<File>> {
        if let Some(f) = self.open.lock().expect("lock").get(path) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(path)?);
        let mut open = self.open.lock().expect("lock");
        if open.len() >= OPEN_PACKS {
            open.clear();
        }
        open.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    /// Opens chunk file bytes into `plain`: authenticates, decompresses and checks the id.
    fn decode(
        &self,
        id: &ChunkId,
        bytes: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        plain.clear();
        if bytes.len() < BODY_START + 1 + TAG_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a chunk file (bad header or too short)".into());
        }
        open_in_place(&self.keys.cipher, bytes, BODY_START, &aad(id))
            .ok_or("authentication failed: the file was altered or belongs to another id")?;
        let body = &bytes[BODY_START..];
        match body[0] {
            CODEC_RAW => {
                if body.len() - 1 > self.max_chunk {
                    return Err("larger than the maximum chunk size".into());
                }
                plain.extend_from_slice(&body[1..]);
            }
            CODEC_ZSTD => {
                // The frame header gives the size (our frames always carry it); a frame that
                // claims more than a chunk can hold fails below when it overflows the buffer.
                let size = zstd::zstd_safe::get_frame_content_size(&body[1..])
                    .ok()
                    .flatten()
                    .map_or(self.max_chunk, |n| (n as usize).min(self.max_chunk));
                plain.reserve_exact(size);
                DECOMPRESSOR
                    .with(|cell| -> io::Result<usize> {
                        let mut slot = cell.borrow_mut();
                        if slot.is_none() {
                            *slot = Some(zstd::bulk::Decompressor::new()?);
                        }
                        let d = slot.as_mut().expect("set above");
                        d.decompress_to_buffer(&body[1..], plain)
                    })
                    .map_err(|e| format!("decompression failed: {e}"))?;
            }
            other => return Err(format!("unknown codec {other}")),
        }
        if plain.len() > self.max_chunk {
            return Err("larger than the maximum chunk size".into());
        }
        if self.keys.chunk_id(plain) != id.0 {
            return Err("content does not match its id".into());
        }
        Ok(())
    }

    /// Flushes the directories that received new pack names, so every chunk stored so far
    /// survives a crash. Called before a snapshot record that references them is written.
    ///
    /// The directories are flushed by several threads at once: each flush waits on the disk.
    pub(crate) fn sync_dirs(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = std::mem::take(&mut *self.touched.lock().expect("lock"))
            .into_iter()
            .collect();
        sync_dirs_parallel(&dirs)
    }

    /// Every loose chunk file (format 1): `(path, id if the name is a chunk id, size)`.
    pub(crate) fn list_loose_files(&self) -> Result<Vec<(PathBuf, Option<ChunkId>, u64)>> {
        let mut out = Vec::new();
        let Some(dir) = &self.loose else {
            return Ok(out);
        };
        for i in 0..=255u8 {
            let sub = dir.join(hex::encode([i]));
            let rd = match fs::read_dir(&sub) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &sub, e)),
            };
            for entry in rd {
                let entry = entry.ctx("list", &sub)?;
                let meta = entry.metadata().ctx("inspect", entry.path())?;
                if !meta.is_file() {
                    continue;
                }
                let name = entry.file_name();
                let id = name.to_str().and_then(ChunkId::from_hex);
                out.push((entry.path(), id, meta.len()));
            }
        }
        Ok(out)
    }

    /// Removes from packs every record that is not in `keep` (or is a second copy of a chunk):
    /// packs left without a kept record are deleted, packs with some are rewritten with only
    /// those (records are copied as they are: each is sealed on its own), and small packs are
    /// combined. New packs are made durable before any old one is deleted, so a crash leaves
    /// at worst a chunk twice.
    /// Leftover temporary files of interrupted writes are removed too. Adds what it found and
    /// did to `report`; returns the kept chunks it found. The caller holds the exclusive lock
    /// and refreshed the index under it, so the packs listed then are all there are.
    pub(crate) fn prune_packs(
        &self,
        keep: &HashSet<ChunkId>,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<HashSet<ChunkId>> {
        let index = self.index.read().expect("lock");
        let mut present = HashSet::new();
        let mut doomed: Vec<PathBuf> = Vec::new();
        let mut rewrite: Vec<(PathBuf, Vec<Record>)> = Vec::new();
        let mut small: Vec<(PathBuf, Vec<Record>)> = Vec::new();
        for (p, pack) in index.packs.iter().enumerate() {
            let mut kept = Vec::new();
            for &(id, offset, len) in &pack.entries {
                report.chunks_total += 1;
                let canonical = index
                    .chunks
                    .get(&id)
                    .is_some_and(|l| l.pack as usize == p && l.offset == offset);
                if canonical && keep.contains(&id) {
                    present.insert(id);
                    report.bytes_kept += u64::from(len);
                    kept.push((id, offset, len));
                } else {
                    report.chunks_removed += 1;
                    report.bytes_freed += u64::from(len);
                }
            }
            let kept_bytes: u64 = kept.iter().map(|r| u64::from(r.2)).sum();
            if kept.is_empty() {
                doomed.push(pack.path.clone());
            } else if kept.len() < pack.entries.len() {
                rewrite.push((pack.path.clone(), kept));
            } else if kept_bytes < SMALL_PACK {
                small.push((pack.path.clone(), kept));
            }
        }
        // Every snapshot leaves a few partly filled packs; two or more are combined.
        if small.len() >= 2 {
            rewrite.append(&mut small);
        }
        report.packs_deleted += doomed.len() as u64;
        report.packs_rewritten += rewrite.len() as u64;
        let temps = crate::packs::temp_files(&self.packs_dir)?;
        report.temp_files_removed += temps.len() as u64;
        // Writing publishes new packs, which takes the index for writing.
        drop(index);
        if dry_run {
            return Ok(present);
        }
        let claims = Claims::default();
        let mut sink = PackSink::new(self, &claims);
        let mut record = Vec::new();
        for (path, kept) in &rewrite {
            let file = File::open(path).ctx("open", path)?;
            for &(id, offset, len) in kept {
                read_record(&file, offset, len, &mut record).ctx("read", path)?;
                sink.put(Written {
                    id,
                    bytes: std::mem::take(&mut record),
                })?;
            }
        }
        // The copies must be on disk, and named durably, before the originals go.
        sink.finish()?;
        self.sync_dirs()?;
        let mut dirs = HashSet::new();
        for path in doomed
            .iter()
            .chain(rewrite.iter().map(|(p, _)| p))
            .chain(&temps)
        {
            remove_if_present(path)?;
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        sync_dirs_parallel(&dirs.into_iter().collect::<Vec<_>>())?;
        self.refresh()?;
        Ok(present)
    }
}

/// Removes a file; one that is already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", path),
        _ => Ok(()),
    }
}

/// Flushes directories, several at once when there are many.
pub(crate) fn sync_dirs_parallel(dirs: &[PathBuf]) -> Result<()> {
    if dirs.len() <= 2 {
        return dirs.iter().try_for_each(|d| fsync_dir(d));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..DIR_SYNC_THREADS.min(dirs.len()))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(dir) = dirs.get(i) else {
                            return Ok(());
                        };
                        fsync_dir(dir)?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| Error::Internal("a directory flush thread panicked".into()))?
        })
    })
}

/// One I/O thread's way into the packs: appends encoded chunks to its current pack and
/// publishes the pack once it is full, or at [`PackSink::finish`]. Dropped unfinished (an
/// error, a panic), it removes its pack's temporary file.
pub(crate) struct PackSink<'s> {
    store: &'s ChunkStore,
    claims: &'s Claims,
    pack: Option<PackWriter>,
}

impl<'s> PackSink<'s> {
    /// A sink with no pack open yet.
    pub(crate) fn new(store: &'s ChunkStore, claims: &'s Claims) -> PackSink<'s> {
        PackSink {
            store,
            claims,
            pack: None,
        }
    }

    /// Appends a chunk, closing the pack when it reaches its size.
    pub(crate) fn put(&mut self, written: Written) -> Result<()> {
        let pack = match &mut self.pack {
            Some(p) => p,
            None => self.pack.insert(PackWriter::create(&self.store.packs_dir)?),
        };
        pack.add(written.id, &written.bytes)?;
        drop(written);
        if pack.len() >= PACK_TARGET {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(pack) = self.pack.take() {
            let info = pack.finish(&self.store.keys)?;
            self.store.publish(info, self.claims);
        }
        Ok(())
    }

    /// Publishes the open pack, if any.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.close()
    }
}

impl Drop for PackSink<'_> {
    fn drop(&mut self) {
        if let Some(pack) = self.pack.take() {
            pack.abandon();
        }
    }
}

/// Associated data of a chunk: magic and id.
fn aad(id: &ChunkId) -> [u8; 36] {
    let mut a = [0u8; 36];
    a[..4].copy_from_slice(MAGIC);
    a[4..].copy_from_slice(&id.0);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> ChunkStore {
        ChunkStore::create_layout(dir).unwrap();
        let s = ChunkStore::new(dir, Arc::new(Keys::from_master(&[9u8; 32])), 3, 1 << 20);
        s.refresh().unwrap();
        s
    }

    #[test]
    fn store_load_dedup_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let a = s.store(&text).unwrap();
        assert!(a.stored > 0 && (a.stored as usize) < text.len());
        let b = s.store(&text).unwrap();
        assert_eq!(b.stored, 0);
        assert_eq!(s.load(&a.id).unwrap(), text);

        let mut noise = vec![0u8; 10_000];
        getrandom::fill(&mut noise).unwrap();
        let n = s.store(&noise).unwrap();
        assert!(n.stored as usize > noise.len());
        assert_eq!(s.load(&n.id).unwrap(), noise);

        // The record of `a` opens its pack; damage in it is found, then the pack's loss.
        let path = s.location(&a.id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[a.stored as usize / 2] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(s.load(&a.id), Err(Error::ChunkCorrupt { .. })));
        assert_eq!(s.load(&n.id).unwrap(), noise, "another pack is untouched");
        fs::remove_file(&path).unwrap();
        s.refresh().unwrap();
        assert!(!s.exists(&a.id));
        assert!(matches!(s.load(&a.id), Err(Error::ChunkMissing { .. })));
    }
}
