//! Backup throughput against `tar -c DIR | zstd -3 -T0` on the same data, in the same run.
//!
//! Generates about 1 GiB of mixed data (text logs, repetitive data, random incompressible blobs,
//! many small files) in a temporary directory, then measures the baseline, a first snapshot, an
//! unchanged second snapshot and a restore, with the peak RSS of each phase. Everything generated
//! is deleted at the end.
//!
//! `RUNCAP_BENCH_MB` changes the data size (default 1024); `RUNCAP_BENCH_DIR` the parent
//! directory of the temporary data (default: the system temp directory).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runcap_repo::{Repository, RestoreOptions, SnapshotOptions};

const MIB: u64 = 1024 * 1024;

fn noise(seed: u64, out: &mut [u8]) {
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(out);
}

/// A small, fast generator for text fields (splitmix64).
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

fn write_log(path: &Path, size: u64, seed: u64) -> u64 {
    let levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    let paths = [
        "/api/v1/orders",
        "/api/v1/users",
        "/health",
        "/metrics",
        "/login",
    ];
    let mut rng = Rng(seed);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut written = 0u64;
    let mut ts = 1_700_000_000_000u64 + seed * 1000;
    let mut line = String::with_capacity(256);
    while written < size {
        use std::fmt::Write as _;
        line.clear();
        ts += rng.next() % 50;
        let r = rng.next();
        let _ = writeln!(
            line,
            "{ts} {} req_id={:016x} method={} path={} status={} latency_ms={} user={}",
            levels[(r % 6) as usize],
            rng.next(),
            if r & 64 == 0 { "GET" } else { "POST" },
            paths[((r >> 8) % 5) as usize],
            [200, 200, 200, 201, 404, 500][((r >> 16) % 6) as usize],
            (r >> 24) % 900,
            (r >> 40) % 5000,
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
    }
    out.flush().unwrap();
    written
}

fn write_repetitive(path: &Path, size: u64, seed: u64) -> u64 {
    let mut block = vec![0u8; MIB as usize];
    noise(seed, &mut block);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        // Mostly the same block, with a small change every eighth repetition.
        if i % 8 == 7 {
            let at = (i as usize * 4099) % block.len();
            block[at] ^= 0xff;
        }
        out.write_all(&block).unwrap();
        written += block.len() as u64;
        i += 1;
    }
    out.flush().unwrap();
    written
}

fn write_random(path: &Path, size: u64, seed: u64) -> u64 {
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut out = File::create(path).unwrap();
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        noise(seed * 1_000_003 + i, &mut buf);
        out.write_all(&buf).unwrap();
        written += buf.len() as u64;
        i += 1;
    }
    written
}

fn write_small_files(dir: &Path, total: u64, seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let mut written = 0u64;
    let mut count = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while written < total {
        let sub = dir.join(format!("svc{:02}/conf{:02}", count % 50, (count / 50) % 8));
        if count < 400 {
            fs::create_dir_all(&sub).unwrap();
        }
        let size = (rng.next() % 20_000) as usize + 10;
        let data = &mut buf[..size];
        if count.is_multiple_of(3) {
            noise(seed + count, data);
        } else {
            for (j, b) in data.iter_mut().enumerate() {
                *b = b"key = value # setting\n"[(j + count as usize) % 22];
            }
        }
        fs::write(sub.join(format!("file{count:06}.dat")), &data[..]).unwrap();
        written += size as u64;
        count += 1;
    }
    (written, count)
}

/// Generates the mixed data set; returns (bytes, files).
fn generate(root: &Path, total_mb: u64) -> (u64, u64) {
    let total = total_mb * MIB;
    fs::create_dir_all(root.join("logs")).unwrap();
    fs::create_dir_all(root.join("images")).unwrap();
    fs::create_dir_all(root.join("blobs")).unwrap();
    fs::create_dir_all(root.join("config")).unwrap();
    let mut bytes = 0;
    let mut files = 0;
    for i in 0..4 {
        bytes += write_log(
            &root.join(format!("logs/app{i}.log")),
            total * 30 / 100 / 4,
            i,
        );
        files += 1;
    }
    for i in 0..2 {
        bytes += write_repetitive(
            &root.join(format!("images/vm{i}.img")),
            total * 20 / 100 / 2,
            10 + i,
        );
        files += 1;
    }
    for i in 0..3 {
        bytes += write_random(
            &root.join(format!("blobs/blob{i}.bin")),
            total * 30 / 100 / 3,
            20 + i,
        );
        files += 1;
    }
    let (b, f) = write_small_files(&root.join("config"), total * 20 / 100, 30);
    (bytes + b, files + f)
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Resets the process's peak RSS counter (Linux), so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS of the process since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// Hash of every file under `root` by relative path, to check the restore.
fn tree_digest(root: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            h.update(
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
            h.update_reader(File::open(e.path()).unwrap()).unwrap();
        }
    }
    h.finalize()
}

