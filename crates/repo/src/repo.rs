//! Creating and opening a repository.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic::{create_dir, fsync_dir, random_bytes};
use crate::chunks::{CHUNKS_DIR, ChunkStore};
use crate::config::{ChunkerParams, Compression, Config, FORMAT_NAME, FORMAT_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::keys::{KdfParams, Keys, unwrap_master, wrap_master};
use crate::lock::LOCKS_DIR;
use crate::packs::PACKS_DIR;
use crate::snapshot::SNAPSHOTS_DIR;

/// Directory for unnamed spool files (snapshot file lists before they are chunked).
pub(crate) const TMP_DIR: &str = "tmp";

/// Settings fixed when a repository is created.
///
/// The defaults suit backup data; they exist as options so an operator can tune the key
/// derivation cost to the machine and so tests can use small chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitOptions {
    /// Content-defined chunking sizes.
    pub chunker: ChunkerParams,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// zstd level for chunks (1..=19; 3 balances speed and size).
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            kdf: KdfParams::default(),
            compression_level: 3,
        }
    }
}

/// An open backup repository: the entry point of every operation.
///
/// Opening derives the keys from the secret once; the handle can then run any number of
/// operations, and is `Send + Sync` so the host can share it between tasks (operations take the
/// repository lock they need themselves).
pub struct Repository {
    pub(crate) root: PathBuf,
    pub(crate) config: Config,
    pub(crate) store: ChunkStore,
    /// Kept so the secret can be changed without reopening.
    pub(crate) master: [u8; 32],
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("root", &self.root)
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Creates a repository in `dir` (created if missing, must be empty otherwise) with default
    /// settings, protected by `secret`.
    pub fn init(dir: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<Repository> {
        Self::init_with(dir, secret, &InitOptions::default())
    }

    /// Creates a repository with explicit settings.
    pub fn init_with(
        dir: impl AsRef<Path>,
        secret: impl AsRef<[u8]>,
        options: &InitOptions,
    ) -> Result<Repository> {
        let root = dir.as_ref().to_path_buf();
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(Error::InvalidArgument(
                "the repository secret is empty; grant a non-empty secret".into(),
            ));
        }
        options.chunker.validate()?;
        options.kdf.validate()?;
        if !(1..=19).contains(&options.compression_level) {
            return Err(Error::InvalidArgument(format!(
                "compression level {} is out of range; use 1..=19 (3 is the default)",
                options.compression_level
            )));
        }
        match fs::read_dir(&root) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::NotEmpty { path: root });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&root)?,
            Err(e) => return Err(Error::io("open directory", &root, e)),
        }

        let master = random_bytes::<32>()?;
        let salt = random_bytes::<16>()?;
        let mut config = Config {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            id: hex::encode(random_bytes::<16>()?),
            created: OffsetDateTime::now_utc(),
            chunker: options.chunker,
            compression: Compression {
                algorithm: "zstd".into(),
                level: options.compression_level,
            },
            kdf: options.kdf.clone(),
            salt: hex::encode(salt),
            master_key: String::new(),
        };
        let kek = config.kdf.derive(secret, &salt)?;
        config.master_key = hex::encode(wrap_master(&kek, &master, &config.binding())?);

        ChunkStore::create_layout(&root)?;
        for sub in [SNAPSHOTS_DIR, LOCKS_DIR, TMP_DIR] {
            create_dir(&root.join(sub))?;
        }
        fsync_dir(&root)?;
        // The config is written last: a crash before this point leaves no repository rather
        // than a half-made one.
        config.store(&root)?;
        Ok(Self::assemble(root, config, &master))
    }

    /// Opens the repository in `dir` with `secret`.
    ///
    /// Fails with [`Error::NotARepository`], [`Error::UnsupportedVersion`] or
    /// [`Error::WrongKey`] before anything else is read or written.
    pub fn open(dir: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<Repository> {
        let root = dir.as_ref().to_path_buf();
        let config = Config::load(&root)?;
        let bad_config = |what: &str| Error::NotARepository {
            path: root.clone(),
            reason: format!("its config file has a malformed {what}"),
        };
        let mut salt = [0u8; 16];
        hex::decode_to_slice(&config.salt, &mut salt).map_err(|_| bad_config("salt"))?;
        let sealed = hex::decode(&config.master_key).map_err(|_| bad_config("key"))?;
        let kek = config.kdf.derive(secret.as_ref(), &salt)?;
        let master = unwrap_master(&kek, &sealed, &config.binding())
            .ok_or_else(|| Error::WrongKey { path: root.clone() })?;
        let data_dir = if config.version == 1 {
            CHUNKS_DIR
        } else {
            PACKS_DIR
        };
        for sub in [data_dir, SNAPSHOTS_DIR] {
            if !root.join(sub).is_dir() {
                return Err(Error::NotARepository {
                    path: root.clone(),
                    reason: format!("its {sub}/ directory is missing"),
                });
            }
        }
        // Needed only to make snapshots; a repository on read-only media still opens.
        let _ = create_dir(&root.join(TMP_DIR));
        Ok(Self::assemble(root, config, &master))
    }

    fn assemble(root: PathBuf, config: Config, master: &[u8; 32]) -> Repository {
        let keys = Arc::new(Keys::from_master(master));
        let store = ChunkStore::new(
            &root,
            keys,
            config.compression.level,
            config.chunker.max_size as usize,
        );
        Repository {
            root,
            config,
            store,
            master: *master,
        }
    }

    /// Re-protects the repository with a new secret. Only the config file changes: data stays
    /// encrypted under the same master key.
    pub fn change_secret(&mut self, new_secret: impl AsRef<[u8]>) -> Result<()> {
        let new_secret = new_secret.as_ref();
        if new_secret.is_empty() {
            return Err(Error::InvalidArgument(
                "the new secret is empty; choose a non-empty secret".into(),
            ));
        }
        let salt = random_bytes::<16>()?;
        let mut config = self.config.clone();
        config.salt = hex::encode(salt);
        let kek = config.kdf.derive(new_secret, &salt)?;
        config.master_key = hex::encode(wrap_master(&kek, &self.master, &config.binding())?);
        config.store(&self.root)?;
        self.config = config;
        Ok(())
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The repository's random id (hex), stable for its life.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The chunking parameters fixed at creation.
    pub fn chunker_params(&self) -> ChunkerParams {
        self.config.chunker
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }
}

impl Repository {
    /// Names and paths of the entries of a repository subdirectory, sorted.
    pub(crate) fn read_dir_names(&self, sub: &str) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}
