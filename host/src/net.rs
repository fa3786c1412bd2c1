//! Network helpers capabilities share: the TLS settings of runcap's HTTP clients, reading
//! CA certificates, and naming a URL's origin the way grants do.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use url::Url;

/// Why TLS settings or certificates could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad CA certificate: {0}")]
    BadCa(rustls::Error),
    #[error("{0}")]
    Rustls(rustls::Error),
    #[error("{0}")]
    Pem(String),
    #[error("no certificates in it")]
    NoCertificates,
}

/// A client certificate chain and its private key, for servers that ask for one.
pub type ClientAuth = (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// TLS settings for runcap's HTTP clients: the web PKI roots plus `extra_roots` (DER),
/// with ring as the crypto provider, presenting `client` when a server asks.
pub fn tls_config(
    extra_roots: &[Vec<u8>],
    client: Option<ClientAuth>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut tls = client_config(roots, extra_roots, client)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// TLS settings trusting `roots` and `extra_roots` (DER), with ring as the crypto
/// provider, presenting `client` when a server asks.
fn client_config(
    mut roots: rustls::RootCertStore,
    extra_roots: &[Vec<u8>],
    client: Option<ClientAuth>,
) -> Result<rustls::ClientConfig, TlsError> {
    for der in extra_roots {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(TlsError::BadCa)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots);
    Ok(match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Rustls)?,
        None => builder.with_no_client_auth(),
    })
}

/// TLS settings that trust only the CA certificates in `ca` (a PEM file): for a server of
/// the operator's own, such as the fleet's PostgreSQL, where the web PKI has no say.
pub fn private_ca_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    client_config(rustls::RootCertStore::empty(), &read_pem_certs(ca)?, None)
}

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, TlsError> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .map(|c| {
            c.map(|c| c.to_vec())
                .map_err(|e| TlsError::Pem(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    Ok(certs)
}

/// `scheme://host:port` of a URL, as a grant pattern would name it.
pub fn origin_of(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    match url.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}
