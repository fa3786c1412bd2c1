//! The blocking half of the backup capability: opening repositories, running the operator's
//! dump, restore and query commands, and turning repository reports into WIT records. Every
//! function here runs on a blocking thread (see `blocking` in the parent module).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runcap_repo::{
    CancelFlag, Error as RepoError, ForgetPolicy, Repository, RestoreOptions, SnapshotKind,
    SnapshotOptions, SnapshotSummary,
};
use sha2::{Digest, Sha256};

use super::{BackupAccess, Source, Target};
use crate::bindings::runcap::plugin::backup as wit;
use crate::caps::core::now_ms;

/// Entries of a list kept in a WIT report (totals stay complete).
const MAX_LISTED: usize = 1000;
/// Problem lines kept in a WIT report.
const MAX_PROBLEMS: usize = 100;
/// Standard output of a query kept.
const QUERY_STDOUT: usize = 64 * 1024;
/// Tail of a command's standard error (and a restore command's output) kept for messages.
const OUTPUT_TAIL: usize = 16 * 1024;

/// A byte count for people: `1.2 MiB`.
pub(super) fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn failed(message: impl Into<String>) -> wit::Error {
    wit::Error::Failed(message.into())
}

/// Maps a repository error to the WIT error a plugin can act on.
fn repo_error(access: &BackupAccess, repository: &str, e: RepoError) -> wit::Error {
    match e {
        RepoError::WrongKey { path } => {
            let secret = access
                .grant
                .repositories
                .get(repository)
                .map(|r| r.secret.as_str())
                .unwrap_or("?");
            wit::Error::WrongKey(format!(
                "the key from secret `{secret}` does not unlock repository `{repository}` at {}: grant the secret this repository was created with (check [secrets.{secret}]), or point the repository at another directory",
                path.display()
            ))
        }
        e @ (RepoError::SnapshotNotFound { .. } | RepoError::AmbiguousSnapshot { .. }) => {
            wit::Error::NotFound(e.to_string())
        }
        RepoError::Cancelled => failed(
            "cancelled: the action ran out of time (or the run was stopped) before the operation finished; nothing partial was recorded, earlier snapshots are intact",
        ),
        e => failed(e.to_string()),
    }
}

/// Opens (or, for a snapshot, creates) a granted repository with the key from its secret.
fn open(access: &BackupAccess, name: &str, creating: bool) -> Result<Arc<Repository>, wit::Error> {
    let def = access
        .grant
        .repositories
        .get(name)
        .ok_or_else(|| failed(format!("repository `{name}` is not granted")))?;
    let secret = access.secrets.value(&def.secret).map_err(|e| {
        failed(format!(
            "the key of repository `{name}` comes from secret `{}`, which has no value: {e}",
            def.secret
        ))
    })?;
    if secret.is_empty() {
        return Err(failed(format!(
            "secret `{}` (the key of repository `{name}`) is empty; give it a value",
            def.secret
        )));
    }
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    {
        let cache = access.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, repo)) = cache.get(name)
            && *d == digest
        {
            return Ok(repo.clone());
        }
    }
    let path = &def.path;
    let repo = if path.join("config").exists() {
        Repository::open(path, &secret)
    } else {
        let empty = match fs::read_dir(path) {
            Ok(mut rd) => rd.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(failed(format!(
                    "cannot open repository `{name}` at {}: {e}",
                    path.display()
                )));
            }
        };
        if !empty {
            // Not a repository: let the repository say so, with its advice.
            Repository::open(path, &secret)
        } else if !creating {
            return Err(wit::Error::NotFound(format!(
                "repository `{name}` at {} does not exist yet: it is created by the first snapshot",
                path.display()
            )));
        } else if !def.create {
            return Err(failed(format!(
                "there is no repository at {} and `create = false` forbids making one; create it, or set create = true for repository `{name}`",
                path.display()
            )));
        } else {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| {
                    failed(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            tracing::info!(repository = name, path = %path.display(), "creating backup repository");
            Repository::init(path, &secret)
        }
    }
    .map_err(|e| repo_error(access, name, e))?;
    let repo = Arc::new(repo);
    access
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), (digest, repo.clone()));
    Ok(repo)
}

