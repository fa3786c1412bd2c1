//! Judging a response against the params: pure, with the current time passed in, so
//! every rule is tested natively without a host or a clock.

use runcap_sdk::{HttpResponse, Outcome, Status};
use serde_json::{Value, json};

use crate::params::{Conditions, JsonTest, Params};

/// Longest excerpt of response data that may appear in an outcome.
const EXCERPT_CHARS: usize = 200;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Which outcome a failed condition leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// From `expect`: failing makes the outcome `fail`.
    Fail,
    /// From `warn`: failing makes the outcome `warn`.
    Warn,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Fail => "fail",
            Severity::Warn => "warn",
        }
    }
}

/// One evaluated condition, as reported in the outcome's `conditions` detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The condition as written for humans, e.g. "status == 200".
    pub condition: String,
    /// Which outcome a failure leads to.
    pub severity: Severity,
    /// Whether the response met it.
    pub passed: bool,
    /// What the response had, as a short string.
    pub actual: String,
    /// One phrase saying why it failed, for the summary; empty when it passed.
    pub failure: String,
}

impl Checked {
    fn to_json(&self) -> Value {
        json!({
            "condition": self.condition,
            "severity": self.severity.as_str(),
            "passed": self.passed,
            "actual": self.actual,
        })
    }
}

/// The facts about a response that the conditions look at, worked out once.
struct Observed<'r> {
    response: &'r HttpResponse,
    response_time_ms: f64,
    cert_days_left: Option<f64>,
    /// The body parsed as JSON, or why it is not JSON; parsed only when a condition needs it.
    json: Option<Result<Value, String>>,
}

/// Judges `response` against every condition in `params` and builds the outcome.
///
/// `now_secs` is the current time in seconds since the Unix epoch, used for the
/// certificate's remaining lifetime.
pub fn evaluate(params: &Params, response: &HttpResponse, now_secs: i64) -> Outcome {
    let needs_json = !params.expect.json.is_empty() || !params.warn.json.is_empty();
    let observed = Observed {
        response,
        response_time_ms: response.elapsed.as_micros() as f64 / 1000.0,
        cert_days_left: response
            .cert_not_after
            .map(|not_after| round2(not_after.saturating_sub(now_secs) as f64 / SECONDS_PER_DAY)),
        json: needs_json
            .then(|| serde_json::from_slice::<Value>(&response.body).map_err(|e| e.to_string())),
    };

    let mut checked = Vec::new();
    check_set(&params.expect, Severity::Fail, &observed, &mut checked);
    check_set(&params.warn, Severity::Warn, &observed, &mut checked);

    let final_url = if response.final_url.is_empty() {
        params.url.as_str()
    } else {
        response.final_url.as_str()
    };
    let head = format!(
        "{} {} → {} in {}",
        params.method.as_str(),
        params.url,
        response.status,
        fmt_ms(observed.response_time_ms)
    );

    let failed: Vec<&Checked> = checked.iter().filter(|c| !c.passed).collect();
    let first_of = |severity| failed.iter().find(|c| c.severity == severity);
    let (status, summary) = match (first_of(Severity::Fail), first_of(Severity::Warn)) {
        (Some(first), _) => (Status::Fail, failure_summary(&head, first, failed.len())),
        (None, Some(first)) => (Status::Warn, failure_summary(&head, first, failed.len())),
        (None, None) => (
            Status::Ok,
            format!(
                "{head}, {n}/{n} condition{s} passed",
                n = checked.len(),
                s = if checked.len() == 1 { "" } else { "s" }
            ),
        ),
    };

    let mut outcome = Outcome::new(status, summary)
        .detail("url", params.url.as_str())
        .detail("final_url", final_url)
        .detail("status", response.status)
        .detail("response_time_ms", observed.response_time_ms)
        .detail("body_truncated", response.body_truncated)
        .detail(
            "conditions",
            checked.iter().map(Checked::to_json).collect::<Vec<_>>(),
        )
        .metric("response_time_ms", observed.response_time_ms);
    if let Some(days) = observed.cert_days_left {
        outcome = outcome
            .detail("cert_days_left", days)
            .metric("cert_days_left", days);
    }
    outcome
}

