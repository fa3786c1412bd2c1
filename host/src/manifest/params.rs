//! Runbook parameters: typed values a run is given on the command line
//! (`runcap run restart --var service=api`), checked before anything runs, and read by
//! templates as `{{ params.service }}`.
//!
//! ```toml
//! [runbooks.restart.params.service]
//! values = ["api", "worker"]          # an enum
//! description = "the service to restart"
//!
//! [runbooks.restart.params.wait]
//! type = "int"
//! min = 1
//! max = 600
//! default = 30
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::source::KeyPath;
use super::validate::Validator;

/// `[runbooks.NAME.params.P]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// `type = "string"` (default), `"int"`, `"bool"` or `"enum"` (implied by `values`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `values = ["api", "worker"]`: the only values an enum accepts.
    pub values: Option<Vec<String>>,
    /// `pattern = "[a-z-]+"`: a regular expression the whole string must match.
    pub pattern: Option<String>,
    /// `min = 1`, `max = 600`: bounds of an int.
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// `default = …`: the value when none is given; without one the parameter is required.
    pub default: Option<toml::Value>,
    /// `description = "…"`: shown by `runcap describe`.
    pub description: Option<String>,
}

/// What values a parameter accepts.
#[derive(Debug, Clone)]
pub enum ParamType {
    String { pattern: Option<regex::Regex> },
    Int { min: Option<i64>, max: Option<i64> },
    Bool,
    Enum(Vec<String>),
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub kind: ParamType,
    /// Already checked against `kind`.
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
}

/// Why a value is not one a parameter accepts.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("`{0}` is not an integer")]
    NotInt(String),
    #[error("{value} is below the minimum {min}")]
    BelowMin { value: i64, min: i64 },
    #[error("{value} is above the maximum {max}")]
    AboveMax { value: i64, max: i64 },
    #[error("`{0}` is not true or false")]
    NotBool(String),
    #[error("`{value}` is not one of {}", .allowed.join(", "))]
    NotAllowed { value: String, allowed: Vec<String> },
    #[error("`{value}` does not match the pattern {pattern}")]
    NoMatch { value: String, pattern: String },
    #[error("expected {expected}, found {found}")]
    WrongType { expected: String, found: String },
}

impl fmt::Display for ParamType {
    /// How `describe` and error messages name the type: `int 1..600`, `one of a, b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::String { pattern: None } => f.write_str("string"),
            ParamType::String { pattern: Some(p) } => write!(f, "string matching {}", written(p)),
            ParamType::Int { min, max } => {
                f.write_str("int")?;
                match (min, max) {
                    (None, None) => Ok(()),
                    (min, max) => write!(
                        f,
                        " {}..{}",
                        min.map(|m| m.to_string()).unwrap_or_default(),
                        max.map(|m| m.to_string()).unwrap_or_default()
                    ),
                }
            }
            ParamType::Bool => f.write_str("bool"),
            ParamType::Enum(values) => write!(f, "one of {}", values.join(", ")),
        }
    }
}

impl Param {
    /// The value of `text` as given on the command line, typed (`30` → a number).
    pub fn parse(&self, text: &str) -> Result<serde_json::Value, ParamError> {
        match &self.kind {
            ParamType::Int { .. } => {
                let n: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| ParamError::NotInt(text.to_string()))?;
                self.check(&serde_json::Value::from(n))
            }
            ParamType::Bool => match text.trim() {
                "true" => Ok(serde_json::Value::Bool(true)),
                "false" => Ok(serde_json::Value::Bool(false)),
                _ => Err(ParamError::NotBool(text.to_string())),
            },
            ParamType::String { .. } | ParamType::Enum(_) => {
                self.check(&serde_json::Value::String(text.to_string()))
            }
        }
    }

    /// `value` itself when this parameter accepts it.
    pub fn check(&self, value: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        let wrong = |expected: &str| ParamError::WrongType {
            expected: expected.to_string(),
            found: value.to_string(),
        };
        match (&self.kind, value) {
            (ParamType::Int { min, max }, serde_json::Value::Number(n)) => {
                let v = n.as_i64().ok_or_else(|| wrong("an integer"))?;
                if let Some(min) = *min
                    && v < min
                {
                    return Err(ParamError::BelowMin { value: v, min });
                }
                if let Some(max) = *max
                    && v > max
                {
                    return Err(ParamError::AboveMax { value: v, max });
                }
            }
            (ParamType::Int { .. }, _) => return Err(wrong("an integer")),
            (ParamType::Bool, serde_json::Value::Bool(_)) => {}
            (ParamType::Bool, _) => return Err(wrong("true or false")),
            (ParamType::Enum(allowed), serde_json::Value::String(s)) => {
                if !allowed.contains(s) {
                    return Err(ParamError::NotAllowed {
                        value: s.clone(),
                        allowed: allowed.clone(),
                    });
                }
            }
            (ParamType::String { pattern }, serde_json::Value::String(s)) => {
                if let Some(p) = pattern
                    && !p.is_match(s)
                {
                    return Err(ParamError::NoMatch {
                        value: s.clone(),
                        pattern: written(p).to_string(),
                    });
                }
            }
            (ParamType::Enum(_) | ParamType::String { .. }, _) => return Err(wrong("a string")),
        }
        Ok(value.clone())
    }
}

