//! What the plugin → capability path adds to a backup: the same snapshots of the same data,
//! once by calling the repository library directly and once through the `backup` plugin and
//! the host's `backup` capability, in the same run. The heavy work (reading, chunking,
//! hashing, compressing, encrypting) is native in both; the difference is the sandbox.
//!
//! `RUNCAP_BENCH_MB` sets the data size (default 256); `RUNCAP_BENCH_DIR` where it is
//! generated (default: the system temp directory). Run with `./dev bench`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runcap::caps::backup::{Backup, BackupGrant, RepositoryDef, Source};
use runcap::caps::{Resources, ValidGrants};
use runcap::engine::{CompileCache, Runtime};
use runcap::manifest::{Limits, PluginSpec};
use runcap::runner::{self, Invocation, Status};
use runcap::secrets::{SecretSource, SecretStore};
use runcap_repo::{Repository, SnapshotOptions};

const MIB: u64 = 1 << 20;
/// Rounds of each measurement; the best of each is reported.
const ROUNDS: usize = 3;

/// splitmix64, for data that is deterministic but not trivially compressible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// About `mb` MiB: a third log-like text, a third random, a third in 2,000 small files.
fn generate(root: &Path, mb: u64) -> u64 {
    let total = mb * MIB;
    let mut rng = Rng(7);
    let mut written = 0;
    fs::create_dir_all(root.join("logs")).unwrap();
    fs::create_dir_all(root.join("blobs")).unwrap();
    for i in 0..4 {
        let mut f =
            std::io::BufWriter::new(fs::File::create(root.join(format!("logs/{i}.log"))).unwrap());
        let mut n = 0;
        while n < total / 12 {
            let line = format!(
                "2026-11-23T12:{:02}:{:02}Z INFO req={:016x} path=/api/v1/orders status={} ms={}\n",
                rng.next() % 60,
                rng.next() % 60,
                rng.next(),
                [200, 201, 404, 500][(rng.next() % 4) as usize],
                rng.next() % 900
            );
            f.write_all(line.as_bytes()).unwrap();
            n += line.len() as u64;
        }
        f.flush().unwrap();
        written += n;
    }
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..4 {
        let mut f = fs::File::create(root.join(format!("blobs/{i}.bin"))).unwrap();
        for _ in 0..(total / 12 / MIB).max(1) {
            for w in buf.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
            f.write_all(&buf).unwrap();
            written += MIB;
        }
    }
    let small = total / 3 / 2000;
    for i in 0..2000u64 {
        let dir = root.join(format!("conf/{:02}", i % 40));
        fs::create_dir_all(&dir).unwrap();
        let len = (small / 2 + rng.next() % small.max(1)) as usize;
        let data: Vec<u8> = (0..len)
            .map(|j| b"key = value # setting\n"[(j + i as usize) % 22])
            .collect();
        fs::write(dir.join(format!("{i}.conf")), &data).unwrap();
        written += len as u64;
    }
    written
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn main() {
    let mb: u64 = std::env::var("RUNCAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let parent: PathBuf = std::env::var("RUNCAP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = tempfile::Builder::new()
        .prefix("runcap-backup-bench-")
        .tempdir_in(parent)
        .unwrap();
    let data = work.path().join("data");
    let bytes = generate(&data, mb);
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    println!(
        "generated {:.0} MiB under {}",
        bytes as f64 / MIB as f64,
        work.path().display()
    );
    let secret = "bench secret";
    fs::write(work.path().join("key"), secret).unwrap();

    // Through runcap: the backup plugin, a fresh instance per action, calling the capability.
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/backup.wasm");
    let grant = BackupGrant {
        sources: BTreeMap::from([(
            "data".to_string(),
            Source::Dir {
                path: data.clone(),
                one_file_system: false,
            },
        )]),
        repositories: (0..ROUNDS)
            .map(|i| {
                (
                    format!("main{i}"),
                    RepositoryDef {
                        path: work.path().join(format!("via-runcap-{i}")),
                        secret: "key".into(),
                        create: true,
                    },
                )
            })
            .collect(),
        targets: BTreeMap::new(),
        queries: BTreeMap::new(),
        cwd: work.path().to_path_buf(),
        key: "plugins.backup.grants.backup".into(),
    };
    let spec = PluginSpec {
        name: "backup".into(),
        path: wasm.clone(),
        sha256: runcap::manifest::file_digest(&wasm)
            .unwrap_or_else(|e| panic!("{}: {e}; run ./dev plugins", wasm.display())),
        limits: Limits {
            time: Duration::from_secs(3600),
            ..Limits::default()
        },
        grants: {
            let mut g = ValidGrants::default();
            g.insert::<Backup, BackupGrant>(Arc::new(grant));
            g
        },
        signer: None,
    };
    let mut shared = Resources::none();
    shared.secrets = Arc::new(SecretStore::new(BTreeMap::from([(
        "key".to_string(),
        SecretSource::File(work.path().join("key")),
    )])));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(CompileCache::disabled(), 8).expect("engine");
    let plugin = runtime
        .load(&spec, &shared)
        .expect("load the backup plugin");
    let inv = Invocation {
        run_id: "bench".into(),
        environment: "bench".into(),
        runbook: "bench".into(),
        step: "snapshot".into(),
        dry_run: false,
        timeout: None,
        sink: None,
        tape: None,
    };
    let snapshot = |repository: &str| {
        let params =
            serde_json::json!({"action": "snapshot", "source": "data", "repository": repository});
        let t = Instant::now();
        let r = rt.block_on(runner::run_action(&runtime, &plugin, &inv, &params));
        assert_eq!(r.status, Status::Ok, "{}", r.summary);
        (t.elapsed(), r)
    };

    // Alternate the two ways over several rounds, each into fresh repositories, and keep the
    // best time of each: what remains is the difference between them, not the page cache.
    let mut direct = (Duration::MAX, Duration::MAX);
    let mut via = (Duration::MAX, Duration::MAX);
    let mut summaries = (String::new(), String::new());
    for i in 0..ROUNDS {
        // The direct way: the repository library on this thread.
        let repo = Repository::init(work.path().join(format!("direct-{i}")), secret).unwrap();
        let t = Instant::now();
        repo.snapshot_dir("data", &data, &SnapshotOptions::default())
            .unwrap();
        direct.0 = direct.0.min(t.elapsed());
        let t = Instant::now();
        repo.snapshot_dir("data", &data, &SnapshotOptions::default())
            .unwrap();
        direct.1 = direct.1.min(t.elapsed());

        // Through runcap. Like the direct side, start from an existing repository whose key
        // is derived (the capability keeps opened repositories for the plugin's later actions).
        let name = format!("main{i}");
        drop(Repository::init(work.path().join(format!("via-runcap-{i}")), secret).unwrap());
        let list = serde_json::json!({"action": "list", "repository": name});
        let r = rt.block_on(runner::run_action(&runtime, &plugin, &inv, &list));
        assert_eq!(r.status, Status::Ok, "{}", r.summary);
        let (t1, r1) = snapshot(&name);
        let (t2, r2) = snapshot(&name);
        via.0 = via.0.min(t1);
        via.1 = via.1.min(t2);
        summaries = (r1.summary, r2.summary);
    }
    let (direct_first, direct_second) = direct;
    let (runcap_first, runcap_second) = via;

    println!();
    println!(
        "| {:<34} | {:>9} | {:>9} | {:>9} |",
        "snapshot", "direct s", "runcap s", "overhead"
    );
    println!("|{:-<36}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    for (name, d, r) in [
        ("first (all data new)", direct_first, runcap_first),
        ("second (unchanged)", direct_second, runcap_second),
    ] {
        println!(
            "| {:<34} | {:>9.3} | {:>9.3} | {:>+8.1}% |",
            name,
            d.as_secs_f64(),
            r.as_secs_f64(),
            (r.as_secs_f64() / d.as_secs_f64() - 1.0) * 100.0
        );
    }
    println!();
    println!(
        "direct first snapshot {:.0} MiB/s, through runcap {:.0} MiB/s",
        mib_s(bytes, direct_first),
        mib_s(bytes, runcap_first)
    );
    println!("runcap first:  {}", summaries.0);
    println!("runcap second: {}", summaries.1);
}
