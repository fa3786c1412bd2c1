//! The content-addressed chunk store: `chunks/<2 hex>/<64 hex>`, one file per chunk.
//!
//! A chunk file is `"RCK1" || nonce(24) || seal(codec(1) || body) || tag(16)`, sealed with
//! XChaCha20-Poly1305 under the data key and the associated data `"RCK1" || id`, so a file moved
//! to another id's name fails authentication. `codec` 0 stores the body raw (data zstd could not
//! shrink), 1 stores a zstd frame; it sits inside the ciphertext so the store does not reveal
//! which chunks compressed.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::atomic::{create_dir, create_new, fsync_dir, temp_path_for};
use crate::direct::{self, AlignedBuf};
use crate::error::{Error, IoContext, Result};
use crate::keys::{Keys, NONCE_LEN, TAG_LEN, open_in_place, seal_in_place};

/// Magic bytes opening every chunk file (and part of its associated data).
const MAGIC: &[u8; 4] = b"RCK1";
/// Offset of the sealed payload in a chunk file.
const BODY_START: usize = MAGIC.len() + NONCE_LEN;
/// Codec byte: body stored as is.
const CODEC_RAW: u8 = 0;
/// Codec byte: body is one zstd frame.
const CODEC_ZSTD: u8 = 1;
/// Name of the chunk directory inside the repository.
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
/// It holds the file bytes, not an open file: the I/O threads create, write, flush and rename
/// it (a direct write waits on the disk, which compression workers should not).
pub(crate) struct Written {
    tmp: PathBuf,
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
    /// A flusher's aligned copy of the chunk file it writes. (Encoded chunks themselves are
    /// allocated per chunk: reused buffers each grow to the largest chunk they held, which
    /// took a snapshot's peak memory from 54 to over 100 MiB.)
    static ALIGNED: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Threads flushing chunk directories at the end of a snapshot.
const DIR_SYNC_THREADS: usize = 16;

/// Chunks one operation is writing and has not yet flushed.
///
/// Two workers of one snapshot holding the same new chunk write it once: the second counts it
/// as known, which is safe because the snapshot waits for all of its own flushes before its
/// record is written. The set is per operation on purpose: a concurrent snapshot does not wait
/// for this one's flushes, so it must not rely on them; it writes its own copy instead (renaming
/// identical content over the same name is harmless).
#[derive(Default)]
pub(crate) struct Claims(Mutex<HashSet<ChunkId>>);

/// Reads and writes chunk files; shared by the worker threads of one repository.
pub(crate) struct ChunkStore {
    dir: PathBuf,
    keys: Arc<Keys>,
    level: i32,
    max_chunk: usize,
    /// Chunk subdirectories that received new names since the last [`ChunkStore::sync_dirs`].
    touched: Mutex<[bool; 256]>,
}

impl ChunkStore {
    /// A store over `<root>/chunks`.
    pub(crate) fn new(root: &Path, keys: Arc<Keys>, level: i32, max_chunk: usize) -> ChunkStore {
        ChunkStore {
            dir: root.join(CHUNKS_DIR),
            keys,
            level,
            max_chunk,
            touched: Mutex::new([false; 256]),
        }
    }

    /// Creates the chunk directory and its 256 fan-out subdirectories (at init).
    pub(crate) fn create_layout(root: &Path) -> Result<()> {
        let dir = root.join(CHUNKS_DIR);
        for i in 0..=255u8 {
            create_dir(&dir.join(hex::encode([i])))?;
        }
        // The new names live in `chunks/`; flushing it makes all 256 durable at once.
        fsync_dir(&dir)
    }

    /// The keys this store encrypts with.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Where the chunk with `id` lives.
    pub(crate) fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether a chunk file exists (without reading it).
    pub(crate) fn exists(&self, id: &ChunkId) -> bool {
        fs::symlink_metadata(self.path_of(id)).is_ok_and(|m| m.is_file())
    }

    /// Stores a chunk unless it is already present, flushing and renaming it before returning.
    #[cfg(test)]
    pub(crate) fn store(&self, data: &[u8]) -> Result<Stored> {
        let claims = Claims::default();
        let (stored, written) = self.write_chunk(data, &claims)?;
        if let Some(w) = written {
            self.complete(w, &claims)?;
        }
        Ok(stored)
    }

