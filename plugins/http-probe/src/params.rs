//! The params a runbook step passes to the probe, and the small value types they are
//! made of. Everything that can be checked without sending a request is checked while
//! deserializing, so `runcap check` reports it before a run starts.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use runcap_sdk::HumanDuration;

/// What to request and what the answer must look like.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The http:// or https:// URL to request; the manifest's http grant must allow it.
    #[serde(deserialize_with = "deserialize_url")]
    #[schemars(with = "String", extend("format" = "uri"))]
    pub url: String,
    /// HTTP method. A mutation (POST, PUT, PATCH, DELETE) is not sent in a dry run.
    #[serde(default)]
    pub method: ProbeMethod,
    /// Request headers, name to value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body, sent as-is (usually with POST).
    pub body: Option<String>,
    /// Whole-request timeout, e.g. "5s" or "1500ms"; the host also caps it at the step's deadline.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How many redirects to follow; 0 judges the 3xx answer itself.
    #[serde(default)]
    pub follow_redirects: u8,
    /// Conditions that must hold, or the outcome is `fail`. Without `status`, the status
    /// must be 2xx.
    #[serde(default)]
    pub expect: Conditions,
    /// Conditions that should hold, or the outcome is `warn` (when every `expect`
    /// condition holds). No status rule applies unless `status` is given.
    #[serde(default)]
    pub warn: Conditions,
    /// Invert the verdict: the `expect` conditions must fail. Drills use it to prove a
    /// check notices a fault (an expired certificate, a corrupt index).
    #[serde(default)]
    pub expect_fail: bool,
    /// Send the request this many times (2 to 1000) and judge the batch: a mini load
    /// test. Each answer is judged by `expect`; `p95_below` and `success_rate_above`
    /// judge them together.
    pub samples: Option<u32>,
    /// With `samples`: the 95th percentile of response times must be below this.
    pub p95_below: Option<HumanDuration>,
    /// With `samples`: the share of answers meeting `expect` must be above this (0 to 1).
    pub success_rate_above: Option<f64>,
}

impl Params {
    /// Checks what serde cannot: the batch settings go together and make sense.
    pub fn check_batch(&self) -> Result<(), String> {
        match self.samples {
            Some(n) if !(2..=1000).contains(&n) => {
                return Err(format!("samples: {n} is not from 2 to 1000"));
            }
            None if self.p95_below.is_some() || self.success_rate_above.is_some() => {
                return Err(
                    "p95_below and success_rate_above judge a batch: add samples = 20 (or another count)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(r) = self.success_rate_above
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!(
                "success_rate_above: {r} is not a share from 0 to 1"
            ));
        }
        Ok(())
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// The methods a probe may use: reads, and the mutations a runbook step makes through an
/// API (create, replace, update, delete), which a dry run records without sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeMethod {
    /// GET the URL.
    #[default]
    Get,
    /// HEAD the URL: status and headers only.
    Head,
    /// POST `body` to the URL.
    Post,
    /// PUT `body` to the URL.
    Put,
    /// PATCH the URL with `body`.
    Patch,
    /// DELETE the URL.
    Delete,
}

impl ProbeMethod {
    /// The method as written in summaries, e.g. "GET".
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMethod::Get => "GET",
            ProbeMethod::Head => "HEAD",
            ProbeMethod::Post => "POST",
            ProbeMethod::Put => "PUT",
            ProbeMethod::Patch => "PATCH",
            ProbeMethod::Delete => "DELETE",
        }
    }
}

impl From<ProbeMethod> for runcap_sdk::Method {
    fn from(m: ProbeMethod) -> Self {
        match m {
            ProbeMethod::Get => runcap_sdk::Method::Get,
            ProbeMethod::Head => runcap_sdk::Method::Head,
            ProbeMethod::Post => runcap_sdk::Method::Post,
            ProbeMethod::Put => runcap_sdk::Method::Put,
            ProbeMethod::Patch => runcap_sdk::Method::Patch,
            ProbeMethod::Delete => runcap_sdk::Method::Delete,
        }
    }
}

/// One set of conditions on a response; `expect` and `warn` each hold one.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Accepted status code, or a list of accepted codes, e.g. 200 or [200, 204].
    pub status: Option<StatusSpec>,
    /// The response headers must arrive in less than this, e.g. "300ms".
    pub response_time_below: Option<HumanDuration>,
    /// Text the response body must contain.
    pub body_contains: Option<String>,
    /// JSON pointers (RFC 6901) into the response body and the value each must have,
    /// e.g. {"/status": "up", "/checks/db": true}, or a test on it: {"<": 0.9},
    /// {">=": 95}, {"!=": "down"}, {"matches": "^v2\\."}, {"exists": true}.
    #[serde(default, deserialize_with = "deserialize_pointers")]
    pub json: BTreeMap<String, Value>,
    /// Response headers (names in any case) and the value each must have, or a test on
    /// it as for `json`: {"content-type": {"matches": "json"}, "x-version": "2"}.
    #[serde(default, deserialize_with = "deserialize_header_tests")]
    pub headers: BTreeMap<String, Value>,
    /// The body must be shorter than this many bytes.
    pub body_bytes_below: Option<u64>,
    /// The https certificate must stay valid for more than this many days.
    /// Fails on a plain http response, which has no certificate.
    pub cert_days_min: Option<u32>,
}

