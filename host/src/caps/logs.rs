//! `logs`: read the end of a log file the manifest names, of a supervised service's log,
//! or of a systemd unit's journal.
//!
//! | | |
//! |---|---|
//! | grants | `[plugins.NAME.grants.logs]` `sources = { app = "logs/app.log" }` (name → file, relative to the manifest), `services = ["api"]` (read as source `service:api`), `units = ["nginx.service"]` (journald, read as source `unit:nginx.service`), `journal = "DIR"` (a journal directory instead of the system journal), `max_lines = 1000`, `scan = "64MiB"` |
//! | manifest | the grant only; `services` names `driver = "process"` services, whose output runcap keeps |
//! | default | no grant: the interface cannot be imported; a source the grant does not name is denied |
//! | enforced | read-only, so reads run in dry runs too; at most `scan` bytes from the end of the file, starting at its first whole line (for a unit, its newest whole entries within `scan` bytes of `journalctl`'s output); at most `max_lines` lines back; every line is redacted before a pattern sees it, so a plugin cannot probe a secret's characters with patterns and match counts; a unit is read by running `journalctl` with fixed arguments, an empty environment and no shell, and killed at the step's deadline |
//! | audit | one call record per read: the source, the decision, and how many lines matched of how many were read |

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use regex::Regex;
use serde::Deserialize;
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::logs as wit;
use crate::caps::compare::{Change, ChangeKind, fmt_size};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator, closest};
use crate::services::Driver;

/// Lines one read returns when the grant names no `max_lines`.
const DEFAULT_MAX_LINES: u32 = 1000;
/// The largest `max_lines` a grant may set.
const MAX_MAX_LINES: u32 = 100_000;
/// Bytes read from the end of a file when the grant names no `scan`.
const DEFAULT_SCAN: u64 = 64 << 20;
/// The largest `scan` a grant may set.
const MAX_SCAN: u64 = 1 << 30;
/// The prefix that names a supervised service's log as a source.
const SERVICE_PREFIX: &str = "service:";
/// The prefix that names a systemd unit's journal as a source.
const UNIT_PREFIX: &str = "unit:";
/// Where `journalctl` is looked for (never through `PATH`).
const JOURNALCTL: [&str; 2] = ["/usr/bin/journalctl", "/bin/journalctl"];
/// The most bytes of `journalctl`'s complaint kept for the error message.
const JOURNALCTL_STDERR: usize = 2048;
/// How far into a line a bracketed `[04/Dec/2026:16:22:08 +0000]` stamp may start.
const STAMP_REACH: usize = 64;
/// The compiled size a plugin's pattern may take.
const PATTERN_LIMIT: usize = 1 << 20;

/// The `logs` capability.
pub struct Logs;

impl Capability for Logs {
    const NAME: &'static str = "logs";
    const INTERFACE: &'static str = "runcap:plugin/logs";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/logs.wit"));
    type Config = LogsGrantConfig;
    type Grant = LogsGrant;
    type Access = LogsAccess;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.logs]\nsources = {{}}   # name = \"path/to/file.log\" (relative to the manifest); services = [\"NAME\"] for a driver = \"process\" service's log; units = [\"NAME.service\"] for a systemd unit's journal"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: LogsGrantConfig,
        declared: &Declared,
    ) -> Option<LogsGrant> {
        LogsGrant::validate(v, at, raw, declared)
    }

    fn diff(old: &LogsGrantConfig, new: &LogsGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &LogsGrant) -> Vec<String> {
        grant.describe()
    }

    fn granted_names(grant: Option<&LogsGrant>, kind: &str) -> Option<Vec<String>> {
        (kind.is_empty() || kind == "sources").then(|| grant.map_or_else(Vec::new, |g| g.names()))
    }

    fn resolve_paths(raw: &mut toml::Value, dir_of: &dyn Fn(&KeyPath) -> PathBuf) {
        if let Some(toml::Value::String(dir)) = raw.get_mut("journal") {
            let path = lexical(&dir_of(&KeyPath::root().key("journal")).join(&*dir));
            *dir = path.to_string_lossy().into_owned();
        }
        let Some(sources) = raw.get_mut("sources").and_then(|s| s.as_table_mut()) else {
            return;
        };
        for (name, file) in sources.iter_mut() {
            if let Some(written) = file.as_str() {
                let at = KeyPath::root().key("sources").key(name.as_str());
                let path = lexical(&dir_of(&at).join(written));
                *file = toml::Value::String(path.to_string_lossy().into_owned());
            }
        }
    }

    fn prepare(grant: Arc<LogsGrant>, env: &Resources) -> Result<LogsAccess, PrepareError> {
        let mut sources = BTreeMap::new();
        for (name, path) in &grant.sources {
            sources.insert(name.clone(), Source::File(path.clone()));
        }
        for unit in &grant.units {
            sources.insert(format!("{UNIT_PREFIX}{unit}"), Source::Unit(unit.clone()));
        }
        for service in &grant.services {
            let path = match env.services.log_file(service) {
                Some(path) => path,
                None => {
                    return Err(PrepareError(format!(
                        "service `{service}` is not a driver = \"process\" service of this environment"
                    )));
                }
            };
            sources.insert(format!("{SERVICE_PREFIX}{service}"), Source::File(path));
        }
        Ok(LogsAccess { grant, sources })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// `path` with `.` dropped and each `..` taking away the name before it, without looking
/// at the disk, so two spellings of one file compare equal.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `[plugins.NAME.grants.logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsGrantConfig {
    /// `sources = { app = "logs/app.log" }`: source name → file (relative to the manifest).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// `services = ["api"]`: supervised services whose log runcap keeps, read as
    /// source `service:api`.
    #[serde(default)]
    pub services: Vec<String>,
    /// The most lines one read returns (default 1000, at most 100000).
    pub max_lines: Option<u32>,
    /// `units = ["nginx.service"]`: systemd units whose journal may be read, as source
    /// `unit:nginx.service`.
    #[serde(default)]
    pub units: Vec<String>,
    /// `journal = "/var/log/journal/remote"`: read units from this journal directory
    /// (relative to the manifest) instead of the system journal.
    pub journal: Option<String>,
    /// The most bytes read from the end of a file per read (default 64MiB).
    pub scan: Option<String>,
}

