//! Tests that need the crate's internals: snapshot records forged with hostile paths (as if the
//! repository had been tampered with by someone holding the key), and the lock.

use std::fs;
use std::path::Path;

use time::OffsetDateTime;

use crate::ingest::store_stream;
use crate::keys::wrap_master;
use crate::lock::{Mode, RepoLock};
use crate::snapshot::{SnapshotKind, SnapshotRecord, SnapshotSummary, Totals};
use crate::tree::{Entry, EntryKind, RawPath, TreeWriter};
use crate::{Error, KdfParams, RestoreOptions, SnapshotOptions};
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

/// A repository of format 1 (one file per chunk) is still read, verified and pruned; what is
/// added to it goes into packs.
#[test]
fn format_1_repositories_still_read_and_grow_in_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = quick_repo(&dir);
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        let body = format!("file {i} ").repeat(5000 + i * 300);
        fs::write(src.join(format!("f{i:02}")), body).unwrap();
    }
    let first = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();

    // Lay it out as format 1 did: every record in a file named by its id, no packs, and a
    // config of version 1 (the version is bound to the sealed key, so that is re-sealed).
    for pack in repo.packs().unwrap() {
        let bytes = fs::read(&pack.path).unwrap();
        for c in &pack.chunks {
            let sub = dir.join("chunks").join(&c.id[..2]);
            fs::create_dir_all(&sub).unwrap();
            let record = &bytes[c.offset as usize..][..c.length as usize];
            fs::write(sub.join(&c.id), record).unwrap();
        }
    }
    fs::remove_dir_all(dir.join("packs")).unwrap();
    let mut config = repo.config.clone();
    config.version = 1;
    let salt = hex::decode(&config.salt).unwrap();
    let kek = config.kdf.derive(b"secret", &salt).unwrap();
    config.master_key = hex::encode(wrap_master(&kek, &repo.master, &config.binding()).unwrap());
    config.store(&dir).unwrap();
    drop(repo);
    let loose_files = || {
        walkdir::WalkDir::new(dir.join("chunks"))
            .into_iter()
            .count()
    };
    let loose_before = loose_files();

    let repo = Repository::open(&dir, "secret").unwrap();
    assert!(repo.packs().unwrap().is_empty());
    let v = repo.verify(true).unwrap();
    assert!(v.ok && v.chunks_read > 0, "{:?}", v.problems);
    let out = tmp.path().join("out1");
    assert!(
        repo.restore(&first.snapshot.id, &out, &RestoreOptions::default())
            .unwrap()
            .complete
    );
    assert_eq!(
        fs::read(out.join("f07")).unwrap(),
        fs::read(src.join("f07")).unwrap()
    );

    // New data lands in packs; the unchanged files still come from the loose chunks.
    fs::write(src.join("f03"), "changed ".repeat(70_000)).unwrap();
    let second = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    assert!(!repo.packs().unwrap().is_empty());
    assert_eq!(loose_files(), loose_before, "no loose chunk is written");

    // Forgetting the first snapshot and pruning deletes the loose chunks only it used.
    let only_second = crate::ForgetPolicy {
        keep_last: 1,
        ..crate::ForgetPolicy::default()
    };
    repo.forget(&only_second, false).unwrap();
    let p = repo.prune(false).unwrap();
    assert!(p.chunks_removed >= 1 && p.chunks_missing == 0, "{p:?}");
    assert!(loose_files() < loose_before);
    let v = repo.verify(true).unwrap();
    assert!(v.ok && v.chunks_unreferenced == 0, "{:?}", v.problems);
    let out = tmp.path().join("out2");
    assert!(
        repo.restore(&second.snapshot.id, &out, &RestoreOptions::default())
            .unwrap()
            .complete
    );
    for i in 0..20 {
        let name = format!("f{i:02}");
        assert_eq!(
            fs::read(out.join(&name)).unwrap(),
            fs::read(src.join(&name)).unwrap()
        );
    }
}
