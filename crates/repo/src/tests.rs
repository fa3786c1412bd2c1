//! Tests that need the crate's internals: snapshot records forged with hostile paths (as if the
//! repository had been tampered with by someone holding the key), and the lock.

use std::fs;
use std::path::Path;

use time::OffsetDateTime;

use crate::ingest::store_stream;
use crate::lock::{Mode, RepoLock};
use crate::snapshot::{SnapshotKind, SnapshotRecord, SnapshotSummary, Totals};
use crate::tree::{Entry, EntryKind, RawPath, TreeWriter};
use crate::{Error, KdfParams, RestoreOptions};
use crate::{InitOptions, Repository};

fn quick_repo(dir: &Path) -> Repository {
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            ..KdfParams::default()
        },
        ..InitOptions::default()
    };
    Repository::init_with(dir, "secret", &options).unwrap()
}

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: RawPath(path.as_bytes().to_vec()),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        mtime_ns: 1_700_000_000_000_000_000,
        uid: 0,
        gid: 0,
        size: 0,
        ctime_ns: 0,
        inode: 0,
        chunks: Vec::new(),
        target: None,
    }
}

/// Writes a snapshot whose file list is exactly `entries`, bypassing the walker.
fn forge(repo: &Repository, entries: &[Entry]) -> String {
    let mut tree = TreeWriter::new(&repo.tmp_dir(), repo.store.keys().tree_hasher()).unwrap();
    for e in entries {
        tree.push(e).unwrap();
    }
    let (mut spool, digest) = tree.finish().unwrap();
    let (ids, _) = store_stream(&repo.store, repo.config.chunker, &mut spool).unwrap();
    let id = hex::encode(crate::atomic::random_bytes::<16>().unwrap());
    let record = SnapshotRecord {
        summary: SnapshotSummary {
            id: id.clone(),
            time: OffsetDateTime::now_utc(),
            source_label: "forged".into(),
            kind: SnapshotKind::Dir,
            source: "/nowhere".into(),
            hostname: None,
            tags: vec![],
            parent: None,
            totals: Totals::default(),
            duration_ms: 0,
            entries: entries.len() as u64,
        },
        tree: ids,
        tree_digest: hex::encode(digest),
    };
    repo.write_record(&record).unwrap();
    id
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn hostile_paths_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_repo(&tmp.path().join("repo"));
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();

    let cases: Vec<Vec<Entry>> = vec![
        vec![
            entry("ok.txt", EntryKind::File),
            entry("../escape.txt", EntryKind::File),
        ],
        vec![entry(
            &format!("{}/abs.txt", outside.display()),
            EntryKind::File,
        )],
        vec![
            entry("a", EntryKind::Dir),
            entry("a/../../escape.txt", EntryKind::File),
        ],
        vec![entry("./x", EntryKind::File)],
        vec![
            {
                let mut l = entry("link", EntryKind::Symlink);
                l.target = Some(RawPath(outside.to_str().unwrap().as_bytes().to_vec()));
                l
            },
            entry("link/evil.txt", EntryKind::File),
        ],
    ];
    for entries in cases {
        let id = forge(&repo, &entries);
        for dry_run in [true, false] {
            let err = repo
                .restore(
                    &id,
                    &target,
                    &RestoreOptions {
                        dry_run,
                        overwrite: true,
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        }
        assert!(is_empty_dir(&target), "target was written to");
        assert!(is_empty_dir(&outside), "outside was written to");
        assert!(!tmp.path().join("escape.txt").exists());
    }
}

#[test]
fn symlink_already_in_target_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_repo(&tmp.path().join("repo"));
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();

    let id = forge(
        &repo,
        &[
            entry("fine.txt", EntryKind::File),
            entry("sub", EntryKind::Dir),
            entry("sub/x.txt", EntryKind::File),
        ],
    );
    let report = repo
        .restore(
            &id,
            &target,
            &RestoreOptions {
                overwrite: false,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!report.complete);
    assert!(report.failed.iter().any(|f| f.path == "sub/x.txt"));
    assert!(target.join("fine.txt").is_file());
    assert!(is_empty_dir(&outside), "wrote through a symlink");
}

#[test]
fn prune_excludes_backups_and_backups_share() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_repo(&tmp.path().join("repo"));
    let a = RepoLock::acquire(repo.path(), Mode::Shared, "backup").unwrap();
    let b = RepoLock::acquire(repo.path(), Mode::Shared, "restore").unwrap();
    assert!(matches!(repo.prune(false), Err(Error::Locked { .. })));
    drop((a, b));
    let x = RepoLock::acquire(repo.path(), Mode::Exclusive, "prune").unwrap();
    assert!(matches!(
        repo.verify(false),
        Err(Error::Locked { mode: "shared", .. })
    ));
    drop(x);
    assert!(repo.verify(false).unwrap().ok);
}

#[test]
fn repository_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Repository>();
}
