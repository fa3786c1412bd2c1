//! `runcap serve` as a process, measured from outside the way its users meet it:
//!
//! - **API**: `GET /api/v1/runs` (50 newest runs, redacted JSON) with a large history in
//!   the store (100k runs by default), beside the same request with a small one (100 runs)
//!   in the same run. Target: p99 < 20 ms with the large history.
//! - **Trigger to first step**: an Alertmanager webhook POSTed to a trigger whose runbook's
//!   first step probes a loopback listener; latency is from the POST being sent to the
//!   probe's request arriving, beside a plain loopback HTTP request in the same run.
//!   Target: p99 < 10 ms.
//!
//! `./dev bench` runs it. Environment: `SERVE_BENCH_RUNS` (history size, default 100000),
//! `SERVE_BENCH_REQUESTS` (API requests per history, default 500), `SERVE_BENCH_TRIGGERS`
//! (default 200).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use runcap::store::records::RunStatus;
use runcap::store::{RunStart, Store};

const TOKEN: &str = "bench-read-token-0123456789";
const ALERT_TOKEN: &str = "bench-alert-token-0123456789";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and p99 of samples, in milliseconds.
fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]),
    )
}

/// One HTTP/1.1 exchange; returns the status code.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("the server accepts");
    s.set_nodelay(true).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A loopback listener answering 200 to everything and reporting when each request
/// with `?n=N` arrived.
fn listener() -> (String, mpsc::Receiver<(usize, Instant)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let arrived = Instant::now();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let _ = (&conn).write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                if let Some(n) = line
                    .split("n=")
                    .nth(1)
                    .and_then(|r| r.split([' ', '&']).next())
                    .and_then(|n| n.parse().ok())
                {
                    let _ = tx.send((n, arrived));
                }
            });
        }
    });
    (addr, rx)
}

/// A running `runcap serve`.
struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runcap"))
        .args(["serve", "--grace", "2s"])
        .current_dir(dir)
        .env("RUNCAP_CACHE_DIR", dir.join(".cache"))
        .env_remove("RUNCAP_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("runcap serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string();
    Served { child, addr }
}

