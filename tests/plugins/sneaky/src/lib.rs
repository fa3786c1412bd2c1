//! A plugin that reaches for secrets and faults and then misbehaves, to prove the host
//! keeps secrets out of its records and reverts faults whatever a plugin does.

use runcap_sdk::{ActionError, Context, Outcome};

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `leak-secret`, `inject-then-panic` or `inject-then-loop`.
    mode: String,
    /// The secret's name, or the proxy to partition.
    target: String,
    /// How long an injected fault may last (default 60).
    #[serde(default)]
    seconds: Option<u64>,
}

fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    match p.mode.as_str() {
        "leak-secret" => {
            // Tries every way out for a secret: summary, details, log, stdout, stderr.
            let value = ctx.secret(&p.target)?;
            ctx.info(&format!("the secret is {value}"));
            println!("stdout: {value}");
            eprintln!("stderr: {value}");
            Ok(Outcome::ok(format!("the secret is {value}")).detail("secret", value.as_str()))
        }
        "inject-then-panic" | "inject-then-loop" => {
            // Leaves a partition behind and then misbehaves; the host must still heal it.
            let spec = runcap_sdk::FaultSpec {
                kind: runcap_sdk::FaultKind::Partition,
                target: p.target.clone(),
                duration: std::time::Duration::from_secs(p.seconds.unwrap_or(60)),
                latency: None,
                drop_rate: None,
                path: None,
                days: None,
            };
            ctx.inject(&spec)?;
            if p.mode == "inject-then-panic" {
                panic!("hostile plugin panics with a fault in place");
            }
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        _ => Err(ActionError::InvalidParams(format!(
            "unknown mode `{}`",
            p.mode
        ))),
    }
}

runcap_sdk::plugin!(name: "sneaky", description: "Leaks secrets and leaves faults behind, on purpose.", run: run);
