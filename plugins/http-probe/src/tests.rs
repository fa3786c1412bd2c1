use std::time::Duration;

use runcap_sdk::testing::MockHost;
use runcap_sdk::{ActionError, HttpError, HttpResponse, Method, Outcome, Status};
use serde_json::{Value, json};

use crate::{Params, evaluate, run};

/// A fixed "now" for certificate arithmetic: 2025-01-01T00:00:00Z.
const NOW: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

fn params(value: Value) -> Params {
    serde_json::from_value(value).expect("params parse")
}

fn response(status: u16, body: &str, ms: u64) -> HttpResponse {
    HttpResponse {
        status,
        body: body.as_bytes().to_vec(),
        elapsed: Duration::from_millis(ms),
        final_url: "http://svc/health".into(),
        ..Default::default()
    }
}

fn conditions(outcome: &Outcome) -> &Vec<Value> {
    outcome.details["conditions"]
        .as_array()
        .expect("conditions array")
}

/// The single condition whose text starts with `prefix`.
fn condition<'a>(outcome: &'a Outcome, prefix: &str) -> &'a Value {
    let found: Vec<&Value> = conditions(outcome)
        .iter()
        .filter(|c| c["condition"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one condition {prefix:?} in {outcome:#?}");
    found[0]
}

fn passed(outcome: &Outcome, prefix: &str) -> bool {
    condition(outcome, prefix)["passed"].as_bool().unwrap()
}

fn actual<'a>(outcome: &'a Outcome, prefix: &str) -> &'a str {
    condition(outcome, prefix)["actual"].as_str().unwrap()
}

fn probe(expect: Value) -> Params {
    params(json!({ "url": "http://svc/health", "expect": expect }))
}

// ---- status ----

#[test]
fn default_rule_is_2xx_when_expect_has_no_status() {
    let p = params(json!({ "url": "http://svc/health" }));
    let ok = evaluate(&p, &response(204, "", 12), NOW);
    assert_eq!(ok.status, Status::Ok);
    assert!(passed(&ok, "status is 2xx"));
    assert_eq!(
        ok.summary,
        "GET http://svc/health → 204 in 12 ms, 1/1 condition passed"
    );

    let bad = evaluate(&p, &response(503, "", 12), NOW);
    assert_eq!(bad.status, Status::Fail);
    assert_eq!(actual(&bad, "status is 2xx"), "503");
    assert_eq!(
        bad.summary,
        "GET http://svc/health → 503 in 12 ms: status 503, expected 2xx"
    );

    let redirect = evaluate(&p, &response(301, "", 12), NOW);
    assert_eq!(redirect.status, Status::Fail);
}

#[test]
fn explicit_status_replaces_the_2xx_rule() {
    let p = probe(json!({ "status": 200 }));
    let ok = evaluate(&p, &response(200, "", 5), NOW);
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(conditions(&ok).len(), 1);
    assert!(passed(&ok, "status == 200"));

    let bad = evaluate(&p, &response(204, "", 5), NOW);
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.summary.ends_with(": status 204, expected 200"),
        "{}",
        bad.summary
    );

    // A 503 maintenance page can be the expected answer.
    let maint = evaluate(&probe(json!({ "status": 503 })), &response(503, "", 5), NOW);
    assert_eq!(maint.status, Status::Ok);
}

#[test]
fn status_list() {
    let p = probe(json!({ "status": [200, 204] }));
    assert_eq!(evaluate(&p, &response(204, "", 5), NOW).status, Status::Ok);
    let bad = evaluate(&p, &response(404, "", 5), NOW);
    assert_eq!(bad.status, Status::Fail);
    assert!(passed(&bad, "status in [200, 204]").eq(&false));
    assert!(
        bad.summary
            .ends_with("status 404, expected one of 200, 204"),
        "{}",
        bad.summary
    );
}

// ---- response time ----

