//! Backup and restore throughput against `tar | zstd` on the same data, in the same run.
//!
//! Generates about 1 GiB of mixed data (text logs, repetitive data, random incompressible blobs,
//! many small files) in a temporary directory, then, alternating the two sides run by run (so
//! drift in the load of a shared machine hits both alike):
//!
//! - backup: `tar -c DIR | zstd -3 -T0 -o FILE` followed by `sync FILE` against a first
//!   snapshot into a new repository (a snapshot flushes its chunks to disk before it reports,
//!   so the baseline flushes its archive too; its time without the flush is printed beside);
//! - restore: `zstd -d | tar -x` followed by `sync -f` (the restore flushes the file system with
//!   `syncfs` before it reports, so the baseline does too) against a restore into a new
//!   directory;
//!
//! then an unchanged second snapshot and a verify. Each phase reports wall time, CPU time of all
//! its threads (or child processes), output size and peak RSS; medians are taken over the runs,
//! and one line per target names the measure it judges and whether it is met. Everything
//! generated is deleted at the end.
//!
//! `RUNCAP_BENCH_MB` changes the data size (default 1024); `RUNCAP_BENCH_RUNS` the runs of each
//! side (default 3); `RUNCAP_BENCH_DIR` the parent directory of the temporary data (default: the
//! system temp directory).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use runcap_repo::{Repository, RestoreOptions, SnapshotOptions, SnapshotReport};

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

/// Figures of the code before the `backup-speed` work (commit d16792e) on the 2-core
/// development VM, shared with other builds. With this benchmark's predecessor (one run per
/// invocation, three invocations, load average 3.3-5.3): restore 276, 196 and 73 MiB/s
/// (median 196; a reviewer's run gave 231, the higher figure is used here so the target is
/// not met against a slow reference); peak RSS 54.2 MiB in the first snapshot and 82.1 MiB in
/// the restore (medians). This benchmark itself on that code reports higher peaks (76.4 and
/// 119.8 MiB: each phase's peak also counts memory the allocator kept from earlier phases);
/// the lower, stricter figures are used.
const TODAY_RESTORE_MIB_S: f64 = 231.0;
const TODAY_FIRST_RSS_MIB: f64 = 54.2;
const TODAY_RESTORE_RSS_MIB: f64 = 82.1;
/// Restore / `zstd -d | tar -x; sync -f` throughput of the code before this work: this
/// benchmark on commit d16792e's library, two invocations on 2026-12-05 (00:24-00:28 UTC, load
/// average 5-10, run by run 2.62, 0.88, 1.00; 00:50-00:55, load average 8-11, 1.16, 0.97,
/// 1.14): median of the six runs 1.07. Unlike the constants above, the ratio is taken within
/// one run, so it moves less with the machine's load.
const TODAY_RESTORE_VS_UNTAR: f64 = 1.07;

/// Resets the process's peak RSS counter (Linux), so each phase reports its own peak. Memory
/// that earlier phases freed but the allocator kept is handed back first, so it does not
/// count towards the next phase.
fn reset_peak_rss() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
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

