//! `http`: outbound HTTP(S) to granted hosts.
//!
//! | | |
//! |---|---|
//! | grants | requests to URLs whose scheme, host and port match `allow`; non-public addresses listed in `addresses` |
//! | manifest | `[plugins.NAME.grants.http]` `allow = ["https://*.example.com"]`, `addresses = ["10.0.0.0/8"]`, `max_body = "1MiB"`, `ca = ["internal-ca.pem"]`, `max_redirects = 10`, `client_cert = { cert = "client.pem", key = "client.key" }` (or `key_secret = "NAME"`) |
//! | default | no grant: the interface cannot be imported; empty `allow`: every request denied |
//! | enforced | before every request and every redirect hop (URL), and in the resolver (every resolved address; the connection uses the checked address); body capped at `max_body`; mutating methods skipped in dry-run; the client certificate is presented only to granted hosts that ask for one |
//! | audit | one call record per request: method, URL, allowed or the denial reason, status |

mod client;
pub mod identity;
pub mod policy;

use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::http as wit;
use crate::caps::compare::{Change, ChangeKind, fmt_size};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator};

pub use client::HttpClient;
use identity::{ClientCertConfig, ClientIdentity};
use policy::{Policy, UrlPattern};

/// The `http` capability.
pub struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    const INTERFACE: &'static str = "runcap:plugin/http";
    const WIT: Option<&'static str> = Some(include_str!("../../../../wit/http.wit"));
    type Config = HttpGrantConfig;
    type Grant = HttpGrant;
    type Access = HttpClient;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!("[plugins.{plugin}.grants.http]\nallow = []   # e.g. \"https://api.example.com\"")
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: HttpGrantConfig,
        declared: &Declared,
    ) -> Option<HttpGrant> {
        HttpGrant::validate(v, at, raw, declared)
    }

    fn diff(old: &HttpGrantConfig, new: &HttpGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &HttpGrant) -> Vec<String> {
        grant.describe()
    }

    fn secrets(grant: &HttpGrant) -> Vec<String> {
        grant
            .client_cert
            .as_ref()
            .map_or_else(Vec::new, ClientIdentity::secrets)
    }

    fn prepare(grant: Arc<HttpGrant>, env: &Resources) -> Result<HttpClient, PrepareError> {
        HttpClient::new(grant, &env.secrets).map_err(|e| PrepareError(e.to_string()))
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

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
    /// `max_redirects = 10`: the most redirects one request follows, whatever the plugin asks.
    pub max_redirects: Option<u8>,
    /// `client_cert = { cert = "client.pem", key = "client.key" }`: the certificate
    /// presented to granted hosts that ask for one (mTLS); `key_secret` / `cert_secret`
    /// name a `[secrets.NAME]` instead of a file.
    pub client_cert: Option<ClientCertConfig>,
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
    /// The host's ceiling on redirects followed per request.
    pub max_redirects: u8,
    /// Where the client certificate and key are, when the grant presents one.
    pub client_cert: Option<ClientIdentity>,
}

impl HttpGrant {
    pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
    /// Redirects one request may follow unless the grant says otherwise.
    pub const DEFAULT_MAX_REDIRECTS: u8 = 10;

