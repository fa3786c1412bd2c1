//! A plugin that misbehaves on request, to prove the host contains it.
//! Each `mode` tries one thing a broken or malicious plugin might do.

use runcap_sdk::{ActionError, Context, HttpRequest, Outcome};

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// What to try: `fetch`, `loop`, `memory-bomb`, `huge-output`, `stdout-flood`,
    /// `log-flood`, `panic`, `stack-overflow`, `exit`, `bad-details`.
    mode: String,
    /// URL for `fetch`.
    #[serde(default)]
    url: String,
}

fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    match p.mode.as_str() {
        "fetch" => {
            let r = ctx.http(&HttpRequest::get(&p.url).follow_redirects(3))?;
            Ok(Outcome::ok(format!("fetched {} → {}", p.url, r.status)))
        }
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 8 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "huge-output" => Ok(Outcome::ok("x".repeat(8 << 20))),
        "stdout-flood" => {
            let line = "y".repeat(1023);
            for _ in 0..20_000 {
                println!("{line}");
            }
            Ok(Outcome::ok("flooded stdout"))
        }
        "log-flood" => {
            for i in 0..100_000 {
                ctx.info(&format!("line {i} {}", "z".repeat(100)));
            }
            Ok(Outcome::ok("flooded the log"))
        }
        "panic" => panic!("hostile plugin panics on purpose"),
        "stack-overflow" => Ok(Outcome::ok(format!("{}", recurse(0)))),
        "exit" => std::process::exit(3),
        _ => Err(ActionError::InvalidParams(format!(
            "unknown mode `{}`",
            p.mode
        ))),
    }
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[3] + 1) + buf[7]
}

runcap_sdk::plugin!(name: "hostile", description: "Misbehaves on purpose.", run: run);
