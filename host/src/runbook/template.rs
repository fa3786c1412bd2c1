//! Templates in step params and `when` conditions, in the Jinja syntax operators know
//! from Ansible: `"{{ steps.probe.details.status }}"`, `when = "steps.probe.status == 'fail'"`.
//!
//! What a template may reference:
//!
//! | name | value |
//! |---|---|
//! | `steps.ID.status` | `ok`, `warn`, `fail` or `skipped` |
//! | `steps.ID.summary` | the one-line summary |
//! | `steps.ID.details.FIELD` | a field of the step's JSON details |
//! | `steps.ID.metrics.NAME` | a metric |
//! | `steps.ID.failure.kind`, `.message` | why it produced no outcome (`timeout`, `denied`, …) |
//! | `steps.ID.duration_ms`, `steps.ID.attempts` | timing and retries |
//! | `vars.NAME` | a value from the manifest's `[vars]` |
//! | `run.id`, `run.runbook`, `run.environment`, `run.dry_run` | the run itself |
//! | `incident.id`, `.severity`, `.failures`, `.failed_step`, `.runbook` | in escalation steps only |
//!
//! Step ids and var names are single words (letters, digits, `_`), so they read plainly
//! in expressions.
//!
//! A param that is exactly one `{{ expression }}` keeps the expression's type (a number
//! stays a number); anything else renders to a string. References are checked by
//! `runcap check`: an unknown step, a step that has not run yet, an unknown step field or
//! an undeclared var is a manifest error, not a run-time surprise.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Fields every step result has.
pub const STEP_FIELDS: &[&str] = &[
    "status",
    "summary",
    "details",
    "metrics",
    "failure",
    "duration_ms",
    "attempts",
];

/// Names a template may start with.
pub const ROOTS: &[&str] = &["steps", "vars", "params", "run", "incident", "trigger"];
/// What a run started by an alert (`runcap serve` triggers) knows of it.
/// `incident` is set when the flap guard started the run as its escalation.
const TRIGGER_FIELDS: &[&str] = &[
    "name",
    "status",
    "labels",
    "annotations",
    "fingerprint",
    "incident",
];

const RUN_FIELDS: &[&str] = &["id", "runbook", "environment", "dry_run"];
const INCIDENT_FIELDS: &[&str] = &[
    "id",
    "severity",
    "failures",
    "failed_step",
    "runbook",
    "status",
    "tier",
];

fn strict() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env
    })
}

fn lenient() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env
    })
}

/// Whether a string contains template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The expression inside a string that is exactly `{{ expr }}`.
fn sole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// A reference found in a template, e.g. `steps.probe.details.status`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference(pub Vec<String>);

impl Reference {
    pub fn root(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Why a condition or template could not be parsed, evaluated or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A condition or template that does not parse or evaluate.
    #[error("{}", describe(.0))]
    Expression(#[from] minijinja::Error),
    /// A params template that does not render; `path` is the param's JSON path.
    #[error("param `{path}`: {}", describe(source))]
    Param {
        path: String,
        source: minijinja::Error,
    },
    #[error("param `{path}`: `{expr}` is undefined")]
    Undefined { path: String, expr: String },
    #[error("param `{path}`: {source}")]
    Value {
        path: String,
        source: serde_json::Error,
    },
}

/// A reference that points at nothing from where it appears; the message says what
/// is wrong and what is available.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("`steps` needs a step id, like `steps.probe.status`")]
    NoStepId,
    #[error("`{reference}` refers to step `{step}`, which has not run at this point")]
    NotYetRun { reference: String, step: String },
    #[error("`{reference}` refers to step `{step}`, which this runbook does not have (steps: {})", .steps.join(", "))]
    NoSuchStep {
        reference: String,
        step: String,
        steps: Vec<String>,
    },
    #[error("`{reference}`: a step has no field `{field}` (fields: {})", STEP_FIELDS.join(", "))]
    NoStepField { reference: String, field: String },
    #[error("`{reference}`: no var `{var}` in [vars] (declared: {})", or_none(.declared, "none"))]
    NoVar {
        reference: String,
        var: String,
        declared: Vec<String>,
    },
    #[error("`vars` needs a name, like `vars.base_url`")]
    NoVarName,
    #[error(
        "`{reference}`: this runbook has no parameter `{param}` (declared: {})",
        or_none(.declared, "none; declare it under [runbooks.NAME.params]")
    )]
    NoParam {
        reference: String,
        param: String,
        declared: Vec<String>,
    },
    #[error("`params` needs a name, like `params.service`")]
    NoParamName,
    #[error("`{reference}`: `run` has {}", RUN_FIELDS.join(", "))]
    RunField { reference: String },
    #[error("`{reference}`: `trigger` has {}", TRIGGER_FIELDS.join(", "))]
    TriggerField { reference: String },
    #[error("`{reference}`: `incident` is only known in escalation steps")]
    IncidentOutside { reference: String },
    #[error("`{reference}`: `incident` has {}", INCIDENT_FIELDS.join(", "))]
    IncidentField { reference: String },
    #[error("unknown name `{root}` (templates can use {})", ROOTS.join(", "))]
    UnknownRoot { root: String },
}

