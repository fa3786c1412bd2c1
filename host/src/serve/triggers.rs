//! Alerts that start runbooks: `POST /api/v1/triggers/NAME` with Prometheus
//! Alertmanager's webhook payload (version 4) or a plain JSON alert
//! (`{"labels": {…}, "annotations": {…}, "status": "firing"}`).
//!
//! Each firing alert whose labels match the trigger's `match` starts its runbook once;
//! templates read it as `trigger.labels.NAME`, `trigger.annotations.NAME`,
//! `trigger.status`, `trigger.fingerprint`, `trigger.name`. A resolved alert starts
//! nothing; an alert seen again (same fingerprint) within the trigger's `dedupe` window
//! starts nothing. The caller proves itself with the trigger's bearer token, or with an
//! HMAC-SHA256 signature of `TIMESTAMP.BODY` (`X-Runcap-Timestamp`,
//! `X-Runcap-Signature: sha256=HEX`) at most five minutes old and never used before.
//! Refusals are 401 and audited; a payload that is not an alert is 400 with the reason.
//!
//! The flap guard: once the runbook has run `flap.runs` times (default 3) within
//! `flap.within` (default 30m) and its alert still fires, further alerts start nothing,
//! an incident records it, and `flap.escalate` runs once; `runcap incidents resolve ID`
//! (or `POST /api/v1/incidents/ID/resolve`) lets the trigger start runs again.
//!
//! On a fleet controller a trigger with `host`, `group` or `all` sends its runbook to
//! those agents instead of running it here; `host = "{{ trigger.labels.instance }}"`
//! sends it where the alert comes from. Its flap guard counts the jobs any one of the
//! target's hosts was sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api::error;
use super::config::{Trigger, TriggerAuth};
use super::{Origin, RunRequest, Server};
use crate::fleet::config::Target;
use crate::fleet::controller::{Controller, DispatchRequest, Dispatched};

/// How old a signed request may be.
const MAX_AGE: Duration = Duration::from_secs(300);

/// What the server remembers between calls: alerts by trigger and fingerprint, and
/// signatures already used (until they would be too old anyway).
#[derive(Default)]
pub struct Seen {
    alerts: HashMap<(String, String), Instant>,
    signatures: HashMap<String, Instant>,
}

/// One alert of a payload.
struct Alert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: Value,
    fingerprint: String,
}

/// Why a trigger's payload is not an alert (answered with 400 and this message).
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("label `{key}` is {value}, not a string")]
    Label { key: String, value: Value },
    #[error("an alert needs `labels`, an object of strings")]
    NoLabels,
    #[error("status {0} is not \"firing\" or \"resolved\"")]
    Status(Value),
    #[error("Alertmanager webhook version {0} is not supported (version 4 is)")]
    Version(String),
    #[error("`alerts` is not a list")]
    AlertsNotList,
    #[error(
        "expected an Alertmanager webhook (version 4) or an alert like {{\"labels\": {{\"alertname\": \"…\"}}}}"
    )]
    NotAnAlert,
}

/// Why a caller was refused (answered with 401 and this message, and audited).
#[derive(Debug, thiserror::Error)]
enum AuthError {
    #[error("the trigger's token cannot be read")]
    NoToken,
    #[error("missing `Authorization: Bearer TOKEN`")]
    NoBearer,
    #[error("unknown token")]
    UnknownToken,
    #[error("the trigger's key cannot be read")]
    NoKey,
    #[error("missing `{0}`")]
    MissingHeader(&'static str),
    #[error("the timestamp is not Unix seconds")]
    Timestamp,
    #[error("the signature is more than 5 minutes old (or ahead)")]
    TooOld,
    #[error("the signature is not `sha256=HEX`")]
    SignatureShape,
    #[error("the trigger's key cannot be used")]
    UnusableKey,
    #[error("the signature does not match")]
    Mismatch,
    #[error("this signature was already used (a replay)")]
    Replay,
}

/// One alert of a payload, with the status of its group when it has none of its own.
fn alert_of(a: &Value, default_status: &str) -> Result<Alert, PayloadError> {
    let labels: BTreeMap<String, String> = match a.get("labels") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(PayloadError::Label {
                    key: k.clone(),
                    value: other.clone(),
                }),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(PayloadError::NoLabels),
    };
    let status = match a.get("status") {
        None => default_status.to_string(),
        Some(Value::String(s)) if s == "firing" || s == "resolved" => s.clone(),
        Some(other) => return Err(PayloadError::Status(other.clone())),
    };
    let fingerprint = match a.get("fingerprint").and_then(Value::as_str) {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => hex::encode(Sha256::digest(
            serde_json::to_vec(&labels).unwrap_or_default(),
        )),
    };
    Ok(Alert {
        status,
        labels,
        annotations: a.get("annotations").cloned().unwrap_or(json!({})),
        fingerprint,
    })
}

