use std::path::Path;

use runcap_sdk::testing::MockHost;

use super::*;

const EMAIL: &str = "jane.roe@example.com";
const SSN: &str = "219-09-9999";
const CARD: &str = "4111 1111 1111 1111";
const PHONE: &str = "+1 415 555 2671";
const GITHUB: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "Tr0ub4dor-and-3-horses";

fn params(input: &Path, output: &Path) -> Params {
    serde_json::from_value(serde_json::json!({
        "input": input.to_str().unwrap(),
        "output": output.to_str().unwrap(),
    }))
    .unwrap()
}

/// An input tree with a text log, a JSON Lines log in a subdirectory and an unplanted file.
fn tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    fs::create_dir_all(input.join("api")).unwrap();
    fs::create_dir_all(&output).unwrap();
    fs::write(
        input.join("app.log"),
        format!(
            "2024-05-01T12:00:00Z INFO signup email={EMAIL} plan=pro\n\
             2024-05-01T12:00:01Z INFO kyc ssn={SSN} ok\n\
             2024-05-01T12:00:02Z WARN card {CARD} declined; call {PHONE}\n\
             2024-05-01T12:00:03Z DEBUG git clone with {GITHUB}\n\
             2024-05-01T12:00:04Z INFO build 2.0.1 took 1234 ms\n\
             2024-05-01T12:00:05Z INFO db password rotated to {SECRET}\r\n"
        ),
    )
    .unwrap();
    fs::write(
        input.join("api/events.jsonl"),
        format!(
            "{{\"ts\":\"2024-05-01T12:00:00Z\",\"user\":{{\"email\":\"{EMAIL}\"}},\"n\":4111111111111111}}\n\
             {{\"msg\":\"aws key {AWS} used\",\"level\":\"warn\"}}\n\
             not json at all {EMAIL}\n"
        ),
    )
    .unwrap();
    fs::write(input.join("api/clean.txt"), "nothing personal here\n").unwrap();
    (dir, input, output)
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn redacts_a_tree_of_text_and_json_lines() {
    let (_dir, input, output) = tree();
    let host = MockHost::new();
    let out = run(&host.context(), params(&input, &output)).unwrap();
    assert_eq!(out.status, Status::Ok, "{}", out.summary);

    let text = read(output.join("app.log"));
    for value in [EMAIL, SSN, CARD, PHONE, GITHUB] {
        assert!(!text.contains(value), "{value} survived:\n{text}");
    }
    assert!(text.contains("email=[EMAIL_REDACTED] plan=pro"), "{text}");
    assert!(text.contains("card [CC_REDACTED] declined; call [PHONE_REDACTED]"));
    assert!(
        text.contains("build 2.0.1 took 1234 ms"),
        "hard negatives stay"
    );
    assert!(text.ends_with("\r\n"), "line endings are kept");
    assert!(text.contains(SECRET), "no secret was asked for");

    let jsonl = read(output.join("api/events.jsonl"));
    let lines: Vec<&str> = jsonl.lines().collect();
    assert_eq!(lines.len(), 3);
    for l in &lines[..2] {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
    assert_eq!(
        lines[0],
        "{\"ts\":\"2024-05-01T12:00:00Z\",\"user\":{\"email\":\"[EMAIL_REDACTED]\"},\"n\":\"[CC_REDACTED]\"}",
        "a card number held as a JSON number is replaced too"
    );
    assert!(lines[1].contains("[API_KEY_REDACTED]") && !lines[1].contains(AWS));
    assert_eq!(lines[2], "not json at all [EMAIL_REDACTED]");
    assert_eq!(
        read(output.join("api/clean.txt")),
        "nothing personal here\n"
    );

    // Counts per rule, per file, and nothing replaced in the outcome itself.
    let d = &out.details;
    assert_eq!(d["counts"]["email"], 3);
    assert_eq!(d["counts"]["ssn"], 1);
    assert_eq!(d["counts"]["credit_card"], 2);
    assert_eq!(d["counts"]["phone"], 1);
    assert_eq!(d["counts"]["api_key"], 2);
    let files = d["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["api/clean.txt", "api/events.jsonl", "app.log"]);
    assert_eq!(files[1]["format"], "jsonl");
    assert_eq!(files[1]["invalid_json_lines"], 1);
    assert_eq!(files[2]["counts"]["email"], 1);
    assert_eq!(files[2]["lines"], 6);
    assert!(out.summary.contains("3 email") && out.summary.contains("2 api_key"));
    assert!(
        out.metrics
            .iter()
            .any(|(n, v)| n == "redactions.email" && *v == 3.0)
    );
    let everything = format!(
        "{} {} {:?}",
        out.summary,
        Value::Object(out.details.clone()),
        out.metrics
    );
    for value in [EMAIL, SSN, CARD, PHONE, GITHUB, AWS] {
        assert!(!everything.contains(value), "{value} in the outcome");
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = list_files(&output)
        .unwrap()
        .0
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("redact-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn dry_run_counts_without_writing() {
    let (_dir, input, output) = tree();
    let host = MockHost::new();
    let mut ctx = host.context();
    ctx.dry_run = true;
    let out = run(&ctx, params(&input, &output)).unwrap();
    assert_eq!(out.status, Status::Ok);
    assert!(
        out.summary.starts_with("dry run: would redact 3 files"),
        "{}",
        out.summary
    );
    assert_eq!(out.details["counts"]["email"], 3);
    assert!(
        fs::read_dir(&output).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn rule_selection_custom_rules_and_secrets() {
    let (_dir, input, output) = tree();
    let host = MockHost::new().grant_secret("db-password", SECRET);
    let mut p = params(&input, &output);
    p.rules = Some(vec!["email".into()]);
    p.custom = vec![CustomRuleParam {
        name: "plan".into(),
        pattern: "plan=[a-z]+".into(),
        replacement: Some("plan=[PLAN]".into()),
    }];
    p.secrets = vec!["db-password".into()];
    let out = run(&host.context(), p).unwrap();
    let text = read(output.join("app.log"));
    assert!(
        text.contains("email=[EMAIL_REDACTED] plan=[PLAN]"),
        "{text}"
    );
    assert!(
        text.contains(SSN) && text.contains(CARD),
        "only the selected rules run"
    );
    assert!(text.contains("rotated to [SECRET_REDACTED]") && !text.contains(SECRET));
    assert_eq!(out.details["counts"]["secret"], 1);
    assert_eq!(out.details["counts"]["plan"], 1);
    assert_eq!(out.details["rules"], serde_json::json!(["email", "plan"]));
}

#[test]
fn bad_params_and_missing_grants_are_clear() {
    let (_dir, input, output) = tree();
    let host = MockHost::new();
    let mut p = params(&input, &output);
    p.rules = Some(vec!["emial".into()]);
    match run(&host.context(), p) {
        Err(ActionError::InvalidParams(m)) => assert!(m.contains("emial"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut p = params(&input, &output);
    p.custom = vec![CustomRuleParam {
        name: "bad".into(),
        pattern: "(".into(),
        replacement: None,
    }];
    assert!(
        matches!(run(&host.context(), p), Err(ActionError::InvalidParams(m)) if m.contains("`bad`"))
    );
    let mut p = params(&input, &output);
    p.secrets = vec!["nope".into()];
    assert!(matches!(
        run(&host.context(), p),
        Err(ActionError::Denied(_))
    ));
    let p = params(&input.join("missing"), &output);
    match run(&host.context(), p) {
        Err(ActionError::Failed(m)) => assert!(m.contains("grants.fs"), "{m}"),
        other => panic!("{other:?}"),
    }
    let p = params(&input, &input);
    assert!(matches!(
        run(&host.context(), p),
        Err(ActionError::InvalidParams(_))
    ));
}

#[test]
fn empty_input_warns_and_symlinks_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    fs::create_dir_all(&input).unwrap();
    fs::create_dir_all(&output).unwrap();
    let host = MockHost::new();
    let out = run(&host.context(), params(&input, &output)).unwrap();
    assert_eq!(out.status, Status::Warn);

    fs::write(dir.path().join("elsewhere.log"), format!("{EMAIL}\n")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere.log"), input.join("link.log")).unwrap();
    let out = run(&host.context(), params(&input, &output)).unwrap();
    assert_eq!(out.details["skipped"][0]["path"], "link.log");
    assert_eq!(out.details["skipped"][0]["reason"], "symlink");
    assert!(!output.join("link.log").exists());
}

#[test]
fn format_param_overrides_extensions() {
    let (_dir, input, output) = tree();
    let host = MockHost::new();
    let mut p = params(&input, &output);
    p.format = Format::Text;
    let out = run(&host.context(), p).unwrap();
    assert_eq!(out.details["files"][1]["format"], "text");
    assert!(out.details["files"][1].get("invalid_json_lines").is_none());
}

/// Compressed, binary and unsupported files: decoded and redacted, or named and not copied.
#[test]
fn compressed_files_are_decoded_and_binary_files_are_not_copied() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    fs::create_dir_all(input.join("old")).unwrap();
    fs::create_dir_all(&output).unwrap();
    let text = format!("rotated email={EMAIL}\nkey {GITHUB}\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    fs::write(input.join("old/app.log.1.gz"), gz.finish().unwrap()).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(
        format!("{{\"email\":\"{EMAIL}\",\"card\":4111111111111111}}\n").as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    fs::write(input.join("events.jsonl.zst"), zst).unwrap();
    fs::write(
        input.join("core.bin"),
        b"\x7fELF\0\0secret jane.roe@example.com",
    )
    .unwrap();
    fs::write(
        input.join("old.xz"),
        b"\xfd7zXZ\0jane.roe@example.com".as_slice(),
    )
    .unwrap();
    fs::write(input.join("plain.log"), format!("{SSN}\n")).unwrap();

    let host = MockHost::new();
    let out = run(&host.context(), params(&input, &output)).unwrap();
    assert_eq!(out.status, Status::Warn, "{}", out.summary);
    assert!(
        out.summary.starts_with("2 files not redacted and not copied: core.bin (binary data, not text), old.xz (xz-compressed; only gzip and zstd are decoded); redacted 3 files"),
        "{}",
        out.summary
    );
    // Decoded, redacted, written without the compression suffix.
    assert_eq!(
        read(output.join("old/app.log.1")),
        "rotated email=[EMAIL_REDACTED]\nkey [API_KEY_REDACTED]\n"
    );
    assert_eq!(
        read(output.join("events.jsonl")),
        "{\"email\":\"[EMAIL_REDACTED]\",\"card\":\"[CC_REDACTED]\"}\n",
        "a .jsonl.zst file is JSON Lines"
    );
    assert!(!output.join("old/app.log.1.gz").exists());
    assert!(
        !output.join("core.bin").exists(),
        "binary files are not copied"
    );
    assert!(!output.join("old.xz").exists());
    let files = out.details["files"].as_array().unwrap();
    let gz_entry = files
        .iter()
        .find(|f| f["path"] == "old/app.log.1.gz")
        .unwrap();
    assert_eq!(gz_entry["decompressed"], "gzip");
    assert_eq!(gz_entry["written_as"], "old/app.log.1");
    assert_eq!(out.details["not_redacted"][0]["path"], "core.bin");
    assert_eq!(out.details["counts"]["email"], 2);
    assert!(
        out.metrics
            .iter()
            .any(|(n, v)| n == "files_not_redacted" && *v == 2.0)
    );

    // A decoded copy that would overwrite another file's copy fails that file instead.
    fs::write(input.join("old/app.log.1"), "other\n").unwrap();
    let out = run(&host.context(), params(&input, &output)).unwrap();
    assert_eq!(out.status, Status::Fail, "{}", out.summary);
    assert!(
        out.summary
            .contains("old/app.log.1.gz: its decoded copy would be old/app.log.1"),
        "{}",
        out.summary
    );
    assert_eq!(read(output.join("old/app.log.1")), "other\n");
}