/// The names, comma-separated, or `none` when there are none.
fn or_none(names: &[String], none: &str) -> String {
    if names.is_empty() {
        none.to_string()
    } else {
        names.join(", ")
    }
}

/// The variables a condition or a template string refers to, or why it does not parse.
pub fn references(text: &str, is_condition: bool) -> Result<BTreeSet<Reference>, TemplateError> {
    let names = if is_condition {
        strict()
            .compile_expression(text)?
            .undeclared_variables(true)
    } else if let Some(expr) = sole_expression(text) {
        strict()
            .compile_expression(expr)?
            .undeclared_variables(true)
    } else {
        strict().template_from_str(text)?.undeclared_variables(true)
    };
    Ok(names
        .into_iter()
        .map(|n| Reference(n.split('.').map(str::to_string).collect()))
        .collect())
}

/// What a reference may point at, given where it appears.
pub struct Scope<'a> {
    /// All main steps of the runbook, to tell "not yet" from "no such step".
    pub steps: &'a StepIds<'a>,
    /// How many main steps, in order, have run before this point.
    pub ran: usize,
    /// One more step that has run here though it is not among the first `ran`: the
    /// step a rollback undoes.
    pub also: Option<&'a str>,
    pub vars: &'a [&'a str],
    /// The runbook's declared parameters.
    pub params: &'a [&'a str],
    pub incident: bool,
}

/// A runbook's main step ids with their positions, indexed once so that checking the
/// references of N steps costs N lookups, not N scans.
pub struct StepIds<'a> {
    order: Vec<&'a str>,
    first_at: HashMap<&'a str, usize>,
}

