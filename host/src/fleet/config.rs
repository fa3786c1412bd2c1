//! The fleet file: which agents make up a fleet, their groups and pinned audit keys,
//! where NATS and the controller's PostgreSQL are, and the fleet's timings. The same
//! file is given to the controller (`[serve] fleet = "fleet.toml"`) and to every agent
//! (`runcap agent --fleet fleet.toml`).
//!
//! ```toml
//! [nats]
//! url = "nats://10.0.0.5:4222"
//! password_secret = "nats-password"   # read from each process's own manifest
//! ca = "nats-ca.pem"                  # TLS, verifying the server with this CA
//!
//! [store]                             # the controller's PostgreSQL
//! url = "host=10.0.0.6 user=runcap dbname=runcap"
//! password_secret = "pg-password"
//! ca = "pg-ca.pem"                    # TLS (required), verifying the server with this CA
//!
//! [timing]
//! heartbeat = "5s"
//! lost_after = "60s"
//! checkpoint_every = "30s"
//!
//! [agents.web-1]
//! groups = ["api"]
//! audit_key = "ed25519:…"            # printed by the agent at its first start
//! nats = "nats://10.1.0.5:4222"       # this agent's own way to NATS, if not [nats] url
//! slots = 2                           # jobs of each group's queue it runs at once (1)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::signing::PublicKey;