#[test]
fn response_time_below() {
    let p = probe(json!({ "response_time_below": "300ms" }));
    let ok = evaluate(&p, &response(200, "", 120), NOW);
    assert_eq!(ok.status, Status::Ok);
    assert!(passed(&ok, "response_time < 300ms"));
    assert_eq!(actual(&ok, "response_time"), "120 ms");

    let slow = evaluate(&p, &response(200, "", 300), NOW);
    assert_eq!(slow.status, Status::Fail);
    assert_eq!(actual(&slow, "response_time"), "300 ms");
    assert!(
        slow.summary
            .ends_with("response time 300 ms, expected below 300ms"),
        "{}",
        slow.summary
    );
}

// ---- body ----

#[test]
fn body_contains() {
    let p = probe(json!({ "body_contains": "healthy" }));
    let ok = evaluate(&p, &response(200, "all healthy here", 5), NOW);
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(actual(&ok, "body contains"), "found");

    let bad = evaluate(&p, &response(200, "degraded\nsee logs", 5), NOW);
    assert_eq!(bad.status, Status::Fail);
    assert_eq!(
        actual(&bad, "body contains"),
        "not found; body starts: degraded see logs"
    );
    assert!(bad.summary.ends_with("body does not contain \"healthy\""));
}

#[test]
fn body_excerpt_is_at_most_200_chars_and_never_elsewhere() {
    let long = "x".repeat(5_000);
    let p = probe(json!({ "body_contains": "healthy" }));
    let out = evaluate(&p, &response(200, &long, 5), NOW);
    let shown = actual(&out, "body contains");
    let excerpt = shown.strip_prefix("not found; body starts: ").unwrap();
    assert_eq!(excerpt.chars().count(), 200);
    assert!(excerpt.ends_with('…'));
    // The body appears nowhere else in the outcome.
    let mut details = out.details.clone();
    details.remove("conditions");
    assert!(!Value::Object(details).to_string().contains("xxxx"));
    assert!(!out.summary.contains("xxxx"));
}

#[test]
fn truncated_body_is_reported() {
    let mut r = response(200, "partial", 5);
    r.body_truncated = true;
    let out = evaluate(&probe(json!({ "body_contains": "end" })), &r, NOW);
    assert_eq!(out.details["body_truncated"], json!(true));
    assert!(out.summary.contains("truncated"), "{}", out.summary);
}

// ---- JSON ----

const HEALTH: &str =
    r#"{"status":"up","checks":{"db":true,"queue":false},"version":2,"ratio":1.0}"#;

#[test]
fn json_pointer_matches() {
    let p = probe(json!({ "json": {
        "/status": "up",
        "/checks/db": true,
        "/version": 2,
        "/ratio": 1,
    }}));
    let out = evaluate(&p, &response(200, HEALTH, 5), NOW);
    assert_eq!(out.status, Status::Ok, "{out:#?}");
    // 2xx rule plus four JSON conditions.
    assert_eq!(conditions(&out).len(), 5);
    assert_eq!(actual(&out, "json /status"), "\"up\"");
    assert_eq!(
        condition(&out, "json /checks/db")["condition"],
        "json /checks/db == true"
    );
}

#[test]
fn json_pointer_mismatch() {
    let p = probe(json!({ "json": { "/checks/queue": true } }));
    let out = evaluate(&p, &response(200, HEALTH, 5), NOW);
    assert_eq!(out.status, Status::Fail);
    assert_eq!(actual(&out, "json /checks/queue"), "false");
    assert!(
        out.summary
            .ends_with("json /checks/queue is false, expected true"),
        "{}",
        out.summary
    );
}

#[test]
fn json_pointer_missing() {
    let p = probe(json!({ "json": { "/checks/cache": true } }));
    let out = evaluate(&p, &response(200, HEALTH, 5), NOW);
    assert_eq!(out.status, Status::Fail);
    assert_eq!(actual(&out, "json /checks/cache"), "missing");
    assert!(
        out.summary
            .ends_with("json /checks/cache missing, expected true"),
        "{}",
        out.summary
    );
}