fn time_ms(s: &SnapshotSummary) -> u64 {
    (s.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

fn info(s: &SnapshotSummary) -> wit::SnapshotInfo {
    let ms = time_ms(s);
    wit::SnapshotInfo {
        id: s.id.clone(),
        source: s.source_label.clone(),
        kind: match s.kind {
            SnapshotKind::Dir => "dir",
            SnapshotKind::Stream => "dump",
        }
        .into(),
        time_ms: ms,
        age_seconds: (now_ms() as i64 - ms as i64) / 1000,
        files: s.totals.files,
        size: s.totals.size,
        bytes_stored: s.totals.bytes_stored,
        file_name: (s.kind == SnapshotKind::Stream).then(|| s.source.clone()),
        tags: s.tags.clone(),
    }
}

/// A dry-run snapshot: what would be read, and the previous snapshot; nothing is run or stored.
pub(super) fn snapshot_preview(
    access: &BackupAccess,
    source: &str,
    src: &Source,
    repository: &str,
) -> Result<wit::SnapshotReport, wit::Error> {
    let (files, size, kind, file_name) = match src {
        Source::Dir { path, .. } => {
            let (files, size) = count_tree(path)
                .map_err(|e| failed(format!("cannot back up {}: {e}", path.display())))?;
            (files, size, "dir", None)
        }
        Source::Dump { file, .. } => (1, 0, "dump", Some(file.clone())),
    };
    // The key is checked even in a dry run: a wrong secret is what a rehearsal should find.
    let previous = match open(access, repository, false) {
        Ok(repo) => repo
            .latest(source)
            .map_err(|e| repo_error(access, repository, e))?,
        Err(wit::Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let now = now_ms();
    Ok(wit::SnapshotReport {
        snapshot: wit::SnapshotInfo {
            id: String::new(),
            source: source.to_string(),
            kind: kind.into(),
            time_ms: now,
            age_seconds: 0,
            files,
            size,
            bytes_stored: 0,
            file_name,
            tags: Vec::new(),
        },
        bytes_read: 0,
        bytes_new: 0,
        bytes_stored: 0,
        files_unchanged: 0,
        chunks_total: 0,
        chunks_new: 0,
        dedup_ratio: 0.0,
        compression_ratio: 1.0,
        duration_ms: 0,
        throughput_mib_s: 0.0,
        previous_age_seconds: previous
            .as_ref()
            .map(|p| (now as i64 - time_ms(p) as i64) / 1000),
        previous_id: previous.map(|p| p.id),
        warnings: Vec::new(),
        warnings_total: 0,
        dry_run: true,
    })
}

/// Files and bytes under a directory, without following symlinks.
fn count_tree(root: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::other("it is not a directory"));
    }
    let (mut files, mut size) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                files += 1;
                size += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    Ok((files, size))
}

/// Backs up a source.
pub(super) fn snapshot(
    access: &BackupAccess,
    source: &str,
    src: &Source,
    repository: &str,
    tags: Vec<String>,
    cancel: CancelFlag,
) -> Result<wit::SnapshotReport, wit::Error> {
    let repo = open(access, repository, true)?;
    let mut options = SnapshotOptions {
        tags,
        cancel: Some(cancel.clone()),
        ..SnapshotOptions::default()
    };
    let result = match src {
        Source::Dir {
            path,
            one_file_system,
        } => {
            options.one_file_system = *one_file_system;
            repo.snapshot_dir(source, path, &options)
        }
        Source::Dump { command, file } => {
            let mut reader = DumpReader::spawn(command, &access.grant.cwd, cancel.clone())?;
            let r = repo.snapshot_stream(source, file, &mut reader, &options);
            drop(reader);
            r
        }
    };
    let r = match result {
        Err(_) if cancel.is_cancelled() => {
            return Err(repo_error(access, repository, RepoError::Cancelled));
        }
        r => r.map_err(|e| repo_error(access, repository, e))?,
    };
    let t = &r.snapshot.totals;
    Ok(wit::SnapshotReport {
        bytes_read: t.bytes_read,
        bytes_new: t.bytes_new,
        bytes_stored: t.bytes_stored,
        files_unchanged: t.files_unchanged,
        chunks_total: t.chunks_total,
        chunks_new: t.chunks_new,
        dedup_ratio: r.dedup_ratio,
        compression_ratio: r.compression_ratio,
        duration_ms: r.snapshot.duration_ms,
        throughput_mib_s: r.throughput_mib_s,
        previous_id: r.previous.as_ref().map(|p| p.id.clone()),
        previous_age_seconds: r.previous.as_ref().map(|p| p.age_seconds),
        warnings: r.warnings.clone(),
        warnings_total: r.warnings_total,
        dry_run: false,
        snapshot: info(&r.snapshot),
    })
}

/// Checks a repository.
pub(super) fn verify(
    access: &BackupAccess,
    repository: &str,
    read_data: bool,
) -> Result<wit::VerifyReport, wit::Error> {
    let repo = open(access, repository, false)?;
    let r = repo
        .verify(read_data)
        .map_err(|e| repo_error(access, repository, e))?;
    let problems = r
        .problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|p| {
            let mut line = serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
                .replace('_', " ");
            if let Some(c) = &p.chunk {
                line += &format!(" chunk {c}");
            }
            if let Some(path) = &p.chunk_path {
                line += &format!(" ({path})");
            }
            if let Some(s) = &p.snapshot {
                line += &format!(" in snapshot {s}");
            }
            if let Some(f) = &p.file {
                line += &format!(", file {f}");
            }
            if p.snapshots_affected > 1 {
                line += &format!(", {} snapshots affected", p.snapshots_affected);
            }
            format!("{line}: {}", p.detail)
        })
        .collect();
    Ok(wit::VerifyReport {
        read_data: r.read_data,
        snapshots: r.snapshots,
        chunks_referenced: r.chunks_referenced,
        chunks_read: r.chunks_read,
        bytes_read: r.bytes_read,
        chunks_missing: r.chunks_missing,
        chunks_corrupt: r.chunks_corrupt,
        snapshots_unreadable: r.snapshots_unreadable,
        chunks_unreferenced: r.chunks_unreferenced,
        problems,
        problems_total: r.problems_total,
        ok: r.ok,
        duration_ms: r.duration_ms,
    })
}

/// The snapshot a restore request names.
fn chosen(
    access: &BackupAccess,
    repo: &Repository,
    req: &wit::RestoreRequest,
) -> Result<SnapshotSummary, wit::Error> {
    match (&req.snapshot, &req.source) {
        (Some(id), _) => repo
            .snapshot(id)
            .map_err(|e| repo_error(access, &req.repository, e)),
        (None, Some(source)) => repo
            .latest(source)
            .map_err(|e| repo_error(access, &req.repository, e))?
            .ok_or_else(|| {
                wit::Error::NotFound(format!(
                    "source `{source}` has no snapshot in repository `{}` yet; take one first",
                    req.repository
                ))
            }),
        (None, None) => Err(failed("name a snapshot id or a source")),
    }
}

/// Restores a snapshot into a target (or, in a dry run, lists what that would do).
pub(super) fn restore(
    access: &BackupAccess,
    req: &wit::RestoreRequest,
    target: &Target,
    dry_run: bool,
    cancel: CancelFlag,
) -> Result<wit::RestoreReport, wit::Error> {
    let repo = open(access, &req.repository, false)?;
    // The clock starts once the key is derived: what is timed is the restore itself.
    let started = Instant::now();
    let summary = chosen(access, &repo, req)?;
    match target {
        Target::Dir { path, .. } => {
            if req.clean && !dry_run {
                empty_dir(path)?;
            }
            let options = RestoreOptions {
                dry_run,
                overwrite: req.overwrite,
                paths: req.paths.clone(),
                cancel: Some(cancel.clone()),
            };
            let r = match repo.restore(&summary.id, path, &options) {
                Err(_) if cancel.is_cancelled() => {
                    return Err(repo_error(access, &req.repository, RepoError::Cancelled));
                }
                r => r.map_err(|e| repo_error(access, &req.repository, e))?,
            };
            let elapsed = started.elapsed();
            Ok(wit::RestoreReport {
                snapshot: info(&summary),
                target: r.target.clone(),
                dry_run,
                files: r.files,
                dirs: r.dirs,
                bytes: r.bytes,
                existing: r.existing,
                planned: r
                    .planned
                    .iter()
                    .take(MAX_LISTED)
                    .map(|p| wit::PlannedItem {
                        path: p.path.clone(),
                        kind: p.kind.clone(),
                        size: p.size,
                        exists: p.exists,
                    })
                    .collect(),
                skipped_existing: r
                    .skipped_existing
                    .iter()
                    .take(MAX_LISTED)
                    .cloned()
                    .collect(),
                failed: r
                    .failed
                    .iter()
                    .take(MAX_LISTED)
                    .map(|f| format!("{}: {}", f.path, f.reason))
                    .collect(),
                duration_ms: elapsed.as_millis() as u64,
                throughput_mib_s: mib_s(r.bytes, elapsed),
                complete: r.complete,
                command_output: None,
            })
        }
        Target::Command { command } => {
            if summary.kind != SnapshotKind::Stream {
                return Err(failed(format!(
                    "snapshot {} of `{}` is a directory snapshot; a restore command reads a dump, so restore it into a directory target",
                    summary.id, summary.source_label
                )));
            }
            let mut report = wit::RestoreReport {
                snapshot: info(&summary),
                target: format!("`{command}`"),
                dry_run,
                files: 1,
                dirs: 0,
                bytes: summary.totals.size,
                existing: 0,
                planned: Vec::new(),
                skipped_existing: Vec::new(),
                failed: Vec::new(),
                duration_ms: 0,
                throughput_mib_s: 0.0,
                complete: true,
                command_output: None,
            };
            if dry_run {
                report.planned.push(wit::PlannedItem {
                    path: summary.source.clone(),
                    kind: "file".into(),
                    size: summary.totals.size,
                    exists: false,
                });
                report.command_output = Some(format!("dry run: `{command}` was not run"));
                return Ok(report);
            }
            let (written, output) =
                restore_to_command(access, &repo, &req.repository, &summary.id, command, cancel)?;
            let elapsed = started.elapsed();
            report.bytes = written;
            report.duration_ms = elapsed.as_millis() as u64;
            report.throughput_mib_s = mib_s(written, elapsed);
            report.command_output = Some(output);
            Ok(report)
        }
    }
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / (1024.0 * 1024.0) / secs
    }
}