/// The alerts of a payload: an Alertmanager webhook (version 4) or a single alert.
fn alerts_of(body: &[u8]) -> Result<Vec<Alert>, PayloadError> {
    let v: Value = serde_json::from_slice(body)?;
    match v.get("alerts") {
        Some(Value::Array(list)) => {
            match v.get("version").and_then(Value::as_str) {
                Some("4") | None => {}
                Some(other) => return Err(PayloadError::Version(other.to_string())),
            }
            let group = v.get("status").and_then(Value::as_str).unwrap_or("firing");
            list.iter().map(|a| alert_of(a, group)).collect()
        }
        Some(_) => Err(PayloadError::AlertsNotList),
        None if v.get("labels").is_some() => Ok(vec![alert_of(&v, "firing")?]),
        None => Err(PayloadError::NotAnAlert),
    }
}

/// Checks the caller against the trigger's token or signature.
fn authenticate(
    server: &Server,
    t: &Trigger,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    match &t.auth {
        TriggerAuth::Bearer(secret) => check_bearer(server, secret, headers),
        TriggerAuth::Hmac(secret) => check_signature(server, secret, headers, body),
    }
}

/// `Authorization: Bearer TOKEN` against the trigger's token, compared in constant time.
fn check_bearer(server: &Server, secret: &str, headers: &HeaderMap) -> Result<(), AuthError> {
    let expected = server.secret(secret).ok_or(AuthError::NoToken)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AuthError::NoBearer)?;
    let (a, b) = (
        Sha256::digest(given.trim().as_bytes()),
        Sha256::digest(expected.trim().as_bytes()),
    );
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::UnknownToken)
    }
}

/// `x-runcap-signature: sha256=HEX`, an HMAC of `TIMESTAMP.BODY` with the trigger's key,
/// made within [`MAX_AGE`] and not seen before (a replay is refused).
fn check_signature(
    server: &Server,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    let key = server.secret(secret).ok_or(AuthError::NoKey)?;
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::MissingHeader(name))
    };
    let ts = header("x-runcap-timestamp")?;
    let sig = header("x-runcap-signature")?;
    let at: u64 = ts.parse().map_err(|_| AuthError::Timestamp)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now.abs_diff(at) > MAX_AGE.as_secs() {
        return Err(AuthError::TooOld);
    }
    let sig_bytes = sig
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(AuthError::SignatureShape)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.trim().as_bytes())
        .map_err(|_| AuthError::UnusableKey)?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig_bytes)
        .map_err(|_| AuthError::Mismatch)?;
    let mut seen = server.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.signatures.retain(|_, t| t.elapsed() < MAX_AGE * 2);
    if seen
        .signatures
        .insert(sig.to_string(), Instant::now())
        .is_some()
    {
        return Err(AuthError::Replay);
    }
    Ok(())
}

/// Whether the trigger's runbook is held because it flapped: already (an open incident
/// says so), or now (it ran `flap.runs` times within `flap.within` and the alert still
/// fires: an incident is opened and `flap.escalate` started once). The incident's id
/// when held.
async fn flap_guard(
    s: &Arc<Server>,
    t: &Trigger,
    fleet: Option<(&Controller, &Target, &[String])>,
    context: &Value,
) -> Result<Option<i64>, FlapError> {
    let env = &s.env.name;
    if let Some(id) = s.store.flapping(env, &t.runbook)? {
        return Ok(Some(id));
    }
    let window_start = crate::caps::now_ms() as i64 - t.flap.within.as_millis() as i64;
    let released = s.store.flap_released_at(env, &t.runbook)?.unwrap_or(0);
    let since = window_start.max(released);
    let recent = match fleet {
        None => s
            .store
            .history(Some(&t.runbook), t.flap.runs as usize)?
            .iter()
            .filter(|r| r.started_at >= since)
            .count(),
        Some((controller, target, hosts)) => {
            let sent = controller.store.jobs_since(&t.runbook, since).await?;
            match target {
                // Any one agent runs each: every job of the group's queue counts.
                Target::OneOf(group) => sent
                    .iter()
                    .filter(|j| j.queue.as_deref() == Some(group))
                    .map(|j| j.count as usize)
                    .sum(),
                _ => hosts
                    .iter()
                    .map(|h| {
                        sent.iter()
                            .filter(|j| j.host.as_deref() == Some(h))
                            .map(|j| j.count as usize)
                            .sum::<usize>()
                    })
                    .max()
                    .unwrap_or(0),
            }
        }
    };
    if recent < t.flap.runs as usize {
        return Ok(None);
    }
    let severity = s
        .env
        .runbooks
        .get(&t.runbook)
        .map(|rb| rb.incident.severity)
        .unwrap_or(crate::manifest::IncidentPolicy::default().severity);
    let message = format!(
        "`{}` ran {recent} times within {} and the alert still fires; automatic runs are held until this incident is resolved",
        t.runbook,
        humantime::format_duration(t.flap.within)
    );
    let id = s
        .store
        .incident_flapped(env, &t.runbook, severity, &message)?;
    tracing::warn!(runbook = %t.runbook, incident = id, "{message}");
    if let Some(escalate) = &t.flap.escalate {
        let mut ctx = context.clone();
        ctx["incident"] = json!(id);
        let run = RunRequest {
            runbook: escalate,
            dry_run: false,
            vars: &[],
            origin: Origin::Trigger,
            skip_if_running: false,
            trigger: Some(ctx),
            run_id: None,
            notify: None,
        };
        if let Err(e) = s.start_run(run) {
            tracing::error!(runbook = %escalate, "the flap escalation did not start: {e}");
        }
    }
    Ok(Some(id))
}

