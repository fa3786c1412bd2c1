//! Rule definitions: the built-in detectors, custom regex rules and their replacement tokens.

use std::fmt;

use crate::Error;

/// Name under which literal secret values (see [`Redactor::with_literals`](crate::Redactor::with_literals)) are counted.
pub const SECRET_RULE: &str = "secret";
/// Replacement written in place of a literal secret value.
pub const SECRET_REPLACEMENT: &str = "[SECRET_REDACTED]";

/// The built-in detectors. Each has a stable name (used in manifests and counts) and a default
/// replacement token, so operators can recognise what was removed without seeing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    /// Email addresses.
    Email,
    /// US social security numbers in `123-45-6789` form, with invalid ranges rejected.
    Ssn,
    /// Payment card numbers: 13-19 digits, plausible issuer prefix, Luhn-valid.
    CreditCard,
    /// E.164 and common national/international phone number formats.
    Phone,
    /// Credentials: bearer tokens, `sk-` keys, `key=value` secrets, AWS key ids, GitHub and
    /// Slack tokens, JWTs, passwords in URLs, HTTP `Basic` credentials.
    ApiKey,
    /// PEM private-key blocks (`-----BEGIN … PRIVATE KEY-----` to its `END` line).
    PrivateKey,
    /// IPv4 addresses (off by default: often operationally useful).
    Ipv4,
    /// IPv6 addresses (off by default).
    Ipv6,
}

impl Builtin {
    /// Every built-in rule, in priority order (used to break exact ties).
    pub const ALL: [Builtin; 8] = [
        Builtin::Email,
        Builtin::Ssn,
        Builtin::CreditCard,
        Builtin::Phone,
        Builtin::ApiKey,
        Builtin::PrivateKey,
        Builtin::Ipv4,
        Builtin::Ipv6,
    ];
    /// The rules enabled when a configuration does not list any.
    pub const DEFAULT: [Builtin; 6] = [
        Builtin::Email,
        Builtin::Ssn,
        Builtin::CreditCard,
        Builtin::Phone,
        Builtin::ApiKey,
        Builtin::PrivateKey,
    ];

    /// Stable name used in manifests and in [`Counts`](crate::Counts).
    pub const fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Ssn => "ssn",
            Builtin::CreditCard => "credit_card",
            Builtin::Phone => "phone",
            Builtin::ApiKey => "api_key",
            Builtin::PrivateKey => "private_key",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
        }
    }

    /// Default token written in place of a match.
    pub const fn replacement(self) -> &'static str {
        match self {
            Builtin::Email => "[EMAIL_REDACTED]",
            Builtin::Ssn => "[SSN_REDACTED]",
            Builtin::CreditCard => "[CC_REDACTED]",
            Builtin::Phone => "[PHONE_REDACTED]",
            Builtin::ApiKey => "[API_KEY_REDACTED]",
            Builtin::PrivateKey => "[PRIVATE_KEY_REDACTED]",
            Builtin::Ipv4 => "[IPV4_REDACTED]",
            Builtin::Ipv6 => "[IPV6_REDACTED]",
        }
    }

    /// Looks a built-in rule up by its stable name.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Comma-separated list of all names, for error messages.
    pub(crate) fn known_names() -> String {
        Builtin::ALL.map(Builtin::name).join(", ")
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a rule finds its matches.
#[derive(Clone)]
pub(crate) enum Matcher {
    Builtin(Builtin),
    Pattern(regex::bytes::Regex),
    Literal,
}

/// One redaction rule: a name (for counts and configuration), a matcher and the token that
/// replaces each match.
#[derive(Clone)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) replacement: String,
    pub(crate) matcher: Matcher,
}

impl Rule {
    /// A built-in rule with its default replacement token.
    pub fn builtin(kind: Builtin) -> Rule {
        Rule {
            name: kind.name().to_owned(),
            replacement: kind.replacement().to_owned(),
            matcher: Matcher::Builtin(kind),
        }
    }

