//! The controller's fleet routes, beside `runcap serve`'s own API and under the same
//! tokens and scopes:
//!
//! | method and path | scope | returns |
//! |---|---|---|
//! | `GET /api/v1/fleet/agents` | read | every agent: up, last heartbeat, version, lock digest, drift |
//! | `POST /api/v1/fleet/runs` `{"runbook", "host" \| "group" (+ "one": true) \| "all": true, "dry_run", "params"}` | run or run:RUNBOOK | `202 {"runs": [{"host", "run_id"}]}` |
//! | `GET /api/v1/fleet/runs?host=&runbook=&limit=` | read | recent runs across hosts, newest first |
//! | `GET /api/v1/fleet/runs/ID` | read | `{"host", "job", "run", "retries"}`: the job's state and everything the agent reported |
//! | `GET /api/v1/fleet/audit` | read | each host's audit chain against its signed checkpoints |
//! | `GET /api/v1/fleet/caps` | read | each agent's capability report and lock state |
//! | `GET /api/v1/fleet/incidents?host=&all=true` | read | incidents across hosts (or of one), open ones unless `all`, each with its host and timeline |
//! | `POST /api/v1/fleet/incidents/HOST/ID/ack` or `/resolve` `{"note": "…"}` | run | the agent acknowledges or resolves its incident, recorded and audited there |
//! | `GET /api/v1/fleet/caps/diff?from=HOST&to=HOST` | read | what `to` may do that `from` may not, and the reverse: `{"from", "to", "changes": [{"key", "kind", "what", "widens"}], "widened"}` |

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::config::Target;
use super::controller::{ControllerError, DispatchRequest};
use crate::serve::Server;
use crate::serve::api::{
    IncidentsQuery, Need, RunsQuery, authorize, error, list_incidents, list_runs, redacted_json,
    store_error,
};

/// The fleet routes (merged into the server's router when it controls a fleet).
pub fn routes() -> axum::Router<Arc<Server>> {
    axum::Router::new()
        .route("/api/v1/fleet/agents", get(agents))
        .route("/api/v1/fleet/runs", get(runs).post(dispatch))
        .route("/api/v1/fleet/runs/{id}", get(run))
        .route("/api/v1/fleet/audit", get(audit))
        .route("/api/v1/fleet/caps", get(caps))
        .route("/api/v1/fleet/caps/diff", get(caps_diff))
        .route("/api/v1/fleet/incidents", get(incidents))
        .route(
            "/api/v1/fleet/incidents/{host}/{id}/{action}",
            axum::routing::post(incident_action),
        )
}

macro_rules! controller {
    ($s:expr, $headers:expr, $need:expr, $what:expr) => {{
        if let Err(r) = authorize(&$s, &$headers, $need, $what) {
            return r.into_response();
        }
        match $s.fleet() {
            Some(c) => c.clone(),
            None => return error(StatusCode::NOT_FOUND, "this server controls no fleet"),
        }
    }};
}

