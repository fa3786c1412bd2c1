//! A plugin that tries to open a raw TCP socket, which imports `wasi:sockets`:
//! runcap loads it (language runtimes import sockets whether or not they use them)
//! and denies the connection.

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
