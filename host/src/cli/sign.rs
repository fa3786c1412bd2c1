//! `runcap keygen`, `runcap sign` and `runcap verify`: ed25519 signatures of plugin
//! files, for manifests that require them (`signed_by`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::manifest::file_digest;
use crate::signing::{self, PublicKey};

/// `runcap keygen NAME`: writes NAME.key (the secret, readable only by its owner) and
/// NAME.pub (the public key, for `[signers]`).
pub fn keygen(name: &str, dir: &Path) -> u8 {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        eprintln!(
            "error: `{name}` is not a signer name: use lower-case letters, digits, `-` and `_`, starting with a letter"
        );
        return 2;
    }
    let (secret, public) = match signing::generate() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: no randomness for a key: {e}");
            return 2;
        }
    };
    let key_path = dir.join(format!("{name}.key"));
    let pub_path = dir.join(format!("{name}.pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            eprintln!(
                "error: {} exists; keygen never overwrites a key",
                p.display()
            );
            return 2;
        }
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .and_then(|()| std::fs::write(&pub_path, format!("{public}\n")));
    if let Err(e) = written {
        eprintln!("error: cannot write the key pair in {}: {e}", dir.display());
        return 2;
    }
    println!(
        "wrote {} (secret: keep it out of the repository)",
        key_path.display()
    );
    println!("wrote {}", pub_path.display());
    println!("declare the signer in a manifest:\n[signers]\n{name} = \"{public}\"");
    0
}

/// The sha256 of a plugin file, or exit code 2 after saying why it cannot be read.
fn digest_of(file: &Path) -> Result<String, u8> {
    file_digest(file).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", file.display());
        2
    })
}

/// `runcap sign FILE --key KEY_FILE`: writes FILE.sig.
pub fn sign(file: &Path, key_file: &Path) -> u8 {
    let secret = match std::fs::read_to_string(key_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", key_file.display());
            return 2;
        }
    };
    let digest = match digest_of(file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let signature = match signing::sign(&secret, &digest) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", key_file.display());
            return 2;
        }
    };
    let out = signing::signature_path(file);
    if let Err(e) = crate::engine::cache::write_atomically(&out, signature.as_bytes()) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return 2;
    }
    let public = signing::public_of(&secret)
        .map(|k| k.to_string())
        .unwrap_or_default();
    println!("signed {} (sha256 {digest})", file.display());
    println!("wrote {} for key {public}", out.display());
    0
}

/// `runcap verify FILE --key PUBLIC`: whether FILE.sig is PUBLIC's signature of FILE.
/// PUBLIC is the key's text or a file holding it (NAME.pub).
pub fn verify(file: &Path, key: &str) -> u8 {
    let text = match std::fs::read_to_string(key) {
        Ok(t) => t,
        Err(_) => key.to_string(),
    };
    let key: PublicKey = match text.parse() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let digest = match digest_of(file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match signing::signer_of(file, &digest, [("key", &key)]) {
        Ok(_) => {
            println!(
                "ok: {} (sha256 {digest}) is signed by {key}",
                file.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
