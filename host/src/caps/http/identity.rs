//! The client certificate an http grant presents to servers that ask for one (mTLS).
//!
//! The grant names where the certificate and its key are, never what they are: a file
//! beside the manifest, or a `[secrets.NAME]`. Files are read and checked (PEM parses,
//! the key matches the certificate) when the manifest is validated; secrets when the
//! plugin is loaded, which `runcap check` does too. Errors say which file or secret is
//! wrong and why, never a byte of the key.

use std::path::PathBuf;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::Declared;
use crate::manifest::{KeyPath, Validator};
use crate::secrets::{SecretError, SecretStore};

/// `client_cert = { cert = "client.pem", key = "client.key" }` as written; `cert_secret`
/// and `key_secret` name a `[secrets.NAME]` instead of a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// PEM file of the certificate (then any intermediates), relative to the manifest.
    pub cert: Option<String>,
    /// A secret holding that PEM instead.
    pub cert_secret: Option<String>,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1), relative to the manifest.
    pub key: Option<String>,
    /// A secret holding that PEM instead.
    pub key_secret: Option<String>,
}

/// Where one PEM document of a client identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file, as written and as resolved against the manifest that wrote it.
    File { written: String, path: PathBuf },
    /// A `[secrets.NAME]`.
    Secret(String),
}

impl std::fmt::Display for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File { written, .. } => write!(f, "file `{written}`"),
            PemSource::Secret(name) => write!(f, "secret `{name}`"),
        }
    }
}

/// A validated client identity: where its certificate and key are. Holds no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PemSource,
    pub key: PemSource,
}

/// Why a client certificate or key cannot be used. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {0}: {1}")]
    Read(PemSource, String),
    #[error("cannot read {0}: {1}")]
    Secret(PemSource, SecretError),
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PemSource),
    #[error("{0} is not a PEM certificate file: {1}")]
    BadCertificate(PemSource, String),
    #[error(
        "{0} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey(PemSource),
    #[error("{0} is not a readable PEM private key")]
    BadKey(PemSource),
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PemSource, key: PemSource },
    #[error("the key in {0} cannot be used: {1}")]
    Unusable(PemSource, rustls::Error),
}

/// A certificate chain and its key, checked to belong together.
pub struct Loaded {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Loaded {{ {} certificates, key: [hidden] }}",
            self.chain.len()
        )
    }
}

impl ClientIdentity {
    /// Checks `client_cert` as written: exactly one source each for the certificate and
    /// the key, files that load and match, secrets that are declared.
    pub fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: &ClientCertConfig,
        declared: &Declared,
    ) -> Option<Self> {
        let cert = source(v, at, "cert", &raw.cert, &raw.cert_secret, declared);
        let key = source(v, at, "key", &raw.key, &raw.key_secret, declared);
        let identity = ClientIdentity {
            cert: cert?,
            key: key?,
        };
        if let Err(e) = identity.check_files() {
            let (field, help) = blame(&identity, &e);
            v.error(&at.key(field), e.to_string(), help);
            return None;
        }
        Some(identity)
    }

    /// Reads what comes from files now: both, and that they match; or the one that is
    /// a file (the secret is read when the plugin loads).
    fn check_files(&self) -> Result<(), IdentityError> {
        let none = SecretStore::default();
        match (&self.cert, &self.key) {
            (PemSource::File { .. }, PemSource::File { .. }) => self.load(&none).map(drop),
            (cert @ PemSource::File { .. }, _) => certificates(cert, &read(cert, &none)?).map(drop),
            (_, key @ PemSource::File { .. }) => private_key(key, &read(key, &none)?).map(drop),
            _ => Ok(()),
        }
    }

    /// Reads the certificate and key from their files or secrets and checks that the
    /// key is the certificate's.
    pub fn load(&self, secrets: &SecretStore) -> Result<Loaded, IdentityError> {
        let chain = certificates(&self.cert, &read(&self.cert, secrets)?)?;
        let key = private_key(&self.key, &read(&self.key, secrets)?)?;
        let provider = rustls::crypto::ring::default_provider();
        match CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider) {
            Ok(_) => Ok(Loaded { chain, key }),
            Err(rustls::Error::InconsistentKeys(_)) => Err(IdentityError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            }),
            Err(e) => Err(IdentityError::Unusable(self.key.clone(), e)),
        }
    }

    /// The secrets it reads, for `runcap check`.
    pub fn secrets(&self) -> Vec<String> {
        [&self.cert, &self.key]
            .into_iter()
            .filter_map(|s| match s {
                PemSource::Secret(n) => Some(n.clone()),
                PemSource::File { .. } => None,
            })
            .collect()
    }

    /// One line for `runcap caps`.
    pub fn describe(&self) -> String {
        format!("client_cert certificate {}, key {}", self.cert, self.key)
    }
}

