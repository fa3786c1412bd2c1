//! `runcap serve`: starts the server (see [`crate::serve`]), re-reads the manifest on
//! SIGHUP or `POST /api/v1/reload`, and stops cleanly on SIGTERM or Ctrl-C.
//!
//! A reload checks the new manifest fully (it parses, validates, and every plugin
//! loads) before anything changes; on a problem the old environment keeps serving and
//! the problem is logged with its file and line. On success the new server takes the
//! HTTP routes and the schedules, and the old one retires: it starts nothing more, and
//! its runs under way finish as they would have.

use std::io::Write;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::cli::{EnvArgs, StateArgs};
use crate::serve::{self, ReloadError, ReloadRequest, Server};
use crate::store::Store;

/// The server that takes new work, the ones it replaced, and the routes in use.
struct Servers {
    current: Arc<Server>,
    retired: Vec<Arc<Server>>,
    schedules: Vec<tokio::task::JoinHandle<()>>,
    routes: Arc<RwLock<axum::Router>>,
}

/// Loads, checks and builds a server for the manifest as it is now.
async fn load(
    args: &EnvArgs,
    state: &StateArgs,
    store: &Arc<Store>,
    reload: &mpsc::Sender<ReloadRequest>,
) -> Result<Arc<Server>, ReloadError> {
    let env = crate::manifest::load(&args.env).map_err(ReloadError::Manifest)?;
    let runtime = super::runtime(super::Workload::Server).map_err(|_| ReloadError::Engine)?;
    let resources = super::resources(&env, args, state, Some(store.clone()))
        .map_err(|_| ReloadError::Redaction)?;
    serve::build(
        env,
        store.clone(),
        runtime,
        resources,
        super::state_dir(args, state),
        reload.clone(),
    )
    .await
    .map_err(ReloadError::Plugins)
}

impl Servers {
    /// Swaps in a freshly loaded server, or keeps the current one and says why not.
    async fn reload(
        &mut self,
        args: &EnvArgs,
        state: &StateArgs,
        reload: &mpsc::Sender<ReloadRequest>,
    ) -> Result<String, ReloadError> {
        let next = match load(args, state, &self.current.store, reload).await {
            Ok(s) => {
                if let Some(c) = self.current.fleet() {
                    s.control(c.clone());
                }
                s
            }
            Err(problems) => {
                tracing::error!("reload refused; still serving the previous manifest:\n{problems}");
                eprintln!("reload refused; still serving the previous manifest:\n{problems}");
                return Err(problems);
            }
        };
        let old = std::mem::replace(&mut self.current, next);
        old.retire();
        for s in self.schedules.drain(..) {
            let _ = s.await;
        }
        self.schedules = serve::scheduler::start(&self.current);
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) =
            serve::api::router(self.current.clone());
        self.retired.push(old);
        let said = format!(
            "reloaded {}: {} runbooks, {} scheduled",
            args.env.display(),
            self.current.env.runbooks.len(),
            scheduled(&self.current)
        );
        tracing::info!("{said}");
        eprintln!("{said}");
        Ok(said)
    }
}