#[test]
fn json_on_a_body_that_is_not_json() {
    let p = probe(json!({ "json": { "/status": "up" } }));
    let out = evaluate(&p, &response(200, "<html>ok</html>", 5), NOW);
    assert_eq!(out.status, Status::Fail);
    let shown = actual(&out, "json /status");
    assert!(shown.starts_with("body is not JSON"), "{shown}");
    assert!(shown.ends_with("body starts: <html>ok</html>"), "{shown}");
}

// ---- certificate ----

fn https(days_left: i64) -> HttpResponse {
    HttpResponse {
        cert_not_after: Some(NOW + days_left * DAY),
        final_url: "https://svc/health".into(),
        ..response(200, "", 5)
    }
}

#[test]
fn cert_days_min_passes_and_fails() {
    let p = probe(json!({ "cert_days_min": 14 }));
    let ok = evaluate(&p, &https(90), NOW);
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(actual(&ok, "cert_days_left > 14"), "90.0");
    assert_eq!(ok.details["cert_days_left"], json!(90.0));
    assert!(ok.metrics.contains(&("cert_days_left".into(), 90.0)));

    let soon = evaluate(&p, &https(14), NOW);
    assert_eq!(soon.status, Status::Fail, "exactly the minimum is not more");
    assert!(
        soon.summary
            .ends_with("certificate expires in 14.0 days, expected more than 14"),
        "{}",
        soon.summary
    );

    let expired = evaluate(&p, &https(-2), NOW);
    assert!(expired.summary.contains("certificate expired 2.0 days ago"));
}

#[test]
fn cert_days_min_without_a_certificate() {
    let p = probe(json!({ "cert_days_min": 14 }));
    let out = evaluate(&p, &response(200, "", 5), NOW);
    assert_eq!(out.status, Status::Fail);
    assert_eq!(actual(&out, "cert_days_left"), "no certificate");
    assert!(out.summary.contains("no certificate"), "{}", out.summary);
    assert!(!out.details.contains_key("cert_days_left"));
    assert!(!out.metrics.iter().any(|(n, _)| n == "cert_days_left"));
}

// ---- warn set and aggregation ----

#[test]
fn warn_set_gives_warn_when_expect_holds() {
    let p = params(json!({
        "url": "https://svc/health",
        "expect": { "status": 200, "cert_days_min": 7 },
        "warn": { "response_time_below": "300ms", "cert_days_min": 30 },
    }));
    let fine = evaluate(&p, &https(60), NOW);
    assert_eq!(fine.status, Status::Ok);
    assert!(
        fine.summary.ends_with("4/4 conditions passed"),
        "{}",
        fine.summary
    );

    let aging = evaluate(&p, &https(20), NOW);
    assert_eq!(aging.status, Status::Warn);
    let warn_cert = conditions(&aging)
        .iter()
        .find(|c| c["condition"] == "cert_days_left > 30")
        .unwrap();
    assert_eq!(warn_cert["severity"], "warn");
    assert_eq!(warn_cert["passed"], false);
    assert!(
        aging
            .summary
            .ends_with("certificate expires in 20.0 days, expected more than 30"),
        "{}",
        aging.summary
    );
}

#[test]
fn warn_set_has_no_default_status_rule() {
    let p = params(json!({
        "url": "http://svc/health",
        "warn": { "body_contains": "ok" },
    }));
    let out = evaluate(&p, &response(200, "ok", 5), NOW);
    assert_eq!(conditions(&out).len(), 2);
    assert_eq!(condition(&out, "status is 2xx")["severity"], "fail");
    assert_eq!(condition(&out, "body contains")["severity"], "warn");
}

