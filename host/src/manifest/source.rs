//! Where a manifest value came from, and diagnostics that point at it.
//!
//! The manifest is deserialized into plain serde structs; when validation finds a
//! problem it names the key path (`plugins.probe.sha256`) and this module turns the
//! path into a file, line and column by walking a span-preserving parse of the same text.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted path to a manifest value, e.g. `runbooks.health.steps[0].uses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// The text of one manifest file, kept to locate key paths and quote lines.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
    /// Where every key path of the file was written, built on first use: locating a
    /// path is then a lookup, so reporting on N keys stays linear in N.
    spans: OnceLock<Option<HashMap<KeyPath, Range<usize>>>>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path,
            text,
            line_starts,
            spans: OnceLock::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..offset.min(self.text.len())]
            .chars()
            .count()
            + 1;
        (line + 1, col)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let end = self
            .line_starts
            .get(line)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        self.text[start..end.max(start)].trim_end_matches('\r')
    }

    /// The key path of the deepest key or value that contains byte `offset`.
    pub fn path_at(&self, offset: usize) -> Option<KeyPath> {
        fn walk_table(t: &DeTable, offset: usize, path: &mut KeyPath) -> bool {
            for (k, v) in t.iter() {
                let (ks, vs) = (k.span(), v.span());
                if ks.contains(&offset) || vs.contains(&offset) || is_header(v.get_ref(), offset) {
                    path.0.push(Seg::Key(k.get_ref().to_string()));
                    walk_value(v.get_ref(), offset, path);
                    return true;
                }
            }
            false
        }
        fn is_header(v: &DeValue, offset: usize) -> bool {
            // A `[table]` or `[[array]]` has its entries elsewhere in the file.
            match v {
                DeValue::Table(t) => t.iter().any(|(k, v)| {
                    k.span().contains(&offset)
                        || v.span().contains(&offset)
                        || is_header(v.get_ref(), offset)
                }),
                DeValue::Array(a) => a
                    .iter()
                    .any(|i| i.span().contains(&offset) || is_header(i.get_ref(), offset)),
                _ => false,
            }
        }
        fn walk_value(v: &DeValue, offset: usize, path: &mut KeyPath) {
            match v {
                DeValue::Table(t) => {
                    walk_table(t, offset, path);
                }
                DeValue::Array(a) => {
                    for (i, item) in a.iter().enumerate() {
                        if item.span().contains(&offset) || is_header(item.get_ref(), offset) {
                            path.0.push(Seg::Index(i));
                            walk_value(item.get_ref(), offset, path);
                            return;
                        }
                    }
                }
                _ => {}
            }
        }
        let root = DeTable::parse(&self.text).ok()?;
        let mut path = KeyPath::root();
        walk_table(root.get_ref(), offset, &mut path).then_some(path)
    }

    /// The span of the value at `path`, or of its nearest ancestor that exists
    /// (a missing key points at the table that should hold it).
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let spans = self.spans.get_or_init(|| self.index_spans()).as_ref()?;
        let mut p = path.clone();
        loop {
            if let Some(s) = spans.get(&p) {
                return Some(s.clone());
            }
            p.0.pop()?;
        }
    }

    /// Every key path of the file with the span a report should point at: `key = value`
    /// for scalars, the key for tables and arrays, an array-of-tables entry's enclosing
    /// array (its own span is zero-width). `None` when the text does not parse.
    fn index_spans(&self) -> Option<HashMap<KeyPath, Range<usize>>> {
        fn walk(
            v: &DeValue,
            path: &mut KeyPath,
            best: &Range<usize>,
            out: &mut HashMap<KeyPath, Range<usize>>,
        ) {
            match v {
                DeValue::Table(t) => {
                    for (key, item) in t.iter() {
                        let span = if item.get_ref().is_table() || item.get_ref().is_array() {
                            key.span()
                        } else {
                            item.span()
                        };
                        path.0.push(Seg::Key(key.get_ref().to_string()));
                        out.insert(path.clone(), span.clone());
                        walk(item.get_ref(), path, &span, out);
                        path.0.pop();
                    }
                }
                DeValue::Array(a) => {
                    for (i, item) in a.iter().enumerate() {
                        let s = item.span();
                        let span = if s.start < s.end { s } else { best.clone() };
                        path.0.push(Seg::Index(i));
                        out.insert(path.clone(), span.clone());
                        walk(item.get_ref(), path, &span, out);
                        path.0.pop();
                    }
                }
                _ => {}
            }
        }
        let root = DeTable::parse(&self.text).ok()?;
        let mut out = HashMap::new();
        let table = DeValue::Table(root.into_inner());
        walk(&table, &mut KeyPath::root(), &(0..0), &mut out);
        Some(out)
    }
}