/// Why the flap guard could not decide: a store did not answer.
#[derive(Debug, thiserror::Error)]
enum FlapError {
    #[error("store: {0}")]
    Local(#[from] crate::store::StoreError),
    #[error("fleet store: {0}")]
    Fleet(#[from] crate::store::postgres::PgStoreError),
}

/// The agents a fleet trigger sends this alert's run to: its target, a host or group name
/// rendered against the alert. An error says why the alert cannot be sent.
fn fleet_hosts(
    controller: &Controller,
    target: &Target,
    context: &Value,
) -> Result<(Target, Vec<String>), String> {
    let render = |name: &str| -> Result<String, String> {
        let rendered =
            crate::runbook::template::render_params(&json!(name), &json!({ "trigger": context }))
                .map_err(|e| e.to_string())?;
        match rendered {
            Value::String(s) if !s.is_empty() => Ok(s),
            other => Err(format!("`{name}` gives {other}, not an agent's name")),
        }
    };
    let target = match target {
        Target::Host(h) => Target::Host(render(h)?),
        Target::Group(g) => Target::Group(render(g)?),
        Target::OneOf(g) => Target::OneOf(render(g)?),
        Target::All => Target::All,
    };
    let hosts = controller.fleet.members(&target);
    if hosts.is_empty() {
        return Err(format!(
            "{target} names no agent of {}",
            controller.fleet.file.display()
        ));
    }
    Ok((target, hosts))
}

/// The runbook's parameters for one alert, as `NAME=VALUE`: the trigger's `params`
/// rendered against the alert and checked against the runbook's declarations; the error
/// says which parameter and why.
fn run_params(s: &Server, t: &Trigger, context: &Value) -> Result<Vec<String>, String> {
    if t.params.is_empty() {
        return Ok(Vec::new());
    }
    let written = serde_json::to_value(&t.params).unwrap_or_default();
    let rendered =
        crate::runbook::template::render_params(&written, &json!({ "trigger": context }))
            .map_err(|e| e.to_string())?;
    let vars: Vec<String> = rendered
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v {
            Value::String(text) => format!("{k}={text}"),
            other => format!("{k}={other}"),
        })
        .collect();
    if let Some(rb) = s
        .env
        .runbooks
        .get(&t.runbook)
        .filter(|_| t.target.is_none())
    {
        crate::manifest::params::resolve_args(&rb.name, &rb.params, &vars)
            .map_err(|e| e.to_string())?;
    }
    Ok(vars)
}

/// What became of one alert a trigger received.
enum Taken {
    Resolved,
    Unmatched,
    /// The runbook's parameters refuse it: the fingerprint and why.
    Rejected(Value),
    Deduplicated,
    /// The flap guard holds its runbook, under this incident.
    Held(i64),
    Started(String),
    /// Sent to fleet agents: each host and its run id.
    Dispatched(Vec<Dispatched>),
}

/// The answer to a trigger's caller: what became of its alerts, counted.
#[derive(Default)]
struct Tally {
    started: Vec<String>,
    deduplicated: u32,
    resolved: u32,
    unmatched: u32,
    held: u32,
    incident: Option<i64>,
    rejected: Vec<Value>,
    dispatched: Vec<Dispatched>,
}

impl Tally {
    fn add(&mut self, taken: Taken) {
        match taken {
            Taken::Resolved => self.resolved += 1,
            Taken::Unmatched => self.unmatched += 1,
            Taken::Rejected(why) => self.rejected.push(why),
            Taken::Deduplicated => self.deduplicated += 1,
            Taken::Held(id) => {
                self.held += 1;
                self.incident = Some(id);
            }
            Taken::Started(id) => self.started.push(id),
            Taken::Dispatched(sent) => {
                self.started.extend(sent.iter().map(|d| d.run_id.clone()));
                self.dispatched.extend(sent);
            }
        }
    }
}

/// Handles one alert for trigger `name`: filters it, fills the runbook's parameters,
/// deduplicates, applies the flap guard and starts the run. An error ends the whole
/// request with that status.
async fn take_alert(
    s: &Arc<Server>,
    name: &str,
    t: &Trigger,
    alert: Alert,
) -> Result<Taken, (StatusCode, String)> {
    if alert.status == "resolved" {
        return Ok(Taken::Resolved);
    }
    if !t.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v)) {
        return Ok(Taken::Unmatched);
    }
    let context = json!({
        "name": name,
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "fingerprint": alert.fingerprint,
    });
    // An alert the runbook's parameters refuse starts nothing and is not remembered, so
    // the same alert, corrected, is not taken for a duplicate.
    let rejected = |reason: String| {
        Ok(Taken::Rejected(
            json!({ "fingerprint": alert.fingerprint, "reason": reason }),
        ))
    };
    let vars = match run_params(s, t, &context) {
        Ok(vars) => vars,
        Err(reason) => return rejected(reason),
    };
    let fleet = match &t.target {
        None => None,
        Some(target) => {
            let Some(controller) = s.fleet() else {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the fleet controller is not started yet".to_string(),
                ));
            };
            match fleet_hosts(controller, target, &context) {
                Ok((target, hosts)) => Some((controller.clone(), target, hosts)),
                Err(reason) => return rejected(reason),
            }
        }
    };
    {
        let mut seen = s.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.alerts.retain(|_, at| at.elapsed() < t.dedupe);
        let key = (name.to_string(), alert.fingerprint.clone());
        if seen.alerts.contains_key(&key) {
            return Ok(Taken::Deduplicated);
        }
        seen.alerts.insert(key, Instant::now());
    }
    let counted = fleet
        .as_ref()
        .map(|(c, target, hosts)| (&**c, target, hosts.as_slice()));
    match flap_guard(s, t, counted, &context).await {
        Ok(None) => {}
        Ok(Some(id)) => return Ok(Taken::Held(id)),
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
    if let Some((controller, target, _)) = fleet {
        let asked = DispatchRequest {
            runbook: &t.runbook,
            target: &target,
            vars: &vars,
            dry_run: false,
        };
        return match controller.dispatch(asked).await {
            Ok(sent) => Ok(Taken::Dispatched(sent)),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        };
    }
    let run = RunRequest {
        runbook: &t.runbook,
        dry_run: false,
        vars: &vars,
        origin: Origin::Trigger,
        skip_if_running: false,
        trigger: Some(context),
        run_id: None,
        notify: None,
    };
    match s.start_run(run) {
        Ok(Some(id)) => Ok(Taken::Started(id)),
        Ok(None) => Ok(Taken::Deduplicated),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `POST /api/v1/triggers/NAME`.
pub async fn receive(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let what = format!("POST /api/v1/triggers/{name}");
    let Some(t) = s.env.serve.triggers.get(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no trigger `{name}`"));
    };
    if let Err(reason) = authenticate(&s, t, &headers, &body) {
        let reason = reason.to_string();
        let payload = json!({ "call": what, "status": 401, "reason": reason });
        if let Err(e) = s.store.audit("api.denied", "", &what, &payload) {
            tracing::error!("could not audit a refused trigger: {e}");
        }
        return error(StatusCode::UNAUTHORIZED, reason);
    }
    let alerts = match alerts_of(&body) {
        Ok(a) => a,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason.to_string()),
    };
    let mut tally = Tally::default();
    for alert in alerts {
        match take_alert(&s, &name, t, alert).await {
            Ok(taken) => tally.add(taken),
            Err((status, reason)) => return error(status, reason),
        }
    }
    let Tally {
        started,
        deduplicated,
        resolved,
        unmatched,
        held,
        incident,
        rejected,
        dispatched,
    } = tally;
    let summary = json!({
        "started": started,
        "deduplicated": deduplicated,
        "resolved": resolved,
        "unmatched": unmatched,
        "held": held,
        "incident": incident,
        "rejected": rejected,
        "dispatched": dispatched,
    });
    if let Err(e) = s.store.audit("trigger.received", "", &name, &summary) {
        tracing::error!("could not audit a trigger: {e}");
    }
    // Only refused alerts: the sender's payload cannot start anything as it is.
    let status = if summary["started"].as_array().is_none_or(Vec::is_empty)
        && !summary["rejected"].as_array().is_none_or(Vec::is_empty)
    {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(summary)).into_response()
}