pub async fn run(args: &EnvArgs, state: &StateArgs, grace: Duration) -> u8 {
    let engine = super::EngineBuild::start(super::Workload::Server);
    let store = super::StoreOpen::start(args, state);
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    // What a runcap that died left behind is dealt with before anything runs.
    let (store, _, runtime, resources) =
        match super::for_runs(&env, args, state, engine, store).await {
            Ok(set) => set,
            Err(code) => return code,
        };
    let controller = match &env.serve.fleet {
        Some(fleet) => match start_controller(fleet, &resources).await {
            Ok(c) => {
                c.schedule(env.serve.dispatch.clone());
                Some(c)
            }
            Err(e) => {
                eprintln!("error: the fleet controller cannot start: {e}");
                return 2;
            }
        },
        None => None,
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
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let server = match serve::build(
        env,
        store,
        runtime,
        resources,
        super::state_dir(args, state),
        reload_tx.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            eprintln!(
                "  = help: `runcap check --env {}` shows every problem",
                args.env.display()
            );
            return 2;
        }
    };
    if let Some(c) = &controller {
        server.control(c.clone());
    }
    let routes = Arc::new(RwLock::new(serve::api::router(server.clone())));
    let mut servers = Servers {
        schedules: serve::scheduler::start(&server),
        current: server,
        retired: Vec::new(),
        routes: routes.clone(),
    };
    // Every request goes to the routes of the server in use at that moment.
    let app = axum::Router::new().fallback_service(tower::service_fn(
        move |req: axum::extract::Request| {
            let r = routes.read().unwrap_or_else(|p| p.into_inner()).clone();
            async move { r.oneshot(req).await }
        },
    ));
    let (stop_http, mut http_stopped) = tokio::sync::watch::channel(false);
    let tls = servers.current.env.serve.tls.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http = tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stopped.wait_for(|s| *s).await;
        };
        match tls {
            Some(config) => {
                serve::tls::serve(listener, config, app, stopped).await;
                Ok(())
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
    });
    {
        let s = &servers.current;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "serving environment {} on {scheme}://{addr} ({} runbooks, {} scheduled): status page /, metrics /metrics, API /api/v1",
            s.env.name,
            s.env.runbooks.len(),
            scheduled(&servers.current)
        );
        if let Some(c) = &controller {
            let _ = writeln!(
                out,
                "controlling the fleet of {} ({} agents, {} scheduled dispatches): API /api/v1/fleet",
                c.fleet.file.display(),
                c.fleet.agents.len(),
                s.env.serve.dispatch.len()
            );
        }
        let _ = out.flush();
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: SIGHUP cannot reload ({e}); POST /api/v1/reload still does");
            None
        }
    };
    loop {
        tokio::select! {
            _ = super::run::wait_for_signal() => break,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                let _ = servers.reload(args, state, &reload_tx).await;
            }
            Some(reply) = reload_rx.recv() => {
                let said = servers.reload(args, state, &reload_tx).await;
                let _ = reply.send(said);
            }
        }
    }
    eprintln!(
        "stopping: no new runs; runs under way have {} to finish (a second signal cuts rollbacks short)",
        humantime::format_duration(grace)
    );
    let all: Vec<Arc<Server>> = std::iter::once(servers.current.clone())
        .chain(servers.retired.iter().cloned())
        .collect();
    let second = all.clone();
    let abort = tokio::spawn(async move {
        super::run::wait_for_signal().await;
        eprintln!("stopping now: rollbacks not done stay pending for the next start");
        for s in &second {
            s.abort();
        }
    });
    let _ = stop_http.send(true);
    // Every server drains at once, each within the same grace period.
    let draining: Vec<_> = all
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.shut_down(grace).await }))
        .collect();
    for d in draining {
        let _ = d.await;
    }
    abort.abort();
    for s in servers.schedules {
        let _ = s.await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("error: the HTTP server failed: {e}"),
        Err(e) => eprintln!("error: the HTTP server task failed: {e}"),
    }
    if let Some(c) = &controller {
        c.stop();
    }
    eprintln!("stopped: nothing is running");
    0
}

/// Starts the fleet controller with the passwords this manifest's secrets hold.
async fn start_controller(
    fleet: &crate::fleet::config::Fleet,
    resources: &crate::caps::Resources,
) -> Result<Arc<crate::fleet::controller::Controller>, crate::fleet::controller::ControllerError> {
    use crate::fleet::controller::ControllerError;
    let secret = |name: Option<&String>| -> Result<Option<String>, ControllerError> {
        name.map(|n| {
            resources
                .secrets
                .value(n)
                .map(|v| v.trim().to_string())
                .map_err(|e| ControllerError::Secret(n.clone(), e))
        })
        .transpose()
    };
    let nats = secret(fleet.nats.password_secret.as_ref())?;
    let store = secret(
        fleet
            .store
            .as_ref()
            .and_then(|s| s.password_secret.as_ref()),
    )?;
    crate::fleet::controller::Controller::start(fleet.clone(), nats, store).await
}

/// How many of the server's runbooks run on a schedule.
fn scheduled(server: &Server) -> usize {
    server
        .env
        .runbooks
        .values()
        .filter(|rb| rb.schedule.is_some())
        .count()
}
