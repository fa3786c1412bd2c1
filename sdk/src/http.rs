//! The plugin-side view of the `http` capability.

use std::time::Duration;

use crate::outcome::ActionError;

/// HTTP methods the host's client supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
}

/// One request; build it with [`HttpRequest::get`] and friends.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
    pub max_redirects: u8,
}

impl HttpRequest {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_redirects: 0,
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    pub fn head(url: impl Into<String>) -> Self {
        Self::new(Method::Head, url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new(Method::Post, url).body(body)
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Follow up to `n` redirects; the host checks every hop against the grant.
    pub fn follow_redirects(mut self, n: u8) -> Self {
        self.max_redirects = n;
        self
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was longer than the grant's limit and was cut.
    pub body_truncated: bool,
    pub elapsed: Duration,
    pub final_url: String,
    pub remote_address: Option<String>,
    /// For https: the peer certificate's notAfter, seconds since the Unix epoch.
    pub cert_not_after: Option<i64>,
}

impl HttpResponse {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not granted; the message names the manifest entry that would allow it.
    Denied(String),
    InvalidRequest(String),
    Timeout,
    Connection(String),
    Tls(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "denied: {m}"),
            HttpError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Connection(m) => write!(f, "connection failed: {m}"),
            HttpError::Tls(m) => write!(f, "TLS failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ActionError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(m) => ActionError::Denied(m),
            HttpError::InvalidRequest(m) => ActionError::InvalidParams(m),
            other => ActionError::Failed(other.to_string()),
        }
    }
}
