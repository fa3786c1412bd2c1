//! Keys: from the caller's secret to the keys that encrypt and name data.
//!
//! # Choices
//!
//! * **Key derivation: Argon2id.** runcap secrets are whatever an operator put in a secret store,
//!   often a passphrase rather than 32 random bytes, so the secret is stretched with a
//!   memory-hard function. HKDF would be enough for a high-entropy secret but gives a passphrase
//!   no protection against offline guessing. The default (64 MiB, 3 passes, 1 lane) costs about
//!   a quarter of a second on one core, so `init`/`open` stay well under a second while each
//!   guess costs an attacker the same. The parameters live in the config so they can be raised
//!   later without breaking existing repositories.
//! * **Two-level keys.** The stretched secret (the key-encryption key) only unwraps a random
//!   32-byte master key stored, sealed, in the config. Changing the secret therefore rewrites one
//!   file, not the data, and the sealed master key doubles as the key check: a wrong secret fails
//!   its authentication before anything else is read or written.
//! * **Subkeys** are derived from the master key with BLAKE3's `derive_key` (a KDF with domain
//!   separation by context string): one for encryption, one for chunk ids, one for tree digests,
//!   one seeding the chunker.
//! * **AEAD: XChaCha20-Poly1305** with a random 24-byte nonce per message. The extended nonce
//!   makes random nonces safe for any realistic number of chunks (no counter state to keep
//!   across crashes or concurrent writers), it is fast in software on every CPU, and it is
//!   constant-time without AES hardware.
//! * **Chunk ids: keyed BLAKE3** of the plaintext. Content addressing needs a deterministic id,
//!   and keying it means someone who can list the chunk directory but lacks the key cannot test
//!   whether a known file is stored.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::atomic::random_bytes;
use crate::error::{Error, Result};

/// Bytes of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// Argon2id cost parameters, recorded in the repository config.
///
/// Exposed so an operator can raise the cost on strong machines (or lower it, within the floor,
/// on tiny ones) when creating a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id` in format version 1.
    pub algorithm: String,
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            algorithm: "argon2id".to_string(),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Lowest memory cost accepted, in KiB (the OWASP minimum for Argon2id is 19 MiB).
    pub const MIN_MEMORY_KIB: u32 = 19 * 1024;

    /// Checks the parameters are usable and not weaker than the floor.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.algorithm != "argon2id" {
            return Err(Error::InvalidArgument(format!(
                "key derivation {:?} is not supported; use argon2id",
                self.algorithm
            )));
        }
        if self.memory_kib < Self::MIN_MEMORY_KIB
            || self.iterations == 0
            || self.parallelism == 0
            || self.memory_kib > 4 * 1024 * 1024
            || self.iterations > 64
            || self.parallelism > 64
        {
            return Err(Error::InvalidArgument(format!(
                "argon2id parameters {}KiB/{} passes/{} lanes are out of range; use at least {} KiB, 1 pass and 1 lane (at most 4 GiB, 64 passes, 64 lanes)",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                Self::MIN_MEMORY_KIB
            )));
        }
        Ok(())
    }

    /// Stretches `secret` with `salt` into a 32-byte key-encryption key.
    pub(crate) fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        self.validate()?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(secret, salt, &mut out)
            .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
        Ok(out)
    }
}

/// Encrypts `buf[start..]` in place and appends the tag; `buf[start - NONCE_LEN..start]` must be
/// reserved and receives a fresh random nonce.
pub(crate) fn seal_in_place(
    cipher: &XChaCha20Poly1305,
    buf: &mut Vec<u8>,
    start: usize,
    aad: &[u8],
) -> Result<()> {
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    buf[start - NONCE_LEN..start].copy_from_slice(&nonce_bytes);
    let nonce = XNonce::from(nonce_bytes);
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, (&mut buf[start..]).into())
        .map_err(|_| Error::Internal("message too long to encrypt".into()))?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// Authenticates and decrypts `buf[start..]` in place (nonce just before `start`, tag at the end)
/// and truncates the tag. Returns `None` when authentication fails.
pub(crate) fn open_in_place(
    cipher: &XChaCha20Poly1305,
    buf: &mut Vec<u8>,
    start: usize,
    aad: &[u8],
) -> Option<()> {
    if start < NONCE_LEN || buf.len() < start + TAG_LEN {
        return None;
    }
    let nonce = XNonce::try_from(&buf[start - NONCE_LEN..start]).ok()?;
    let tag_at = buf.len() - TAG_LEN;
    let tag = Tag::try_from(&buf[tag_at..]).ok()?;
    cipher
        .decrypt_inout_detached(&nonce, aad, (&mut buf[start..tag_at]).into(), &tag)
        .ok()?;
    buf.truncate(tag_at);
    Some(())
}

