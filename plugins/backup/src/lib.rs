//! `backup`: the backup runbook's actions over the `backup` capability.
//!
//! ```toml
//! [[runbooks.nightly-backup.steps]]
//! id = "db"
//! uses = "backup"
//! with = { action = "snapshot", source = "app-db", repository = "main", rpo = "26h" }
//!
//! [[runbooks.restore-drill.steps]]
//! id = "db"
//! uses = "backup"
//! with = { action = "drill", source = "app-db", repository = "main", target = "scratch-db", query = "orders", expect = "3", rto = "1h", rpo = "26h" }
//! ```
//!
//! Actions: `snapshot`, `verify`, `restore` (with `dry_run` to list what would be written or
//! overwritten), `forget` (keep last/daily/weekly/monthly, then prune), `list`, and `drill`:
//! restore the latest snapshot of a source into a scratch target, check the copy (byte for
//! byte against the snapshot, or with a granted query whose output must match `expect`), and
//! fail unless the recovery took at most `rto` and the snapshot was at most `rpo` old.
//! Everything heavy (reading, chunking, hashing, compressing, encrypting) happens natively in
//! the host; this plugin decides what to do and judges the figures.

use std::time::Duration;

use runcap_sdk::{
    ActionError, BackupError, Context, ForgetPolicy, Outcome, RestoreReport, RestoreRequest,
    SnapshotReport, Status,
};
use serde_json::{Value, json};

/// What to do, and with what.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Params {
    /// Back up a granted source.
    Snapshot {
        /// A source under `grants.backup.sources`.
        source: String,
        /// A repository under `grants.backup.repositories`.
        repository: String,
        /// Tags recorded with the snapshot.
        #[serde(default)]
        tags: Vec<String>,
        /// Warn when the previous snapshot of the source is older than this (`"25h"`): the
        /// recovery point achieved missed its objective.
        rpo: Option<String>,
    },
    /// Check the repository; with `read_data` (the default), every chunk is read back,
    /// authenticated and re-hashed.
    Verify {
        repository: String,
        #[serde(default = "yes")]
        read_data: bool,
    },
    /// Restore a snapshot (by id, or the latest of a source) into a granted target.
    Restore {
        repository: String,
        /// A snapshot id or unique prefix.
        snapshot: Option<String>,
        /// A granted source whose latest snapshot to restore.
        source: Option<String>,
        /// A target under `grants.backup.targets`.
        target: String,
        /// List what would be written and what already exists; change nothing.
        #[serde(default)]
        dry_run: bool,
        /// Replace existing files (otherwise they are kept and listed).
        #[serde(default)]
        overwrite: bool,
        /// Empty the target first (scratch targets only).
        #[serde(default)]
        clean: bool,
        /// Restore only these paths of the snapshot.
        #[serde(default)]
        paths: Vec<String>,
    },
    /// Remove the snapshots the policy does not keep, per source, then free their data.
    Forget {
        repository: String,
        #[serde(default)]
        keep_last: u32,
        #[serde(default)]
        keep_daily: u32,
        #[serde(default)]
        keep_weekly: u32,
        #[serde(default)]
        keep_monthly: u32,
        /// Delete the chunks no snapshot uses any more (default true).
        #[serde(default = "yes")]
        prune: bool,
    },
    /// List the snapshots (of one source, when given).
    List {
        repository: String,
        source: Option<String>,
    },
    /// A restore drill: restore the latest snapshot of `source` into `target`, check it, and
    /// judge the recovery time against `rto` and the snapshot's age against `rpo`.
    Drill {
        repository: String,
        source: String,
        /// A scratch directory target, or a restore command target (a scratch database).
        target: String,
        /// A granted query that checks the restored copy; without one, the restored
        /// directory is compared byte for byte with the snapshot.
        query: Option<String>,
        /// What the query must print (surrounding whitespace ignored).
        expect: Option<String>,
        /// Recovery time objective: restore plus check must finish within it (`"1h"`).
        rto: String,
        /// Recovery point objective: the snapshot restored must be at most this old (`"15m"`).
        rpo: String,
        /// Empty the scratch directory before restoring (directory targets granted with
        /// `scratch = true`).
        #[serde(default)]
        clean: bool,
    },
}