    /// Writes a chunk unless it is already present (or being written by another worker of the
    /// same operation).
    ///
    /// A new chunk is hashed, compressed and sealed, and returned as [`Written`]; it is written
    /// under a temporary name and becomes visible under its id only through
    /// [`ChunkStore::complete`], after it has been flushed, so a chunk file that exists under
    /// its final name is always complete. Splitting the two lets compression workers hand the
    /// disk waits (write, flush) to I/O threads.
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
        let result = (|| {
            let bytes = self.encode(&id, data)?;
            let tmp = temp_path_for(&self.path_of(&id))?;
            Ok((bytes.len() as u64, Written { tmp, id, bytes }))
        })();
        match result {
            Ok((len, written)) => {
                stored.stored = len;
                Ok((stored, Some(written)))
            }
            Err(e) => {
                claims.0.lock().expect("lock").remove(&id);
                Err(e)
            }
        }
    }

    /// Writes an encoded chunk to a temporary file (directly, see [`crate::direct`]), flushes
    /// it to disk and renames it to its id. Its directory entry becomes durable with the next
    /// [`ChunkStore::sync_dirs`].
    pub(crate) fn complete(&self, written: Written, claims: &Claims) -> Result<()> {
        let Written { tmp, id, bytes } = written;
        // Encoded chunks are allocated per chunk (their number in flight is bounded by the
        // queue to the flushers); each flusher copies into one aligned buffer of its own and
        // frees the chunk before it waits on the disk.
        let mut bytes = Some(bytes);
        let mut created = false;
        let result = (|| {
            let file = create_new(&tmp)?;
            created = true;
            ALIGNED
                .with(|cell| {
                    let aligned = &mut *cell.borrow_mut();
                    aligned.clear();
                    aligned.extend_from_slice(&bytes.take().unwrap_or_default());
                    direct::write_all_at(&file, aligned.as_slice(), 0)
                })
                .ctx("write", &tmp)?;
            file.sync_all().ctx("flush to disk", &tmp)?;
            drop(file);
            fs::rename(&tmp, self.path_of(&id)).ctx("rename into place", &tmp)
        })();
        match &result {
            Ok(()) => self.touched.lock().expect("lock")[id.0[0] as usize] = true,
            Err(_) if created => {
                let _ = fs::remove_file(&tmp);
            }
            Err(_) => {}
        }
        claims.0.lock().expect("lock").remove(&id);
        result
    }

    /// Compresses and seals a chunk into its file bytes (`out` is cleared first).
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
        let path = self.path_of(id);
        let mut bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::ChunkMissing {
                    id: id.to_hex(),
                    path,
                });
            }
            Err(e) => return Err(Error::io("read chunk", &path, e)),
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

    /// Flushes the directories that received new chunk names, so every chunk stored so far
    /// survives a crash. Called before a snapshot record that references them is written.
    ///
    /// The directories are flushed by several threads at once: each flush waits on the disk,
    /// and a snapshot of a few hundred chunks touches most of the 256.
    pub(crate) fn sync_dirs(&self) -> Result<()> {
        let touched = std::mem::replace(&mut *self.touched.lock().expect("lock"), [false; 256]);
        let dirs: Vec<PathBuf> = (0..=255u8)
            .filter(|i| touched[*i as usize])
            .map(|i| self.dir.join(hex::encode([i])))
            .collect();
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

    /// Every file in the chunk directories: `(path, id if the name is a chunk id, size)`.
    pub(crate) fn list_files(&self) -> Result<Vec<(PathBuf, Option<ChunkId>, u64)>> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let sub = self.dir.join(hex::encode([i]));
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

    /// The chunk subdirectory path for index `i` (used to flush after deletions).
    pub(crate) fn subdir(&self, i: u8) -> PathBuf {
        self.dir.join(hex::encode([i]))
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
        ChunkStore::new(dir, Arc::new(Keys::from_master(&[9u8; 32])), 3, 1 << 20)
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

        let path = s.path_of(&a.id);
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(s.load(&a.id), Err(Error::ChunkCorrupt { .. })));
        fs::remove_file(&path).unwrap();
        assert!(matches!(s.load(&a.id), Err(Error::ChunkMissing { .. })));
    }
}
