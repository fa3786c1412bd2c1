//! The smallest plugin: returns ok at once. Measures the host's per-action overhead.
use runcap_sdk::{ActionError, Context, Outcome};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Params {}

fn run(_ctx: &Context, _params: Params) -> Result<Outcome, ActionError> {
    Ok(Outcome::ok("nothing to do"))
}

runcap_sdk::plugin!(name: "noop", description: "Does nothing, quickly.", run: run);