#[test]
fn fail_wins_over_warn_and_every_condition_is_evaluated() {
    let p = params(json!({
        "url": "http://svc/health",
        "expect": { "status": 200, "body_contains": "up", "response_time_below": "1s" },
        "warn": { "response_time_below": "100ms" },
    }));
    let out = evaluate(&p, &response(500, "down", 400), NOW);
    assert_eq!(out.status, Status::Fail);
    let results: Vec<(&str, bool)> = conditions(&out)
        .iter()
        .map(|c| {
            (
                c["condition"].as_str().unwrap(),
                c["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("status == 200", false),
            ("response_time < 1s", true),
            ("body contains \"up\"", false),
            ("response_time < 100ms", false),
        ]
    );
    assert_eq!(
        out.summary,
        "GET http://svc/health → 500 in 400 ms: status 500, expected 200 (and 2 more failed)"
    );
}

#[test]
fn details_and_metrics() {
    let p = probe(json!({ "status": 200 }));
    let mut r = response(200, "", 0);
    r.elapsed = Duration::from_micros(12_345);
    r.final_url = "http://svc/health/".into();
    let out = evaluate(&p, &r, NOW);
    assert_eq!(out.details["url"], "http://svc/health");
    assert_eq!(out.details["final_url"], "http://svc/health/");
    assert_eq!(out.details["status"], 200);
    assert_eq!(out.details["response_time_ms"], json!(12.345));
    assert_eq!(out.details["body_truncated"], false);
    assert_eq!(
        conditions(&out)[0],
        json!({ "condition": "status == 200", "severity": "fail", "passed": true, "actual": "200" })
    );
    assert_eq!(out.metrics, vec![("response_time_ms".to_string(), 12.345)]);
}

// ---- the whole action, through the mock host ----

#[test]
fn run_sends_one_request_as_described() {
    let host = MockHost::new().answer_http(Ok(response(200, HEALTH, 8)));
    let p = params(json!({
        "url": "http://svc/health",
        "method": "POST",
        "headers": { "Authorization": "Bearer t", "Accept": "application/json" },
        "body": "{\"deep\":true}",
        "timeout": "2s 500ms",
        "follow_redirects": 3,
        "expect": { "json": { "/status": "up" } },
    }));
    let out = run(&host.context(), p).unwrap();
    assert_eq!(out.status, Status::Ok, "{out:#?}");
    let requests = host.requests.borrow();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, Method::Post);
    assert_eq!(sent.url, "http://svc/health");
    assert_eq!(sent.body, b"{\"deep\":true}");
    assert_eq!(sent.timeout, Some(Duration::from_millis(2_500)));
    assert_eq!(sent.max_redirects, 3);
    assert!(
        sent.headers
            .contains(&("Authorization".into(), "Bearer t".into()))
    );
    assert!(
        sent.headers
            .contains(&("Accept".into(), "application/json".into()))
    );
}

#[test]
fn run_defaults_to_get_with_10s_timeout_and_no_redirects() {
    let host = MockHost::new().answer_http(Ok(response(200, "", 8)));
    run(
        &host.context(),
        params(json!({ "url": "http://svc/health" })),
    )
    .unwrap();
    let sent = &host.requests.borrow()[0];
    assert_eq!(sent.method, Method::Get);
    assert_eq!(sent.timeout, Some(Duration::from_secs(10)));
    assert_eq!(sent.max_redirects, 0);
    assert!(sent.body.is_empty());
    assert!(sent.headers.is_empty());
}

#[test]
fn run_checks_certificates_against_the_clock() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut r = response(200, "", 8);
    r.cert_not_after = Some(now + 30 * DAY);
    let host = MockHost::new().answer_http(Ok(r));
    let p = params(json!({ "url": "https://svc/health", "expect": { "cert_days_min": 29 } }));
    let out = run(&host.context(), p).unwrap();
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
}

#[test]
fn run_denied_is_an_error() {
    let host = MockHost::new().answer_http(Err(HttpError::Denied(
        "svc is not in grants.http.allow".into(),
    )));
    let err = run(
        &host.context(),
        params(json!({ "url": "http://svc/health" })),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ActionError::Denied("svc is not in grants.http.allow".into())
    );
}

