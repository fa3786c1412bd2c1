//! `http`: outbound HTTP(S) to granted hosts.
//!
//! | | |
//! |---|---|
//! | grants | requests to URLs whose scheme, host and port match `allow`; non-public addresses listed in `addresses` |
//! | manifest | `[plugins.NAME.grants.http]` `allow = ["https://*.example.com"]`, `addresses = ["10.0.0.0/8"]`, `max_body = "1MiB"`, `ca = ["internal-ca.pem"]` |
//! | default | no grant: the interface cannot be imported; empty `allow`: every request denied |
//! | enforced | before every request and every redirect hop (URL), and in the resolver (every resolved address; the connection uses the checked address); body capped at `max_body`; mutating methods skipped in dry-run |
//! | audit | one call record per request: method, URL, allowed or the denial reason, status |

mod client;
pub mod policy;

use std::sync::Arc;

use serde::Deserialize;

use crate::bindings::runcap::plugin::http as wit;
use crate::caps::{CallRecord, HostState};
use crate::manifest::{KeyPath, Validator};

pub use client::{HttpClient, tls_config};
use policy::{Policy, UrlPattern};

/// The WIT interface this module implements.
pub const INTERFACE: &str = "runcap:plugin/http";

/// `[plugins.NAME.grants.http]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrantConfig {
    /// `allow = ["https://*.example.com", "http://127.0.0.1:*"]`
    pub allow: Vec<String>,
    /// `addresses = ["10.0.0.0/8"]`: non-public networks the allowed hosts may resolve to.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `max_body = "1MiB"`: response bodies are cut at this size.
    pub max_body: Option<String>,
    /// `ca = ["ca.pem"]`: extra root certificates (PEM) trusted for https, beside the web PKI.
    #[serde(default)]
    pub ca: Vec<String>,
}

/// A validated http grant.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    pub policy: Policy,
    pub max_body: u64,
    /// DER of the extra trusted roots.
    pub ca: Vec<Vec<u8>>,
    /// Their files, for reports.
    pub ca_files: Vec<String>,
    /// `plugins.NAME.grants.http`, for denial messages.
    pub key: String,
}

impl HttpGrant {
    pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

    /// Checks a raw grant, recording every problem in `v`.
    pub fn validate(v: &mut Validator, path: &KeyPath, raw: HttpGrantConfig) -> Option<Arc<Self>> {
        let mut ok = true;
        let mut allow = Vec::new();
        for (i, a) in raw.allow.iter().enumerate() {
            match UrlPattern::parse(a) {
                Ok(p) => allow.push(p),
                Err(e) => {
                    ok = false;
                    v.error(
                        &path.key("allow").index(i),
                        e,
                        "allow entries look like \"https://api.example.com\", \"https://*.internal:8443\" or \"http://127.0.0.1:*\"",
                    );
                }
            }
        }
        let mut addresses = Vec::new();
        for (i, a) in raw.addresses.iter().enumerate() {
            match policy::parse_net(a) {
                Ok(n) => addresses.push(n),
                Err(e) => {
                    ok = false;
                    v.error(&path.key("addresses").index(i), e, "");
                }
            }
        }
        let max_body = match &raw.max_body {
            Some(s) => v
                .size(&path.key("max_body"), s)
                .unwrap_or(Self::DEFAULT_MAX_BODY),
            None => Self::DEFAULT_MAX_BODY,
        };
        let mut ca = Vec::new();
        for (i, file) in raw.ca.iter().enumerate() {
            match client::read_pem_certs(&v.resolve(file)) {
                Ok(certs) => ca.extend(certs),
                Err(e) => {
                    ok = false;
                    v.error(
                        &path.key("ca").index(i),
                        format!("cannot use {file}: {e}"),
                        "point it at a PEM file of CA certificates, relative to the manifest",
                    );
                }
            }
        }
        ok.then(|| {
            Arc::new(HttpGrant {
                policy: Policy { allow, addresses },
                max_body,
                ca,
                ca_files: raw.ca,
                key: path.to_string(),
            })
        })
    }

    /// One line per entry, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .policy
            .allow
            .iter()
            .map(|p| format!("allow {p}"))
            .collect();
        lines.extend(
            self.policy
                .addresses
                .iter()
                .map(|n| format!("addresses {n}")),
        );
        lines.push(format!("max_body {}", bytesize::ByteSize(self.max_body)));
        lines.extend(self.ca_files.iter().map(|c| format!("ca {c}")));
        lines
    }
}

impl wit::Host for HostState {
    async fn send(
        &mut self,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::Error>> {
        let method = client::method_name(req.method).to_string();
        let target = req.url.clone();
        let Some(client) = self.granted.http.clone() else {
            let reason = format!(
                "no http grant; add [plugins.{}.grants.http] with an allow list",
                self.plugin
            );
            self.record(CallRecord::denied("http", &method, &target, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        };
        let mutating = !matches!(req.method, wit::Method::Get | wit::Method::Head);
        if mutating && self.dry_run {
            // Check the grant all the same, so a dry run reports denials truthfully.
            if let Err(e) = client.check(&req.url) {
                self.record(CallRecord::denied("http", &method, &target, &e.message()));
                return Ok(Err(e.into_wit()));
            }
            self.record(CallRecord::dry_run("http", &method, &target));
            return Ok(Ok(client::dry_run_response(&req.url)));
        }
        let deadline = self.remaining();
        let result = client.send(req, deadline).await;
        match &result {
            Ok(r) => self.record(
                CallRecord::allowed("http", &method, &target)
                    .with_result(format!("status {}", r.status)),
            ),
            Err(e) if e.is_denial() => {
                self.record(CallRecord::denied("http", &method, &target, &e.message()))
            }
            Err(e) => {
                self.record(CallRecord::allowed("http", &method, &target).with_result(e.message()))
            }
        }
        Ok(result.map_err(client::SendError::into_wit))
    }
}
