//! The demo service the README's quickstart probes: `/health`, `/json`, `/slow`,
//! `/unhealthy`, `/redirect?to=`, `/flip`, and `POST /admin/down|up`.

use std::sync::Arc;

use clap::Parser;
use runcap_e2e::demo_service::{ServiceState, serve};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Start with /health answering 503.
    #[arg(long)]
    down: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let state = Arc::new(ServiceState::default());
    state
        .down
        .store(args.down, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "demo service listening on http://{}",
        listener.local_addr()?
    );
    serve(listener, state, None).await;
    Ok(())
}
