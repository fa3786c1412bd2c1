//! Checking a manifest is linear in what it declares: `parse` (compose, deserialize,
//! validate, template references) and locating every key for reports, at four sizes
//! of one long runbook. The smallest size is the baseline: per-step cost at the
//! largest should stay close to it (a quadratic check doubles it at every step up).
//!
//! Run with `./dev bench` (it builds the plugins first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runcap::manifest::source::{KeyPath, SourceFile};

fn manifest(wasm: &str, digest: &str, n: usize) -> String {
    let mut text = format!(
        "environment = \"bench\"\n[plugins.noop]\npath = {wasm:?}\nsha256 = \"{digest}\"\n[runbooks.long]\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[runbooks.long.steps]]\nid = \"s{i}\"\nuses = \"noop\"\n"
        ));
        if i > 0 {
            text.push_str(&format!(
                "with = {{ after = \"{{{{ steps.s{}.status }}}}\" }}\n",
                i - 1
            ));
        }
        text.push_str("rollback = { uses = \"noop\" }\n");
    }
    text
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let wasm =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release/noop.wasm");
    let digest = runcap::manifest::file_digest(&wasm)
        .unwrap_or_else(|e| panic!("{}: {e}; run ./dev plugins", wasm.display()));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runcap.toml");
    let wasm = wasm.display().to_string();

    println!("steps    parse µs/step   locate µs/step");
    let mut per_step = Vec::new();
    for n in [1_250, 2_500, 5_000, 10_000] {
        let text = manifest(&wasm, &digest, n);
        let parse = best_of(3, || {
            let source = SourceFile::new(path.clone(), text.clone());
            runcap::manifest::parse(source).expect("the generated manifest is valid");
        });
        let keys: Vec<KeyPath> = (0..n)
            .map(|i| {
                KeyPath::root()
                    .key("runbooks")
                    .key("long")
                    .key("steps")
                    .index(i)
                    .key("uses")
            })
            .collect();
        let locate = best_of(3, || {
            let source = SourceFile::new(path.clone(), text.clone());
            for k in &keys {
                assert!(source.span_of(k).is_some());
            }
        });
        let (p, l) = (
            parse.as_secs_f64() * 1e6 / n as f64,
            locate.as_secs_f64() * 1e6 / n as f64,
        );
        println!("{n:>6}   {p:>12.2}   {l:>14.2}");
        per_step.push((p, l));
    }
    let (first, last) = (per_step[0], per_step[per_step.len() - 1]);
    println!(
        "per-step cost at 8x the steps, against the baseline: parse {:.2}x, locate {:.2}x (linear = about 1x)",
        last.0 / first.0,
        last.1 / first.1
    );
}
