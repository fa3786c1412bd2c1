//! What `runcap serve` reads from the manifest: the `[serve]` table (where to listen,
//! who may call the API, how many runs at once) and each runbook's `schedule`.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:9090"
//! max_concurrent = 4
//! tls = { cert = "server.pem", key = "server.key" }
//! tokens = [{ secret = "api_token", scopes = ["read", "run:restart"] }]
//!
//! [runbooks.health]
//! schedule = { every = "30s", jitter = "2s" }
//! [runbooks.nightly]
//! schedule = { cron = "0 3 * * *", timezone = "Europe/Paris", overlap = "queue" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::manifest::{KeyPath, Validator};

/// `[serve]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `listen = "127.0.0.1:9090"`: loopback unless written otherwise.
    pub listen: Option<String>,
    /// `max_concurrent = 4`: runs under way at once, across every runbook.
    pub max_concurrent: Option<usize>,
    /// `tokens = [{ secret = "NAME", scopes = ["read"] }]`: who may call the API.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// `[serve.triggers.NAME]`: alerts that start runbooks.
    #[serde(default)]
    pub triggers: BTreeMap<String, TriggerConfig>,
    /// `tls = { cert = "server.pem", key = "server.key" }`: serve HTTPS.
    pub tls: Option<TlsConfig>,
    /// `fleet = "fleet.toml"`: this server is the controller of the fleet the file
    /// describes (relative to the manifest).
    pub fleet: Option<String>,
    /// `[serve.dispatch.NAME]`: a fleet runbook sent to a host, a group or every agent on
    /// a schedule.
    #[serde(default)]
    pub dispatch: BTreeMap<String, DispatchConfig>,
}

/// `[serve.dispatch.NAME]` as written: `runbook` (an agents' runbook), one target of
/// `host`, `group` or `all = true`, and `schedule = { every = "1m" }` or `{ cron = … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    pub runbook: String,
    pub host: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub all: bool,
    /// With `group`: one agent of it that is up, the least busy, rather than every one.
    #[serde(default)]
    pub one: bool,
    pub schedule: ScheduleConfig,
}

/// A validated scheduled fleet dispatch.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub name: String,
    pub runbook: String,
    pub target: crate::fleet::config::Target,
    pub schedule: Schedule,
}

/// `[serve] tls` as written: PEM files, relative to the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
}

/// `[serve.triggers.NAME]` as written: `POST /api/v1/triggers/NAME` with an Alertmanager
/// webhook (version 4) or a plain JSON alert starts `runbook` for each firing alert whose
/// labels match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub runbook: String,
    /// `match = { alertname = "ServiceDown" }`: labels an alert must carry, with these values.
    #[serde(default, rename = "match")]
    pub labels: BTreeMap<String, String>,
    /// `token = "SECRET"`: callers send `Authorization: Bearer VALUE`.
    pub token: Option<String>,
    /// `hmac = "SECRET"`: callers sign `TIMESTAMP.BODY` with HMAC-SHA256 and send
    /// `X-Runcap-Timestamp` and `X-Runcap-Signature: sha256=HEX`.
    pub hmac: Option<String>,
    /// `dedupe = "10m"`: an alert seen again within this window starts nothing.
    pub dedupe: Option<String>,
    /// `flap = { runs = 3, within = "30m", escalate = "page-lead" }`: the flap guard.
    pub flap: Option<FlapConfig>,
    /// `params = { service = "{{ trigger.labels.service }}" }`: the runbook's parameters,
    /// each a template over the alert or a fixed value, checked as `--var` values are.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `host = "{{ trigger.labels.instance }}"` (or a fixed name): on a fleet controller,
    /// the agent the runbook is sent to, instead of running it here.
    pub host: Option<String>,
    /// `group = "api"` (or a template): on a fleet controller, every agent of the group.
    pub group: Option<String>,
    /// `all = true`: on a fleet controller, every agent.
    #[serde(default)]
    pub all: bool,
    /// `one = true` with `group`: one agent of the group that is up, the least busy.
    #[serde(default)]
    pub one: bool,
}

