//! A small HTTP service with the behaviours runbooks probe for: healthy, unhealthy,
//! slow, JSON, redirects, a health flag that can be flipped, large bodies, and a JSON
//! data file (`/data` judges it, `/data/raw` serves it as it is).
//! Runs in a test process or as the `runcap-demo-service` binary.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Shared, switchable state of one service.
#[derive(Debug, Default)]
pub struct ServiceState {
    /// When set, `/health` answers 503.
    pub down: AtomicBool,
    /// Requests served, by every endpoint.
    pub requests: AtomicU64,
    /// Requests to `/flip`, which alternates healthy and unhealthy.
    pub flips: AtomicU64,
    /// Requests to `/fail-first`, which fails until it has been asked `n` times.
    pub attempts: AtomicU64,
    /// Bodies POSTed to `/hooks/NAME`, as (NAME, JSON).
    pub hooks: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
    /// A JSON file `/data` reads on every request: 200 while it parses, 500 once damaged.
    pub data_file: std::sync::OnceLock<std::path::PathBuf>,
}

/// Serves until the listener fails; with `tls` every connection is HTTPS.
pub async fn serve(listener: TcpListener, state: Arc<ServiceState>, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", value.to_string())
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ServiceState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    use http_body_util::BodyExt;
    state.requests.fetch_add(1, Ordering::Relaxed);
    let q = query(&req);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if method == "POST"
        && let Some(name) = path.strip_prefix("/hooks/")
    {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        state
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), value));
        return Ok(json(StatusCode::OK, serde_json::json!({"received": true})));
    }
    if path == "/echo" {
        // Which method arrived, and the body it carried.
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(json(
            StatusCode::OK,
            serde_json::json!({"method": method, "body": String::from_utf8_lossy(&body)}),
        ));
    }
    let resp = match (method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/health") => {
            if state.down.load(Ordering::Relaxed) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "down"}),
                )
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "up", "checks": {"db": true, "queue": true}}),
                )
            }
        }
        ("GET", "/unhealthy") => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "down", "checks": {"db": false}}),
        ),
        ("GET", "/slow") => {
            let ms = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(
                StatusCode::OK,
                serde_json::json!({"status": "up", "slept_ms": ms}),
            )
        }
        ("GET", "/json") => json(
            StatusCode::OK,
            serde_json::json!({"status": "up", "version": "1.4.2", "queue": {"depth": 3, "workers": 4}}),
        ),
        ("GET", "/redirect") => match q.get("to") {
            Some(to) => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(Full::new(Bytes::new()))
                .expect("valid redirect"),
            None => reply(StatusCode::BAD_REQUEST, "text/plain", "missing ?to="),
        },
        ("GET", "/flip") => {
            let n = state.flips.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(2) {
                json(StatusCode::OK, serde_json::json!({"status": "up"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "down"}),
                )
            }
        }
        ("GET", "/data" | "/data/raw") => match state.data_file.get() {
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no --data file"),
            Some(f) => {
                match std::fs::read(f).map(|b| serde_json::from_slice::<serde_json::Value>(&b)) {
                    // The file itself, for checks of what it says rather than its size.
                    Ok(Ok(v)) if path == "/data/raw" => json(StatusCode::OK, v),
                    Ok(Ok(v)) => json(
                        StatusCode::OK,
                        serde_json::json!({"status": "ok", "records": v.as_array().map_or(0, |a| a.len())}),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"status": "corrupt", "error": e.to_string()}),
                    ),
                    Err(e) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"status": "unreadable", "error": e.to_string()}),
                    ),
                }
            }
        },
        ("GET", "/fail-first") => {
            let n: u64 = q.get("n").and_then(|b| b.parse().ok()).unwrap_or(1);
            let seen = state.attempts.fetch_add(1, Ordering::Relaxed);
            if seen < n {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "starting", "attempt": seen + 1}),
                )
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "up", "attempt": seen + 1}),
                )
            }
        }
        ("GET", "/big") => {
            let n: usize = q
                .get("bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(1 << 20);
            reply(StatusCode::OK, "text/plain", vec![b'a'; n])
        }
        ("POST", "/admin/down") => {
            state.down.store(true, Ordering::Relaxed);
            json(StatusCode::OK, serde_json::json!({"down": true}))
        }
        ("POST", "/admin/up") => {
            state.down.store(false, Ordering::Relaxed);
            json(StatusCode::OK, serde_json::json!({"down": false}))
        }
        ("GET", "/stats") => json(
            StatusCode::OK,
            serde_json::json!({"requests": state.requests.load(Ordering::Relaxed)}),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found"),
    };
    Ok(resp)
}

/// A TLS acceptor from PEM files (certificate chain and PKCS#8 key).
pub fn acceptor_from_pem(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    let certs =
        rustls::pki_types::CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A throwaway certificate authority and a server certificate it signed.
pub struct TestPki {
    /// PEM of the CA certificate, for a grant's `ca`.
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
    /// PEM of the server certificate and its key, for a server runcap runs itself.
    pub cert_pem: String,
    pub key_pem: String,
    /// An acceptor for the same server that refuses clients without a certificate the
    /// CA signed (mTLS).
    pub mutual: TlsAcceptor,
    /// PEM of a client certificate the CA signed, and its key, for a grant's `client_cert`.
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// Makes a CA and a server certificate for `localhost` valid for `days` more days
/// (negative: already expired).
pub fn test_pki(days: i64) -> anyhow::Result<TestPki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "runcap test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    let now = std::time::SystemTime::now();
    let not_after = if days >= 0 {
        now + Duration::from_secs(days as u64 * 86_400)
    } else {
        now - Duration::from_secs((-days) as u64 * 86_400)
    };
    params.not_before = (now - Duration::from_secs(30 * 86_400)).into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "runcap test client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_key = || rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], server_key())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mutual = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], server_key())?;
    Ok(TestPki {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        mutual: TlsAcceptor::from(Arc::new(mutual)),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    })
}
