//! What an http grant allows: URL patterns (`scheme://host:port`) and the
//! non-public addresses its hosts may resolve to.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use url::Url;

/// The scheme part of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemePattern {
    Http,
    Https,
    Any,
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host name or address.
    Any,
    /// `*.example.com`: any name below `example.com` (not `example.com` itself).
    Subdomain(String),
    /// `api.example.com`: exactly this name.
    Name(String),
    /// `127.0.0.1`, `[::1]`: exactly this address.
    Ip(IpAddr),
}

/// The port part of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// No port written: the scheme's default (80 or 443).
    Default,
    Any,
    Exact(u16),
}

/// One `allow` entry of an http grant, e.g. `https://*.internal:8443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    pub scheme: SchemePattern,
    pub host: HostPattern,
    pub port: PortPattern,
    /// The text as written, for reports and denial messages.
    pub text: String,
}

impl fmt::Display for UrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why an `allow` pattern or an `addresses` entry of an http grant is not understood.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("`{0}` has no scheme; write it like \"https://api.example.com\"")]
    NoScheme(String),
    #[error("scheme `{0}` is not http, https or *")]
    Scheme(String),
    #[error("`{0}` has a path, query or user; patterns name only scheme, host and port")]
    HasPath(String),
    #[error("`[{0}` has no closing `]`")]
    Unclosed(String),
    #[error("unexpected `{0}` after `]`")]
    AfterBracket(String),
    #[error("port `{0}` is not a number from 1 to 65535 or *")]
    Port(String),
    #[error("port 0 is not a port")]
    PortZero,
    #[error("the host is empty")]
    EmptyHost,
    #[error("`{0}` is not a host name, an address, `*` or `*.domain`")]
    Host(String),
    #[error("`{0}` is not an address or CIDR block like \"10.0.0.0/8\"")]
    Net(String),
}

/// Why a request's URL or address is outside an http grant; each message says what to
/// add to the grant (`key` is its manifest key) to allow it.
#[derive(Debug, thiserror::Error)]
pub enum HttpDenied {
    #[error("{origin} is not granted; to allow it, add \"{origin}\" to {key}.allow")]
    Origin { origin: String, key: String },
    #[error(
        "{origin} is a {kind} address that only a wildcard entry matches; to allow it, add \"{origin}\" to {key}.allow (or \"{ip}\" to {key}.addresses)"
    )]
    WildcardAddress {
        origin: String,
        kind: &'static str,
        ip: IpAddr,
        key: String,
    },
    #[error(
        "{origin} is loopback, which only a wildcard entry matches; to allow it, add \"{origin}\" to {key}.allow"
    )]
    WildcardLoopback { origin: String, key: String },
    #[error(
        "{host} resolves to {ip}, a {kind} address the grant does not name; to allow it, add \"{ip}\" (or its network) to {key}.addresses"
    )]
    Address {
        host: String,
        ip: IpAddr,
        kind: &'static str,
        key: String,
    },
}

impl UrlPattern {
    /// Parses `scheme://host[:port]`; `scheme` is http, https or `*`, `host` may be
    /// `*` or start with `*.`, `port` may be `*`. Paths and queries are refused.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let t = text.trim();
        let (scheme, rest) = t
            .split_once("://")
            .ok_or_else(|| PatternError::NoScheme(t.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemePattern::Http,
            "https" => SchemePattern::Https,
            "*" => SchemePattern::Any,
            other => return Err(PatternError::Scheme(other.to_string())),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(PatternError::HasPath(t.to_string()));
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(
                p.parse()
                    .map_err(|_| PatternError::Port(p.to_string()))
                    .and_then(|n: u16| {
                        if n == 0 {
                            Err(PatternError::PortZero)
                        } else {
                            Ok(n)
                        }
                    })?,
            ),
        };
        let host = parse_host(host)?;
        Ok(UrlPattern {
            scheme,
            host,
            port,
            text: t.to_string(),
        })
    }

    /// Whether this pattern allows the scheme, host and port of `url`.
    pub fn matches(&self, url: &Url) -> bool {
        let scheme_ok = matches!(
            (self.scheme, url.scheme()),
            (SchemePattern::Any, "http" | "https")
                | (SchemePattern::Http, "http")
                | (SchemePattern::Https, "https")
        );
        if !scheme_ok {
            return false;
        }
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == port,
            PortPattern::Default => port == if url.scheme() == "https" { 443 } else { 80 },
        };
        port_ok && self.host_matches(url)
    }

    fn host_matches(&self, url: &Url) -> bool {
        match (&self.host, url.host()) {
            (HostPattern::Any, Some(_)) => true,
            (HostPattern::Name(n), Some(url::Host::Domain(d))) => n.eq_ignore_ascii_case(d),
            (HostPattern::Subdomain(suffix), Some(url::Host::Domain(d))) => {
                let d = d.to_ascii_lowercase();
                d.len() > suffix.len() + 1
                    && d.ends_with(suffix.as_str())
                    && d.as_bytes()[d.len() - suffix.len() - 1] == b'.'
            }
            (HostPattern::Ip(ip), Some(url::Host::Ipv4(a))) => *ip == IpAddr::V4(a),
            (HostPattern::Ip(ip), Some(url::Host::Ipv6(a))) => *ip == IpAddr::V6(a),
            _ => false,
        }
    }
}