/// Builds a cipher from 32 key bytes.
pub(crate) fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(key).expect("32-byte key")
}

/// Seals the master key under the key-encryption key: returns nonce || ciphertext || tag.
pub(crate) fn wrap_master(kek: &[u8; 32], master: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; NONCE_LEN];
    buf.extend_from_slice(master);
    seal_in_place(&cipher(kek), &mut buf, NONCE_LEN, aad)?;
    Ok(buf)
}

/// Opens a sealed master key; `None` means the key-encryption key (so the secret) is wrong or the
/// sealed bytes or `aad` were altered.
pub(crate) fn unwrap_master(kek: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<[u8; 32]> {
    let mut buf = sealed.to_vec();
    open_in_place(&cipher(kek), &mut buf, NONCE_LEN, aad)?;
    buf[NONCE_LEN..].try_into().ok()
}

/// The working keys of an open repository, all derived from its master key.
pub(crate) struct Keys {
    /// Encrypts chunks, trees and snapshot records.
    pub(crate) cipher: XChaCha20Poly1305,
    /// Keys the BLAKE3 hash that names chunks.
    id_key: [u8; 32],
    /// Keys the digest over a snapshot's file list.
    digest_key: [u8; 32],
    /// Seeds the chunker's gear table so chunk boundaries do not reveal content.
    pub(crate) chunker_seed: u64,
}

impl Keys {
    /// Derives every working key from the master key.
    pub(crate) fn from_master(master: &[u8; 32]) -> Keys {
        let enc = blake3::derive_key("runcap-repo v1 data encryption", master);
        let id_key = blake3::derive_key("runcap-repo v1 chunk id", master);
        let digest_key = blake3::derive_key("runcap-repo v1 tree digest", master);
        let seed = blake3::derive_key("runcap-repo v1 chunker seed", master);
        Keys {
            cipher: cipher(&enc),
            id_key,
            digest_key,
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }

    /// The keyed id of a chunk's plaintext.
    pub(crate) fn chunk_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// A keyed hasher for the digest over a snapshot's ordered file list.
    pub(crate) fn tree_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.digest_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_key() {
        let master = [7u8; 32];
        let kek = [1u8; 32];
        let sealed = wrap_master(&kek, &master, b"aad").unwrap();
        assert_eq!(unwrap_master(&kek, &sealed, b"aad"), Some(master));
        assert_eq!(unwrap_master(&[2u8; 32], &sealed, b"aad"), None);
        assert_eq!(unwrap_master(&kek, &sealed, b"other"), None);
    }

    /// The cipher's output is the repository format: whichever code the CPU selects (AVX-512,
    /// AVX2, portable) must produce libsodium's `crypto_aead_xchacha20poly1305_ietf_encrypt`
    /// bytes. A 64 KiB message runs the wide vector paths, its odd tail the narrow ones.
    #[test]
    fn cipher_matches_libsodium() {
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0x40 + i as u8);
        let aad = b"RCK1 known answer";
        let n = 65536 + 77;
        let mut buf: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect();
        let plain = buf.clone();
        let tag = cipher(&key)
            .encrypt_inout_detached(&XNonce::from(nonce), aad, buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(hex::encode(&buf[..16]), "f20662ec44d6d96ec0503e83a1f0f839");
        assert_eq!(
            hex::encode(&buf[n - 16..]),
            "fcde7d33d4ce2e8a6f5974293f499333"
        );
        assert_eq!(hex::encode(tag), "c50f6a98b10a8580435be9f16e962794");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buf);
        sealed.extend_from_slice(&tag);
        open_in_place(&cipher(&key), &mut sealed, NONCE_LEN, aad).unwrap();
        assert_eq!(&sealed[NONCE_LEN..], &plain[..]);
    }

    #[test]
    fn seal_open_roundtrip_detects_tamper() {
        let keys = Keys::from_master(&[3u8; 32]);
        let mut buf = vec![0u8; 4 + NONCE_LEN];
        buf.extend_from_slice(b"hello world");
        seal_in_place(&keys.cipher, &mut buf, 4 + NONCE_LEN, b"x").unwrap();
        let mut copy = buf.clone();
        open_in_place(&keys.cipher, &mut copy, 4 + NONCE_LEN, b"x").unwrap();
        assert_eq!(&copy[4 + NONCE_LEN..], b"hello world");
        let mut bad = buf.clone();
        bad[30] ^= 1;
        assert!(open_in_place(&keys.cipher, &mut bad, 4 + NONCE_LEN, b"x").is_none());
    }
}
