//! End-to-end tests of the repository on real files in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runcap_repo::{
    Error, FORMAT_VERSION, ForgetPolicy, InitOptions, KdfParams, PackedChunk, ProblemKind,
    Repository, RestoreOptions, SnapshotKind, SnapshotOptions,
};
use time::macros::datetime;

const SECRET: &str = "tr0ub4dor&3 horse";

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Log-like text.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "GET",
        "POST",
        "/api/v1/items",
        "200",
        "404",
        "user=alice",
        "user=bob",
        "latency_ms=",
        "INFO",
        "WARN",
        "request",
        "completed",
        "cache",
        "miss",
        "hit",
        "shard-7",
    ];
    let r = noise(seed, len / 4 + 16);
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        let w = words[(r[i % r.len()] as usize) % words.len()];
        out.extend_from_slice(w.as_bytes());
        out.push(if r[(i + 1) % r.len()].is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
        i += 1;
    }
    out.truncate(len);
    out
}

/// A tree with many small files, a few large ones (part random, part repetitive), nested
/// directories, an empty directory, a symlink and a named pipe.
fn make_tree(root: &Path, small: usize, large: usize, large_size: usize) {
    fs::create_dir_all(root).unwrap();
    for i in 0..small {
        let dir = root.join(format!("d{:02}/sub{}", i % 40, i % 3));
        fs::create_dir_all(&dir).unwrap();
        let size = (i * 97) % 9000;
        let data = if i % 5 == 0 {
            noise(i as u64, size)
        } else {
            text(i as u64, size)
        };
        fs::write(dir.join(format!("f{i:05}.txt")), data).unwrap();
    }
    for i in 0..large {
        let mut data = noise(1000 + i as u64, large_size / 2);
        let block = text(2000 + i as u64, 64 * 1024);
        while data.len() < large_size {
            data.extend_from_slice(&block);
        }
        data.truncate(large_size);
        fs::write(root.join(format!("large{i}.bin")), data).unwrap();
    }
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("d00/sub0/f00000.txt", root.join("link")).unwrap();
    fs::set_permissions(
        root.join("d01/sub1/f00001.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let fifo = root.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[derive(Debug, PartialEq)]
enum Item {
    File {
        mode: u32,
        mtime: i64,
        hash: [u8; 32],
    },
    Dir {
        mode: u32,
    },
    Link(PathBuf),
}

/// Everything that must survive a round trip, keyed by relative path (named pipes excluded).
fn describe(root: &Path) -> BTreeMap<PathBuf, Item> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let m = e.path().symlink_metadata().unwrap();
        let ft = m.file_type();
        let item = if ft.is_symlink() {
            Item::Link(fs::read_link(e.path()).unwrap())
        } else if ft.is_dir() {
            Item::Dir {
                mode: m.mode() & 0o7777,
            }
        } else if ft.is_file() {
            Item::File {
                mode: m.mode() & 0o7777,
                mtime: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                hash: *blake3::hash(&fs::read(e.path()).unwrap()).as_bytes(),
            }
        } else {
            continue;
        };
        out.insert(rel, item);
    }
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    assert_eq!(da.len(), db.len(), "entry counts differ");
    for (k, v) in &da {
        assert_eq!(Some(v), db.get(k), "{} differs", k.display());
    }
}

/// Pack files under their final names (not temporary files of writes in progress).
fn pack_files(repo: &Path) -> Vec<PathBuf> {
    all_files(&repo.join("packs"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect()
}

/// Chunk records in all packs, as the repository lists them.
fn stored_chunks(repo: &Repository) -> u64 {
    repo.packs()
        .unwrap()
        .iter()
        .map(|p| p.chunks.len() as u64)
        .sum()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn directory_backup_round_trip_dedup_history_and_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let repo_dir = tmp.path().join("repo");
    make_tree(&src, 2000, 3, 12 * 1024 * 1024 + 12345);
    let repo = Repository::init(&repo_dir, SECRET).unwrap();

    // First snapshot.
    let first = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    let t = &first.snapshot.totals;
    assert_eq!(t.files, 2003);
    assert_eq!(t.symlinks, 1);
    assert_eq!(t.skipped, 1, "the named pipe is skipped");
    assert_eq!(first.warnings_total, 1);
    assert!(first.warnings[0].contains("pipe"));
    assert!(first.previous.is_none());
    assert_eq!(t.bytes_read, t.size);
    assert!(t.bytes_stored < t.size, "compression should help");
    // Small files are packed: far fewer chunks than files. (How many chunks the three
    // 12 MiB files make depends on the repository's random key: 225 in one run, so the
    // bound is a quarter of the files, not a count near the average.)
    assert!(
        t.chunks_total < t.files / 4,
        "{} chunks for {} files",
        t.chunks_total,
        t.files
    );

    // Restore and compare byte for byte (modes, mtimes, symlinks, empty dirs).
    let out1 = tmp.path().join("out1");
    let r = repo
        .restore(&first.snapshot.id, &out1, &RestoreOptions::default())
        .unwrap();
    assert!(r.complete, "{:?}", r.failed);
    assert_eq!(r.files, 2003);
    assert_same_tree(&src, &out1);
    fs::remove_dir_all(&out1).unwrap();

    // Unchanged second snapshot: nothing new, everything reused, previous age reported.
    let size_before = dir_size(&repo_dir);
    let second = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    let t2 = &second.snapshot.totals;
    assert_eq!(t2.files_unchanged, 2003);
    assert_eq!(t2.bytes_read, 0);
    assert_eq!(t2.bytes_new, 0);
    assert_eq!(t2.chunks_new, 0);
    assert_eq!(second.dedup_ratio, 1.0);
    assert_eq!(second.snapshot.parent.as_deref(), Some(&*first.snapshot.id));
    let prev = second.previous.as_ref().unwrap();
    assert_eq!(prev.id, first.snapshot.id);
    assert!(prev.age_seconds >= 0);
    let growth = dir_size(&repo_dir) - size_before;
    assert!(
        growth < 4096,
        "unchanged snapshot grew the repository by {growth} bytes"
    );

    // Change one file; the old snapshot still restores the old bytes.
    let victim = src.join("d07/sub1/f00007.txt");
    let old_bytes = fs::read(&victim).unwrap();
    fs::write(&victim, b"new content").unwrap();
    let third = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    assert_eq!(third.snapshot.totals.files_unchanged, 2002);
    assert_eq!(third.snapshot.totals.bytes_read, 11);

    let out_old = tmp.path().join("out_old");
    repo.restore(
        &first.snapshot.id[..8],
        &out_old,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read(out_old.join("d07/sub1/f00007.txt")).unwrap(),
        old_bytes
    );
    let out_new = tmp.path().join("out_new");
    repo.restore(&third.snapshot.id, &out_new, &RestoreOptions::default())
        .unwrap();
    assert_same_tree(&src, &out_new);
    fs::remove_dir_all(&out_old).unwrap();

    let list = repo.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].id, third.snapshot.id, "newest first");
    assert_eq!(repo.latest("app").unwrap().unwrap().id, third.snapshot.id);
    assert!(repo.latest("other").unwrap().is_none());

    // A clean repository verifies.
    let v = repo.verify(true).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert!(v.chunks_read > 0);
    assert_eq!(v.chunks_unreferenced, 0);

    // Corrupt the largest chunk in its pack: only reading the data finds it, with the file
    // that uses it.
    let mut chunks: Vec<(String, PackedChunk)> = repo
        .packs()
        .unwrap()
        .into_iter()
        .flat_map(|p| p.chunks.into_iter().map(move |c| (p.path.clone(), c)))
        .collect();
    chunks.sort_by_key(|(_, c)| std::cmp::Reverse(c.length));
    let (corrupt, largest) = chunks[0].clone();
    let corrupt = PathBuf::from(corrupt);
    let mut bytes = fs::read(&corrupt).unwrap();
    bytes[(largest.offset + u64::from(largest.length) / 2) as usize] ^= 0x55;
    fs::write(&corrupt, &bytes).unwrap();
    assert!(repo.verify(false).unwrap().ok);
    let v = repo.verify(true).unwrap();
    assert!(!v.ok);
    assert_eq!(v.chunks_corrupt, 1);
    let p = &v.problems[0];
    assert_eq!(p.kind, ProblemKind::CorruptChunk);
    assert_eq!(p.chunk.as_deref(), Some(largest.id.as_str()));
    assert_eq!(p.chunk_path.as_deref(), Some(corrupt.to_str().unwrap()));
    let damaged_file = p.file.clone().expect("the file using the chunk is named");
    assert!(damaged_file.starts_with("large"), "{damaged_file}");
    assert_eq!(p.snapshots_affected, 3);

    // Restoring skips only the damaged file and says so.
    let out_bad = tmp.path().join("out_bad");
    let r = repo
        .restore(&third.snapshot.id, &out_bad, &RestoreOptions::default())
        .unwrap();
    assert!(!r.complete);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].path, damaged_file);
    assert_eq!(r.files, 2002);
    assert!(!out_bad.join(&damaged_file).exists());

    // Delete another pack of file data: both kinds of verify report each of its chunks
    // missing, with a file that used it.
    let (lost, _) = chunks
        .iter()
        .find(|(path, _)| Path::new(path) != corrupt)
        .unwrap()
        .clone();
    let lost_ids: Vec<String> = chunks
        .iter()
        .filter(|(path, _)| *path == lost)
        .map(|(_, c)| c.id.clone())
        .collect();
    fs::remove_file(&lost).unwrap();
    for read_data in [false, true] {
        let v = repo.verify(read_data).unwrap();
        assert_eq!(
            v.chunks_missing,
            lost_ids.len() as u64,
            "read_data={read_data}"
        );
        for p in v
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::MissingChunk)
        {
            assert!(lost_ids.contains(p.chunk.as_ref().unwrap()));
            assert!(p.file.is_some());
        }
    }
    // A later backup of the unchanged files repairs the missing chunks instead of reusing them.
    let fourth = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    assert!(fourth.snapshot.totals.bytes_read > 0);
    // (Chunks only older snapshots used, such as the old copy of the changed file, stay lost.)
    assert!(repo.verify(false).unwrap().chunks_missing < lost_ids.len() as u64);
    let r = repo
        .restore(
            &fourth.snapshot.id,
            tmp.path().join("out_fourth"),
            &RestoreOptions::default(),
        )
        .unwrap();
    let failed: Vec<&str> = r.failed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        failed,
        [damaged_file.as_str()],
        "only the damaged chunk is reused"
    );
}