/// The flap guard as written: once the runbook has run `runs` times within `within` and
/// the alert still fires, the trigger holds further runs, opens an incident, and starts
/// `escalate` (a runbook) once; resolving the incident releases it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapConfig {
    pub runs: Option<u32>,
    pub within: Option<String>,
    pub escalate: Option<String>,
}

/// The validated flap guard of a trigger.
#[derive(Debug, Clone)]
pub struct Flap {
    pub runs: u32,
    pub within: Duration,
    /// A runbook started once when the guard trips (paging someone, say).
    pub escalate: Option<String>,
}

/// How a trigger's caller proves who it is.
#[derive(Debug, Clone)]
pub enum TriggerAuth {
    Bearer(String),
    Hmac(String),
}

/// A validated trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub runbook: String,
    pub labels: BTreeMap<String, String>,
    pub auth: TriggerAuth,
    pub dedupe: Duration,
    pub flap: Flap,
    /// The runbook's parameters as written: templates over `trigger.*`, or fixed values.
    pub params: BTreeMap<String, String>,
    /// The fleet agents the runbook is sent to (an agents' runbook), or `None` to run it
    /// on this server. A host or group name may be a template over `trigger.*`.
    pub target: Option<crate::fleet::config::Target>,
}

/// One API token: a declared secret holds its value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub secret: String,
    pub scopes: Vec<String>,
}

/// `schedule = { … }` of a runbook, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `every = "30s"`
    pub every: Option<String>,
    /// `cron = "*/15 * * * *"` (five fields, or six with seconds first).
    pub cron: Option<String>,
    /// `timezone = "Europe/Paris"` for `cron` (default UTC).
    pub timezone: Option<String>,
    /// `jitter = "5s"`: each run starts up to this much later, at random.
    pub jitter: Option<String>,
    /// `overlap = "skip"` (default) or `"queue"`: when a run is due while the last one
    /// is still under way.
    pub overlap: Option<String>,
}

/// What an API token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Read runbooks, runs, incidents, faults, metrics.
    Read,
    /// Start any runbook.
    Run,
    /// Start this runbook.
    RunOne(String),
}

/// A validated token: the secret that holds it and what it may do.
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: String,
    pub scopes: Vec<Scope>,
}

/// The validated `[serve]` table.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub max_concurrent: usize,
    pub tokens: Vec<Token>,
    pub triggers: BTreeMap<String, Trigger>,
    /// HTTPS: the checked configuration made from the certificate and key.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The fleet this server controls.
    pub fleet: Option<crate::fleet::config::Fleet>,
    /// Fleet runbooks sent on schedules.
    pub dispatch: Vec<Dispatch>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_concurrent: 4,
            tokens: Vec::new(),
            triggers: BTreeMap::new(),
            tls: None,
            fleet: None,
            dispatch: Vec::new(),
        }
    }
}

/// When a scheduled runbook is due.
#[derive(Debug, Clone)]
pub enum When {
    Every(Duration),
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

/// What a run due while the last is under way does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Skip,
    Queue,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub when: When,
    pub jitter: Duration,
    pub overlap: Overlap,
    /// As written, for reports.
    pub text: String,
}

impl Schedule {
    /// How long after `now` the next run is due (before jitter).
    pub fn next_in(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        match &self.when {
            When::Every(d) => Some(*d),
            When::Cron(cron, tz) => {
                let local = now.with_timezone(tz);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                (next.with_timezone(&chrono::Utc) - now).to_std().ok()
            }
        }
    }
}

/// The shortest `every` a schedule may have.
const MIN_EVERY: Duration = Duration::from_millis(50);