/// Why a fleet file cannot be used.
#[derive(Debug, Error)]
pub enum FleetConfigError {
    #[error("cannot read the fleet file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}\n  = help: {help}")]
    Invalid {
        path: String,
        message: String,
        help: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFileRaw {
    nats: NatsRaw,
    store: Option<StoreRaw>,
    #[serde(default)]
    timing: TimingRaw,
    #[serde(default)]
    agents: BTreeMap<String, AgentRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsRaw {
    url: String,
    password_secret: Option<String>,
    ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreRaw {
    url: String,
    password_secret: Option<String>,
    ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingRaw {
    heartbeat: Option<String>,
    lost_after: Option<String>,
    checkpoint_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRaw {
    #[serde(default)]
    groups: Vec<String>,
    audit_key: Option<String>,
    nats: Option<String>,
    slots: Option<u32>,
}

/// Where NATS is and how to reach it.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    /// The secret (in the reading process's own manifest) that holds its NATS password;
    /// its NATS user is its agent name, or `controller`.
    pub password_secret: Option<String>,
    /// TLS: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
}

/// The controller's PostgreSQL.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// A libpq connection string (`host=… user=… dbname=…`) or URL, without the password.
    pub url: String,
    pub password_secret: Option<String>,
    /// TLS: the CA that signed the server's certificate (TLS is then required).
    pub ca: Option<PathBuf>,
}

/// How often agents speak up and how long the controller waits for them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Presence is refreshed this often.
    pub heartbeat: Duration,
    /// An agent silent this long is down, and its runs under way are lost.
    pub lost_after: Duration,
    /// An agent signs its audit chain's head this often (and at every run's end).
    pub checkpoint_every: Duration,
}

/// One agent as the fleet file declares it.
#[derive(Debug, Clone)]
pub struct AgentEntry {
    pub groups: Vec<String>,
    /// The key its audit checkpoints must be signed with.
    pub audit_key: Option<PublicKey>,
    /// Where this agent reaches NATS, when not at `[nats] url` (another network's
    /// address, a relay).
    pub nats: Option<String>,
    /// How many jobs of each of its groups' queues it runs at once (1 unless the fleet
    /// file says): an agent takes the next job of a queue only with a slot free, so a
    /// group's jobs spread over its idle agents.
    pub slots: u32,
}

/// A checked fleet file.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub file: PathBuf,
    pub nats: NatsSettings,
    pub store: Option<StoreSettings>,
    pub timing: Timing,
    pub agents: BTreeMap<String, AgentEntry>,
}

/// Whether `name` can be one token of a NATS subject (and a consumer name): letters,
/// digits, `-` and `_`.
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Fleet {
    /// Reads and checks a fleet file.
    pub fn load(path: &Path) -> Result<Fleet, FleetConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FleetConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks a fleet file's text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Fleet, FleetConfigError> {
        let shown = path.display().to_string();
        let invalid = |message: String, help: &str| FleetConfigError::Invalid {
            path: shown.clone(),
            message,
            help: help.to_string(),
        };
        let raw: FleetFileRaw = toml::from_str(text).map_err(|e| {
            invalid(
                e.to_string().trim_end().to_string(),
                "see the fleet file's reference in docs/fleet.md",
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let duration = |key: &str, value: &Option<String>, default: u64| match value {
            None => Ok(Duration::from_secs(default)),
            Some(t) => match humantime::parse_duration(t.trim()) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err(invalid(
                    format!("[timing] {key} = \"{t}\" is not a duration"),
                    &format!("write it like {key} = \"{default}s\""),
                )),
            },
        };
        let timing = Timing {
            heartbeat: duration("heartbeat", &raw.timing.heartbeat, 5)?,
            lost_after: duration("lost_after", &raw.timing.lost_after, 60)?,
            checkpoint_every: duration("checkpoint_every", &raw.timing.checkpoint_every, 30)?,
        };
        if timing.lost_after <= timing.heartbeat * 2 {
            return Err(invalid(
                "[timing] lost_after must be more than twice the heartbeat".into(),
                "raise lost_after, or lower heartbeat, so one late heartbeat does not lose an agent",
            ));
        }
        let mut agents = BTreeMap::new();
        for (name, a) in raw.agents {
            if !is_token(&name) || name == "controller" {
                return Err(invalid(
                    format!("[agents.{name}]: `{name}` cannot name an agent"),
                    "use letters, digits, - and _ (and not `controller`, the controller's own NATS user)",
                ));
            }
            let mut seen = BTreeSet::new();
            for g in &a.groups {
                if !is_token(g) || !seen.insert(g) {
                    return Err(invalid(
                        format!(
                            "[agents.{name}] groups: `{g}` is not a group name, or is repeated"
                        ),
                        "use letters, digits, - and _, each group once",
                    ));
                }
            }
            let audit_key = match &a.audit_key {
                None => None,
                Some(k) => Some(k.parse::<PublicKey>().map_err(|e| {
                    invalid(
                        format!("[agents.{name}] audit_key: {e}"),
                        "paste the key the agent printed at its first start (`runcap agent` says it)",
                    )
                })?),
            };
            let slots = a.slots.unwrap_or(1);
            if slots == 0 {
                return Err(invalid(
                    format!("[agents.{name}] slots = 0: the agent would never take a group's job"),
                    "write slots = 1 or more (1 when omitted)",
                ));
            }
            agents.insert(
                name,
                AgentEntry {
                    groups: a.groups,
                    audit_key,
                    nats: a.nats,
                    slots,
                },
            );
        }
        Ok(Fleet {
            file: path.to_path_buf(),
            nats: NatsSettings {
                url: raw.nats.url,
                password_secret: raw.nats.password_secret,
                ca: raw.nats.ca.map(|c| dir.join(c)),
            },
            store: raw.store.map(|s| StoreSettings {
                url: s.url,
                password_secret: s.password_secret,
                ca: s.ca.map(|c| dir.join(c)),
            }),
            timing,
            agents,
        })
    }

    /// Every group some agent is in: each has a job queue.
    pub fn groups(&self) -> BTreeSet<&str> {
        self.agents
            .values()
            .flat_map(|a| a.groups.iter().map(String::as_str))
            .collect()
    }

    /// The agents a target names: one host, a group's members, or every agent.
    pub fn members(&self, target: &Target) -> Vec<String> {
        match target {
            Target::Host(h) if self.agents.contains_key(h) => vec![h.clone()],
            Target::Host(_) => Vec::new(),
            Target::Group(g) | Target::OneOf(g) => self
                .agents
                .iter()
                .filter(|(_, a)| a.groups.iter().any(|x| x == g))
                .map(|(n, _)| n.clone())
                .collect(),
            Target::All => self.agents.keys().cloned().collect(),
        }
    }
}

/// Which agents a fleet run goes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Host(String),
    Group(String),
    /// One agent of the group: the job goes to the group's queue and the first agent
    /// of the group with a free slot takes it. A run wanted once per group.
    OneOf(String),
    All,
}

/// A target written with more or less than one of `host`, `group` and `all`, or with
/// `one` but no group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("name exactly one target: host, group (with one = true for any one of its agents) or all")]
pub struct TargetSpelling;

impl Target {
    /// The target written as the API, the CLI and the manifest write it: `host`, `group`
    /// (with `one` for one agent of it) or `all`.
    pub fn from_parts(
        host: Option<String>,
        group: Option<String>,
        all: bool,
        one: bool,
    ) -> Result<Target, TargetSpelling> {
        match (host, group, all, one) {
            (Some(h), None, false, false) => Ok(Target::Host(h)),
            (None, Some(g), false, false) => Ok(Target::Group(g)),
            (None, Some(g), false, true) => Ok(Target::OneOf(g)),
            (None, None, true, false) => Ok(Target::All),
            _ => Err(TargetSpelling),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host(h) => write!(f, "host {h}"),
            Target::Group(g) => write!(f, "group {g}"),
            Target::OneOf(g) => write!(f, "one agent of group {g}"),
            Target::All => f.write_str("every agent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fleet, FleetConfigError> {
        Fleet::parse(Path::new("/etc/runcap/fleet.toml"), text)
    }

    #[test]
    fn a_fleet_file_names_its_agents_groups_and_timings() {
        let f = parse(
            r#"
            [nats]
            url = "nats://127.0.0.1:4222"
            ca = "ca.pem"
            [timing]
            heartbeat = "1s"
            [agents.web-1]
            groups = ["api", "edge"]
            [agents.db-1]
            groups = ["db"]
            slots = 3
            "#,
        )
        .unwrap();
        assert_eq!(f.timing.heartbeat, Duration::from_secs(1));
        assert_eq!(f.timing.lost_after, Duration::from_secs(60));
        assert_eq!(f.nats.ca.as_deref(), Some(Path::new("/etc/runcap/ca.pem")));
        assert_eq!(f.members(&Target::Group("api".into())), ["web-1"]);
        assert_eq!(f.members(&Target::All), ["db-1", "web-1"]);
        assert!(f.members(&Target::Host("nope".into())).is_empty());
        assert_eq!(f.agents["web-1"].slots, 1);
        assert_eq!(f.agents["db-1"].slots, 3);
        assert_eq!(
            f.groups().into_iter().collect::<Vec<_>>(),
            ["api", "db", "edge"]
        );
    }

    #[test]
    fn mistakes_name_the_file_and_the_fix() {
        let e = parse("[nats]\nurl = \"nats://x\"\nurl_typo = 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/etc/runcap/fleet.toml"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        let e = parse("[nats]\nurl = \"x\"\n[agents.\"a b\"]\n").unwrap_err();
        assert!(e.to_string().contains("letters, digits"), "{e}");
        let e = parse("[nats]\nurl = \"x\"\n[agents.a]\naudit_key = \"nope\"\n").unwrap_err();
        assert!(e.to_string().contains("ed25519:BASE64"), "{e}");
        let e = parse("[nats]\nurl = \"x\"\n[timing]\nheartbeat = \"10s\"\nlost_after = \"15s\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("twice the heartbeat"), "{e}");
        let e = parse("[nats]\nurl = \"x\"\n[timing]\nheartbeat = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("heartbeat = \"5s\""), "{e}");
        let e = parse("[nats]\nurl = \"x\"\n[agents.a]\nslots = 0\n").unwrap_err();
        assert!(e.to_string().contains("slots = 1 or more"), "{e}");
    }
}
