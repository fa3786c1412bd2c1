//! The `exec` capability end to end through the `exec` plugin: a declared command runs
//! with typed holes, its output reaches the report redacted (never the store, the audit
//! or stdout in clear), a dry run leaves it unstarted, a refused value fails only its
//! step, `caps` shows exactly what may run, and `check` catches an undeclared command.

use runcap_e2e::{Sandbox, plugin_lines, step};

const SECRET: &str = "pg-pass-7Hq2xZ9wL4";

/// A sandbox with a `migrate` script (it records what it applied, prints the password
/// it was given and fails on version 0) granted to the `exec` plugin, and `runbooks`.
fn sandbox(runbooks: &str) -> Sandbox {
    let sb = Sandbox::new();
    let script = sb.write(
        "bin/migrate",
        "#!/bin/sh\nset -e\n[ \"$2\" = 00000000000000 ] && { echo \"no such version\" >&2; exit 4; }\necho \"$2\" >> applied.txt\necho \"applied $2 as $PGUSER with $PGPASSWORD\"\necho \"HOME=$HOME\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.write("db.key", &format!("{SECRET}\n"));
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.db]
file = "db.key"

[plugins.exec]
{exec}

[plugins.exec.grants.exec.commands.upgrade]
program = "bin/migrate"
args = ["up", "{{{{ version }}}}"]
params.version = {{ type = "string", pattern = "[0-9]{{14}}" }}
secret_env = {{ PGPASSWORD = "db" }}
timeout = "30s"

[plugins.exec.grants.exec.commands.hang]
shell = true
script = "sleep 60"
timeout = "500ms"

{runbooks}
"#,
            exec = plugin_lines("exec"),
        ),
    );
    sb
}

const RUNBOOKS: &str = r#"
[runbooks.migrate]
steps = [{ id = "up", uses = "exec", with = { command = "upgrade", args = { version = "20261204120000" }, expect = { stdout_contains = "applied 20261204120000" } } }]

[runbooks.bad-version]
steps = [{ id = "up", uses = "exec", with = { command = "upgrade", args = { version = "00000000000000" } } }]

[runbooks.injected]
steps = [{ id = "up", uses = "exec", with = { command = "upgrade", args = { version = "1; touch pwned" } } }]

[runbooks.hang]
steps = [{ id = "h", uses = "exec", with = { command = "hang" } }]
"#;

#[test]
fn a_declared_command_runs_with_its_holes_and_its_secret_output_stays_redacted() {
    let sb = sandbox(RUNBOOKS);
    sb.run(&["check"]).expect_code(0);

    let dry = sb
        .run(&["run", "migrate", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    let up = step(&dry, "up");
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .starts_with("dry run: would run"),
        "{up:#}"
    );
    assert!(
        !sb.path().join("applied.txt").exists(),
        "a dry run starts nothing"
    );

    let run = sb.run(&["run", "migrate", "--json"]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    let report = run.json();
    let up = step(&report, "up");
    assert_eq!(up["status"], "ok", "{up:#}");
    assert_eq!(up["details"]["exit_code"], 0);
    let out = up["details"]["stdout"].as_str().unwrap();
    assert!(out.contains("with [SECRET_REDACTED]"), "{out}");
    assert!(
        out.contains("HOME=\n"),
        "the environment is only what is granted: {out}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("applied.txt")).unwrap(),
        "20261204120000\n"
    );
    let run_id = report["run_id"].as_str().unwrap().to_string();

    let failed = sb.run(&["run", "bad-version", "--json"]);
    assert_eq!(failed.code(), 1);
    let up = step(&failed.json(), "up").clone();
    assert_eq!(up["status"], "fail");
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .contains("exited 4, expected 0"),
        "{up:#}"
    );
    assert_eq!(up["details"]["stderr"], "no such version\n");

    let refused = sb.run(&["run", "injected", "--json"]);
    assert_eq!(refused.code(), 1);
    let up = step(&refused.json(), "up").clone();
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .contains("`version` is text matching `[0-9]{14}`"),
        "{up:#}"
    );
    assert!(!sb.path().join("pwned").exists());

    let hang = sb.run(&["run", "hang", "--json"]);
    assert_eq!(hang.code(), 1);
    let h = step(&hang.json(), "h").clone();
    assert!(
        h["summary"]
            .as_str()
            .unwrap()
            .contains("ran past its time limit"),
        "{h:#}"
    );

    // The secret is nowhere: not printed, not stored, not in the audit.
    runcap_e2e::assert_secret_kept_nowhere(&sb, &run_id, SECRET);
    let show = sb.run(&["show", &run_id, "--json"]).json();
    let calls = show.to_string();
    assert!(calls.contains("upgrade: "), "the call is recorded: {calls}");
    assert!(calls.contains("bin/migrate up 20261204120000"), "{calls}");
    assert!(
        !report.to_string().contains(SECRET) && !run.stdout().contains(SECRET),
        "printed"
    );
}

