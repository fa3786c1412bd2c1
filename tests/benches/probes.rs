//! HTTP probes against the demo service, measured beside `curl` doing the same checks in
//! the same run, the way a cron user would compare them:
//!
//! - **Start to exit**: the whole `runcap run` process of a one-probe runbook (compile cache
//!   warm) beside one `curl` process. Target: at most 1.3x curl's wall time.
//! - **A runbook of 100 probes** beside a bash loop of 100 `curl` calls: wall time and CPU
//!   (user + system, children included) per probe. Target: at most 0.2x the shell's CPU
//!   per probe.
//! - **`runcap serve` soak**: 100 runbooks each scheduled every second, each probing the
//!   demo service, for `PROBES_SOAK_SECS` (default 600). Reports the probes per second
//!   sustained, the serve process's CPU% and RSS sampled along the way, and its probes per
//!   CPU-second beside a cron-style shell loop of `curl` doing the same checks, run in
//!   slices through the soak (one at the start of every sample period) so both sides are
//!   measured under the same conditions of the machine. Targets:
//!   at least 20x the shell's probes per CPU-second, at least 95 % of the scheduled probes
//!   made, and RSS flat (the last sample within 10 % of the one taken after the first
//!   minute's warm-up, or the first sample for a shorter soak).
//!
//! `./dev bench` runs it. Environment: `PROBES_SOAK_SECS`, `PROBES_SOAK_RUNBOOKS`
//! (default 100), `PROBES_REPEAT` (process runs timed per side in the first two parts,
//! default 30).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use runcap_e2e::procstat::{children_cpu, process_cpu, process_rss_mib};
use runcap_e2e::{Sandbox, Served, Service, plugin_lines, served_by};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// Runs `cmd` to completion; returns its wall time and the CPU it and its children used.
fn timed(cmd: &mut Command) -> (Duration, f64) {
    let cpu = children_cpu();
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("the command starts");
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, children_cpu() - cpu)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn curl(url: &str) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sf", "-o", "/dev/null", url]);
    c
}

/// A bash loop of `n` sequential `curl` calls of `url`, as a cron job would run them.
fn curl_loop(url: &str, n: u64) -> Command {
    let mut c = Command::new("bash");
    c.args([
        "-c",
        "for i in $(seq \"$1\"); do curl -sf -o /dev/null \"$2\" || exit 1; done",
        "curl-loop",
        &n.to_string(),
        url,
    ]);
    c
}

/// A manifest granting http-probe the demo service, with `runbooks` appended.
fn manifest(service: &Service, runbooks: &str) -> String {
    format!(
        r#"environment = "bench"

[serve]
listen = "127.0.0.1:0"
max_concurrent = 8

[plugins.probe]
{plugin}
[plugins.probe.grants.http]
allow = ["http://{addr}"]

{runbooks}"#,
        plugin = plugin_lines("http-probe"),
        addr = service.addr,
    )
}

/// One step of `runbook` probing `url`, as the demo's health check does.
fn probe_step(runbook: &str, url: &str) -> String {
    format!(
        "[[runbooks.{runbook}.steps]]\nuses = \"probe\"\nwith = {{ url = \"{url}\", expect = {{ status = 200, json = {{ \"/status\" = \"up\" }} }} }}\n"
    )
}

/// `runcap run RUNBOOK` in `sb`, whose `runcap.toml` it reads.
fn run_of(sb: &Sandbox, runbook: &str) -> Command {
    let mut c = sb.runcap();
    c.args(["run", runbook]);
    c
}

/// Waits until every file under `dir` last changed more than runcap's settling time ago
/// (`runcap::stamps::SETTLED`, two seconds), as a cache entry of a scheduled job has.
fn wait_until_settled(dir: &Path) {
    fn newest_change(dir: &Path) -> std::time::SystemTime {
        let mut newest = std::time::SystemTime::UNIX_EPOCH;
        for entry in std::fs::read_dir(dir).expect("the cache directory exists") {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let t = if meta.is_dir() {
                newest_change(&entry.path())
            } else {
                meta.modified().unwrap()
            };
            newest = newest.max(t);
        }
        newest
    }
    let settled = Duration::from_millis(2_100);
    loop {
        let age = newest_change(dir).elapsed().unwrap_or_default();
        if age > settled {
            return;
        }
        std::thread::sleep(settled - age);
    }
}