/// A validated logs grant.
#[derive(Debug)]
pub struct LogsGrant {
    /// Source name → absolute file path (the file may not exist yet).
    pub sources: BTreeMap<String, PathBuf>,
    /// Supervised services whose log may be read.
    pub services: Vec<String>,
    /// systemd units whose journal may be read.
    pub units: Vec<String>,
    /// The journal directory units are read from; `None` is the system journal.
    pub journal: Option<PathBuf>,
    /// The `journalctl` that reads units (found when the grant names any).
    pub journalctl: Option<PathBuf>,
    pub max_lines: u32,
    pub scan: u64,
    /// `plugins.NAME.grants.logs`, for denial messages.
    pub key: String,
}

/// What a plugin's actions use: every readable source, services' logs and units included.
pub struct LogsAccess {
    pub grant: Arc<LogsGrant>,
    /// Source name (`service:NAME` for a service, `unit:NAME` for a unit) → where it is.
    pub sources: BTreeMap<String, Source>,
}

/// Where one source's lines come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, read from its end.
    File(PathBuf),
    /// A systemd unit's journal, read through `journalctl`.
    Unit(String),
}

impl LogsGrant {
    /// Checks a grant as written: source names, their files' directories, services that
    /// runcap supervises, and the limits.
    pub fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: LogsGrantConfig,
        declared: &Declared,
    ) -> Option<Self> {
        let mut ok = true;
        let mut sources = BTreeMap::new();
        for (name, file) in &raw.sources {
            let sat = at.key("sources").key(name);
            ok &= v.name(&sat, "log source", name);
            let path = lexical(&v.resolve(&sat, file));
            if path.is_dir() {
                ok = false;
                v.error(
                    &sat,
                    format!("{} is a directory, not a log file", path.display()),
                    "name the file itself, e.g. \"logs/app.log\"",
                );
                continue;
            }
            if !path.parent().is_some_and(Path::is_dir) {
                ok = false;
                let dir = path.parent().unwrap_or(&path).display().to_string();
                v.error(
                    &sat,
                    format!("{dir}, the directory of {file}, does not exist"),
                    "a log file may appear later, but its directory must exist; a relative path is relative to the manifest",
                );
                continue;
            }
            sources.insert(name.clone(), path);
        }
        let known: Vec<&str> = declared.services.keys().map(String::as_str).collect();
        for (i, service) in raw.services.iter().enumerate() {
            let sat = at.key("services").index(i);
            match declared.services.get(service) {
                None => {
                    ok = false;
                    let like = closest(service, &known)
                        .map(|c| format!("did you mean \"{c}\"? "))
                        .unwrap_or_default();
                    v.error(
                        &sat,
                        format!("service `{service}` is not defined"),
                        format!(
                            "{like}declare it as [services.{service}] with driver = \"process\""
                        ),
                    );
                }
                Some(def) if !matches!(def.driver, Driver::Process(_)) => {
                    ok = false;
                    v.error(
                        &sat,
                        format!("service `{service}` is not supervised by runcap, so runcap keeps no log of it"),
                        "only driver = \"process\" services have a runcap log; name the file the service writes under sources instead",
                    );
                }
                Some(_) => {}
            }
        }
        for (i, unit) in raw.units.iter().enumerate() {
            if !unit_name_ok(unit) {
                ok = false;
                v.error(
                    &at.key("units").index(i),
                    format!("`{unit}` is not a systemd unit name"),
                    "name the unit as systemctl shows it, e.g. \"nginx.service\"",
                );
            }
        }
        let journal = raw.journal.as_deref().and_then(|dir| {
            let path = lexical(&v.resolve(&at.key("journal"), dir));
            if path.is_dir() {
                return Some(path);
            }
            ok = false;
            v.error(
                &at.key("journal"),
                format!("{} is not a directory", path.display()),
                "name a journal directory (e.g. \"/var/log/journal/remote\"), or leave journal out to read the system journal",
            );
            None
        });
        if journal.is_some() && raw.units.is_empty() {
            ok = false;
            v.error(
                &at.key("journal"),
                "a journal directory is named but no unit is granted",
                "add units = [\"NAME.service\"], or remove journal",
            );
        }
        let journalctl = if raw.units.is_empty() {
            None
        } else {
            let found = JOURNALCTL.iter().map(PathBuf::from).find(|p| p.is_file());
            if found.is_none() {
                ok = false;
                v.error(
                    &at.key("units"),
                    format!("journalctl is not installed here ({})", JOURNALCTL.join(", ")),
                    "install systemd's journalctl, or read the unit's log file under sources instead",
                );
            }
            found
        };
        let max_lines = raw.max_lines.unwrap_or(DEFAULT_MAX_LINES);
        if !(1..=MAX_MAX_LINES).contains(&max_lines) {
            ok = false;
            v.error(
                &at.key("max_lines"),
                format!("{max_lines} is not between 1 and {MAX_MAX_LINES}"),
                "a read returns at most this many lines; ask for fewer with tail or grep",
            );
        }
        let scan = match &raw.scan {
            Some(s) => v.size(&at.key("scan"), s).filter(|n| {
                let fits = (1..=MAX_SCAN).contains(n);
                if !fits {
                    v.error(
                        &at.key("scan"),
                        format!("{s} is not between 1B and {}", fmt_size(MAX_SCAN)),
                        "scan is how much of the end of a file one read looks at",
                    );
                }
                fits
            }),
            None => Some(DEFAULT_SCAN),
        };
        let scan = scan?;
        ok.then(|| LogsGrant {
            sources,
            services: raw.services,
            units: raw.units,
            journal,
            journalctl,
            max_lines,
            scan,
            key: at.to_string(),
        })
    }

    /// Every source name a plugin may read, services' included.
    pub fn names(&self) -> Vec<String> {
        self.sources
            .keys()
            .cloned()
            .chain(self.services.iter().map(|s| format!("{SERVICE_PREFIX}{s}")))
            .chain(self.units.iter().map(|u| format!("{UNIT_PREFIX}{u}")))
            .collect()
    }

    /// One line per source, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let limits = format!(
            "(last {}, at most {} lines)",
            fmt_size(self.scan),
            self.max_lines
        );
        self.sources
            .iter()
            .map(|(name, path)| format!("{name}: {} {limits}", path.display()))
            .chain(self.services.iter().map(|s| {
                format!("{SERVICE_PREFIX}{s}: the log runcap keeps of service `{s}` {limits}")
            }))
            .chain(self.units.iter().map(|u| {
                let journal = self.journal.as_ref().map_or_else(
                    || "the system journal".to_string(),
                    |d| format!("the journal in {}", d.display()),
                );
                format!("{UNIT_PREFIX}{u}: unit {u} in {journal} {limits}")
            }))
            .collect()
    }
}

