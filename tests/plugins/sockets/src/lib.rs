//! A plugin that tries to open a raw TCP socket, which imports `wasi:sockets`:
//! runcap must refuse to load it at all.

use runcap_sdk::{ActionError, Context, Outcome};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Params {
    addr: String,
}

fn run(_ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    match std::net::TcpStream::connect(&p.addr) {
        Ok(_) => Ok(Outcome::ok("connected around the http grant")),
        Err(e) => Err(ActionError::Failed(e.to_string())),
    }
}

runcap_sdk::plugin!(name: "sockets", description: "Opens a raw socket.", run: run);