/// Part 1: the whole process, `runcap run` of one probe beside one `curl`.
fn start_to_exit(service: &Service, repeat: u64) {
    let url = service.url("/health");
    let sb = Sandbox::new();
    let runbook = format!("[runbooks.one]\n{}", probe_step("one", &url));
    sb.write("runcap.toml", &manifest(service, &runbook));
    timed(&mut run_of(&sb, "one")); // compiles the plugin into the cache
    // A cron job's cache entry is older than a file must be before runcap remembers its
    // digest; wait until this one is, then run once more so the digests are remembered.
    wait_until_settled(&sb.path().join(".cache"));
    timed(&mut run_of(&sb, "one"));
    let mut runcap = Vec::new();
    let mut curls = Vec::new();
    for _ in 0..repeat {
        curls.push(timed(&mut curl(&url)).0);
        runcap.push(timed(&mut run_of(&sb, "one")).0);
    }
    let (c, r) = (median(curls), median(runcap));
    let ratio = r.as_secs_f64() / c.as_secs_f64();
    println!("one probe, whole process, median of {repeat}:");
    println!("  curl (baseline)            {:>8.2} ms", ms(c));
    println!(
        "  runcap run (cache warm)    {:>8.2} ms  = {ratio:.2}x curl",
        ms(r)
    );
    println!(
        "target: `runcap run` of one probe <= 1.3x one curl process: {ratio:.2}x, {}",
        verdict(ratio <= 1.3)
    );
}

/// Part 2: one runbook of 100 probes beside a bash loop of 100 `curl` calls.
fn hundred_probes(service: &Service, repeat: u64) {
    const N: u64 = 100;
    let url = service.url("/health");
    let sb = Sandbox::new();
    let steps: String = (0..N)
        .map(|i| probe_step("many", &url) + &format!("id = \"p{i}\"\n"))
        .collect();
    let runbook = format!("[runbooks.many]\n{steps}");
    sb.write("runcap.toml", &manifest(service, &runbook));
    timed(&mut run_of(&sb, "many"));
    let before = service.state.requests.load(Ordering::Relaxed);
    let (mut rw, mut rc, mut sw, mut sc) = (Vec::new(), 0.0, Vec::new(), 0.0);
    let rounds = repeat.div_ceil(3).max(3);
    for _ in 0..rounds {
        let (w, c) = timed(&mut curl_loop(&url, N));
        sw.push(w);
        sc += c;
        let (w, c) = timed(&mut run_of(&sb, "many"));
        rw.push(w);
        rc += c;
    }
    let served = service.state.requests.load(Ordering::Relaxed) - before;
    assert_eq!(
        served,
        2 * N * rounds,
        "every probe reached the demo service"
    );
    let per = |total: f64| total / (N * rounds) as f64 * 1e6;
    let (shell_cpu, runcap_cpu) = (per(sc), per(rc));
    let ratio = runcap_cpu / shell_cpu;
    println!("{N} probes, median wall of {rounds} rounds, CPU per probe over all rounds:");
    println!(
        "  bash loop of curl (baseline) {:>8.2} ms wall = {:>7.1} µs/probe, CPU {shell_cpu:>7.1} µs/probe",
        ms(median(sw.clone())),
        ms(median(sw)) * 1000.0 / N as f64
    );
    println!(
        "  runcap run, {N} steps        {:>8.2} ms wall = {:>7.1} µs/probe, CPU {runcap_cpu:>7.1} µs/probe = {ratio:.2}x",
        ms(median(rw.clone())),
        ms(median(rw)) * 1000.0 / N as f64
    );
    println!(
        "target: CPU per probe <= 0.2x the shell's: {ratio:.2}x, {}",
        verdict(ratio <= 0.2)
    );
}

fn serve(sb: &Sandbox) -> Served {
    let mut cmd = sb.runcap();
    cmd.args(["serve", "--grace", "5s"]).stderr(Stdio::null());
    served_by(cmd)
}