#[test]
fn run_invalid_request_is_invalid_params() {
    let host =
        MockHost::new().answer_http(Err(HttpError::InvalidRequest("bad header name".into())));
    let err = run(
        &host.context(),
        params(json!({ "url": "http://svc/health" })),
    )
    .unwrap_err();
    assert_eq!(err, ActionError::InvalidParams("bad header name".into()));
}

#[test]
fn run_connection_error_is_a_fail_outcome() {
    let host = MockHost::new().answer_http(Err(HttpError::Connection("connection refused".into())));
    let out = run(&host.context(), params(json!({ "url": "http://x/health" }))).unwrap();
    assert_eq!(out.status, Status::Fail);
    assert_eq!(
        out.summary,
        "GET http://x/health: connection failed: connection refused"
    );
    assert_eq!(
        out.details["error"],
        "connection failed: connection refused"
    );
    assert_eq!(out.details["url"], "http://x/health");
}

#[test]
fn run_timeout_and_tls_errors_are_fail_outcomes() {
    let host = MockHost::new()
        .answer_http(Err(HttpError::Timeout))
        .answer_http(Err(HttpError::Tls("certificate has expired".into())));
    let p = || params(json!({ "url": "https://x/health", "method": "HEAD" }));
    let timed_out = run(&host.context(), p()).unwrap();
    assert_eq!(timed_out.status, Status::Fail);
    assert_eq!(timed_out.summary, "HEAD https://x/health: timed out");
    assert_eq!(timed_out.details["error"], "timed out");
    let tls = run(&host.context(), p()).unwrap();
    assert_eq!(tls.status, Status::Fail);
    assert_eq!(
        tls.summary,
        "HEAD https://x/health: TLS failed: certificate has expired"
    );
}

#[test]
fn dry_run_reports_the_post_the_host_did_not_send() {
    // In a dry run the host answers a mutating request itself, marked as not sent.
    let mut answer = response(204, "", 0);
    answer
        .headers
        .push(("x-runcap-dry-run".into(), "not sent".into()));
    let host = MockHost::new().answer_http(Ok(answer));
    let mut ctx = host.context();
    ctx.dry_run = true;
    let p = params(
        json!({ "url": "http://svc/reindex", "method": "POST", "body": "{}", "expect": { "status": 200 } }),
    );
    let out = run(&ctx, p).unwrap();
    assert_eq!(out.status, Status::Ok);
    assert_eq!(out.summary, "dry run: would POST http://svc/reindex");
    assert_eq!(host.requests.borrow()[0].method, runcap_sdk::Method::Post);
}

#[test]
fn dry_run_still_sends_a_get() {
    let host = MockHost::new().answer_http(Ok(response(200, "", 3)));
    let mut ctx = host.context();
    ctx.dry_run = true;
    let out = run(&ctx, params(json!({ "url": "http://svc/health" }))).unwrap();
    assert_eq!(out.status, Status::Ok);
    assert_eq!(host.requests.borrow().len(), 1);
}

// ---- params, through the SDK's parse path ----

fn validate(params: &str) -> Result<(), String> {
    runcap_sdk::__validate(run, params)
}

#[test]
fn params_accept_a_full_probe() {
    validate(
        r#"{
            "url": "https://api.example.com/health",
            "method": "HEAD",
            "headers": {"Accept": "application/json"},
            "timeout": "5s",
            "follow_redirects": 2,
            "expect": {"status": [200, 204], "json": {"/status": "up", "": {}}, "cert_days_min": 14},
            "warn": {"response_time_below": "300ms", "body_contains": "ok", "cert_days_min": 30}
        }"#,
    )
    .unwrap();
}