#[test]
fn caps_shows_each_command_and_check_refuses_an_undeclared_one_and_a_missing_grant() {
    let sb = sandbox(
        r#"
[runbooks.typo]
steps = [{ id = "up", uses = "exec", with = { command = "upgrade2" } }]
"#,
    );
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    for line in [
        "command upgrade: ",
        "bin/migrate up {{ version }}",
        "version: text matching `[0-9]{14}`",
        "command hang: /bin/sh -c 'sleep 60'",
        "runs through /bin/sh (shell = true)",
    ] {
        assert!(caps.contains(line), "{line}\n{caps}");
    }
    let md = sb.run(&["caps", "--markdown"]).expect_code(0).stdout();
    assert!(
        md.contains("**Risk:** command `hang` runs through /bin/sh"),
        "{md}"
    );
    let check = sb.run(&["check"]);
    assert_eq!(check.code(), 2, "{}", check.stdout());
    assert!(check.stderr().contains("upgrade2"), "{}", check.stderr());
    assert!(check.stderr().contains("upgrade"), "{}", check.stderr());

    // Without the grant the plugin is refused at load with the TOML to add, and that
    // TOML, pasted at the end of the manifest, is accepted.
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    let start = manifest
        .find("[plugins.exec.grants.exec.commands.upgrade]")
        .unwrap();
    let end = manifest.find("[runbooks.typo]").unwrap();
    let manifest = format!(
        "{}{}",
        &manifest[..start],
        manifest[end..].replace("{ command = \"upgrade2\" }", "{ command = \"x\" }")
    );
    sb.write("runcap.toml", &manifest);
    let refused = sb.run(&["check"]);
    assert_eq!(refused.code(), 2);
    let stderr = refused.stderr();
    let hint_start = stderr.find("[plugins.exec.grants.exec]").expect(&stderr);
    let hint: String = stderr[hint_start..]
        .lines()
        .take(1)
        .map(|l| format!("{l}\n"))
        .collect();
    sb.write("runcap.toml", &format!("{}\n{hint}", manifest.replace("[runbooks.typo]\nsteps = [{ id = \"up\", uses = \"exec\", with = { command = \"x\" } }]\n", "")));
    let accepted = sb.run(&["check"]);
    assert_eq!(accepted.code(), 0, "{}", accepted.stderr());
}

/// A user /etc/group lists in a group other than its own, if this host has one.
fn user_with_supplementary_groups() -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let members = line.split(':').nth(3)?;
        members
            .split(',')
            .find(|m| !m.is_empty())
            .map(str::to_string)
    })
}

/// The group ids a whitespace-separated list names, sorted.
fn gids(text: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = text
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_command_run_as_a_user_has_the_users_supplementary_groups() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching users needs root");
        return;
    }
    let user = user_with_supplementary_groups().expect("a user with supplementary groups");
    let id = std::process::Command::new("id")
        .args(["-G", &user])
        .output()
        .unwrap();
    let expected = gids(&String::from_utf8(id.stdout).unwrap());
    assert!(expected.len() > 1, "{user}: {expected:?}");
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.exec]
{exec}

[plugins.exec.grants.exec.commands.groups]
program = "/usr/bin/id"
args = ["-G"]
user = "{user}"
dir = "/"

[runbooks.groups]
steps = [{{ id = "groups", uses = "exec", with = {{ command = "groups" }} }}]
"#,
            exec = plugin_lines("exec"),
        ),
    );
    let r = sb.run(&["run", "groups", "--json"]).expect_code(0).json();
    let s = step(&r, "groups");
    assert_eq!(s["status"], "ok", "{s:#}");
    assert_eq!(
        gids(s["details"]["stdout"].as_str().unwrap()),
        expected,
        "{s:#}"
    );
}