/// The certificate or key source at `at.field` (a file) or `at.field_secret`.
fn source(
    v: &mut Validator,
    at: &KeyPath,
    field: &str,
    file: &Option<String>,
    secret: &Option<String>,
    declared: &Declared,
) -> Option<PemSource> {
    match (file, secret) {
        (Some(f), None) => Some(PemSource::File {
            written: f.clone(),
            path: v.resolve(&at.key(field), f),
        }),
        (None, Some(name)) if declared.secrets.contains_key(name) => {
            Some(PemSource::Secret(name.clone()))
        }
        (None, Some(name)) => {
            v.error(
                &at.key(format!("{field}_secret")),
                format!("secret `{name}` is not defined"),
                format!("declare it as [secrets.{name}] with file = \"...\" or env = \"...\""),
            );
            None
        }
        (Some(_), Some(_)) => {
            v.error(
                at,
                format!("`{field}` and `{field}_secret` are both set"),
                format!("keep one: `{field}` names a PEM file, `{field}_secret` a [secrets.NAME]"),
            );
            None
        }
        (None, None) => {
            v.error(
                at,
                format!("no `{field}`"),
                format!("add {field} = \"client.{}\" (a PEM file beside the manifest) or {field}_secret = \"NAME\"", if field == "key" { "key" } else { "pem" }),
            );
            None
        }
    }
}

/// The key of `client_cert` an error is about, and how to fix it.
fn blame(id: &ClientIdentity, e: &IdentityError) -> (&'static str, &'static str) {
    let cert = (
        "cert",
        "point `cert` at the client certificate's PEM file, relative to the manifest",
    );
    let key = (
        "key",
        "point `key` at the client certificate's PEM private key, relative to the manifest",
    );
    match e {
        IdentityError::Mismatch { .. } => (
            "key",
            "point `key` at the private key the certificate in `cert` was issued for",
        ),
        IdentityError::NoCertificate(_) | IdentityError::BadCertificate(..) => cert,
        IdentityError::Read(src, _) if *src == id.cert => cert,
        _ => key,
    }
}

/// The PEM text of a source.
fn read(src: &PemSource, secrets: &SecretStore) -> Result<Vec<u8>, IdentityError> {
    match src {
        PemSource::File { path, .. } => {
            std::fs::read(path).map_err(|e| IdentityError::Read(src.clone(), e.to_string()))
        }
        PemSource::Secret(name) => secrets
            .value(name)
            .map(String::into_bytes)
            .map_err(|e| IdentityError::Secret(src.clone(), e)),
    }
}

fn certificates(
    src: &PemSource,
    pem_text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let chain = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::BadCertificate(src.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(IdentityError::NoCertificate(src.clone()));
    }
    Ok(chain)
}

/// The private key in PEM text; the parser's own messages are not passed on, as they
/// may quote the text.
fn private_key(src: &PemSource, pem_text: &[u8]) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|e| match e {
        pem::Error::NoItemsFound => IdentityError::NoKey(src.clone()),
        _ => IdentityError::BadKey(src.clone()),
    })
}

