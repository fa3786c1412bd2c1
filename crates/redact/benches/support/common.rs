//! Shared by the redaction benchmarks (`throughput` here, `redact` in the runcap host): a
//! generated application log with planted personal data and credentials, peak-RSS readings,
//! and the Python `re` baseline.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;

/// Buffer size of every file read and write in the benchmarks.
pub const IO_BUF: usize = 256 * 1024;

/// A small xorshift generator: the same log on every run and every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    pub fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
    pub fn alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(A[self.below(A.len() as u64) as usize]))
            .collect()
    }
    pub fn digits(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// The Luhn check digit that makes `body` followed by it valid.
pub fn luhn_digit(body: &str) -> u32 {
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
pub fn card_number(rng: &mut Rng, valid: bool) -> String {
    let body = format!("4{}", rng.digits(14));
    let check = luhn_digit(&body);
    let check = if valid { check } else { (check + 1) % 10 };
    format!("{body}{check}")
}

/// Vocabulary of the generated lines.
pub const USERS: &[&str] = &["alice", "bob.smith", "carol_j", "dave+ops", "erin.w"];
pub const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net"];
pub const PATHS: &[&str] = &["orders", "users", "carts", "invoices", "search"];
pub const LEVELS: &[&str] = &["INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"];

/// An ISO-8601 timestamp for line `i`.
pub fn timestamp(i: u64) -> String {
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

/// A line with nothing to redact (ids, versions, timestamps, order numbers that fail Luhn).
pub fn ordinary_line(rng: &mut Rng, i: u64) -> String {
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

/// A line carrying one kind of personal data or credential.
pub fn sensitive_line(rng: &mut Rng, i: u64) -> String {
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
pub fn generate_text(path: &Path, bytes: u64) -> u64 {
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
pub fn generate_jsonl(text: &Path, path: &Path, bytes: u64) -> u64 {
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
pub fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size in KiB since the last reset (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn current_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the Python baseline reports about its run.
pub struct PyResult {
    pub seconds: f64,
    pub counts: serde_json::Value,
    pub maxrss_kb: u64,
}

/// Runs the Python baseline on `input`; `None` (with a message) when python3 is unavailable.
pub fn run_python(script: &Path, input: &Path, output: &Path, prefilter: bool) -> Option<PyResult> {
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
pub fn diff_lines(a: &Path, b: &Path) -> u64 {
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