fn failure_summary(head: &str, first: &Checked, failed: usize) -> String {
    match failed {
        0 | 1 => format!("{head}: {}", first.failure),
        n => format!("{head}: {} (and {} more failed)", first.failure, n - 1),
    }
}

/// Evaluates one condition set in a fixed order: status, response time, body, JSON, certificate.
fn check_set(set: &Conditions, severity: Severity, seen: &Observed, out: &mut Vec<Checked>) {
    let mut push = |condition: String, passed: bool, actual: String, failure: String| {
        out.push(Checked {
            condition,
            severity,
            passed,
            actual,
            failure: if passed { String::new() } else { failure },
        })
    };
    let status = seen.response.status;

    match &set.status {
        Some(spec) => {
            let (condition, expected) = match spec.0.as_slice() {
                [one] => (format!("status == {one}"), one.to_string()),
                many => {
                    let list = many
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    (format!("status in [{list}]"), format!("one of {list}"))
                }
            };
            push(
                condition,
                spec.accepts(status),
                status.to_string(),
                format!("status {status}, expected {expected}"),
            );
        }
        None if severity == Severity::Fail => push(
            "status is 2xx".into(),
            (200..300).contains(&status),
            status.to_string(),
            format!("status {status}, expected 2xx"),
        ),
        None => {}
    }

    if let Some(limit) = set.response_time_below {
        let limit_ms = limit.0.as_micros() as f64 / 1000.0;
        let took = fmt_ms(seen.response_time_ms);
        push(
            format!("response_time < {limit}"),
            seen.response_time_ms < limit_ms,
            took.clone(),
            format!("response time {took}, expected below {limit}"),
        );
    }

    if let Some(needle) = &set.body_contains {
        let text = String::from_utf8_lossy(&seen.response.body);
        let found = text.contains(needle.as_str());
        let truncated = if seen.response.body_truncated {
            " (body was truncated by the host's size limit)"
        } else {
            ""
        };
        let quoted = shorten(&format!("{needle:?}"));
        push(
            format!("body contains {quoted}"),
            found,
            if found {
                "found".into()
            } else {
                format!("not found; body starts: {}", excerpt(&text))
            },
            format!("body does not contain {quoted}{truncated}"),
        );
    }

    for (pointer, expected) in &set.json {
        // Checked when params were read; a value that is not a test is one to equal.
        let test = JsonTest::parse(expected).unwrap_or(JsonTest::Equals(expected));
        let subject = format!("json {pointer}");
        match seen.json.as_ref() {
            Some(Ok(doc)) => {
                let (condition, ok, actual, problem) = judge(&subject, &test, doc.pointer(pointer));
                push(condition, ok, actual, problem);
            }
            Some(Err(why)) => {
                let (condition, _) = describe_test(&subject, &test);
                let text = String::from_utf8_lossy(&seen.response.body);
                let truncated = if seen.response.body_truncated {
                    ", body was truncated by the host's size limit"
                } else {
                    ""
                };
                push(
                    condition,
                    false,
                    format!("body is not JSON ({why}); body starts: {}", excerpt(&text)),
                    format!("body is not JSON ({why}{truncated}), expected json {pointer}"),
                );
            }
            // Unreachable: the body is parsed whenever a set has JSON conditions.
            None => {}
        }
    }

    for (name, expected) in &set.headers {
        let test = JsonTest::parse(expected).unwrap_or(JsonTest::Equals(expected));
        let value = seen
            .response
            .header(name)
            .map(|v| Value::String(v.to_string()));
        let (condition, ok, actual, problem) =
            judge(&format!("header {name}"), &test, value.as_ref());
        push(condition, ok, actual, problem);
    }

    if let Some(limit) = set.body_bytes_below {
        let size = seen.response.body.len() as u64;
        let truncated = seen.response.body_truncated;
        push(
            format!("body_bytes < {limit}"),
            size < limit && !truncated,
            if truncated {
                format!("{size}+ (truncated)")
            } else {
                size.to_string()
            },
            format!(
                "body is {size}{} bytes, expected fewer than {limit}",
                if truncated { "+" } else { "" }
            ),
        );
    }

    if let Some(min_days) = set.cert_days_min {
        let condition = format!("cert_days_left > {min_days}");
        match seen.cert_days_left {
            Some(days) => push(
                condition,
                days > f64::from(min_days),
                format!("{days:.1}"),
                if days < 0.0 {
                    format!(
                        "certificate expired {:.1} days ago, expected more than {min_days} days left",
                        -days
                    )
                } else {
                    format!("certificate expires in {days:.1} days, expected more than {min_days}")
                },
            ),
            None => push(
                condition,
                false,
                "no certificate".into(),
                format!(
                    "no certificate (not an https response), cannot check cert_days_min {min_days}"
                ),
            ),
        }
    }
}

