//! Throughput of `redact_text_stream` (and `redact_jsonl_stream`) on a generated ~100 MB
//! application log, against the same rules in a Python `re` script run on the same file.
//!
//! `cargo bench -p runcap-redact`. Environment: `REDACT_BENCH_MB` (default 100) sets the log
//! size, `REDACT_BENCH_KEEP=1` keeps the generated files, `REDACT_BENCH_NO_PYTHON=1` skips the
//! Python runs.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runcap_redact::{Counts, Redactor};

const IO_BUF: usize = 256 * 1024;
const RUNS: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
    fn alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(A[self.below(A.len() as u64) as usize]))
            .collect()
    }
    fn digits(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

fn luhn_digit(body: &str) -> u32 {
    let mut sum = 0;
    for (i, b) in body.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    (10 - sum % 10) % 10
}

/// A 16-digit Visa-like number: Luhn-valid (a card) or deliberately invalid (an order id).
fn card_number(rng: &mut Rng, valid: bool) -> String {
    let body = format!("4{}", rng.digits(14));
    let check = luhn_digit(&body);
    let check = if valid { check } else { (check + 1) % 10 };
    format!("{body}{check}")
}

const USERS: &[&str] = &["alice", "bob.smith", "carol_j", "dave+ops", "erin.w"];
const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net"];
const PATHS: &[&str] = &["orders", "users", "carts", "invoices", "search"];
const LEVELS: &[&str] = &["INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"];

fn timestamp(i: u64) -> String {
    let s = i / 10;
    format!(
        "2024-05-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + (s / 86_400) % 28,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        (i * 37) % 1000
    )
}

fn ordinary_line(rng: &mut Rng, i: u64) -> String {
    let ts = timestamp(i);
    let level = rng.pick(LEVELS);
    match rng.below(8) {
        0 => format!(
            "{ts} {level} [http] GET /api/v1/{}/{} status=200 duration_ms={} request_id={}-{}-4{}-a{}-{} client=10.0.{}.{}",
            rng.pick(PATHS),
            rng.below(1_000_000),
            rng.below(900),
            rng.hex(8),
            rng.hex(4),
            rng.hex(3),
            rng.hex(3),
            rng.hex(12),
            rng.below(255),
            rng.below(255)
        ),
        1 => format!(
            "{ts} {level} [db] query took {}.{}ms rows={} table={} shard={}",
            rng.below(200),
            rng.below(10),
            rng.below(5000),
            rng.pick(PATHS),
            rng.below(64)
        ),
        2 => format!(
            "{ts} {level} [worker-{}] retrying job {} attempt {}/5 after {}ms",
            rng.below(16),
            rng.below(10_000_000),
            1 + rng.below(5),
            250 * (1 + rng.below(8))
        ),
        3 => format!(
            "{ts} {level} [payments] upstream timeout after {}ms trace={} span={}",
            rng.below(30_000),
            rng.hex(32),
            rng.hex(16)
        ),
        4 => format!(
            "{ts} {level} [auth] user {} logged in from 192.168.{}.{} session={} ua=\"Mozilla/5.0 (X11; Linux x86_64)\"",
            rng.below(100_000),
            rng.below(255),
            rng.below(255),
            rng.hex(16)
        ),
        5 => format!(
            "{ts} {level} [deploy] rolled out version {}.{}.{} (commit {}) to {} pods",
            rng.below(5),
            rng.below(20),
            rng.below(50),
            rng.hex(40),
            1 + rng.below(30)
        ),
        6 => format!(
            "{ts} {level} [cache] hit ratio 0.{} keys={} evictions={} mem={}MB epoch_ms={}",
            rng.below(1000),
            rng.below(1_000_000),
            rng.below(1000),
            rng.below(4096),
            1_714_000_000_000 + rng.below(1_000_000_000)
        ),
        _ => format!(
            "{ts} {level} [billing] invoice {} total=${}.{:02} currency=USD tokenizer=v2",
            card_number(rng, false),
            rng.below(5000),
            rng.below(100)
        ),
    }
}

fn sensitive_line(rng: &mut Rng, i: u64) -> String {
    let ts = timestamp(i);
    match rng.below(10) {
        0 => format!(
            "{ts} INFO  [signup] new user email={}{}@{} plan=pro",
            rng.pick(USERS),
            rng.below(100),
            rng.pick(DOMAINS)
        ),
        1 => format!(
            "{ts} WARN  [sms] delivery failed to +1415555{:04} code=30007",
            rng.below(10_000)
        ),
        2 => format!(
            "{ts} INFO  [kyc] verified ssn={}-{:02}-{:04} for customer {}",
            100 + rng.below(500),
            1 + rng.below(98),
            1 + rng.below(9998),
            rng.below(100_000)
        ),
        3 => format!(
            "{ts} ERROR [payments] card {} declined reason=insufficient_funds",
            card_number(rng, true)
        ),
        4 => format!(
            "{ts} DEBUG [http] Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}",
            rng.alnum(40),
            rng.alnum(43)
        ),
        5 => format!(
            "{ts} INFO  [config] loaded OPENAI_API_KEY=sk-proj-{}",
            rng.alnum(40)
        ),
        6 => format!(
            "{ts} DEBUG [http] GET /callback?code={}&access_token={}&state=xyz",
            rng.alnum(8),
            rng.alnum(32)
        ),
        7 => format!(
            "{ts} WARN  [aws] using static credentials AKIA{}",
            rng.alnum(16).to_ascii_uppercase()
        ),
        8 => format!(
            "{ts} INFO  [support] callback requested at ({}) 555-{:04} by {}@{}",
            200 + rng.below(700),
            rng.below(10_000),
            rng.pick(USERS),
            rng.pick(DOMAINS)
        ),
        _ => format!("{ts} INFO  [ci] cloning with ghp_{}", rng.alnum(36)),
    }
}

/// Writes a log of about `bytes` bytes; one line in 20 carries PII or a credential.
fn generate_text(path: &Path, bytes: u64) -> u64 {
    let mut w = BufWriter::with_capacity(IO_BUF, File::create(path).unwrap());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0;
    let mut i = 0;
    while written < bytes {
        let line = if rng.below(20) == 0 {
            sensitive_line(&mut rng, i)
        } else {
            ordinary_line(&mut rng, i)
        };
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        written += line.len() as u64 + 1;
        i += 1;
    }
    w.flush().unwrap();
    written
}

/// The same records as JSON Lines: `{"ts":..,"level":..,"msg":..,"seq":..}`.
fn generate_jsonl(text: &Path, path: &Path, bytes: u64) -> u64 {
    let r = BufReader::with_capacity(IO_BUF, File::open(text).unwrap());
    let mut w = BufWriter::with_capacity(IO_BUF, File::create(path).unwrap());
    let mut written = 0;
    for (seq, line) in r.lines().enumerate() {
        let line = line.unwrap();
        let (ts, rest) = line.split_once(' ').unwrap();
        let (level, msg) = rest.split_at(5);
        let rec =
            serde_json::json!({"ts": ts, "level": level.trim(), "msg": msg.trim(), "seq": seq});
        let s = serde_json::to_string(&rec).unwrap();
        w.write_all(s.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        written += s.len() as u64 + 1;
        if written >= bytes {
            break;
        }
    }
    w.flush().unwrap();
    written
}

/// Resets the kernel's peak-RSS mark for this process (Linux; ignored elsewhere).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size in KiB since the last reset (Linux `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn current_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

enum Mode {
    Text,
    Jsonl,
}

fn run_native(r: &Redactor, input: &Path, output: &Path, mode: &Mode) -> (Duration, Counts) {
    let reader = BufReader::with_capacity(IO_BUF, File::open(input).unwrap());
    let mut writer = BufWriter::with_capacity(IO_BUF, File::create(output).unwrap());
    let mut counts = Counts::new();
    let start = Instant::now();
    let stats = match mode {
        Mode::Text => r.redact_text_stream(reader, &mut writer, &mut counts),
        Mode::Jsonl => r.redact_jsonl_stream(reader, &mut writer, &mut counts),
    }
    .unwrap();
    writer.flush().unwrap();
    let elapsed = start.elapsed();
    assert_eq!(stats.invalid_json_lines, 0);
    (elapsed, counts)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

struct PyResult {
    seconds: f64,
    counts: serde_json::Value,
    maxrss_kb: u64,
}

fn run_python(script: &Path, input: &Path, output: &Path, prefilter: bool) -> Option<PyResult> {
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(input).arg(output);
    if prefilter {
        cmd.arg("--prefilter");
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("python3 failed: {}", String::from_utf8_lossy(&o.stderr));
            return None;
        }
        Err(e) => {
            eprintln!("python3 not runnable: {e}");
            return None;
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(PyResult {
        seconds: v["seconds"].as_f64()?,
        counts: v["counts"].clone(),
        maxrss_kb: v["maxrss_kb"].as_u64().unwrap_or(0),
    })
}

/// Number of lines that differ between two files, with the first few shown.
fn diff_lines(a: &Path, b: &Path) -> u64 {
    let ra = BufReader::with_capacity(IO_BUF, File::open(a).unwrap());
    let rb = BufReader::with_capacity(IO_BUF, File::open(b).unwrap());
    let mut differ = 0;
    let mut la = ra.split(b'\n');
    let mut lb = rb.split(b'\n');
    loop {
        match (la.next(), lb.next()) {
            (None, None) => break,
            (x, y) => {
                let x = x.map(Result::unwrap).unwrap_or_default();
                let y = y.map(Result::unwrap).unwrap_or_default();
                if x != y {
                    differ += 1;
                    if differ <= 3 {
                        eprintln!("  rust:   {}", String::from_utf8_lossy(&x));
                        eprintln!("  python: {}", String::from_utf8_lossy(&y));
                    }
                }
            }
        }
    }
    differ
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mb: u64 = std::env::var("REDACT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let keep = std::env::var_os("REDACT_BENCH_KEEP").is_some();
    let skip_python = std::env::var_os("REDACT_BENCH_NO_PYTHON").is_some();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("runcap-redact-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let text_in = dir.join("app.log");
    let jsonl_in = dir.join("app.jsonl");
    let text_out = dir.join("app.redacted.log");
    let jsonl_out = dir.join("app.redacted.jsonl");
    let py_out = dir.join("app.redacted.py.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/redact_baseline.py");

    let t = Instant::now();
    let text_bytes = generate_text(&text_in, mb * 1_000_000);
    let jsonl_bytes = generate_jsonl(&text_in, &jsonl_in, mb * 1_000_000 / 2);
    println!(
        "generated {:.1} MB text log and {:.1} MB JSON Lines in {:.1}s under {}",
        text_bytes as f64 / 1e6,
        jsonl_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        dir.display()
    );

    let redactor = Redactor::default();
    let rss_before = current_rss_kib();
    reset_peak_rss();
    let mut text_rates = Vec::new();
    let mut counts = Counts::new();
    for _ in 0..RUNS {
        let (d, c) = run_native(&redactor, &text_in, &text_out, &Mode::Text);
        text_rates.push(mb_per_s(text_bytes, d));
        counts = c;
    }
    let mut jsonl_rates = Vec::new();
    for _ in 0..RUNS {
        let (d, _) = run_native(&redactor, &jsonl_in, &jsonl_out, &Mode::Jsonl);
        jsonl_rates.push(mb_per_s(jsonl_bytes, d));
    }
    let peak = peak_rss_kib();
    let native = median(text_rates.clone());
    println!(
        "native text:  median {:.0} MB/s (runs: {})",
        native,
        text_rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "native jsonl: median {:.0} MB/s (runs: {})",
        median(jsonl_rates.clone()),
        jsonl_rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("native counts: {}", serde_json::to_string(&counts).unwrap());
    if let (Some(before), Some(peak)) = (rss_before, peak) {
        println!(
            "native peak RSS during the runs: {:.1} MiB (RSS before: {:.1} MiB)",
            peak as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }

    if skip_python {
        println!("python baseline skipped (REDACT_BENCH_NO_PYTHON)");
    } else {
        for prefilter in [false, true] {
            let label = if prefilter {
                "python re + prefilter"
            } else {
                "python re"
            };
            let Some(py) = run_python(&script, &text_in, &py_out, prefilter) else {
                println!("{label}: not run");
                continue;
            };
            let rate = text_bytes as f64 / 1e6 / py.seconds;
            let differ = diff_lines(&text_out, &py_out);
            println!(
                "{label}: {:.1} MB/s, peak RSS {:.1} MiB, counts {}; rust/python = {:.1}x; output lines differing from rust: {}",
                rate,
                py.maxrss_kb as f64 / 1024.0,
                py.counts,
                native / rate,
                differ
            );
        }
    }

    if keep {
        println!("kept {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
}