#[test]
fn params_errors() {
    let cases = [
        (r#"{}"#, "missing field `url`"),
        (
            r#"{"url": "http://svc", "retries": 3}"#,
            "unknown field `retries`",
        ),
        (
            r#"{"url": "http://svc", "expect": {"status_code": 200}}"#,
            "expect.status_code: unknown field `status_code`",
        ),
        (
            r#"{"url": "http://svc", "timeout": "5 parsecs"}"#,
            "timeout: `5 parsecs` is not a duration",
        ),
        (
            r#"{"url": "http://svc", "warn": {"response_time_below": 300}}"#,
            "warn.response_time_below: invalid type: integer `300`",
        ),
        (
            r#"{"url": "http://svc", "method": "OPTIONS"}"#,
            "method: unknown variant `OPTIONS`",
        ),
        (
            r#"{"url": "svc/health"}"#,
            "url: \"svc/health\" is not an http:// or https:// URL",
        ),
        (r#"{"url": "https://"}"#, "has no host"),
        (
            r#"{"url": "http://svc", "expect": {"status": 42}}"#,
            "expect.status: 42 is not an HTTP status code",
        ),
        (
            r#"{"url": "http://svc", "expect": {"status": []}}"#,
            "the list of status codes is empty",
        ),
        (
            r#"{"url": "http://svc", "expect": {"status": "200"}}"#,
            "a status code or a list of status codes",
        ),
        (
            r#"{"url": "http://svc", "expect": {"json": {"status": "up"}}}"#,
            "expect.json: \"status\" is not a JSON pointer",
        ),
        (
            r#"{"url": "http://svc", "follow_redirects": 300}"#,
            "follow_redirects",
        ),
        (
            r#"{"url": "http://svc", "expect": {"cert_days_min": -1}}"#,
            "expect.cert_days_min",
        ),
    ];
    for (input, want) in cases {
        let err = validate(input).expect_err(input);
        assert!(err.contains(want), "{input}: got {err:?}, want {want:?}");
    }
}

#[test]
fn params_schema_documents_every_field() {
    let schema = serde_json::to_value(schemars::schema_for!(Params)).unwrap();
    let props = schema["properties"].as_object().unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["url"]));
    for (name, prop) in props {
        assert!(
            prop.get("description").is_some(),
            "{name} has no description"
        );
    }
    assert_eq!(props["timeout"]["default"], "10s");
    assert_eq!(props["method"]["default"], "GET");
    let conditions = &schema["$defs"]["Conditions"];
    assert_eq!(conditions["additionalProperties"], false);
    for (name, prop) in conditions["properties"].as_object().unwrap() {
        assert!(
            prop.get("description").is_some(),
            "expect.{name} has no description"
        );
    }
}

#[test]
fn expect_fail_inverts_the_verdict() {
    let host = MockHost::new().answer_http(Ok(response(503, "", 3)));
    let out = run(
        &host.context(),
        params(json!({ "url": "http://svc/health", "expect_fail": true })),
    )
    .unwrap();
    assert_eq!(out.status, Status::Ok);
    assert!(
        out.summary.starts_with("failed as expected"),
        "{}",
        out.summary
    );
    let host = MockHost::new().answer_http(Ok(response(200, "", 3)));
    let out = run(
        &host.context(),
        params(json!({ "url": "http://svc/health", "expect_fail": true })),
    )
    .unwrap();
    assert_eq!(out.status, Status::Fail);
}

/// A host answering `n` requests: 200 in `i + 1` ms for the i-th, except the indexes in
/// `failing`, which answer 500.
fn batch_host(n: u64, failing: &[u64]) -> MockHost {
    (0..n).fold(MockHost::new(), |h, i| {
        let status = if failing.contains(&i) { 500 } else { 200 };
        h.answer_http(Ok(response(status, "", i + 1)))
    })
}

