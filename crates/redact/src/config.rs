//! Rule selection as written in an environment manifest or plugin parameters.

use serde::{Deserialize, Serialize};

use crate::rules::{Builtin, Rule, default_replacement};
use crate::{Error, Redactor};

/// Which rules to apply. Deserialises from TOML or JSON; unknown fields are rejected so a typo
/// in a manifest fails loudly instead of silently redacting less.
///
/// ```toml
/// rules = ["email", "ssn", "credit_card", "phone", "api_key"]   # omit for the default set
/// include_ip = true                                              # adds ipv4 and ipv6
///
/// [[custom]]
/// name = "employee_id"
/// pattern = "EMP-[0-9]{6}"
/// replacement = "[EMPLOYEE_ID]"                                  # optional
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Built-in rules to enable, by name. `None` means the default set
    /// (email, ssn, credit_card, phone, api_key, private_key); an empty list enables none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// Also redact IPv4 and IPv6 addresses.
    #[serde(default)]
    pub include_ip: bool,
    /// Site-specific regex rules, applied after the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomRule>,
}

/// A site-specific rule from a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Name used in counts; must not collide with a built-in rule.
    pub name: String,
    /// Regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Token written in place of a match; defaults to `[NAME_REDACTED]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl Config {
    /// Compiles the selection into a [`Redactor`], with an error naming the first bad rule.
    pub fn build(&self) -> Result<Redactor, Error> {
        let mut builtins = match &self.rules {
            None => Builtin::DEFAULT.to_vec(),
            Some(names) => names
                .iter()
                .map(|n| {
                    Builtin::from_name(n).ok_or_else(|| Error::UnknownRule {
                        name: n.clone(),
                        known: Builtin::known_names(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if self.include_ip {
            for b in [Builtin::Ipv4, Builtin::Ipv6] {
                if !builtins.contains(&b) {
                    builtins.push(b);
                }
            }
        }
        let mut rules: Vec<Rule> = builtins.into_iter().map(Rule::builtin).collect();
        for c in &self.custom {
            let replacement = c
                .replacement
                .clone()
                .unwrap_or_else(|| default_replacement(&c.name));
            rules.push(Rule::custom(&c.name, &c.pattern, &replacement)?);
        }
        Redactor::new(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Redactor) -> Vec<&str> {
        r.rules().iter().map(Rule::name).collect()
    }

    #[test]
    fn default_and_selected() {
        let r = Config::default().build().unwrap();
        assert_eq!(
            names(&r),
            [
                "email",
                "ssn",
                "credit_card",
                "phone",
                "api_key",
                "private_key"
            ]
        );
        let c = Config {
            rules: Some(vec!["ssn".into()]),
            include_ip: true,
            custom: vec![CustomRule {
                name: "emp".into(),
                pattern: "EMP-[0-9]{6}".into(),
                replacement: None,
            }],
        };
        let r = c.build().unwrap();
        assert_eq!(names(&r), ["ssn", "ipv4", "ipv6", "emp"]);
        assert_eq!(r.rules()[3].replacement(), "[EMP_REDACTED]");
        assert_eq!(
            r.redact_str("EMP-123456 at 10.0.0.1"),
            "[EMP_REDACTED] at [IPV4_REDACTED]"
        );
    }

    #[test]
    fn errors_name_the_rule() {
        let c = Config {
            rules: Some(vec!["emial".into()]),
            ..Config::default()
        };
        let msg = c.build().unwrap_err().to_string();
        assert!(
            msg.contains("emial") && msg.contains("credit_card"),
            "{msg}"
        );

        let c = Config {
            rules: Some(vec!["ssn".into(), "ssn".into()]),
            ..Config::default()
        };
        assert!(matches!(c.build(), Err(Error::DuplicateRule(n)) if n == "ssn"));

        let dup = CustomRule {
            name: "x".into(),
            pattern: "a".into(),
            replacement: None,
        };
        let c = Config {
            custom: vec![dup.clone(), dup],
            ..Config::default()
        };
        assert!(matches!(c.build(), Err(Error::DuplicateRule(n)) if n == "x"));
    }

    #[test]
    fn json_form_rejects_unknown_fields() {
        let c: Config = serde_json::from_str(r#"{"include_ip": true}"#).unwrap();
        assert!(c.include_ip && c.rules.is_none());
        assert!(serde_json::from_str::<Config>(r#"{"rule": ["email"]}"#).is_err());
        assert!(
            serde_json::from_str::<Config>(
                r#"{"custom": [{"name": "a", "pattern": "b", "extra": 1}]}"#
            )
            .is_err()
        );
    }
}