#[test]
fn open_errors_are_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let started = Instant::now();
    let repo = Repository::init(&dir, SECRET).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "init took {:?}",
        started.elapsed()
    );
    drop(repo);
    let started = Instant::now();
    Repository::open(&dir, SECRET).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));

    let err = Repository::open(&dir, "not the secret").unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("secret"));

    let err = Repository::open(tmp.path().join("nothing"), SECRET).unwrap_err();
    assert!(matches!(err, Error::NotARepository { .. }), "{err}");

    let err = Repository::init(&dir, SECRET).unwrap_err();
    assert!(matches!(err, Error::NotEmpty { .. }), "{err}");

    // Tampering with a bound parameter is caught by the key check.
    let cfg_path = dir.join("config");
    let original = fs::read_to_string(&cfg_path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
    cfg["chunker"]["avg_size"] = serde_json::json!(128 * 1024);
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    assert!(matches!(
        Repository::open(&dir, SECRET),
        Err(Error::WrongKey { .. })
    ));

    let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
    cfg["version"] = serde_json::json!(FORMAT_VERSION + 1);
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = Repository::open(&dir, SECRET).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
    fs::write(&cfg_path, &original).unwrap();

    // Changing the secret keeps the data readable under the new one only.
    let mut repo = Repository::open(&dir, SECRET).unwrap();
    let s = repo
        .snapshot_stream(
            "db",
            "x.sql",
            &b"select 1;"[..],
            &SnapshotOptions::default(),
        )
        .unwrap();
    repo.change_secret("a new secret").unwrap();
    assert!(matches!(
        Repository::open(&dir, SECRET),
        Err(Error::WrongKey { .. })
    ));
    let repo = Repository::open(&dir, "a new secret").unwrap();
    let mut out = Vec::new();
    repo.restore_stream(&s.snapshot.id, &mut out).unwrap();
    assert_eq!(out, b"select 1;");
}

