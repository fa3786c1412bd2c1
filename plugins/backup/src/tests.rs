use runcap_sdk::testing::{BackupAnswer, MockHost};
use runcap_sdk::{
    ActionError, BackupError, CompareReport, QueryResult, RestoreReport, SnapshotInfo,
    SnapshotReport, Status,
};

use super::*;

fn parse(v: Value) -> Result<Params, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn info(age_seconds: i64) -> SnapshotInfo {
    SnapshotInfo {
        id: "0123456789abcdef0123456789abcdef".into(),
        source: "db".into(),
        kind: "dump".into(),
        age_seconds,
        files: 1,
        size: 4096,
        ..Default::default()
    }
}

fn restored(age_seconds: i64, duration_ms: u64) -> RestoreReport {
    RestoreReport {
        snapshot: info(age_seconds),
        target: "scratch".into(),
        files: 1,
        bytes: 4096,
        duration_ms,
        complete: true,
        ..Default::default()
    }
}

fn drill_params(extra: Value) -> Params {
    let mut v = json!({
        "action": "drill", "repository": "main", "source": "db", "target": "scratch",
        "rto": "1m", "rpo": "15m",
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    parse(v).unwrap()
}

#[test]
fn params_are_tagged_by_action_and_strict() {
    assert!(matches!(
        parse(json!({"action": "verify", "repository": "main"})).unwrap(),
        Params::Verify {
            read_data: true,
            ..
        }
    ));
    assert!(matches!(
        parse(json!({"action": "forget", "repository": "main", "keep_daily": 7})).unwrap(),
        Params::Forget {
            keep_daily: 7,
            prune: true,
            ..
        }
    ));
    let e =
        parse(json!({"action": "snapshot", "source": "db", "repository": "main", "path": "/etc"}))
            .unwrap_err();
    assert!(e.contains("unknown field `path`"), "{e}");
    let e = parse(json!({"action": "explode"})).unwrap_err();
    assert!(e.contains("unknown variant"), "{e}");
    let e = parse(json!({"action": "drill", "repository": "main", "source": "db", "target": "t"}))
        .unwrap_err();
    assert!(e.contains("missing field `rto`"), "{e}");
}

#[test]
fn a_snapshot_reports_its_figures_and_warns_when_the_rpo_was_missed() {
    let report = SnapshotReport {
        snapshot: info(0),
        bytes_read: 10 << 20,
        bytes_stored: 1 << 20,
        dedup_ratio: 0.9,
        duration_ms: 1500,
        previous_id: Some("ffff".into()),
        previous_age_seconds: Some(2 * 3600),
        ..Default::default()
    };
    let host = MockHost::new()
        .answer_backup(BackupAnswer::Snapshot(Ok(report.clone())))
        .answer_backup(BackupAnswer::Snapshot(Ok(report)));
    let p = json!({"action": "snapshot", "source": "db", "repository": "main", "rpo": "3h"});
    let o = run(&host.context(), parse(p).unwrap()).unwrap();
    assert_eq!(o.status, Status::Ok, "{}", o.summary);
    assert!(
        o.summary
            .contains("10.0 MiB read, 1.0 MiB stored, dedup 90%"),
        "{}",
        o.summary
    );
    assert!(
        o.summary.contains("previous 2h 0m earlier"),
        "{}",
        o.summary
    );
    assert!(o.metrics.contains(&("rpo_achieved_s".into(), 7200.0)));

    let p = json!({"action": "snapshot", "source": "db", "repository": "main", "rpo": "1h"});
    let o = run(&host.context(), parse(p).unwrap()).unwrap();
    assert_eq!(o.status, Status::Warn);
    assert!(o.summary.contains("over the 1h RPO"), "{}", o.summary);
    assert_eq!(o.details["rpo_met"], false);
    assert_eq!(
        *host.backup_calls.borrow(),
        vec!["snapshot db main", "snapshot db main"]
    );
}

#[test]
fn a_drill_compares_a_directory_and_passes_within_its_objectives() {
    let host = MockHost::new()
        .answer_backup(BackupAnswer::Restore(Ok(restored(60, 2_000))))
        .answer_backup(BackupAnswer::Compare(Ok(CompareReport {
            files: 1,
            files_matched: 1,
            bytes: 4096,
            ok: true,
            duration_ms: 500,
            ..Default::default()
        })));
    let o = run(&host.context(), drill_params(json!({"clean": true}))).unwrap();
    assert_eq!(o.status, Status::Ok, "{}", o.summary);
    assert!(o.summary.starts_with("drill passed"), "{}", o.summary);
    assert_eq!(o.details["recovery_ms"], 2500);
    assert_eq!(o.details["rto_met"], true);
    assert_eq!(o.details["rpo_met"], true);
    assert!(o.metrics.contains(&("recovery_ms".into(), 2500.0)));
    assert_eq!(
        *host.backup_calls.borrow(),
        vec![
            "restore latest of db from main into scratch overwrite clean",
            "compare 0123456789abcdef0123456789abcdef from main with scratch"
        ]
    );
}

#[test]
fn a_drill_fails_when_the_rto_or_the_rpo_is_missed_or_the_check_fails() {
    // Recovery takes 70 s against a 1 minute RTO.
    let host = MockHost::new()
        .answer_backup(BackupAnswer::Restore(Ok(restored(60, 69_000))))
        .answer_backup(BackupAnswer::Query(Ok(QueryResult {
            stdout: "3\n".into(),
            duration_ms: 1_000,
            ..Default::default()
        })));
    let o = run(
        &host.context(),
        drill_params(json!({"query": "orders", "expect": "3"})),
    )
    .unwrap();
    assert_eq!(o.status, Status::Fail);
    assert!(o.summary.contains("RTO 1m 0s missed"), "{}", o.summary);
    assert!(
        o.summary.contains("printed \"3\" as expected"),
        "{}",
        o.summary
    );

    // The snapshot is 20 minutes old against a 15 minute RPO.
    let host = MockHost::new()
        .answer_backup(BackupAnswer::Restore(Ok(restored(20 * 60, 100))))
        .answer_backup(BackupAnswer::Query(Ok(QueryResult {
            stdout: "3".into(),
            ..Default::default()
        })));
    let o = run(
        &host.context(),
        drill_params(json!({"query": "orders", "expect": "3"})),
    )
    .unwrap();
    assert_eq!(o.status, Status::Fail);
    assert!(o.summary.contains("RPO 15m 0s missed"), "{}", o.summary);
    assert_eq!(o.details["rpo_met"], false);

    // The query prints something else.
    let host = MockHost::new()
        .answer_backup(BackupAnswer::Restore(Ok(restored(1, 100))))
        .answer_backup(BackupAnswer::Query(Ok(QueryResult {
            stdout: "2\n".into(),
            ..Default::default()
        })));
    let o = run(
        &host.context(),
        drill_params(json!({"query": "orders", "expect": "3"})),
    )
    .unwrap();
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.summary.contains("printed \"2\", expected \"3\""),
        "{}",
        o.summary
    );
}

#[test]
fn a_dry_run_drill_restores_nothing_and_checks_nothing() {
    let mut plan = restored(30, 0);
    plan.dry_run = true;
    let host = MockHost::new().answer_backup(BackupAnswer::Restore(Ok(plan)));
    let mut ctx = host.context();
    ctx.dry_run = true;
    let o = run(&ctx, drill_params(json!({}))).unwrap();
    assert_eq!(o.status, Status::Ok, "{}", o.summary);
    assert!(
        o.summary.starts_with("dry run: would restore"),
        "{}",
        o.summary
    );
    assert_eq!(
        *host.backup_calls.borrow(),
        vec!["restore latest of db from main into scratch dry-run overwrite"]
    );
}

#[test]
fn errors_become_failed_steps_and_denials_stay_denials() {
    let host = MockHost::new().answer_backup(BackupAnswer::Verify(Err(BackupError::WrongKey(
        "the key from secret `k` does not unlock repository `main`".into(),
    ))));
    let o = run(
        &host.context(),
        parse(json!({"action": "verify", "repository": "main"})).unwrap(),
    )
    .unwrap();
    assert_eq!(o.status, Status::Fail);
    assert!(o.summary.contains("wrong key"), "{}", o.summary);
    assert_eq!(o.details["error"], "wrong-key");

    let host = MockHost::new();
    let e = run(
        &host.context(),
        parse(json!({"action": "list", "repository": "main"})).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, ActionError::Denied(_)), "{e}");

    let e = run(
        &host.context(),
        parse(json!({"action": "forget", "repository": "main"})).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, ActionError::InvalidParams(_)), "{e}");
    let e = run(&host.context(), drill_params(json!({"query": "orders"}))).unwrap_err();
    assert!(e.to_string().contains("go together"), "{e}");
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(human(Duration::from_millis(800)), "800ms");
    assert_eq!(human(Duration::from_millis(2500)), "2.5s");
    assert_eq!(human(Duration::from_secs(725)), "12m 5s");
    assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(12), "12 B");
}