/// A test on `subject` (`json /ratio`, `header content-type`) as reports show it
/// (`json /ratio < 0.9`), and what it wants, as the failure message says it.
fn describe_test(subject: &str, test: &JsonTest) -> (String, String) {
    let wanted = match test {
        JsonTest::Equals(v) => shorten(&v.to_string()),
        JsonTest::NotEquals(v) => format!("!= {}", shorten(&v.to_string())),
        JsonTest::Compare(op, n) => format!("{op} {n}"),
        JsonTest::Matches(r) => format!("to match /{}/", r.as_str()),
        JsonTest::Exists(true) => "present".to_string(),
        JsonTest::Exists(false) => "absent".to_string(),
    };
    let condition = match test {
        JsonTest::Equals(v) => format!("{subject} == {}", shorten(&v.to_string())),
        JsonTest::Matches(r) => format!("{subject} matches /{}/", r.as_str()),
        JsonTest::Exists(e) => format!("{subject} exists == {e}"),
        _ => format!("{subject} {wanted}"),
    };
    (condition, wanted)
}

/// A test on `subject`'s value (`None`: absent), judged: the condition as reports show
/// it, whether it holds, the value seen, and the problem a failure reports.
fn judge(subject: &str, test: &JsonTest, actual: Option<&Value>) -> (String, bool, String, String) {
    let (condition, wanted) = describe_test(subject, test);
    let seen = actual.map_or("missing".to_string(), |a| shorten(&a.to_string()));
    let problem = match actual {
        None => format!("{subject} missing, expected {wanted}"),
        Some(_) => format!("{subject} is {seen}, expected {wanted}"),
    };
    (condition, json_test_holds(test, actual), seen, problem)
}

/// Whether the value at a pointer (`None`: absent) passes a test.
fn json_test_holds(test: &JsonTest, actual: Option<&Value>) -> bool {
    match (test, actual) {
        (JsonTest::Exists(want), a) => a.is_some() == *want,
        (_, None) => false,
        (JsonTest::Equals(v), Some(a)) => json_equal(a, v),
        (JsonTest::NotEquals(v), Some(a)) => !json_equal(a, v),
        (JsonTest::Compare(op, n), Some(a)) => a.as_f64().is_some_and(|x| match *op {
            "<" => x < *n,
            "<=" => x <= *n,
            ">" => x > *n,
            _ => x >= *n,
        }),
        (JsonTest::Matches(r), Some(Value::String(text))) => r.is_match(text),
        (JsonTest::Matches(r), Some(other)) => r.is_match(&other.to_string()),
    }
}

/// Equality as a runbook author means it: numbers compare by value, so 1 matches 1.0.
fn json_equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            a.as_f64() == b.as_f64()
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| json_equal(x, y)))
        }
        _ => actual == expected,
    }
}

/// The start of the body on one line, at most [`EXCERPT_CHARS`] characters.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    shorten(one_line.trim())
}

/// Cuts `text` to at most [`EXCERPT_CHARS`] characters, marking the cut with "…".
fn shorten(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(EXCERPT_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