/// Cheap key derivation for tests that create many repositories.
fn quick_init(dir: &Path) -> Repository {
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            ..KdfParams::default()
        },
        ..InitOptions::default()
    };
    Repository::init_with(dir, SECRET, &options).unwrap()
}

#[test]
fn stream_round_trip_and_dedup_of_edited_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_init(&tmp.path().join("repo"));
    let mut dump = text(1, 10 * 1024 * 1024);
    dump.extend(noise(2, 10 * 1024 * 1024));
    dump.extend(text(3, 5 * 1024 * 1024 + 7));

    let first = repo
        .snapshot_stream("pg", "main.sql", &dump[..], &SnapshotOptions::default())
        .unwrap();
    assert_eq!(first.snapshot.kind, SnapshotKind::Stream);
    assert_eq!(first.snapshot.totals.size, dump.len() as u64);
    let mut out = Vec::new();
    let r = repo.restore_stream(&first.snapshot.id, &mut out).unwrap();
    assert_eq!(r.bytes, dump.len() as u64);
    assert_eq!(r.file_name, "main.sql");
    assert!(out == dump, "stream differs after restore");

    // The next dump differs by an insertion in the middle: most chunks are shared.
    let mut edited = dump.clone();
    edited.splice(
        12_000_000..12_000_000,
        b"INSERT INTO t VALUES (42);\n".iter().copied(),
    );
    let second = repo
        .snapshot_stream("pg", "main.sql", &edited[..], &SnapshotOptions::default())
        .unwrap();
    assert!(
        second.snapshot.totals.bytes_new < 10 * 1024 * 1024,
        "new bytes {}",
        second.snapshot.totals.bytes_new
    );
    assert!(second.dedup_ratio > 0.6, "{}", second.dedup_ratio);
    assert_eq!(second.previous.as_ref().unwrap().id, first.snapshot.id);
    let mut out = Vec::new();
    repo.restore_stream(&second.snapshot.id, &mut out).unwrap();
    assert!(out == edited);

    // A stream snapshot restores into a directory as its one file.
    let dir = tmp.path().join("out");
    repo.restore(&first.snapshot.id, &dir, &RestoreOptions::default())
        .unwrap();
    assert!(fs::read(dir.join("main.sql")).unwrap() == dump);

    // A directory snapshot is not a stream.
    fs::create_dir(tmp.path().join("d")).unwrap();
    let d = repo
        .snapshot_dir("files", tmp.path().join("d"), &SnapshotOptions::default())
        .unwrap();
    assert!(matches!(
        repo.restore_stream(&d.snapshot.id, io::sink()),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        repo.snapshot_stream("pg", "../x", &b""[..], &SnapshotOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
}

/// A reader that yields `limit` bytes of noise and then fails.
struct FailingReader {
    produced: usize,
    limit: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.produced >= self.limit {
            return Err(io::Error::other("pg_dump exited with status 1"));
        }
        let n = buf.len().min(self.limit - self.produced).min(1 << 20);
        buf[..n].copy_from_slice(&noise(self.produced as u64, n));
        self.produced += n;
        Ok(n)
    }
}

#[test]
fn failing_source_records_nothing_and_leaves_repository_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = quick_init(&repo_dir);
    let good = repo
        .snapshot_stream(
            "db",
            "db.sql",
            &text(5, 3_000_000)[..],
            &SnapshotOptions::default(),
        )
        .unwrap();

    let err = repo
        .snapshot_stream(
            "db",
            "db.sql",
            FailingReader {
                produced: 0,
                limit: 20 * 1024 * 1024,
            },
            &SnapshotOptions::default(),
        )
        .unwrap_err();
    match &err {
        Error::SourceRead { bytes, .. } => assert_eq!(*bytes, 20 * 1024 * 1024),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("no snapshot was recorded"));

    let repo = Repository::open(&repo_dir, SECRET).unwrap();
    let list = repo.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, good.snapshot.id);
    let v = repo.verify(true).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert!(v.chunks_unreferenced > 0, "the aborted data is orphaned");

    let dry = repo.prune(true).unwrap();
    assert!(dry.chunks_removed > 0);
    assert_eq!(dry.chunks_removed, v.chunks_unreferenced);
    let before = stored_chunks(&repo);
    assert_eq!(before, dry.chunks_total, "dry run deleted nothing");
    let pruned = repo.prune(false).unwrap();
    assert_eq!(pruned.chunks_removed, dry.chunks_removed);
    // How much of the 20 MiB was stored before the pipeline saw the error depends on
    // timing; whatever was stored is exactly what prune removes.
    assert!(pruned.bytes_freed > 0);
    assert_eq!(stored_chunks(&repo), before - pruned.chunks_removed);
    assert_eq!(pruned.chunks_missing, 0);
    let v = repo.verify(true).unwrap();
    assert!(v.ok && v.chunks_unreferenced == 0);
    let mut out = Vec::new();
    repo.restore_stream(&good.snapshot.id, &mut out).unwrap();
    assert!(out == text(5, 3_000_000));
}

