//! Retention: `forget` removes snapshot records by policy, `prune` deletes the chunks no
//! snapshot references any more.
//!
//! The two are separate so that forgetting is cheap and safe to run often (it only removes small
//! record files under a shared lock), while prune, which must see every reference, takes the
//! exclusive lock and refuses to run when any snapshot is unreadable: deleting chunks on the
//! strength of a partial reference set would destroy data.

use std::collections::HashSet;
use std::fs;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic::{fsync_dir, is_temp_name};
use crate::chunks::{ChunkId, remove_if_present, sync_dirs_parallel};
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::repo::Repository;
use crate::snapshot::{SNAPSHOTS_DIR, SnapshotSummary};
use crate::tree::TreeReader;

/// Which snapshots to keep, per source label (restic-style).
///
/// Each rule keeps the newest snapshot of each of the N most recent periods (days, ISO weeks,
/// months, in UTC) that have snapshots; `keep_last` keeps the N newest outright. A snapshot kept
/// by any rule is kept; the rest are forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForgetPolicy {
    /// Keep the N most recent snapshots.
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N days that have one.
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one.
    pub keep_monthly: u32,
}

/// A snapshot and the reasons it is kept (or why it is removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetDecision {
    /// Snapshot id.
    pub id: String,
    /// Snapshot time.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Source label.
    pub source_label: String,
    /// Rules that keep it (`last`, `daily 2025-01-31`, ...), or why it goes.
    pub reasons: Vec<String>,
}

/// The outcome of `forget`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// The policy applied.
    pub policy: ForgetPolicy,
    /// Snapshots kept, newest first.
    pub kept: Vec<ForgetDecision>,
    /// Snapshots removed (or that would be), newest first.
    pub removed: Vec<ForgetDecision>,
}

/// The outcome of `prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// Snapshots whose references were collected.
    pub snapshots: u64,
    /// Chunks found (records in packs, and loose chunk files).
    pub chunks_total: u64,
    /// Chunks referenced by some snapshot (kept).
    pub chunks_referenced: u64,
    /// Referenced chunks that are missing (see verify).
    pub chunks_missing: u64,
    /// Unreferenced chunks deleted (or that would be).
    pub chunks_removed: u64,
    /// Bytes freed by deleting them.
    pub bytes_freed: u64,
    /// Bytes of the chunks kept.
    pub bytes_kept: u64,
    /// Leftover temporary files of interrupted writes removed.
    pub temp_files_removed: u64,
    /// Packs deleted because no snapshot needs any chunk in them.
    pub packs_deleted: u64,
    /// Packs rewritten without the chunks no snapshot needs, and small packs combined.
    pub packs_rewritten: u64,
}

/// Decides which snapshots a policy keeps. Pure, so it can be previewed and tested.
pub fn plan_forget(
    snapshots: &[SnapshotSummary],
    policy: &ForgetPolicy,
) -> Result<(Vec<ForgetDecision>, Vec<ForgetDecision>)> {
    if policy.keep_last == 0
        && policy.keep_daily == 0
        && policy.keep_weekly == 0
        && policy.keep_monthly == 0
    {
        return Err(Error::InvalidArgument(
            "the forget policy keeps nothing and would remove every snapshot; set at least one of keep_last, keep_daily, keep_weekly, keep_monthly".into(),
        ));
    }
    let mut sorted: Vec<&SnapshotSummary> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut labels: Vec<&str> = sorted.iter().map(|s| s.source_label.as_str()).collect();
    labels.sort();
    labels.dedup();

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];
    for label in labels {
        let group: Vec<usize> = (0..sorted.len())
            .filter(|&i| sorted[i].source_label == label)
            .collect();
        for (n, &i) in group.iter().enumerate() {
            if (n as u64) < u64::from(policy.keep_last) {
                reasons[i].push(format!("last {}", n + 1));
            }
        }
        type Bucket = fn(OffsetDateTime) -> String;
        let rules: [(u32, &str, Bucket); 3] = [
            (policy.keep_daily, "daily", |t| {
                format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
            }),
            (policy.keep_weekly, "weekly", |t| {
                let (y, w, _) = t.to_iso_week_date();
                format!("{y:04}-W{w:02}")
            }),
            (policy.keep_monthly, "monthly", |t| {
                format!("{:04}-{:02}", t.year(), t.month() as u8)
            }),
        ];
        for (count, name, bucket) in rules {
            let mut last: Option<String> = None;
            let mut used = 0u32;
            for &i in &group {
                if used >= count {
                    break;
                }
                let key = bucket(sorted[i].time.to_offset(time::UtcOffset::UTC));
                if last.as_deref() != Some(key.as_str()) {
                    reasons[i].push(format!("{name} {key}"));
                    last = Some(key);
                    used += 1;
                }
            }
        }
    }

    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (s, why) in sorted.into_iter().zip(reasons) {
        let keep = !why.is_empty();
        let decision = ForgetDecision {
            id: s.id.clone(),
            time: s.time,
            source_label: s.source_label.clone(),
            reasons: if keep {
                why
            } else {
                vec!["matched no keep rule".to_string()]
            },
        };
        if keep {
            kept.push(decision);
        } else {
            removed.push(decision);
        }
    }
    Ok((kept, removed))
}