impl<'a> StepIds<'a> {
    /// Indexes ids in run order; a repeated id counts from its first place.
    pub fn new(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let order: Vec<&str> = ids.into_iter().collect();
        let mut first_at = HashMap::with_capacity(order.len());
        for (i, id) in order.iter().enumerate() {
            first_at.entry(*id).or_insert(i);
        }
        StepIds { order, first_at }
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Scope<'_> {
    /// Whether step `id` has run at this point.
    fn has_run(&self, id: &str) -> bool {
        self.also == Some(id) || self.steps.first_at.get(id).is_some_and(|i| *i < self.ran)
    }
}

/// Checks one reference; the error says what is wrong and what is available.
pub fn check_reference(r: &Reference, scope: &Scope) -> Result<(), ReferenceError> {
    let reference = || r.to_string();
    let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let field = r.0.get(1).map(String::as_str);
    match r.root() {
        "steps" => check_step_reference(r, scope),
        "vars" => match field {
            Some(v) if scope.vars.contains(&v) => Ok(()),
            Some(v) => Err(ReferenceError::NoVar {
                reference: reference(),
                var: v.to_string(),
                declared: owned(scope.vars),
            }),
            None => Err(ReferenceError::NoVarName),
        },
        "params" => match field {
            Some(p) if scope.params.contains(&p) => Ok(()),
            Some(p) => Err(ReferenceError::NoParam {
                reference: reference(),
                param: p.to_string(),
                declared: owned(scope.params),
            }),
            None => Err(ReferenceError::NoParamName),
        },
        "run" => match field {
            Some(f) if RUN_FIELDS.contains(&f) => Ok(()),
            _ => Err(ReferenceError::RunField {
                reference: reference(),
            }),
        },
        "trigger" => match field {
            Some(f) if TRIGGER_FIELDS.contains(&f) => Ok(()),
            _ => Err(ReferenceError::TriggerField {
                reference: reference(),
            }),
        },
        "incident" if !scope.incident => Err(ReferenceError::IncidentOutside {
            reference: reference(),
        }),
        "incident" => match field {
            Some(f) if INCIDENT_FIELDS.contains(&f) => Ok(()),
            _ => Err(ReferenceError::IncidentField {
                reference: reference(),
            }),
        },
        other => Err(ReferenceError::UnknownRoot {
            root: other.to_string(),
        }),
    }
}

/// Checks a `trigger.FIELD` reference, where nothing but the alert is known (a
/// trigger's `params`); the error says which fields there are.
pub fn check_trigger_reference(r: &Reference) -> Result<(), String> {
    match r.0.get(1).map(String::as_str) {
        Some(f) if TRIGGER_FIELDS.contains(&f) && f != "incident" => Ok(()),
        _ => Err(format!(
            "`{r}` is not a field of an alert (labels, annotations, status, fingerprint, name)"
        )),
    }
}

/// Checks a `steps.ID.FIELD` reference: the step has run by then, and has the field.
fn check_step_reference(r: &Reference, scope: &Scope) -> Result<(), ReferenceError> {
    let Some(step) = r.0.get(1) else {
        return Err(ReferenceError::NoStepId);
    };
    if !scope.has_run(step) {
        return Err(if scope.steps.first_at.contains_key(step.as_str()) {
            ReferenceError::NotYetRun {
                reference: r.to_string(),
                step: step.clone(),
            }
        } else {
            ReferenceError::NoSuchStep {
                reference: r.to_string(),
                step: step.clone(),
                steps: scope.steps.order.iter().map(|s| s.to_string()).collect(),
            }
        });
    }
    if let Some(field) = r.0.get(2)
        && !STEP_FIELDS.contains(&field.as_str())
    {
        return Err(ReferenceError::NoStepField {
            reference: r.to_string(),
            field: field.clone(),
        });
    }
    Ok(())
}

/// Every template string inside a params value, with its JSON path.
pub fn template_strings(value: &serde_json::Value) -> Vec<(String, &str)> {
    fn walk<'v>(v: &'v serde_json::Value, path: String, out: &mut Vec<(String, &'v str)>) {
        match v {
            serde_json::Value::String(s) if is_template(s) => out.push((path, s)),
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), out);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Evaluates a `when` condition. Missing fields are undefined (falsy), not errors, so
/// `steps.probe.details.status >= 500` is simply false when the probe had no response.
pub fn eval_condition(expr: &str, ctx: &serde_json::Value) -> Result<bool, TemplateError> {
    let compiled = lenient().compile_expression(expr)?;
    let v = compiled.eval(Value::from(minijinja::value::Serde(ctx)))?;
    Ok(v.is_true())
}

/// Resolves every template string in `params` against `ctx`. A reference that does not
/// resolve is an error naming the param.
pub fn render_params(
    params: &serde_json::Value,
    ctx: &serde_json::Value,
) -> Result<serde_json::Value, TemplateError> {
    // Params without a template are the common case: they need no context, and
    // converting it (every earlier step's details) would make a long runbook quadratic.
    if !holds_template(params) {
        return Ok(params.clone());
    }
    let ctx = Value::from(minijinja::value::Serde(ctx));
    render(params, &ctx, "")
}

/// Whether any string in `v` is a template.
fn holds_template(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => is_template(s),
        serde_json::Value::Array(a) => a.iter().any(holds_template),
        serde_json::Value::Object(o) => o.values().any(holds_template),
        _ => false,
    }
}

fn render(
    v: &serde_json::Value,
    ctx: &Value,
    path: &str,
) -> Result<serde_json::Value, TemplateError> {
    Ok(match v {
        serde_json::Value::String(s) if is_template(s) => {
            let at = |source: minijinja::Error| TemplateError::Param {
                path: path.to_string(),
                source,
            };
            if let Some(expr) = sole_expression(s) {
                let value = strict()
                    .compile_expression(expr)
                    .map_err(at)?
                    .eval(ctx.clone())
                    .map_err(at)?;
                if value.is_undefined() {
                    return Err(TemplateError::Undefined {
                        path: path.to_string(),
                        expr: expr.to_string(),
                    });
                }
                serde_json::to_value(&value).map_err(|source| TemplateError::Value {
                    path: path.to_string(),
                    source,
                })?
            } else {
                serde_json::Value::String(strict().render_str(s, ctx.clone()).map_err(at)?)
            }
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| render(x, ctx, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    Ok((k.clone(), render(x, ctx, &p)?))
                })
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> serde_json::Value {
        json!({
            "steps": {"probe": {"status": "fail", "details": {"status": 503, "url": "http://x"}, "metrics": {}, "attempts": 2}},
            "vars": {"base": "http://svc"},
            "run": {"id": "r1", "dry_run": false},
        })
    }

    #[test]
    fn sole_expressions_keep_their_type() {
        let p = json!({"code": "{{ steps.probe.details.status }}", "url": "{{ vars.base }}/health", "n": 3, "list": ["{{ run.id }}"]});
        let r = render_params(&p, &ctx()).unwrap();
        assert_eq!(
            r,
            json!({"code": 503, "url": "http://svc/health", "n": 3, "list": ["r1"]})
        );
    }

    #[test]
    fn unresolved_params_name_the_param() {
        let e = render_params(
            &json!({"a": {"b": "{{ steps.probe.details.nope }}"}}),
            &ctx(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("param `a.b`"), "{e}");
    }

    #[test]
    fn conditions_are_lenient_about_missing_fields() {
        assert!(
            eval_condition(
                "steps.probe.status == 'fail' and steps.probe.details.status >= 500",
                &ctx()
            )
            .unwrap()
        );
        assert!(!eval_condition("steps.probe.details.missing.deeper == 1", &ctx()).unwrap());
        assert!(eval_condition("steps.probe.attempts > 1", &ctx()).unwrap());
    }

    #[test]
    fn references_are_checked() {
        let refs = references("steps.probe.status == 'ok' and vars.base", true).unwrap();
        let steps = StepIds::new(["probe", "later"]);
        let scope = Scope {
            steps: &steps,
            ran: 1,
            also: None,
            vars: &["base"],
            params: &[],
            incident: false,
        };
        for r in &refs {
            check_reference(r, &scope).unwrap();
        }
        let bad = |text: &str| {
            let refs = references(text, true).unwrap();
            refs.iter()
                .find_map(|r| check_reference(r, &scope).err())
                .unwrap()
                .to_string()
        };
        assert!(bad("steps.later.status == 'ok'").contains("has not run"));
        assert!(bad("steps.nope.status == 'ok'").contains("does not have"));
        assert!(bad("steps.probe.colour == 'ok'").contains("no field `colour`"));
        assert!(bad("vars.missing").contains("no var `missing`"));
        assert!(bad("secrets.x").contains("unknown name"));
        assert!(bad("incident.id").contains("only known in escalation"));
        assert!(references("steps.probe.status ==", true).is_err());
    }
}