/// The status codes a condition accepts: written as one number or a list of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSpec(pub Vec<u16>);

impl StatusSpec {
    /// Whether `status` is one of the accepted codes.
    pub fn accepts(&self, status: u16) -> bool {
        self.0.contains(&status)
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;

        fn code<E: de::Error>(v: i128) -> Result<u16, E> {
            if (100..=599).contains(&v) {
                Ok(v as u16)
            } else {
                Err(E::custom(format!(
                    "{v} is not an HTTP status code (100 to 599)"
                )))
            }
        }

        impl<'de> Visitor<'de> for StatusVisitor {
            type Value = StatusSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code or a list of status codes")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(vec![code(v as i128)?]))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(vec![code(v as i128)?]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSpec, A::Error> {
                let mut codes = Vec::new();
                while let Some(v) = seq.next_element::<i64>()? {
                    codes.push(code(v as i128)?);
                }
                if codes.is_empty() {
                    return Err(de::Error::custom("the list of status codes is empty"));
                }
                Ok(StatusSpec(codes))
            }
        }

        deserializer.deserialize_any(StatusVisitor)
    }
}

impl JsonSchema for StatusSpec {
    fn schema_name() -> Cow<'static, str> {
        "StatusSpec".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                {
                    "type": "array",
                    "items": { "type": "integer", "minimum": 100, "maximum": 599 },
                    "minItems": 1
                }
            ]
        })
    }
}

fn deserialize_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| de::Error::custom(format!("{url:?} is not an http:// or https:// URL")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(de::Error::custom(format!("{url:?} has no host")));
    }
    Ok(url)
}

/// What a JSON condition asks of the value at its pointer.
#[derive(Debug)]
pub enum JsonTest<'a> {
    /// Equal to this value (numbers by value).
    Equals(&'a Value),
    /// Not equal to this value.
    NotEquals(&'a Value),
    /// A number, compared with `op` (`<`, `<=`, `>`, `>=`) to this one.
    Compare(&'static str, f64),
    /// Text (a non-string is matched as its JSON) matching this regular expression.
    Matches(regex_lite::Regex),
    /// Present (true) or absent (false).
    Exists(bool),
}

impl<'a> JsonTest<'a> {
    /// Reads a condition's value: `{"<": 0.9}` and the like are tests, anything else
    /// is a value to equal.
    pub fn parse(expected: &'a Value) -> Result<Self, String> {
        let Some((op, arg)) = expected
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Ok(JsonTest::Equals(expected));
        };
        Ok(match op.as_str() {
            "==" => JsonTest::Equals(arg),
            "!=" => JsonTest::NotEquals(arg),
            "<" | "<=" | ">" | ">=" => {
                let n = arg
                    .as_f64()
                    .ok_or_else(|| format!("`{op}` compares numbers; {arg} is not one"))?;
                let op = match op.as_str() {
                    "<" => "<",
                    "<=" => "<=",
                    ">" => ">",
                    _ => ">=",
                };
                JsonTest::Compare(op, n)
            }
            "matches" => {
                let pattern = arg
                    .as_str()
                    .ok_or_else(|| "`matches` takes a regular expression as text".to_string())?;
                JsonTest::Matches(
                    regex_lite::Regex::new(pattern)
                        .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))?,
                )
            }
            "exists" => JsonTest::Exists(
                arg.as_bool()
                    .ok_or_else(|| "`exists` takes true or false".to_string())?,
            ),
            _ => return Ok(JsonTest::Equals(expected)),
        })
    }
}

fn deserialize_header_tests<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Value>, D::Error> {
    let map = BTreeMap::<String, Value>::deserialize(deserializer)?;
    for (name, expected) in &map {
        JsonTest::parse(expected).map_err(|e| de::Error::custom(format!("{name}: {e}")))?;
    }
    Ok(map)
}

fn deserialize_pointers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Value>, D::Error> {
    let map = BTreeMap::<String, Value>::deserialize(deserializer)?;
    if let Some(bad) = map.keys().find(|k| !k.is_empty() && !k.starts_with('/')) {
        return Err(de::Error::custom(format!(
            "{bad:?} is not a JSON pointer: it must start with \"/\", e.g. \"/{bad}\""
        )));
    }
    for (pointer, expected) in &map {
        JsonTest::parse(expected).map_err(|e| de::Error::custom(format!("{pointer}: {e}")))?;
    }
    Ok(map)
}