fn yes() -> bool {
    true
}

fn duration(name: &str, text: &str) -> Result<Duration, ActionError> {
    humantime::parse_duration(text).map_err(|e| {
        ActionError::InvalidParams(format!("{name}: `{text}` is not a duration ({e})"))
    })
}

/// `1.2 MiB`
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `12m 5s`, `800ms`: short human durations for summaries.
fn human(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (d_, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d_, h, m) {
        (0, 0, 0) => format!("{:.1}s", ms as f64 / 1000.0),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d_}d {h}h"),
    }
}

/// `1 file`, `3 files`
fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A backup error as an outcome: denials stay errors (the manifest is wrong), everything else
/// is a failed step with the host's explanation.
fn failure(what: &str, e: BackupError) -> Result<Outcome, ActionError> {
    match e {
        BackupError::Denied(m) => Err(ActionError::Denied(m)),
        BackupError::WrongKey(m) => Ok(Outcome::fail(format!("{what}: wrong key: {m}"))
            .detail("error", "wrong-key")
            .detail("message", m)),
        BackupError::NotFound(m) => Ok(Outcome::fail(format!("{what}: {m}"))
            .detail("error", "not-found")
            .detail("message", m)),
        BackupError::Failed(m) => Ok(Outcome::fail(format!("{what}: {m}"))
            .detail("error", "failed")
            .detail("message", m)),
    }
}