/// Compares two logs grants as written: a new source or service, a source that points
/// elsewhere, or larger limits widen; a removal or smaller limits narrow.
pub fn diff(old: &LogsGrantConfig, new: &LogsGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let sources = KeyPath::root().key("sources");
    for (name, file) in &new.sources {
        match old.sources.get(name) {
            None => out.push(Change::new(
                sources.key(name),
                ChangeKind::Added,
                format!("may read log `{name}` ({file})"),
            )),
            Some(was) if was != file => out.push(Change::new(
                sources.key(name),
                ChangeKind::Changed,
                format!("log `{name}` is now {file}, not {was}"),
            )),
            Some(_) => {}
        }
    }
    for name in old.sources.keys().filter(|n| !new.sources.contains_key(*n)) {
        out.push(Change::new(
            sources.key(name),
            ChangeKind::Removed,
            format!("may no longer read log `{name}`"),
        ));
    }
    for (i, s) in new.services.iter().enumerate() {
        if !old.services.contains(s) {
            out.push(Change::new(
                KeyPath::root().key("services").index(i),
                ChangeKind::Added,
                format!("may read the log of service `{s}`"),
            ));
        }
    }
    for s in old.services.iter().filter(|s| !new.services.contains(s)) {
        out.push(Change::new(
            KeyPath::root().key("services"),
            ChangeKind::Removed,
            format!("may no longer read the log of service `{s}`"),
        ));
    }
    for (i, u) in new.units.iter().enumerate() {
        if !old.units.contains(u) {
            out.push(Change::new(
                KeyPath::root().key("units").index(i),
                ChangeKind::Added,
                format!("may read the journal of unit `{u}`"),
            ));
        }
    }
    for u in old.units.iter().filter(|u| !new.units.contains(u)) {
        out.push(Change::new(
            KeyPath::root().key("units"),
            ChangeKind::Removed,
            format!("may no longer read the journal of unit `{u}`"),
        ));
    }
    if old.journal != new.journal {
        let name = |j: &Option<String>| j.clone().unwrap_or_else(|| "the system journal".into());
        out.push(Change::new(
            KeyPath::root().key("journal"),
            ChangeKind::Changed,
            format!(
                "units are read from {}, not {}",
                name(&new.journal),
                name(&old.journal)
            ),
        ));
    }
    let lines = |c: &LogsGrantConfig| c.max_lines.unwrap_or(DEFAULT_MAX_LINES) as u64;
    let scan = |c: &LogsGrantConfig| match &c.scan {
        None => Some(DEFAULT_SCAN),
        Some(s) => crate::manifest::units::parse_size(s).ok(),
    };
    out.extend(limit_change(
        "max_lines",
        "lines per read",
        Some(lines(old)),
        Some(lines(new)),
    ));
    out.extend(limit_change(
        "scan",
        "bytes scanned per read",
        scan(old),
        scan(new),
    ));
    out
}

/// How a limit changed: larger widens, smaller narrows, unreadable needs review.
fn limit_change(key: &str, what: &str, old: Option<u64>, new: Option<u64>) -> Option<Change> {
    let at = KeyPath::root().key(key);
    match (old, new) {
        (Some(a), Some(b)) if b > a => Some(Change::new(
            at,
            ChangeKind::Widened,
            format!("{what} up from {a} to {b}"),
        )),
        (Some(a), Some(b)) if b < a => Some(Change::new(
            at,
            ChangeKind::Narrowed,
            format!("{what} down from {a} to {b}"),
        )),
        (Some(_), Some(_)) => None,
        _ => Some(Change::new(
            at,
            ChangeKind::Changed,
            format!("{what} changed"),
        )),
    }
}

/// Why a log could not be read; the plugin gets the text as `unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path} does not exist (yet)")]
    Missing { path: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the read did not finish: {0}")]
    Abandoned(#[from] tokio::task::JoinError),
    #[error("the read did not finish before the step's deadline")]
    Deadline,
    #[error("cannot run {journalctl}: {source}")]
    Journalctl {
        journalctl: String,
        source: std::io::Error,
    },
    #[error("journalctl could not read unit {unit}: {message}")]
    Journal { unit: String, message: String },
}

/// What a read keeps and how it filters, once the query is checked.
struct Filter {
    grep: Option<Regex>,
    /// Lines stamped before this are left out.
    since: Option<DateTime<Utc>>,
    /// The most lines kept (the last ones).
    keep: usize,
}

/// The end of a file, at most `scan` bytes, from its first whole line.
pub fn read_end(path: &Path, scan: u64) -> Result<Vec<u8>, ReadError> {
    let shown = || path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ReadError::Missing { path: shown() },
        _ => ReadError::Io {
            path: shown(),
            source,
        },
    })?;
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    // One byte before the window says whether the window starts a line.
    let start = len.saturating_sub(scan);
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    file.take(len - from).read_to_end(&mut bytes).map_err(io)?;
    if start > 0 {
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..cut);
    }
    Ok(bytes)
}

/// Whether `unit` is a systemd unit name (`nginx.service`, `getty@tty1.service`), so it
/// can be handed to `journalctl` as one argument that is never an option.
fn unit_name_ok(unit: &str) -> bool {
    (1..=255).contains(&unit.len())
        && unit.starts_with(|c: char| c.is_ascii_alphanumeric())
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c))
}

