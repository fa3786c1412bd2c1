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

impl UrlPattern {
    /// Parses `scheme://host[:port]`; `scheme` is http, https or `*`, `host` may be
    /// `*` or start with `*.`, `port` may be `*`. Paths and queries are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (scheme, rest) = t.split_once("://").ok_or_else(|| {
            format!("`{t}` has no scheme; write it like \"https://api.example.com\"")
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemePattern::Http,
            "https" => SchemePattern::Https,
            "*" => SchemePattern::Any,
            other => return Err(format!("scheme `{other}` is not http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{t}` has a path, query or user; patterns name only scheme, host and port"
            ));
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(
                p.parse()
                    .map_err(|_| format!("port `{p}` is not a number from 1 to 65535 or *"))
                    .and_then(|n: u16| {
                        if n == 0 {
                            Err("port 0 is not a port".to_string())
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

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("`[{inner}` has no closing `]`"))?;
        return match after {
            "" => Ok((host, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| format!("unexpected `{p}` after `]`")),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("the host is empty".into());
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
        return Err(format!(
            "`{host}` is not a host name, an address, `*` or `*.domain`"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wild {
        HostPattern::Subdomain(name)
    } else {
        HostPattern::Name(name)
    })
}

/// Parses an `addresses` entry: a CIDR block or a single address.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{t}` is not an address or CIDR block like \"10.0.0.0/8\""))
}

/// Why an address is not public, if it is not.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_private() {
                Some("private")
            } else if a.is_link_local() {
                Some("link-local")
            } else if a.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (CGNAT)")
            } else if a.is_broadcast() || a.is_multicast() || o[0] >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return non_public_kind(IpAddr::V4(v4));
            }
            let s = a.segments();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if a.is_multicast() {
                Some("reserved")
            } else {
                None
            }
        }
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
    /// Whether the URL's scheme, host and port are allowed; the error names the fix.
    pub fn check_url(&self, url: &Url, grant_key: &str) -> Result<(), String> {
        if self.allow.iter().any(|p| p.matches(url)) {
            return Ok(());
        }
        let origin = crate::net::origin_of(url);
        Err(format!(
            "{origin} is not granted; to allow it, add \"{origin}\" to {grant_key}.allow"
        ))
    }

    /// Whether connecting to `ip` for host name `host` is allowed. Public addresses
    /// are; non-public ones only if an `addresses` entry contains them or the allow
    /// list names that very address (or `localhost`, for loopback).
    pub fn check_address(&self, host: &str, ip: IpAddr, grant_key: &str) -> Result<(), String> {
        let Some(kind) = non_public_kind(ip) else {
            return Ok(());
        };
        if self.addresses.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        let named = self.allow.iter().any(|p| match &p.host {
            HostPattern::Ip(a) => *a == ip,
            HostPattern::Name(n) => {
                n == "localhost" && ip.is_loopback() && host.eq_ignore_ascii_case("localhost")
            }
            _ => false,
        });
        if named {
            return Ok(());
        }
        Err(format!(
            "{host} resolves to {ip}, a {kind} address the grant does not name; to allow it, add \"{ip}\" (or its network) to {grant_key}.addresses"
        ))
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
            let e = UrlPattern::parse(bad).unwrap_err();
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
                .unwrap_err();
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
            .unwrap_err();
        assert!(
            e.contains("\"https://other.example.com:443\" to plugins.p.grants.http.allow"),
            "{e}"
        );
    }
}