/// The action.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    match p {
        Params::Snapshot {
            source,
            repository,
            tags,
            rpo,
        } => {
            let rpo = rpo.map(|r| duration("rpo", &r)).transpose()?;
            match ctx.backup_snapshot(&source, &repository, &tags) {
                Ok(r) => Ok(snapshot_outcome(&source, &r, rpo)),
                Err(e) => failure(&format!("snapshot of {source}"), e),
            }
        }
        Params::Verify {
            repository,
            read_data,
        } => match ctx.backup_verify(&repository, read_data) {
            Ok(r) => {
                let what = if r.read_data {
                    format!(
                        "{} chunks read and checked ({})",
                        r.chunks_read,
                        bytes(r.bytes_read)
                    )
                } else {
                    format!("{} chunks present", r.chunks_referenced)
                };
                let o = if r.ok {
                    Outcome::ok(format!(
                        "repository {repository}: {} snapshots, {what}, no problems",
                        r.snapshots
                    ))
                } else {
                    Outcome::fail(format!(
                        "repository {repository}: {} problems ({} chunks missing, {} corrupt, {} snapshots unreadable){}",
                        r.problems_total,
                        r.chunks_missing,
                        r.chunks_corrupt,
                        r.snapshots_unreadable,
                        r.problems
                            .first()
                            .map(|p| format!("; first: {p}"))
                            .unwrap_or_default()
                    ))
                };
                Ok(o.detail("verify", to_value(&r))
                    .metric("snapshots", r.snapshots as f64)
                    .metric("chunks_read", r.chunks_read as f64)
                    .metric("bytes_read", r.bytes_read as f64)
                    .metric("problems", r.problems_total as f64)
                    .metric("duration_ms", r.duration_ms as f64))
            }
            Err(e) => failure(&format!("verify of {repository}"), e),
        },
        Params::Restore {
            repository,
            snapshot,
            source,
            target,
            dry_run,
            overwrite,
            clean,
            paths,
        } => {
            if snapshot.is_none() && source.is_none() {
                return Err(ActionError::InvalidParams(
                    "give `snapshot` (an id) or `source` (restore its latest snapshot)".into(),
                ));
            }
            let request = RestoreRequest {
                repository,
                snapshot,
                source,
                target: target.clone(),
                dry_run: dry_run || ctx.dry_run,
                overwrite,
                clean,
                paths,
            };
            match ctx.backup_restore(&request) {
                Ok(r) => Ok(restore_outcome(&target, &r)),
                Err(e) => failure(&format!("restore into {target}"), e),
            }
        }
        Params::Forget {
            repository,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            prune,
        } => {
            let policy = ForgetPolicy {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            if policy == ForgetPolicy::default() {
                return Err(ActionError::InvalidParams(
                    "the policy keeps nothing; set at least one of keep_last, keep_daily, keep_weekly, keep_monthly".into(),
                ));
            }
            match ctx.backup_forget(&repository, &policy, prune) {
                Ok(r) => {
                    let mut summary = format!(
                        "{}kept {} snapshots, removed {}",
                        if r.dry_run { "dry run: " } else { "" },
                        r.kept.len(),
                        r.removed.len()
                    );
                    if prune {
                        summary += &format!(
                            ", freed {} ({} in use)",
                            bytes(r.bytes_freed),
                            bytes(r.bytes_kept)
                        );
                    }
                    Ok(Outcome::ok(summary)
                        .detail("forget", to_value(&r))
                        .metric("kept", r.kept.len() as f64)
                        .metric("removed", r.removed.len() as f64)
                        .metric("bytes_freed", r.bytes_freed as f64)
                        .metric("bytes_kept", r.bytes_kept as f64))
                }
                Err(e) => failure(&format!("forget in {repository}"), e),
            }
        }
        Params::List { repository, source } => {
            match ctx.backup_list(&repository, source.as_deref()) {
                Ok(list) => {
                    let summary = match list.first() {
                        None => format!("repository {repository}: no snapshots"),
                        Some(latest) => format!(
                            "repository {repository}: {} snapshots, newest {} of {} taken {} ago",
                            list.len(),
                            short(&latest.id),
                            latest.source,
                            human(Duration::from_secs(latest.age_seconds.max(0) as u64))
                        ),
                    };
                    let newest_age = list.first().map(|s| s.age_seconds as f64);
                    let mut o = Outcome::ok(summary)
                        .detail("snapshots", to_value(&list))
                        .metric("snapshots", list.len() as f64);
                    if let Some(age) = newest_age {
                        o = o.metric("newest_age_s", age);
                    }
                    Ok(o)
                }
                Err(e) => failure(&format!("list of {repository}"), e),
            }
        }
        Params::Drill {
            repository,
            source,
            target,
            query,
            expect,
            rto,
            rpo,
            clean,
        } => {
            let rto = duration("rto", &rto)?;
            let rpo = duration("rpo", &rpo)?;
            if query.is_some() != expect.is_some() {
                return Err(ActionError::InvalidParams(
                    "`query` and `expect` go together: name a granted query and what it must print"
                        .into(),
                ));
            }
            drill(
                ctx,
                &Drill {
                    repository,
                    source,
                    target,
                    query,
                    expect,
                    rto,
                    rpo,
                    clean,
                },
            )
        }
    }
}

fn snapshot_outcome(source: &str, r: &SnapshotReport, rpo: Option<Duration>) -> Outcome {
    let previous = r
        .previous_age_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64));
    let prev_text = match previous {
        Some(d) => format!("; previous {} earlier", human(d)),
        None => "; first snapshot of this source".into(),
    };
    let missed = matches!((previous, rpo), (Some(p), Some(rpo)) if p > rpo);
    let summary = if r.dry_run {
        format!(
            "dry run: would back up {source}: {}, {}{prev_text}",
            files(r.snapshot.files),
            bytes(r.snapshot.size)
        )
    } else {
        format!(
            "snapshot {} of {source}: {}, {} read, {} stored, dedup {:.0}%, {}{prev_text}{}",
            short(&r.snapshot.id),
            files(r.snapshot.files),
            bytes(r.bytes_read),
            bytes(r.bytes_stored),
            r.dedup_ratio * 100.0,
            human(Duration::from_millis(r.duration_ms)),
            if missed {
                format!(
                    " (over the {} RPO)",
                    humantime::format_duration(rpo.unwrap_or_default())
                )
            } else {
                String::new()
            }
        )
    };
    let status = if missed || r.warnings_total > 0 {
        Status::Warn
    } else {
        Status::Ok
    };
    let mut o = Outcome::new(status, summary)
        .detail("snapshot_id", r.snapshot.id.as_str())
        .detail("report", to_value(r))
        .metric("bytes_read", r.bytes_read as f64)
        .metric("bytes_stored", r.bytes_stored as f64)
        .metric("size", r.snapshot.size as f64)
        .metric("files", r.snapshot.files as f64)
        .metric("dedup_ratio", r.dedup_ratio)
        .metric("duration_ms", r.duration_ms as f64);
    if let Some(age) = r.previous_age_seconds {
        o = o.metric("rpo_achieved_s", age as f64);
    }
    if let Some(rpo) = rpo {
        o = o
            .detail("rpo_met", !missed)
            .metric("rpo_s", rpo.as_secs_f64());
    }
    o
}