const CRASH_REPO_ENV: &str = "RUNCAP_REPO_TEST_CRASH_REPO";

/// A child process killed (SIGKILL) and reaped when dropped, so a failing assertion never
/// leaves the endless writer running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test on its own: the body of the child process that `killed_backup_*` kills.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_REPO_ENV) else {
        return;
    };
    let repo = Repository::open(dir, SECRET).unwrap();
    // An endless dump: only SIGKILL ends this.
    let _ = repo.snapshot_stream(
        "db",
        "db.sql",
        FailingReader {
            produced: 0,
            limit: usize::MAX,
        },
        &SnapshotOptions::default(),
    );
    unreachable!("the endless stream ended");
}

#[test]
fn killed_backup_leaves_previous_snapshots_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = quick_init(&repo_dir);
    let src = tmp.path().join("src");
    make_tree(&src, 50, 1, 3 * 1024 * 1024);
    let good = repo
        .snapshot_dir("files", &src, &SnapshotOptions::default())
        .unwrap();
    let baseline = pack_files(&repo_dir).len();

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_REPO_ENV, &repo_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait for the child to have published a pack (and so be writing others).
    while pack_files(&repo_dir).len() < baseline + 1 {
        assert!(Instant::now() < deadline, "the child made no progress");
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child); // SIGKILL, then reaped

    let repo = Repository::open(&repo_dir, SECRET).unwrap();
    let list = repo.list().unwrap();
    assert_eq!(list.len(), 1, "no half snapshot is visible");
    assert_eq!(list[0].id, good.snapshot.id);
    let v = repo.verify(true).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let out = tmp.path().join("out");
    assert!(
        repo.restore(&good.snapshot.id, &out, &RestoreOptions::default())
            .unwrap()
            .complete
    );
    assert_same_tree(&src, &out);
    // The lock died with the child: prune can take it, and clears the orphans.
    let p = repo.prune(false).unwrap();
    assert!(p.chunks_removed >= 1 && p.packs_deleted >= 1, "{p:?}");
    assert_eq!(
        all_files(&repo_dir.join("packs")).len(),
        pack_files(&repo_dir).len(),
        "temporary files of the killed writer are gone"
    );
    assert!(repo.verify(true).unwrap().ok);
}

