//! `runcap serve`: starts the server (see [`crate::serve`]) and stops it cleanly on
//! SIGTERM or Ctrl-C.

use std::io::Write;
use std::time::Duration;

use crate::cli::{EnvArgs, StateArgs};
use crate::serve;

pub async fn run(args: &EnvArgs, state: &StateArgs, grace: Duration) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    // What a runcap that died left behind is dealt with before anything runs.
    let (store, _, runtime, resources) = match super::for_runs(&env, args, state).await {
        Ok(set) => set,
        Err(code) => return code,
    };
    let listen = env.serve.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e}\n  = help: set another address with `[serve] listen = \"127.0.0.1:PORT\"` in {}",
                env.file.display()
            );
            return 2;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let server = serve::build(
        env,
        store,
        runtime,
        resources,
        super::state_dir(args, state),
    )
    .await;
    let schedules = serve::scheduler::start(&server);
    let app = serve::api::router(server.clone());
    let closing = server.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { closing.closed().await })
            .await
    });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "serving environment {} on http://{addr} ({} runbooks, {} scheduled): status page /, metrics /metrics, API /api/v1",
            server.env.name,
            server.env.runbooks.len(),
            schedules.len()
        );
        let _ = out.flush();
    }
    super::run::wait_for_signal().await;
    eprintln!(
        "stopping: no new runs; runs under way have {} to finish (a second signal cuts rollbacks short)",
        humantime::format_duration(grace)
    );
    let second = server.clone();
    let abort = tokio::spawn(async move {
        super::run::wait_for_signal().await;
        eprintln!("stopping now: rollbacks not done stay pending for the next start");
        second.abort();
    });
    server.shut_down(grace).await;
    abort.abort();
    for s in schedules {
        let _ = s.await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("error: the HTTP server failed: {e}"),
        Err(e) => eprintln!("error: the HTTP server task failed: {e}"),
    }
    eprintln!("stopped: nothing is running");
    0
}