fn restore_outcome(target: &str, r: &RestoreReport) -> Outcome {
    let status = if r.complete && r.failed.is_empty() {
        Status::Ok
    } else {
        Status::Fail
    };
    let summary = if r.dry_run {
        let overwritten = r.planned.iter().filter(|p| p.exists).count();
        format!(
            "dry run: would restore snapshot {} into {target}: {}, {}; {} entries already exist{}",
            short(&r.snapshot.id),
            files(r.files),
            bytes(r.bytes),
            r.existing,
            if overwritten > 0 {
                format!(
                    " (e.g. {})",
                    r.planned
                        .iter()
                        .find(|p| p.exists)
                        .map(|p| p.path.as_str())
                        .unwrap_or("")
                )
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "restored snapshot {} into {target}: {}, {} in {}{}{}",
            short(&r.snapshot.id),
            files(r.files),
            bytes(r.bytes),
            human(Duration::from_millis(r.duration_ms)),
            if r.skipped_existing.is_empty() {
                String::new()
            } else {
                format!(", {} existing files kept", r.skipped_existing.len())
            },
            if r.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed (first: {})", r.failed.len(), r.failed[0])
            }
        )
    };
    // The plan can be long: the first 100 entries go into the details, all are counted.
    let mut report = to_value(r);
    if let Some(planned) = report.get_mut("planned").and_then(Value::as_array_mut) {
        planned.truncate(100);
    }
    Outcome::new(status, summary)
        .detail("report", report)
        .metric("files", r.files as f64)
        .metric("bytes", r.bytes as f64)
        .metric("existing", r.existing as f64)
        .metric("duration_ms", r.duration_ms as f64)
}

/// Params of a drill, parsed.
struct Drill {
    repository: String,
    source: String,
    target: String,
    query: Option<String>,
    expect: Option<String>,
    rto: Duration,
    rpo: Duration,
    clean: bool,
}

/// The verification half of a drill.
struct Checked {
    ok: bool,
    what: String,
    duration_ms: u64,
    details: Value,
}

