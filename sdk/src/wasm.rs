//! Glue between the generated component bindings and the SDK's own types.
//! Only the functions here touch `bindings`; everything else is plain Rust.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::bindings::runcap::plugin::{
    http as wit_http, invocation as wit_invocation, log as wit_log, types as wit,
};
use crate::context::{Context, Level, Names};
use crate::http::{HttpError, HttpRequest, HttpResponse, Method};
use crate::outcome::{ActionError, Outcome, Status};

/// The running action's names, from the `invocation` import.
pub(crate) fn names() -> Names {
    let n = wit_invocation::current();
    Names {
        run_id: n.run_id,
        environment: n.environment,
        runbook: n.runbook,
        step: n.step,
    }
}

/// Writes a log line through the `log` import.
pub(crate) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wit_log::write(level, message, &fields);
}

/// Sends a request through the `http` import.
pub(crate) fn http(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
    let req = wit_http::Request {
        method: match request.method {
            Method::Get => wit_http::Method::Get,
            Method::Head => wit_http::Method::Head,
            Method::Post => wit_http::Method::Post,
            Method::Put => wit_http::Method::Put,
            Method::Delete => wit_http::Method::Delete,
            Method::Patch => wit_http::Method::Patch,
        },
        url: request.url.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        timeout_ms: request
            .timeout
            .map(|t| t.as_millis().min(u32::MAX as u128) as u32),
        max_redirects: request.max_redirects,
    };
    match wit_http::send(&req) {
        Ok(r) => Ok(HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
            body_truncated: r.body_truncated,
            elapsed: Duration::from_micros(r.elapsed_us),
            final_url: r.final_url,
            remote_address: r.remote_address,
            cert_not_after: r.cert_not_after,
        }),
        Err(e) => Err(match e {
            wit_http::Error::Denied(m) => HttpError::Denied(m),
            wit_http::Error::InvalidRequest(m) => HttpError::InvalidRequest(m),
            wit_http::Error::Timeout => HttpError::Timeout,
            wit_http::Error::Connection(m) => HttpError::Connection(m),
            wit_http::Error::Tls(m) => HttpError::Tls(m),
        }),
    }
}

/// Sends a message through the `notify` import.
pub(crate) fn notify(
    channel: &str,
    message: &crate::notify::Notification,
) -> Result<(), crate::notify::NotifyError> {
    use crate::bindings::runcap::plugin::notify as wit_notify;
    use crate::notify::Severity as S;
    let m = wit_notify::Message {
        severity: match message.severity {
            S::Critical => wit_notify::Severity::Critical,
            S::High => wit_notify::Severity::High,
            S::Medium => wit_notify::Severity::Medium,
            S::Low => wit_notify::Severity::Low,
            S::Info => wit_notify::Severity::Info,
        },
        title: message.title.clone(),
        text: message.text.clone(),
        fields: message.fields.clone(),
    };
    wit_notify::send(channel, &m).map_err(|e| match e {
        wit_notify::Error::Denied(m) => crate::notify::NotifyError::Denied(m),
        wit_notify::Error::Failed(m) => crate::notify::NotifyError::Failed(m),
    })
}

fn fault_kind(k: crate::bindings::runcap::plugin::faults::Kind) -> crate::faults::FaultKind {
    use crate::bindings::runcap::plugin::faults::Kind as K;
    use crate::faults::FaultKind as F;
    match k {
        K::Kill => F::Kill,
        K::Stop => F::Stop,
        K::Latency => F::Latency,
        K::Drop => F::Drop,
        K::Partition => F::Partition,
        K::CorruptFile => F::CorruptFile,
        K::CertExpiry => F::CertExpiry,
    }
}

fn fault(f: crate::bindings::runcap::plugin::faults::Fault) -> crate::faults::Fault {
    crate::faults::Fault {
        id: f.id,
        kind: fault_kind(f.kind),
        target: f.target,
        injected_at_ms: f.injected_at_ms,
        expires_at_ms: f.expires_at_ms,
        detail: f.detail,
    }
}

fn fault_error(e: crate::bindings::runcap::plugin::faults::Error) -> crate::faults::FaultError {
    match e {
        crate::bindings::runcap::plugin::faults::Error::Denied(m) => {
            crate::faults::FaultError::Denied(m)
        }
        crate::bindings::runcap::plugin::faults::Error::Failed(m) => {
            crate::faults::FaultError::Failed(m)
        }
    }
}