impl Repository {
    /// Applies a retention policy per source label, removing the records of snapshots it does
    /// not keep (their data stays until [`Repository::prune`]).
    pub fn forget(&self, policy: &ForgetPolicy, dry_run: bool) -> Result<ForgetReport> {
        let _lock = RepoLock::acquire(&self.root, Mode::Shared, "forget")?;
        let snapshots = self.list()?;
        let (kept, removed) = plan_forget(&snapshots, policy)?;
        if !dry_run && !removed.is_empty() {
            let dir = self.root.join(SNAPSHOTS_DIR);
            for d in &removed {
                let path = dir.join(&d.id);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &path, e)),
                }
            }
            fsync_dir(&dir)?;
        }
        Ok(ForgetReport {
            dry_run,
            policy: policy.clone(),
            kept,
            removed,
        })
    }

    /// Removes the chunks no snapshot references (deleting or rewriting the packs that hold
    /// them), and leftover temporary files of interrupted writes. Needs the exclusive lock (no backup may run meanwhile) and refuses to
    /// run if any snapshot cannot be read.
    pub fn prune(&self, dry_run: bool) -> Result<PruneReport> {
        let _lock = RepoLock::acquire(&self.root, Mode::Exclusive, "prune")?;
        self.store.refresh()?;
        let mut report = PruneReport {
            dry_run,
            ..PruneReport::default()
        };
        let mut referenced: HashSet<ChunkId> = HashSet::new();
        for id in self.record_ids()? {
            let record = self.read_record(&id).map_err(|e| refuse(&id, e))?;
            referenced.extend(record.tree.iter().copied());
            let mut reader =
                TreeReader::new(&self.store, record.tree.clone(), record.digest(), &id);
            while let Some(entry) = reader.next_entry().map_err(|e| refuse(&id, e))? {
                referenced.extend(entry.chunks.iter().map(|s| s.0));
            }
            report.snapshots += 1;
        }
        report.chunks_referenced = referenced.len() as u64;

        let mut present = self.store.prune_packs(&referenced, dry_run, &mut report)?;

        // Loose chunk files of format 1: kept or deleted one by one.
        let mut touched = HashSet::new();
        for (path, id, size) in self.store.list_loose_files()? {
            let temp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_temp_name);
            match id {
                Some(id) if referenced.contains(&id) => {
                    present.insert(id);
                    report.chunks_total += 1;
                    report.bytes_kept += size;
                    continue;
                }
                Some(_) => {
                    report.chunks_total += 1;
                    report.chunks_removed += 1;
                    report.bytes_freed += size;
                }
                None if temp => report.temp_files_removed += 1,
                None => continue,
            }
            if !dry_run {
                remove_if_present(&path)?;
                if let Some(dir) = path.parent() {
                    touched.insert(dir.to_path_buf());
                }
            }
        }
        report.chunks_missing = report
            .chunks_referenced
            .saturating_sub(present.len() as u64);
        if !dry_run {
            sync_dirs_parallel(&touched.into_iter().collect::<Vec<_>>())?;
            for (name, path) in self.read_dir_names(SNAPSHOTS_DIR)? {
                if is_temp_name(&name) {
                    remove_if_present(&path)?;
                    report.temp_files_removed += 1;
                }
            }
        }
        Ok(report)
    }
}

fn refuse(id: &str, e: Error) -> Error {
    Error::PruneRefused {
        snapshot: id.to_string(),
        reason: e.to_string(),
    }
}
