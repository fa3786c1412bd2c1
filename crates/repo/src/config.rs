//! The repository config file: format version, chunker and compression parameters, repository
//! id and the sealed master key.
//!
//! The config is plain JSON (nothing in it is secret: the master key is sealed under the
//! stretched secret), so an operator can see what a directory is without the key. The sealed
//! master key's associated data binds the id, version, chunker and compression parameters, so
//! editing them is detected as a wrong key rather than silently changing how data is cut.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::keys::KdfParams;

/// Value of the config's `format` field: marks a directory as a runcap repository.
pub(crate) const FORMAT_NAME: &str = "runcap-repo";
/// The on-disk format version this build writes: 2 stores chunks in pack files. Version 1
/// (one file per chunk) is still read; new chunks added to it go into packs.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub(crate) const OLDEST_VERSION: u32 = 1;
/// Name of the config file in the repository directory.
pub(crate) const CONFIG_FILE: &str = "config";

/// Content-defined chunking parameters, fixed for the life of a repository.
///
/// The defaults (64 KiB / 256 KiB / 1 MiB) are chosen for backup data on disk. Chunks are
/// stored in packs (see `packs`), so a chunk costs an index entry rather than a file, a flush
/// and a rename; a 256 KiB average then finds four times the repeats a 1 MiB one does (data
/// that repeats at a period shorter than a chunk deduplicates only where boundaries fall alike)
/// for less CPU, and keeps about four thousand index entries (under 0.5 MiB) per GiB. The
/// minimum keeps tiny chunks from fragmenting the store; the maximum bounds memory per chunk in
/// flight. Files smaller than the minimum are packed together into shared chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, in bytes (except the last chunk of a stream).
    pub min_size: u32,
    /// Target average chunk size, in bytes.
    pub avg_size: u32,
    /// Largest chunk, in bytes.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 64 * 1024,
            avg_size: 256 * 1024,
            max_size: 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters against what FastCDC 2020 supports.
    pub(crate) fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as cdc;
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&min)
            && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&avg)
            && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&max)
            && min < avg
            && avg < max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "chunker sizes {min}/{avg}/{max} are invalid; they must be even, min < avg < max, min in {}..={}, avg in {}..={}, max in {}..={}",
                cdc::MINIMUM_MIN,
                cdc::MINIMUM_MAX,
                cdc::AVERAGE_MIN,
                cdc::AVERAGE_MAX,
                cdc::MAXIMUM_MIN,
                cdc::MAXIMUM_MAX
            )))
        }
    }
}

/// How chunks are compressed before encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compression {
    /// Always `zstd` in format version 1.
    pub(crate) algorithm: String,
    /// zstd level used for new chunks.
    pub(crate) level: i32,
}

/// The parsed config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Config {
    /// Always [`FORMAT_NAME`].
    pub(crate) format: String,
    /// On-disk format version.
    pub(crate) version: u32,
    /// Random repository id (hex).
    pub(crate) id: String,
    /// When the repository was created.
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created: OffsetDateTime,
    /// Chunking parameters.
    pub(crate) chunker: ChunkerParams,
    /// Compression parameters.
    pub(crate) compression: Compression,
    /// Key-derivation parameters.
    pub(crate) kdf: KdfParams,
    /// Key-derivation salt (hex).
    pub(crate) salt: String,
    /// Master key sealed under the stretched secret: nonce || ciphertext || tag (hex).
    pub(crate) master_key: String,
}

impl Config {
    /// Associated data for the sealed master key: binds every parameter that changes how data is
    /// written, so tampering with them fails the key check.
    pub(crate) fn binding(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            self.format,
            self.version,
            self.id,
            self.chunker.min_size,
            self.chunker.avg_size,
            self.chunker.max_size,
            self.compression.algorithm,
            self.compression.level
        )
        .into_bytes()
    }

    /// Reads and checks the config of the repository at `root`.
    pub(crate) fn load(root: &Path) -> Result<Config> {
        let path = root.join(CONFIG_FILE);
        let not_repo = |reason: String| Error::NotARepository {
            path: root.to_path_buf(),
            reason,
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_repo("it has no config file".into()));
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        // Look at format and version before the full shape, so a newer layout is reported as a
        // version problem rather than as garbage.
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| not_repo(format!("its config file is not valid JSON: {e}")))?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(not_repo(
                "its config file does not belong to a runcap repository".into(),
            ));
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if !(u64::from(OLDEST_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
            return Err(Error::UnsupportedVersion {
                path: root.to_path_buf(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| not_repo(format!("its config file is incomplete: {e}")))?;
        config
            .chunker
            .validate()
            .map_err(|e| not_repo(format!("its config file has bad chunker sizes: {e}")))?;
        if config.compression.algorithm != "zstd" {
            return Err(not_repo(format!(
                "its config names unknown compression {:?}",
                config.compression.algorithm
            )));
        }
        Ok(config)
    }

    /// Writes the config atomically and durably.
    pub(crate) fn store(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("serialize config: {e}")))?;
        write_atomic(&root.join(CONFIG_FILE), &json, true)
    }
}
