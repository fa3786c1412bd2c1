//! A plugin that misbehaves on request, to prove the host contains it.
//! Each `mode` tries one thing a broken or malicious plugin might do.

use runcap_sdk::{ActionError, Context, HttpRequest, Outcome};

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// What to try: `fetch`, `loop`, `memory-bomb`, `huge-output`, `stdout-flood`,
    /// `log-flood`, `panic`, `stack-overflow`, `exit`, `bad-details`, `fs-read`,
    /// `fs-write`, `files-read`, `files-write` (the same through `runcap:plugin/fs`),
    /// `leak-pii`, `leave` (copies `secret` all over its stack, heap and statics), `find`
    /// (searches its whole memory for what `leave` left), and `names`, which reports the
    /// run id, environment, runbook and step the host names it with.
    mode: String,
    /// What `leave` leaves; `find` searches for it with every byte XOR 0xA5, given in hex
    /// (so the plain bytes are nowhere in its own memory unless left there).
    #[serde(default)]
    secret: String,
    /// URL for `fetch`.
    #[serde(default)]
    url: String,
    /// The path `fs-read` and `files-read` read or `fs-write` and `files-write` write, as
    /// the plugin sees it.
    #[serde(default)]
    path: String,
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
        "fs-read" => {
            let text = std::fs::read_to_string(&p.path)
                .map_err(|e| ActionError::Failed(format!("cannot read {}: {e}", p.path)))?;
            Ok(
                Outcome::ok(format!("read {} bytes from {}", text.len(), p.path))
                    .detail("content", text),
            )
        }
        "files-read" => {
            let mut text = String::new();
            runcap_sdk::FileReader::open(&p.path)
                .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text))
                .map_err(|e| ActionError::Failed(format!("cannot read {}: {e}", p.path)))?;
            Ok(
                Outcome::ok(format!("read {} bytes from {}", text.len(), p.path))
                    .detail("content", text),
            )
        }
        "files-write" => {
            runcap_sdk::FileWriter::create(&p.path)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, b"written by the hostile plugin\n")?;
                    f.finish()
                })
                .map_err(|e| ActionError::Failed(format!("cannot write {}: {e}", p.path)))?;
            Ok(Outcome::ok(format!("wrote {}", p.path)))
        }
        "fs-write" => {
            std::fs::write(&p.path, "written by the hostile plugin\n")
                .map_err(|e| ActionError::Failed(format!("cannot write {}: {e}", p.path)))?;
            Ok(Outcome::ok(format!("wrote {}", p.path)))
        }
        "leak-pii" => {
            // Tries every way out for personal data and a credential, keys included.
            let pii = "mail jane.roe@example.com ssn 219-09-9999 card 4111 1111 1111 1111 \
                       call +1 415 555 2671 key sk-live4f3kR9x2Lq8mW7vT1zY6pN0b";
            ctx.log(
                runcap_sdk::Level::Warn,
                &format!("leaking {pii}"),
                &[("jane.roe@example.com", pii)],
            );
            let _ = ctx.http(&HttpRequest::get(
                "http://127.0.0.1:9/lookup?email=jane.roe@example.com&token=tok_9f8e7d6c5b4a",
            ));
            println!("stdout {pii}");
            eprintln!("stderr {pii}");
            Ok(Outcome::warn(format!("leaked {pii}"))
                .detail("pii", pii)
                .detail("jane.roe@example.com", "as a key")
                .metric("jane.roe@example.com", 1.0))
        }
        "leave" => {
            leave(p.secret.as_bytes());
            Ok(Outcome::ok("left the secret in memory"))
        }
        "find" => {
            let masked = (0..p.secret.len() / 2)
                .map(|i| u8::from_str_radix(&p.secret[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| ActionError::InvalidParams(format!("secret is not hex: {e}")))?;
            let at = find_masked(&masked);
            Ok(
                Outcome::ok(format!("searched {} KiB", memory_bytes() >> 10))
                    .detail("found_at", at.map(|a| a as u64)),
            )
        }
        "names" => Ok(Outcome::ok("named")
            .detail("run_id", ctx.run_id())
            .detail("environment", ctx.environment())
            .detail("runbook", ctx.runbook())
            .detail("step", ctx.step())),
        "panic" => panic!("hostile plugin panics on purpose"),
        "stack-overflow" => Ok(Outcome::ok(format!("{}", recurse(0)))),
        "exit" => std::process::exit(3),
        _ => Err(ActionError::InvalidParams(format!(
            "unknown mode `{}`",
            p.mode
        ))),
    }
}

/// Bytes left in a static by `leave`.
static mut LEFT: [u8; 4096] = [0; 4096];

/// Copies `secret` over a 32 KiB stack buffer, 256 KiB of heap that is never freed and a
/// static buffer.
fn leave(secret: &[u8]) {
    if secret.is_empty() {
        return;
    }
    let fill = |buf: &mut [u8]| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = secret[i % secret.len()];
        }
    };
    let mut stack = [0u8; 32 << 10];
    fill(&mut stack);
    std::hint::black_box(&stack);
    let mut heap = vec![0u8; 256 << 10];
    fill(&mut heap);
    std::mem::forget(std::hint::black_box(heap));
    // SAFETY: one thread; nothing else refers to the buffer.
    unsafe { fill(&mut *std::ptr::addr_of_mut!(LEFT)) };
}

/// The size of this instance's linear memory.
fn memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) * 65536;
    #[cfg(not(target_arch = "wasm32"))]
    return 0;
}

/// Where in linear memory the bytes of `masked` (each XOR 0xA5) are, unmasked, if anywhere.
fn find_masked(masked: &[u8]) -> Option<usize> {
    if masked.is_empty() {
        return None;
    }
    // From address 8: a null pointer may not be read, and nothing is kept below 8.
    (8..=memory_bytes().saturating_sub(masked.len())).find(|&at| {
        masked.iter().enumerate().all(|(i, m)| {
            // SAFETY: `at + i` is within linear memory; any byte of it may be read.
            let b = unsafe { std::ptr::read_volatile((at + i) as *const u8) };
            b ^ 0xA5 == *m
        })
    })
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[3] + 1) + buf[7]
}

runcap_sdk::plugin!(name: "hostile", description: "Misbehaves on purpose.", run: run);