impl UrlPattern {
    /// Whether every URL `other` matches is also matched by `self`: the test behind
    /// "does this grant widen that one".
    pub fn covers(&self, other: &UrlPattern) -> bool {
        let schemes = |p: &UrlPattern| match p.scheme {
            SchemePattern::Http => &["http"][..],
            SchemePattern::Https => &["https"][..],
            SchemePattern::Any => &["http", "https"][..],
        };
        let port = |p: &UrlPattern, scheme: &str| match p.port {
            PortPattern::Any => None,
            PortPattern::Exact(n) => Some(n),
            PortPattern::Default => Some(if scheme == "https" { 443 } else { 80 }),
        };
        let ports_ok = schemes(other).iter().all(|s| {
            schemes(self).contains(s)
                && match (port(self, s), port(other, s)) {
                    (None, _) => true,
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) => false,
                }
        });
        ports_ok && host_covers(&self.host, &other.host)
    }

    /// The non-public destination this pattern makes reachable by naming it: a
    /// non-public address, or `localhost`.
    pub fn unlocks(&self) -> Option<String> {
        match &self.host {
            HostPattern::Ip(ip) if non_public_kind(*ip).is_some() => Some(ip.to_string()),
            HostPattern::Name(n) if n == "localhost" => Some(n.clone()),
            _ => None,
        }
    }
}

/// Whether host pattern `a` matches every host `b` matches.
fn host_covers(a: &HostPattern, b: &HostPattern) -> bool {
    let below = |name: &str, domain: &str| {
        name.len() > domain.len() + 1
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
    };
    match (a, b) {
        (HostPattern::Any, _) => true,
        (HostPattern::Subdomain(d), HostPattern::Name(n)) => below(n, d),
        (HostPattern::Subdomain(d), HostPattern::Subdomain(e)) => d == e || below(e, d),
        (HostPattern::Name(x), HostPattern::Name(y)) => x == y,
        (HostPattern::Ip(x), HostPattern::Ip(y)) => x == y,
        _ => false,
    }
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), PatternError> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| PatternError::Unclosed(inner.to_string()))?;
        return match after {
            "" => Ok((host, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| PatternError::AfterBracket(p.to_string())),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

fn parse_host(host: &str) -> Result<HostPattern, PatternError> {
    if host.is_empty() {
        return Err(PatternError::EmptyHost);
    }
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip));
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid || name.contains('*') {
        return Err(PatternError::Host(host.to_string()));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wild {
        HostPattern::Subdomain(name)
    } else {
        HostPattern::Name(name)
    })
}

/// Parses an `addresses` entry: a CIDR block or a single address.
pub fn parse_net(text: &str) -> Result<IpNet, PatternError> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| PatternError::Net(t.to_string()))
}

/// IPv4 ranges that are not globally reachable, after IANA's IPv4 Special-Purpose
/// Address Registry (and multicast), with the word a denial uses for each.
const V4_SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

/// IPv6 ranges that are not globally reachable, after IANA's IPv6 Special-Purpose
/// Address Registry (and multicast). Ranges that embed an IPv4 address (mapped,
/// compatible, NAT64, 6to4) are judged by the address they embed, before this table.
const V6_SPECIAL: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

