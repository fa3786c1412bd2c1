//! The HTTP side of `runcap serve`, JSON under `/api/v1`:
//!
//! | method and path | scope | returns |
//! |---|---|---|
//! | `GET /api/v1/runbooks` | read | each runbook: description, schedule, params, last run |
//! | `POST /api/v1/runs` `{"runbook", "dry_run", "params": {"NAME": "VALUE"}}` | run or run:RUNBOOK | `202 {"run_id"}` |
//! | `GET /api/v1/runs?host=&runbook=&limit=` | read | recent runs, newest first, each with this host's name (as a controller's `GET /api/v1/fleet/runs` names its agents') |
//! | `GET /api/v1/runs/ID` | read | one run as `runcap show --json` prints it, with its host (`"status": "queued"` until it starts) |
//! | `POST /api/v1/reload` | run | re-reads and checks the manifest; 422 with the problems (the old one keeps serving) |
//! | `GET /api/v1/incidents?host=&all=` | read | open incidents (every one with `all=true`), each with its host |
//! | `POST /api/v1/incidents/ID/ack` or `/resolve` `{"note": "…"}` | run | acknowledges or resolves an open incident (resolving releases a flapping trigger) |
//! | `GET /api/v1/faults` | read | the fault journal |
//! | `POST /api/v1/triggers/NAME` | the trigger's token or HMAC | `202` with the runs started (see [`super::triggers`]) |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /` | none | the status page |
//!
//! With `[serve] tokens`, every `/api/v1` call needs `Authorization: Bearer TOKEN`
//! (compared in constant time against each token's secret); a missing or unknown token
//! is 401, a token without the scope 403, and both are audited. Without tokens the API
//! is read-only. Everything returned passes the environment's redaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::Scope;
use super::{Origin, Server, StartError};
use crate::store::history::{History, LocalHistory, RunFilter};

/// The routes, bound to a server.
pub fn router(server: Arc<Server>) -> axum::Router {
    let fleet = match server.fleet() {
        Some(_) => crate::fleet::api::routes(),
        None => axum::Router::new(),
    };
    axum::Router::new()
        .merge(fleet)
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/api/v1/runbooks", get(runbooks))
        .route("/api/v1/reload", axum::routing::post(reload))
        .route("/api/v1/runs", get(runs).post(start_run))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/incidents", get(incidents))
        .route(
            "/api/v1/incidents/{id}/{action}",
            axum::routing::post(incident_action),
        )
        .route("/api/v1/faults", get(faults))
        .route(
            "/api/v1/triggers/{name}",
            axum::routing::post(super::triggers::receive),
        )
        .route("/api/v1/{*rest}", get(not_found).post(not_found))
        .with_state(server)
}

/// What a call needs.
pub(crate) enum Need<'a> {
    Read,
    Run(&'a str),
    /// Re-reading the manifest, or acting on an incident: the `run` scope (any runbook).
    Reload,
}

