//! The demo service the README's quickstart probes: `/health`, `/json`, `/slow`,
//! `/unhealthy`, `/redirect?to=`, `/flip`, `/data` and `/data/raw` (with `--data`), and
//! `POST /admin/down|up`.

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
    /// Also serve HTTPS here (needs --tls-cert and --tls-key).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<String>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM (PKCS#8) private key for --tls-listen.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
    /// A JSON file that GET /data checks, and GET /data/raw serves, on every request.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let state = Arc::new(ServiceState::default());
    state
        .down
        .store(args.down, std::sync::atomic::Ordering::Relaxed);
    if let Some(d) = args.data {
        let _ = state.data_file.set(d);
    }
    if let (Some(addr), Some(cert), Some(key)) = (&args.tls_listen, &args.tls_cert, &args.tls_key) {
        let acceptor = runcap_e2e::demo_service::acceptor_from_pem(cert, key)?;
        let tls = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("demo service listening on https://{}", tls.local_addr()?);
        tokio::spawn(serve(tls, state.clone(), Some(acceptor)));
    }
    eprintln!(
        "demo service listening on http://{}",
        listener.local_addr()?
    );
    serve(listener, state, None).await;
    Ok(())
}
