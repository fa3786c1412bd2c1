//! Durations in params as people write them ("30s", "1m 30s", "200ms"), checked when
//! params are read: `runcap check` refuses "30 parsecs" before anything runs.

use std::fmt;
use std::time::Duration;

/// A duration written as text in params; parsed with `humantime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// A duration of `secs` seconds (for defaults).
    pub const fn secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// A duration of `ms` milliseconds (for defaults).
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({e}); write it like \"30s\", \"1m 30s\" or \"200ms\""
                ))
            })
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as \"30s\", \"1m 30s\" or \"200ms\".",
            "examples": ["300ms", "5s", "1m 30s"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_people_write_and_names_what_it_cannot() {
        let d: HumanDuration = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        let e = serde_json::from_str::<HumanDuration>("\"30 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`30 parsecs` is not a duration"), "{e}");
        assert_eq!(
            serde_json::to_string(&HumanDuration::millis(200)).unwrap(),
            "\"200ms\""
        );
    }
}