/// A call refused for its token: 401 or 403 with the reason.
pub(crate) struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Checks the caller's token against what the call needs; failures are audited.
pub(crate) fn authorize(
    server: &Server,
    headers: &HeaderMap,
    need: Need<'_>,
    what: &str,
) -> Result<(), Refused> {
    let tokens = &server.env.serve.tokens;
    let deny = |status: StatusCode, reason: &str| {
        let payload = json!({ "call": what, "status": status.as_u16(), "reason": reason });
        if let Err(e) = server.store.audit("api.denied", "", what, &payload) {
            tracing::error!("could not audit a refused API call: {e}");
        }
        Refused(status, reason.to_string())
    };
    if tokens.is_empty() {
        return match need {
            Need::Read => Ok(()),
            Need::Run(_) | Need::Reload => Err(deny(
                StatusCode::FORBIDDEN,
                "no token may start runs: declare [serve] tokens with the \"run\" scope",
            )),
        };
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(deny(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer TOKEN`",
        ));
    };
    let given = Sha256::digest(given.as_bytes());
    // Every token is compared, whichever matches, in constant time.
    let mut matched: Option<&super::config::Token> = None;
    for t in tokens {
        let Some(value) = server.secret(&t.secret) else {
            continue;
        };
        let expected = Sha256::digest(value.trim().as_bytes());
        if bool::from(given.ct_eq(&expected)) {
            matched.get_or_insert(t);
        }
    }
    let Some(token) = matched else {
        return Err(deny(StatusCode::UNAUTHORIZED, "unknown token"));
    };
    let allowed = token.scopes.iter().any(|s| match (&need, s) {
        (Need::Read, Scope::Read) => true,
        (Need::Run(_) | Need::Reload, Scope::Run) => true,
        (Need::Run(rb), Scope::RunOne(x)) => x == rb,
        _ => false,
    });
    if allowed {
        Ok(())
    } else {
        let reason = match need {
            Need::Read => "this token lacks the \"read\" scope".to_string(),
            Need::Run(rb) => {
                format!("this token may not run `{rb}` (scope \"run\" or \"run:{rb}\")")
            }
            Need::Reload => "this needs the \"run\" scope".to_string(),
        };
        Err(deny(StatusCode::FORBIDDEN, &reason))
    }
}

pub(crate) fn redacted_json<T: serde::Serialize>(server: &Server, value: &T) -> Response {
    match server.redacted(value) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a stored record could not be redacted; nothing returned",
        ),
    }
}

/// A request's `"params"` as the `NAME=VALUE` arguments runs take (strings as they are,
/// other values as JSON).
pub(crate) fn param_vars(
    params: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Vec<String> {
    params
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(t) => format!("{k}={t}"),
            other => format!("{k}={other}"),
        })
        .collect()
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
}

async fn runbooks(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Read, "GET /api/v1/runbooks") {
        return r.into_response();
    }
    let mut out = Vec::new();
    for (name, rb) in &s.env.runbooks {
        let last = match s.store.history(Some(name), 1) {
            Ok(l) => l.into_iter().next(),
            Err(e) => return store_error(e),
        };
        out.push(json!({
            "name": name,
            "description": rb.description,
            "schedule": rb.schedule.as_ref().map(|s| s.text.clone()),
            "params": rb.params.iter().map(|(k, p)| (k.clone(), json!({"type": p.kind.to_string(), "default": p.default}))).collect::<serde_json::Map<_, _>>(),
            "last_run": last,
        }));
    }
    redacted_json(&s, &out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    runbook: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    params: std::collections::BTreeMap<String, serde_json::Value>,
}

async fn start_run(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: StartRun = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not {{\"runbook\": NAME, \"dry_run\": BOOL, \"params\": {{…}}}}: {e}"
                ),
            );
        }
    };
    if let Err(r) = authorize(&s, &headers, Need::Run(&req.runbook), "POST /api/v1/runs") {
        return r.into_response();
    }
    let vars = param_vars(&req.params);
    let run = super::RunRequest {
        runbook: &req.runbook,
        dry_run: req.dry_run,
        vars: &vars,
        origin: Origin::Api,
        skip_if_running: false,
        trigger: None,
        run_id: None,
        notify: None,
    };
    match s.start_run(run) {
        Ok(Some(id)) => (StatusCode::ACCEPTED, Json(json!({ "run_id": id }))).into_response(),
        Ok(None) => error(StatusCode::CONFLICT, "a run of this runbook is under way"),
        Err(e @ StartError::UnknownRunbook(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ StartError::Params(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ StartError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `?host=&runbook=&limit=` of a runs list, here and on the controller.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    host: Option<String>,
    runbook: Option<String>,
    limit: Option<usize>,
}

/// `?host=&all=` of an incidents list, here and on the controller.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncidentsQuery {
    host: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Answers a runs list from either store: newest first, each with its host.
pub(crate) async fn list_runs(s: &Server, history: &impl History, q: &RunsQuery) -> Response {
    let filter = RunFilter {
        host: q.host.as_deref(),
        runbook: q.runbook.as_deref(),
        limit: q.limit.unwrap_or(50).min(1000),
    };
    match history.runs(filter).await {
        Ok(rows) => redacted_json(s, &rows),
        Err(e) => store_error(e),
    }
}

/// Answers an incidents list from either store, each with its host.
pub(crate) async fn list_incidents(
    s: &Server,
    history: &impl History,
    q: &IncidentsQuery,
) -> Response {
    match history.incidents(q.host.as_deref(), q.all).await {
        Ok(list) => redacted_json(s, &list),
        Err(e) => store_error(e),
    }
}

async fn runs(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Read, "GET /api/v1/runs") {
        return r.into_response();
    }
    list_runs(&s, &LocalHistory::here(&s.store), &q).await
}

async fn run(State(s): State<Arc<Server>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Read, "GET /api/v1/runs/ID") {
        return r.into_response();
    }
    match LocalHistory::here(&s.store).run(&id).await {
        Ok(Some(detail)) => redacted_json(&s, &detail),
        Ok(None) => match s.accepted(&id) {
            // Accepted, waiting for a slot or its runbook's lock: not recorded yet.
            Some(runbook) => {
                Json(json!({ "id": id, "runbook": runbook, "status": "queued" })).into_response()
            }
            None => error(
                StatusCode::NOT_FOUND,
                format!("no single run matches `{id}`"),
            ),
        },
        Err(e) => store_error(e),
    }
}

async fn incidents(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<IncidentsQuery>,
) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Read, "GET /api/v1/incidents") {
        return r.into_response();
    }
    list_incidents(&s, &LocalHistory::here(&s.store), &q).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(default)]
    note: String,
}

async fn incident_action(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    body: axum::body::Bytes,
) -> Response {
    use crate::store::incidents::OperatorAction;
    if let Err(r) = authorize(&s, &headers, Need::Reload, "POST /api/v1/incidents/ID") {
        return r.into_response();
    }
    let action = match action.as_str() {
        "ack" => OperatorAction::Acknowledge,
        "resolve" => OperatorAction::Resolve,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("`{other}` is not an incident action: use ack or resolve"),
            );
        }
    };
    let note: Note = if body.is_empty() {
        Note::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(n) => n,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"note\": TEXT}}: {e}"),
                );
            }
        }
    };
    match s.store.incident_by_operator(id, action, &note.note) {
        Ok(Some(runbook)) => Json(json!({ "incident": id, "runbook": runbook })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no open incident #{id}")),
        Err(e) => store_error(e),
    }
}

async fn faults(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Read, "GET /api/v1/faults") {
        return r.into_response();
    }
    match s.store.faults(200) {
        Ok(f) => redacted_json(&s, &f),
        Err(e) => store_error(e),
    }
}

async fn reload(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers, Need::Reload, "POST /api/v1/reload") {
        return r.into_response();
    }
    match s.request_reload().await {
        Ok(said) => Json(json!({ "reloaded": true, "message": said })).into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "error": problems.to_string() })),
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such API path; see /api/v1/runbooks, /api/v1/runs",
    )
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    s.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn status_page(State(s): State<Arc<Server>>) -> Response {
    match super::status::render(&s) {
        Ok(html) => Html(html).into_response(),
        Err(e) => store_error(e),
    }
}