fn special(table: &'static [(&'static str, &'static str)], ip: IpAddr) -> Option<&'static str> {
    table.iter().find_map(|(net, kind)| {
        let net: IpNet = net
            .parse()
            .expect("the special-purpose tables are valid CIDR");
        net.contains(&ip).then_some(*kind)
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002:AABB:CCDD::/48`).
fn embedded_v4(a: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = a.segments();
    let o = a.octets();
    let v4 = |i: usize| std::net::Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
    if s[..6] == [0; 6] && !a.is_loopback() && !a.is_unspecified() {
        return Some(v4(12));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(12));
    }
    if s[0] == 0x2002 {
        return Some(v4(2));
    }
    None
}

/// Why an address is not public, if it is not.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(_) => special(V4_SPECIAL, ip),
        IpAddr::V6(a) => match embedded_v4(a) {
            Some(v4) => non_public_kind(IpAddr::V4(v4)),
            None => special(V6_SPECIAL, ip),
        },
    }
}

/// The allow-list and address policy of one plugin's http grant.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: Vec<UrlPattern>,
    /// Non-public networks the grant names explicitly.
    pub addresses: Vec<IpNet>,
}

impl Policy {
    /// Whether the URL may be requested at all: it matches an allow entry, and where
    /// it leads somewhere non-public by naming it (an address literal, `localhost`),
    /// the entry that names it matches the whole URL — an entry unlocks its own
    /// scheme, host and port, never what a wildcard entry beside it matches.
    pub fn check_url(&self, url: &Url, grant_key: &str) -> Result<(), HttpDenied> {
        let origin = crate::net::origin_of(url);
        let key = || grant_key.to_string();
        if !self.allow.iter().any(|p| p.matches(url)) {
            return Err(HttpDenied::Origin { origin, key: key() });
        }
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(a.into()),
            Some(url::Host::Ipv6(a)) => Some(a.into()),
            _ => None,
        };
        let named = |p: &&UrlPattern| {
            p.matches(url) && !matches!(p.host, HostPattern::Any | HostPattern::Subdomain(_))
        };
        if let Some(ip) = literal
            && let Some(kind) = non_public_kind(ip)
            && !self.addresses.iter().any(|n| n.contains(&ip))
            && !self.allow.iter().any(|p| named(&p))
        {
            return Err(HttpDenied::WildcardAddress {
                origin,
                kind,
                ip,
                key: key(),
            });
        }
        let localhost = url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost"));
        let loopback_listed = self.addresses.iter().any(|n| {
            n.contains(&IpAddr::from([127, 0, 0, 1]))
                || n.contains(&IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
        });
        if localhost && !loopback_listed && !self.allow.iter().any(|p| named(&p)) {
            return Err(HttpDenied::WildcardLoopback { origin, key: key() });
        }
        Ok(())
    }

    /// Whether connecting to `ip`, which host name `host` resolved to, is allowed.
    /// Public addresses are; non-public ones only if an `addresses` entry contains
    /// them, or, for loopback, if the name is `localhost` and an entry names it (the
    /// URL was checked against that entry by [`Policy::check_url`]). An entry naming an
    /// address never unlocks a name that resolves to it.
    pub fn check_address(&self, host: &str, ip: IpAddr, grant_key: &str) -> Result<(), HttpDenied> {
        let Some(kind) = non_public_kind(ip) else {
            return Ok(());
        };
        if self.addresses.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok() == Some(ip);
        let named = self.allow.iter().any(|p| match &p.host {
            HostPattern::Ip(a) => literal && *a == ip,
            HostPattern::Name(n) => {
                n == "localhost" && ip.is_loopback() && host.eq_ignore_ascii_case("localhost")
            }
            _ => false,
        });
        if named {
            return Ok(());
        }
        Err(HttpDenied::Address {
            host: host.to_string(),
            ip,
            kind,
            key: grant_key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn policy(allow: &[&str], addresses: &[&str]) -> Policy {
        Policy {
            allow: allow
                .iter()
                .map(|a| UrlPattern::parse(a).unwrap())
                .collect(),
            addresses: addresses.iter().map(|a| parse_net(a).unwrap()).collect(),
        }
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let p = UrlPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches(&url("https://api.example.com/health")));
        assert!(!p.matches(&url("https://example.com/")));
        assert!(!p.matches(&url("https://evilexample.com/")));
        assert!(!p.matches(&url("http://api.example.com/")));
        assert!(!p.matches(&url("https://api.example.com:8443/")));
        let p = UrlPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(p.matches(&url("http://127.0.0.1:9999/x")));
        assert!(!p.matches(&url("http://127.0.0.2:9999/x")));
        let p = UrlPattern::parse("*://[::1]:8080").unwrap();
        assert!(p.matches(&url("https://[::1]:8080/")));
        let p = UrlPattern::parse("https://API.Example.com:443/").unwrap();
        assert!(p.matches(&url("https://api.example.com/")));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("api.example.com", "no scheme"),
            ("ftp://x", "not http"),
            ("https://x/path", "path"),
            ("https://x:99999", "port"),
            ("https://a.*.com", "not a host"),
            ("https://", "empty"),
        ] {
            let e = UrlPattern::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn non_public_addresses_need_naming() {
        let p = policy(&["https://*.example.com"], &[]);
        assert!(
            p.check_address("a.example.com", "93.184.216.34".parse().unwrap(), "g")
                .is_ok()
        );
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            let e = p
                .check_address("a.example.com", ip.parse().unwrap(), "g")
                .unwrap_err()
                .to_string();
            assert!(e.contains("g.addresses"), "{e}");
        }
        let p = policy(&["https://*.internal"], &["10.0.0.0/8"]);
        assert!(
            p.check_address("db.internal", "10.9.9.9".parse().unwrap(), "g")
                .is_ok()
        );
        assert!(
            p.check_address("db.internal", "192.168.1.1".parse().unwrap(), "g")
                .is_err()
        );
        let p = policy(&["http://127.0.0.1:*", "http://localhost:8080"], &[]);
        assert!(
            p.check_address("127.0.0.1", "127.0.0.1".parse().unwrap(), "g")
                .is_ok()
        );
        assert!(
            p.check_address("localhost", "127.0.0.1".parse().unwrap(), "g")
                .is_ok()
        );
        assert!(
            p.check_address("evil.example", "127.0.0.2".parse().unwrap(), "g")
                .is_err()
        );
    }

    #[test]
    fn every_special_purpose_range_is_non_public() {
        // One address inside each range, one just outside where that is public.
        for (inside, kind) in [
            ("0.1.2.3", "unspecified"),
            ("10.255.0.1", "private"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("127.8.8.8", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.31.0.1", "private"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4 relay"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.251", "multicast"),
            ("250.1.1.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("2001:2::1", "IETF protocol assignment"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("5f00::1", "segment routing"),
            ("fd12::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            // IPv4 carried in IPv6 is judged by the address it carries.
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::169.254.169.254", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ] {
            let ip: IpAddr = inside.parse().unwrap();
            assert_eq!(non_public_kind(ip), Some(kind), "{inside}");
        }
        for public in [
            "93.184.216.34",
            "198.20.0.1",
            "100.128.0.1",
            "192.0.3.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
            "::ffff:93.184.216.34",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(non_public_kind(ip), None, "{public}");
        }
    }

    #[test]
    fn an_address_entry_unlocks_only_what_it_matches() {
        let both = policy(&["http://*:*", "http://127.0.0.1:8080"], &[]);
        assert!(both.check_url(&url("http://127.0.0.1:8080/"), "g").is_ok());
        // The wildcard matches another port of the address; only the naming entry unlocks.
        let e = both
            .check_url(&url("http://127.0.0.1:22/"), "g")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only a wildcard entry matches"), "{e}");
        assert!(e.contains("add \"http://127.0.0.1:22\" to g.allow"), "{e}");
        // A name that resolves to the address is not unlocked by the entry naming it.
        assert!(
            both.check_address("evil.example", "127.0.0.1".parse().unwrap(), "g")
                .is_err()
        );
        let named = policy(&["http://vm:9000", "http://127.0.0.1:8080"], &[]);
        assert!(
            named
                .check_address("vm", "127.0.0.1".parse().unwrap(), "g")
                .is_err()
        );
        // localhost is loopback by name: a wildcard does not reach it, its own entry does.
        let lh = policy(&["http://*:*", "http://localhost:8080"], &[]);
        assert!(lh.check_url(&url("http://localhost:8080/"), "g").is_ok());
        assert!(lh.check_url(&url("http://LOCALHOST:5432/"), "g").is_err());
        // Listing the network unlocks it for every entry, as written.
        let nets = policy(&["http://*:*"], &["127.0.0.0/8"]);
        assert!(nets.check_url(&url("http://127.0.0.1:22/"), "g").is_ok());
        assert!(nets.check_url(&url("http://localhost:22/"), "g").is_ok());
    }

    #[test]
    fn coverage_orders_patterns() {
        let p = |s: &str| UrlPattern::parse(s).unwrap();
        assert!(p("https://*.internal").covers(&p("https://api.internal")));
        assert!(p("https://*.internal").covers(&p("https://*.db.internal")));
        assert!(!p("https://*.internal").covers(&p("https://internal")));
        assert!(!p("https://*.internal").covers(&p("https://*.internal:8443")));
        assert!(!p("https://*.internal").covers(&p("http://api.internal")));
        assert!(!p("https://api.internal").covers(&p("https://*.internal")));
        assert!(p("*://*:*").covers(&p("http://127.0.0.1:8080")));
        assert!(p("*://api.internal").covers(&p("http://api.internal:80")));
        assert!(!p("*://api.internal").covers(&p("http://api.internal:443")));
        assert!(p("https://api.internal:*").covers(&p("https://api.internal:8443")));
        assert!(!p("https://api.internal:8443").covers(&p("https://api.internal:*")));
        assert!(!p("http://127.0.0.1:*").covers(&p("http://127.0.0.2:80")));
        assert_eq!(
            p("http://127.0.0.1:*").unlocks().as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            p("http://localhost").unlocks().as_deref(),
            Some("localhost")
        );
        assert_eq!(p("https://93.184.216.34").unlocks(), None);
    }

    #[test]
    fn denial_names_the_fix() {
        let p = policy(&["https://api.example.com"], &[]);
        let e = p
            .check_url(&url("https://other.example.com/x"), "plugins.p.grants.http")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"https://other.example.com:443\" to plugins.p.grants.http.allow"),
            "{e}"
        );
    }
}