#[test]
fn forget_policy_keeps_the_right_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = quick_init(&repo_dir);
    let times = [
        ("a", datetime!(2025-03-31 12:00 UTC)), // Monday, ISO week 14, March
        ("b", datetime!(2025-03-31 08:00 UTC)), // same day, older
        ("c", datetime!(2025-03-30 12:00 UTC)), // Sunday, week 13
        ("d", datetime!(2025-03-29 12:00 UTC)), // Saturday, week 13
        ("e", datetime!(2025-03-20 12:00 UTC)), // week 12
        ("f", datetime!(2025-02-15 12:00 UTC)), // February
        ("g", datetime!(2025-02-01 12:00 UTC)), // February, older
        ("h", datetime!(2025-01-10 12:00 UTC)), // January
    ];
    let mut ids = BTreeMap::new();
    for (name, t) in times {
        let r = repo
            .snapshot_stream(
                "db",
                "db.sql",
                &noise(name.as_bytes()[0] as u64, 300_000)[..],
                &SnapshotOptions {
                    time: Some(t),
                    ..Default::default()
                },
            )
            .unwrap();
        ids.insert(r.snapshot.id.clone(), name);
    }
    let other = repo
        .snapshot_stream(
            "other",
            "o.sql",
            &b"other"[..],
            &SnapshotOptions {
                time: Some(datetime!(2024-01-01 00:00 UTC)),
                ..Default::default()
            },
        )
        .unwrap();
    ids.insert(other.snapshot.id.clone(), "other");

    let policy = ForgetPolicy {
        keep_last: 1,
        keep_daily: 2,
        keep_weekly: 2,
        keep_monthly: 3,
    };
    let names = |ds: &[runcap_repo::ForgetDecision]| {
        let mut v: Vec<&str> = ds.iter().map(|d| ids[&d.id]).collect();
        v.sort();
        v
    };
    let dry = repo.forget(&policy, true).unwrap();
    assert_eq!(names(&dry.kept), ["a", "c", "f", "h", "other"]);
    assert_eq!(names(&dry.removed), ["b", "d", "e", "g"]);
    let a = dry.kept.iter().find(|d| ids[&d.id] == "a").unwrap();
    assert_eq!(
        a.reasons,
        [
            "last 1",
            "daily 2025-03-31",
            "weekly 2025-W14",
            "monthly 2025-03"
        ]
    );
    assert_eq!(repo.list().unwrap().len(), 9, "dry run removes nothing");

    let real = repo.forget(&policy, false).unwrap();
    assert_eq!(names(&real.removed), ["b", "d", "e", "g"]);
    let left: Vec<&str> = repo.list().unwrap().iter().map(|s| ids[&s.id]).collect();
    assert_eq!(left, ["a", "c", "f", "h", "other"], "newest first");
    let pruned = repo.prune(false).unwrap();
    assert!(pruned.chunks_removed >= 4);
    assert!(pruned.bytes_freed > 4 * 300_000);
    assert!(repo.verify(true).unwrap().ok);

    assert!(matches!(
        repo.forget(&ForgetPolicy::default(), true),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn dry_run_touches_nothing_and_overwrite_is_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_init(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/app.conf"), b"port = 8080\n").unwrap();
    fs::write(src.join("data.db"), noise(9, 500_000)).unwrap();
    let snap = repo
        .snapshot_dir("cfg", &src, &SnapshotOptions::default())
        .unwrap();

    // Dry run into a missing directory: listed, nothing created.
    let target = tmp.path().join("target");
    let dry = repo
        .restore(
            &snap.snapshot.id,
            &target,
            &RestoreOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dry.files, 2);
    assert_eq!(dry.existing, 0);
    assert_eq!(dry.planned.len(), 3);
    assert!(!target.exists());

    // An existing, edited file: dry run flags it; restore without overwrite keeps it.
    fs::create_dir_all(target.join("etc")).unwrap();
    fs::write(target.join("etc/app.conf"), b"port = 9999\n").unwrap();
    let dry = repo
        .restore(
            &snap.snapshot.id,
            &target,
            &RestoreOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
    let conf = dry
        .planned
        .iter()
        .find(|p| p.path == "etc/app.conf")
        .unwrap();
    assert!(conf.exists);
    assert!(
        !dry.planned
            .iter()
            .find(|p| p.path == "data.db")
            .unwrap()
            .exists
    );
    assert!(!target.join("data.db").exists());

    let r = repo
        .restore(&snap.snapshot.id, &target, &RestoreOptions::default())
        .unwrap();
    assert_eq!(r.skipped_existing, ["etc/app.conf"]);
    assert_eq!(
        fs::read(target.join("etc/app.conf")).unwrap(),
        b"port = 9999\n"
    );
    assert_eq!(fs::read(target.join("data.db")).unwrap(), noise(9, 500_000));

    let r = repo
        .restore(
            &snap.snapshot.id,
            &target,
            &RestoreOptions {
                overwrite: true,
                paths: vec!["etc".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.complete);
    assert_eq!(r.files, 1, "only the selected path");
    assert_eq!(
        fs::read(target.join("etc/app.conf")).unwrap(),
        b"port = 8080\n"
    );
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(target.join("etc")).unwrap().count(), 1);

    let json = serde_json::to_value(&snap).unwrap();
    assert!(json["snapshot"]["totals"]["bytes_stored"].as_u64().unwrap() > 0);
    assert!(serde_json::to_string(&repo.verify(false).unwrap()).is_ok());
}

#[test]
fn repository_inside_the_source_is_not_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("srv");
    fs::create_dir_all(src.join("data")).unwrap();
    fs::write(src.join("data/a.txt"), b"alpha").unwrap();
    let repo = quick_init(&src.join("backups"));
    let snap = repo
        .snapshot_dir("srv", &src, &SnapshotOptions::default())
        .unwrap();
    assert_eq!(snap.snapshot.totals.files, 1);
    assert_eq!(snap.snapshot.totals.dirs, 1, "only data/, not backups/");
    let dry = repo
        .restore(
            &snap.snapshot.id,
            tmp.path().join("out"),
            &RestoreOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
    let paths: Vec<&str> = dry.planned.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["data", "data/a.txt"]);
}

#[test]
fn concurrent_snapshots_of_the_same_data_share_a_handle_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = quick_init(&tmp.path().join("repo"));
    let mut data = noise(77, 6 * 1024 * 1024);
    data.extend(text(78, 6 * 1024 * 1024));
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (repo, data) = (&repo, &data);
                s.spawn(move || {
                    repo.snapshot_stream(
                        &format!("db{i}"),
                        "dump.sql",
                        &data[..],
                        &SnapshotOptions::default(),
                    )
                    .unwrap()
                    .snapshot
                    .id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let v = repo.verify(true).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.chunks_unreferenced, 0);
    for id in ids {
        let mut out = Vec::new();
        repo.restore_stream(&id, &mut out).unwrap();
        assert!(out == data);
    }
}

#[test]
fn compare_finds_every_kind_of_difference_after_a_restore() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 300, 2, 3 << 20);
    let repo = quick_init(&work.path().join("repo"));
    let snap = repo
        .snapshot_dir("tree", &src, &SnapshotOptions::default())
        .unwrap();
    let out = work.path().join("out");
    let restored = repo
        .restore(&snap.snapshot.id, &out, &RestoreOptions::default())
        .unwrap();
    assert!(restored.complete);

    let same = repo.compare(&snap.snapshot.id, &out).unwrap();
    assert!(same.ok, "{same:#?}");
    assert_eq!(same.files, snap.snapshot.totals.files);
    assert_eq!(same.files_matched, same.files);
    assert_eq!(same.bytes, snap.snapshot.totals.size);

    // One flipped byte deep inside a large file, a truncated file, a missing file, a file
    // that grew, and a symlink pointing elsewhere.
    let large = out.join("large1.bin");
    let mut data = fs::read(&large).unwrap();
    data[2_000_000] ^= 1;
    fs::write(&large, &data).unwrap();
    let small = out.join("d02/sub2/f00002.txt");
    let len = fs::metadata(&small).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&small).unwrap();
    f.set_len(len - 1).unwrap();
    fs::remove_file(out.join("d03/sub0/f00003.txt")).unwrap();
    let grown = out.join("d04/sub1/f00004.txt");
    let mut g = fs::read(&grown).unwrap();
    g.push(b'!');
    fs::write(&grown, g).unwrap();
    fs::remove_file(out.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", out.join("link")).unwrap();

    let diff = repo.compare(&snap.snapshot.id, &out).unwrap();
    assert!(!diff.ok);
    let reasons: BTreeMap<String, String> = diff
        .differences
        .iter()
        .map(|d| (d.path.clone(), d.reason.clone()))
        .collect();
    assert_eq!(diff.differences_total, 5, "{reasons:#?}");
    assert!(
        reasons["large1.bin"].contains("content differs"),
        "{reasons:#?}"
    );
    assert!(
        reasons["d02/sub2/f00002.txt"].contains("size"),
        "{reasons:#?}"
    );
    assert_eq!(reasons["d03/sub0/f00003.txt"], "missing");
    assert!(
        reasons["d04/sub1/f00004.txt"].contains("size"),
        "{reasons:#?}"
    );
    assert!(
        reasons["link"].contains("points to elsewhere"),
        "{reasons:#?}"
    );
    assert_eq!(diff.files_matched, diff.files - 4);
}

#[test]
fn a_cancelled_snapshot_records_nothing() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 50, 0, 0);
    let repo = quick_init(&work.path().join("repo"));
    let cancel = runcap_repo::CancelFlag::new();
    cancel.cancel();
    let options = SnapshotOptions {
        cancel: Some(cancel),
        ..SnapshotOptions::default()
    };
    let err = repo.snapshot_dir("tree", &src, &options).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(repo.list().unwrap().is_empty());
    assert!(repo.verify(true).unwrap().ok);
}

