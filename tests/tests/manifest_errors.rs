//! Broken manifests: every error names the file, line, key and what to do.

use runcap_e2e::{Sandbox, plugin_lines, plugin_wasm, sha256_file};

/// Writes `text` as runcap.toml, runs `runcap check`, expects exit 2 and returns stderr.
fn check_fails(text: &str) -> String {
    let sb = Sandbox::new();
    sb.write("runcap.toml", text);
    sb.run(&["check"]).expect_code(2).stderr()
}

fn assert_all(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "`{n}` missing from:\n{stderr}");
    }
}

#[test]
fn unknown_key_is_located_with_a_suggestion() {
    let e = check_fails(&format!(
        "environment = \"dev\"\n\n[plugins.probe]\n{}limts = {{ memory = \"16MiB\" }}\n",
        plugin_lines("http-probe")
    ));
    assert_all(
        &e,
        &[
            "unknown field `limts`",
            "runcap.toml:6:",
            "plugins.probe",
            "did you mean `limits`?",
        ],
    );
}

#[test]
fn missing_plugin_file_says_how_to_build_it() {
    let e = check_fails(
        "environment = \"dev\"\n[plugins.probe]\npath = \"nowhere/probe.wasm\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    );
    assert_all(
        &e,
        &[
            "plugins.probe.path",
            "runcap.toml:3:",
            "nowhere/probe.wasm",
            "./dev plugins",
        ],
    );
}

#[test]
fn digest_mismatch_prints_the_actual_digest() {
    let wasm = plugin_wasm("http-probe");
    let actual = sha256_file(&wasm);
    let e = check_fails(&format!(
        "environment = \"dev\"\n[plugins.probe]\npath = {:?}\nsha256 = \"{}\"\n",
        wasm.display().to_string(),
        "ab".repeat(32)
    ));
    assert_all(
        &e,
        &[
            "plugins.probe.sha256",
            "runcap.toml:4:",
            &actual,
            &format!("sha256 = \"{actual}\""),
        ],
    );
}

#[test]
fn duplicate_names_are_refused() {
    let p = plugin_lines("noop");
    let e = check_fails(&format!(
        "environment = \"dev\"\n[plugins.a]\n{p}\n[plugins.a]\n{p}"
    ));
    assert_all(&e, &["duplicate", "runcap.toml:"]);
    let e = check_fails(&format!(
        "environment = \"dev\"\n[plugins.a]\n{p}\n[runbooks.r]\nsteps = [\n  {{ id = \"x\", uses = \"a\" }},\n  {{ id = \"x\", uses = \"a\" }},\n]\n"
    ));
    assert_all(
        &e,
        &[
            "runbooks.r.steps[1].id",
            "used twice",
            "runcap.toml:9:",
            "distinct `id",
        ],
    );
}

#[test]
fn undeclared_plugin_suggests_the_close_one() {
    let e = check_fails(&format!(
        "environment = \"dev\"\n[plugins.http-probe]\n{}\n[runbooks.r]\nsteps = [{{ uses = \"http-prob\" }}]\n",
        plugin_lines("http-probe")
    ));
    assert_all(
        &e,
        &[
            "runbooks.r.steps[0].uses",
            "not declared",
            "did you mean `http-probe`?",
            "runcap.toml:7:",
        ],
    );
}

#[test]
fn bad_http_pattern_is_explained() {
    let e = check_fails(&format!(
        "environment = \"dev\"\n[plugins.probe]\n{}\n[plugins.probe.grants.http]\nallow = [\n  \"https://ok.example.com\",\n  \"https://bad.example.com/path\",\n]\n",
        plugin_lines("http-probe")
    ));
    assert_all(
        &e,
        &[
            "plugins.probe.grants.http.allow[1]",
            "runcap.toml:9:",
            "path",
            "allow entries look like",
        ],
    );
}

#[test]
fn bad_units_and_every_problem_at_once() {
    let e = check_fails(&format!(
        "environment = \"Dev Env\"\n[plugins.probe]\n{}limits = {{ memory = \"lots\", time = \"soon\" }}\n",
        plugin_lines("http-probe")
    ));
    assert_all(
        &e,
        &[
            "environment",
            "not a valid environment name",
            "limits.memory",
            "not a size",
            "limits.time",
            "not a duration",
            "3 problems",
        ],
    );
}

#[test]
fn params_are_checked_by_the_plugin_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"dev\"\n[plugins.probe]\n{}grants.http = {{ allow = [\"https://example.com\"] }}\n[runbooks.r]\nsteps = [\n  {{ uses = \"probe\", with = {{ url = \"https://example.com\", timeout = \"sometime\" }} }},\n]\n",
            plugin_lines("http-probe")
        ),
    );
    let e = sb.run(&["check"]).expect_code(2).stderr();
    assert_all(
        &e,
        &["runbooks.r.steps[0].with", "timeout", "runcap.toml:8:"],
    );
}