/// Compares `client_cert` of two grants as written: presenting a certificate where none
/// was, or another one, is a change a reviewer sees; dropping it narrows nothing.
pub fn diff(old: Option<&ClientCertConfig>, new: Option<&ClientCertConfig>) -> Vec<Change> {
    let at = KeyPath::root().key("client_cert");
    let named = |c: &ClientCertConfig| {
        let one = |f: &Option<String>, s: &Option<String>| match (f, s) {
            (Some(f), _) => format!("file `{f}`"),
            (None, Some(s)) => format!("secret `{s}`"),
            (None, None) => "nothing".to_string(),
        };
        format!(
            "certificate {}, key {}",
            one(&c.cert, &c.cert_secret),
            one(&c.key, &c.key_secret)
        )
    };
    match (old, new) {
        (None, Some(n)) => vec![Change::new(
            at,
            ChangeKind::Added,
            format!("presents a client certificate: {}", named(n)),
        )],
        (Some(o), None) => vec![Change::new(
            at,
            ChangeKind::Removed,
            format!("no longer presents the client certificate: {}", named(o)),
        )],
        (Some(o), Some(n)) if o != n => vec![Change::new(
            at,
            ChangeKind::Changed,
            format!(
                "presents another client certificate: {} (was {})",
                named(n),
                named(o)
            ),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::http::Http;
    use crate::caps::testing::{self, Decl};

    /// A self-signed certificate and its key, and a key of another pair.
    fn write_pair(dir: &std::path::Path) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("client.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
        other.serialize_pem()
    }

    fn errors(manifest: &str, dir: &std::path::Path, decl: &Decl) -> String {
        testing::grant::<Http>(manifest, dir, decl)
            .unwrap_err()
            .join("\n")
    }

    #[test]
    fn files_that_match_are_granted_and_described_by_name() {
        let (_d, dir) = testing::dir();
        write_pair(&dir);
        let grant = testing::grant::<Http>(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.pem\", key = \"client.key\" }\n",
            &dir,
            &Decl::default(),
        )
        .unwrap();
        assert!(
            grant.describe().contains(
                &"client_cert certificate file `client.pem`, key file `client.key`".to_string()
            ),
            "{:?}",
            grant.describe()
        );
        let loaded = grant
            .client_cert
            .as_ref()
            .unwrap()
            .load(&SecretStore::default())
            .unwrap();
        assert_eq!(loaded.chain.len(), 1);
        assert!(!format!("{loaded:?}").contains("BEGIN"), "{loaded:?}");
    }

    #[test]
    fn a_mismatched_missing_or_half_named_key_is_located_without_its_contents() {
        let (_d, dir) = testing::dir();
        let other = write_pair(&dir);
        let e = errors(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.pem\", key = \"other.key\" }\n",
            &dir,
            &Decl::default(),
        );
        assert!(e.contains("runcap.toml:3"), "{e}");
        assert!(e.contains("plugins.p.grants.http.client_cert.key"), "{e}");
        assert!(
            e.contains(
                "the key in file `other.key` does not match the certificate in file `client.pem`"
            ),
            "{e}"
        );
        assert!(!e.contains(other.lines().nth(1).unwrap()), "{e}");

        let e = errors(
            "[plugins.p.grants.http]\nallow = []\n[plugins.p.grants.http.client_cert]\ncert = \"client.pem\"\nkey = \"gone.key\"\n",
            &dir,
            &Decl::default(),
        );
        assert!(e.contains("runcap.toml:5"), "{e}");
        assert!(e.contains("cannot read file `gone.key`"), "{e}");

        let e = errors(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.key\", key = \"client.key\" }\n",
            &dir,
            &Decl::default(),
        );
        assert!(
            e.contains("file `client.key` holds no PEM certificate"),
            "{e}"
        );

        let e = errors(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.pem\" }\n",
            &dir,
            &Decl::default(),
        );
        assert!(e.contains("no `key`"), "{e}");
        assert!(e.contains("add key = \"client.key\""), "{e}");

        let e = errors(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.pem\", key_secret = \"tls-key\" }\n",
            &dir,
            &Decl::default(),
        );
        assert!(e.contains("secret `tls-key` is not defined"), "{e}");
        assert!(e.contains("declare it as [secrets.tls-key]"), "{e}");

        // A certificate file beside a key from a secret is still read when validated.
        let decl = testing::declared("[secrets.tls-key]\nenv = \"TLS_KEY\"\n", &dir);
        let e = errors(
            "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"gone.pem\", key_secret = \"tls-key\" }\n",
            &dir,
            &decl,
        );
        assert!(e.contains("runcap.toml:3"), "{e}");
        assert!(
            e.contains("plugins.p.grants.http.client_cert.cert: cannot read file `gone.pem`"),
            "{e}"
        );
    }

    #[test]
    fn a_key_from_a_secret_is_read_at_load_and_checked_against_the_certificate() {
        let (_d, dir) = testing::dir();
        write_pair(&dir);
        let decl = testing::declared("[secrets.tls-key]\nfile = \"other.key\"\n", &dir);
        let manifest = "[plugins.p.grants.http]\nallow = []\nclient_cert = { cert = \"client.pem\", key_secret = \"tls-key\" }\n";
        let grant = testing::grant::<Http>(manifest, &dir, &decl).unwrap();
        let id = grant.client_cert.as_ref().unwrap();
        assert_eq!(id.secrets(), ["tls-key"]);
        let store = SecretStore::new(decl.secrets.clone());
        let e = id.load(&store).unwrap_err().to_string();
        assert_eq!(
            e,
            "the key in secret `tls-key` does not match the certificate in file `client.pem`"
        );
    }

    #[test]
    fn presenting_a_certificate_is_a_change_named_by_file_or_secret() {
        let cfg = |key: Option<&str>, key_secret: Option<&str>| ClientCertConfig {
            cert: Some("client.pem".into()),
            cert_secret: None,
            key: key.map(Into::into),
            key_secret: key_secret.map(Into::into),
        };
        let added = diff(None, Some(&cfg(None, Some("tls-key"))));
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].kind, ChangeKind::Added);
        assert_eq!(
            added[0].what,
            "presents a client certificate: certificate file `client.pem`, key secret `tls-key`"
        );
        let changed = diff(
            Some(&cfg(Some("a.key"), None)),
            Some(&cfg(Some("b.key"), None)),
        );
        assert_eq!(changed[0].kind, ChangeKind::Changed);
        let removed = diff(Some(&cfg(Some("a.key"), None)), None);
        assert_eq!(removed[0].kind, ChangeKind::Removed);
        assert!(
            diff(
                Some(&cfg(Some("a.key"), None)),
                Some(&cfg(Some("a.key"), None))
            )
            .is_empty()
        );
    }
}
