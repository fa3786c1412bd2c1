//! `examples/grace` end to end, as an operator would use it: the example is copied into a
//! sandbox (its plugin paths made absolute, its ports replaced by free ones, its pages sent
//! to an in-process webhook sink), booted (migrations, policies, backend), smoke-tested and
//! checked; then the backend is killed (health pages on-call, then the lead on the second
//! failure) and restarted, an error burst in its log trips the error-rate check, a broken
//! logic update rolls itself back, a tampered immutable log is recovered from the backup,
//! and the stack is stopped.

use std::path::Path;

use runcap_e2e::example::{Example, Layout, crash, listening, statuses, wait_for};
use runcap_e2e::{Service, step};

/// The ports the example's manifest writes: backend, serve, pager.
const PORTS: [u16; 3] = [18120, 18128, 18129];

/// Where the example writes what the test rewrites.
const LAYOUT: Layout = Layout {
    name: "grace",
    ports: &PORTS,
    pager: 18129,
    skip: &[".runcap", "data", "backups", "scratch"],
};

fn all_ok(report: &serde_json::Value) {
    assert_eq!(report["status"], "ok", "{report:#}");

    assert!(
        statuses(report).iter().all(|(_, s)| s == "ok"),
        "{report:#}"
    );
}

/// `secs_ago` seconds before now as an RFC 3339 UTC stamp, the way the backend's log
/// writes them.
fn stamp(secs_ago: u64) -> String {
    runcap_e2e::rfc3339(runcap_e2e::unix_now() - secs_ago)
}

