//! `redact`: copies every file of a granted input directory (recursively) into a granted
//! output directory with personal data and credentials replaced, and reports how many values
//! each rule replaced, file by file, without ever reporting a value.
//!
//! ```toml
//! [plugins.redact.grants.fs]
//! input = { path = "logs", mode = "ro" }          # seen by the plugin as /input
//! output = { path = "redacted", mode = "rw" }     # seen as /output
//!
//! [[runbooks.scrub-logs.steps]]
//! uses = "redact"
//! with = { rules = ["email", "ssn", "credit_card", "phone", "api_key"], secrets = ["db-password"] }
//! ```
//!
//! Files are streamed line by line through [`runcap_redact`] with bounded buffers, never read
//! whole, and read and written through `runcap:plugin/fs` ([`FileReader`], [`FileWriter`]),
//! whose host thread reads the next megabyte while the plugin scans this one. `.jsonl` and `.ndjson` files are JSON Lines (values and keys are redacted, structure
//! kept, every line stays valid JSON); everything else is plain text, unless `format` says
//! otherwise. Each copy is written under a temporary name and renamed into place when
//! complete. In a dry run nothing is written: the files are read and counted.
//!
//! A file compressed with gzip or zstd is decoded and its text redacted; the copy is written
//! decoded, under the name without the compression suffix (`app.log.2.gz` becomes
//! `app.log.2`). A file that holds binary data, or text compressed in another format, is
//! neither redacted nor copied: it is listed under `not_redacted` and the step ends with a
//! warning naming it.

mod content;

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use runcap_redact::{Config, Counts, CustomRule, Redactor, Stats};
use runcap_sdk::{ActionError, Context, FileReader, FileWriter, Outcome, Status};
use serde_json::{Map, Value, json};

pub use content::{Compression, Content};

/// Buffer size of decoded text (files are read and written in the host's 1 MiB pieces,
/// see [`FileReader`]).
pub const IO_BUF: usize = 256 * 1024;
/// Per-file entries kept in the outcome's details; further files are counted, not listed.
pub const MAX_FILE_ENTRIES: usize = 500;
/// Deepest directory nesting followed below the input directory.
pub const MAX_DEPTH: usize = 32;

/// How files are read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON Lines for `.jsonl` and `.ndjson`, plain text otherwise.
    #[default]
    Auto,
    /// Every file is plain text.
    Text,
    /// Every file is JSON Lines.
    Jsonl,
}

/// A site-specific rule.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRuleParam {
    /// Name used in the counts; not a built-in rule's name.
    pub name: String,
    /// Regular expression (Rust regex syntax).
    pub pattern: String,
    /// Written in place of each match (default `[NAME_REDACTED]`).
    #[serde(default)]
    pub replacement: Option<String>,
}

/// Params of one run.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Directory to read, as the plugin sees it: a directory granted under `grants.fs`.
    #[serde(default = "default_input")]
    pub input: String,
    /// Directory to write the redacted copies to, granted read-write.
    #[serde(default = "default_output")]
    pub output: String,
    /// `auto` (JSON Lines for .jsonl and .ndjson), `text` or `jsonl`.
    #[serde(default)]
    pub format: Format,
    /// Built-in rules to apply: email, ssn, credit_card, phone, api_key, ipv4, ipv6
    /// (default: the first five).
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Also redact IPv4 and IPv6 addresses.
    #[serde(default)]
    pub include_ip: bool,
    /// Site-specific rules, applied after the built-in ones.
    #[serde(default)]
    pub custom: Vec<CustomRuleParam>,
    /// Secrets (granted under `grants.secrets`) whose values are redacted wherever they appear.
    #[serde(default)]
    #[schemars(extend("x-runcap-grant" = "secrets"))]
    pub secrets: Vec<String>,
}

fn default_input() -> String {
    "/input".into()
}

fn default_output() -> String {
    "/output".into()
}

impl Params {
    /// The rule selection, as the redaction engine takes it.
    pub fn config(&self) -> Config {
        Config {
            rules: self.rules.clone(),
            include_ip: self.include_ip,
            custom: self
                .custom
                .iter()
                .map(|c| CustomRule {
                    name: c.name.clone(),
                    pattern: c.pattern.clone(),
                    replacement: c.replacement.clone(),
                })
                .collect(),
        }
    }
}

/// How one file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Text,
    Jsonl,
}

