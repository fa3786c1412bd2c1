//! The fleet, measured on real parts (`./dev bench` runs it; release builds):
//!
//! 1. **Three real agents**: controller → agent → result latency of a one-probe runbook
//!    (POST to the controller until the controller has the run's result), beside the
//!    same runbook through a single `runcap serve`'s own API in the same run (the
//!    baseline: what the fleet adds is NATS, the agent and PostgreSQL); then dispatch
//!    throughput: `FLEET_FANOUTS` fan-outs to the group of three at once, until every
//!    result is recorded.
//! 2. **`FLEET_SIM_AGENTS` simulated agents** (default 1000): tasks of this process
//!    speaking the agents' protocol over NATS (each its own connection, consumer,
//!    presence heartbeat and events), driven by the real controller and PostgreSQL.
//!    `FLEET_SIM_ROUNDS` fan-outs to every agent; reported: dispatch latency (the
//!    controller's send to the agent's receipt) p50/p99, fan-out time until every
//!    result is recorded, the controller's CPU, and PostgreSQL's commits and row writes
//!    per second.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use runcap_e2e::fleet_rig::{Rig, TOKEN};
use runcap_e2e::procstat::process_cpu;
use runcap_e2e::servers::{Nats, Postgres};
use runcap_e2e::{Sandbox, free_port, served_by};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One HTTP/1.0 request on loopback; the body as JSON.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// Polls `GET path` until `done` holds for its answer.
fn poll(addr: &str, path: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if done(&http(addr, "GET", path, None)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out polling {path}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn real_agents() {
    let repeat = env_num("FLEET_REPEAT", 50) as usize;
    let Some(rig) = Rig::start(false) else { return };
    rig.wait_all_up();
    let ctl = rig.controller.as_ref().unwrap().addr.clone();
    // The baseline: the same manifest served by one `runcap serve`, with its own state.
    let single = Sandbox::new();
    let manifest = std::fs::read_to_string(rig.sb.path().join("agents/web-1/runcap.toml")).unwrap();
    let serve_port = free_port();
    single.write(
        "runcap.toml",
        &format!(
            "{}\n[secrets.api-token]\nenv = \"API_TOKEN\"\n[serve]\nlisten = \"127.0.0.1:{serve_port}\"\ntokens = [{{ secret = \"api-token\", scopes = [\"read\", \"run\"] }}]\n",
            manifest.replace("[secrets.nats-password]\nenv = \"AGENT_NATS_PASSWORD\"\n", "")
        ),
    );
    let mut cmd = single.runcap();
    cmd.args(["serve"])
        .env("API_TOKEN", TOKEN)
        .env("RUNCAP_CACHE_DIR", rig.sb.path().join(".cache"))
        .stderr(Stdio::null());
    let served = served_by(cmd);
    let body = serde_json::json!({"runbook": "slow", "params": {"ms": "0"}});
    let mut local = Vec::new();
    let mut fleet = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let id = http(&served.addr, "POST", "/api/v1/runs", Some(&body))["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        poll(&served.addr, &format!("/api/v1/runs/{id}"), |d| {
            d["status"] == "ok"
        });
        local.push(t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        let mut fb = body.clone();
        fb["host"] = "web-1".into();
        let sent = http(&ctl, "POST", "/api/v1/fleet/runs", Some(&fb));
        let id = sent["runs"][0]["run_id"].as_str().unwrap().to_string();
        poll(&ctl, &format!("/api/v1/fleet/runs/{id}"), |d| {
            d["job"]["state"] == "finished"
        });
        fleet.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (local, fleet) = (sorted(local), sorted(fleet));
    println!("controller → agent → result, one-probe runbook, {repeat} runs each:");
    println!(
        "  single runcap serve (baseline): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&local, 0.5),
        percentile(&local, 0.99)
    );
    println!(
        "  fleet (NATS + agent + PostgreSQL): p50 {:.1} ms, p99 {:.1} ms ({:.1}x the baseline's p50)",
        percentile(&fleet, 0.5),
        percentile(&fleet, 0.99),
        percentile(&fleet, 0.5) / percentile(&local, 0.5)
    );

    let fanouts = env_num("FLEET_FANOUTS", 100) as usize;
    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..fanouts {
        let mut fb = body.clone();
        fb["group"] = "api".into();
        let sent = http(&ctl, "POST", "/api/v1/fleet/runs", Some(&fb));
        for r in sent["runs"].as_array().unwrap() {
            ids.push(r["run_id"].as_str().unwrap().to_string());
        }
    }
    let sent_in = t.elapsed();
    for id in &ids {
        poll(&ctl, &format!("/api/v1/fleet/runs/{id}"), |d| {
            d["job"]["state"] == "finished"
        });
    }
    let all_in = t.elapsed();
    println!(
        "dispatch throughput, {fanouts} fan-outs to 3 agents ({} runs): sent in {:.2} s ({:.0} jobs/s), all results recorded in {:.2} s ({:.1} runs/s)",
        ids.len(),
        sent_in.as_secs_f64(),
        ids.len() as f64 / sent_in.as_secs_f64(),
        all_in.as_secs_f64(),
        ids.len() as f64 / all_in.as_secs_f64()
    );
}

/// A finished run as an agent reports it, with one step and one capability call.
fn run_detail(run_id: &str, runbook: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    serde_json::json!({
        "id": run_id, "environment": "sim", "runbook": runbook, "status": "ok", "dry_run": false,
        "started_at": now, "finished_at": now, "summary": "1 step, ok", "manifest": "runcap.toml",
        "rollbacks": [],
        "steps": [{
            "seq": 1, "id": "probe", "uses": "probe", "phase": "main", "status": "ok", "attempts": 1,
            "failure_kind": null, "summary": "GET /health → 200", "details": {}, "metrics": {},
            "started_at": now, "duration_ms": 1.0, "logs": [], "stdout": "", "stderr": "",
            "calls": [{"capability": "http", "operation": "GET", "target": "http://127.0.0.1/health",
                       "decision": "allowed", "reason": null, "result": "200", "at": now}]
        }]
    })
}

/// One simulated agent: presence, and a Started and a Finished event for every job.
async fn sim_agent(url: String, name: String, latencies: Arc<Mutex<Vec<f64>>>) {
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(format!("_INBOX_{name}"))
        .connect(url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("runcap-agents").await.unwrap();
    let presence_kv = kv.clone();
    let me = name.clone();
    tokio::spawn(async move {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let p = serde_json::json!({"version": "sim", "at_ms": now, "running": 0, "lock_digest": null});
            let _ = presence_kv.put(&me, p.to_string().into()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(format!("agent-{name}"), "RUNCAP_JOBS")
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(Ok(m)) = messages.next().await {
        let job: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let sent = job["dispatched_ms"].as_u64().unwrap();
        latencies
            .lock()
            .unwrap()
            .push(now.saturating_sub(sent) as f64);
        let run_id = job["run_id"].as_str().unwrap();
        let runbook = job["runbook"].as_str().unwrap();
        let _ = m.double_ack().await;
        let started = serde_json::json!({"type": "started", "run_id": run_id, "runbook": runbook, "at_ms": now});
        let finished = serde_json::json!({"type": "finished", "run": run_detail(run_id, runbook)});
        for (kind, ev) in [("started", started), ("finished", finished)] {
            js.publish(format!("runcap.event.{name}.{kind}"), ev.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
}

fn pg_counters(pg: &Postgres) -> (f64, f64) {
    let line = pg.psql(
        "postgres",
        "select xact_commit, tup_inserted + tup_updated + tup_deleted from pg_stat_database where datname = 'runcap';",
    );
    let mut f = line
        .split('|')
        .map(|x| x.trim().parse::<f64>().unwrap_or(0.0));
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

fn simulated_agents() {
    let n = env_num("FLEET_SIM_AGENTS", 1000) as usize;
    let rounds = env_num("FLEET_SIM_ROUNDS", 5) as usize;
    let Some(pg) = Postgres::start() else { return };
    pg.psql("postgres", "create database runcap;");
    let Some(nats) = Nats::start("max_connections: 100000", &[]) else {
        return;
    };
    let sb = Sandbox::new();
    let mut fleet = format!(
        "[nats]\nurl = \"{}\"\n[store]\nurl = \"{}\"\n[timing]\nheartbeat = \"1s\"\nlost_after = \"30s\"\n",
        nats.url(),
        pg.conn_string("runcap")
    );
    let names: Vec<String> = (0..n).map(|i| format!("sim-{i:05}")).collect();
    for (i, name) in names.iter().enumerate() {
        fleet += &format!("[agents.{name}]\ngroups = [\"g{}\"]\n", i / 100);
    }
    sb.write("fleet.toml", &fleet);
    let port = free_port();
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"control\"\n[secrets.api-token]\nenv = \"API_TOKEN\"\n[serve]\nlisten = \"127.0.0.1:{port}\"\nfleet = \"fleet.toml\"\ntokens = [{{ secret = \"api-token\", scopes = [\"read\", \"run\"] }}]\n"
        ),
    );
    let t = Instant::now();
    let mut cmd = sb.runcap();
    cmd.args(["serve"])
        .env("API_TOKEN", TOKEN)
        .stderr(Stdio::null());
    let served = served_by(cmd);
    println!(
        "{n} simulated agents: the controller set up {n} consumers and started in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let pid = served.child.id();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for name in &names {
        rt.spawn(sim_agent(nats.url(), name.clone(), latencies.clone()));
    }
    let ctl = served.addr.clone();
    let mut fanout_secs = Vec::new();
    let (c0, w0) = pg_counters(&pg);
    let cpu0 = process_cpu(pid);
    let t0 = Instant::now();
    for round in 0..rounds {
        let t = Instant::now();
        let sent = http(
            &ctl,
            "POST",
            "/api/v1/fleet/runs",
            Some(&serde_json::json!({"runbook": "probe", "all": true})),
        );
        let ids: Vec<String> = sent["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("round {round}: {sent}"))
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        let last = ids.last().unwrap().clone();
        poll(&ctl, &format!("/api/v1/fleet/runs/{last}"), |d| {
            d["job"]["state"] == "finished"
        });
        // Every run of the round recorded.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = pg.psql(
                "runcap",
                &format!(
                    "select count(*) from jobs where state = 'finished' and dispatched_at >= (select min(dispatched_at) from jobs where run_id = '{}');",
                    ids[0]
                ),
            );
            if done.parse::<usize>().unwrap_or(0) >= ids.len() {
                break;
            }
            assert!(Instant::now() < deadline, "round {round} never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        fanout_secs.push(t.elapsed().as_secs_f64());
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu(pid) - cpu0;
    let (c1, w1) = pg_counters(&pg);
    let lat = sorted(latencies.lock().unwrap().clone());
    println!(
        "  {rounds} fan-outs to all {n}: {} runs in {secs:.1} s ({:.0} runs/s); one fan-out until every result is recorded: mean {:.2} s",
        lat.len(),
        lat.len() as f64 / secs,
        fanout_secs.iter().sum::<f64>() / fanout_secs.len() as f64
    );
    println!(
        "  dispatch latency (controller send → agent receipt): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "  controller CPU: {cpu:.2} s for {} runs ({:.2} ms per run; {:.0} % of one core over the window)",
        lat.len(),
        cpu * 1000.0 / lat.len() as f64,
        cpu / secs * 100.0
    );
    println!(
        "  PostgreSQL: {:.0} commits/s, {:.0} row writes/s ({:.1} row writes per run)",
        (c1 - c0) / secs,
        (w1 - w0) / secs,
        (w1 - w0) / lat.len() as f64
    );
    rt.shutdown_background();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    real_agents();
    simulated_agents();
}
