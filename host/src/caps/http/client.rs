//! The reqwest client behind one plugin's http grant.
//!
//! Redirects are followed here, not by reqwest, so every hop is checked against the
//! allow-list; name resolution goes through [`GrantResolver`], so the address that is
//! checked is the address that is connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::HttpGrant;
use crate::bindings::runcap::plugin::http as wit;

/// Why a request produced no response.
#[derive(Debug, Clone)]
pub enum SendError {
    Denied(String),
    Invalid(String),
    Timeout,
    Connection(String),
    Tls(String),
}

impl SendError {
    pub fn is_denial(&self) -> bool {
        matches!(self, SendError::Denied(_))
    }

    pub fn message(&self) -> String {
        match self {
            SendError::Denied(m)
            | SendError::Invalid(m)
            | SendError::Connection(m)
            | SendError::Tls(m) => m.clone(),
            SendError::Timeout => "timed out".into(),
        }
    }

    pub fn into_wit(self) -> wit::Error {
        match self {
            SendError::Denied(m) => wit::Error::Denied(m),
            SendError::Invalid(m) => wit::Error::InvalidRequest(m),
            SendError::Timeout => wit::Error::Timeout,
            SendError::Connection(m) => wit::Error::Connection(m),
            SendError::Tls(m) => wit::Error::Tls(m),
        }
    }
}

/// An address refused by the grant's address policy, raised inside the resolver.
#[derive(Debug)]
struct AddressDenied(String);

impl std::fmt::Display for AddressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressDenied {}

/// Resolves names once and hands reqwest only the addresses the grant allows.
struct GrantResolver {
    grant: Arc<HttpGrant>,
}

impl Resolve for GrantResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let grant = self.grant.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::new();
            let mut first_denial = None;
            for addr in found {
                match grant.policy.check_address(&host, addr.ip(), &grant.key) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => {
                        first_denial.get_or_insert(e.to_string());
                    }
                }
            }
            if allowed.is_empty() {
                let e = first_denial.unwrap_or_else(|| format!("{host} has no addresses"));
                return Err(Box::new(AddressDenied(e)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Why a plugin's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Tls(#[from] crate::net::TlsError),
    #[error("{key}.client_cert: {error}")]
    Identity {
        key: String,
        error: Box<super::identity::IdentityError>,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// One plugin's HTTP client: connection pool, TLS roots and policy.
pub struct HttpClient {
    grant: Arc<HttpGrant>,
    client: reqwest::Client,
}

impl HttpClient {
    /// Builds the client for a grant, reading its client certificate (files or
    /// `secrets`) if it has one; called once per plugin at load.
    pub fn new(
        grant: Arc<HttpGrant>,
        secrets: &crate::secrets::SecretStore,
    ) -> Result<Self, ClientError> {
        let identity = match &grant.client_cert {
            Some(id) => Some(id.load(secrets).map_err(|error| ClientError::Identity {
                key: grant.key.clone(),
                error: Box::new(error),
            })?),
            None => None,
        };
        let tls = crate::net::tls_config(&grant.ca, identity.map(|l| (l.chain, l.key)))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .tls_info(true)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GrantResolver {
                grant: grant.clone(),
            }))
            .build()?;
        Ok(HttpClient { grant, client })
    }

    /// Parses a URL and checks it (and, for an address literal, the address) against the grant.
    pub fn check(&self, url: &str) -> Result<Url, SendError> {
        let parsed =
            Url::parse(url).map_err(|e| SendError::Invalid(format!("bad URL `{url}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SendError::Invalid(format!(
                "`{url}` is not an http or https URL"
            )));
        }
        self.grant
            .policy
            .check_url(&parsed, &self.grant.key)
            .map_err(|e| SendError::Denied(e.to_string()))?;
        let literal: Option<IpAddr> = match parsed.host() {
            Some(url::Host::Ipv4(a)) => Some(a.into()),
            Some(url::Host::Ipv6(a)) => Some(a.into()),
            _ => None,
        };
        if let Some(ip) = literal {
            self.grant
                .policy
                .check_address(&ip.to_string(), ip, &self.grant.key)
                .map_err(|e| SendError::Denied(e.to_string()))?;
        }
        Ok(parsed)
    }

    /// Sends a request, following at most `req.max_redirects` granted redirects.
    pub async fn send(
        &self,
        req: wit::Request,
        deadline: Duration,
    ) -> Result<wit::Response, SendError> {
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(deadline)
            .min(deadline);
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.send_following(req, started)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout),
        }
    }

    async fn send_following(
        &self,
        req: wit::Request,
        started: Instant,
    ) -> Result<wit::Response, SendError> {
        let mut url = self.check(&req.url)?;
        let mut method = to_reqwest_method(req.method);
        let mut body = Some(req.body);
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &req.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| SendError::Invalid(format!("bad header name `{k}`")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| SendError::Invalid(format!("bad value for header `{k}`")))?;
            headers.append(name, value);
        }
        let mut hops = 0u8;
        loop {
            let mut rb = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &body
                && !b.is_empty()
            {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| self.explain(classify(e)))?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok());
            if status.is_redirection()
                && hops < req.max_redirects.min(self.grant.max_redirects)
                && let Some(loc) = location
            {
                let next = url.join(loc).map_err(|e| {
                    SendError::Connection(format!("bad redirect Location `{loc}`: {e}"))
                })?;
                self.check(next.as_str()).map_err(|e| match e {
                    SendError::Denied(m) => {
                        SendError::Denied(format!("redirect from {url} to {next} refused: {m}"))
                    }
                    SendError::Invalid(m) => {
                        SendError::Denied(format!("redirect from {url} to {next} refused: {m}"))
                    }
                    other => other,
                })?;
                if status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                url = next;
                hops += 1;
                continue;
            }
            return self.finish(resp, started).await;
        }
    }

    async fn finish(
        &self,
        mut resp: reqwest::Response,
        started: Instant,
    ) -> Result<wit::Response, SendError> {
        let status = resp.status().as_u16();
        let final_url = resp.url().to_string();
        let remote_address = resp.remote_addr().map(|a| a.to_string());
        let cert_not_after = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .and_then(cert_not_after);
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cap = self.grant.max_body as usize;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(wit::Response {
            status,
            headers,
            body,
            body_truncated: truncated,
            elapsed_us: started.elapsed().as_micros() as u64,
            final_url,
            remote_address,
            cert_not_after,
        })
    }
}