impl FileFormat {
    fn of(path: &Path, format: Format) -> FileFormat {
        match format {
            Format::Text => FileFormat::Text,
            Format::Jsonl => FileFormat::Jsonl,
            Format::Auto => match path.extension().and_then(|e| e.to_str()) {
                Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                    FileFormat::Jsonl
                }
                _ => FileFormat::Text,
            },
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FileFormat::Text => "text",
            FileFormat::Jsonl => "jsonl",
        }
    }
}

/// What happened to one file.
#[derive(Debug)]
pub struct FileReport {
    /// Path below the input directory.
    pub path: String,
    pub format: FileFormat,
    /// The compression decoded, if any.
    pub compression: Option<Compression>,
    /// Path of the copy below the output directory, when it differs from `path` (a decoded
    /// copy loses its compression suffix).
    pub written_as: Option<String>,
    pub stats: Stats,
    pub counts: Counts,
    pub error: Option<String>,
}

/// Entries not processed, and why (symlinks, special files, too deep).
pub type Skipped = Vec<(String, &'static str)>;

/// Everything one run did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    /// Entries not processed, and why.
    pub skipped: Skipped,
    /// Files whose content cannot be redacted (binary data, unsupported compression), and
    /// why: neither redacted nor copied.
    pub not_redacted: Vec<(String, String)>,
    pub counts: Counts,
    pub seconds: f64,
}

impl Report {
    fn total<F: Fn(&Stats) -> u64>(&self, f: F) -> u64 {
        self.files
            .iter()
            .filter(|x| x.error.is_none())
            .map(|x| f(&x.stats))
            .sum()
    }
}

/// Finds every regular file below `root`, sorted, as paths relative to it. Symlinks are not
/// followed (a link could lead back up the tree) and are listed as skipped.
pub fn list_files(root: &Path) -> io::Result<(Vec<PathBuf>, Skipped)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    walk(root, Path::new(""), 0, &mut files, &mut skipped)?;
    Ok((files, skipped))
}

fn walk(
    root: &Path,
    rel: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    skipped: &mut Skipped,
) -> io::Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            skipped.push((path.display().to_string(), "symlink"));
        } else if kind.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                skipped.push((path.display().to_string(), "nested too deep"));
            } else {
                walk(root, &path, depth + 1, files, skipped)?;
            }
        } else if kind.is_file() {
            files.push(path);
        } else {
            skipped.push((path.display().to_string(), "not a regular file"));
        }
    }
    Ok(())
}