    /// Checks a raw grant, recording every problem in `v`.
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: HttpGrantConfig,
        declared: &Declared,
    ) -> Option<Self> {
        let mut ok = true;
        let mut allow = Vec::new();
        for (i, a) in raw.allow.iter().enumerate() {
            match UrlPattern::parse(a) {
                Ok(p) => allow.push(p),
                Err(e) => {
                    ok = false;
                    v.error(
                        &path.key("allow").index(i),
                        e.to_string(),
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
                    v.error(&path.key("addresses").index(i), e.to_string(), "");
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
            match crate::net::read_pem_certs(&v.resolve(&path.key("ca").index(i), file)) {
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
        let client_cert = raw
            .client_cert
            .as_ref()
            .map(|c| ClientIdentity::validate(v, &path.key("client_cert"), c, declared));
        ok &= !matches!(client_cert, Some(None));
        ok.then(|| HttpGrant {
            policy: Policy { allow, addresses },
            max_body,
            ca,
            ca_files: raw.ca,
            key: path.to_string(),
            max_redirects: raw.max_redirects.unwrap_or(Self::DEFAULT_MAX_REDIRECTS),
            client_cert: client_cert.flatten(),
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
        lines.push(format!("max_redirects {}", self.max_redirects));
        lines.extend(self.ca_files.iter().map(|c| format!("ca {c}")));
        lines.extend(self.client_cert.as_ref().map(ClientIdentity::describe));
        lines
    }
}

/// Compares two http grants as written: an allow pattern or address block that the
/// old grant does not cover, a larger `max_body` or an extra CA widens; a client
/// certificate presented, dropped or replaced is named.
pub fn diff(old: &HttpGrantConfig, new: &HttpGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let old_nets = nets(&old.addresses);
    diff_allow(old, new, &old_nets, &mut out);
    diff_addresses(old, new, &old_nets, &mut out);
    diff_limits(old, new, &mut out);
    diff_ca(old, new, &mut out);
    out.extend(identity::diff(
        old.client_cert.as_ref(),
        new.client_cert.as_ref(),
    ));
    out
}

/// Whether `list` holds `text` as written (spaces aside).
fn same(list: &[String], text: &str) -> bool {
    list.iter().any(|x| x.trim() == text.trim())
}

fn patterns(allow: &[String]) -> Vec<UrlPattern> {
    allow
        .iter()
        .filter_map(|a| UrlPattern::parse(a).ok())
        .collect()
}

fn nets(addresses: &[String]) -> Vec<ipnet::IpNet> {
    addresses
        .iter()
        .filter_map(|a| policy::parse_net(a).ok())
        .collect()
}

/// `allow` entries: new ones (reaching a non-public address, within an old entry, or
/// matching more than the ones they replace) and dropped ones.
fn diff_allow(
    old: &HttpGrantConfig,
    new: &HttpGrantConfig,
    old_nets: &[ipnet::IpNet],
    out: &mut Vec<Change>,
) {
    let root = KeyPath::root();
    let old_p = patterns(&old.allow);
    let new_p = patterns(&new.allow);
    // Non-public destinations the old grant reaches: named in allow, or in addresses.
    let old_reaches = |dest: &str| {
        old_p.iter().any(|p| p.unlocks().as_deref() == Some(dest))
            || dest
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| old_nets.iter().any(|n| n.contains(&ip)))
    };
    for (i, text) in new.allow.iter().enumerate() {
        if same(&old.allow, text) {
            continue;
        }
        let at = root.key("allow").index(i);
        let Ok(p) = UrlPattern::parse(text) else {
            out.push(Change::new(
                at,
                ChangeKind::Changed,
                format!("allows `{text}`, which is not a pattern and cannot be compared"),
            ));
            continue;
        };
        if let Some(dest) = p.unlocks().filter(|d| !old_reaches(d)) {
            out.push(Change::new(
                at,
                ChangeKind::Added,
                format!("allows `{text}`, which reaches the non-public {dest}"),
            ));
        } else if let Some(o) = old_p.iter().find(|o| o.covers(&p)) {
            out.push(Change::new(
                at,
                ChangeKind::Narrowed,
                format!("allows `{text}`, within `{o}`"),
            ));
        } else {
            let replaced: Vec<String> = old_p
                .iter()
                .filter(|o| p.covers(o) && !same(&new.allow, &o.text))
                .map(|o| format!("`{o}`"))
                .collect();
            out.push(if replaced.is_empty() {
                Change::new(at, ChangeKind::Added, format!("allows `{text}`"))
            } else {
                Change::new(
                    at,
                    ChangeKind::Widened,
                    format!(
                        "allows `{text}`, which matches more than {}",
                        replaced.join(", ")
                    ),
                )
            });
        }
    }
    for text in &old.allow {
        let covered = UrlPattern::parse(text).is_ok_and(|p| new_p.iter().any(|n| n.covers(&p)));
        if !same(&new.allow, text) && !covered {
            out.push(Change::new(
                root.key("allow"),
                ChangeKind::Removed,
                format!("no longer allows `{text}`"),
            ));
        }
    }
}

/// `addresses` blocks: new ones (within an old block or not) and dropped ones.
fn diff_addresses(
    old: &HttpGrantConfig,
    new: &HttpGrantConfig,
    old_nets: &[ipnet::IpNet],
    out: &mut Vec<Change>,
) {
    let root = KeyPath::root();
    let new_nets = nets(&new.addresses);
    for (i, text) in new.addresses.iter().enumerate() {
        if same(&old.addresses, text) {
            continue;
        }
        let at = root.key("addresses").index(i);
        match policy::parse_net(text) {
            Err(_) => out.push(Change::new(
                at,
                ChangeKind::Changed,
                format!("addresses `{text}`, which is not an address block"),
            )),
            Ok(n) => match old_nets.iter().find(|o| o.contains(&n)) {
                Some(o) => out.push(Change::new(
                    at,
                    ChangeKind::Narrowed,
                    format!("addresses `{text}`, within `{o}`"),
                )),
                None => out.push(Change::new(
                    at,
                    ChangeKind::Added,
                    format!("lets allowed hosts resolve to the non-public `{text}`"),
                )),
            },
        }
    }
    for text in &old.addresses {
        let covered =
            policy::parse_net(text).is_ok_and(|o| new_nets.iter().any(|n| n.contains(&o)));
        if !same(&new.addresses, text) && !covered {
            out.push(Change::new(
                root.key("addresses"),
                ChangeKind::Removed,
                format!("no longer reaches `{text}`"),
            ));
        }
    }
}

/// `max_body` and `max_redirects`, larger or smaller.
fn diff_limits(old: &HttpGrantConfig, new: &HttpGrantConfig, out: &mut Vec<Change>) {
    let root = KeyPath::root();
    let size = |s: &Option<String>| match s {
        None => Some(HttpGrant::DEFAULT_MAX_BODY),
        Some(s) => crate::manifest::units::parse_size(s).ok(),
    };
    match (size(&old.max_body), size(&new.max_body)) {
        (Some(a), Some(b)) if a != b => out.push(Change::new(
            root.key("max_body"),
            if b > a {
                ChangeKind::Widened
            } else {
                ChangeKind::Narrowed
            },
            format!("max_body {} → {}", fmt_size(a), fmt_size(b)),
        )),
        (_, None) => out.push(Change::new(
            root.key("max_body"),
            ChangeKind::Changed,
            "max_body is not a size and cannot be compared",
        )),
        _ => {}
    }
    let redirects = |r: Option<u8>| r.unwrap_or(HttpGrant::DEFAULT_MAX_REDIRECTS);
    let (a, b) = (redirects(old.max_redirects), redirects(new.max_redirects));
    if a != b {
        out.push(Change::new(
            root.key("max_redirects"),
            if b > a {
                ChangeKind::Widened
            } else {
                ChangeKind::Narrowed
            },
            format!("max_redirects {a} → {b}"),
        ));
    }
}

/// `ca` files trusted now, and no longer.
fn diff_ca(old: &HttpGrantConfig, new: &HttpGrantConfig, out: &mut Vec<Change>) {
    let root = KeyPath::root();
    for (i, ca) in new.ca.iter().enumerate() {
        if !same(&old.ca, ca) {
            out.push(Change::new(
                root.key("ca").index(i),
                ChangeKind::Added,
                format!("trusts the CA certificates in `{ca}`"),
            ));
        }
    }
    for ca in &old.ca {
        if !same(&new.ca, ca) {
            out.push(Change::new(
                root.key("ca"),
                ChangeKind::Removed,
                format!("no longer trusts `{ca}`"),
            ));
        }
    }
}

impl wit::Host for CapCtx<'_, Http> {
    async fn send(
        &mut self,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::Error>> {
        crate::taped!(self, "http.send", (req), self.send_live(req))
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Http> {
    async fn send_live(
        &mut self,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::Error>> {
        let method = client::method_name(req.method).to_string();
        let target = req.url.clone();
        let Some(client) = self.access else {
            let reason = self.not_granted();
            let reason = self.deny(&method, &target, reason);
            return Ok(Err(wit::Error::Denied(reason)));
        };
        let mutating = !matches!(req.method, wit::Method::Get | wit::Method::Head);
        if mutating && self.dry_run() {
            // Check the grant all the same, so a dry run reports denials truthfully.
            if let Err(e) = client.check(&req.url) {
                self.deny(&method, &target, e.message());
                return Ok(Err(e.into_wit()));
            }
            self.record(CallRecord::dry_run(Http::NAME, &method, &target));
            return Ok(Ok(client::dry_run_response(&req.url)));
        }
        let deadline = self.core.remaining();
        if mutating {
            self.core.before_change();
        }
        let result = client.send(req, deadline).await;
        let allowed = || {
            let record = CallRecord::allowed(Http::NAME, &method, &target);
            if mutating { record } else { record.read_only() }
        };
        match &result {
            Ok(r) => self.record(allowed().with_result(format!("status {}", r.status))),
            Err(e) if e.is_denial() => {
                self.deny(&method, &target, e.message());
            }
            Err(e) => self.record(allowed().with_result(e.message())),
        }
        Ok(result.map_err(client::SendError::into_wit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::core::Resources;
    use crate::caps::testing::{self, Decl, HttpServer};

    fn request(method: wit::Method, url: &str) -> wit::Request {
        wit::Request {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            max_redirects: 0,
        }
    }

    fn prepared(manifest: &str) -> crate::caps::core::Prepared {
        let (_d, dir) = testing::dir();
        let grant = testing::grant::<Http>(manifest, &dir, &Decl::default()).unwrap();
        testing::prepared::<Http>(grant, &Resources::none())
    }

    #[tokio::test]
    async fn an_allowed_request_is_sent_and_a_denied_one_names_the_fix() {
        let server = HttpServer::start(200, "up").await;
        let manifest = format!(
            "[plugins.p.grants.http]\nallow = [\"{}\"]\n",
            server.origin()
        );
        let mut action = testing::recorded(prepared(&manifest), false, 1 << 20);
        let mut ctx = action.state.view::<Http>();
        let url = format!("{}/health", server.origin());
        let ok = wit::Host::send(&mut ctx, request(wit::Method::Get, &url))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"up"[..]));
        let other = "http://127.0.0.2:9/x";
        let Err(wit::Error::Denied(reason)) =
            wit::Host::send(&mut ctx, request(wit::Method::Get, other))
                .await
                .unwrap()
        else {
            panic!("an ungranted host is denied");
        };
        assert!(
            reason.contains("add \"http://127.0.0.2:9\" to plugins.p.grants.http.allow"),
            "{reason}"
        );
        assert_eq!(server.requests.lock().unwrap().len(), 1);
        assert_eq!(
            action.audit(),
            vec![
                ("http".into(), "allowed".into(), url.clone()),
                ("http".into(), "denied".into(), other.into()),
            ]
        );
        assert_eq!(action.calls()[0]["result"], "status 200");
    }

    /// A call log that notes, when told a change is coming, how many requests the
    /// server had received by then.
    struct Watch {
        requests: Arc<std::sync::Mutex<Vec<String>>>,
        events: std::sync::Mutex<Vec<String>>,
    }

    impl crate::caps::CallLog for Watch {
        fn record(&self, call: &CallRecord) {
            let note = format!("record {} (read only: {})", call.operation, call.read_only);
            self.events.lock().unwrap().push(note);
        }

        fn before_change(&self) {
            let received = self.requests.lock().unwrap().len();
            let note = format!("before change, {received} requests received");
            self.events.lock().unwrap().push(note);
        }
    }

    #[tokio::test]
    async fn a_mutating_request_is_announced_before_it_is_sent_and_a_read_is_not() {
        let server = HttpServer::start(200, "").await;
        let manifest = format!(
            "[plugins.p.grants.http]\nallow = [\"{}\"]\n",
            server.origin()
        );
        let mut action = testing::recorded(prepared(&manifest), false, 1 << 20);
        let watch = Arc::new(Watch {
            requests: server.requests.clone(),
            events: Default::default(),
        });
        action.state.core.sink = Some(watch.clone());
        let mut ctx = action.state.view::<Http>();
        for method in [wit::Method::Get, wit::Method::Post, wit::Method::Head] {
            let url = format!("{}/deploy", server.origin());
            let r = wit::Host::send(&mut ctx, request(method, &url)).await;
            assert_eq!(r.unwrap().unwrap().status, 200);
        }
        assert_eq!(
            *watch.events.lock().unwrap(),
            [
                "record GET (read only: true)",
                "before change, 1 requests received",
                "record POST (read only: false)",
                "record HEAD (read only: true)",
            ]
        );
    }

    #[tokio::test]
    async fn a_dry_run_sends_no_mutation_but_checks_the_grant() {
        let server = HttpServer::start(200, "").await;
        let manifest = format!(
            "[plugins.p.grants.http]\nallow = [\"{}\"]\n",
            server.origin()
        );
        let mut action = testing::recorded(prepared(&manifest), true, 1 << 20);
        let mut ctx = action.state.view::<Http>();
        let url = format!("{}/deploy", server.origin());
        let r = wit::Host::send(&mut ctx, request(wit::Method::Post, &url))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 204);
        let denied = wit::Host::send(&mut ctx, request(wit::Method::Delete, "http://10.9.9.9/x"))
            .await
            .unwrap();
        assert!(matches!(denied, Err(wit::Error::Denied(_))));
        assert!(server.requests.lock().unwrap().is_empty(), "nothing sent");
        let decisions: Vec<String> = action.audit().into_iter().map(|a| a.1).collect();
        assert_eq!(decisions, ["dry-run", "denied"]);
    }

    #[tokio::test]
    async fn without_a_grant_every_request_is_denied() {
        let mut action = testing::recorded(crate::caps::core::Prepared::default(), false, 1 << 20);
        let mut ctx = action.state.view::<Http>();
        let r = wit::Host::send(&mut ctx, request(wit::Method::Get, "https://example.com/"))
            .await
            .unwrap();
        assert!(matches!(r, Err(wit::Error::Denied(m)) if m.contains("no http grant")));
        assert_eq!(action.audit()[0].1, "denied");
    }

    #[test]
    fn grant_errors_name_the_line_and_the_fix() {
        let (_d, dir) = testing::dir();
        let errors = testing::grant::<Http>(
            "[plugins.p.grants.http]\nallow = [\"https://ok.example\", \"api.example.com\"]\nmax_body = \"lots\"\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("runcap.toml:2"), "{errors}");
        assert!(
            errors.contains("`api.example.com` has no scheme"),
            "{errors}"
        );
        assert!(errors.contains("runcap.toml:3"), "{errors}");
        let errors = testing::grant::<Http>(
            "[plugins.p.grants.http]\nallow = []\nalow = [\"https://x\"]\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("unknown field `alow`"), "{errors}");
        assert!(errors.contains("did you mean `allow`?"), "{errors}");
    }

    #[test]
    fn the_hint_is_a_grant_that_validates() {
        let (_d, dir) = testing::dir();
        let hint = Http::hint("p");
        let grant = testing::grant::<Http>(&hint, &dir, &Decl::default()).unwrap();
        assert!(grant.policy.allow.is_empty());
    }
}