/// Checks `[serve]`: the address, the limit, and that each token names a declared secret
/// and scopes that exist.
/// Reads the fleet file `[serve] fleet` names: it must parse, have a `[store]`, and
/// name only secrets this manifest declares.
fn validate_fleet(
    v: &mut Validator,
    at: &KeyPath,
    written: &str,
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
) -> Option<crate::fleet::config::Fleet> {
    let path = v.resolve(at, written);
    let fleet = match crate::fleet::config::Fleet::load(&path) {
        Ok(f) => f,
        Err(e) => {
            v.error(
                at,
                e.to_string(),
                "point `fleet` at a fleet file, relative to the manifest",
            );
            return None;
        }
    };
    if fleet.store.is_none() {
        v.error(
            at,
            format!(
                "{} has no [store]: a controller keeps the fleet's history in PostgreSQL",
                path.display()
            ),
            "add [store] with url = \"host=… user=… dbname=…\" to the fleet file",
        );
    }
    let named = [
        (
            "[nats] password_secret",
            fleet.nats.password_secret.as_ref(),
        ),
        (
            "[store] password_secret",
            fleet
                .store
                .as_ref()
                .and_then(|s| s.password_secret.as_ref()),
        ),
    ];
    let cas = [
        ("[nats] ca", fleet.nats.ca.as_ref()),
        (
            "[store] ca",
            fleet.store.as_ref().and_then(|s| s.ca.as_ref()),
        ),
    ];
    for (key, ca) in cas {
        if let Some(ca) = ca
            && let Err(e) = crate::net::read_pem_certs(ca)
        {
            v.error(
                at,
                format!("{key} of {}: {}: {e}", path.display(), ca.display()),
                "name the PEM file of the CA that signed the server's certificate, relative to the fleet file",
            );
        }
    }
    if let Some(store) = &fleet.store
        && store.ca.is_none()
        && store
            .url
            .parse::<tokio_postgres::Config>()
            .is_ok_and(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
    {
        v.error(
            at,
            format!(
                "[store] of {} asks for sslmode=require but names no CA to verify the server with",
                path.display()
            ),
            "add ca = \"pg-ca.pem\" to [store] (the CA that signed PostgreSQL's certificate)",
        );
    }
    for (key, secret) in named {
        if let Some(name) = secret
            && !secrets.contains_key(name)
        {
            v.error(
                at,
                format!(
                    "{key} of {} names secret `{name}`, which this manifest does not declare",
                    path.display()
                ),
                format!(
                    "declare it under [secrets.{name}] (env = \"VARIABLE\" or file = \"PATH\")"
                ),
            );
        }
    }
    Some(fleet)
}

/// The fleet target of a dispatch or a trigger: exactly one of `host`, `group` (with
/// `one = true` for one of its agents) and `all = true` (`what` says which of the two,
/// for the message), naming agents the fleet has unless it is a template over an alert
/// (checked when the alert comes).
fn fleet_target(
    v: &mut Validator,
    at: &KeyPath,
    what: &str,
    (host, group, all, one): (Option<String>, Option<String>, bool, bool),
    fleet: Option<&crate::fleet::config::Fleet>,
) -> Option<crate::fleet::config::Target> {
    use crate::fleet::config::Target;
    let Ok(target) = Target::from_parts(host, group, all, one) else {
        v.error(
            at,
            format!("a {what} needs exactly one target"),
            "write one of host = \"NAME\", group = \"NAME\" (and one = true for any one of its agents) or all = true",
        );
        return None;
    };
    let templated = match &target {
        Target::Host(n) | Target::Group(n) | Target::OneOf(n) => n.contains("{{"),
        Target::All => false,
    };
    if let Some(f) = fleet
        && !templated
        && f.members(&target).is_empty()
    {
        v.error(
            at,
            format!("{target} names no agent of {}", f.file.display()),
            format!(
                "agents: {}",
                f.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        return None;
    }
    Some(target)
}

/// Checks one `[serve.dispatch.NAME]`: exactly one target, naming agents the fleet has,
/// and a schedule.
fn validate_dispatch(
    v: &mut Validator,
    at: &KeyPath,
    name: &str,
    d: DispatchConfig,
    fleet: Option<&crate::fleet::config::Fleet>,
) -> Option<Dispatch> {
    let target = fleet_target(v, at, "dispatch", (d.host, d.group, d.all, d.one), fleet)?;
    let schedule = validate_schedule(v, &at.key("schedule"), d.schedule)?;
    Some(Dispatch {
        name: name.to_string(),
        runbook: d.runbook,
        target,
        schedule,
    })
}

pub fn validate_serve(
    v: &mut Validator,
    raw: Option<ServeConfig>,
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
    runbooks: &[&str],
) -> ServeSettings {
    let mut out = ServeSettings::default();
    let Some(raw) = raw else { return out };
    let root = KeyPath::root().key("serve");
    if let Some(l) = &raw.listen {
        match l.parse::<SocketAddr>() {
            Ok(a) => out.listen = a,
            Err(_) => v.error(
                &root.key("listen"),
                format!("`{l}` is not an address and port"),
                "write it like \"127.0.0.1:9090\"",
            ),
        }
    }
    if let Some(t) = &raw.tls {
        out.tls = tls(v, &root.key("tls"), t);
    }
    if let Some(f) = &raw.fleet {
        out.fleet = validate_fleet(v, &root.key("fleet"), f, secrets);
    }
    for (name, d) in raw.dispatch {
        let at = root.key("dispatch").key(&name);
        if raw.fleet.is_none() {
            v.error(
                &at,
                "a scheduled dispatch sends a runbook to a fleet, and this server controls none",
                "add `fleet = \"fleet.toml\"` to [serve], or remove the dispatch",
            );
            continue;
        }
        if let Some(d) = validate_dispatch(v, &at, &name, d, out.fleet.as_ref()) {
            out.dispatch.push(d);
        }
    }
    if let Some(n) = raw.max_concurrent {
        if n == 0 {
            v.error(
                &root.key("max_concurrent"),
                "0 runs at once would run nothing",
                "use at least 1",
            );
        } else {
            out.max_concurrent = n;
        }
    }
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let at = root.key("tokens").index(i);
        if let Some(token) = token(v, &at, t, secrets, runbooks) {
            out.tokens.push(token);
        }
    }
    for (name, t) in raw.triggers {
        let at = root.key("triggers").key(&name);
        if !v.name(&at, "trigger", &name) {
            continue;
        }
        if let Some(trigger) = trigger(v, &at, t, secrets, runbooks, out.fleet.as_ref()) {
            out.triggers.insert(name, trigger);
        }
    }
    out
}

/// `[serve.tls]`: the certificate chain and key, read now.
fn tls(v: &mut Validator, at: &KeyPath, t: &TlsConfig) -> Option<Arc<rustls::ServerConfig>> {
    let (cert, key) = (
        v.resolve(&at.key("cert"), &t.cert),
        v.resolve(&at.key("key"), &t.key),
    );
    match super::tls::server_config(&cert, &key) {
        Ok(c) => Some(c),
        Err(e) => {
            v.error(
                at,
                e.to_string(),
                "point `cert` at a PEM certificate chain and `key` at its PEM private key, relative to the manifest",
            );
            None
        }
    }
}

/// One `[[serve.tokens]]`: a declared secret and the scopes it grants.
fn token(
    v: &mut Validator,
    at: &KeyPath,
    t: TokenConfig,
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
    runbooks: &[&str],
) -> Option<Token> {
    if !secrets.contains_key(&t.secret) {
        let declared: Vec<&str> = secrets.keys().map(String::as_str).collect();
        v.error(
            &at.key("secret"),
            format!("no secret `{}` is declared", t.secret),
            format!(
                "declare it under [secrets.{}] (declared: {})",
                t.secret,
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        );
        return None;
    }
    let scopes = t
        .scopes
        .iter()
        .enumerate()
        .filter_map(|(j, s)| scope(v, &at.key("scopes").index(j), s, runbooks))
        .collect();
    Some(Token {
        secret: t.secret,
        scopes,
    })
}

/// A token's scope: "read", "run" or "run:RUNBOOK" of a declared runbook.
fn scope(v: &mut Validator, at: &KeyPath, text: &str, runbooks: &[&str]) -> Option<Scope> {
    Some(match text {
        "read" => Scope::Read,
        "run" => Scope::Run,
        other => match other.strip_prefix("run:") {
            Some(rb) if runbooks.contains(&rb) => Scope::RunOne(rb.to_string()),
            Some(rb) => {
                v.error(
                    at,
                    format!("`{other}` names runbook `{rb}`, which is not declared"),
                    format!("runbooks: {}", runbooks.join(", ")),
                );
                return None;
            }
            None => {
                v.error(
                    at,
                    format!("`{other}` is not a scope"),
                    "use \"read\", \"run\" or \"run:RUNBOOK\"",
                );
                return None;
            }
        },
    })
}

/// One `[serve.triggers.NAME]`: its runbook, how callers prove themselves, how long an
/// alert is deduplicated and when a flapping alert is held. A trigger with a fleet target
/// names an agents' runbook, which this manifest need not declare.
fn trigger(
    v: &mut Validator,
    at: &KeyPath,
    mut t: TriggerConfig,
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
    runbooks: &[&str],
    fleet: Option<&crate::fleet::config::Fleet>,
) -> Option<Trigger> {
    let target = if t.host.is_some() || t.group.is_some() || t.all || t.one {
        if fleet.is_none() {
            v.error(
                at,
                "a trigger with host, group or all sends its runbook to a fleet, and this server controls none",
                "add `fleet = \"fleet.toml\"` to [serve], or remove host, group and all to run it here",
            );
            return None;
        }
        let written = (t.host.take(), t.group.take(), t.all, t.one);
        Some(fleet_target(v, at, "trigger", written, fleet)?)
    } else {
        None
    };
    if target.is_none() && !runbooks.contains(&t.runbook.as_str()) {
        v.error(
            &at.key("runbook"),
            format!("no runbook `{}` is declared", t.runbook),
            format!("runbooks: {}", runbooks.join(", ")),
        );
        return None;
    }
    let auth = trigger_auth(v, at, &t, secrets)?;
    let dedupe = match &t.dedupe {
        None => Duration::from_secs(300),
        Some(d) => v.duration(&at.key("dedupe"), d)?,
    };
    let flap = flap(v, &at.key("flap"), t.flap, runbooks)?;
    Some(Trigger {
        runbook: t.runbook,
        labels: t.labels,
        auth,
        dedupe,
        flap,
        params: t.params,
        target,
    })
}

/// A trigger's `token` or `hmac`: exactly one, naming a declared secret.
fn trigger_auth(
    v: &mut Validator,
    at: &KeyPath,
    t: &TriggerConfig,
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
) -> Option<TriggerAuth> {
    let declared = |v: &mut Validator, key: &str, secret: &str| {
        let ok = secrets.contains_key(secret);
        if !ok {
            v.error(
                &at.key(key),
                format!("no secret `{secret}` is declared"),
                format!("declare it under [secrets.{secret}]"),
            );
        }
        ok
    };
    match (&t.token, &t.hmac) {
        (Some(s), None) if declared(v, "token", s) => Some(TriggerAuth::Bearer(s.clone())),
        (None, Some(s)) if declared(v, "hmac", s) => Some(TriggerAuth::Hmac(s.clone())),
        (Some(_), None) | (None, Some(_)) => None,
        _ => {
            v.error(
                at,
                "a trigger needs exactly one of `token` and `hmac`",
                "name the secret callers prove themselves with, like `token = \"alertmanager\"`",
            );
            None
        }
    }
}

/// A trigger's `[flap]`: how many runs within how long hold the next, and what escalates.
fn flap(
    v: &mut Validator,
    fp: &KeyPath,
    raw: Option<FlapConfig>,
    runbooks: &[&str],
) -> Option<Flap> {
    let raw_flap = raw.unwrap_or(FlapConfig {
        runs: None,
        within: None,
        escalate: None,
    });
    let runs = raw_flap.runs.unwrap_or(3);
    if runs == 0 {
        v.error(
            &fp.key("runs"),
            "0 runs would hold every run",
            "use at least 1",
        );
        return None;
    }
    let within = match &raw_flap.within {
        None => Duration::from_secs(30 * 60),
        Some(w) => v.duration(&fp.key("within"), w)?,
    };
    if let Some(e) = &raw_flap.escalate
        && !runbooks.contains(&e.as_str())
    {
        v.error(
            &fp.key("escalate"),
            format!("no runbook `{e}` is declared"),
            format!("runbooks: {}", runbooks.join(", ")),
        );
        return None;
    }
    Some(Flap {
        runs,
        within,
        escalate: raw_flap.escalate,
    })
}

/// Checks a runbook's `schedule`: one of `every` and `cron`, a time zone that exists,
/// jitter shorter than the interval.
pub fn validate_schedule(v: &mut Validator, at: &KeyPath, raw: ScheduleConfig) -> Option<Schedule> {
    let when = match (&raw.every, &raw.cron) {
        (Some(e), None) => {
            let d = v.duration(&at.key("every"), e)?;
            if d < MIN_EVERY {
                v.error(
                    &at.key("every"),
                    format!("every {e} is more often than runcap schedules"),
                    "use at least \"50ms\"",
                );
                return None;
            }
            if raw.timezone.is_some() {
                v.error(
                    &at.key("timezone"),
                    "a time zone applies to `cron` schedules",
                    "remove `timezone`, or use `cron`",
                );
            }
            When::Every(d)
        }
        (None, Some(c)) => {
            let cron = match croner::Cron::from_str(c) {
                Ok(cron) => cron,
                Err(e) => {
                    v.error(
                        &at.key("cron"),
                        format!("`{c}` is not a cron expression: {e}"),
                        "five fields: minute hour day-of-month month day-of-week, like \"*/15 * * * *\"",
                    );
                    return None;
                }
            };
            let tz = match raw.timezone.as_deref() {
                None => chrono_tz::UTC,
                Some(name) => match chrono_tz::Tz::from_str(name) {
                    Ok(tz) => tz,
                    Err(_) => {
                        v.error(
                            &at.key("timezone"),
                            format!("`{name}` is not a time zone"),
                            "use an IANA name like \"Europe/Paris\" or \"UTC\"",
                        );
                        return None;
                    }
                },
            };
            When::Cron(Box::new(cron), tz)
        }
        _ => {
            v.error(
                at,
                "a schedule needs exactly one of `every` and `cron`",
                "write `schedule = { every = \"30s\" }` or `schedule = { cron = \"*/15 * * * *\" }`",
            );
            return None;
        }
    };
    let jitter = match &raw.jitter {
        None => Duration::ZERO,
        Some(j) => v.duration(&at.key("jitter"), j)?,
    };
    if let When::Every(d) = when
        && jitter >= d
    {
        v.error(
            &at.key("jitter"),
            "the jitter is as long as the interval",
            "make `jitter` shorter than `every`",
        );
        return None;
    }
    let overlap = match raw.overlap.as_deref() {
        None | Some("skip") => Overlap::Skip,
        Some("queue") => Overlap::Queue,
        Some(other) => {
            v.error(
                &at.key("overlap"),
                format!("`{other}` is not an overlap policy"),
                "use \"skip\" (the default) or \"queue\"",
            );
            return None;
        }
    };
    let text = match (&raw.every, &raw.cron) {
        (Some(e), _) => format!("every {e}"),
        (_, Some(c)) => format!("cron {c} ({})", raw.timezone.as_deref().unwrap_or("UTC")),
        _ => String::new(),
    };
    Some(Schedule {
        when,
        jitter,
        overlap,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_follow_their_time_zone() {
        let s = Schedule {
            when: When::Cron(
                Box::new(croner::Cron::from_str("0 3 * * *").unwrap()),
                chrono_tz::Europe::Paris,
            ),
            jitter: Duration::ZERO,
            overlap: Overlap::Skip,
            text: String::new(),
        };
        // 2026-07-01 00:30 UTC is 02:30 in Paris (summer time): 03:00 Paris is 30 min away.
        let now = chrono::DateTime::parse_from_rfc3339("2026-07-01T00:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(s.next_in(now), Some(Duration::from_secs(30 * 60)));
        // In winter Paris is UTC+1: 03:00 Paris is 02:00 UTC.
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-15T00:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(s.next_in(now), Some(Duration::from_secs(90 * 60)));
    }
}