/// Injects a fault through the `faults` import.
pub(crate) fn inject(
    spec: &crate::faults::FaultSpec,
) -> Result<crate::faults::Fault, crate::faults::FaultError> {
    use crate::bindings::runcap::plugin::faults as w;
    use crate::faults::FaultKind as F;
    let kind = match spec.kind {
        F::Kill => w::Kind::Kill,
        F::Stop => w::Kind::Stop,
        F::Latency => w::Kind::Latency,
        F::Drop => w::Kind::Drop,
        F::Partition => w::Kind::Partition,
        F::CorruptFile => w::Kind::CorruptFile,
        F::CertExpiry => w::Kind::CertExpiry,
    };
    let s = w::Spec {
        kind,
        target: spec.target.clone(),
        duration_ms: spec.duration.as_millis() as u64,
        latency_ms: spec.latency.map(|l| l.as_millis() as u32),
        drop_rate: spec.drop_rate,
        path: spec.path.clone(),
        days: spec.days,
    };
    w::inject(&s).map(fault).map_err(fault_error)
}

/// Reverts a fault through the `faults` import.
pub(crate) fn revert_fault(id: &str) -> Result<(), crate::faults::FaultError> {
    crate::bindings::runcap::plugin::faults::revert(id).map_err(fault_error)
}

/// Lists active faults through the `faults` import.
pub(crate) fn active_faults() -> Vec<crate::faults::Fault> {
    crate::bindings::runcap::plugin::faults::active()
        .into_iter()
        .map(fault)
        .collect()
}

/// Reads a secret through the `secrets` import.
pub(crate) fn secret(name: &str) -> Result<String, ActionError> {
    use crate::bindings::runcap::plugin::secrets as wit_secrets;
    wit_secrets::get(name).map_err(|e| match e {
        wit_secrets::Error::Denied(m) => ActionError::Denied(m),
        wit_secrets::Error::Unavailable(m) => ActionError::Failed(m),
    })
}

/// Applies a verb through the `services` import.
pub(crate) fn service(
    name: &str,
    verb: crate::services::Verb,
) -> Result<crate::services::ServiceStatus, crate::services::ServiceError> {
    use crate::bindings::runcap::plugin::services as wit_services;
    use crate::services::{ServiceError, ServiceState, ServiceStatus, Verb};
    let verb = match verb {
        Verb::Status => wit_services::Verb::Status,
        Verb::Start => wit_services::Verb::Start,
        Verb::Stop => wit_services::Verb::Stop,
        Verb::Restart => wit_services::Verb::Restart,
    };
    match wit_services::control(name, verb) {
        Ok(s) => Ok(ServiceStatus {
            name: s.name,
            state: match s.state {
                wit_services::State::Running => ServiceState::Running,
                wit_services::State::Stopped => ServiceState::Stopped,
                wit_services::State::Unknown => ServiceState::Unknown,
            },
            pid: s.pid,
            uptime_ms: s.uptime_ms,
            last_exit_code: s.last_exit_code,
            health_url: s.health_url,
            detail: s.detail,
        }),
        Err(wit_services::Error::Denied(m)) => Err(ServiceError::Denied(m)),
        Err(wit_services::Error::Failed(m)) => Err(ServiceError::Failed(m)),
    }
}

/// Glue for the `backup` import: conversions between the SDK's and the generated types.
mod backup_glue {
    use crate::backup::*;
    use crate::bindings::runcap::plugin::backup as w;

    pub(super) fn err(e: w::Error) -> BackupError {
        match e {
            w::Error::Denied(m) => BackupError::Denied(m),
            w::Error::WrongKey(m) => BackupError::WrongKey(m),
            w::Error::NotFound(m) => BackupError::NotFound(m),
            w::Error::Failed(m) => BackupError::Failed(m),
        }
    }

    pub(super) fn info(s: w::SnapshotInfo) -> SnapshotInfo {
        SnapshotInfo {
            id: s.id,
            source: s.source,
            kind: s.kind,
            time_ms: s.time_ms,
            age_seconds: s.age_seconds,
            files: s.files,
            size: s.size,
            bytes_stored: s.bytes_stored,
            file_name: s.file_name,
            tags: s.tags,
        }
    }