#[test]
fn prune_rewrites_mixed_packs_and_a_damaged_pack_index_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    // The default chunks (256 KiB on average) spread each 4 MiB file over every pack.
    let repo = quick_init(&repo_dir);
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        fs::write(src.join(format!("f{i}")), noise(i, 4 << 20)).unwrap();
    }
    repo.snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    fs::write(src.join("f0"), noise(99, 4 << 20)).unwrap();
    let second = repo
        .snapshot_dir("app", &src, &SnapshotOptions::default())
        .unwrap();
    let keep_last = ForgetPolicy {
        keep_last: 1,
        ..ForgetPolicy::default()
    };
    repo.forget(&keep_last, false).unwrap();

    // The first snapshot's copy of f0 is dead, and its chunks share packs with live ones.
    let before = repo.packs().unwrap();
    let v = repo.verify(false).unwrap();
    assert!(v.chunks_unreferenced > 0);
    let total: usize = before.iter().map(|p| p.chunks.len()).sum();
    let dry = repo.prune(true).unwrap();
    assert_eq!(dry.chunks_total, total as u64);
    assert_eq!(dry.chunks_removed, v.chunks_unreferenced);
    assert!(dry.packs_rewritten >= 1, "{dry:?}");
    assert_eq!(repo.packs().unwrap(), before, "a dry run changes nothing");

    let pruned = repo.prune(false).unwrap();
    assert_eq!(
        (
            pruned.chunks_removed,
            pruned.packs_deleted,
            pruned.packs_rewritten
        ),
        (dry.chunks_removed, dry.packs_deleted, dry.packs_rewritten)
    );
    let after = repo.packs().unwrap();
    let stored: u64 = after.iter().map(|p| p.chunks.len() as u64).sum();
    assert_eq!(stored, total as u64 - pruned.chunks_removed);
    let v = repo.verify(true).unwrap();
    assert!(v.ok && v.chunks_unreferenced == 0, "{:?}", v.problems);
    let out = tmp.path().join("out");
    assert!(
        repo.restore(&second.snapshot.id, &out, &RestoreOptions::default())
            .unwrap()
            .complete
    );
    assert_same_tree(&src, &out);

    // A pack whose index is damaged: verify names the pack and every chunk it held.
    let victim = after.iter().max_by_key(|p| p.chunks.len()).unwrap().clone();
    let mut bytes = fs::read(&victim.path).unwrap();
    let at = bytes.len() - 12;
    bytes[at] ^= 0x01;
    fs::write(&victim.path, &bytes).unwrap();
    let v = repo.verify(false).unwrap();
    assert!(!v.ok);
    let bad: Vec<_> = v
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::CorruptPack)
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", v.problems);
    assert_eq!(bad[0].chunk_path.as_deref(), Some(victim.path.as_str()));
    assert!(
        bad[0].detail.contains("authentication"),
        "{}",
        bad[0].detail
    );
    // Its chunks are missing: here prune combined every pack into this one, so the
    // snapshot's file list is among them and the snapshot itself cannot be read.
    assert!(v.chunks_missing >= 1 && v.chunks_missing <= victim.chunks.len() as u64);
}

