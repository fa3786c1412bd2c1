//! `exec`: runs one command the manifest declares (`grants.exec`) and judges how it
//! ended, for the steps operators still typed by hand: a migration, `certbot renew`, a
//! WAL checkpoint, `docker compose restart`.
//!
//! ```toml
//! [plugins.migrate.grants.exec.commands.upgrade]
//! program = "/srv/app/bin/migrate"
//! args = ["up", "--to", "{{ version }}"]
//! params.version = { type = "string", pattern = "[0-9]{14}" }
//! timeout = "10m"
//!
//! [[runbooks.deploy.steps]]
//! id = "migrate"
//! uses = "migrate"
//! with = { command = "upgrade", args = { version = "20261204120000" }, expect = { stdout_contains = "up to date" } }
//! ```
//!
//! The step passes when the command exits with one of `expect.exit_codes` (default
//! `[0]`) and its output meets the other expectations. Its exit code, duration, output
//! (redacted by the host) and argument list are returned in `details`.

use std::collections::BTreeMap;

use runcap_sdk::{ActionError, CommandResult, Context, Outcome, Status};

/// A value for one of the command's holes.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ArgValue {
    Int(i64),
    Text(String),
}

impl ArgValue {
    fn text(&self) -> String {
        match self {
            ArgValue::Int(n) => n.to_string(),
            ArgValue::Text(s) => s.clone(),
        }
    }
}

/// What the command's end must look like for the step to pass.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exit codes that count as success.
    #[serde(default = "zero")]
    pub exit_codes: Vec<i32>,
    /// Text stdout must contain.
    pub stdout_contains: Option<String>,
    /// A regular expression stdout must match (somewhere).
    pub stdout_matches: Option<String>,
    /// Text neither stdout nor stderr may contain (`"ERROR"`).
    pub output_lacks: Option<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            exit_codes: zero(),
            stdout_contains: None,
            stdout_matches: None,
            output_lacks: None,
        }
    }
}

fn zero() -> Vec<i32> {
    vec![0]
}

/// The step's params as written.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Written {
    /// The declared command to run (`grants.exec.commands.NAME`).
    #[schemars(extend("x-runcap-grant" = "exec"))]
    pub command: String,
    /// Values for its holes, by name.
    #[serde(default)]
    pub args: BTreeMap<String, ArgValue>,
    #[serde(default)]
    pub expect: Expect,
}

/// The step's params, checked when read (so `runcap check` refuses a bad pattern).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(try_from = "Written")]
pub struct Params {
    pub written: Written,
    #[schemars(skip)]
    matches: Option<regex::Regex>,
}

impl TryFrom<Written> for Params {
    type Error = String;
    fn try_from(w: Written) -> Result<Self, String> {
        if w.expect.exit_codes.is_empty() {
            return Err("expect.exit_codes is empty: no exit could pass".into());
        }
        let matches = match &w.expect.stdout_matches {
            Some(p) => Some(regex::Regex::new(p).map_err(|e| {
                format!("expect.stdout_matches: `{p}` is not a regular expression: {e}")
            })?),
            None => None,
        };
        Ok(Params {
            written: w,
            matches,
        })
    }
}