/// Validates a runbook's `params` table; a broken parameter is reported and left out.
pub fn validate_params(
    v: &mut Validator,
    path: &KeyPath,
    raw: BTreeMap<String, RawParam>,
) -> BTreeMap<String, Param> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let at = path.key(&name);
        if !v.ident(&at, "parameter", &name) {
            continue;
        }
        let kind = match (p.kind.as_deref(), p.values) {
            (None | Some("enum"), Some(values)) => {
                if values.is_empty() {
                    v.error(
                        &at.key("values"),
                        "an enum needs at least one value",
                        "list the accepted values, like `values = [\"api\", \"worker\"]`",
                    );
                    continue;
                }
                ParamType::Enum(values)
            }
            (Some("enum"), None) => {
                v.error(
                    &at,
                    "an enum parameter needs `values`",
                    "list the accepted values, like `values = [\"api\", \"worker\"]`",
                );
                continue;
            }
            (_, Some(_)) => {
                v.error(
                    &at.key("values"),
                    "`values` belongs to enum parameters",
                    "remove `type`, or remove `values`",
                );
                continue;
            }
            (None | Some("string"), None) => {
                let pattern = match &p.pattern {
                    None => None,
                    // The whole value must match, as an exec hole's must.
                    Some(text) => match regex::Regex::new(&format!("^(?:{text})$")) {
                        Ok(re) => Some(re),
                        Err(e) => {
                            v.error(
                                &at.key("pattern"),
                                format!("not a regular expression: {e}"),
                                "write a pattern like \"^[a-z][a-z0-9-]*$\"",
                            );
                            continue;
                        }
                    },
                };
                ParamType::String { pattern }
            }
            (Some("int"), None) => {
                if let (Some(min), Some(max)) = (p.min, p.max)
                    && min > max
                {
                    v.error(
                        &at.key("min"),
                        format!("min {min} is above max {max}"),
                        "swap them",
                    );
                    continue;
                }
                ParamType::Int {
                    min: p.min,
                    max: p.max,
                }
            }
            (Some("bool"), None) => ParamType::Bool,
            (Some(other), None) => {
                v.error(
                    &at.key("type"),
                    format!("`{other}` is not a parameter type"),
                    "use \"string\", \"int\", \"bool\" or \"enum\"",
                );
                continue;
            }
        };
        let misplaced = [
            (
                "pattern",
                p.pattern.is_some() && !matches!(kind, ParamType::String { .. }),
            ),
            (
                "min",
                p.min.is_some() && !matches!(kind, ParamType::Int { .. }),
            ),
            (
                "max",
                p.max.is_some() && !matches!(kind, ParamType::Int { .. }),
            ),
        ];
        for (key, bad) in misplaced {
            if bad {
                v.error(
                    &at.key(key),
                    format!("`{key}` does not apply to a parameter of type {kind}"),
                    format!("remove `{key}`"),
                );
            }
        }
        let mut param = Param {
            kind,
            default: None,
            description: p.description,
        };
        if let Some(d) = p.default {
            match param.check(&super::toml_to_json(d)) {
                Ok(value) => param.default = Some(value),
                Err(e) => {
                    v.error(
                        &at.key("default"),
                        format!("the default is not a valid value: {e}"),
                        format!("give a default of type {}", param.kind),
                    );
                    continue;
                }
            }
        }
        out.insert(name, param);
    }
    out
}

/// Why the values given to a run do not fit its runbook's parameters.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("`{0}` is not NAME=VALUE")]
    Shape(String),
    #[error("runbook `{runbook}` has no parameter `{name}` (it has: {declared})")]
    Unknown {
        runbook: String,
        name: String,
        declared: String,
    },
    #[error("parameter `{name}` is given twice")]
    Twice { name: String },
    #[error("parameter `{name}`: {error} (expected {expected})")]
    Invalid {
        name: String,
        error: ParamError,
        expected: String,
    },
    #[error("parameter `{name}` is required: pass --var {name}=VALUE ({expected})")]
    Missing { name: String, expected: String },
}