    /// A custom rule from a manifest: `pattern` is a regular expression (Rust `regex` syntax,
    /// no look-around). Fails with a message naming the rule when the name is reserved or
    /// malformed, the pattern does not compile, matches the empty string or cannot match
    /// within one line (logs are redacted line by line), or the replacement contains control
    /// characters.
    pub fn custom(name: &str, pattern: &str, replacement: &str) -> Result<Rule, Error> {
        validate_name(name)?;
        validate_replacement(name, replacement)?;
        let regex = regex::bytes::Regex::new(pattern).map_err(|e| Error::InvalidPattern {
            name: name.to_owned(),
            source: Box::new(e),
        })?;
        if regex.is_match(b"") {
            return Err(Error::EmptyMatch {
                name: name.to_owned(),
            });
        }
        if let Err(reason) = matches_within_a_line(pattern) {
            return Err(Error::MultiLinePattern {
                name: name.to_owned(),
                reason,
            });
        }
        Ok(Rule {
            name: name.to_owned(),
            replacement: replacement.to_owned(),
            matcher: Matcher::Pattern(regex),
        })
    }

    /// The same rule with a different replacement token (for example to keep a site's
    /// existing marker format).
    pub fn with_replacement(mut self, replacement: &str) -> Result<Rule, Error> {
        validate_replacement(&self.name, replacement)?;
        self.replacement = replacement.to_owned();
        Ok(self)
    }

    pub(crate) fn literal() -> Rule {
        Rule {
            name: SECRET_RULE.to_owned(),
            replacement: SECRET_REPLACEMENT.to_owned(),
            matcher: Matcher::Literal,
        }
    }

    /// The rule's name, as used in configuration and counts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token written in place of each match.
    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    /// Which built-in detector this is, if any.
    pub fn builtin_kind(&self) -> Option<Builtin> {
        match self.matcher {
            Matcher::Builtin(b) => Some(b),
            _ => None,
        }
    }

    /// The regular expression of a custom rule.
    pub fn pattern(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Pattern(re) => Some(re.as_str()),
            _ => None,
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rule");
        d.field("name", &self.name)
            .field("replacement", &self.replacement);
        match &self.matcher {
            Matcher::Builtin(b) => d.field("builtin", b),
            Matcher::Pattern(re) => d.field("pattern", &re.as_str()),
            Matcher::Literal => d.field("literal", &true),
        };
        d.finish()
    }
}

/// Default replacement for a custom rule without one: `[NAME_REDACTED]`.
pub(crate) fn default_replacement(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("[{upper}_REDACTED]")
}