/// The sum of a metric's samples whose labels contain `filter`, from `/metrics`.
fn metric_sum(addr: &str, name: &str, filter: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// Part 3: `runcap serve` with many runbooks scheduled every second, for a while.
fn soak(service: &Service, secs: u64, runbooks: u64) {
    let url = service.url("/health");
    let sb = Sandbox::new();
    let mut text = String::new();
    for i in 0..runbooks {
        let rb = format!("check-{i:03}");
        text += &format!("[runbooks.{rb}]\nschedule = {{ every = \"1s\" }}\n");
        text += &probe_step(&rb, &url);
        text.push('\n');
    }
    sb.write("runcap.toml", &manifest(service, &text));
    let served = serve(&sb);
    let pid = served.child.id();

    let sample_every = Duration::from_secs((secs / 20).clamp(1, 30));
    // The shell's side: the same checks as a cron job of curl, a loop of 100 (as in part 2:
    // a shorter loop would charge each probe more of bash's start) at the start of every
    // sample period. Its requests reach the same service and are taken out of the probes
    // counted for serve.
    let slice = 100;
    let (mut shell_n, mut shell_wall, mut shell_cpu) = (0u64, Duration::ZERO, 0.0);
    let warm_up = Duration::from_secs(60.min(secs / 4));
    let start = Instant::now();
    let (requests0, cpu0) = (
        service.state.requests.load(Ordering::Relaxed),
        process_cpu(pid),
    );
    let mut rss_after_warm_up = None;
    let mut rss = Vec::new();
    let mut last = (start, requests0, cpu0);
    println!(
        "runcap serve, {runbooks} runbooks each every 1s, probing the demo service for {secs} s:"
    );
    println!(
        "  {:>6} {:>12} {:>8} {:>9}",
        "at", "probes/s", "CPU %", "RSS MiB"
    );
    while start.elapsed() < Duration::from_secs(secs) {
        let period = Instant::now();
        let (wall, cpu) = timed(&mut curl_loop(&url, slice));
        (shell_n, shell_wall, shell_cpu) = (shell_n + slice, shell_wall + wall, shell_cpu + cpu);
        std::thread::sleep(sample_every.saturating_sub(period.elapsed()));
        let now = (
            Instant::now(),
            service.state.requests.load(Ordering::Relaxed) - shell_n,
            process_cpu(pid),
        );
        let dt = now.0.duration_since(last.0).as_secs_f64();
        let m = process_rss_mib(pid);
        println!(
            "  {:>5.0}s {:>12.1} {:>8.1} {:>9.1}",
            start.elapsed().as_secs_f64(),
            (now.1 - last.1) as f64 / dt,
            (now.2 - last.2) / dt * 100.0,
            m
        );
        if rss_after_warm_up.is_none() && start.elapsed() >= warm_up {
            rss_after_warm_up = Some(m);
        }
        rss.push(m);
        last = now;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let probes = (last.1 - requests0) as f64;
    let cpu = last.2 - cpu0;
    let rate = probes / cpu;
    let failed = metric_sum(&served.addr, "runcap_runs_total", "status=\"failed\"");
    let skipped = metric_sum(&served.addr, "runcap_schedule_skipped", "");
    let made = probes / (elapsed * runbooks as f64);
    let base = rss_after_warm_up.unwrap_or(rss[0]);
    let end = *rss.last().unwrap();
    let growth = (end - base) / base;
    let shell_rate = shell_n as f64 / shell_cpu;
    let ratio = rate / shell_rate;
    println!(
        "  cron-style bash loop of curl (baseline, in slices through the soak): {shell_n} probes in {:.2} s wall, {shell_cpu:.2} CPU-s = {shell_rate:.0} probes per CPU-second",
        shell_wall.as_secs_f64()
    );
    println!(
        "  runcap serve: {probes:.0} probes in {elapsed:.0} s = {:.1}/s, {cpu:.2} CPU-s = {rate:.0} probes per CPU-second = {ratio:.1}x; {failed:.0} failed runs, {skipped:.0} skipped schedules; RSS {base:.1} -> {end:.1} MiB ({:+.1} %)",
        probes / elapsed,
        growth * 100.0
    );
    println!(
        "target: probes per CPU-second >= 20x shell+curl: {ratio:.1}x, {}",
        verdict(ratio >= 20.0)
    );
    println!(
        "target: >= 95 % of scheduled probes made: {:.1} %, {}",
        made * 100.0,
        verdict(made >= 0.95)
    );
    println!(
        "target: RSS flat (within 10 % after warm-up): {:+.1} %, {}",
        growth * 100.0,
        verdict(growth.abs() <= 0.10)
    );
}

fn main() {
    assert!(
        Path::new("/proc/self/stat").exists(),
        "this benchmark reads CPU and memory from /proc"
    );
    let service = Service::start("127.0.0.1", None);
    let repeat = env_num("PROBES_REPEAT", 30);
    start_to_exit(&service, repeat);
    hundred_probes(&service, repeat);
    soak(
        &service,
        env_num("PROBES_SOAK_SECS", 600),
        env_num("PROBES_SOAK_RUNBOOKS", 100),
    );
}