fn drill(ctx: &Context, d: &Drill) -> Result<Outcome, ActionError> {
    let request = RestoreRequest {
        repository: d.repository.clone(),
        snapshot: None,
        source: Some(d.source.clone()),
        target: d.target.clone(),
        dry_run: ctx.dry_run,
        overwrite: true,
        clean: d.clean,
        paths: Vec::new(),
    };
    let restored = match ctx.backup_restore(&request) {
        Ok(r) => r,
        Err(e) => return failure(&format!("drill of {}: restore", d.source), e),
    };
    let age = Duration::from_secs(restored.snapshot.age_seconds.max(0) as u64);
    let rpo_met = age <= d.rpo;
    let base = |o: Outcome| {
        o.detail("source", d.source.as_str())
            .detail("snapshot", to_value(&restored.snapshot))
            .detail("snapshot_age_s", restored.snapshot.age_seconds)
            .detail("rpo_s", d.rpo.as_secs())
            .detail("rpo_met", rpo_met)
            .detail("rto_s", d.rto.as_secs())
            .metric("snapshot_age_s", age.as_secs_f64())
            .metric("rpo_s", d.rpo.as_secs_f64())
            .metric("rto_s", d.rto.as_secs_f64())
            .metric("bytes_restored", restored.bytes as f64)
            .metric("restore_ms", restored.duration_ms as f64)
    };
    if restored.dry_run {
        let status = if rpo_met { Status::Ok } else { Status::Fail };
        return Ok(base(Outcome::new(
            status,
            format!(
                "dry run: would restore snapshot {} of {} ({}, {}) into {}; snapshot age {} (RPO {}: {})",
                short(&restored.snapshot.id),
                d.source,
                files(restored.files),
                bytes(restored.bytes),
                d.target,
                human(age),
                human(d.rpo),
                if rpo_met { "met" } else { "missed" }
            ),
        )));
    }
    if !restored.complete || !restored.failed.is_empty() {
        return Ok(base(Outcome::fail(format!(
            "drill of {}: the restore into {} was incomplete: {}",
            d.source,
            d.target,
            restored
                .failed
                .first()
                .cloned()
                .unwrap_or_else(|| "some entries were not restored".into())
        )))
        .detail("restore", to_value(&restored)));
    }

    let checked = match (&d.query, &d.expect) {
        (Some(query), Some(expect)) => match ctx.backup_query(query) {
            Ok(q) => {
                let got = q.stdout.trim();
                let ok = q.exit_code == 0 && got == expect.trim();
                Checked {
                    ok,
                    what: if ok {
                        format!("query {query} printed {got:?} as expected")
                    } else if q.exit_code != 0 {
                        format!(
                            "query {query} exited with code {}{}",
                            q.exit_code,
                            if q.stderr.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", q.stderr)
                            }
                        )
                    } else {
                        format!(
                            "query {query} printed {got:?}, expected {:?}",
                            expect.trim()
                        )
                    },
                    duration_ms: q.duration_ms,
                    details: json!({"query": query, "expect": expect, "result": to_value(&q)}),
                }
            }
            Err(e) => return failure(&format!("drill of {}: query {query}", d.source), e),
        },
        _ => match ctx.backup_compare(&d.repository, &restored.snapshot.id, &d.target) {
            Ok(c) => Checked {
                ok: c.ok,
                what: if c.ok {
                    format!(
                        "all {} files identical to the snapshot ({})",
                        c.files,
                        bytes(c.bytes)
                    )
                } else {
                    format!(
                        "{} differences from the snapshot (first: {})",
                        c.differences_total,
                        c.differences.first().map(String::as_str).unwrap_or("?")
                    )
                },
                duration_ms: c.duration_ms,
                details: json!({"compare": to_value(&c)}),
            },
            Err(e) => return failure(&format!("drill of {}: compare", d.source), e),
        },
    };

    let recovery = Duration::from_millis(restored.duration_ms + checked.duration_ms);
    let rto_met = recovery <= d.rto;
    let ok = checked.ok && rto_met && rpo_met;
    let mut misses = Vec::new();
    if !checked.ok {
        misses.push("verification failed".to_string());
    }
    if !rto_met {
        misses.push(format!("RTO {} missed", human(d.rto)));
    }
    if !rpo_met {
        misses.push(format!("RPO {} missed", human(d.rpo)));
    }
    let summary = format!(
        "{}: recovered {} of {} in {} (RTO {}), snapshot {} old (RPO {}); {}",
        if ok {
            "drill passed".to_string()
        } else {
            format!("drill failed ({})", misses.join(", "))
        },
        bytes(restored.bytes),
        d.source,
        human(recovery),
        human(d.rto),
        human(age),
        human(d.rpo),
        checked.what
    );
    Ok(base(Outcome::new(
        if ok { Status::Ok } else { Status::Fail },
        summary,
    ))
    .detail("rto_met", rto_met)
    .detail("verified", checked.ok)
    .detail("recovery_ms", recovery.as_millis() as u64)
    .detail("verification", checked.details)
    .detail("restore", {
        let mut r = to_value(&restored);
        if let Some(o) = r.as_object_mut() {
            o.remove("planned");
        }
        r
    })
    .metric("verify_ms", checked.duration_ms as f64)
    .metric("recovery_ms", recovery.as_millis() as f64))
}

runcap_sdk::plugin!(
    name: "backup",
    description: "Snapshots, verifies, restores and rotates backups; restore drills against RTO and RPO",
    run: run,
);

#[cfg(test)]
mod tests;
