//! What `runcap check`, `runcap caps` and `runcap plugin describe` tell a user, and
//! whether following their advice works.

use runcap_e2e::{Sandbox, plugin_lines};

/// Every first-party plugin, declared with no grant at all.
fn ungranted_manifest() -> String {
    let mut m = String::from("environment = \"test\"\n");
    for plugin in [
        "http-probe",
        "service-control",
        "notify",
        "chaos",
        "backup",
        "redact",
    ] {
        m += &format!("\n[plugins.{plugin}]\n{}", plugin_lines(plugin));
    }
    m
}

#[test]
fn every_import_refusal_hint_is_toml_that_check_then_accepts() {
    let sb = Sandbox::new();
    let manifest = ungranted_manifest();
    sb.write("runcap.toml", &manifest);
    let out = sb.run(&["check"]).expect_code(2);
    let stderr = out.stderr();
    // Each refusal ends with the TOML to add, one block per missing grant.
    let mut hints = Vec::new();
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with("to allow it, add:") {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with("error:") && !l.contains("problem"))
                .copied()
                .collect();
            hints.push(block.join("\n"));
        }
    }
    for capability in ["http", "services", "notify", "faults", "backup", "secrets"] {
        assert!(
            hints
                .iter()
                .any(|h| h.contains(&format!("grants.{capability}"))
                    || h.contains(&format!("{capability} = "))),
            "no hint for {capability} in:\n{stderr}"
        );
    }
    // Pasting every hint at the end of the manifest, as written, makes it valid.
    let fixed = format!("{manifest}\n{}\n", hints.join("\n\n"));
    sb.write("runcap.toml", &fixed);
    let out = sb.run(&["check"]);
    assert_eq!(
        out.code(),
        0,
        "the hints did not fix the manifest:\n{fixed}\n{}",
        out.stderr()
    );
}

#[test]
fn check_validates_the_params_of_handlers_rollbacks_and_escalations() {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.http-probe]
{}grants.http = {{ allow = ["http://127.0.0.1:*"] }}

[[runbooks.rb.steps]]
id = "probe"
uses = "http-probe"
with = {{ url = "http://127.0.0.1:1/" }}
on_failure = ["page"]
rollback = {{ uses = "http-probe", with = {{ url = 42 }} }}

[[runbooks.rb.handlers]]
id = "page"
uses = "http-probe"
with = {{ no_such_param = true }}

