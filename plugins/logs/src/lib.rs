//! `logs`: reads the end of a log the manifest grants (`grants.logs`) and judges how many
//! lines match, for the checks operators ran with `tail` and `grep`: "show the last 50
//! lines of the app log", "alert if more than 10 ERROR lines in 5 minutes".
//!
//! ```toml
//! [plugins.logs.grants.logs]
//! sources = { app = "logs/app.log" }
//!
//! [[runbooks.triage.steps]]
//! id = "errors"
//! uses = "logs"
//! with = { source = "app", grep = "ERROR", since = "5m", fail_above = 10 }
//! ```
//!
//! The host reads the file, redacts every line and only then filters it, so the lines
//! and counts a step reports never hold a secret. The step fails when more lines match
//! than `fail_above`, warns above `warn_above`, and passes otherwise; its details hold
//! the counts and the last `tail` matching lines.

use runcap_sdk::{ActionError, Context, HumanDuration, LogLines, LogQuery, Outcome, Status};

/// Lines shown when params name no `tail`.
const DEFAULT_TAIL: u32 = 20;

fn default_tail() -> u32 {
    DEFAULT_TAIL
}

/// The step's params as written.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Written {
    /// The log to read: a name from `grants.logs.sources`, or `service:NAME`.
    #[schemars(extend("x-runcap-grant" = "logs"))]
    pub source: String,
    /// Only lines matching this regular expression (`"ERROR|FATAL"`).
    pub grep: Option<String>,
    /// Only lines stamped within this long before now (`"5m"`).
    pub since: Option<HumanDuration>,
    /// How many of the last matching lines to show.
    #[serde(default = "default_tail")]
    pub tail: u32,
    /// Fail when more lines than this match.
    pub fail_above: Option<u64>,
    /// Warn when more lines than this match.
    pub warn_above: Option<u64>,
}

/// The step's params, checked when read (so `runcap check` refuses a bad pattern).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(try_from = "Written")]
pub struct Params {
    pub written: Written,
}

impl TryFrom<Written> for Params {
    type Error = String;
    fn try_from(w: Written) -> Result<Self, String> {
        if let Some(p) = &w.grep {
            regex::Regex::new(p)
                .map_err(|e| format!("grep: `{p}` is not a regular expression: {e}"))?;
        }
        if let Some(s) = w.since
            && s.get().as_secs() == 0
        {
            return Err(format!(
                "since: {s} is less than a second; log timestamps are compared in whole seconds"
            ));
        }
        if let (Some(warn), Some(fail)) = (w.warn_above, w.fail_above)
            && warn > fail
        {
            return Err(format!(
                "warn_above ({warn}) is above fail_above ({fail}): the step would fail before it could warn"
            ));
        }
        Ok(Params { written: w })
    }
}

/// One line for the report: what was counted, where, and against what.
fn summary(w: &Written, r: &LogLines) -> String {
    let noun = if r.matched == 1 { "line" } else { "lines" };
    let mut out = format!("{}: {} {noun}", w.source, r.matched);
    if let Some(p) = &w.grep {
        out += &format!(" matching `{p}`");
    }
    if let Some(s) = w.since {
        out += &format!(" in the last {s}");
    }
    let limits: Vec<String> = [("fail", w.fail_above), ("warn", w.warn_above)]
        .into_iter()
        .filter_map(|(what, n)| Some(format!("{what} above {}", n?)))
        .collect();
    if !limits.is_empty() {
        out += &format!(" ({})", limits.join(", "));
    }
    out
}

pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    let w = &p.written;
    let query = LogQuery {
        source: w.source.clone(),
        tail: Some(w.tail),
        since: w.since.map(HumanDuration::get),
        grep: w.grep.clone(),
        max_lines: None,
    };
    let r = ctx.read_logs(&query)?;
    let above = |limit: Option<u64>| limit.is_some_and(|n| r.matched > n);
    let status = if above(w.fail_above) {
        Status::Fail
    } else if above(w.warn_above) {
        Status::Warn
    } else {
        Status::Ok
    };
    Ok(Outcome::new(status, summary(w, &r))
        .detail("source", w.source.clone())
        .detail("matched", r.matched)
        .detail("scanned", r.scanned)
        .detail("unstamped", r.unstamped)
        .detail("truncated", r.truncated)
        .detail("lines", r.lines.clone())
        .metric("matched", r.matched as f64))
}