    pub(super) fn snapshot(r: w::SnapshotReport) -> SnapshotReport {
        SnapshotReport {
            snapshot: info(r.snapshot),
            bytes_read: r.bytes_read,
            bytes_new: r.bytes_new,
            bytes_stored: r.bytes_stored,
            files_unchanged: r.files_unchanged,
            chunks_total: r.chunks_total,
            chunks_new: r.chunks_new,
            dedup_ratio: r.dedup_ratio,
            compression_ratio: r.compression_ratio,
            duration_ms: r.duration_ms,
            throughput_mib_s: r.throughput_mib_s,
            previous_id: r.previous_id,
            previous_age_seconds: r.previous_age_seconds,
            warnings: r.warnings,
            warnings_total: r.warnings_total,
            dry_run: r.dry_run,
        }
    }

    pub(super) fn verify(r: w::VerifyReport) -> VerifyReport {
        VerifyReport {
            read_data: r.read_data,
            snapshots: r.snapshots,
            chunks_referenced: r.chunks_referenced,
            chunks_read: r.chunks_read,
            bytes_read: r.bytes_read,
            chunks_missing: r.chunks_missing,
            chunks_corrupt: r.chunks_corrupt,
            snapshots_unreadable: r.snapshots_unreadable,
            chunks_unreferenced: r.chunks_unreferenced,
            problems: r.problems,
            problems_total: r.problems_total,
            ok: r.ok,
            duration_ms: r.duration_ms,
        }
    }

    pub(super) fn request(r: &RestoreRequest) -> w::RestoreRequest {
        w::RestoreRequest {
            repository: r.repository.clone(),
            snapshot: r.snapshot.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            dry_run: r.dry_run,
            overwrite: r.overwrite,
            clean: r.clean,
            paths: r.paths.clone(),
        }
    }

    pub(super) fn restore(r: w::RestoreReport) -> RestoreReport {
        RestoreReport {
            snapshot: info(r.snapshot),
            target: r.target,
            dry_run: r.dry_run,
            files: r.files,
            dirs: r.dirs,
            bytes: r.bytes,
            existing: r.existing,
            planned: r
                .planned
                .into_iter()
                .map(|p| PlannedItem {
                    path: p.path,
                    kind: p.kind,
                    size: p.size,
                    exists: p.exists,
                })
                .collect(),
            skipped_existing: r.skipped_existing,
            failed: r.failed,
            duration_ms: r.duration_ms,
            throughput_mib_s: r.throughput_mib_s,
            complete: r.complete,
            command_output: r.command_output,
        }
    }

    pub(super) fn compare(r: w::CompareReport) -> CompareReport {
        CompareReport {
            files: r.files,
            files_matched: r.files_matched,
            bytes: r.bytes,
            differences: r.differences,
            differences_total: r.differences_total,
            ok: r.ok,
            duration_ms: r.duration_ms,
        }
    }

    pub(super) fn forget(r: w::ForgetReport) -> ForgetReport {
        let item = |i: w::ForgetItem| ForgetItem {
            id: i.id,
            source: i.source,
            time_ms: i.time_ms,
            reasons: i.reasons,
        };
        ForgetReport {
            dry_run: r.dry_run,
            kept: r.kept.into_iter().map(item).collect(),
            removed: r.removed.into_iter().map(item).collect(),
            chunks_removed: r.chunks_removed,
            bytes_freed: r.bytes_freed,
            bytes_kept: r.bytes_kept,
            duration_ms: r.duration_ms,
        }
    }
}

/// Backs up a source through the `backup` import.
pub(crate) fn backup_snapshot(
    source: &str,
    repository: &str,
    tags: &[String],
) -> Result<crate::backup::SnapshotReport, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::snapshot(source, repository, tags)
        .map(backup_glue::snapshot)
        .map_err(backup_glue::err)
}

/// Verifies a repository through the `backup` import.
pub(crate) fn backup_verify(
    repository: &str,
    read_data: bool,
) -> Result<crate::backup::VerifyReport, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::verify(repository, read_data)
        .map(backup_glue::verify)
        .map_err(backup_glue::err)
}

/// Restores through the `backup` import.
pub(crate) fn backup_restore(
    request: &crate::backup::RestoreRequest,
) -> Result<crate::backup::RestoreReport, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::restore(&backup_glue::request(request))
        .map(backup_glue::restore)
        .map_err(backup_glue::err)
}

