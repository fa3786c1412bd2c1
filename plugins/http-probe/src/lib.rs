//! `http-probe`: checks that an HTTP(S) endpoint answers the way a runbook expects, in
//! the style of a Gatus endpoint check.
//!
//! One request is sent through the host's `http` capability; the answer is judged by the
//! `expect` conditions (a failure makes the outcome `fail`) and the `warn` conditions (a
//! failure makes it `warn`). Every condition is evaluated and reported, so one run shows
//! everything that is wrong with an endpoint, not just the first thing.
//!
//! ```toml
//! [[runbooks.deploy.steps]]
//! uses = "http-probe"
//! with = { url = "https://api.example.com/health", timeout = "5s", expect = { status = 200, json = { "/status" = "up" }, cert_days_min = 14 }, warn = { response_time_below = "300ms", cert_days_min = 30 } }
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use runcap_sdk::{ActionError, Context, HttpError, HttpRequest, Outcome};

mod evaluate;
mod params;

pub use evaluate::{Checked, Severity, evaluate};
pub use params::{Conditions, HumanDuration, Params, ProbeMethod, StatusSpec};

/// The action: sends the probe request and judges the answer.
///
/// A request the grant does not allow is an error (`Denied`), since the runbook or
/// manifest needs fixing; an endpoint that cannot be reached is a `fail` outcome, since
/// that is exactly what a probe exists to report.
pub fn run(ctx: &Context, params: Params) -> Result<Outcome, ActionError> {
    params.check_batch().map_err(ActionError::InvalidParams)?;
    if let Some(n) = params.samples {
        return batch(ctx, &params, n);
    }
    match ctx.http(&request(&params)) {
        // In a dry run the host records a mutating request instead of sending it.
        Ok(response) if ctx.dry_run && response.header("x-runcap-dry-run").is_some() => {
            Ok(Outcome::ok(format!(
                "dry run: would {} {}",
                params.method.as_str(),
                params.url
            ))
            .detail("url", params.url.as_str())
            .detail("dry_run", true))
        }
        Ok(response) => Ok(invert_if_asked(
            &params,
            evaluate(&params, &response, now_secs()),
        )),
        Err(HttpError::Denied(message)) => Err(ActionError::Denied(message)),
        Err(HttpError::InvalidRequest(message)) => Err(ActionError::InvalidParams(message)),
        Err(error) => Ok(invert_if_asked(
            &params,
            unreachable_outcome(&params, &error),
        )),
    }
}

/// Sends the request `n` times and judges the batch: each answer by `expect`, then the
/// 95th percentile of response times and the share of answers that met `expect`.
fn batch(ctx: &Context, params: &Params, n: u32) -> Result<Outcome, ActionError> {
    let mut times_ms: Vec<f64> = Vec::with_capacity(n as usize);
    let mut good = 0u32;
    let mut last_problem = None;
    for _ in 0..n {
        match ctx.http(&request(params)) {
            Ok(response) if ctx.dry_run && response.header("x-runcap-dry-run").is_some() => {
                return Ok(Outcome::ok(format!(
                    "dry run: would {} {} {n} times",
                    params.method.as_str(),
                    params.url
                ))
                .detail("url", params.url.as_str())
                .detail("dry_run", true));
            }
            Ok(response) => {
                times_ms.push(response.elapsed.as_micros() as f64 / 1000.0);
                let judged = evaluate(params, &response, now_secs());
                if judged.status == runcap_sdk::Status::Fail {
                    last_problem = Some(judged.summary);
                } else {
                    good += 1;
                }
            }
            Err(HttpError::Denied(message)) => return Err(ActionError::Denied(message)),
            Err(HttpError::InvalidRequest(message)) => {
                return Err(ActionError::InvalidParams(message));
            }
            Err(error) => last_problem = Some(error.to_string()),
        }
    }
    times_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if times_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((times_ms.len() as f64 * p).ceil() as usize).clamp(1, times_ms.len()) - 1;
        times_ms[i]
    };
    let (p50, p95, p99) = (pct(0.50), pct(0.95), pct(0.99));
    let rate = f64::from(good) / f64::from(n);
    let mut problems = Vec::new();
    if let Some(limit) = params.p95_below {
        let limit_ms = limit.get().as_secs_f64() * 1000.0;
        // No answer at all (p95 is NaN) does not pass either.
        if p95.is_nan() || p95 >= limit_ms {
            problems.push(format!("p95 {p95:.1} ms is not below {limit}"));
        }
    }
    let min_rate = params.success_rate_above.unwrap_or(0.0);
    if rate <= min_rate || (params.success_rate_above.is_none() && good < n) {
        problems.push(format!(
            "{good} of {n} answers met expect ({:.0}%){}",
            rate * 100.0,
            last_problem
                .map(|p| format!("; last problem: {p}"))
                .unwrap_or_default()
        ));
    }
    let summary = format!(
        "{} {} ×{n}: p50 {p50:.1} ms, p95 {p95:.1} ms, {:.0}% met expect",
        params.method.as_str(),
        params.url,
        rate * 100.0
    );
    let outcome = if problems.is_empty() {
        Outcome::ok(summary)
    } else {
        Outcome::fail(format!("{summary} — {}", problems.join("; ")))
    };
    Ok(invert_if_asked(
        params,
        outcome
            .detail("url", params.url.as_str())
            .detail("samples", n)
            .detail("p50_ms", p50)
            .detail("p95_ms", p95)
            .detail("p99_ms", p99)
            .detail("success_rate", rate)
            .metric("p95_ms", p95)
            .metric("success_rate", rate),
    ))
}

/// With `expect_fail`, a failing check is the expected result and a passing one is not.
fn invert_if_asked(params: &Params, outcome: Outcome) -> Outcome {
    if !params.expect_fail {
        return outcome;
    }
    let (status, summary) = match outcome.status {
        runcap_sdk::Status::Fail => (
            runcap_sdk::Status::Ok,
            format!("failed as expected: {}", outcome.summary),
        ),
        _ => (
            runcap_sdk::Status::Fail,
            format!("expected this check to fail, but: {}", outcome.summary),
        ),
    };
    Outcome {
        status,
        summary,
        ..outcome
    }
    .detail("expect_fail", true)
}

/// The single request the params describe.
fn request(params: &Params) -> HttpRequest {
    let mut request = HttpRequest::new(params.method.into(), params.url.as_str())
        .timeout(params.timeout.0)
        .follow_redirects(params.follow_redirects);
    for (name, value) in &params.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &params.body {
        request = request.body(body.as_bytes());
    }
    request
}

/// The `fail` outcome for a request that got no response (timeout, connection or TLS failure).
fn unreachable_outcome(params: &Params, error: &HttpError) -> Outcome {
    Outcome::fail(format!(
        "{} {}: {error}",
        params.method.as_str(),
        params.url
    ))
    .detail("url", params.url.as_str())
    .detail("error", error.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

runcap_sdk::plugin!(
    name: "http-probe",
    description: "Checks that an HTTP(S) endpoint answers as expected: status, response time, \
                  body text, JSON fields and certificate lifetime.",
    run: run,
);

#[cfg(test)]
mod tests;