#[test]
fn missing_manifest_and_unknown_runbook() {
    let sb = Sandbox::new();
    let e = sb
        .run(&["check", "--env", "missing.toml"])
        .expect_code(2)
        .stderr();
    assert_all(&e, &["missing.toml", "cannot read"]);
    sb.write("runcap.toml", "environment = \"dev\"\n");
    let e = sb.run(&["run", "nope"]).expect_code(2).stderr();
    assert_all(&e, &["no runbook `nope`"]);
}

#[test]
fn oversized_and_invalid_plugin_files_are_refused_without_compiling() {
    let sb = Sandbox::new();
    // A file over the 64 MiB limit is refused before it is even hashed.
    let big = sb.path().join("big.wasm");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(65 << 20).unwrap();
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"dev\"\n[plugins.big]\npath = \"big.wasm\"\nsha256 = \"{}\"\n",
            "00".repeat(32)
        ),
    );
    let e = sb.run(&["check"]).expect_code(2).stderr();
    assert_all(
        &e,
        &["plugins.big.path", "more than the 64.0 MiB runcap accepts"],
    );

    // Garbage with a correct pin fails to compile with a clear message, and nothing else breaks.
    sb.write("junk.wasm", "\0asm this is not a component");
    let digest = sha256_file(&sb.path().join("junk.wasm"));
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"dev\"\n[plugins.junk]\npath = \"junk.wasm\"\nsha256 = \"{digest}\"\n[plugins.noop]\n{}",
            plugin_lines("noop")
        ),
    );
    let out = sb.run(&["check"]).expect_code(2);
    assert_all(&out.stderr(), &["junk.wasm is not a valid component"]);
    assert!(out.stdout().contains("✔ plugin noop"), "{}", out.stdout());
}

/// A runbook of `n` steps, each templating the step before it and carrying a rollback:
/// the shape that made checking quadratic.
fn long_runbook(n: usize) -> String {
    let mut text = format!(
        "environment = \"dev\"\n[plugins.noop]\n{}\n[runbooks.long]\n",
        plugin_lines("noop")
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[runbooks.long.steps]]\nid = \"s{i}\"\nuses = \"noop\"\n"
        ));
        if i > 0 {
            text.push_str(&format!(
                "with = {{ after = \"{{{{ steps.s{}.status }}}}\" }}\n",
                i - 1
            ));
        }
        text.push_str("rollback = { uses = \"noop\" }\n");
    }
    text
}

#[test]
fn the_longest_runbook_allowed_checks_and_one_step_more_is_refused() {
    let sb = Sandbox::new();
    sb.write("runcap.toml", &long_runbook(10_000));
    sb.run(&["check"]).expect_code(0);
    sb.run(&["config"]).expect_code(0);

    let e = check_fails(&long_runbook(10_001));
    assert_all(
        &e,
        &[
            "runbooks.long.steps",
            "runcap.toml:",
            "declares 10001 steps and handlers; at most 10000 are allowed",
            "split it into several runbooks",
        ],
    );
}