struct Row {
    phase: &'static str,
    secs: f64,
    mib_s: f64,
    size: String,
    rss: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let total_mb: u64 = std::env::var("RUNCAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let parent: PathBuf = std::env::var("RUNCAP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = tempfile::Builder::new()
        .prefix("runcap-repo-bench-")
        .tempdir_in(parent)
        .unwrap();
    let data = work.path().join("data");
    let repo_dir = work.path().join("repo");
    let restore_dir = work.path().join("restore");
    let tar_out = work.path().join("baseline.tar.zst");

    let t = Instant::now();
    let (bytes, files) = generate(&data, total_mb);
    println!(
        "generated {:.0} MiB in {files} files in {:.1}s under {}",
        bytes as f64 / MIB as f64,
        t.elapsed().as_secs_f64(),
        work.path().display()
    );
    // Flush the generated data now, so no later phase pays for writing it back.
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let mut rows = Vec::new();

    // Baseline: tar | zstd -3 -T0.
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -cf - . | zstd -3 -T0 -q -o '{}'",
            data.display(),
            tar_out.display()
        ))
        .status()
        .expect("run tar | zstd (apt-get install -y zstd)");
    assert!(status.success(), "tar | zstd failed");
    let tar_time = t.elapsed();
    let tar_size = fs::metadata(&tar_out).unwrap().len();
    rows.push(Row {
        phase: "tar | zstd -3 -T0",
        secs: tar_time.as_secs_f64(),
        mib_s: mib_s(bytes, tar_time),
        size: format!("{:.0} MiB", tar_size as f64 / MIB as f64),
        rss: f64::NAN,
    });
    fs::remove_file(&tar_out).unwrap();

    let t = Instant::now();
    let repo = Repository::init(&repo_dir, "bench secret").unwrap();
    let init_time = t.elapsed();
    let t = Instant::now();
    drop(Repository::open(&repo_dir, "bench secret").unwrap());
    let open_time = t.elapsed();

    reset_peak_rss();
    let t = Instant::now();
    let first = repo
        .snapshot_dir("bench", &data, &SnapshotOptions::default())
        .unwrap();
    let first_time = t.elapsed();
    let repo_size_1 = dir_size(&repo_dir);
    rows.push(Row {
        phase: "first snapshot",
        secs: first_time.as_secs_f64(),
        mib_s: mib_s(bytes, first_time),
        size: format!("{:.0} MiB", repo_size_1 as f64 / MIB as f64),
        rss: peak_rss_mib(),
    });

    reset_peak_rss();
    let t = Instant::now();
    let second = repo
        .snapshot_dir("bench", &data, &SnapshotOptions::default())
        .unwrap();
    let second_time = t.elapsed();
    let repo_size_2 = dir_size(&repo_dir);
    let growth = repo_size_2 - repo_size_1;
    rows.push(Row {
        phase: "second snapshot (unchanged)",
        secs: second_time.as_secs_f64(),
        mib_s: mib_s(bytes, second_time),
        size: format!("+{growth} B"),
        rss: peak_rss_mib(),
    });
    assert_eq!(second.snapshot.totals.files_unchanged, files);

    reset_peak_rss();
    let t = Instant::now();
    let restored = repo
        .restore(&first.snapshot.id, &restore_dir, &RestoreOptions::default())
        .unwrap();
    let restore_time = t.elapsed();
    assert!(restored.complete);
    rows.push(Row {
        phase: "restore",
        secs: restore_time.as_secs_f64(),
        mib_s: mib_s(restored.bytes, restore_time),
        size: format!("{:.0} MiB", restored.bytes as f64 / MIB as f64),
        rss: peak_rss_mib(),
    });

    reset_peak_rss();
    let t = Instant::now();
    let verify = repo.verify(true).unwrap();
    let verify_time = t.elapsed();
    assert!(verify.ok);
    rows.push(Row {
        phase: "verify (read data)",
        secs: verify_time.as_secs_f64(),
        mib_s: mib_s(verify.bytes_read, verify_time),
        size: format!("{} chunks", verify.chunks_read),
        rss: peak_rss_mib(),
    });

    let same = tree_digest(&data) == tree_digest(&restore_dir);

    println!();
    println!(
        "| {:<28} | {:>8} | {:>10} | {:>12} | {:>13} |",
        "phase", "seconds", "MiB/s", "output", "peak RSS MiB"
    );
    println!(
        "|{:-<30}|{:->10}|{:->12}|{:->14}|{:->15}|",
        "", "", "", "", ""
    );
    for r in &rows {
        let rss = if r.rss.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", r.rss)
        };
        println!(
            "| {:<28} | {:>8.2} | {:>10.1} | {:>12} | {:>13} |",
            r.phase, r.secs, r.mib_s, r.size, rss
        );
    }
    println!();
    println!(
        "first snapshot vs baseline throughput: {:.2}x (target >= 0.5x)",
        tar_time.as_secs_f64() / first_time.as_secs_f64()
    );
    println!(
        "second snapshot speed-up over first:   {:.1}x (target >= 5x)",
        first_time.as_secs_f64() / second_time.as_secs_f64()
    );
    println!(
        "repository growth on unchanged data:   {:.4}% (target < 1%)",
        growth as f64 * 100.0 / repo_size_1 as f64
    );
    println!(
        "first snapshot: {} chunks ({} new), stored {:.0} MiB, dedup {:.3}, compression {:.2}",
        first.snapshot.totals.chunks_total,
        first.snapshot.totals.chunks_new,
        first.snapshot.totals.bytes_stored as f64 / MIB as f64,
        first.dedup_ratio,
        first.compression_ratio
    );
    println!(
        "init {:.0} ms, open {:.0} ms (argon2id 64 MiB, 3 passes)",
        init_time.as_secs_f64() * 1000.0,
        open_time.as_secs_f64() * 1000.0
    );
    println!("restore identical to source: {same}");
    assert!(same, "restored data differs from the source");

    drop(repo);
    work.close().unwrap();
}