/// The `params` object of a run: every `NAME=VALUE` given, typed and checked, and the
/// defaults of the rest. Nothing runs when a value is missing, unknown or invalid.
pub fn resolve_args(
    runbook: &str,
    declared: &BTreeMap<String, Param>,
    given: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, ArgsError> {
    let mut out = serde_json::Map::new();
    for arg in given {
        let Some((name, text)) = arg.split_once('=') else {
            return Err(ArgsError::Shape(arg.clone()));
        };
        let name = name.trim();
        let Some(param) = declared.get(name) else {
            return Err(ArgsError::Unknown {
                runbook: runbook.to_string(),
                name: name.to_string(),
                declared: if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            });
        };
        let value = param.parse(text).map_err(|error| ArgsError::Invalid {
            name: name.to_string(),
            error,
            expected: param.kind.to_string(),
        })?;
        if out.insert(name.to_string(), value).is_some() {
            return Err(ArgsError::Twice {
                name: name.to_string(),
            });
        }
    }
    for (name, param) in declared {
        if out.contains_key(name) {
            continue;
        }
        match &param.default {
            Some(d) => {
                out.insert(name.clone(), d.clone());
            }
            None => {
                return Err(ArgsError::Missing {
                    name: name.clone(),
                    expected: param.kind.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A string parameter's pattern as the manifest wrote it (it is kept anchored).
fn written(p: &regex::Regex) -> &str {
    p.as_str()
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(min: i64, max: i64) -> Param {
        Param {
            kind: ParamType::Int {
                min: Some(min),
                max: Some(max),
            },
            default: Some(serde_json::json!(30)),
            description: None,
        }
    }

    #[test]
    fn values_are_typed_and_bounded() {
        let mut declared = BTreeMap::new();
        declared.insert("wait".to_string(), int(1, 600));
        declared.insert(
            "service".to_string(),
            Param {
                kind: ParamType::Enum(vec!["api".into(), "worker".into()]),
                default: None,
                description: None,
            },
        );
        let got = resolve_args("restart", &declared, &["service=api".into()]).unwrap();
        assert_eq!(
            serde_json::Value::Object(got),
            serde_json::json!({"service": "api", "wait": 30})
        );
        let got = resolve_args(
            "r",
            &declared,
            &["service=worker".into(), "wait=600".into()],
        )
        .unwrap();
        assert_eq!(got["wait"], serde_json::json!(600));

        let e = resolve_args("r", &declared, &["service=db".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `service`: `db` is not one of api, worker (expected one of api, worker)"
        );
        let e =
            resolve_args("r", &declared, &["service=api".into(), "wait=601".into()]).unwrap_err();
        assert!(
            e.to_string().contains("601 is above the maximum 600"),
            "{e}"
        );
        let e = resolve_args("r", &declared, &["service=api".into(), "wait=0".into()]).unwrap_err();
        assert!(e.to_string().contains("0 is below the minimum 1"), "{e}");
        let e =
            resolve_args("r", &declared, &["service=api".into(), "wait=ten".into()]).unwrap_err();
        assert!(e.to_string().contains("`ten` is not an integer"), "{e}");
        let e = resolve_args("r", &declared, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `service` is required: pass --var service=VALUE (one of api, worker)"
        );
        let e = resolve_args("r", &declared, &["colour=red".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("has no parameter `colour` (it has: service, wait)"),
            "{e}"
        );
        let e = resolve_args("r", &declared, &["service".into()]).unwrap_err();
        assert!(matches!(e, ArgsError::Shape(_)));
        let e = resolve_args(
            "r",
            &declared,
            &["service=api".into(), "service=api".into()],
        )
        .unwrap_err();
        assert!(matches!(e, ArgsError::Twice { .. }));
    }

    #[test]
    fn strings_match_their_pattern() {
        let p = Param {
            kind: ParamType::String {
                pattern: Some(regex::Regex::new("^v[0-9]+$").unwrap()),
            },
            default: None,
            description: None,
        };
        assert_eq!(p.parse("v12").unwrap(), serde_json::json!("v12"));
        assert!(p.parse("v1; rm -rf /").is_err());
        assert!(p.check(&serde_json::json!(3)).is_err());
    }

    #[test]
    fn a_written_pattern_must_match_the_whole_value() {
        use crate::manifest::{SourceFile, Sources};
        let text = "[id]\npattern = \"req_[0-9]+\"\n";
        let file = std::sync::Arc::new(SourceFile::new("runcap.toml".into(), text.into()));
        let sources = Sources::single(file, toml::from_str(text).unwrap());
        let mut v = Validator::new(&sources);
        let raw: BTreeMap<String, RawParam> = toml::from_str(text).unwrap();
        let params = validate_params(&mut v, &KeyPath::root(), raw);
        assert!(v.into_diagnostics().is_empty());
        let id = &params["id"];
        assert!(id.parse("req_12").is_ok());
        let e = id.parse("req_1;rm -rf /").unwrap_err().to_string();
        assert!(e.contains("does not match the pattern req_[0-9]+"), "{e}");
        assert!(id.parse("x req_1").is_err());
    }
}