runcap_sdk::plugin!(name: "logs", description: "Counts and shows log lines matching a pattern within a time window, and judges the count.", run: run);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::LogsError;
    use runcap_sdk::testing::MockHost;
    use std::time::Duration;

    fn params(json: serde_json::Value) -> Params {
        serde_json::from_value(json).unwrap()
    }

    fn read(matched: u64, lines: &[&str]) -> LogLines {
        LogLines {
            lines: lines.iter().map(|l| l.to_string()).collect(),
            matched,
            scanned: 4000,
            truncated: matched > lines.len() as u64,
            unstamped: 3,
        }
    }

    #[test]
    fn the_count_is_judged_against_both_limits_and_the_query_reaches_the_host() {
        let host = MockHost::new()
            .answer_log_read(Ok(read(12, &["a ERROR x", "b ERROR y"])))
            .answer_log_read(Ok(read(7, &[])))
            .answer_log_read(Ok(read(3, &[])));
        let p = || {
            params(
                serde_json::json!({"source": "app", "grep": "ERROR", "since": "5m",
                "tail": 2, "fail_above": 10, "warn_above": 5}),
            )
        };
        let out = run(&host.context(), p()).unwrap();
        assert_eq!(out.status, Status::Fail);
        assert_eq!(
            out.summary,
            "app: 12 lines matching `ERROR` in the last 5m (fail above 10, warn above 5)"
        );
        assert_eq!(out.details["matched"], 12);
        assert_eq!(out.details["scanned"], 4000);
        assert_eq!(
            out.details["lines"],
            serde_json::json!(["a ERROR x", "b ERROR y"])
        );
        assert_eq!(out.metrics, vec![("matched".to_string(), 12.0)]);
        assert_eq!(run(&host.context(), p()).unwrap().status, Status::Warn);
        assert_eq!(run(&host.context(), p()).unwrap().status, Status::Ok);
        assert_eq!(
            host.log_reads.borrow()[0],
            LogQuery {
                source: "app".into(),
                tail: Some(2),
                since: Some(Duration::from_secs(300)),
                grep: Some("ERROR".into()),
                max_lines: None,
            }
        );
    }

    #[test]
    fn without_limits_the_step_shows_the_last_lines_and_passes() {
        let host = MockHost::new().answer_log_read(Ok(read(1, &["only"])));
        let out = run(
            &host.context(),
            params(serde_json::json!({"source": "app"})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.summary, "app: 1 line");
        assert_eq!(host.log_reads.borrow()[0].tail, Some(DEFAULT_TAIL));
    }

    #[test]
    fn a_denied_or_missing_log_is_an_error_of_the_step() {
        let host = MockHost::new().answer_log_read(Err(LogsError::Unavailable(
            "logs/app.log does not exist".into(),
        )));
        let err = run(
            &host.context(),
            params(serde_json::json!({"source": "app"})),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Failed(m) if m.contains("does not exist")));
        let host = MockHost::new();
        let err = run(
            &host.context(),
            params(serde_json::json!({"source": "nope"})),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Denied(m) if m.contains("nope")));
    }

    #[test]
    fn bad_params_are_refused_when_read() {
        for (json, expect) in [
            (
                serde_json::json!({"source": "app", "grep": "("}),
                "is not a regular expression",
            ),
            (
                serde_json::json!({"source": "app", "since": "5 parsecs"}),
                "is not a duration",
            ),
            (
                serde_json::json!({"source": "app", "since": "200ms"}),
                "less than a second",
            ),
            (
                serde_json::json!({"source": "app", "warn_above": 10, "fail_above": 5}),
                "would fail before it could warn",
            ),
            (
                serde_json::json!({"source": "app", "lines": 5}),
                "unknown field",
            ),
        ] {
            let e = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e}");
        }
        let p = params(serde_json::json!({"source": "app", "grep": "(?i)error"}));
        assert_eq!(p.written.grep.as_deref(), Some("(?i)error"));
    }
}