/// What went wrong with a command that ran, if anything.
fn judge(p: &Params, r: &CommandResult) -> Vec<String> {
    let e = &p.written.expect;
    let mut problems = Vec::new();
    if r.timed_out {
        problems.push(format!(
            "ran past its time limit ({} ms) and was killed",
            r.duration_ms
        ));
    } else {
        match (r.exit_code, r.signal) {
            (Some(code), _) if !e.exit_codes.contains(&code) => problems.push(format!(
                "exited {code}, expected {}",
                e.exit_codes
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            (None, Some(sig)) => problems.push(format!("was killed by signal {sig}")),
            _ => {}
        }
    }
    if let Some(want) = &e.stdout_contains
        && !r.stdout.contains(want.as_str())
    {
        problems.push(format!("stdout does not contain {want:?}"));
    }
    if let (Some(re), Some(p)) = (&p.matches, &e.stdout_matches)
        && !re.is_match(&r.stdout)
    {
        problems.push(format!("stdout does not match `{p}`"));
    }
    if let Some(bad) = &e.output_lacks
        && (r.stdout.contains(bad.as_str()) || r.stderr.contains(bad.as_str()))
    {
        problems.push(format!("output contains {bad:?}"));
    }
    problems
}

pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    let w = &p.written;
    let values: Vec<(String, String)> = w.args.iter().map(|(k, v)| (k.clone(), v.text())).collect();
    let args: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = ctx.exec(&w.command, &args)?;
    let shown = r.argv.join(" ");
    if r.skipped {
        return Ok(Outcome::ok(format!("dry run: would run {shown}"))
            .detail("argv", r.argv.clone())
            .detail("skipped", true));
    }
    let problems = judge(&p, &r);
    let (status, summary) = if problems.is_empty() {
        let code = r.exit_code.unwrap_or_default();
        (
            Status::Ok,
            format!("`{}` exited {code} in {} ms", w.command, r.duration_ms),
        )
    } else {
        (
            Status::Fail,
            format!("`{}` {}", w.command, problems.join("; ")),
        )
    };
    let mut out = Outcome::new(status, summary)
        .detail("argv", r.argv.clone())
        .detail("duration_ms", r.duration_ms)
        .detail("timed_out", r.timed_out)
        .detail("stdout", r.stdout.clone())
        .detail("stderr", r.stderr.clone())
        .detail("stdout_truncated", r.stdout_truncated)
        .detail("stderr_truncated", r.stderr_truncated)
        .metric("duration_ms", r.duration_ms as f64);
    if let Some(code) = r.exit_code {
        out = out.detail("exit_code", code);
    }
    if let Some(sig) = r.signal {
        out = out.detail("signal", sig);
    }
    Ok(out)
}

runcap_sdk::plugin!(name: "exec", description: "Runs a command the manifest declares and checks its exit code and output.", run: run);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::ExecError;
    use runcap_sdk::testing::MockHost;

    fn params(json: serde_json::Value) -> Params {
        serde_json::from_value(json).unwrap()
    }

    fn ended(code: i32, stdout: &str) -> CommandResult {
        CommandResult {
            exit_code: Some(code),
            stdout: stdout.into(),
            argv: vec!["/usr/bin/certbot".into(), "renew".into()],
            duration_ms: 12,
            ..Default::default()
        }
    }

    #[test]
    fn an_expected_exit_and_output_pass_and_the_holes_reach_the_host() {
        let host = MockHost::new().answer_exec(Ok(ended(0, "no renewals were attempted")));
        let out = run(
            &host.context(),
            params(
                serde_json::json!({"command": "renew", "args": {"n": 3, "who": "api"},
                "expect": {"stdout_contains": "renewals"}}),
            ),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok, "{}", out.summary);
        assert_eq!(out.details["exit_code"], 0);
        assert_eq!(
            host.exec_calls.borrow()[0],
            (
                "renew".to_string(),
                vec![("n".into(), "3".into()), ("who".into(), "api".into())]
            )
        );
    }

    #[test]
    fn a_wrong_exit_code_or_output_fails_naming_what_was_expected() {
        let host = MockHost::new()
            .answer_exec(Ok(ended(2, "")))
            .answer_exec(Ok(ended(0, "ERROR: disk full")))
            .answer_exec(Ok(CommandResult {
                timed_out: true,
                signal: Some(9),
                ..ended(0, "")
            }));
        let p = || {
            params(
                serde_json::json!({"command": "c", "expect": {"exit_codes": [0, 1], "stdout_matches": "^ok", "output_lacks": "ERROR"}}),
            )
        };
        let out = run(&host.context(), p()).unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.summary.contains("exited 2, expected 0 or 1"),
            "{}",
            out.summary
        );
        let out = run(&host.context(), p()).unwrap();
        assert!(
            out.summary.contains("does not match `^ok`"),
            "{}",
            out.summary
        );
        assert!(
            out.summary.contains("output contains \"ERROR\""),
            "{}",
            out.summary
        );
        let out = run(&host.context(), p()).unwrap();
        assert!(
            out.summary.contains("ran past its time limit"),
            "{}",
            out.summary
        );
    }

    #[test]
    fn a_denied_command_fails_the_step_and_a_dry_run_passes_without_running() {
        let host = MockHost::new().answer_exec(Err(ExecError::Denied("not declared".into())));
        let err = run(&host.context(), params(serde_json::json!({"command": "x"}))).unwrap_err();
        assert!(matches!(err, ActionError::Denied(m) if m == "not declared"));
        let host = MockHost::new().answer_exec(Ok(CommandResult {
            skipped: true,
            exit_code: None,
            ..ended(0, "")
        }));
        let out = run(
            &host.context(),
            params(serde_json::json!({"command": "renew"})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok);
        assert!(
            out.summary
                .starts_with("dry run: would run /usr/bin/certbot renew")
        );
    }

    #[test]
    fn a_bad_pattern_or_no_exit_code_is_refused_when_params_are_read() {
        for (json, expect) in [
            (
                serde_json::json!({"command": "c", "expect": {"stdout_matches": "("}}),
                "is not a regular expression",
            ),
            (
                serde_json::json!({"command": "c", "expect": {"exit_codes": []}}),
                "no exit could pass",
            ),
            (
                serde_json::json!({"command": "c", "with": 1}),
                "unknown field",
            ),
        ] {
            let e = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e}");
        }
    }
}
