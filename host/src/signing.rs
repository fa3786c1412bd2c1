//! Detached ed25519 signatures of plugin files.
//!
//! A signature binds one exact file: what is signed is a fixed context string and the
//! file's sha256 (the digest the manifest pins). It lives beside the file as
//! `FILE.sig`. Keys are written as text so they can sit in a manifest or a policy:
//! a public key is `ed25519:BASE64`, a secret key file holds `runcap-secret-key
//! ed25519:BASE64`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "runcap-secret-key ed25519:";
const SIGNATURE_PREFIX: &str = "runcap-signature ed25519:";

/// Why a key or signature cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignError {
    #[error(
        "`{0}` is not a public key: write it as ed25519:BASE64 (the text `runcap keygen` puts in NAME.pub)"
    )]
    BadPublicKey(String),
    #[error("not a secret key file written by `runcap keygen`")]
    BadSecretKey,
    #[error("{0} is not a signature written by `runcap sign`")]
    BadSignature(String),
    #[error("{0} is missing: sign the plugin with `runcap sign {1} --key KEY_FILE`")]
    Missing(String, String),
    #[error("the signature in {0} does not match this file and key")]
    Mismatch(String),
    #[error("cannot read {0}: {1}")]
    Read(String, String),
}

/// A signer's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::str::FromStr for PublicKey {
    type Err = SignError;

    fn from_str(text: &str) -> Result<Self, SignError> {
        let bad = || SignError::BadPublicKey(text.to_string());
        let b64 = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

/// What a signature covers: the context and the file's digest.
fn message(sha256: &str) -> Vec<u8> {
    format!("runcap plugin v1 sha256:{}", sha256.to_ascii_lowercase()).into_bytes()
}

/// Where a plugin file's signature lives.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A new key pair: (secret key file text, public key text).
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    let public = PublicKey(key.verifying_key()).to_string();
    Ok((format!("{SECRET_PREFIX}{}\n", B64.encode(seed)), public))
}

/// The public key of a secret key file's text.
pub fn public_of(secret: &str) -> Result<PublicKey, SignError> {
    signing_key(secret).map(|k| PublicKey(k.verifying_key()))
}

fn signing_key(secret: &str) -> Result<SigningKey, SignError> {
    let b64 = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignError::BadSecretKey)?;
    let seed: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignError::BadSecretKey)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The text of `FILE.sig` for a file with digest `sha256`, signed with a secret key file's text.
pub fn sign(secret: &str, sha256: &str) -> Result<String, SignError> {
    sign_message(secret, &message(sha256))
}

/// A signature of any message, as `runcap-signature ed25519:BASE64` text. The message
/// must start with a context string of its own (as plugin signatures and audit
/// checkpoints do), so a signature of one kind never passes for another.
pub fn sign_message(secret: &str, message: &[u8]) -> Result<String, SignError> {
    let key = signing_key(secret)?;
    let sig = key.sign(message);
    Ok(format!(
        "{SIGNATURE_PREFIX}{}\n",
        B64.encode(sig.to_bytes())
    ))
}

/// Whether `signature` (the text of a `.sig` file, named `origin` in errors) is `key`'s
/// signature of a file with digest `sha256`.
pub fn verify(
    key: &PublicKey,
    sha256: &str,
    signature: &str,
    origin: &str,
) -> Result<(), SignError> {
    verify_message(key, &message(sha256), signature, origin)
}

/// Whether `signature` (text as [`sign_message`] writes it, named `origin` in errors) is
/// `key`'s signature of `message`.
pub fn verify_message(
    key: &PublicKey,
    message: &[u8],
    signature: &str,
    origin: &str,
) -> Result<(), SignError> {
    let bad = || SignError::BadSignature(origin.to_string());
    let b64 = signature
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(bad)?;
    let bytes: [u8; 64] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    key.0
        .verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| SignError::Mismatch(origin.to_string()))
}

/// Which of `signers` signed `file` (whose digest is `sha256`): the first whose key
/// verifies `FILE.sig`, or why none does.
pub fn signer_of<'a>(
    file: &Path,
    sha256: &str,
    signers: impl IntoIterator<Item = (&'a str, &'a PublicKey)>,
) -> Result<&'a str, SignError> {
    let sig_path = signature_path(file);
    let shown = sig_path.display().to_string();
    let text = match std::fs::read_to_string(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignError::Missing(shown, file.display().to_string()));
        }
        Err(e) => return Err(SignError::Read(shown, e.to_string())),
    };
    let mut last = SignError::Mismatch(shown.clone());
    for (name, key) in signers {
        match verify(key, sha256, &text, &shown) {
            Ok(()) => return Ok(name),
            Err(e @ SignError::BadSignature(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_the_digest_and_the_key() {
        let (secret, public) = generate().unwrap();
        let key: PublicKey = public.parse().unwrap();
        assert_eq!(public_of(&secret).unwrap(), key);
        let digest = "ab".repeat(32);
        let sig = sign(&secret, &digest).unwrap();
        assert_eq!(verify(&key, &digest, &sig, "x.sig"), Ok(()));
        assert_eq!(
            verify(&key, &"cd".repeat(32), &sig, "x.sig"),
            Err(SignError::Mismatch("x.sig".into()))
        );
        let (_, other) = generate().unwrap();
        let other: PublicKey = other.parse().unwrap();
        assert!(verify(&other, &digest, &sig, "x.sig").is_err());
        assert_eq!(
            verify(&key, &digest, "garbage", "x.sig"),
            Err(SignError::BadSignature("x.sig".into()))
        );
        assert!("ed25519:AAAA".parse::<PublicKey>().is_err());
        assert!(sign("nope", &digest).is_err());
    }
}