/// The newest entries of `unit`, at most `scan` bytes of them, oldest first, as
/// `journalctl` prints them (stamped to the microsecond with their offset). `journalctl`
/// reads newest first and is stopped once `scan` bytes are in, so a unit with years of
/// history costs no more than one with an hour; it runs with an empty environment and is
/// killed when the read is dropped (the step's deadline).
async fn read_unit(
    journalctl: &Path,
    journal: Option<&Path>,
    unit: &str,
    since: Option<DateTime<Utc>>,
    scan: u64,
) -> Result<Vec<u8>, ReadError> {
    use tokio::io::AsyncReadExt;
    let mut cmd = tokio::process::Command::new(journalctl);
    cmd.env_clear()
        .env("SYSTEMD_COLORS", "0")
        .env("LC_ALL", "C.UTF-8")
        .args([
            "--no-pager",
            "--quiet",
            "--reverse",
            "--output=short-iso-precise",
        ])
        .arg(format!("--unit={unit}"));
    if let Some(dir) = journal {
        cmd.arg("--directory").arg(dir);
    }
    if let Some(t) = since {
        cmd.arg(format!("--since=@{}", t.timestamp().max(0)));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawn_error = |source| ReadError::Journalctl {
        journalctl: journalctl.display().to_string(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let (Some(mut out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both streams are piped");
    };
    let complaint = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = err
            .take(JOURNALCTL_STDERR as u64)
            .read_to_end(&mut text)
            .await;
        text
    });
    // Newest first: once `scan` bytes are in, the rest is older than anything kept.
    let keep = scan as usize;
    let mut newest_first = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut cut = false;
    loop {
        let n = out.read(&mut chunk).await.map_err(spawn_error)?;
        if n == 0 {
            break;
        }
        newest_first.extend_from_slice(&chunk[..n]);
        if newest_first.len() >= keep {
            newest_first.truncate(keep);
            cut = true;
            break;
        }
    }
    let bytes = oldest_first(&newest_first, cut);
    if cut {
        // Stopped on purpose: what journalctl says as it goes is of no interest.
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(bytes);
    }
    let status = child.wait().await.map_err(spawn_error)?;
    let complaint = complaint.await.unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&complaint);
        let message = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(ReadError::Journal {
            unit: unit.to_string(),
            message: match (message, status.code()) {
                ("", Some(code)) => format!("exit code {code}"),
                ("", None) => "killed by a signal".to_string(),
                (m, _) => m.to_string(),
            },
        });
    }
    Ok(bytes)
}

/// `journalctl --reverse` output put back in time order. An entry is its first line and
/// the indented lines after it (the rest of a multi-line message), which stay in their
/// order; when the output was `cut`, the last entry may be incomplete and is left out.
fn oldest_first(newest_first: &[u8], cut: bool) -> Vec<u8> {
    let mut entries: Vec<Vec<&[u8]>> = Vec::new();
    let mut lines: Vec<&[u8]> = newest_first.split(|&b| b == b'\n').collect();
    let indented = |line: &[u8]| line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
    // The piece after the last line break: empty, or a line cut short (left out).
    let tail = lines.pop().unwrap_or_default();
    for line in lines {
        match entries.last_mut() {
            Some(entry) if indented(line) => entry.push(line),
            _ => entries.push(vec![line]),
        }
    }
    // The oldest entry read is whole only if what follows it is known to start another
    // entry: the output ended there, or the cut-off piece is a first line.
    let oldest_whole = if tail.is_empty() {
        !cut
    } else {
        !indented(tail)
    };
    if !oldest_whole {
        entries.pop();
    }
    let mut out = Vec::with_capacity(newest_first.len());
    for entry in entries.iter().rev() {
        for line in entry {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

/// Redacts, stamps and filters the lines of `bytes` (the end of a log).
fn filter_lines(
    bytes: Vec<u8>,
    filter: &Filter,
    redactor: &runcap_redact::Redactor,
) -> wit::LogLines {
    // Valid UTF-8 (the usual case) is taken as is, without a second copy.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let mut text: &str = &text;
    if let Some(t) = text.strip_suffix('\n') {
        text = t;
    }
    let mut kept: VecDeque<String> = VecDeque::new();
    let (mut matched, mut scanned, mut unstamped) = (0u64, 0u64, 0u64);
    let mut last: Option<DateTime<Utc>> = None;
    let now = Utc::now();
    if !text.is_empty() {
        for raw in text.split('\n') {
            scanned += 1;
            let mut line = raw.strip_suffix('\r').unwrap_or(raw).to_string();
            crate::redaction::scrub_string(redactor, &mut line);
            match timestamp(&line, now) {
                Some(t) => last = Some(t),
                None => unstamped += 1,
            }
            if let Some(since) = filter.since
                && last.is_none_or(|t| t < since)
            {
                continue;
            }
            if let Some(re) = &filter.grep
                && !re.is_match(&line)
            {
                continue;
            }
            matched += 1;
            if filter.keep > 0 {
                if kept.len() == filter.keep {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }
    }
    wit::LogLines {
        truncated: matched > kept.len() as u64,
        lines: kept.into(),
        matched,
        scanned,
        unstamped,
    }
}

static ISO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\[?(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?)\s?(Z|z|[+-]\d{2}:?\d{2})?",
    )
    .expect("a valid pattern")
});
static SLASHED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2})").expect("a valid pattern")
});
static CLF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]")
        .expect("a valid pattern")
});
static SYSLOG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2})\b").expect("a valid pattern")
});

/// The timestamp a log line starts with, if it has one: RFC 3339 / ISO 8601 (`T` or a
/// space, fractions, an offset or none, optionally in brackets), nginx's error log
/// `2026/12/04 16:22:08`, syslog `Dec  4 16:22:08` (this year, or last year when that
/// would be in the future), a common-log `[04/Dec/2026:16:22:08 +0000]` in its first
/// bytes, or a JSON line's `ts`, `time` or `timestamp`. A stamp without an offset is local
/// time (UTC where the zone is unknown).
pub fn timestamp(line: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let first = line.as_bytes().first()?;
    let found = match first {
        b'{' => json_stamp(line),
        b'0'..=b'9' | b'[' => iso(line).or_else(|| slashed(line)),
        b'A'..=b'Z' => syslog(line, now),
        _ => None,
    };
    found.or_else(|| clf(line))
}