/// Empties a scratch directory (creating it if missing), leaving the directory itself.
fn empty_dir(path: &Path) -> Result<(), wit::Error> {
    let cannot = |e: io::Error| {
        failed(format!(
            "cannot empty scratch target {}: {e}",
            path.display()
        ))
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(failed(format!(
                "scratch target {} is not a directory; refusing to touch it",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fs::create_dir_all(path).map_err(cannot);
        }
        Err(e) => return Err(cannot(e)),
    }
    for entry in fs::read_dir(path).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let p = entry.path();
        if entry.file_type().map_err(cannot)?.is_dir() {
            fs::remove_dir_all(&p).map_err(cannot)?;
        } else {
            fs::remove_file(&p).map_err(cannot)?;
        }
    }
    Ok(())
}

/// Compares a directory target with a snapshot.
pub(super) fn compare(
    access: &BackupAccess,
    repository: &str,
    snapshot: &str,
    dir: &Path,
) -> Result<wit::CompareReport, wit::Error> {
    let repo = open(access, repository, false)?;
    let r = repo
        .compare(snapshot, dir)
        .map_err(|e| repo_error(access, repository, e))?;
    Ok(wit::CompareReport {
        files: r.files,
        files_matched: r.files_matched,
        bytes: r.bytes,
        differences: r
            .differences
            .iter()
            .take(MAX_PROBLEMS)
            .map(|d| format!("{}: {}", d.path, d.reason))
            .collect(),
        differences_total: r.differences_total,
        ok: r.ok,
        duration_ms: r.duration_ms,
    })
}

/// Applies a retention policy, and prunes unused chunks when asked.
pub(super) fn forget(
    access: &BackupAccess,
    repository: &str,
    policy: &wit::ForgetPolicy,
    prune: bool,
    dry_run: bool,
) -> Result<wit::ForgetReport, wit::Error> {
    let started = Instant::now();
    let repo = open(access, repository, false)?;
    let policy = ForgetPolicy {
        keep_last: policy.keep_last,
        keep_daily: policy.keep_daily,
        keep_weekly: policy.keep_weekly,
        keep_monthly: policy.keep_monthly,
    };
    let f = repo
        .forget(&policy, dry_run)
        .map_err(|e| repo_error(access, repository, e))?;
    let item = |d: &runcap_repo::ForgetDecision| wit::ForgetItem {
        id: d.id.clone(),
        source: d.source_label.clone(),
        time_ms: (d.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
        reasons: d.reasons.clone(),
    };
    let mut report = wit::ForgetReport {
        dry_run,
        kept: f.kept.iter().take(MAX_LISTED).map(item).collect(),
        removed: f.removed.iter().take(MAX_LISTED).map(item).collect(),
        chunks_removed: 0,
        bytes_freed: 0,
        bytes_kept: 0,
        duration_ms: 0,
    };
    if prune {
        let p = repo
            .prune(dry_run)
            .map_err(|e| repo_error(access, repository, e))?;
        report.chunks_removed = p.chunks_removed;
        report.bytes_freed = p.bytes_freed;
        report.bytes_kept = p.bytes_kept;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Snapshots of a repository, newest first.
pub(super) fn list(
    access: &BackupAccess,
    repository: &str,
    source: Option<&str>,
) -> Result<Vec<wit::SnapshotInfo>, wit::Error> {
    let repo = open(access, repository, false)?;
    let all = repo.list().map_err(|e| repo_error(access, repository, e))?;
    Ok(all
        .iter()
        .filter(|s| source.is_none_or(|src| s.source_label == src))
        .take(MAX_LISTED)
        .map(info)
        .collect())
}

/// Runs a query command and returns what it printed.
pub(super) fn query(
    command: &str,
    cwd: &Path,
    cancel: CancelFlag,
) -> Result<wit::QueryResult, wit::Error> {
    let started = Instant::now();
    let mut child = shell(command, cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run query `{command}`: {e}")))?;
    let out = Captured::start(child.stdout.take(), QUERY_STDOUT, false);
    let err = Captured::start(child.stderr.take(), OUTPUT_TAIL, true);
    let done = Watchdog::start(child.id(), cancel.clone());
    let status = child.wait();
    done.finish();
    let status = status.map_err(|e| failed(format!("query `{command}`: {e}")))?;
    if cancel.is_cancelled() {
        return Err(failed(format!(
            "query `{command}` was stopped: the action ran out of time"
        )));
    }
    Ok(wit::QueryResult {
        exit_code: exit_code(status),
        stdout: out.finish(),
        stderr: tail_lines(&err.finish(), 5),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// `sh -c COMMAND` in `cwd`, in a process group of its own so that it and everything it
/// starts can be stopped together.
fn shell(command: &str, cwd: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(command).current_dir(cwd).process_group(0);
    c
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Output of a pipe collected by a thread, bounded: the first `limit` bytes, or the last.
struct Captured {
    data: Arc<Mutex<(Vec<u8>, bool)>>,
}

impl Captured {
    fn start(pipe: Option<impl Read + Send + 'static>, limit: usize, keep_tail: bool) -> Self {
        let data: Arc<Mutex<(Vec<u8>, bool)>> = Arc::default();
        let sink = data.clone();
        std::thread::spawn(move || {
            if let Some(mut p) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n) = p.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut d = sink.lock().unwrap_or_else(|e| e.into_inner());
                    if keep_tail {
                        d.0.extend_from_slice(&buf[..n]);
                        if d.0.len() > limit {
                            let cut = d.0.len() - limit;
                            d.0.drain(..cut);
                        }
                    } else if d.0.len() < limit {
                        let room = (limit - d.0.len()).min(n);
                        d.0.extend_from_slice(&buf[..room]);
                    }
                }
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        });
        Captured { data }
    }

    /// The text collected, once the pipe closed (or shortly after the command ended: a
    /// daemon it left behind may hold the pipe open).
    fn finish(self) -> String {
        let settle = Instant::now() + Duration::from_millis(500);
        loop {
            let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
            if d.1 || Instant::now() > settle {
                return String::from_utf8_lossy(&d.0).into_owned();
            }
            drop(d);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Kills a command's process group when the operation is cancelled.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(pid: u32, cancel: CancelFlag) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                if cancel.is_cancelled() {
                    kill_group(pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog { done }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

fn kill_group(pid: u32) {
    // SAFETY: signalling a process group we created; no memory is passed.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// The standard output of a dump command, which fails at its end if the command failed, so a
/// dump that broke off is never recorded as a snapshot.
struct DumpReader {
    command: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<Captured>,
    watchdog: Watchdog,
    cancel: CancelFlag,
    finished: bool,
}

impl DumpReader {
    fn spawn(command: &str, cwd: &Path, cancel: CancelFlag) -> Result<Self, wit::Error> {
        let mut child = shell(command, cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run dump command `{command}`: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = Captured::start(child.stderr.take(), OUTPUT_TAIL, true);
        let watchdog = Watchdog::start(child.id(), cancel.clone());
        Ok(DumpReader {
            command: command.to_string(),
            child,
            stdout,
            stderr: Some(stderr),
            watchdog,
            cancel,
            finished: false,
        })
    }
}

impl Read for DumpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.finished {
            let status = self.child.wait()?;
            self.finished = true;
            self.watchdog.finish();
            if !status.success() {
                let err = self.stderr.take().map(Captured::finish).unwrap_or_default();
                let err = tail_lines(&err, 3);
                return Err(io::Error::other(format!(
                    "dump command `{}` {}{}",
                    self.command,
                    describe_status(status),
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for DumpReader {
    fn drop(&mut self) {
        if !self.finished {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// A writer that stops when the operation is cancelled.
struct CancelWrite<W> {
    inner: W,
    cancel: CancelFlag,
}

impl<W: Write> Write for CancelWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a dump snapshot into the standard input of a restore command; returns the bytes
/// written and the tail of the command's output.
fn restore_to_command(
    access: &BackupAccess,
    repo: &Repository,
    repository: &str,
    snapshot: &str,
    command: &str,
    cancel: CancelFlag,
) -> Result<(u64, String), wit::Error> {
    let mut child = shell(command, &access.grant.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run restore command `{command}`: {e}")))?;
    let out = Captured::start(child.stdout.take(), OUTPUT_TAIL, true);
    let err = Captured::start(child.stderr.take(), OUTPUT_TAIL, true);
    let watchdog = Watchdog::start(child.id(), cancel.clone());
    let stdin = child.stdin.take().expect("piped stdin");
    let written = with_sigpipe_blocked(|| {
        let mut w = CancelWrite {
            inner: stdin,
            cancel: cancel.clone(),
        };
        let r = repo.restore_stream(snapshot, &mut w);
        // Closing stdin tells the command the dump is complete.
        drop(w);
        r
    });
    let status = child.wait();
    watchdog.finish();
    let output = tail_lines(&(out.finish() + "\n" + &err.finish()), 5);
    let status = status.map_err(|e| failed(format!("restore command `{command}`: {e}")))?;
    if cancel.is_cancelled() {
        return Err(repo_error(access, repository, RepoError::Cancelled));
    }
    if !status.success() {
        return Err(failed(format!(
            "restore command `{command}` {}{}",
            describe_status(status),
            if output.is_empty() {
                String::new()
            } else {
                format!(": {output}")
            }
        )));
    }
    let report = written.map_err(|e| repo_error(access, repository, e))?;
    Ok((report.bytes, output))
}

/// Runs `f` with SIGPIPE blocked on this thread, so a restore command that exits early makes
/// the write fail with EPIPE instead of killing runcap, and discards the pending signal after.
fn with_sigpipe_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain signal-mask calls on this thread with properly initialised sets; a write to
    // a broken pipe raises SIGPIPE on the writing thread, so blocking it here suffices.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = f();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_non_empty_lines() {
        assert_eq!(tail_lines("a\n\nb\nc\n  \n", 2), "b | c");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn a_failing_dump_fails_at_its_end_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = DumpReader::spawn(
            "printf 'partial'; echo 'disk on fire' >&2; exit 3",
            dir.path(),
            CancelFlag::new(),
        )
        .unwrap();
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"partial");
        assert!(err.contains("exited with code 3"), "{err}");
        assert!(err.contains("disk on fire"), "{err}");
    }

    #[test]
    fn a_cancelled_dump_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancelFlag::new();
        let mut r = DumpReader::spawn("sleep 30 | cat", dir.path(), cancel.clone()).unwrap();
        let started = Instant::now();
        let c = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.cancel();
        });
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_early_exit_of_a_restore_command_does_not_kill_the_writer() {
        // As in the runcap binary: a SIGPIPE that got through would end this test process.
        // SAFETY: SIG_DFL is always a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exit 4")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        child.wait().unwrap();
        let r = with_sigpipe_blocked(|| {
            let chunk = vec![0u8; 1 << 16];
            let mut last = Ok(());
            for _ in 0..64 {
                last = stdin.write_all(&chunk);
                if last.is_err() {
                    break;
                }
            }
            last
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