/// The pages received so far, as (channel, title).
fn pages(hooks: &Service) -> Vec<(String, String)> {
    hooks
        .state
        .hooks
        .lock()
        .unwrap()
        .iter()
        .map(|(channel, page)| {
            (
                channel.clone(),
                page["title"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until `n` pages arrived and returns those after the first `seen`.
fn new_pages(hooks: &Service, seen: usize, n: usize) -> Vec<(String, String)> {
    wait_for("the pages", || pages(hooks).len() >= seen + n);
    let all = pages(hooks);
    assert_eq!(all.len(), seen + n, "{all:#?}");
    all[seen..].to_vec()
}

#[test]
fn the_grace_backend_boots_pages_in_tiers_rolls_back_a_bad_update_and_recovers_its_database() {
    let hooks = Service::start("127.0.0.1", None);
    let stack = Example::new(&LAYOUT, &hooks, &[]);
    let sb = &stack.sb;
    let backend_port = stack.port(18120);
    sb.run(&["check"]).expect_code(0);

    // Boot: the pager, migrations (creating the database), policies, then the backend.
    let started = stack.run_json(&["run", "start"], 0);
    all_ok(&started);
    let order: Vec<String> = statuses(&started).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        order,
        ["pager", "migrate", "seed_policies", "backend", "healthy"]
    );
    let migrate = step(&started, "migrate");
    assert!(
        migrate["details"]["stdout"]
            .as_str()
            .unwrap()
            .contains("5 applied"),
        "{migrate:#}"
    );
    assert!(sb.path().join("data/grace.db").is_file());
    assert!(listening(backend_port));

    // Smoke tests, the daily checklist and the weekly integrity check all pass.
    all_ok(&stack.run_json(&["run", "smoke"], 0));
    all_ok(&stack.run_json(&["run", "health"], 0));
    all_ok(&stack.run_json(&["run", "daily"], 0));
    all_ok(&stack.run_json(&["run", "integrity"], 0));
    let stress = stack.run_json(&["run", "stress"], 0);
    all_ok(&stress);
    assert_eq!(
        step(&stress, "fetch")["details"]["samples"],
        50,
        "{stress:#}"
    );
    assert!(pages(&hooks).is_empty());

    // Resources name the process that holds the backend's port: the backend itself.
    let backend_pid = stack.pid("grace");
    // The harness moves this host's own levels (disk, memory, load), so the port decides.
    let resources = stack.run_json(&["run", "resources"], 0);
    let host = step(&resources, "host");
    assert_eq!(host["status"], "ok", "{host:#}");
    assert_eq!(
        host["details"][format!("ports.{backend_port}.pid")].as_f64(),
        Some(backend_pid as f64),
        "{host:#}"
    );

    // The backend dies without a word: health fails and pages on-call, then the lead
    // when it fails a second time in a row.
    crash(backend_pid, backend_port, "the backend");
    let failed = stack.run_json(&["run", "health"], 1);
    assert_eq!(failed["failed_step"], "backend", "{failed:#}");
    assert_eq!(step(&failed, "errors")["status"], "ok", "{failed:#}");
    assert_eq!(failed["incident"]["status"], "escalated", "{failed:#}");
    let incident_id = failed["incident"]["id"].as_i64().unwrap();
    assert_eq!(
        new_pages(&hooks, 0, 1),
        [("oncall".into(), "grace health failed: backend".into())]
    );
    let again = stack.run_json(&["run", "health"], 1);
    assert_eq!(again["incident"]["id"], incident_id, "{again:#}");
    assert_eq!(again["incident"]["failures"], 2, "{again:#}");
    assert_eq!(
        new_pages(&hooks, 1, 1),
        [(
            "lead".into(),
            "grace health failed 2 times in a row: backend".into()
        )]
    );

    let restarted = stack.run_json(&["run", "restart"], 0);
    all_ok(&restarted);
    assert_ne!(stack.pid("grace"), backend_pid);
    let healed = stack.run_json(&["run", "health"], 0);
    assert_eq!(healed["incident"]["status"], "resolved", "{healed:#}");
    assert_eq!(pages(&hooks).len(), 2, "no page once it passes");

    // The error rate: errors older than five minutes do not count, a few recent ones warn,
    // more than ten in five minutes fail.
    let log = sb.path().join("logs/grace.log");
    let original = std::fs::read_to_string(&log).unwrap();
    let burst = |secs_ago: u64, n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{} ERROR memory_fusion: fetch failed ({i})\n",
                    stamp(secs_ago)
                )
            })
            .collect()
    };
    std::fs::write(&log, format!("{original}{}", burst(400, 20))).unwrap();
    all_ok(&stack.run_json(&["run", "health"], 0));
    std::fs::write(&log, format!("{original}{}", burst(30, 3))).unwrap();
    let warned = stack.run_json(&["run", "health"], 0);
    assert_eq!(warned["status"], "warn", "{warned:#}");
    assert_eq!(step(&warned, "errors")["status"], "warn", "{warned:#}");
    std::fs::write(&log, format!("{original}{}", burst(30, 11))).unwrap();
    let noisy = stack.run_json(&["run", "health"], 1);
    assert_eq!(noisy["failed_step"], "errors", "{noisy:#}");
    assert!(
        step(&noisy, "errors")["summary"]
            .as_str()
            .unwrap()
            .contains("11 lines"),
        "{noisy:#}"
    );
    assert_eq!(
        new_pages(&hooks, 2, 1),
        [("oncall".into(), "grace health failed: errors".into())]
    );
    std::fs::write(&log, &original).unwrap();
    assert_eq!(
        stack.run_json(&["run", "health"], 0)["incident"]["status"],
        "resolved"
    );

    // A logic update that loads is kept and recorded; one the backend cannot parse is
    // rolled back on its own, recorded as rolled back, and pages on-call.
    let current = || std::fs::read_link(sb.path().join("deploy/current")).unwrap();
    all_ok(&stack.run_json(&["run", "update", "--var", "release=v2"], 0));
    assert_eq!(current(), Path::new("releases/v2"));
    let bad = stack.run_json(&["run", "update", "--var", "release=v3-broken"], 1);
    assert_eq!(bad["failed_step"], "verify", "{bad:#}");
    assert_eq!(step(&bad, "record_rollback")["status"], "ok", "{bad:#}");
    assert_eq!(step(&bad, "swap.rollback")["status"], "ok", "{bad:#}");
    assert_eq!(current(), Path::new("releases/v2"));
    assert_eq!(
        new_pages(&hooks, 3, 1),
        [(
            "oncall".into(),
            "grace logic update rolled back: verify failed".into()
        )]
    );
    all_ok(&stack.run_json(&["run", "smoke"], 0));
    // A release name that is not one is refused before anything runs.
    sb.run(&["run", "update", "--var", "release=../../etc"])
        .expect_code(2);
    // Two rollbacks in 42 updates stay within the 5% target.
    let daily = stack.run_json(&["run", "daily"], 0);
    all_ok(&daily);
    assert!(
        step(&daily, "rollback_rate")["details"]["stdout"]
            .as_str()
            .unwrap()
            .contains("2 of 42"),
        "{daily:#}"
    );

    // Backup, then a tampered immutable log: the weekly check fails and pages, recover-db
    // keeps the damaged copy, restores the backup and brings the backend back.
    all_ok(&stack.run_json(&["run", "backup"], 0));
    all_ok(&stack.run_json(&["run", "restore-drill"], 0));
    {
        let db = rusqlite::Connection::open(sb.path().join("data/grace.db")).unwrap();
        db.execute(
            "UPDATE immutable_log SET event = 'tampered' WHERE id = 3",
            [],
        )
        .unwrap();
    }
    let corrupt = stack.run_json(&["run", "integrity"], 1);
    assert_eq!(corrupt["failed_step"], "immutable_log", "{corrupt:#}");
    assert!(
        step(&corrupt, "immutable_log")["details"]["stdout"]
            .as_str()
            .unwrap()
            .contains("broken at entry 3"),
        "{corrupt:#}"
    );
    assert_eq!(
        new_pages(&hooks, 4, 1),
        [(
            "oncall".into(),
            "grace data integrity check failed: immutable_log".into()
        )]
    );
    let before = stack.pid("grace");
    let recovered = stack.run_json(&["run", "recover-db"], 0);
    all_ok(&recovered);
    assert!(
        step(&recovered, "evidence")["summary"]
            .as_str()
            .unwrap()
            .contains("grace-db-evidence"),
        "{recovered:#}"
    );
    assert_ne!(stack.pid("grace"), before);
    let fixed = stack.run_json(&["run", "integrity"], 0);
    assert_eq!(fixed["incident"]["status"], "resolved", "{fixed:#}");

    // Manual escalation: a typed title, paged to the lead.
    sb.run(&["run", "escalate", "--var", "title=rm -rf /; echo $HOME"])
        .expect_code(2);
    all_ok(&stack.run_json(
        &["run", "escalate", "--var", "title=Manual escalation needed"],
        0,
    ));
    assert_eq!(
        new_pages(&hooks, 5, 1),
        [("lead".into(), "grace: Manual escalation needed".into())]
    );

    // Stopped, every port free.
    let stopped = stack.run_json(&["run", "stop"], 0);
    all_ok(&stopped);
    for s in stack.run_json(&["services"], 0).as_array().unwrap() {
        assert_eq!(s["state"], "stopped", "{s:#}");
    }
    assert!(!listening(backend_port));
    assert!(!listening(stack.port(18129)));
}