fn iso(line: &str) -> Option<DateTime<Utc>> {
    let c = ISO.captures(line)?;
    let text = format!("{}T{}", &c[1], c[2].replace(',', "."));
    let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    match c.get(3).map(|m| m.as_str()) {
        None => local(naive),
        Some("Z" | "z") => Some(naive.and_utc()),
        Some(offset) => {
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            let (h, m): (i32, i32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            let secs = (h * 3600 + m * 60) * if offset.starts_with('-') { -1 } else { 1 };
            let tz = FixedOffset::east_opt(secs)?;
            Some(tz.from_local_datetime(&naive).single()?.with_timezone(&Utc))
        }
    }
}

fn slashed(line: &str) -> Option<DateTime<Utc>> {
    let c = SLASHED.captures(line)?;
    local(NaiveDateTime::parse_from_str(&c[1], "%Y/%m/%d %H:%M:%S").ok()?)
}

fn clf(line: &str) -> Option<DateTime<Utc>> {
    let mut end = line.len().min(STAMP_REACH + 30);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let c = CLF.captures(&line[..end])?;
    if c.get(0)?.start() > STAMP_REACH {
        return None;
    }
    DateTime::parse_from_str(&c[1], "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn syslog(line: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let c = SYSLOG.captures(line)?;
    let at = |year: i32| -> Option<DateTime<Utc>> {
        let day =
            NaiveDate::parse_from_str(&format!("{year} {} {}", &c[1], &c[2]), "%Y %b %d").ok()?;
        let time = chrono::NaiveTime::parse_from_str(&c[3], "%H:%M:%S").ok()?;
        local(day.and_time(time))
    };
    let year = now.with_timezone(&Local).year();
    let this = at(year)?;
    // A December line read in January is last year's.
    if this > now + chrono::Duration::days(1) {
        at(year - 1)
    } else {
        Some(this)
    }
}

fn json_stamp(line: &str) -> Option<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = ["ts", "time", "timestamp"]
        .iter()
        .find_map(|k| value.get(k)?.as_str())?;
    iso(text)
}

/// A local time (UTC where the zone is unknown) as UTC; the earlier of two in a DST fold.
fn local(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

impl wit::Host for CapCtx<'_, Logs> {
    async fn read(&mut self, q: wit::Query) -> wasmtime::Result<Result<wit::LogLines, wit::Error>> {
        crate::taped!(self, "logs.read", (q), self.read_live(q))
    }
}

impl CapCtx<'_, Logs> {
    /// The call itself; the [`wit::Host`] impl above records or replays it.
    async fn read_live(
        &mut self,
        q: wit::Query,
    ) -> wasmtime::Result<Result<wit::LogLines, wit::Error>> {
        let source = q.source.clone();
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny("read", &source, reason))));
        };
        let Some(from) = access.sources.get(&source).cloned() else {
            let names = access.grant.names();
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let like = closest(&source, &known)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            let service = source.strip_prefix(SERVICE_PREFIX);
            let unit = source.strip_prefix(UNIT_PREFIX);
            let reason = match (service, unit) {
                (Some(service), _) => format!(
                    "log `{source}` is not granted{like}; add \"{service}\" to {}.services",
                    access.grant.key
                ),
                (_, Some(unit)) => format!(
                    "log `{source}` is not granted{like}; add \"{unit}\" to {}.units",
                    access.grant.key
                ),
                (None, None) => format!(
                    "log `{source}` is not granted{like}; add {source} = \"path/to/file.log\" to {}.sources",
                    access.grant.key
                ),
            };
            return Ok(Err(wit::Error::Denied(self.deny("read", &source, reason))));
        };
        let grep = match &q.grep {
            None => None,
            Some(p) => match regex::RegexBuilder::new(p)
                .size_limit(PATTERN_LIMIT)
                .build()
            {
                Ok(re) => Some(re),
                Err(e) => {
                    let message = format!("`{p}` is not a regular expression: {e}");
                    self.record(
                        CallRecord::allowed(Logs::NAME, "read", &source)
                            .read_only()
                            .with_result(format!("invalid: {message}")),
                    );
                    return Ok(Err(wit::Error::Invalid(message)));
                }
            },
        };
        let grant = access.grant.clone();
        let cap = q.max_lines.unwrap_or(grant.max_lines).min(grant.max_lines);
        let keep = q.tail.map_or(cap, |t| t.min(cap)) as usize;
        let since = q.since_seconds.map(|s| {
            let back = chrono::Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64);
            Utc::now()
                .checked_sub_signed(back)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        });
        let filter = Filter { grep, since, keep };
        let redactor = self.core.redactor.clone();
        let scan = grant.scan;
        let limit = self.core.remaining().max(Duration::from_millis(1));
        // A file is read and filtered in one blocking task; a unit's journal is read
        // from journalctl's output as it comes, then filtered.
        let read = async move {
            match from {
                Source::File(path) => {
                    tokio::task::spawn_blocking(move || {
                        read_end(&path, scan).map(|bytes| filter_lines(bytes, &filter, &redactor))
                    })
                    .await?
                }
                Source::Unit(unit) => {
                    let journalctl =
                        grant
                            .journalctl
                            .as_deref()
                            .ok_or_else(|| ReadError::Journal {
                                unit: unit.clone(),
                                message: "journalctl is not installed".into(),
                            })?;
                    let bytes =
                        read_unit(journalctl, grant.journal.as_deref(), &unit, since, scan).await?;
                    Ok(
                        tokio::task::spawn_blocking(move || {
                            filter_lines(bytes, &filter, &redactor)
                        })
                        .await?,
                    )
                }
            }
        };
        let read = match tokio::time::timeout(limit, read).await {
            Ok(read) => read,
            Err(_) => Err(ReadError::Deadline),
        };
        let record = CallRecord::allowed(Logs::NAME, "read", &source).read_only();
        Ok(match read {
            Ok(lines) => {
                self.record(record.with_result(format!(
                    "{} of {} lines matched",
                    lines.matched, lines.scanned
                )));
                Ok(lines)
            }
            Err(e) => {
                // journalctl's own words may quote anything; they pass the redactor too.
                let mut message = e.to_string();
                crate::redaction::scrub_string(&self.core.redactor, &mut message);
                self.record(record.with_result(format!("unavailable: {message}")));
                Err(wit::Error::Unavailable(message))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing;

    const SERVICES: &str = r#"
[services.api]
driver = "process"
command = "/bin/sleep"
args = ["60"]

[services.web]
driver = "command"
start = "true"
stop = "true"
status = "true"
"#;

    /// An action of plugin `p` granted `grant` (TOML after the declarations), with
    /// `secrets` redacted from what it reads and records.
    fn action(dir: &Path, grant: &str, secrets: &[(&str, &str)]) -> testing::Action {
        let d = testing::declared(SERVICES, dir);
        let manifest = format!("{SERVICES}\n{grant}");
        let grant = testing::grant::<Logs>(&manifest, dir, &d).unwrap();
        let mut env = testing::resources(&d, &dir.join(".runcap"), None);
        let spec = crate::redaction::Spec {
            config: Default::default(),
            literals: secrets
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        };
        env.redactor = crate::redaction::host_redactor(&spec).unwrap();
        let mut action = testing::recorded(testing::prepared::<Logs>(grant, &env), false, 1024);
        action.state.core.redactor = env.redactor.clone();
        action
    }

    fn query(source: &str) -> wit::Query {
        wit::Query {
            source: source.into(),
            tail: None,
            since_seconds: None,
            grep: None,
            max_lines: None,
        }
    }

    async fn read(a: &mut testing::Action, q: wit::Query) -> Result<wit::LogLines, wit::Error> {
        let mut ctx = a.state.view::<Logs>();
        wit::Host::read(&mut ctx, q).await.unwrap()
    }

    /// `t` as RFC 3339 in UTC, whole seconds.
    fn stamp(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    const APP: &str = "[plugins.p.grants.logs]\nsources = { app = \"app.log\" }\n";

    #[test]
    fn every_timestamp_format_is_read() {
        let now = Utc::now();
        let want = Utc.with_ymd_and_hms(2026, 12, 4, 16, 22, 8).unwrap();
        let local = |s: &str| {
            Local
                .from_local_datetime(
                    &NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap(),
                )
                .earliest()
                .unwrap()
                .with_timezone(&Utc)
        };
        for (line, expect) in [
            ("2026-12-04T16:22:08Z INFO up", want),
            (
                "2026-12-04T16:22:08.123Z INFO up",
                want + chrono::Duration::milliseconds(123),
            ),
            ("2026-12-04T18:22:08+02:00 INFO up", want),
            ("2026-12-04T11:22:08-0500 INFO up", want),
            (
                "2026-12-04 16:22:08,5Z x",
                want + chrono::Duration::milliseconds(500),
            ),
            ("[2026-12-04T16:22:08Z] [error] x", want),
            ("2026-12-04 16:22:08 no zone", local("2026-12-04 16:22:08")),
            (
                "2026/12/04 16:22:08 [error] 123#0: x",
                local("2026-12-04 16:22:08"),
            ),
            (
                "127.0.0.1 - - [04/Dec/2026:17:22:08 +0100] \"GET / HTTP/1.1\" 200",
                want,
            ),
            ("[04/Dec/2026:16:22:08 +0000] x", want),
            (
                r#"{"level":"error","ts":"2026-12-04T16:22:08Z","msg":"x"}"#,
                want,
            ),
            (r#"{"time":"2026-12-04T16:22:08Z"}"#, want),
            (r#"{"timestamp":"2026-12-04 16:22:08.000Z"}"#, want),
        ] {
            assert_eq!(timestamp(line, now), Some(expect), "{line}");
        }
        let year = now.with_timezone(&Local).year();
        let syslog = timestamp("Jan  2 03:04:05 host sshd[1]: x", now).unwrap();
        let expect = local(&format!("{year}-01-02 03:04:05"));
        assert!(syslog == expect || syslog == local(&format!("{}-01-02 03:04:05", year - 1)));
        assert!(syslog <= now + chrono::Duration::days(1));
        for line in [
            "",
            "    at com.example.Foo(Foo.java:12)",
            "Traceback (most recent call last):",
            "ERROR no stamp",
            r#"{"msg":"no stamp"}"#,
            "2026-13-45T99:00:00Z bad",
            &format!("{} [04/Dec/2026:16:22:08 +0000] too far in", "x".repeat(80)),
        ] {
            assert_eq!(timestamp(line, now), None, "{line}");
        }
    }

    #[tokio::test]
    async fn since_keeps_recent_lines_and_their_unstamped_continuations() {
        let (_d, dir) = testing::dir();
        let now = Utc::now();
        let old = stamp(now - chrono::Duration::minutes(10));
        let new = stamp(now - chrono::Duration::minutes(1));
        let log = format!(
            "orphan with no stamp before it\n{old} ERROR old\n  at old.frame\n{new} ERROR new\n  at new.frame\n{new} INFO fine\n"
        );
        std::fs::write(dir.join("app.log"), log).unwrap();
        let mut a = action(&dir, APP, &[]);
        let r = read(
            &mut a,
            wit::Query {
                since_seconds: Some(300),
                ..query("app")
            },
        )
        .await
        .unwrap();
        assert_eq!(
            r.lines,
            [
                format!("{new} ERROR new"),
                "  at new.frame".into(),
                format!("{new} INFO fine")
            ]
        );
        assert_eq!((r.matched, r.scanned, r.unstamped), (3, 6, 3));
        let r = read(
            &mut a,
            wit::Query {
                grep: Some("ERROR|frame".into()),
                ..query("app")
            },
        )
        .await
        .unwrap();
        assert_eq!(r.matched, 4);
        let calls = a.calls();
        assert_eq!(calls[0]["result"], "3 of 6 lines matched");
        assert_eq!(
            a.audit(),
            vec![
                ("logs".into(), "allowed".into(), "app".into()),
                ("logs".into(), "allowed".into(), "app".into()),
            ]
        );
    }

    #[tokio::test]
    async fn lines_are_redacted_before_a_pattern_sees_them() {
        let (_d, dir) = testing::dir();
        let secret = "tok-9f8e7d6c5b4a3210";
        let log = format!(
            "2026-12-04T16:22:08Z login with {secret} ok\n2026-12-04T16:22:09Z other line\n"
        );
        std::fs::write(dir.join("app.log"), log).unwrap();
        let mut a = action(&dir, APP, &[("t", secret)]);
        for probe in [
            "tok-9",
            "tok-9f8e",
            "9f8e7d",
            "4a3210",
            &regex::escape(secret),
        ] {
            let r = read(
                &mut a,
                wit::Query {
                    grep: Some(probe.to_string()),
                    ..query("app")
                },
            )
            .await
            .unwrap();
            assert_eq!(r.matched, 0, "{probe} probes the secret");
            assert!(r.lines.is_empty());
        }
        let all = read(&mut a, query("app")).await.unwrap();
        assert_eq!(
            all.lines[0],
            "2026-12-04T16:22:08Z login with [SECRET_REDACTED] ok"
        );
        assert!(all.lines.iter().all(|l| !l.contains(secret)));
        assert!(!format!("{:?}", a.calls()).contains("tok-9f8e"));
    }

    #[tokio::test]
    async fn tail_and_the_line_caps_keep_the_last_lines_and_say_so() {
        let (_d, dir) = testing::dir();
        let log: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("app.log"), log).unwrap();
        let grant = "[plugins.p.grants.logs]\nsources = { app = \"app.log\" }\nmax_lines = 10\n";
        let mut a = action(&dir, grant, &[]);
        let r = read(&mut a, query("app")).await.unwrap();
        assert_eq!(r.lines.len(), 10);
        assert_eq!(r.lines[0], "line 41");
        assert_eq!((r.matched, r.scanned, r.truncated), (50, 50, true));
        let r = read(
            &mut a,
            wit::Query {
                max_lines: Some(1000),
                tail: Some(3),
                grep: Some(r"line [1-4]$".into()),
                ..query("app")
            },
        )
        .await
        .unwrap();
        assert_eq!(r.lines, ["line 2", "line 3", "line 4"]);
        assert_eq!((r.matched, r.truncated), (4, true));
        let r = read(
            &mut a,
            wit::Query {
                max_lines: Some(2),
                grep: Some("line 5".into()),
                ..query("app")
            },
        )
        .await
        .unwrap();
        assert_eq!(r.lines, ["line 5", "line 50"]);
        assert_eq!((r.matched, r.truncated), (2, false));
        let bad = read(
            &mut a,
            wit::Query {
                grep: Some("(".into()),
                ..query("app")
            },
        )
        .await;
        assert!(
            matches!(&bad, Err(wit::Error::Invalid(m)) if m.contains("is not a regular expression")),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn only_the_end_of_a_large_file_is_read_from_its_first_whole_line() {
        let (_d, dir) = testing::dir();
        // 100 lines of 10 bytes: a 95-byte window starts mid-line and holds 9 whole ones.
        let log: String = (0..100).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(log.len(), 1000);
        std::fs::write(dir.join("app.log"), &log).unwrap();
        let grant = "[plugins.p.grants.logs]\nsources = { app = \"app.log\" }\nscan = \"95B\"\n";
        let mut a = action(&dir, grant, &[]);
        let r = read(&mut a, query("app")).await.unwrap();
        assert_eq!(r.scanned, 9);
        assert_eq!(r.lines.first().unwrap(), "line 0091");
        assert_eq!(r.lines.last().unwrap(), "line 0099");
        // A window that starts exactly at a line keeps that line.
        let grant = "[plugins.p.grants.logs]\nsources = { app = \"app.log\" }\nscan = \"100B\"\n";
        let mut a = action(&dir, grant, &[]);
        let r = read(&mut a, query("app")).await.unwrap();
        assert_eq!((r.scanned, r.lines[0].as_str()), (10, "line 0090"));
    }

    #[tokio::test]
    async fn a_missing_file_is_unavailable_and_an_ungranted_source_denied() {
        let (_d, dir) = testing::dir();
        let mut a = action(&dir, APP, &[]);
        let r = read(&mut a, query("app")).await;
        assert!(
            matches!(&r, Err(wit::Error::Unavailable(m)) if m.contains("app.log does not exist")),
            "{r:?}"
        );
        let r = read(&mut a, query("ap")).await;
        assert!(
            matches!(&r, Err(wit::Error::Denied(m)) if m.contains("did you mean `app`") && m.contains("to plugins.p.grants.logs.sources")),
            "{r:?}"
        );
        let r = read(&mut a, query("service:api")).await;
        assert!(
            matches!(&r, Err(wit::Error::Denied(m)) if m.contains("add \"api\" to plugins.p.grants.logs.services")),
            "{r:?}"
        );
        let decisions: Vec<String> = a.audit().into_iter().map(|(_, d, _)| d).collect();
        assert_eq!(decisions, ["allowed", "denied", "denied"]);
        assert!(
            a.calls()[0]["result"]
                .as_str()
                .unwrap()
                .starts_with("unavailable:")
        );

        let mut none = testing::recorded(Default::default(), false, 1024);
        let mut ctx = none.state.view::<Logs>();
        let r = wit::Host::read(&mut ctx, query("app")).await.unwrap();
        assert!(
            matches!(&r, Err(wit::Error::Denied(m)) if m.contains("[plugins.p.grants.logs]")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_supervised_service_log_is_read_as_service_name() {
        let (_d, dir) = testing::dir();
        let grant = "[plugins.p.grants.logs]\nservices = [\"api\"]\n";
        let mut a = action(&dir, grant, &[]);
        let services = dir.join(".runcap").join("services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(services.join("api.log"), "2026-12-04T16:22:08Z listening\n").unwrap();
        let r = read(&mut a, query("service:api")).await.unwrap();
        assert_eq!(r.lines, ["2026-12-04T16:22:08Z listening"]);
        let g = testing::grant::<Logs>(
            &format!("{SERVICES}\n{grant}"),
            &dir,
            &testing::declared(SERVICES, &dir),
        )
        .unwrap();
        assert_eq!(
            Logs::granted_names(Some(&g), ""),
            Some(vec!["service:api".to_string()])
        );
        assert_eq!(Logs::granted_names(Some(&g), "commands"), None);
        assert!(
            Logs::describe(&g)[0].starts_with("service:api: the log runcap keeps of service `api`")
        );
    }

    #[tokio::test]
    async fn a_dry_run_reads_and_bytes_that_are_not_utf8_are_replaced() {
        let (_d, dir) = testing::dir();
        std::fs::write(dir.join("app.log"), b"2026-12-04T16:22:08Z bad \xff byte\n").unwrap();
        let d = testing::declared("", &dir);
        let grant = testing::grant::<Logs>(APP, &dir, &d).unwrap();
        let env = testing::resources(&d, &dir.join(".runcap"), None);
        let mut a = testing::recorded(testing::prepared::<Logs>(grant, &env), true, 1024);
        let r = read(&mut a, query("app")).await.unwrap();
        assert_eq!(r.lines, ["2026-12-04T16:22:08Z bad \u{fffd} byte"]);
        assert_eq!(a.audit()[0].1, "allowed");
    }

    #[test]
    fn grant_errors_are_located_and_the_hint_validates() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("logs")).unwrap();
        let decl = testing::declared(SERVICES, &dir);
        let errors = |body: &str| {
            testing::grant::<Logs>(
                &format!("{SERVICES}\n[plugins.p.grants.logs]\n{body}\n"),
                &dir,
                &decl,
            )
            .unwrap_err()
            .join("\n")
        };
        for (body, expect) in [
            (
                "sources = { App = \"x.log\" }",
                "`App` is not a valid log source name",
            ),
            (
                "sources = { app = \"nowhere/x.log\" }",
                "nowhere, the directory of nowhere/x.log, does not exist",
            ),
            (
                "sources = { app = \"logs\" }",
                "is a directory, not a log file",
            ),
            ("services = [\"apii\"]", "did you mean \"api\""),
            ("services = [\"web\"]", "is not supervised by runcap"),
            ("max_lines = 0", "0 is not between 1 and 100000"),
            ("max_lines = 100001", "is not between 1 and 100000"),
            ("scan = \"2GiB\"", "is not between 1B and 1GiB"),
            ("scan = \"lots\"", "lots"),
            ("files = []", "unknown field `files`"),
            ("units = [\"--all\"]", "`--all` is not a systemd unit name"),
            (
                "units = [\"api.service\"]\njournal = \"nowhere\"",
                "nowhere is not a directory",
            ),
            (
                "journal = \"logs\"",
                "a journal directory is named but no unit is granted",
            ),
        ] {
            let e = errors(body);
            assert!(e.contains(expect), "{body}:\n{e}");
            assert!(e.contains("runcap.toml:"), "located: {e}");
        }
        // A file that does not exist yet is fine: logs appear later.
        let g = testing::grant::<Logs>(
            &format!(
                "{SERVICES}\n[plugins.p.grants.logs]\nsources = {{ app = \"logs/./app.log\" }}\n"
            ),
            &dir,
            &decl,
        )
        .unwrap();
        let path = dir.join("logs/app.log");
        assert_eq!(
            Logs::describe(&g),
            [format!(
                "app: {} (last 64MiB, at most 1000 lines)",
                path.display()
            )]
        );
        assert_eq!(
            Logs::granted_names(Some(&g), "sources"),
            Some(vec!["app".to_string()])
        );
        testing::grant::<Logs>(&format!("{SERVICES}\n{}", Logs::hint("p")), &dir, &decl).unwrap();
        // Units are named `unit:NAME`, read from the system journal unless one is named.
        let g = testing::grant::<Logs>(
            &format!(
                "{SERVICES}\n[plugins.p.grants.logs]\nunits = [\"nginx.service\", \"getty@tty1.service\"]\n"
            ),
            &dir,
            &decl,
        )
        .unwrap();
        assert_eq!(
            Logs::granted_names(Some(&g), "sources"),
            Some(vec![
                "unit:nginx.service".to_string(),
                "unit:getty@tty1.service".to_string()
            ])
        );
        assert_eq!(
            Logs::describe(&g)[0],
            "unit:nginx.service: unit nginx.service in the system journal (last 64MiB, at most 1000 lines)"
        );
    }

    #[test]
    fn reversed_journal_output_is_put_back_in_order_with_multi_line_entries_whole() {
        let newest_first = b"t3 panic\n  at main.rs:3\n  at lib.rs:9\nt2 two\nt1 one\n";
        assert_eq!(
            String::from_utf8(oldest_first(newest_first, false)).unwrap(),
            "t1 one\nt2 two\nt3 panic\n  at main.rs:3\n  at lib.rs:9\n"
        );
        // Cut after `scan` bytes: the oldest entry read may be partial, so it goes.
        let cut = &newest_first[..newest_first.len() - 3];
        assert_eq!(
            String::from_utf8(oldest_first(cut, true)).unwrap(),
            "t2 two\nt3 panic\n  at main.rs:3\n  at lib.rs:9\n"
        );
        // Cut inside a multi-line entry: the whole entry goes, not half of it.
        assert_eq!(oldest_first(&newest_first[..20], true), b"");
        assert_eq!(oldest_first(b"", false), b"");
    }

    #[tokio::test]
    async fn a_unit_not_granted_is_denied_with_the_line_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = action(
            dir.path(),
            "[plugins.p.grants.logs]\nunits = [\"api.service\"]\n",
            &[],
        );
        match read(&mut a, query("unit:web.service")).await {
            Err(wit::Error::Denied(m)) => assert!(
                m.contains("add \"web.service\" to plugins.p.grants.logs.units"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sources_written_in_other_files_compare_by_where_they_point() {
        let mut raw: toml::Value = toml::from_str(
            "sources = { app = \"./logs/../logs/app.log\", abs = \"/var/log/x.log\" }\n",
        )
        .unwrap();
        Logs::resolve_paths(&mut raw, &|_| PathBuf::from("/srv/ops"));
        assert_eq!(
            raw["sources"]["app"].as_str(),
            Some("/srv/ops/logs/app.log")
        );
        assert_eq!(raw["sources"]["abs"].as_str(), Some("/var/log/x.log"));
        let mut raw: toml::Value = toml::from_str("journal = \"./journal\"\n").unwrap();
        Logs::resolve_paths(&mut raw, &|_| PathBuf::from("/srv/ops"));
        assert_eq!(raw["journal"].as_str(), Some("/srv/ops/journal"));
    }

    #[test]
    fn a_new_source_or_larger_limits_widen_and_removals_narrow() {
        let read = |t: &str| -> LogsGrantConfig { toml::from_str(t).unwrap() };
        let base = read("sources = { app = \"app.log\" }\n");
        let more = read(
            "sources = { app = \"app.log\", nginx = \"/var/log/nginx/error.log\" }\nservices = [\"api\"]\nmax_lines = 5000\nscan = \"128MiB\"\n",
        );
        let moved = read("sources = { app = \"other.log\" }\n");
        let smaller = read("sources = { app = \"app.log\" }\nmax_lines = 10\nscan = \"1MiB\"\n");
        let kinds = |old: &LogsGrantConfig, new: &LogsGrantConfig| -> Vec<(String, ChangeKind)> {
            diff(old, new)
                .into_iter()
                .map(|c| (c.path.to_string(), c.kind))
                .collect()
        };
        assert_eq!(
            kinds(&base, &more),
            vec![
                ("sources.nginx".to_string(), ChangeKind::Added),
                ("services[0]".to_string(), ChangeKind::Added),
                ("max_lines".to_string(), ChangeKind::Widened),
                ("scan".to_string(), ChangeKind::Widened),
            ]
        );
        assert!(diff(&more, &base).iter().all(|c| !c.widens()));
        assert!(diff(&base, &moved).iter().any(|c| c.widens()));
        assert!(diff(&base, &smaller).iter().all(|c| !c.widens()));
        assert!(diff(&smaller, &base).iter().all(|c| c.widens()));
        assert!(diff(&base, &base).is_empty());
        let units = read("units = [\"api.service\"]\n");
        let elsewhere = read("units = [\"api.service\"]\njournal = \"/var/log/journal/remote\"\n");
        assert_eq!(
            kinds(&LogsGrantConfig::default(), &units),
            vec![("units[0]".to_string(), ChangeKind::Added)]
        );
        assert_eq!(
            kinds(&units, &elsewhere),
            vec![("journal".to_string(), ChangeKind::Changed)]
        );
        assert!(
            diff(&units, &LogsGrantConfig::default())
                .iter()
                .all(|c| !c.widens())
        );
    }
}
