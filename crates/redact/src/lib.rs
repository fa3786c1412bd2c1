//! Redaction of personal data and credentials in text, log streams and JSON.
//!
//! One rule engine serves two users: the log-scrubbing plugin (compiled to `wasm32-wasip2`),
//! which streams files through [`Redactor::redact_text_stream`] or
//! [`Redactor::redact_jsonl_stream`], and the host, which passes every string it stores or
//! prints through [`Redactor::redact_str`] or [`Redactor::redact_json_value`] with the values of
//! granted secrets added by [`Redactor::with_literals`].
//!
//! Built-in rules are hand-written scanners behind cheap gates (an `@`, a digit run, one
//! Aho-Corasick pass for keywords), so the common log line is checked in a few linear scans and
//! copied through without allocation. Custom rules are regular expressions.
//!
//! ```
//! use runcap_redact::{Config, Counts};
//!
//! let redactor = Config::default().build().unwrap();
//! let mut counts = Counts::new();
//! let out = redactor.redact_str_counted("mail bob@example.com, card 4111 1111 1111 1111", &mut counts);
//! assert_eq!(out, "mail [EMAIL_REDACTED], card [CC_REDACTED]");
//! assert_eq!(counts.get("credit_card"), 1);
//! ```

#![warn(missing_docs)]

mod blocks;
mod chars;
mod config;
mod counts;
mod email;
mod engine;
mod error;
mod ipv6;
mod json;
mod keys;
mod literals;
pub mod luhn;
mod numeric;
mod pem;
mod rules;
mod simd;
mod stream;

pub use config::{Config, CustomRule};
pub use counts::{Counts, Stats};
pub use engine::{Match, Redactor};
pub use error::Error;
pub use literals::MIN_LITERAL_LEN;
pub use rules::{Builtin, Rule, SECRET_REPLACEMENT, SECRET_RULE};
pub use stream::DEFAULT_MAX_LINE;