/// Checks that a pattern can match text without a line break, the only text a line stream
/// shows it: it must not turn on `(?s)` (which only matters across lines), and at least one
/// of its matches must be free of `\n`.
fn matches_within_a_line(pattern: &str) -> Result<(), &'static str> {
    use regex_syntax::ast::{Ast, Flag, FlagsItemKind, GroupKind};

    fn sets_dot_all(ast: &Ast) -> bool {
        let flags_on = |items: &[regex_syntax::ast::FlagsItem]| {
            let mut negated = false;
            let mut on = false;
            for it in items {
                match it.kind {
                    FlagsItemKind::Negation => negated = true,
                    FlagsItemKind::Flag(Flag::DotMatchesNewLine) => on = !negated,
                    FlagsItemKind::Flag(_) => {}
                }
            }
            on
        };
        match ast {
            Ast::Flags(f) => flags_on(&f.flags.items),
            Ast::Group(g) => {
                matches!(&g.kind, GroupKind::NonCapturing(f) if flags_on(&f.items))
                    || sets_dot_all(&g.ast)
            }
            Ast::Repetition(r) => sets_dot_all(&r.ast),
            Ast::Alternation(a) => a.asts.iter().any(sets_dot_all),
            Ast::Concat(c) => c.asts.iter().any(sets_dot_all),
            _ => false,
        }
    }

    /// True when some string without `\n` matches `hir` (look-arounds taken as satisfiable).
    fn newline_free(hir: &regex_syntax::hir::Hir) -> bool {
        use regex_syntax::hir::{Class, HirKind};
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => true,
            HirKind::Literal(lit) => !lit.0.contains(&b'\n'),
            HirKind::Class(Class::Unicode(c)) => c
                .ranges()
                .iter()
                .any(|r| !(r.start() == '\n' && r.end() == '\n')),
            HirKind::Class(Class::Bytes(c)) => c
                .ranges()
                .iter()
                .any(|r| !(r.start() == b'\n' && r.end() == b'\n')),
            HirKind::Repetition(r) => r.min == 0 || newline_free(&r.sub),
            HirKind::Capture(c) => newline_free(&c.sub),
            HirKind::Concat(v) => v.iter().all(newline_free),
            HirKind::Alternation(v) => v.iter().any(newline_free),
        }
    }

    // The pattern compiled already, so these parsers accept it; should one not, the regex
    // engine's own checks stand.
    if let Ok(ast) = regex_syntax::ast::parse::Parser::new().parse(pattern)
        && sets_dot_all(&ast)
    {
        return Err(
            "`(?s)` makes `.` match line breaks, but logs are redacted one line at a time; \
             remove the flag and match within a line",
        );
    }
    if let Ok(hir) = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        && !newline_free(&hir)
    {
        return Err(
            "every match of the pattern holds a line break, but logs are redacted one line \
             at a time; match within a line",
        );
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), Error> {
    let fail = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 64 {
        return fail("must be at most 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return fail("use only ASCII letters, digits, `_`, `-` and `.`");
    }
    if Builtin::from_name(name).is_some() || name == SECRET_RULE {
        return fail("reserved for a built-in rule");
    }
    Ok(())
}

fn validate_replacement(name: &str, replacement: &str) -> Result<(), Error> {
    if replacement.chars().any(char::is_control) {
        return Err(Error::InvalidReplacement {
            name: name.to_owned(),
            reason: "must not contain control characters such as newlines",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
            assert!(b.replacement().ends_with("_REDACTED]"));
        }
        assert_eq!(Builtin::from_name("nope"), None);
    }

    #[test]
    fn custom_rule_errors() {
        assert!(matches!(
            Rule::custom("emp", "EMP-(", "[X]"),
            Err(Error::InvalidPattern { .. })
        ));
        assert!(matches!(
            Rule::custom("email", "x", "[X]"),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Rule::custom("", "x", "[X]"),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Rule::custom("has space", "x", "[X]"),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Rule::custom("opt", "a*", "[X]"),
            Err(Error::EmptyMatch { .. })
        ));
        assert!(matches!(
            Rule::custom("nl", "x", "a\nb"),
            Err(Error::InvalidReplacement { .. })
        ));
        for multi in [
            "(?s)BEGIN.*END",
            "a(?s:.)b",
            "(?is)x.y",
            "first\\nsecond",
            "a[\\n]b",
            "(?:x\\n|y\\r\\n)z",
        ] {
            assert!(
                matches!(
                    Rule::custom("ml", multi, "[X]"),
                    Err(Error::MultiLinePattern { .. })
                ),
                "{multi}"
            );
        }
        for fine in [
            "(?-s)a.b",
            "(?i)abc",
            "a\\s+b",
            "x(?:\\n)?y",
            "[^x]+\\n|tail",
        ] {
            assert!(Rule::custom("ok", fine, "[X]").is_ok(), "{fine}");
        }
        let r = Rule::custom("emp_id", "EMP-[0-9]{6}", "[EMP]").unwrap();
        assert_eq!(r.name(), "emp_id");
        assert_eq!(r.pattern(), Some("EMP-[0-9]{6}"));
        let msg = Rule::custom("emp", "EMP-(", "[X]").unwrap_err().to_string();
        assert!(msg.contains("custom rule `emp`"), "{msg}");
    }

    #[test]
    fn default_replacement_format() {
        assert_eq!(default_replacement("emp-id.v2"), "[EMP_ID_V2_REDACTED]");
    }
}