#[test]
fn a_batch_is_judged_by_its_p95_and_success_rate() {
    let host = batch_host(20, &[3]);
    let out = run(
        &host.context(),
        params(json!({"url": "http://svc/health", "samples": 20, "p95_below": "50ms", "success_rate_above": 0.9})),
    )
    .unwrap();
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert_eq!(host.requests.borrow().len(), 20);
    assert_eq!(out.details["p95_ms"], 19.0);
    assert_eq!(out.details["success_rate"], 0.95);

    let host = batch_host(20, &[3]);
    let out = run(
        &host.context(),
        params(json!({"url": "http://svc/health", "samples": 20, "p95_below": "10ms", "success_rate_above": 0.99})),
    )
    .unwrap();
    assert_eq!(out.status, Status::Fail);
    assert!(
        out.summary.contains("p95 19.0 ms is not below 10ms"),
        "{}",
        out.summary
    );
    assert!(
        out.summary.contains("19 of 20 answers met expect (95%)"),
        "{}",
        out.summary
    );

    // Without a rate, every answer must meet expect.
    let host = batch_host(5, &[4]);
    let out = run(
        &host.context(),
        params(json!({"url": "http://svc/health", "samples": 5})),
    )
    .unwrap();
    assert_eq!(out.status, Status::Fail, "{}", out.summary);
}

#[test]
fn batch_settings_that_make_no_sense_are_invalid() {
    for (p, expected) in [
        (
            json!({"url": "http://svc", "p95_below": "1s"}),
            "add samples = 20",
        ),
        (
            json!({"url": "http://svc", "samples": 1}),
            "not from 2 to 1000",
        ),
        (
            json!({"url": "http://svc", "samples": 5, "success_rate_above": 1.5}),
            "not a share",
        ),
    ] {
        let err = params(p).check_batch().unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn json_values_are_compared_matched_and_tested_for_presence() {
    let body = r#"{"ratio": 0.42, "uptime": 99.5, "state": "degraded", "version": "v2.3.1"}"#;
    let p = probe(json!({ "json": {
        "/ratio": {"<": 0.9},
        "/uptime": {">=": 95},
        "/state": {"!=": "down"},
        "/version": {"matches": "^v2\\."},
        "/error": {"exists": false},
    }}));
    let out = evaluate(&p, &response(200, body, 5), NOW);
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert!(passed(&out, "json /ratio < 0.9"));

    let p = probe(json!({ "json": {
        "/ratio": {">": 0.5},
        "/state": {"!=": "degraded"},
        "/version": {"matches": "^v3"},
        "/ratio2": {"exists": true},
    }}));
    let out = evaluate(&p, &response(200, body, 5), NOW);
    assert_eq!(out.status, Status::Fail);
    assert!(
        out.summary
            .contains("json /ratio is 0.42, expected > 0.5 (and 3 more failed)"),
        "{}",
        out.summary
    );
    for (condition, seen) in [
        ("json /state != \"degraded\"", "\"degraded\""),
        ("json /version matches /^v3/", "\"v2.3.1\""),
        ("json /ratio2 exists == true", "missing"),
    ] {
        assert!(!passed(&out, condition), "{condition}");
        assert_eq!(actual(&out, condition), seen, "{condition}");
    }
}

#[test]
fn json_tests_that_cannot_work_are_refused_when_params_are_read() {
    for (json, expected) in [
        (json!({"/a": {"<": "high"}}), "`<` compares numbers"),
        (
            json!({"/a": {"matches": "("}}),
            "is not a regular expression",
        ),
        (
            json!({"/a": {"exists": "yes"}}),
            "`exists` takes true or false",
        ),
    ] {
        let err = serde_json::from_value::<Params>(
            json!({"url": "http://svc", "expect": {"json": json}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn headers_and_body_size_are_judged() {
    let mut r = response(200, "0123456789", 5);
    r.headers = vec![(
        "Content-Type".into(),
        "application/json; charset=utf-8".into(),
    )];
    let p = probe(json!({
        "headers": {"content-type": {"matches": "json"}, "x-version": {"exists": false}},
        "body_bytes_below": 11,
    }));
    let out = evaluate(&p, &r, NOW);
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    let p = probe(json!({"headers": {"content-type": "text/plain"}, "body_bytes_below": 10}));
    let out = evaluate(&p, &r, NOW);
    assert_eq!(out.status, Status::Fail);
    assert!(!passed(&out, "header content-type == \"text/plain\""));
    assert!(!passed(&out, "body_bytes < 10"));
    assert_eq!(actual(&out, "body_bytes < 10"), "10");
}
