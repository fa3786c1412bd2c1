//! `runcap agent` (one host of a fleet) and `runcap fleet …` (operating a fleet through
//! its controller's API). The fleet client reads the controller's address from
//! `--controller` (or `RUNCAP_CONTROLLER`) and its token from `RUNCAP_TOKEN` only, so a
//! token never shows in a process list.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cli::{EnvArgs, StateArgs};
use crate::fleet::agent::{self, AgentSetup};
use crate::fleet::config::{Fleet, Target};
use crate::fleet::protocol::{Event, LockState, RunbookInfo};
use crate::lockfile::{self, Lockfile};
use crate::store::RunRow;

/// Where the controller is.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The controller's address (its `[serve] listen`); the token, if its API needs
    /// one, is read from RUNCAP_TOKEN.
    #[arg(
        long,
        env = "RUNCAP_CONTROLLER",
        default_value = "http://127.0.0.1:9090"
    )]
    pub controller: String,
}

/// `runcap agent`: serves the fleet until SIGTERM or Ctrl-C.
pub async fn agent(
    args: &EnvArgs,
    state: &StateArgs,
    fleet_file: &Path,
    name: Option<String>,
    grace: Duration,
) -> u8 {
    let engine = super::EngineBuild::start(super::Workload::Server);
    let store = super::StoreOpen::start(args, state);
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let fleet = match Fleet::load(fleet_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let name = name
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_default();
    let Some(entry) = fleet.agents.get(&name) else {
        eprintln!(
            "error: agent `{name}` is not in [agents] of {}\n  = help: add [agents.{name}] to the fleet file, or pass --name with one of: {}",
            fleet.file.display(),
            fleet.agents.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return 2;
    };
    let groups = entry.groups.clone();
    let pinned = entry.audit_key.clone();
    let (store, _, runtime, resources) =
        match super::for_runs(&env, args, state, engine, store).await {
            Ok(set) => set,
            Err(code) => return code,
        };
    let password = match &fleet.nats.password_secret {
        None => None,
        Some(s) => match resources.secrets.value(s) {
            Ok(v) => Some(v.trim().to_string()),
            Err(e) => {
                eprintln!("error: the NATS password: {e}");
                return 2;
            }
        },
    };
    let state_dir = super::state_dir(args, state);
    let (audit_key, made) = match agent::audit_key(&state_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let public = crate::signing::public_of(&audit_key)
        .map(|k| k.to_string())
        .unwrap_or_default();
    if made || pinned.as_ref().map(|k| k.to_string()) != Some(public.clone()) {
        eprintln!(
            "agent {name}: audit key {public}\n  = help: pin it in {} so the controller verifies this agent's checkpoints:\n[agents.{name}]\naudit_key = \"{public}\"",
            fleet.file.display()
        );
    }
    let report = super::caps::report(&env, &runtime, &resources);
    let hello = Event::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        environment: env.name.clone(),
        groups,
        audit_key: public,
        caps: serde_json::to_value(&report).unwrap_or_default(),
        lock: lock_state(&env, &report),
        runbooks: env
            .runbooks
            .values()
            .map(|rb| RunbookInfo {
                name: rb.name.clone(),
                idempotent: rb.idempotent,
            })
            .collect(),
    };
    let (reload_tx, _reload_rx) = tokio::sync::mpsc::channel(1);
    let server =
        match crate::serve::build(env, store, runtime, resources, state_dir, reload_tx).await {
            Ok(s) => s,
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                return 2;
            }
        };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "agent {name} of {} ({} runbooks), NATS {}",
            fleet.file.display(),
            server.env.runbooks.len(),
            fleet.nats.url
        );
        let _ = out.flush();
    }
    let setup = AgentSetup {
        name,
        fleet,
        password,
        audit_key,
        hello,
    };
    match agent::run(server, setup, grace, super::run::wait_for_signal()).await {
        Ok(()) => {
            eprintln!("stopped: nothing is running");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// The manifest as it is now, the approved lockfile's digest, and what differs from it.
fn lock_state(env: &crate::manifest::Environment, report: &[super::caps::PluginCaps]) -> LockState {
    let path = Lockfile::beside(&env.file);
    let lock_dir = crate::manifest::compose::dir_of(&path);
    let current = lockfile::snapshot(env, &super::caps::import_lists(report), &lock_dir);
    let Ok(bytes) = std::fs::read(&path) else {
        return LockState {
            current: Some(Box::new(current)),
            ..LockState::default()
        };
    };
    let digest = Some(hex::encode(Sha256::digest(&bytes)));
    let drift = match Lockfile::read_env(&path, &env.name) {
        Ok(locked) => {
            super::caps::change_lines(&super::caps::locate(env, lockfile::diff(&locked, &current)))
        }
        Err(e) => vec![e.to_string()],
    };
    LockState {
        digest,
        drift,
        current: Some(Box::new(current)),
    }
}

/// `runcap fleet nats-config`: the nats-server `authorization` block for the fleet.
pub fn nats_config(fleet_file: &Path) -> u8 {
    match Fleet::load(fleet_file) {
        Ok(f) => {
            print!("{}", crate::fleet::protocol::nats_authorization(&f));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// Why a call to the controller failed.
#[derive(Debug, Error)]
enum ClientError {
    #[error("cannot reach the controller at {0}: {1}")]
    Unreachable(String, String),
    #[error("the controller answered {0}: {1}")]
    Refused(u16, String),
}

/// A client of the controller's API.
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &ControllerArgs) -> Result<Client, u8> {
        let tls = crate::net::tls_config(&[], None).map_err(|e| {
            eprintln!("error: {e}");
            2u8
        })?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| {
                eprintln!("error: {e}");
                2u8
            })?;
        Ok(Client {
            base: args.controller.trim_end_matches('/').to_string(),
            token: std::env::var("RUNCAP_TOKEN").ok().filter(|t| !t.is_empty()),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(self.base.clone(), with_sources(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let why = value
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given")
                .to_string();
            return Err(ClientError::Refused(status.as_u16(), why));
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// An error with its causes, `a: b: c`.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text += &format!(": {s}");
        next = s.source();
    }
    text
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

macro_rules! client_or_exit {
    ($args:expr) => {
        match Client::new($args) {
            Ok(c) => c,
            Err(code) => return code,
        }
    };
}

macro_rules! or_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    };
}

/// `runcap fleet status`.
pub async fn status(args: &ControllerArgs, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let agents = or_exit!(client.get("/api/v1/fleet/agents").await);
    if json {
        print_json(&agents);
        return 0;
    }
    let list = agents.as_array().cloned().unwrap_or_default();
    println!(
        "{:<16} {:<5} {:>10} {:<9} {:>7} {:<14} groups",
        "agent", "up", "heartbeat", "version", "running", "lock"
    );
    let mut down = 0;
    for a in &list {
        let up = a["up"].as_bool().unwrap_or(false);
        down += usize::from(!up);
        let beat = a["last_heartbeat_ms_ago"]
            .as_u64()
            .map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_else(|| "never".into());
        let lock = match (a["lock_digest"].as_str(), a["drift"].as_array()) {
            (Some(d), Some(drift)) if !drift.is_empty() => {
                format!("{} DRIFT", &d[..d.len().min(8)])
            }
            (Some(d), _) => d[..d.len().min(12)].to_string(),
            (None, _) => "none".into(),
        };
        println!(
            "{:<16} {:<5} {:>10} {:<9} {:>7} {:<14} {}",
            a["host"].as_str().unwrap_or("?"),
            if up { "yes" } else { "NO" },
            beat,
            a["version"].as_str().unwrap_or("-"),
            a["running"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or("-".into()),
            lock,
            a["groups"]
                .as_array()
                .map(|g| g
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        );
        for d in a["drift"].as_array().into_iter().flatten() {
            println!("    drift: {}", d.as_str().unwrap_or_default());
        }
    }
    u8::from(down > 0)
}

/// What `runcap fleet run` is asked.
pub struct FleetRun<'a> {
    pub runbook: &'a str,
    pub target: Target,
    pub dry_run: bool,
    pub vars: &'a [String],
    pub json: bool,
    pub timeout: Duration,
    /// Wait for every result (or return once the jobs are sent).
    pub wait: bool,
}

/// `runcap fleet run`: sends the runbook to every host the target names, waits for each
/// result, prints one line per host; exits 0 only if every run succeeded.
pub async fn run(args: &ControllerArgs, req: FleetRun<'_>) -> u8 {
    let client = client_or_exit!(args);
    let mut params = serde_json::Map::new();
    for v in req.vars {
        let Some((k, val)) = v.split_once('=') else {
            eprintln!("error: `--var {v}` is not NAME=VALUE");
            return 2;
        };
        params.insert(k.to_string(), Value::String(val.to_string()));
    }
    let mut body = json!({"runbook": req.runbook, "dry_run": req.dry_run, "params": params});
    match &req.target {
        Target::Host(h) => body["host"] = json!(h),
        Target::Group(g) => body["group"] = json!(g),
        Target::OneOf(g) => {
            body["group"] = json!(g);
            body["one"] = json!(true);
        }
        Target::All => body["all"] = json!(true),
    }
    let sent = or_exit!(
        client
            .call(reqwest::Method::POST, "/api/v1/fleet/runs", Some(body))
            .await
    );
    // The host each job was sent to; none for a job in a group's queue, which the
    // first agent of the group with a free slot takes.
    let runs: Vec<(Option<String>, String)> = sent["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["host"].as_str().map(str::to_string),
                r["run_id"].as_str()?.to_string(),
            ))
        })
        .collect();
    if !req.json {
        let queued = runs.iter().all(|(h, _)| h.is_none());
        if queued {
            println!("runbook {} sent to {} (queued)", req.runbook, req.target);
        } else {
            println!(
                "runbook {} sent to {} ({} host{})",
                req.runbook,
                req.target,
                runs.len(),
                if runs.len() == 1 { "" } else { "s" }
            );
        }
    }
    if !req.wait {
        if req.json {
            print_json(&sent);
        } else {
            for (host, run_id) in &runs {
                println!("  {:<16} {run_id}", host.as_deref().unwrap_or("(queued)"));
            }
        }
        return 0;
    }
    let deadline = Instant::now() + req.timeout;
    let mut results = Vec::new();
    let mut code = 0u8;
    for (sent_to, run_id) in runs {
        let (doc, outcome) = wait_for(&client, &run_id, deadline).await;
        code = code.max(outcome.exit_code());
        let ran_on = doc["host"].as_str();
        let host = sent_to.as_deref().or(ran_on).unwrap_or("(queued)");
        if !req.json {
            let run = &doc["run"];
            let summary = run["summary"]
                .as_str()
                .or_else(|| doc["job"]["reason"].as_str())
                .unwrap_or_default();
            let ran_again = doc["run"]["id"].as_str().is_some_and(|id| id != run_id);
            let moved = match ran_on {
                Some(there) if ran_again => format!(" (lost on {host}; ran again on {there})"),
                _ => String::new(),
            };
            println!(
                "  {:<16} {:<11} {}  {}{}",
                host,
                outcome.word(),
                doc["run"]["id"].as_str().unwrap_or(&run_id),
                summary,
                moved
            );
        }
        results.push(
            json!({"host": host, "run_id": run_id, "outcome": outcome.word(), "detail": doc}),
        );
    }
    if req.json {
        print_json(
            &json!({"runbook": req.runbook, "target": req.target.to_string(), "runs": results}),
        );
    }
    code
}

/// How one host's run of a fleet run ended, as far as the client waited.
enum Outcome {
    Run(crate::store::records::RunState),
    Refused,
    Lost,
    TimedOut,
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Run(s) => s.as_str(),
            Outcome::Refused => "refused",
            Outcome::Lost => "lost",
            Outcome::TimedOut => "timed-out",
        }
    }

    fn exit_code(&self) -> u8 {
        use crate::store::records::RunState;
        match self {
            Outcome::Run(RunState::Ok | RunState::Warn) => 0,
            Outcome::Run(RunState::Cancelled) => 130,
            _ => 1,
        }
    }
}

/// How long `fleet run` keeps waiting for a run marked lost to report after all.
const LOST_GRACE: Duration = Duration::from_secs(60);

/// Polls the controller until the run (or the run that replaced it after its host was
/// lost) has ended, or the deadline passes.
async fn wait_for(client: &Client, run_id: &str, deadline: Instant) -> (Value, Outcome) {
    let mut id = run_id.to_string();
    let mut last = Value::Null;
    // A host marked lost may only have been out of touch (a partition, NATS
    // restarting): its result replaces `lost` when it reports, so wait a while for it.
    let mut lost_since: Option<Instant> = None;
    loop {
        if let Ok(doc) = client.get(&format!("/api/v1/fleet/runs/{id}")).await {
            let state = doc["job"]["state"].as_str().unwrap_or_default().to_string();
            let run_state = doc["run"]["status"]
                .as_str()
                .and_then(crate::store::records::RunState::parse);
            match (state.as_str(), run_state) {
                ("finished", Some(s)) => return (doc, Outcome::Run(s)),
                ("refused", _) => return (doc, Outcome::Refused),
                ("lost", _) => {
                    let retry = doc["retries"]
                        .as_array()
                        .and_then(|r| r.last())
                        .and_then(|r| r["run_id"].as_str())
                        .map(str::to_string);
                    match retry {
                        Some(next) => id = next,
                        None if doc["job"]["idempotent"].as_bool() == Some(true)
                            && Instant::now() < deadline => {}
                        None if lost_since.get_or_insert_with(Instant::now).elapsed()
                            < LOST_GRACE
                            && Instant::now() < deadline => {}
                        None => return (doc, Outcome::Lost),
                    }
                }
                _ => {}
            }
            last = doc;
        }
        if Instant::now() >= deadline {
            return (last, Outcome::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `runcap fleet show`: one fleet run as the controller knows it.
pub async fn show(args: &ControllerArgs, run_id: &str, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let doc = or_exit!(
        client
            .get(&format!("/api/v1/fleet/runs/{}", encode(run_id)))
            .await
    );
    if json {
        print_json(&doc);
        return 0;
    }
    let job = &doc["job"];
    let run = &doc["run"];
    println!(
        "run {} of {} on {}: job {}{}",
        run["id"]
            .as_str()
            .or(job["run_id"].as_str())
            .unwrap_or(run_id),
        run["runbook"]
            .as_str()
            .or(job["runbook"].as_str())
            .unwrap_or("?"),
        doc["host"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("unknown"),
        match job["reason"].as_str() {
            Some(r) if !r.is_empty() => format!(" ({r})"),
            _ => String::new(),
        }
    );
    if let Some(status) = run["status"].as_str() {
        println!(
            "  status {status}: {}",
            run["summary"].as_str().unwrap_or_default()
        );
    }
    for s in run["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<14} {:<8} {}",
            s["id"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["summary"].as_str().unwrap_or_default()
        );
        for c in s["calls"].as_array().into_iter().flatten() {
            println!(
                "      {} {} {} → {}",
                c["capability"].as_str().unwrap_or("?"),
                c["operation"].as_str().unwrap_or("?"),
                c["target"].as_str().unwrap_or("?"),
                c["decision"].as_str().unwrap_or("?")
            );
        }
    }
    for r in doc["retries"].as_array().into_iter().flatten() {
        println!(
            "  run again as {} on {} (job {})",
            r["run_id"].as_str().unwrap_or("?"),
            r["host"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?")
        );
    }
    0
}

/// `runcap fleet audit`: exits 1 if any host's chain is in doubt.
pub async fn audit(args: &ControllerArgs, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let hosts = or_exit!(client.get("/api/v1/fleet/audit").await);
    let list = hosts.as_array().cloned().unwrap_or_default();
    let bad = list.iter().filter(|h| h["ok"] != json!(true)).count();
    if json {
        print_json(&hosts);
    } else {
        for h in &list {
            let host = h["host"].as_str().unwrap_or("?");
            if h["ok"] == json!(true) {
                println!(
                    "✔ {host}: chain intact ({} rows), holds checkpoint {}",
                    h["rows"].as_u64().unwrap_or(0),
                    h["checkpoint"].as_str().unwrap_or("-")
                );
            } else {
                println!("✘ {host}:");
                for p in h["problems"].as_array().into_iter().flatten() {
                    println!("    {}", p.as_str().unwrap_or_default());
                }
            }
        }
    }
    u8::from(bad > 0)
}

/// `runcap fleet caps`: every agent's capability report and lock state.
pub async fn caps(args: &ControllerArgs, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let agents = or_exit!(client.get("/api/v1/fleet/caps").await);
    if json {
        print_json(&agents);
        return 0;
    }
    let mut drifted = 0;
    for a in agents.as_array().into_iter().flatten() {
        let drift = a["lock"]["drift"].as_array().cloned().unwrap_or_default();
        drifted += usize::from(!drift.is_empty());
        println!(
            "{} (environment {}, lock {})",
            a["host"].as_str().unwrap_or("?"),
            a["environment"].as_str().unwrap_or("?"),
            a["lock"]["digest"]
                .as_str()
                .map(|d| &d[..d.len().min(12)])
                .unwrap_or("none")
        );
        for p in a["plugins"].as_array().into_iter().flatten() {
            let grants: Vec<String> = p["grants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["capability"].as_str().map(str::to_string))
                .collect();
            println!(
                "  {:<20} {}",
                p["name"].as_str().unwrap_or("?"),
                if grants.is_empty() {
                    "no grants".to_string()
                } else {
                    grants.join(", ")
                }
            );
        }
        for d in &drift {
            println!(
                "  DRIFT since the approved lock: {}",
                d.as_str().unwrap_or_default()
            );
        }
    }
    u8::from(drifted > 0)
}

/// `runcap fleet caps --diff FROM TO`: what one host's manifest grants that another's
/// does not; exits 1 when `to` may do anything `from` may not.
pub async fn caps_diff(args: &ControllerArgs, from: &str, to: &str, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let path = format!(
        "/api/v1/fleet/caps/diff?from={}&to={}",
        encode(from),
        encode(to)
    );
    let doc = or_exit!(client.get(&path).await);
    if json {
        print_json(&doc);
    } else {
        println!("{to} against {from}");
        let changes = doc["changes"].as_array().cloned().unwrap_or_default();
        for c in &changes {
            println!(
                "  {:<9}{}: {}",
                c["kind"].as_str().unwrap_or("?"),
                c["key"].as_str().unwrap_or("?"),
                c["what"].as_str().unwrap_or("")
            );
        }
        let widened = changes
            .iter()
            .filter(|c| c["widens"] == json!(true))
            .count();
        match (changes.len(), widened) {
            (0, _) => println!("✔ the same grants"),
            (n, 0) => println!("✔ {n} changes, none widens what {to} may do"),
            (n, w) => println!("✘ {n} changes, {w} widen what {to} may do beyond {from}"),
        }
    }
    u8::from(doc["widened"] == json!(true))
}

/// `runcap history --controller URL [--host NAME]`: runs across the fleet.
pub async fn history(
    args: &ControllerArgs,
    host: Option<&str>,
    runbook: Option<&str>,
    limit: usize,
    json: bool,
) -> u8 {
    let client = client_or_exit!(args);
    let mut query = vec![format!("limit={limit}")];
    if let Some(h) = host {
        query.push(format!("host={}", encode(h)));
    }
    if let Some(r) = runbook {
        query.push(format!("runbook={}", encode(r)));
    }
    let rows = or_exit!(
        client
            .get(&format!("/api/v1/fleet/runs?{}", query.join("&")))
            .await
    );
    if json {
        print_json(&rows);
        return 0;
    }
    let list = rows.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!(
            "no fleet runs recorded{}",
            host.map(|h| format!(" for {h}")).unwrap_or_default()
        );
        return 0;
    }
    let hosts: Vec<String> = list
        .iter()
        .map(|r| r["host"].as_str().unwrap_or("?").to_string())
        .collect();
    let runs: Vec<RunRow> = match list.into_iter().map(serde_json::from_value).collect() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the controller's answer does not read as runs: {e}");
            return 2;
        }
    };
    super::history::print_runs(&runs, Some(&hosts));
    0
}

/// `runcap incidents --controller URL --host NAME ack|resolve ID`: an agent's incident,
/// acknowledged or resolved through the controller.
pub async fn incident_act(
    args: &ControllerArgs,
    host: &str,
    id: i64,
    resolve: bool,
    note: &str,
) -> u8 {
    let client = client_or_exit!(args);
    let action = if resolve { "resolve" } else { "ack" };
    let path = format!("/api/v1/fleet/incidents/{}/{id}/{action}", encode(host));
    let done = or_exit!(
        client
            .call(reqwest::Method::POST, &path, Some(json!({ "note": note })))
            .await
    );
    println!(
        "{host}: incident #{id} ({}) {}",
        done["runbook"].as_str().unwrap_or("?"),
        if resolve { "resolved" } else { "acknowledged" }
    );
    0
}

/// `runcap incidents --controller URL [--host NAME]`: incidents across the fleet.
pub async fn incidents(args: &ControllerArgs, host: Option<&str>, all: bool, json: bool) -> u8 {
    let client = client_or_exit!(args);
    let mut query = vec![format!("all={all}")];
    if let Some(h) = host {
        query.push(format!("host={}", encode(h)));
    }
    let rows = or_exit!(
        client
            .get(&format!("/api/v1/fleet/incidents?{}", query.join("&")))
            .await
    );
    if json {
        print_json(&rows);
        return 0;
    }
    let mut list = Vec::new();
    for r in rows.as_array().cloned().unwrap_or_default() {
        let host = r["host"].as_str().unwrap_or("?").to_string();
        match serde_json::from_value::<crate::store::incidents::Incident>(r) {
            Ok(i) => list.push((Some(host), i)),
            Err(e) => {
                eprintln!("error: the controller's answer does not read as incidents: {e}");
                return 2;
            }
        }
    }
    super::incidents::print(list, all);
    0
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