/// Compares a target with a snapshot through the `backup` import.
pub(crate) fn backup_compare(
    repository: &str,
    snapshot: &str,
    target: &str,
) -> Result<crate::backup::CompareReport, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::compare(repository, snapshot, target)
        .map(backup_glue::compare)
        .map_err(backup_glue::err)
}

/// Applies a retention policy through the `backup` import.
pub(crate) fn backup_forget(
    repository: &str,
    policy: &crate::backup::ForgetPolicy,
    prune: bool,
) -> Result<crate::backup::ForgetReport, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    let p = w::ForgetPolicy {
        keep_last: policy.keep_last,
        keep_daily: policy.keep_daily,
        keep_weekly: policy.keep_weekly,
        keep_monthly: policy.keep_monthly,
    };
    w::forget(repository, p, prune)
        .map(backup_glue::forget)
        .map_err(backup_glue::err)
}

/// Lists snapshots through the `backup` import.
pub(crate) fn backup_list(
    repository: &str,
    source: Option<&str>,
) -> Result<Vec<crate::backup::SnapshotInfo>, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::list_snapshots(repository, source)
        .map(|v| v.into_iter().map(backup_glue::info).collect())
        .map_err(backup_glue::err)
}

/// Runs a granted query through the `backup` import.
pub(crate) fn backup_query(
    name: &str,
) -> Result<crate::backup::QueryResult, crate::backup::BackupError> {
    use crate::bindings::runcap::plugin::backup as w;
    w::query(name)
        .map(|r| crate::backup::QueryResult {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            duration_ms: r.duration_ms,
        })
        .map_err(backup_glue::err)
}

/// Parses params the way `run` will, naming the path of the first bad field.
pub(crate) fn parse_params<P: DeserializeOwned>(params: &str) -> Result<P, String> {
    let text = if params.trim().is_empty() {
        "{}"
    } else {
        params
    };
    // Params the host checked parse at the first try; the path-tracking parse, which
    // costs more, runs only to word an error.
    if let Ok(p) = serde_json::from_str(text) {
        return Ok(p);
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_json appends "at line 1 column 8" of the JSON the host built; the path says more.
        let inner = e.inner().to_string();
        let inner = match inner.rfind(" at line ") {
            Some(i) => inner[..i].to_string(),
            None => inner,
        };
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

#[doc(hidden)]
pub fn __describe<P: schemars::JsonSchema>(
    _run: fn(&Context, P) -> Result<Outcome, ActionError>,
    name: &str,
    version: &str,
    description: &str,
) -> wit::Descriptor {
    let schema = schemars::schema_for!(P);
    wit::Descriptor {
        name: name.into(),
        version: version.into(),
        description: description.into(),
        params_schema: serde_json::to_string(&schema).unwrap_or_default(),
    }
}

#[doc(hidden)]
pub fn __validate<P: DeserializeOwned>(
    _run: fn(&Context, P) -> Result<Outcome, ActionError>,
    params: &str,
) -> Result<(), String> {
    parse_params::<P>(params).map(|_| ())
}

#[doc(hidden)]
pub fn __run<P: DeserializeOwned>(
    run: fn(&Context, P) -> Result<Outcome, ActionError>,
    ctx: wit::Context,
    params: &str,
) -> Result<wit::Outcome, wit::ActionError> {
    let params = parse_params::<P>(params).map_err(wit::ActionError::InvalidParams)?;
    let mut context = Context::component();
    context.dry_run = ctx.dry_run;
    context.deadline_ms = ctx.deadline_ms;
    match run(&context, params) {
        Ok(outcome) => Ok(wit::Outcome {
            status: match outcome.status {
                Status::Ok => wit::Status::Ok,
                Status::Warn => wit::Status::Warn,
                Status::Fail => wit::Status::Fail,
            },
            summary: outcome.summary,
            // Serialized directly: through `Display` every piece goes by `fmt::Write`.
            details: serde_json::to_string(&outcome.details).unwrap_or_else(|_| "{}".into()),
            metrics: outcome
                .metrics
                .into_iter()
                .map(|(name, value)| wit::Metric { name, value })
                .collect(),
        }),
        Err(ActionError::InvalidParams(m)) => Err(wit::ActionError::InvalidParams(m)),
        Err(ActionError::Denied(m)) => Err(wit::ActionError::Denied(m)),
        Err(ActionError::Failed(m)) => Err(wit::ActionError::Failed(m)),
    }
}