/// Streams `reader` through the rules into `dst` (through a temporary file renamed into
/// place), or into nothing when `dst` is `None` (a dry run).
pub fn redact_file(
    r: &Redactor,
    reader: Box<dyn BufRead>,
    dst: Option<&Path>,
    format: FileFormat,
    counts: &mut Counts,
) -> io::Result<Stats> {
    let Some(dst) = dst else {
        return stream(r, reader, io::sink(), format, counts);
    };
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dst.with_file_name(format!(".{name}.redact-tmp"));
    let result = (|| {
        let mut w = FileWriter::create(&tmp)?;
        let stats = stream(r, reader, &mut w, format, counts)?;
        w.finish()?;
        fs::rename(&tmp, dst)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn stream<R: BufRead, W: Write>(
    r: &Redactor,
    reader: R,
    writer: W,
    format: FileFormat,
    counts: &mut Counts,
) -> io::Result<Stats> {
    match format {
        FileFormat::Text => r.redact_text_stream(reader, writer, counts),
        FileFormat::Jsonl => r.redact_jsonl_stream(reader, writer, counts),
    }
}

/// Redacts every file under `input` into `output` (or only counts, when `output` is `None`).
pub fn redact_tree(
    r: &Redactor,
    input: &Path,
    output: Option<&Path>,
    format: Format,
) -> io::Result<Report> {
    let started = Instant::now();
    let (paths, skipped) = list_files(input)?;
    let mut report = Report {
        skipped,
        ..Report::default()
    };
    for rel in &paths {
        let src = input.join(rel);
        let opened = FileReader::open(&src).and_then(|f| content::open(f, IO_BUF));
        let (reader, compression) = match opened {
            Ok(Content::Text {
                reader,
                compression,
            }) => (reader, compression),
            Ok(Content::Unredactable(why)) => {
                report.not_redacted.push((rel.display().to_string(), why));
                continue;
            }
            Err(e) => {
                report.files.push(FileReport {
                    path: rel.display().to_string(),
                    format: FileFormat::of(rel, format),
                    compression: None,
                    written_as: None,
                    stats: Stats::default(),
                    counts: Counts::new(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let out_rel = match compression {
            Some(c) => rel.with_file_name(
                c.decoded_name(&rel.file_name().unwrap_or_default().to_string_lossy()),
            ),
            None => rel.clone(),
        };
        let fmt = FileFormat::of(&out_rel, format);
        let mut counts = Counts::new();
        let result = if out_rel != *rel && paths.contains(&out_rel) {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "its decoded copy would be {}, the copy of another file; rename one of them",
                    out_rel.display()
                ),
            ))
        } else {
            let dst = output.map(|o| o.join(&out_rel));
            redact_file(r, reader, dst.as_deref(), fmt, &mut counts)
        };
        let (stats, error) = match result {
            Ok(s) => {
                report.counts.merge(&counts);
                (s, None)
            }
            Err(e) => (Stats::default(), Some(e.to_string())),
        };
        report.files.push(FileReport {
            path: rel.display().to_string(),
            format: fmt,
            compression,
            written_as: (out_rel != *rel).then(|| out_rel.display().to_string()),
            stats,
            counts,
            error,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The action: builds the rules from the params (and granted secrets), then redacts the tree.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    if p.input == p.output {
        return Err(ActionError::InvalidParams(format!(
            "input and output are both {}; grant a separate read-write directory for the copies",
            p.input
        )));
    }
    let mut redactor = p
        .config()
        .build()
        .map_err(|e| ActionError::InvalidParams(e.to_string()))?;
    if !p.secrets.is_empty() {
        let mut values = Vec::new();
        for name in &p.secrets {
            values.push((name.clone(), ctx.secret(name)?));
        }
        redactor = redactor
            .with_literals(values)
            .map_err(|e| ActionError::Failed(e.to_string()))?;
    }
    let input = Path::new(&p.input);
    let output = Path::new(&p.output);
    if let Err(e) = fs::read_dir(input) {
        return Err(ActionError::Failed(format!(
            "cannot read {}: {e}; grant the directory in the manifest, e.g. [plugins.NAME.grants.fs] input = {{ path = \"logs\", mode = \"ro\" }}",
            p.input
        )));
    }
    if !ctx.dry_run
        && let Err(e) = fs::read_dir(output)
    {
        return Err(ActionError::Failed(format!(
            "cannot open {}: {e}; grant it read-write, e.g. [plugins.NAME.grants.fs] output = {{ path = \"redacted\", mode = \"rw\" }}",
            p.output
        )));
    }
    let report = redact_tree(&redactor, input, (!ctx.dry_run).then_some(output), p.format)
        .map_err(|e| ActionError::Failed(format!("cannot list {}: {e}", p.input)))?;
    Ok(outcome(&p, ctx.dry_run, &redactor, &report))
}

/// The outcome: a one-line summary with the count per rule, per-file stats in the details,
/// and metrics. It names rules and files, never a replaced value.
pub fn outcome(p: &Params, dry_run: bool, r: &Redactor, report: &Report) -> Outcome {
    let failed: Vec<&FileReport> = report.files.iter().filter(|f| f.error.is_some()).collect();
    let done = report.files.len() - failed.len();
    let bytes_in = report.total(|s| s.bytes_in);
    let redactions = report.counts.total();
    let per_rule = if report.counts.is_empty() {
        "nothing to redact".to_string()
    } else {
        report
            .counts
            .iter()
            .map(|(rule, n)| format!("{n} {rule}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let verb = if dry_run {
        "dry run: would redact"
    } else {
        "redacted"
    };
    let mut summary = format!(
        "{verb} {done} file{} ({}) from {} to {}: {per_rule}",
        if done == 1 { "" } else { "s" },
        human_bytes(bytes_in),
        p.input,
        if dry_run { "nowhere" } else { &p.output },
    );
    if !report.not_redacted.is_empty() {
        const NAMED: usize = 10;
        let mut named: Vec<String> = report
            .not_redacted
            .iter()
            .take(NAMED)
            .map(|(path, why)| format!("{path} ({why})"))
            .collect();
        if report.not_redacted.len() > NAMED {
            named.push(format!("and {} more", report.not_redacted.len() - NAMED));
        }
        let n = report.not_redacted.len();
        summary = format!(
            "{n} file{} not redacted and not copied: {}; {summary}",
            if n == 1 { "" } else { "s" },
            named.join(", ")
        );
    }
    let status = if !failed.is_empty() {
        summary = format!(
            "{} of {} files failed ({}: {}); {summary}",
            failed.len(),
            report.files.len(),
            failed[0].path,
            failed[0].error.as_deref().unwrap_or("")
        );
        Status::Fail
    } else if !report.not_redacted.is_empty() {
        Status::Warn
    } else if report.files.is_empty() {
        summary = format!("no files under {}", p.input);
        Status::Warn
    } else {
        Status::Ok
    };

    let files: Vec<Value> = report
        .files
        .iter()
        .take(MAX_FILE_ENTRIES)
        .map(|f| {
            let mut o = Map::new();
            o.insert("path".into(), json!(f.path));
            o.insert("format".into(), json!(f.format.as_str()));
            if let Some(c) = f.compression {
                o.insert("decompressed".into(), json!(c.as_str()));
            }
            if let Some(w) = &f.written_as {
                o.insert("written_as".into(), json!(w));
            }
            if let Some(e) = &f.error {
                o.insert("error".into(), json!(e));
            } else {
                o.insert("lines".into(), json!(f.stats.lines));
                o.insert("lines_redacted".into(), json!(f.stats.lines_redacted));
                o.insert("redactions".into(), json!(f.stats.redactions));
                o.insert("bytes_in".into(), json!(f.stats.bytes_in));
                o.insert("bytes_out".into(), json!(f.stats.bytes_out));
                o.insert("counts".into(), json!(f.counts));
                if f.stats.invalid_json_lines > 0 {
                    o.insert(
                        "invalid_json_lines".into(),
                        json!(f.stats.invalid_json_lines),
                    );
                }
                if f.stats.oversized_lines > 0 {
                    o.insert("oversized_lines".into(), json!(f.stats.oversized_lines));
                }
            }
            Value::Object(o)
        })
        .collect();
    let skipped: Vec<Value> = report
        .skipped
        .iter()
        .map(|(path, why)| json!({"path": path, "reason": why}))
        .collect();
    let not_redacted: Vec<Value> = report
        .not_redacted
        .iter()
        .map(|(path, why)| json!({"path": path, "reason": why}))
        .collect();
    let rules: Vec<&str> = r.rules().iter().map(|x| x.name()).collect();
    let seconds = report.seconds.max(1e-9);
    let mut out = Outcome::new(status, summary)
        .detail("input", p.input.as_str())
        .detail(
            "output",
            if dry_run {
                Value::Null
            } else {
                json!(p.output)
            },
        )
        .detail("dry_run", dry_run)
        .detail("rules", json!(rules))
        .detail("counts", json!(report.counts))
        .detail("redactions", redactions)
        .detail("files", files)
        .detail(
            "files_not_listed",
            report.files.len().saturating_sub(MAX_FILE_ENTRIES),
        )
        .detail("skipped", skipped)
        .detail("not_redacted", not_redacted)
        .detail("bytes_in", bytes_in)
        .detail("bytes_out", report.total(|s| s.bytes_out))
        .detail("lines", report.total(|s| s.lines))
        .metric("files", done as f64)
        .metric("files_failed", failed.len() as f64)
        .metric("files_not_redacted", report.not_redacted.len() as f64)
        .metric("bytes_in", bytes_in as f64)
        .metric("redactions", redactions as f64)
        .metric("seconds", report.seconds)
        .metric("mb_per_s", bytes_in as f64 / 1e6 / seconds);
    for (rule, n) in report.counts.iter() {
        out = out.metric(format!("redactions.{rule}"), n as f64);
    }
    if let Some(bytes) = linear_memory_bytes() {
        out = out.metric("memory_bytes", bytes as f64);
    }
    out
}

/// The plugin's linear memory, which only grows: at the end of a run, its peak.
fn linear_memory_bytes() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size::<0>() as u64 * 65_536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        None
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}

runcap_sdk::plugin!(
    name: "redact",
    description: "Copies a directory of logs with personal data and credentials redacted, counting each rule's replacements.",
    run: run,
);

#[cfg(test)]
mod tests;