[runbooks.rb.incident]
escalate_after = 1
[[runbooks.rb.incident.escalate]]
uses = "http-probe"
with = {{ url = "http://127.0.0.1:1/", expect = {{ status = "two hundred" }} }}
"#,
            plugin_lines("http-probe")
        ),
    );
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    for at in [
        "runbooks.rb.steps[0].rollback.with",
        "runbooks.rb.handlers[0].with",
        "runbooks.rb.incident.escalate[0].with",
    ] {
        assert!(err.contains(at), "nothing about {at}:\n{err}");
    }
    assert!(!err.contains("runbooks.rb.steps[0].with"), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
    // The command the help names exists and shows the params.
    let help_line = err
        .lines()
        .find(|l| l.contains("runcap plugin describe"))
        .expect("a describe hint");
    assert!(help_line.contains("`runcap plugin describe http-probe --env runcap.toml`"));
    let described = sb
        .run(&["plugin", "describe", "http-probe", "--env", "runcap.toml"])
        .expect_code(0)
        .stdout();
    assert!(described.contains("params (JSON Schema):"), "{described}");
    assert!(described.contains("\"url\""), "{described}");
    let json = sb
        .run(&["plugin", "describe", "http-probe", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(json["name"], "http-probe");
    assert!(
        json["params_schema"]["properties"]["url"].is_object(),
        "{json:#}"
    );
    assert!(
        json["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "runcap:plugin/http")
    );
    sb.run(&["plugin", "describe", "nope"]).expect_code(2);
}

#[test]
fn caps_json_lists_imports_and_says_why_when_it_cannot() {
    let sb = Sandbox::new();
    let junk = sb.write("junk.wasm", "this is not a component");
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"test\"\n\n[plugins.http-probe]\n{}grants.http = {{ allow = [] }}\n\n[plugins.junk]\npath = \"junk.wasm\"\nsha256 = \"{}\"\n",
            plugin_lines("http-probe"),
            runcap_e2e::sha256_file(&junk)
        ),
    );
    let json = sb.run(&["caps", "--json"]).expect_code(0).json();
    let plugins = json["plugins"].as_array().unwrap();
    let probe = plugins.iter().find(|p| p["name"] == "http-probe").unwrap();
    assert!(
        probe["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "runcap:plugin/http"),
        "{probe:#}"
    );
    assert!(probe.get("error").is_none(), "{probe:#}");
    let junk = plugins.iter().find(|p| p["name"] == "junk").unwrap();
    assert_eq!(junk["imports"], serde_json::json!([]), "{junk:#}");
    assert!(
        junk["error"]
            .as_str()
            .unwrap()
            .contains("not a valid component"),
        "{junk:#}"
    );
    assert!(!json.to_string().contains("\"Ok\""), "{json}");
}

#[test]
fn secrets_too_short_to_redact_or_unreadable_are_caught_by_check() {
    let sb = Sandbox::new();
    sb.write("short.key", "abc\n");
    sb.write("ok.key", "a-long-enough-value\n");
    let manifest = format!(
        r#"
environment = "test"

[secrets.short]
file = "short.key"

[secrets.ok]
file = "ok.key"

[secrets.gone]
file = "missing.key"

[secrets.unused]
env = "RUNCAP_TEST_NOT_SET_ANYWHERE"

[plugins.redact]
{}grants.secrets = ["ok", "gone"]
grants.fs = {{ input = {{ path = "." }} }}
"#,
        plugin_lines("redact")
    );
    sb.write("runcap.toml", &manifest);
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    assert!(err.contains("secret `short` is 3 bytes long"), "{err}");
    assert!(
        err.contains("give [secrets.short] a value of at least 4 bytes"),
        "{err}"
    );
    assert!(!err.contains("abc"), "the value is never printed: {err}");
    // Every command that would redact refuses, rather than leaving the value in clear.
    sb.run(&["history"]).expect_code(2);
    sb.write("short.key", "abcd\n");
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    assert!(err.contains("secret `gone`"), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
    assert!(err.contains("(runcap.toml:10)"), "{err}");
    assert!(
        err.contains("warning: secret `unused`") && err.contains("no grant uses it"),
        "{err}"
    );
    sb.write("missing.key", "now-it-exists\n");
    sb.run(&["check"]).expect_code(0);
}

#[test]
fn store_commands_outside_any_manifest_refuse_instead_of_creating_a_store() {
    let sb = Sandbox::new();
    for cmd in [
        &["faults"][..],
        &["history"],
        &["incidents"],
        &["audit", "verify"],
    ] {
        let out = sb.run(cmd).expect_code(2);
        assert!(
            out.stderr().contains("no manifest at runcap.toml"),
            "{cmd:?}: {}",
            out.stderr()
        );
    }
    assert!(!sb.path().join(".runcap").exists(), "no store was created");
    // With a state directory named, the store is where it says.
    let state = sb.path().join("elsewhere");
    sb.run(&["history", "--state-dir", state.to_str().unwrap()])
        .expect_code(0);
}

#[test]
fn wit_writes_the_package_and_the_world_its_hint_names() {
    let sb = Sandbox::new();
    let listed = sb.run(&["wit"]).expect_code(0).stdout();
    assert!(
        listed.contains("check") && listed.contains("imports: log, http"),
        "{listed}"
    );

    // --imports without --world: the hint is a command that works when pasted.
    let err = sb
        .run(&["wit", "--imports", "http"])
        .expect_code(2)
        .stderr();
    let hint = err
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {err}"));
    let args: Vec<&str> = hint.split_whitespace().skip(1).collect();
    sb.run(&args).expect_code(0);
    let world = std::fs::read_to_string(sb.path().join("wit/my-check.wit")).unwrap();
    assert!(world.contains("world my-check {"), "{world}");
    assert!(world.contains("import http;"), "{world}");
    assert!(sb.path().join("wit/world.wit").is_file());

    let bad = sb
        .run(&["wit", "--world", "probe", "--imports", "http,sevices"])
        .expect_code(2)
        .stderr();
    assert!(
        bad.contains("`sevices` is not a capability") && bad.contains("services"),
        "{bad}"
    );
}
