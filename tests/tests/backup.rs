//! The backup capability and plugin on real things: a directory tree with many files and a
//! few large ones, a real PostgreSQL dumped with pg_dump and restored into a fresh database
//! with psql, a SQLite database (the example, run as shipped), a damaged chunk, a wrong key,
//! and `kill -9` in the middle of a snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runcap_e2e::servers::Postgres;
use runcap_e2e::{Sandbox, plugin_lines, plugin_wasm, step};
use sha2::{Digest, Sha256};

fn summary(report: &serde_json::Value, id: &str) -> String {
    step(report, id)["summary"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A manifest granting the backup plugin `grants` (TOML under `[plugins.backup.grants.backup]`),
/// with one-step runbooks: `name = { params }`.
fn manifest(grants: &str, runbooks: &[(&str, &str)]) -> String {
    let mut m = format!(
        r#"
environment = "test"

[secrets.key]
file = "key.txt"

[plugins.backup]
{plugin}limits = {{ memory = "32MiB", time = "5m" }}

[plugins.backup.grants.backup]
{grants}
"#,
        plugin = plugin_lines("backup"),
    );
    for (name, params) in runbooks {
        m += &format!(
            "\n[runbooks.{name}]\nsteps = [{{ id = \"s\", uses = \"backup\", with = {{ {params} }} }}]\n"
        );
    }
    m
}

/// Runs a one-step runbook and returns the JSON report, checking the exit code.
fn run(sb: &Sandbox, runbook: &str, code: i32) -> serde_json::Value {
    sb.run(&["run", runbook, "--json"]).expect_code(code).json()
}

/// Deterministic bytes: mostly random, with some repetition so they compress a little.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            out.extend_from_slice(b"the quick brown fox jumps over the lazy dog\n");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// sha256 of every regular file under `root`, by relative path; symlinks by target.
fn digests(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if ft.is_dir() {
                out.insert(rel.clone() + "/", String::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Many small files in nested directories, three large ones, an empty directory, a symlink.
fn make_tree(root: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for i in 0..1200u64 {
        let dir = root.join(format!("d{:02}/s{}", i % 30, i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let d = data(i, (i as usize * 131) % 6000);
        bytes += d.len() as u64;
        files += 1;
        std::fs::write(dir.join(format!("f{i:04}.txt")), d).unwrap();
    }
    for i in 0..3u64 {
        let d = data(10_000 + i, 6 << 20);
        bytes += d.len() as u64;
        files += 1;
        std::fs::write(root.join(format!("large{i}.bin")), d).unwrap();
    }
    std::fs::create_dir_all(root.join("empty/inside")).unwrap();
    std::os::unix::fs::symlink("d00/s0/f0000.txt", root.join("link")).unwrap();
    (files, bytes)
}

/// Pack files under their final names (chunks live in packs; a pack being written has a
/// temporary name).
fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(subs) = std::fs::read_dir(repo.join("packs")) else {
        return out;
    };
    for sub in subs.flatten() {
        if let Ok(files) = std::fs::read_dir(sub.path()) {
            for f in files.flatten() {
                if f.file_name().len() == 64 {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

const TREE_GRANTS: &str = r#"
sources.files = { dir = "src" }
repositories.main = { dir = "repo", secret = "key" }
targets.restore = { dir = "restore" }
targets.scratch = { dir = "scratch", scratch = true }
"#;

#[test]
fn a_directory_tree_is_backed_up_restored_exactly_and_drilled() {
    let sb = Sandbox::new();
    sb.write("key.txt", "correct horse battery staple\n");
    let src = sb.path().join("src");
    let (files, bytes) = make_tree(&src);
    let original = digests(&src);
    let runbooks = [
        (
            "snap",
            r#"action = "snapshot", source = "files", repository = "main", rpo = "1h""#,
        ),
        ("list", r#"action = "list", repository = "main""#),
        (
            "preview",
            r#"action = "restore", source = "files", repository = "main", target = "restore", dry_run = true"#,
        ),
        (
            "drill",
            r#"action = "drill", source = "files", repository = "main", target = "scratch", clean = true, rto = "5m", rpo = "1h""#,
        ),
        (
            "tight",
            r#"action = "drill", source = "files", repository = "main", target = "scratch", clean = true, rto = "1ms", rpo = "1h""#,
        ),
        (
            "sneaky",
            r#"action = "snapshot", source = "etc", repository = "main""#,
        ),
        (
            "wipe",
            r#"action = "restore", source = "files", repository = "main", target = "restore", clean = true"#,
        ),
        ("offsite", r#"action = "list", repository = "offsite""#),
    ];
    sb.write("runcap.toml", &manifest(TREE_GRANTS, &runbooks));
    sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(caps.contains("source files: directory"), "{caps}");
    assert!(caps.contains("(key from secret key)"), "{caps}");
    assert!(caps.contains("target scratch: directory"), "{caps}");
    assert!(!caps.contains("correct horse"), "{caps}");

    // A dry run reads nothing, stores nothing, and does not even create the repository.
    let r = sb
        .run(&["run", "snap", "--json", "--dry-run"])
        .expect_code(0)
        .json();
    assert!(
        summary(&r, "s").starts_with(&format!("dry run: would back up files: {files} files")),
        "{r:#}"
    );
    assert_eq!(step(&r, "s")["calls"][0]["decision"], "dry-run");
    assert!(!sb.path().join("repo").exists());

    let r = run(&sb, "snap", 0);
    let first = step(&r, "s")["details"]["report"].clone();
    assert_eq!(first["snapshot"]["files"], files, "{first:#}");
    assert_eq!(first["bytes_read"], bytes);
    assert!(first["previous_id"].is_null());
    assert!(
        summary(&r, "s").contains("first snapshot of this source"),
        "{r:#}"
    );
    let first_id = first["snapshot"]["id"].as_str().unwrap().to_string();
    let calls = step(&r, "s")["calls"].to_string();
    assert!(
        calls.contains("\"allowed\"") && calls.contains("files → main"),
        "{calls}"
    );

    // A plugin cannot back up what it is not granted, nor read a repository it is not granted.
    for (runbook, name, grant) in [
        ("sneaky", "source `etc`", "sources.etc"),
        ("offsite", "repository `offsite`", "repositories.offsite"),
    ] {
        let r = run(&sb, runbook, 1);
        assert_eq!(step(&r, "s")["failure"]["kind"], "denied", "{r:#}");
        let msg = step(&r, "s")["failure"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{name} is not granted"))
                && msg.contains(&format!("[plugins.backup.grants.backup.{grant}]")),
            "{msg}"
        );
        assert_eq!(step(&r, "s")["calls"][0]["decision"], "denied");
    }
    // Nor empty a target that is not a scratch directory.
    let r = run(&sb, "wipe", 1);
    assert_eq!(step(&r, "s")["failure"]["kind"], "denied");

    // Restore --dry-run lists what would be written and what is already there.
    std::fs::create_dir_all(sb.path().join("restore/d01/s1")).unwrap();
    sb.write("restore/d01/s1/f0001.txt", "an older copy");
    let r = run(&sb, "preview", 0);
    let report = &step(&r, "s")["details"]["report"];
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["files"], files);
    assert!(report["existing"].as_u64().unwrap() >= 3, "{report:#}");
    assert!(
        report["planned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "d01/s1/f0001.txt" && p["exists"] == true),
        "{report:#}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("restore/d01/s1/f0001.txt")).unwrap(),
        "an older copy"
    );
    assert_eq!(step(&r, "s")["calls"][0]["decision"], "dry-run");

    // Change the data: rewrite part of a large file, delete one file, add one.
    let large = src.join("large1.bin");
    let mut d = std::fs::read(&large).unwrap();
    for b in &mut d[3_000_000..3_100_000] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(&large, d).unwrap();
    std::fs::remove_file(src.join("d05/s1/f0005.txt")).unwrap();
    std::fs::write(src.join("new.txt"), "written after the first snapshot").unwrap();
    std::thread::sleep(Duration::from_millis(1100));

    let r = run(&sb, "snap", 0);
    let second = step(&r, "s")["details"]["report"].clone();
    assert_eq!(second["previous_id"], first_id.as_str());
    assert!(second["previous_age_seconds"].as_i64().unwrap() >= 1);
    // Only the changed files were read, and little was stored.
    assert!(
        second["bytes_read"].as_u64().unwrap() <= (6 << 20) + 100,
        "{second:#}"
    );
    // Only the chunks around the change are new (chunks average about 256 KiB).
    assert!(
        second["bytes_new"].as_u64().unwrap() < 6 << 20,
        "{second:#}"
    );
    assert!(
        second["bytes_stored"].as_u64().unwrap() < first["bytes_stored"].as_u64().unwrap() / 4,
        "{second:#}"
    );
    assert!(second["dedup_ratio"].as_f64().unwrap() > 0.75, "{second:#}");
    assert!(
        step(&r, "s")["metrics"]
            .to_string()
            .contains("rpo_achieved_s"),
        "{r:#}"
    );

    let r = run(&sb, "list", 0);
    assert_eq!(
        step(&r, "s")["details"]["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The snapshot taken before the change brings the old bytes back exactly.
    let restore_first = format!(
        r#"action = "restore", snapshot = "{}", repository = "main", target = "old""#,
        &first_id[..12]
    );
    let grants = format!("{TREE_GRANTS}targets.old = {{ dir = \"old\" }}\n");
    sb.write(
        "runcap.toml",
        &manifest(
            &grants,
            &[
                ("restore-first", &restore_first),
                ("drill", runbooks[3].1),
                ("tight", runbooks[4].1),
            ],
        ),
    );
    let r = run(&sb, "restore-first", 0);
    assert!(summary(&r, "s").starts_with("restored snapshot"), "{r:#}");
    assert_eq!(digests(&sb.path().join("old")), original);

    // The drill restores the latest snapshot into the scratch directory, compares every byte
    // and holds the recovery to the objectives.
    sb.write("scratch/leftover.txt", "from an earlier drill");
    let r = run(&sb, "drill", 0);
    let s = step(&r, "s");
    assert!(summary(&r, "s").starts_with("drill passed"), "{r:#}");
    assert_eq!(s["details"]["rto_met"], true);
    assert_eq!(s["details"]["rpo_met"], true);
    assert_eq!(s["details"]["verification"]["compare"]["ok"], true);
    assert!(s["details"]["recovery_ms"].as_u64().unwrap() > 0);
    assert!(!sb.path().join("scratch/leftover.txt").exists());
    assert_eq!(digests(&sb.path().join("scratch")), digests(&src));

    // A recovery that cannot meet its RTO fails the run.
    let r = run(&sb, "tight", 1);
    assert_eq!(step(&r, "s")["status"], "fail");
    assert!(summary(&r, "s").contains("RTO 1ms missed"), "{r:#}");
    assert_eq!(step(&r, "s")["details"]["verified"], true);
}

#[test]
fn a_damaged_chunk_is_found_by_verify_and_a_wrong_key_is_refused() {
    let sb = Sandbox::new();
    sb.write("key.txt", "the right key");
    let src = sb.path().join("src");
    make_tree(&src);
    let runbooks = [
        (
            "snap",
            r#"action = "snapshot", source = "files", repository = "main""#,
        ),
        ("verify", r#"action = "verify", repository = "main""#),
        (
            "verify-index",
            r#"action = "verify", repository = "main", read_data = false"#,
        ),
        ("list", r#"action = "list", repository = "main""#),
        (
            "drill",
            r#"action = "drill", source = "files", repository = "main", target = "scratch", clean = true, rto = "5m", rpo = "1h""#,
        ),
    ];
    sb.write("runcap.toml", &manifest(TREE_GRANTS, &runbooks));
    run(&sb, "snap", 0);
    let r = run(&sb, "verify", 0);
    assert!(summary(&r, "s").contains("no problems"), "{r:#}");

    // Flip one byte in the middle of the largest pack: inside one chunk's record (the pack's
    // index, at its end, is a small part of it).
    let repo = sb.path().join("repo");
    let packs = pack_files(&repo);
    let victim = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, bytes).unwrap();

    // Checking only the index misses it; reading the data finds it and names it.
    run(&sb, "verify-index", 0);
    let r = run(&sb, "verify", 1);
    let s = step(&r, "s");
    assert_eq!(s["status"], "fail");
    assert_eq!(s["details"]["verify"]["chunks_corrupt"], 1, "{s:#}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(summary(&r, "s").contains(name), "{r:#}");
    // A drill of the damaged snapshot fails too.
    let r = run(&sb, "drill", 1);
    assert_eq!(step(&r, "s")["status"], "fail", "{r:#}");

    // The wrong key is refused with a message that says what to do, and changes nothing.
    let before = pack_files(&repo).len();
    sb.write("key.txt", "not the key");
    for runbook in ["list", "snap", "verify"] {
        let r = run(&sb, runbook, 1);
        let s = step(&r, "s");
        assert_eq!(s["details"]["error"], "wrong-key", "{s:#}");
        let text = s["summary"].as_str().unwrap();
        assert!(
            text.contains("the key from secret `key` does not unlock repository `main`")
                && text.contains("grant the secret this repository was created with"),
            "{text}"
        );
        assert!(!r.to_string().contains("not the key"), "{r:#}");
    }
    assert_eq!(pack_files(&repo).len(), before);
}

#[test]
fn kill_9_during_a_snapshot_leaves_the_repository_valid() {
    let sb = Sandbox::new();
    sb.write("key.txt", "the backup key");
    std::fs::create_dir_all(sb.path().join("src")).unwrap();
    sb.write("src/a.txt", "the first snapshot's data");
    // A dump that streams about 100 MiB of incompressible data over several seconds, and
    // stops as soon as nobody reads it.
    let grants = r#"
sources.files = { dir = "src" }
sources.slow = { command = "i=0; while [ $i -lt 400 ]; do head -c 262144 /dev/urandom || exit 1; sleep 0.02; i=$((i+1)); done", file = "big.bin" }
repositories.main = { dir = "repo", secret = "key" }
"#;
    let runbooks = [
        (
            "first",
            r#"action = "snapshot", source = "files", repository = "main""#,
        ),
        (
            "slow",
            r#"action = "snapshot", source = "slow", repository = "main""#,
        ),
        ("verify", r#"action = "verify", repository = "main""#),
        ("list", r#"action = "list", repository = "main""#),
    ];
    let hurry = "\n[runbooks.hurry]\nsteps = [{ id = \"s\", uses = \"backup\", timeout = \"1s\", with = { action = \"snapshot\", source = \"slow\", repository = \"main\" } }]\n";
    sb.write("runcap.toml", &(manifest(grants, &runbooks) + hurry));
    let r = run(&sb, "first", 0);
    let first_id = step(&r, "s")["details"]["snapshot_id"].clone();
    let repo = sb.path().join("repo");
    let before = pack_files(&repo).len();

    let mut child = sb
        .runcap()
        .args(["run", "slow", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_files(&repo).len() < before + 1 {
        assert!(
            Instant::now() < deadline,
            "the slow snapshot never wrote a pack"
        );
        assert!(child.try_wait().unwrap().is_none(), "runcap ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(pack_files(&repo).len() > before);

    // Only the first snapshot is visible, and every chunk it references is intact.
    let r = run(&sb, "list", 0);
    let list = step(&r, "s")["details"]["snapshots"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], first_id);
    let r = run(&sb, "verify", 0);
    let v = &step(&r, "s")["details"]["verify"];
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v["chunks_unreferenced"].as_u64().unwrap() > 0, "{v:#}");
    // The lock died with the process: the next snapshot runs.
    let r = run(&sb, "first", 0);
    assert_eq!(step(&r, "s")["details"]["report"]["previous_id"], first_id);
    // A snapshot that runs out of time is cancelled: its dump is killed, nothing is
    // recorded, and runcap does not wait for the dump to finish on its own.
    let started = Instant::now();
    let r = run(&sb, "hurry", 1);
    assert_eq!(step(&r, "s")["failure"]["kind"], "timeout", "{r:#}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let r = run(&sb, "list", 0);
    assert_eq!(
        step(&r, "s")["details"]["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    run(&sb, "verify", 0);

    // runcap's own store saw the interrupted run.
    let history = sb.run(&["history", "--json"]).expect_code(0).json();
    assert!(history.to_string().contains("interrupted"), "{history:#}");
}

#[test]
fn postgres_is_dumped_restored_into_a_fresh_database_and_queried() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.psql("postgres", "create database app;");
    pg.psql(
        "app",
        "create table customers (id serial primary key, name text not null);
         create table orders (id serial primary key, customer_id int not null references customers(id),
                              amount numeric(10,2) not null, note text);
         insert into customers (name) select 'customer ' || g from generate_series(1, 200) g;
         insert into orders (customer_id, amount, note)
           select 1 + g % 200, (g % 977) / 7.0, repeat('x', g % 50) from generate_series(1, 400000) g;",
    );
    let check = "select count(*), sum(amount), count(distinct customer_id) from orders";
    let expected = pg.psql("app", check);
    assert!(expected.starts_with("400000|"), "{expected}");

    let sb = Sandbox::new();
    sb.write("key.txt", "pg backups");
    let conn = pg.conn();
    let grants = format!(
        r#"
sources.app-db = {{ command = "pg_dump --no-owner {conn} app", file = "app.sql" }}
repositories.main = {{ dir = "repo", secret = "key" }}
targets.scratch-db = {{ command = "dropdb {conn} --if-exists scratch && createdb {conn} scratch && psql -X -q -v ON_ERROR_STOP=1 {conn} -d scratch" }}
queries.orders = {{ command = "psql -X -tA {conn} -d scratch -c '{check}'" }}
"#
    );
    let drill = format!(
        r#"action = "drill", source = "app-db", repository = "main", target = "scratch-db", query = "orders", expect = "{expected}", rto = "2m", rpo = "1h""#
    );
    let stale = format!(
        r#"action = "drill", source = "app-db", repository = "main", target = "scratch-db", query = "orders", expect = "{expected}", rto = "2m", rpo = "1s""#
    );
    let runbooks = [
        (
            "snap",
            r#"action = "snapshot", source = "app-db", repository = "main""#,
        ),
        ("drill", drill.as_str()),
        ("stale", stale.as_str()),
        ("verify", r#"action = "verify", repository = "main""#),
    ];
    sb.write("runcap.toml", &manifest(&grants, &runbooks));
    sb.run(&["check"]).expect_code(0);

    let r = run(&sb, "snap", 0);
    let report = &step(&r, "s")["details"]["report"];
    assert_eq!(report["snapshot"]["kind"], "dump");
    assert_eq!(report["snapshot"]["file_name"], "app.sql");
    assert!(
        report["bytes_read"].as_u64().unwrap() > 4_000_000,
        "{report:#}"
    );

    let r = run(&sb, "drill", 0);
    let s = step(&r, "s");
    assert!(summary(&r, "s").starts_with("drill passed"), "{r:#}");
    assert_eq!(
        s["details"]["verification"]["result"]["stdout"]
            .as_str()
            .unwrap()
            .trim(),
        expected
    );
    assert!(s["details"]["restore"]["command_output"].is_string());
    // The restored database is a real, separate copy.
    assert_eq!(pg.psql("scratch", check), expected);
    assert_eq!(pg.psql("scratch", "select count(*) from customers"), "200");

    // New data: a drill that expects it fails against the old snapshot, and passes once the
    // next snapshot is taken; that dump deduplicates against the previous one.
    pg.psql(
        "app",
        // Longer than any row already stored, so it cannot fit in the free space an earlier
        // page kept: it lands at the end of the table, and of the dump's data for it.
        "insert into orders (customer_id, amount, note) values (1, 99.99, repeat('y', 300));",
    );
    let fresh = pg.psql("app", check);
    let drill2 = drill.replace(&expected, &fresh);
    let runbooks2 = [
        ("snap", runbooks[0].1),
        ("drill", drill2.as_str()),
        ("stale", stale.as_str()),
    ];
    sb.write("runcap.toml", &manifest(&grants, &runbooks2));
    let r = run(&sb, "drill", 1);
    assert!(
        summary(&r, "s").contains(&format!("printed \"{expected}\", expected \"{fresh}\"")),
        "{r:#}"
    );
    assert_eq!(pg.psql("scratch", "select count(*) from orders"), "400000");
    std::thread::sleep(Duration::from_millis(1100));
    let r = run(&sb, "snap", 0);
    let second = &step(&r, "s")["details"]["report"];
    assert!(second["previous_age_seconds"].as_i64().unwrap() >= 1);
    // Two dumps differ in their first and last lines (pg_dump's per-dump `\restrict` key)
    // and where the new row is; a dump of a dozen or more chunks keeps most of them, and
    // what must hold is that unchanged chunks are not stored again.
    assert!(
        second["chunks_new"].as_u64().unwrap() < second["chunks_total"].as_u64().unwrap(),
        "{second:#}"
    );
    assert!(second["dedup_ratio"].as_f64().unwrap() > 0.1, "{second:#}");
    run(&sb, "drill", 0);
    assert_eq!(pg.psql("scratch", "select count(*) from orders"), "400001");

    // A snapshot older than the RPO fails the drill even though the data checks out.
    std::thread::sleep(Duration::from_millis(2100));
    let r = run(&sb, "stale", 1);
    assert!(summary(&r, "s").contains("RPO 1.0s missed"), "{r:#}");
}

#[test]
fn a_failing_dump_records_nothing() {
    let sb = Sandbox::new();
    sb.write("key.txt", "the backup key");
    let grants = r#"
sources.broken = { command = "printf 'half a dump'; echo 'pg_dump: error: connection refused' >&2; exit 1" }
sources.good = { command = "head -c 3000000 /dev/zero" }
repositories.main = { dir = "repo", secret = "key" }
targets.quitter = { command = "echo 'psql: FATAL: database does not exist' >&2; exit 3" }
"#;
    let runbooks = [
        (
            "snap",
            r#"action = "snapshot", source = "broken", repository = "main""#,
        ),
        ("list", r#"action = "list", repository = "main""#),
        (
            "good",
            r#"action = "snapshot", source = "good", repository = "main""#,
        ),
        (
            "restore",
            r#"action = "restore", source = "good", repository = "main", target = "quitter""#,
        ),
    ];
    sb.write("runcap.toml", &manifest(grants, &runbooks));
    let r = run(&sb, "snap", 1);
    let text = summary(&r, "s");
    assert!(
        text.contains("exited with code 1") && text.contains("connection refused"),
        "{text}"
    );
    let r = run(&sb, "list", 0);
    assert!(summary(&r, "s").contains("no snapshots"), "{r:#}");

    // A restore command that gives up early fails the step with its own words; runcap,
    // which was writing to it, is not killed by SIGPIPE.
    run(&sb, "good", 0);
    let r = run(&sb, "restore", 1);
    let text = summary(&r, "s");
    assert!(
        text.contains("exited with code 3") && text.contains("database does not exist"),
        "{text}"
    );
}

#[test]
fn the_backup_example_runs_as_shipped_with_sqlite() {
    // A copy of examples/backup, with the plugin path made absolute.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/backup");
    let sb = Sandbox::new();
    let copy = |rel: &str| {
        let to = sb.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), to).unwrap();
    };
    for rel in [
        "backup.key",
        "data/app.sqlite",
        "data/uploads/invoices/2026-0001.txt",
        "data/uploads/invoices/2026-0002.txt",
        "data/uploads/avatars/ada.pbm",
        "data/uploads/avatars/grace.pbm",
    ] {
        copy(rel);
    }
    let text = std::fs::read_to_string(root.join("runcap.toml")).unwrap();
    let wasm = plugin_wasm("backup");
    let text = text.replace(
        "../../target/wasm32-wasip2/release/backup.wasm",
        wasm.to_str().unwrap(),
    );
    sb.write("runcap.toml", &text);
    // The copy checks like the original, once pinned to this build of the plugin.
    sb.run(&["pin"]).expect_code(0);

    let r = sb
        .run(&["run", "nightly-backup", "--json"])
        .expect_code(0)
        .json();
    assert!(
        summary(&r, "database").contains("of app-db: 1 file"),
        "{r:#}"
    );
    assert!(
        summary(&r, "uploads").contains("of uploads: 4 files"),
        "{r:#}"
    );
    assert!(summary(&r, "verify").contains("no problems"), "{r:#}");
    let r = sb
        .run(&["run", "restore-drill", "--json"])
        .expect_code(0)
        .json();
    for id in ["database", "uploads"] {
        assert!(summary(&r, id).starts_with("drill passed"), "{r:#}");
        assert_eq!(step(&r, id)["details"]["rto_met"], true);
        assert_eq!(step(&r, id)["details"]["rpo_met"], true);
    }
    let restored = Command::new("sqlite3")
        .arg(sb.path().join("scratch/app.sqlite"))
        .arg("select name from customers order by id")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&restored.stdout),
        "Ada Lovelace\nGrace Hopper\n"
    );

    // An order placed after the backup: the drill notices the restored copy is not current.
    let ok = Command::new("sqlite3")
        .arg(sb.path().join("data/app.sqlite"))
        .arg("insert into orders values (4, 2, 100, '2026-11-23T08:00:00Z')")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let r = sb
        .run(&["run", "nightly-backup", "--json"])
        .expect_code(0)
        .json();
    assert!(summary(&r, "database").contains("previous"), "{r:#}");
    assert!(summary(&r, "rotate").contains("kept 4 snapshots"), "{r:#}");
    let r = sb
        .run(&["run", "restore-drill", "--json"])
        .expect_code(1)
        .json();
    assert!(
        summary(&r, "database").contains("printed \"4 orders, 6849 cents\""),
        "{r:#}"
    );
}

#[test]
fn bad_backup_grants_are_reported_with_their_line_and_fix() {
    let sb = Sandbox::new();
    sb.write("key.txt", "the backup key");
    let grants = r#"
sources.both = { dir = "src", command = "pg_dump app" }
sources.files = { dir = "src" }
sources.dump = { command = "pg_dump app", file = "../escape.sql" }
repositories.main = { dir = "repo", secret = "nope" }
targets.wipe-src = { dir = "src/..//src", scratch = true }
targets.db = { command = "psql", scratch = true }
queries.empty = { command = "  " }
"#;
    sb.write("runcap.toml", &manifest(grants, &[]));
    let out = sb.run(&["check"]).expect_code(2).stderr();
    for needle in [
        "a backup source needs exactly one of `dir` or `command`",
        "`../escape.sql` is not a plain file name",
        "names secret `nope`, which is not defined under [secrets]",
        "overlaps the source files",
        "`scratch` applies only to directory targets",
        "the query command is empty",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(out.contains("runcap.toml:"), "{out}");
}