impl HttpClient {
    /// Adds to a TLS failure what the grant can do about it: a server that asks for a
    /// client certificate when the grant presents none gets the line that grants one.
    fn explain(&self, e: SendError) -> SendError {
        match e {
            SendError::Tls(m)
                if m.contains("CertificateRequired") && self.grant.client_cert.is_none() =>
            {
                SendError::Tls(format!(
                    "{m}: the server asks for a client certificate and {} presents none; add client_cert = {{ cert = \"client.pem\", key = \"client.key\" }} to it (PEM files beside the manifest; key_secret = \"NAME\" reads the key from [secrets.NAME])",
                    self.grant.key
                ))
            }
            other => other,
        }
    }
}

/// What a mutating request returns in a dry run: nothing was sent.
pub fn dry_run_response(url: &str) -> wit::Response {
    wit::Response {
        status: 204,
        headers: vec![("x-runcap-dry-run".into(), "not sent".into())],
        body: Vec::new(),
        body_truncated: false,
        elapsed_us: 0,
        final_url: url.to_string(),
        remote_address: None,
        cert_not_after: None,
    }
}

/// The method's name as HTTP spells it.
pub fn method_name(m: wit::Method) -> &'static str {
    match m {
        wit::Method::Get => "GET",
        wit::Method::Head => "HEAD",
        wit::Method::Post => "POST",
        wit::Method::Put => "PUT",
        wit::Method::Delete => "DELETE",
        wit::Method::Patch => "PATCH",
    }
}

fn to_reqwest_method(m: wit::Method) -> reqwest::Method {
    match m {
        wit::Method::Get => reqwest::Method::GET,
        wit::Method::Head => reqwest::Method::HEAD,
        wit::Method::Post => reqwest::Method::POST,
        wit::Method::Put => reqwest::Method::PUT,
        wit::Method::Delete => reqwest::Method::DELETE,
        wit::Method::Patch => reqwest::Method::PATCH,
    }
}

/// Sorts a reqwest failure into denial, timeout, TLS or connection trouble.
fn classify(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        return SendError::Timeout;
    }
    let mut chain: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<AddressDenied>() {
            return SendError::Denied(denied.0.clone());
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            return SendError::Tls(s.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.downcast_ref::<rustls::Error>().is_some()
        {
            return SendError::Tls(inner.to_string());
        }
        chain.push(s.to_string());
        source = s.source();
    }
    chain.dedup();
    // Connectors wrap TLS failures in layers of boxed errors; their text is unmistakable.
    if let Some(tls) = chain.iter().rev().find(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("certificate") || m.contains("handshake") || m.contains("tls")
    }) {
        return SendError::Tls(tls.clone());
    }
    // The outer layers repeat the URL and say "client error"; the last two say what broke.
    let start = chain.len().saturating_sub(2);
    SendError::Connection(chain[start..].join(": "))
}

/// The notAfter of a DER certificate, in seconds since the Unix epoch.
fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}