/// Finds the file and span where the value at a key path was written: one file, or,
/// for a manifest that extends others, whichever file of the chain wrote it.
pub trait Locate {
    /// The file that wrote the value at `path` (or its nearest written ancestor) and
    /// the value's span in it.
    fn locate(&self, path: &KeyPath) -> (&SourceFile, Option<Range<usize>>);
}

impl Locate for SourceFile {
    fn locate(&self, path: &KeyPath) -> (&SourceFile, Option<Range<usize>>) {
        (self, self.span_of(path))
    }
}

impl<T: Locate + ?Sized> Locate for std::sync::Arc<T> {
    fn locate(&self, path: &KeyPath) -> (&SourceFile, Option<Range<usize>>) {
        (**self).locate(path)
    }
}

/// One problem found in a manifest: where, what, and what to do about it.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem has no position (e.g. unreadable file).
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    pub help: Option<String>,
    /// The quoted source line: a window of it around the column when the line is long.
    pub snippet: Option<String>,
    /// Where, in characters from 1, the column falls in `snippet`.
    pub caret: usize,
}

/// How much of a long source line a diagnostic quotes before and after its column: a
/// 50 MB line shows as one screen line, not 50 MB of stderr.
const SNIPPET_BEFORE: usize = 40;
const SNIPPET_AFTER: usize = 80;

/// The longest message, key or help text a diagnostic repeats: a value or key written
/// 50 MB long is named by its start and end.
const TEXT_MAX: usize = 1000;

/// `text`, cut in the middle (marked `…`) when longer than [`TEXT_MAX`] characters.
fn bounded(text: String) -> String {
    let n = text.chars().count();
    if n <= TEXT_MAX {
        return text;
    }
    let head: String = text.chars().take(TEXT_MAX / 2).collect();
    let tail: String = text.chars().skip(n - TEXT_MAX / 2).collect();
    format!("{head}…{tail}")
}

/// The part of `line` around 1-based character `column` that a diagnostic quotes, and
/// where the column falls in it. A cut end is marked with `…`.
fn snippet_window(line: &str, column: usize) -> (String, usize) {
    let at = column.saturating_sub(1);
    let from = at.saturating_sub(SNIPPET_BEFORE);
    let mut chars = line.chars().skip(from);
    let mut shown: String = chars.by_ref().take(at - from + SNIPPET_AFTER).collect();
    let mut caret = at - from + 1;
    if from > 0 {
        shown.insert(0, '…');
        caret += 1;
    }
    if chars.next().is_some() {
        shown.push('…');
    }
    (shown, caret)
}

impl Diagnostic {
    /// A diagnostic about the value at `path`, in the file that wrote it.
    pub fn at<L: Locate + ?Sized>(
        source: &L,
        path: &KeyPath,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        let (file, span) = source.locate(path);
        Self::at_span(file, span, path.to_string(), message, help)
    }

    /// A diagnostic about a byte span in `source`.
    pub fn at_span(
        source: &SourceFile,
        span: Option<Range<usize>>,
        key: String,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        let (line, column, snippet, caret) = match span {
            Some(s) => {
                let (l, c) = source.line_col(s.start);
                let (snippet, caret) = snippet_window(source.line_text(l), c);
                (l, c, Some(snippet), caret)
            }
            None => (0, 0, None, 0),
        };
        Diagnostic {
            file: source.path.clone(),
            line,
            column,
            key: bounded(key),
            message: bounded(message.into()),
            help: help.map(bounded),
            snippet,
            caret,
        }
    }