/// User + system CPU seconds of this process (all threads) or of its waited-for children.
fn cpu_secs(children: bool) -> f64 {
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: getrusage fills the struct we pass and keeps no pointer to it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

/// One measured run of one phase.
#[derive(Clone, Copy)]
struct Run {
    secs: f64,
    cpu: f64,
    /// Output bytes (archive, repository growth, restored bytes).
    out: u64,
    /// Peak RSS in MiB (NaN for child processes).
    rss: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// Median figures of a phase.
struct Phase {
    name: &'static str,
    runs: Vec<Run>,
    /// Bytes the throughput is computed on.
    bytes: u64,
}

impl Phase {
    /// A phase named `name` whose throughput is computed on `bytes`, with no runs yet.
    fn new(name: &'static str, bytes: u64) -> Phase {
        Phase {
            name,
            runs: Vec::new(),
            bytes,
        }
    }

    fn secs(&self) -> f64 {
        median(self.runs.iter().map(|r| r.secs).collect())
    }
    fn mib_s(&self) -> f64 {
        median(
            self.runs
                .iter()
                .map(|r| self.bytes as f64 / MIB as f64 / r.secs)
                .collect(),
        )
    }
    fn cpu(&self) -> f64 {
        median(self.runs.iter().map(|r| r.cpu).collect())
    }
    fn out(&self) -> f64 {
        median(self.runs.iter().map(|r| r.out as f64).collect())
    }
    fn rss(&self) -> f64 {
        median(self.runs.iter().map(|r| r.rss).collect())
    }
    fn runs_mib_s(&self) -> String {
        self.runs
            .iter()
            .map(|r| format!("{:.0}", self.bytes as f64 / MIB as f64 / r.secs))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs a shell pipeline, returning its wall and CPU time (children).
fn shell(cmd: &str) -> (f64, f64) {
    let cpu0 = cpu_secs(true);
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .expect("run sh (tar, zstd and sync are needed: apt-get install -y zstd)");
    assert!(status.success(), "{cmd} failed");
    (t.elapsed().as_secs_f64(), cpu_secs(true) - cpu0)
}

/// Runs `f` as a measured phase of this process.
fn measured<T>(f: impl FnOnce() -> T) -> (T, f64, f64, f64) {
    reset_peak_rss();
    let cpu0 = cpu_secs(false);
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    (out, secs, cpu_secs(false) - cpu0, peak_rss_mib())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let env_num = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // The allocator as the runcap binary sets it up.
    runcap_repo::limit_allocator_arenas();
    let total_mb = env_num("RUNCAP_BENCH_MB", 1024);
    let runs = env_num("RUNCAP_BENCH_RUNS", 3).max(1) as usize;
    let parent: PathBuf = std::env::var("RUNCAP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = tempfile::Builder::new()
        .prefix("runcap-repo-bench-")
        .tempdir_in(parent)
        .unwrap();
    let data = work.path().join("data");
    let archive = work.path().join("baseline.tar.zst");

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

    let mut tar = Phase::new("tar | zstd -3 -T0; sync", bytes);
    // The same runs of the baseline without their flush, for the informative ratio.
    let mut tar_unflushed = Phase::new("tar | zstd -3 -T0, unflushed", bytes);
    let mut first = Phase::new("first snapshot", bytes);
    let mut untar = Phase::new("zstd -d | tar -x; sync -f", bytes);
    let mut restore = Phase::new("restore", bytes);
    let mut second = Phase::new("second snapshot (unchanged)", bytes);
    let mut verify = Phase::new("verify (read data)", 0);

    // Backup: alternate sides; the first repository is used by the later phases.
    let mut repos: Vec<(Repository, PathBuf, SnapshotReport)> = Vec::new();
    let mut init_ms = 0.0;
    for run in 0..runs {
        let baseline_first = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == baseline_first {
                let _ = fs::remove_file(&archive);
                let (secs, cpu) = shell(&format!(
                    "tar -C '{}' -cf - . | zstd -3 -T0 -q -o '{}'",
                    data.display(),
                    archive.display()
                ));
                let (flush_secs, flush_cpu) = shell(&format!("sync '{}'", archive.display()));
                let out = fs::metadata(&archive).unwrap().len();
                let unflushed = Run {
                    secs,
                    cpu,
                    out,
                    rss: f64::NAN,
                };
                tar.runs.push(Run {
                    secs: secs + flush_secs,
                    cpu: cpu + flush_cpu,
                    ..unflushed
                });
                tar_unflushed.runs.push(unflushed);
            } else {
                let dir = work.path().join(format!("repo{run}"));
                let t = Instant::now();
                let repo = Repository::init(&dir, "bench secret").unwrap();
                init_ms = t.elapsed().as_secs_f64() * 1000.0;
                let (report, secs, cpu, rss) = measured(|| {
                    repo.snapshot_dir("bench", &data, &SnapshotOptions::default())
                        .unwrap()
                });
                let out = dir_size(&dir);
                first.runs.push(Run {
                    secs,
                    cpu,
                    out,
                    rss,
                });
                // Every repository stays until the end, like the restore directories below:
                // creating chunk files soon after deleting many files measures the file
                // system's inode allocator more than the snapshot.
                if run == 0 {
                    repos.push((repo, dir, report));
                }
            }
        }
    }
    let (repo, repo_dir, first_report) = repos.pop().expect("run 0 kept its repository");
    let t = Instant::now();
    drop(Repository::open(&repo_dir, "bench secret").unwrap());
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Restore: alternate sides, each into a new directory. The directories are deleted only
    // at the end: on this ext4 (no journal, mounted with `discard`) creating files soon after
    // many deletions is several times slower (the inode allocator skips recently freed inodes
    // one by one), which would measure the file system's recovery rather than the restore.
    let mut same = true;
    for run in 0..runs {
        let baseline_first = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == baseline_first {
                let dir = work.path().join(format!("untar{run}"));
                fs::create_dir(&dir).unwrap();
                let (secs, cpu) = shell(&format!(
                    "zstd -d -q -c '{}' | tar -C '{}' -xf - && sync -f '{}'",
                    archive.display(),
                    dir.display(),
                    dir.display()
                ));
                untar.runs.push(Run {
                    secs,
                    cpu,
                    out: bytes,
                    rss: f64::NAN,
                });
            } else {
                let dir = work.path().join(format!("restore{run}"));
                let (report, secs, cpu, rss) = measured(|| {
                    repo.restore(&first_report.snapshot.id, &dir, &RestoreOptions::default())
                        .unwrap()
                });
                assert!(report.complete);
                assert_eq!(report.bytes, bytes);
                restore.runs.push(Run {
                    secs,
                    cpu,
                    out: report.bytes,
                    rss,
                });
                if run == runs - 1 {
                    same = tree_digest(&data) == tree_digest(&dir);
                }
            }
        }
    }

    // Unchanged second snapshots (each adds a record to the kept repository).
    let size_1 = dir_size(&repo_dir);
    let mut size_before = size_1;
    let mut growth = 0;
    for _ in 0..runs {
        let (report, secs, cpu, rss) = measured(|| {
            repo.snapshot_dir("bench", &data, &SnapshotOptions::default())
                .unwrap()
        });
        assert_eq!(report.snapshot.totals.files_unchanged, files);
        let size = dir_size(&repo_dir);
        growth = size - size_before;
        size_before = size;
        second.runs.push(Run {
            secs,
            cpu,
            out: growth,
            rss,
        });
    }

    let (report, secs, cpu, rss) = measured(|| repo.verify(true).unwrap());
    assert!(report.ok);
    verify.bytes = report.bytes_read;
    verify.runs.push(Run {
        secs,
        cpu,
        out: report.chunks_read,
        rss,
    });

    let mib = |b: f64| format!("{:.0} MiB", b / MIB as f64);
    println!();
    println!(
        "{} runs of each side, alternating; medians. Load average at the end: {}",
        runs,
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "| {:<28} | {:>7} | {:>7} | {:>7} | {:>12} | {:>8} | {:<20} |",
        "phase", "seconds", "MiB/s", "CPU s", "output", "peak RSS", "MiB/s of each run"
    );
    println!(
        "|{:-<30}|{:->9}|{:->9}|{:->9}|{:->14}|{:->10}|{:-<22}|",
        "", "", "", "", "", "", ""
    );
    for (p, out) in [
        (&tar_unflushed, mib(tar_unflushed.out())),
        (&tar, mib(tar.out())),
        (&first, mib(first.out())),
        (&untar, mib(untar.out())),
        (&restore, mib(restore.out())),
        (&second, format!("+{:.0} B", second.out())),
        (&verify, format!("{:.0} chunks", verify.out())),
    ] {
        let rss = if p.rss().is_nan() {
            "-".to_string()
        } else {
            format!("{:.1} MiB", p.rss())
        };
        println!(
            "| {:<28} | {:>7.2} | {:>7.1} | {:>7.2} | {:>12} | {:>8} | {:<20} |",
            p.name,
            p.secs(),
            p.mib_s(),
            p.cpu(),
            out,
            rss,
            p.runs_mib_s()
        );
    }
    println!();
    let ratios = |a: &Phase, b: &Phase| -> (f64, String) {
        let v: Vec<f64> = a
            .runs
            .iter()
            .zip(&b.runs)
            .map(|(x, y)| y.secs / x.secs)
            .collect();
        let s = v
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median(v), s)
    };
    let (backup_ratio, backup_runs) = ratios(&first, &tar);
    let (unflushed_ratio, unflushed_runs) = ratios(&first, &tar_unflushed);
    let (restore_ratio, restore_runs) = ratios(&restore, &untar);
    println!(
        "first snapshot / tar|zstd;sync, run by run: {backup_runs}; per CPU second: {:.2}",
        tar.cpu() / first.cpu()
    );
    println!(
        "first snapshot / tar|zstd not flushed (informative: the archive still in the page cache), run by run: {unflushed_runs}; median {unflushed_ratio:.2}"
    );
    println!(
        "restore / zstd -d|tar -x, run by run: {restore_runs}; per CPU second: {:.2}",
        untar.cpu() / restore.cpu()
    );
    println!(
        "first snapshot: {} chunks ({} new), stored {:.0} MiB, dedup {:.3}, compression {:.2}; init {:.0} ms, open {:.0} ms (argon2id 64 MiB, 3 passes)",
        first_report.snapshot.totals.chunks_total,
        first_report.snapshot.totals.chunks_new,
        first_report.snapshot.totals.bytes_stored as f64 / MIB as f64,
        first_report.dedup_ratio,
        first_report.compression_ratio,
        init_ms,
        open_ms
    );
    println!("restore identical to source: {same}");
    println!();
    println!(
        "target: first snapshot / tar|zstd -3 -T0;sync throughput (wall time, both on disk, median of {runs} alternating runs) = {backup_ratio:.2}, target ≥ 1.2: {}",
        met(backup_ratio >= 1.2)
    );
    let size_ratio = first.out() / tar.out();
    println!(
        "target: repository size / tar|zstd -3 archive size (first snapshot, median) = {size_ratio:.3}, target ≤ 1.0 (the same ratio or better): {}",
        met(size_ratio <= 1.0)
    );
    let vs_today = restore.mib_s() / TODAY_RESTORE_MIB_S;
    println!(
        "target: restore throughput / before this work ({:.0} MiB/s / {TODAY_RESTORE_MIB_S:.0} MiB/s, median) = {vs_today:.2}, target ≥ 1.5: {}",
        restore.mib_s(),
        met(vs_today >= 1.5)
    );
    let need = 1.5 * TODAY_RESTORE_VS_UNTAR;
    println!(
        "target: restore / zstd -d|tar -x;sync throughput (same run, median of {runs}) = {restore_ratio:.2}, before this work {TODAY_RESTORE_VS_UNTAR:.2}, target ≥ 1.5 × that = {need:.2}: {}",
        met(restore_ratio >= need)
    );
    let rss_first = first.rss();
    let rss_restore = restore.rss();
    println!(
        "target: peak RSS within 2x of before this work (first snapshot {rss_first:.1} vs {TODAY_FIRST_RSS_MIB} MiB, restore {rss_restore:.1} vs {TODAY_RESTORE_RSS_MIB} MiB) = {:.2}x and {:.2}x, target ≤ 2: {}",
        rss_first / TODAY_FIRST_RSS_MIB,
        rss_restore / TODAY_RESTORE_RSS_MIB,
        met(rss_first <= 2.0 * TODAY_FIRST_RSS_MIB && rss_restore <= 2.0 * TODAY_RESTORE_RSS_MIB)
    );
    let speedup = first.secs() / second.secs();
    println!(
        "target: unchanged second snapshot speed-up over the first (wall time, medians) = {speedup:.1}x, target ≥ 5: {}",
        met(speedup >= 5.0)
    );
    let growth_pct = growth as f64 * 100.0 / size_1 as f64;
    println!(
        "target: repository growth on unchanged data = {growth_pct:.4}%, target < 1%: {}",
        met(growth_pct < 1.0)
    );
    assert!(same, "restored data differs from the source");

    drop(repo);
    work.close().unwrap();
}
