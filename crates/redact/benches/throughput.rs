//! Throughput of `redact_text_stream` (and `redact_jsonl_stream`) on a generated ~100 MB
//! application log, against the same rules in a Python `re` script run on the same file.
//!
//! `cargo bench -p runcap-redact`. Environment: `REDACT_BENCH_MB` (default 100) sets the log
//! size, `REDACT_BENCH_KEEP=1` keeps the generated files, `REDACT_BENCH_NO_PYTHON=1` skips the
//! Python runs.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runcap_redact::{Counts, Redactor};

#[path = "support/common.rs"]
mod common;

use common::*;

const RUNS: usize = 3;

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