    /// A diagnostic about a whole file (it cannot be read, say).
    pub fn file(path: &Path, message: impl Into<String>, help: Option<String>) -> Self {
        Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: bounded(message.into()),
            help: help.map(bounded),
            snippet: None,
            caret: 0,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            writeln!(f, "error: {}", self.message)?;
        } else {
            writeln!(f, "error: {}: {}", self.key, self.message)?;
        }
        if self.line > 0 {
            writeln!(
                f,
                "  --> {}:{}:{}",
                self.file.display(),
                self.line,
                self.column
            )?;
        } else {
            writeln!(f, "  --> {}", self.file.display())?;
        }
        if let Some(snippet) = &self.snippet {
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, snippet)?;
            let pad = self.caret.saturating_sub(1);
            writeln!(f, "{:gutter$} | {:pad$}^", "", "")?;
        }
        if let Some(help) = &self.help {
            for (i, line) in help.lines().enumerate() {
                if i == 0 {
                    writeln!(f, "  = help: {line}")?;
                } else {
                    writeln!(f, "          {line}")?;
                }
            }
        }
        Ok(())
    }
}

/// Every problem found in a manifest; validation collects them all before failing.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} found in the manifest",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> SourceFile {
        SourceFile::new("m.toml".into(), text.into())
    }

    #[test]
    fn finds_nested_keys_and_array_items() {
        let s = src(
            "environment = \"dev\"\n\n[plugins.probe]\npath = \"p.wasm\"\n\n[[runbooks.r.steps]]\nuses = \"probe\"\n\n[[runbooks.r.steps]]\nuses = \"other\"\n",
        );
        let p = KeyPath::root().key("plugins").key("probe").key("path");
        assert_eq!(s.line_col(s.span_of(&p).unwrap().start).0, 4);
        let p = KeyPath::root()
            .key("runbooks")
            .key("r")
            .key("steps")
            .index(1)
            .key("uses");
        assert_eq!(s.line_col(s.span_of(&p).unwrap().start).0, 10);
        assert_eq!(p.to_string(), "runbooks.r.steps[1].uses");
    }

    #[test]
    fn missing_key_points_at_parent() {
        let s = src("[plugins.probe]\npath = \"p.wasm\"\n");
        let p = KeyPath::root().key("plugins").key("probe").key("sha256");
        let d = Diagnostic::at(&s, &p, "missing", None);
        assert_eq!(d.line, 1);
        assert!(d.to_string().contains("m.toml:1:"));
    }

    #[test]
    fn a_long_line_is_quoted_as_a_window_around_the_column() {
        let long = "x".repeat(5_000_000);
        let s = src(&format!("[plugins.probe]\npath = \"{long}\"\nbad = 1\n"));
        let p = KeyPath::root().key("plugins").key("probe").key("path");
        let d = Diagnostic::at(&s, &p, "wrong", None);
        let text = d.to_string();
        assert!(text.len() < 400, "{} bytes", text.len());
        assert!(text.contains("2 | path = \"xxx"), "{text}");
        assert!(
            text.trim_end().ends_with('^') || text.contains("^\n"),
            "{text}"
        );
        // The caret still points at the value's first character.
        let lines: Vec<&str> = text.lines().collect();
        let quoted = lines.iter().find(|l| l.starts_with("2 | ")).unwrap();
        let caret = lines.iter().find(|l| l.trim_end().ends_with('^')).unwrap();
        assert_eq!(caret.chars().count() - 1, quoted.find('"').unwrap());
        // A column deep in a long line: cut on both sides, marked, caret under it.
        let s = src(&format!("a = \"{long}\"\nb = 1\n"));
        let (w, caret) = snippet_window(s.line_text(1), 1_000_000);
        assert!(w.starts_with('…') && w.ends_with('…'));
        assert_eq!(w.chars().count(), 1 + SNIPPET_BEFORE + SNIPPET_AFTER + 1);
        assert_eq!(caret, SNIPPET_BEFORE + 2);
        // A 50 MB key is named by its ends, in the message and the key alike.
        let d = Diagnostic::at_span(
            &s,
            Some(0..1),
            long.clone(),
            format!("unknown field `{long}`"),
            Some(format!("remove `{long}`")),
        );
        assert!(d.to_string().len() < 4000, "{}", d.to_string().len());
        assert!(d.message.starts_with("unknown field `xx") && d.message.ends_with("xx`"));
        // A short line is quoted whole.
        assert_eq!(snippet_window("a = 1", 5), ("a = 1".to_string(), 5));
    }
}
