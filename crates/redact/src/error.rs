//! Errors raised while building a [`Redactor`](crate::Redactor) from rules or a manifest section.

/// Why a rule set could not be compiled; each variant names the rule at fault so a manifest
/// author can find it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule name in `rules = [...]` is not a built-in rule.
    #[error("unknown rule `{name}`; known rules: {known}")]
    UnknownRule {
        /// The name as written.
        name: String,
        /// Comma-separated list of valid names.
        known: String,
    },
    /// Two rules share a name, so their counts could not be told apart.
    #[error("rule `{0}` is defined more than once")]
    DuplicateRule(String),
    /// A custom rule name is empty, too long, uses odd characters or takes a reserved name.
    #[error("invalid rule name `{name}`: {reason}")]
    InvalidName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A custom rule's regular expression does not compile.
    #[error("custom rule `{name}`: invalid pattern: {source}")]
    InvalidPattern {
        /// The rule's name.
        name: String,
        /// The regex compiler's message.
        #[source]
        source: Box<regex::Error>,
    },
    /// A custom rule's pattern matches the empty string and would match everywhere.
    #[error("custom rule `{name}`: pattern matches the empty string")]
    EmptyMatch {
        /// The rule's name.
        name: String,
    },
    /// A custom rule's pattern cannot match within one line (it sets `(?s)`, or every match
    /// holds a line break), so it would never match in a log, which is redacted line by line.
    #[error("custom rule `{name}`: {reason}")]
    MultiLinePattern {
        /// The rule's name.
        name: String,
        /// Why the pattern cannot match within one line.
        reason: &'static str,
    },
    /// A secret value is too short to redact: it would match all over ordinary text.
    #[error(
        "secret `{name}` is {len} bytes long; values shorter than {min} bytes cannot be redacted"
    )]
    LiteralTooShort {
        /// The secret's name (never its value).
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The shortest value accepted ([`MIN_LITERAL_LEN`](crate::MIN_LITERAL_LEN)).
        min: usize,
    },
    /// A replacement token would break the line or JSON structure of the output.
    #[error("rule `{name}`: invalid replacement: {reason}")]
    InvalidReplacement {
        /// The rule's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The literal-secret matcher could not be built (for example, far too many values).
    #[error("cannot build the literal secret matcher: {0}")]
    Literals(#[from] aho_corasick::BuildError),
}
