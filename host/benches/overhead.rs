//! Per-action overhead: a fresh instance of a trivial plugin plus one call, beside
//! spawning `sh -c true` in the same run, and a bare call into a live instance.
//!
//! Run with `./dev bench` (it builds the plugins first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runcap::caps::ValidGrants;
use runcap::engine::{CompileCache, Runtime};
use runcap::manifest::{Limits, PluginSpec};
use runcap::runner::{self, Invocation, Status, WarmInstance};

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    (median, p99)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let wasm =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release/noop.wasm");
    let spec = PluginSpec {
        name: "noop".into(),
        path: wasm.clone(),
        sha256: runcap::manifest::file_digest(&wasm)
            .unwrap_or_else(|e| panic!("{}: {e}; run ./dev plugins", wasm.display())),
        limits: Limits::default(),
        grants: ValidGrants::default(),
        signer: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(CompileCache::disabled(), 64).expect("engine");
    let shared = runcap::caps::Resources::none();
    let plugin = runtime.load(&spec, &shared).expect("load noop");
    let inv = Invocation {
        run_id: "bench".into(),
        environment: "bench".into(),
        runbook: "bench".into(),
        step: "noop".into(),
        dry_run: false,
        timeout: None,
        sink: None,
        tape: None,
    };
    let params = serde_json::json!({});
    const N: usize = 20_000;

    let (fresh, warm_validate, warm_run) = rt.block_on(async {
        for _ in 0..2_000 {
            let r = runner::run_action(&runtime, &plugin, &inv, &params).await;
            assert_eq!(r.status, Status::Ok, "{r:?}");
        }
        let mut fresh = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let r = runner::run_action(&runtime, &plugin, &inv, &params).await;
            fresh.push(t.elapsed());
            std::hint::black_box(r);
        }
        let mut warm = WarmInstance::new(&runtime, &plugin)
            .await
            .expect("instance");
        let mut validate = Vec::with_capacity(N);
        for i in 0..N + 2_000 {
            let t = Instant::now();
            warm.validate("{}").await.expect("call").expect("valid");
            if i >= 2_000 {
                validate.push(t.elapsed());
            }
        }
        let mut run = Vec::with_capacity(N);
        for i in 0..N + 2_000 {
            let t = Instant::now();
            let s = warm.run("{}").await.expect("call");
            if i >= 2_000 {
                run.push(t.elapsed());
            }
            std::hint::black_box(s);
        }
        (fresh, validate, run)
    });

    let mut spawn = Vec::new();
    for i in 0..550 {
        let t = Instant::now();
        let status = std::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .expect("sh");
        assert!(status.success());
        if i >= 50 {
            spawn.push(t.elapsed());
        }
    }

    let (fresh_med, fresh_p99) = stats(fresh);
    let (val_med, val_p99) = stats(warm_validate);
    let (run_med, run_p99) = stats(warm_run);
    let (spawn_med, spawn_p99) = stats(spawn);
    println!("per-action overhead (noop plugin, pooling allocator, {N} samples each)");
    println!("{:<52} {:>10} {:>10}", "", "median µs", "p99 µs");
    println!(
        "{:<52} {:>10.2} {:>10.2}",
        "fresh instance + run() + report (runcap's path)",
        us(fresh_med),
        us(fresh_p99)
    );
    println!(
        "{:<52} {:>10.2} {:>10.2}",
        "call validate() on a live instance",
        us(val_med),
        us(val_p99)
    );
    println!(
        "{:<52} {:>10.2} {:>10.2}",
        "call run() on a live instance",
        us(run_med),
        us(run_p99)
    );
    println!(
        "{:<52} {:>10.2} {:>10.2}",
        "spawn `sh -c true` and wait (baseline)",
        us(spawn_med),
        us(spawn_p99)
    );
    let ratio = spawn_med.as_secs_f64() / fresh_med.as_secs_f64();
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    // Each target names the measure it judges; `run()` is the call a runbook's step makes.
    println!(
        "target: fresh instance + run() + report, median = {:.2} µs, target ≤ 20 µs: {}",
        us(fresh_med),
        verdict(us(fresh_med) <= 20.0)
    );
    println!(
        "target: spawn `sh -c true` / fresh instance + run() + report, medians = {:.1}x, target ≥ 50x: {}",
        ratio,
        verdict(ratio >= 50.0)
    );
    println!(
        "target: run() on a live instance, median = {:.2} µs, target < 1 µs: {}",
        us(run_med),
        verdict(us(run_med) < 1.0)
    );
    println!(
        "        (validate() on a live instance, median = {:.2} µs; informative)",
        us(val_med)
    );
}