#[test]
fn prune_combines_the_small_packs_snapshots_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = quick_init(&repo_dir);
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let dump = text(100 + i, 300_000);
        let r = repo
            .snapshot_stream("db", "db.sql", &dump[..], &SnapshotOptions::default())
            .unwrap();
        ids.push((r.snapshot.id, dump));
    }
    let before = repo.packs().unwrap();
    assert!(before.len() >= 6, "each snapshot left packs of its own");
    let chunks = stored_chunks(&repo);

    let p = repo.prune(false).unwrap();
    assert_eq!(p.chunks_removed, 0, "{p:?}");
    assert_eq!(p.packs_rewritten, before.len() as u64, "{p:?}");
    let after = repo.packs().unwrap();
    assert_eq!(after.len(), 1, "all combined into one pack");
    assert_eq!(stored_chunks(&repo), chunks);
    assert!(repo.verify(true).unwrap().ok);
    for (id, dump) in &ids {
        let mut out = Vec::new();
        repo.restore_stream(id, &mut out).unwrap();
        assert!(out == *dump);
    }
    // A lone small pack is left as it is.
    let again = repo.prune(false).unwrap();
    assert_eq!((again.packs_rewritten, again.packs_deleted), (0, 0));
    assert_eq!(repo.packs().unwrap(), after);
}