/// An environment whose `hit` runbook probes `target` (the trigger's label `n` in the
/// query), triggered by `[serve.triggers.bench]`.
fn environment(target: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/http_probe.wasm");
    let sha = runcap::manifest::file_digest(&wasm)
        .unwrap_or_else(|e| panic!("{}: {e}; run ./dev plugins", wasm.display()));
    std::fs::write(dir.path().join("read.token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("alert.token"), ALERT_TOKEN).unwrap();
    let manifest = format!(
        r#"
environment = "bench"

[secrets.read]
file = "read.token"
[secrets.alert]
file = "alert.token"

[serve]
listen = "127.0.0.1:0"
tokens = [{{ secret = "read", scopes = ["read"] }}]

[serve.triggers.bench]
runbook = "hit"
match = {{ alertname = "Bench" }}
token = "alert"
# Every alert here is a distinct one on purpose: no flap guard.
flap = {{ runs = 1000000, within = "1s" }}

[plugins.probe]
path = {wasm:?}
sha256 = "{sha}"
grants.http = {{ allow = ["http://{target}"] }}

[runbooks.hit]
[[runbooks.hit.steps]]
uses = "probe"
with = {{ url = "http://{target}/hit?n={{{{ trigger.labels.n }}}}" }}
"#,
        wasm = wasm.display().to_string(),
    );
    std::fs::write(dir.path().join("runcap.toml"), manifest).unwrap();
    dir
}

/// Fills the store beside the manifest with `n` finished runs.
fn fill(dir: &Path, n: usize) {
    let store = Store::open(&dir.join(".runcap")).unwrap();
    let manifest = dir.join("runcap.toml");
    for i in 0..n {
        let id = format!("bench-{i:08}");
        let runbook = ["health", "backup", "restart", "scrub"][i % 4];
        store
            .begin_run(&RunStart {
                id: &id,
                environment: "bench",
                runbook,
                manifest: &manifest,
                dry_run: false,
            })
            .unwrap();
        store.finish_run(&id, RunStatus::Ok, "all good").unwrap();
    }
}

/// Latencies of `requests` GETs of the 50 newest runs.
fn api_latency(addr: &str, requests: usize) -> Vec<Duration> {
    let auth = format!("Bearer {TOKEN}");
    (0..requests)
        .map(|_| {
            let t = Instant::now();
            let code = http(
                addr,
                "GET",
                "/api/v1/runs?limit=50",
                &[("Authorization", &auth)],
                "",
            );
            assert_eq!(code, 200);
            t.elapsed()
        })
        .collect()
}

fn main() {
    let runs = env_num("SERVE_BENCH_RUNS", 100_000);
    let requests = env_num("SERVE_BENCH_REQUESTS", 500);
    let triggers = env_num("SERVE_BENCH_TRIGGERS", 200);
    let (target, arrivals) = listener();

    // API latency, small history then large, each against its own server.
    let mut api = Vec::new();
    for n in [100, runs] {
        let env = environment(&target);
        let t = Instant::now();
        fill(env.path(), n);
        let filled = t.elapsed();
        let served = serve(env.path());
        api_latency(&served.addr, 20); // warm-up
        let (median, p99) = stats(api_latency(&served.addr, requests));
        println!(
            "GET /api/v1/runs?limit=50 with {n:>7} runs in the store: median {median:.2} ms, p99 {p99:.2} ms ({requests} requests; store filled in {:.1}s)",
            filled.as_secs_f64()
        );
        api.push(p99);
    }

    // Trigger to first step.
    let env = environment(&target);
    let served = serve(env.path());
    let auth = format!("Bearer {ALERT_TOKEN}");
    let mut direct = Vec::new();
    let mut triggered = Vec::new();
    for n in 0..triggers + 10 {
        let t = Instant::now();
        assert_eq!(http(&target, "GET", "/direct", &[], ""), 200);
        direct.push(t.elapsed());
        let body = format!(
            r#"{{"version":"4","status":"firing","receiver":"runcap","alerts":[{{"status":"firing","labels":{{"alertname":"Bench","n":"{n}"}},"fingerprint":"bench-{n}"}}]}}"#
        );
        let sent = Instant::now();
        let code = http(
            &served.addr,
            "POST",
            "/api/v1/triggers/bench",
            &[("Authorization", &auth)],
            &body,
        );
        assert_eq!(code, 202, "the trigger is accepted");
        let (got, arrived) = arrivals
            .recv_timeout(Duration::from_secs(30))
            .expect("the triggered step reaches the listener");
        assert_eq!(got, n);
        if n >= 10 {
            triggered.push(arrived.duration_since(sent));
        }
        // The run ends before the next alert, so none is skipped as overlapping.
        let until = Instant::now() + Duration::from_secs(30);
        while env_runs_running(&served.addr) && Instant::now() < until {
            std::thread::yield_now();
        }
    }
    let (d_med, d_p99) = stats(direct);
    let (t_med, t_p99) = stats(triggered);
    println!("loopback HTTP request (baseline):        median {d_med:.2} ms, p99 {d_p99:.2} ms");
    println!(
        "alert POST to the first step's request:  median {t_med:.2} ms, p99 {t_p99:.2} ms ({triggers} alerts)"
    );
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "target: GET /api/v1/runs p99 with {runs} runs < 20 ms: {:.2} ms, {}",
        api[1],
        verdict(api[1] < 20.0)
    );
    println!(
        "target: trigger-to-first-step p99 < 10 ms: {t_p99:.2} ms, {}",
        verdict(t_p99 < 10.0)
    );
}

/// Whether the server has a run of `hit` still running.
fn env_runs_running(addr: &str) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = format!("Bearer {TOKEN}");
    write!(
        s,
        "GET /api/v1/runs?runbook=hit&limit=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.contains("\"running\"")
}