async fn agents(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/agents");
    match c.status().await {
        Ok(a) => redacted_json(&s, &a),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchBody {
    runbook: String,
    host: Option<String>,
    group: Option<String>,
    #[serde(default)]
    all: bool,
    /// With `group`: one agent of it, not every one.
    #[serde(default)]
    one: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    params: std::collections::BTreeMap<String, serde_json::Value>,
}

async fn dispatch(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: DispatchBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not {{\"runbook\": NAME, \"group\": NAME (or \"host\", or \"all\": true), \"dry_run\": BOOL, \"params\": {{…}}}}: {e}"
                ),
            );
        }
    };
    let c = controller!(
        s,
        headers,
        Need::Run(&req.runbook),
        "POST /api/v1/fleet/runs"
    );
    let target = match Target::from_parts(req.host, req.group, req.all, req.one) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let vars = crate::serve::api::param_vars(&req.params);
    let asked = DispatchRequest {
        runbook: &req.runbook,
        target: &target,
        vars: &vars,
        dry_run: req.dry_run,
    };
    match c.dispatch(asked).await {
        Ok(runs) => (StatusCode::ACCEPTED, Json(json!({ "runs": runs }))).into_response(),
        Err(e @ ControllerError::NoAgents { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn runs(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/runs");
    list_runs(&s, &*c.store, &q).await
}

async fn run(State(s): State<Arc<Server>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/runs/ID");
    match c.store.fleet_run(&id).await {
        Ok(Some(doc)) => redacted_json(&s, &doc),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no fleet run `{id}`")),
        Err(e) => store_error(e),
    }
}

async fn audit(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/audit");
    match c.audit().await {
        Ok(a) => redacted_json(&s, &a),
        Err(e) => store_error(e),
    }
}

async fn caps(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/caps");
    match c.store.agents().await {
        Ok(agents) => {
            let doc: Vec<_> = agents
                .into_iter()
                .map(|a| json!({"host": a.host, "environment": a.environment, "version": a.version, "lock": a.lock, "plugins": a.caps}))
                .collect();
            redacted_json(&s, &doc)
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /api/v1/fleet/caps/diff?from=A&to=B`: every difference between what two hosts'
/// manifests grant, as `runcap caps --diff` shows two manifests'.
async fn caps_diff(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/caps/diff");
    let agents = match c.store.agents().await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let snapshot = |host: &str| -> Result<crate::lockfile::EnvLock, (StatusCode, String)> {
        let Some(a) = agents.iter().find(|a| a.host == host) else {
            let known: Vec<&str> = agents.iter().map(|a| a.host.as_str()).collect();
            return Err((
                StatusCode::NOT_FOUND,
                format!(
                    "no agent `{host}` has said hello (agents: {})",
                    known.join(", ")
                ),
            ));
        };
        serde_json::from_value::<super::protocol::LockState>(a.lock.clone())
            .ok()
            .and_then(|l| l.current.map(|c| *c))
            .ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!(
                        "agent `{host}` (runcap {}) does not publish its grants; upgrade it",
                        a.version
                    ),
                )
            })
    };
    let (from, to) = match (snapshot(&q.from), snapshot(&q.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err((status, why)), _) | (_, Err((status, why))) => return error(status, why),
    };
    let changes: Vec<_> = crate::lockfile::diff(&from, &to)
        .into_iter()
        .map(|c| json!({"key": c.path.to_string(), "kind": c.kind, "what": c.what, "widens": c.widens()}))
        .collect();
    let widened = changes.iter().any(|c| c["widens"] == json!(true));
    redacted_json(
        &s,
        &json!({"from": q.from, "to": q.to, "changes": changes, "widened": widened}),
    )
}

/// `GET /api/v1/fleet/incidents`: the incidents every agent reported.
async fn incidents(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<IncidentsQuery>,
) -> Response {
    let c = controller!(s, headers, Need::Read, "GET /api/v1/fleet/incidents");
    list_incidents(&s, &*c.store, &q).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: String,
}

/// `POST /api/v1/fleet/incidents/HOST/ID/ack|resolve`: an operator acts on an agent's
/// incident from the controller.
async fn incident_action(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Path((host, id, action)): Path<(String, i64, String)>,
    body: axum::body::Bytes,
) -> Response {
    let what = format!("POST /api/v1/fleet/incidents/{host}/{id}/{action}");
    let c = controller!(s, headers, Need::Reload, &what);
    let resolve = match action.as_str() {
        "ack" => false,
        "resolve" => true,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("`{other}` is not an incident action; use ack or resolve"),
            );
        }
    };
    let note = if body.is_empty() {
        NoteBody::default()
    } else {
        match serde_json::from_slice::<NoteBody>(&body) {
            Ok(n) => n,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"note\": \"…\"}}: {e}"),
                );
            }
        }
    };
    match c.incident_action(&host, id, resolve, &note.note).await {
        Ok(runbook) => {
            Json(json!({ "host": host, "id": id, "runbook": runbook, "action": action }))
                .into_response()
        }
        Err(e @ ControllerError::NoAgents { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}
