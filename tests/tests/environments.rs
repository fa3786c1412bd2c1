//! Environments and security review: manifests that extend a base, overlays that
//! narrow or widen grants, capability diffs, the lockfile gate and policy ceilings.

use std::path::Path;

use runcap_e2e::{Sandbox, plugin_lines, plugin_wasm, sha256_file};

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in:\n{text}"))
        + 1
}

fn assert_all(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "`{n}` missing from:\n{haystack}");
    }
}

/// A base with an http probe, a service-control plugin, a service and a secret.
fn base() -> String {
    format!(
        r#"environment = "base"

[services.api]
driver = "command"
status = "true"
restart = "true"

[secrets.token]
file = "token.txt"

[plugins.probe]
{probe}limits = {{ memory = "16MiB", time = "10s" }}

[plugins.probe.grants.http]
allow = ["https://*.internal", "https://status.example.com"]
addresses = ["10.20.0.0/16"]

[plugins.control]
{control}
[plugins.control.grants]
http = {{ allow = ["https://api.internal"] }}
services = {{ api = ["status", "restart"] }}

[runbooks.health]
steps = [{{ id = "probe", uses = "probe", with = {{ url = "https://api.internal/health" }} }}]
"#,
        probe = plugin_lines("http-probe"),
        control = plugin_lines("service-control"),
    )
}

/// Writes a base manifest and the secret file it names.
fn write_base(sb: &Sandbox, text: &str) {
    sb.write("token.txt", "a token of some length");
    sb.write("base.toml", text);
}

fn sandbox_with_base() -> Sandbox {
    let sb = Sandbox::new();
    write_base(&sb, &base());
    sb
}

#[test]
fn an_overlay_narrows_and_config_shows_where_each_value_comes_from() {
    let sb = sandbox_with_base();
    let prod = r#"extends = "base.toml"
environment = "prod"

[plugins.probe.grants.http]
allow = ["https://api.internal"]

[plugins.probe.limits]
time = "5s"

[plugins.control.grants.services]
api = ["status"]
"#;
    sb.write("prod.toml", prod);
    let out = sb.run(&["check", "--env", "prod.toml"]).expect_code(0);
    assert_all(&out.stdout(), &["environment `prod` is valid"]);

    let text = sb
        .run(&["config", "--env", "prod.toml"])
        .expect_code(0)
        .stdout();
    let base = base();
    let allow = text
        .lines()
        .find(|l| l.starts_with("plugins.probe.grants.http.allow = "))
        .unwrap_or_else(|| panic!("no allow line in:\n{text}"));
    assert!(allow.contains(r#"["https://api.internal"]"#), "{allow}");
    assert!(
        allow.ends_with(&format!("# prod.toml:{}", line_of(prod, "allow ="))),
        "{allow}"
    );
    let sha = text
        .lines()
        .find(|l| l.starts_with("plugins.probe.sha256 = "))
        .unwrap();
    assert!(
        sha.ends_with(&format!("# base.toml:{}", line_of(&base, "sha256"))),
        "{sha}"
    );
    let time = text
        .lines()
        .find(|l| l.starts_with("plugins.probe.limits.time = "))
        .unwrap();
    assert!(
        time.contains("\"5s\"") && time.contains("# prod.toml:8"),
        "{time}"
    );

    let j = sb
        .run(&["config", "--env", "prod.toml", "--json"])
        .expect_code(0)
        .json();
    let values = j["values"].as_array().unwrap();
    let memory = values
        .iter()
        .find(|v| v["key"] == "plugins.probe.limits.memory")
        .unwrap();
    assert_eq!(memory["value"], "16MiB");
    assert!(memory["file"].as_str().unwrap().ends_with("base.toml"));
    assert_eq!(memory["line"], line_of(&base, "memory = \"16MiB\""));
}

#[test]
fn widening_needs_an_explicit_widen_entry() {
    let sb = sandbox_with_base();
    let overlay = |widen: &str| {
        format!(
            r#"extends = "base.toml"
environment = "prod"
{widen}
[plugins.probe.grants.http]
allow = ["https://api.internal", "https://*.example.com"]

[plugins.probe.limits]
memory = "128MiB"

[plugins.control.grants.services]
api = ["status", "restart", "stop"]
"#
        )
    };
    let prod = overlay("");
    sb.write("prod.toml", &prod);
    let e = sb
        .run(&["check", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    let base = base();
    assert_all(
        &e,
        &[
            "plugins.probe.grants.http.allow[1]: allows `https://*.example.com`, which matches more than `https://status.example.com`: wider than the base grants",
            &format!("base.toml:{}", line_of(&base, "allow =")),
            &format!("prod.toml:{}:", line_of(&prod, "allow =")),
            "widen = [\"plugins.probe.grants.http\"]",
            "plugins.probe.limits.memory: memory 16MiB → 128MiB",
            "widen = [\"plugins.probe.limits.memory\"]",
            "plugins.control.grants.services.api[2]: may `stop` service `api`",
            &format!("prod.toml:{}:", line_of(&prod, "api = [")),
            "3 problems found",
        ],
    );

    // Saying so makes it valid; each entry must be needed.
    sb.write(
        "prod.toml",
        &overlay(
            "widen = [\"plugins.probe.grants.http\", \"plugins.probe.limits\", \"plugins.control.grants.services\"]\n",
        ),
    );
    sb.run(&["check", "--env", "prod.toml"]).expect_code(0);
    let prod = overlay(
        "widen = [\"plugins.probe\", \"plugins.control.grants.services\", \"plugins.control.grants.http\"]\n",
    );
    sb.write("prod.toml", &prod);
    let e = sb
        .run(&["check", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    assert_all(
        &e,
        &[
            "`plugins.control.grants.http` widens nothing",
            &format!("prod.toml:{}:", line_of(&prod, "widen =")),
            "1 problem found",
        ],
    );

    // Removing a grant narrows; removing a limit restores a larger default, which widens.
    sb.write(
        "prod.toml",
        "extends = \"base.toml\"\nenvironment = \"prod\"\nremove = [\"plugins.control.grants.services\", \"plugins.probe.limits\"]\n",
    );
    let e = sb
        .run(&["check", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    assert_all(
        &e,
        &[
            "plugins.probe.limits.memory: memory 16MiB → 64MiB",
            "plugins.probe.limits.time: time 10s → 30s",
            "prod.toml:3:",
        ],
    );
    assert!(!e.contains("error: plugins.control"), "{e}");
}

#[test]
fn a_cycle_of_extends_is_reported_with_the_chain() {
    let sb = Sandbox::new();
    sb.write("a.toml", "extends = \"b.toml\"\nenvironment = \"a\"\n");
    sb.write("b.toml", "environment = \"b\"\nextends = \"c.toml\"\n");
    sb.write("c.toml", "\nextends = \"a.toml\"\n");
    let e = sb
        .run(&["check", "--env", "a.toml"])
        .expect_code(2)
        .stderr();
    assert_all(
        &e,
        &[
            "closes a cycle",
            "a.toml → ",
            "b.toml → ",
            "c.toml → ",
            "c.toml:2:",
        ],
    );
    // `config` says the same.
    let e = sb
        .run(&["config", "--env", "a.toml"])
        .expect_code(2)
        .stderr();
    assert!(e.contains("closes a cycle"), "{e}");
}

#[test]
fn errors_name_the_file_of_the_chain_that_wrote_the_value() {
    let sb = Sandbox::new();
    let base = base().replace("limits = {", "limts = {");
    write_base(&sb, &base);
    sb.write(
        "prod.toml",
        "extends = \"base.toml\"\nenvironment = \"prod\"\n",
    );
    let e = sb
        .run(&["check", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    assert_all(
        &e,
        &[
            "unknown field `limts`",
            &format!("base.toml:{}:", line_of(&base, "limts")),
            "did you mean `limits`?",
        ],
    );

    write_base(&sb, &self::base());
    let prod = "extends = \"base.toml\"\nenvironment = \"prod\"\n\n[plugins.control.grants.services]\napi = [\"status\", \"reboot\"]\n";
    sb.write("prod.toml", prod);
    let e = sb
        .run(&["check", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    assert_all(&e, &["`reboot` is not a verb", "prod.toml:5:"]);

    // A relative path in a base resolves against the base's own directory.
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("shared/plugins")).unwrap();
    std::fs::copy(
        plugin_wasm("noop"),
        sb.path().join("shared/plugins/noop.wasm"),
    )
    .unwrap();
    sb.write(
        "shared/base.toml",
        &format!(
            "environment = \"base\"\n[plugins.noop]\npath = \"plugins/noop.wasm\"\nsha256 = \"{}\"\n",
            sha256_file(&plugin_wasm("noop"))
        ),
    );
    sb.write(
        "envs/prod.toml",
        "extends = \"../shared/base.toml\"\nenvironment = \"prod\"\n",
    );
    sb.run(&["check", "--env", "envs/prod.toml"]).expect_code(0);
}

/// Writes prod.toml (which extends base.toml) and locks it.
fn locked_prod(sb: &Sandbox) {
    sb.write(
        "prod.toml",
        "extends = \"base.toml\"\nenvironment = \"prod\"\n\n[plugins.probe.grants.http]\nallow = [\"https://api.internal\"]\n",
    );
    let out = sb.run(&["lock", "--env", "prod.toml"]).expect_code(0);
    assert_all(&out.stdout(), &["locked environment prod (2 plugins)"]);
    let lock = std::fs::read_to_string(sb.path().join("runcap.lock")).unwrap();
    assert_all(
        &lock,
        &[
            "[environments.prod]",
            "manifest = \"prod.toml\"",
            "extends = [\"base.toml\"]",
            "[environments.prod.plugins.probe.grants.http]",
            "allow = [\"https://api.internal\"]",
            "imports = [\"runcap:plugin/http\"]",
            "[environments.prod.services.api]",
        ],
    );
    sb.run(&["check", "--env", "prod.toml", "--locked"])
        .expect_code(0);
    sb.run(&["caps", "--env", "prod.toml", "--diff", "runcap.lock"])
        .expect_code(0);
}

#[test]
fn diff_names_a_wider_host_a_new_verb_a_new_secret_and_a_changed_digest() {
    let sb = sandbox_with_base();
    locked_prod(&sb);

    // Widen the host pattern, add a service verb and a secret, swap a plugin's code.
    let swapped = sb.path().join("control.wasm");
    std::fs::copy(plugin_wasm("noop"), &swapped).unwrap();
    let base = base()
        .replace(
            &plugin_lines("service-control"),
            &format!(
                "path = {:?}\nsha256 = \"{}\"\n",
                swapped.display().to_string(),
                sha256_file(&swapped)
            ),
        )
        .replace(
            "services = { api = [\"status\", \"restart\"] }",
            "services = { api = [\"status\", \"restart\", \"stop\"] }\nsecrets = [\"token\"]",
        );
    write_base(&sb, &base);
    let prod = "extends = \"base.toml\"\nenvironment = \"prod\"\n\n[plugins.probe.grants.http]\nallow = [\"https://*.internal\"]\n";
    sb.write("prod.toml", prod);

    let out = sb
        .run(&["caps", "--env", "prod.toml", "--diff", "runcap.lock"])
        .expect_code(1);
    let text = out.stdout();
    assert_all(
        &text,
        &[
            "prod (prod.toml) against runcap.lock",
            "widened  plugins.probe.grants.http.allow[0]: allows `https://*.internal`, which matches more than `https://api.internal`  (prod.toml:5)",
            &format!(
                "added    plugins.control.grants.services.api[2]: may `stop` service `api`  (base.toml:{})",
                line_of(&base, "services = {")
            ),
            "added    plugins.control.grants.secrets: grants secrets (not granted before)",
            "changed  plugins.control.sha256: different code: sha256 ",
            "note     plugins.control: no longer imports `runcap:plugin/services`",
            "widen what prod may do",
        ],
    );

    let j = sb
        .run(&[
            "caps",
            "--env",
            "prod.toml",
            "--diff",
            "runcap.lock",
            "--json",
        ])
        .expect_code(1)
        .json();
    assert_eq!(j["widened"], true);
    let changes = j["changes"].as_array().unwrap();
    let allow = changes
        .iter()
        .find(|c| c["key"] == "plugins.probe.grants.http.allow[0]")
        .unwrap();
    assert_eq!(allow["kind"], "widened");
    assert_eq!(allow["widens"], true);
    assert_eq!(allow["at"], "prod.toml:5");

    // Narrowing alone passes the gate.
    write_base(&sb, &self::base());
    sb.write(
        "prod.toml",
        "extends = \"base.toml\"\nenvironment = \"prod\"\nremove = [\"plugins.control\"]\n\n[plugins.probe.grants.http]\nallow = [\"https://api.internal\"]\n",
    );
    let out = sb
        .run(&["caps", "--env", "prod.toml", "--diff", "runcap.lock"])
        .expect_code(0);
    assert_all(
        &out.stdout(),
        &[
            "removed  plugins.control: plugin `control` is gone",
            "none widens",
        ],
    );

    // Two environments: prod against a staging that grants more.
    sb.write(
        "staging.toml",
        "extends = \"base.toml\"\nenvironment = \"staging\"\n",
    );
    let out = sb
        .run(&["caps", "--env", "staging.toml", "--diff", "prod.toml"])
        .expect_code(1);
    assert_all(
        &out.stdout(),
        &[
            "staging (staging.toml) against prod (prod.toml)",
            "added    plugins.control: new plugin `control`",
            "plugins.probe.grants.http.allow[0]: allows `https://*.internal`",
        ],
    );
}

#[test]
fn the_lockfile_catches_a_swapped_plugin_binary_with_the_same_name() {
    let sb = Sandbox::new();
    let wasm = sb.path().join("plugins/probe.wasm");
    std::fs::create_dir_all(wasm.parent().unwrap()).unwrap();
    std::fs::copy(plugin_wasm("http-probe"), &wasm).unwrap();
    let manifest = format!(
        "environment = \"prod\"\n\n[plugins.probe]\npath = \"plugins/probe.wasm\"\nsha256 = \"{}\"\ngrants.http = {{ allow = [\"https://api.internal\"] }}\n",
        sha256_file(&wasm)
    );
    sb.write("runcap.toml", &manifest);
    sb.run(&["lock"]).expect_code(0);
    sb.run(&["check", "--locked"]).expect_code(0);

    // Someone replaces the file and re-pins: the manifest is consistent again, the
    // lock is not.
    std::fs::copy(plugin_wasm("noop"), &wasm).unwrap();
    sb.run(&["check"]).expect_code(2);
    let pin = sb.run(&["pin"]).expect_code(0).stdout();
    assert!(pin.contains("plugins.probe: "), "{pin}");
    let out = sb.run(&["check", "--locked"]);
    let e = out.stderr();
    assert_eq!(out.code(), 2, "{}\n{e}", out.stdout());
    let old = sha256_file(&plugin_wasm("http-probe"));
    let new = sha256_file(&wasm);
    assert_all(
        &e,
        &[
            &format!(
                "plugins.probe.sha256: different code: sha256 {}… → {}… (changed since runcap.lock was written)",
                &old[..12],
                &new[..12]
            ),
            "--> runcap.toml:5",
            "run `runcap lock --env runcap.toml`",
        ],
    );

    // Approving it is re-locking, which prints what was approved.
    let out = sb.run(&["lock"]).expect_code(0).stdout();
    assert!(
        out.contains("plugins.probe.sha256: different code"),
        "{out}"
    );
    sb.run(&["check", "--locked"]).expect_code(0);
}

#[test]
fn a_policy_violation_is_reported_with_file_and_line() {
    let sb = sandbox_with_base();
    let policy = r#"[environments.prod]
deny = ["secrets"]

[environments.prod.limits]
memory = "8MiB"

[environments.prod.grants.http]
allow = ["https://*.internal"]
addresses = ["10.0.0.0/8"]

[environments.prod.grants.services]
"*" = ["status"]

[environments.staging.grants.http]
allow = []
"#;
    sb.write("policy.toml", policy);
    let prod = "extends = \"base.toml\"\nenvironment = \"prod\"\nwiden = [\"plugins.probe.grants.secrets\"]\n[plugins.probe.grants]\nsecrets = [\"token\"]\n";
    sb.write("prod.toml", prod);
    let out = sb.run(&["check", "--env", "prod.toml", "--policy", "policy.toml"]);
    let e = out.stderr();
    assert_eq!(out.code(), 2, "{}\n{e}", out.stdout());
    let base = base();
    assert_all(
        &e,
        &[
            // A grant written in the base, located there.
            "plugins.probe.grants.http.allow[1]: allows `https://status.example.com`: above the prod ceiling (policy.toml:7)",
            &format!("base.toml:{}:", line_of(&base, "allow =")),
            "narrow it, or raise the ceiling in policy.toml",
            // A grant written in the overlay, located there.
            "plugins.probe.grants.secrets: grants secrets, which the prod policy denies (policy.toml:2)",
            "prod.toml:5:",
            &format!(
                "plugins.control.grants.services.api[1]: may `restart` service `api`: above the prod ceiling (policy.toml:11)\n  --> {}",
                sb.path().join("base.toml").display()
            ),
            "plugins.probe.limits.memory: memory 16MiB is above the prod ceiling of 8MiB (policy.toml:5)",
            "plugins.control.limits.memory: memory 64MiB (the default) is above the prod ceiling of 8MiB",
            "5 problems found",
        ],
    );
    assert!(!e.contains("staging"), "{e}");

    // Named by the manifest, the policy holds for every command, not only check.
    sb.write("prod.toml", &format!("policy = \"policy.toml\"\n{prod}"));
    let e = sb
        .run(&["caps", "--env", "prod.toml"])
        .expect_code(2)
        .stderr();
    assert!(e.contains("above the prod ceiling (policy.toml:7)"), "{e}");

    // A policy with a typo says where.
    sb.write("bad.toml", "[environments.prod]\ndeny = [\"secret\"]\n");
    let e = sb
        .run(&["check", "--env", "base.toml", "--policy", "bad.toml"])
        .expect_code(2)
        .stderr();
    assert!(
        e.contains("`secret` is not a capability") && e.contains("bad.toml:2:"),
        "{e}"
    );
}

#[test]
fn pin_edits_the_file_of_the_chain_that_writes_the_digest() {
    let sb = Sandbox::new();
    let stale = base().replace(&sha256_file(&plugin_wasm("http-probe")), &"0".repeat(64));
    write_base(&sb, &stale);
    let prod = "extends = \"base.toml\"\nenvironment = \"prod\"\n";
    sb.write("prod.toml", prod);
    sb.run(&["check", "--env", "prod.toml"]).expect_code(2);
    let out = sb
        .run(&["pin", "--env", "prod.toml"])
        .expect_code(0)
        .stdout();
    assert!(out.contains("(in base.toml)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("prod.toml")).unwrap(),
        prod
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("base.toml")).unwrap(),
        base()
    );
    sb.run(&["check", "--env", "prod.toml"]).expect_code(0);
}

#[test]
fn pin_adds_a_digest_that_was_never_written() {
    let sb = Sandbox::new();
    let probe = plugin_wasm("http-probe");
    let path = format!("{:?}", probe.display().to_string());
    // One plugin inline, one as a table, neither with a digest.
    sb.write(
        "runcap.toml",
        &format!(
            r#"environment = "pin"
plugins.inline = {{ path = {path}, grants = {{ http = {{ allow = ["https://status.example.com"] }} }} }}

[plugins.table]
path = {path}
grants.http.allow = ["https://status.example.com"]

[runbooks.health]
steps = [{{ id = "a", uses = "inline", with = {{ url = "https://status.example.com/" }} }}]
"#
        ),
    );
    sb.run(&["check"]).expect_code(2);
    let out = sb.run(&["pin"]).expect_code(0).stdout();
    assert_all(
        &out,
        &[
            "plugins.inline: sha256 added",
            "plugins.table: sha256 added",
        ],
    );
    let digest = sha256_file(&probe);
    let pinned = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    assert!(
        pinned.contains(&format!("{{ path = {path}, sha256 = \"{digest}\", grants")),
        "{pinned}"
    );
    assert!(
        pinned.contains(&format!("path = {path}\nsha256 = \"{digest}\"\ngrants")),
        "{pinned}"
    );
    sb.run(&["check"]).expect_code(0);
    // Pinning again changes nothing.
    let out = sb.run(&["pin"]).expect_code(0).stdout();
    assert_all(
        &out,
        &["plugins.inline: unchanged", "plugins.table: unchanged"],
    );
}

/// Copies examples/environments into the sandbox, pointing its relative paths at
/// this checkout's build.
fn copy_example(sb: &Sandbox) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = std::fs::canonicalize(root).unwrap();
    for entry in std::fs::read_dir(root.join("examples/environments")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"../../", &format!("\"{}/", root.display()));
        sb.write(&name, &text);
    }
}

#[test]
fn the_example_environments_check_and_a_widened_prod_fails_both_gates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/environments");
    let sb = Sandbox::new();
    let state = sb.path().join("state");
    let state = state.to_str().unwrap();
    for env in ["base", "dev", "prod"] {
        let m = root.join(format!("{env}.toml"));
        sb.run(&["check", "--env", m.to_str().unwrap(), "--state-dir", state])
            .expect_code(0);
    }
    let prod = root.join("prod.toml");
    let prod = prod.to_str().unwrap();
    let out = sb
        .run(&["check", "--env", prod, "--locked", "--state-dir", state])
        .expect_code(0);
    assert_all(
        &out.stdout(),
        &[
            "matches",
            "runcap.lock (environment prod)",
            "within the ceilings of",
        ],
    );
    let md = sb
        .run(&["caps", "--env", prod, "--markdown", "--state-dir", state])
        .expect_code(0)
        .stdout();
    assert_all(
        &md,
        &[
            "# Capability review: environment `prod`",
            "| extends |",
            "| policy |",
            "## Summary",
            "| `http-probe` |",
            "## `service-control`",
            "| services | service api: status, restart |",
            "## Services",
            "systemctl restart api",
            "## Since the last approval",
            "nothing changed since it was locked",
        ],
    );

    // Widen one grant in a copy of prod: both gates fail and name it.
    let sb = Sandbox::new();
    copy_example(&sb);
    let text = std::fs::read_to_string(sb.path().join("prod.toml")).unwrap();
    let widened = text.replace(
        "allow = [\"https://api.internal\"]",
        "allow = [\"https://api.internal\", \"https://metrics.internal\"]",
    );
    assert_ne!(text, widened);
    sb.write("prod.toml", &widened);
    let line = line_of(&widened, "metrics.internal");
    let out = sb
        .run(&["caps", "--env", "prod.toml", "--diff", "runcap.lock"])
        .expect_code(1);
    assert_all(
        &out.stdout(),
        &[&format!(
            "added    plugins.http-probe.grants.http.allow[1]: allows `https://metrics.internal`  (prod.toml:{line})"
        )],
    );
    let out = sb.run(&["check", "--env", "prod.toml", "--locked"]);
    assert_eq!(out.code(), 2, "{}\n{}", out.stdout(), out.stderr());
    assert_all(
        &out.stderr(),
        &[
            "plugins.http-probe.grants.http.allow[1]: allows `https://metrics.internal` (added since runcap.lock was written)",
            &format!("--> prod.toml:{line}"),
            "1 problem found",
        ],
    );
    // The markdown review shows it too.
    let md = sb
        .run(&["caps", "--env", "prod.toml", "--markdown"])
        .expect_code(0)
        .stdout();
    assert!(
        md.contains("| ⚠ added | `plugins.http-probe.grants.http.allow[1]`"),
        "{md}"
    );
}

#[test]
fn directories_are_diffed_locked_and_held_to_a_policy_ceiling() {
    let sb = sandbox_with_base();
    for d in ["logs", "backups/db", "outside"] {
        std::fs::create_dir_all(sb.path().join(d)).unwrap();
    }
    let prod = "extends = \"base.toml\"\nenvironment = \"prod\"\nwiden = [\"plugins.probe.grants.fs\"]\n\n[plugins.probe.grants.fs]\nlogs = { path = \"logs\" }\ndump = { path = \"backups/db\", mode = \"rw\" }\n";
    sb.write("prod.toml", prod);
    // Read anything, write only below backups/ (relative to the policy file).
    sb.write(
        "policy.toml",
        "[environments.prod.grants.fs]\nany = { path = \"/\", mode = \"ro\" }\nbackups = { path = \"backups\", mode = \"rw\" }\n",
    );
    sb.run(&["check", "--env", "prod.toml", "--policy", "policy.toml"])
        .expect_code(0);
    let md = sb
        .run(&["caps", "--env", "prod.toml", "--markdown"])
        .expect_code(0)
        .stdout();
    let root = sb.path().canonicalize().unwrap();
    assert_all(
        &md,
        &[
            &format!("/dump = {} (read-write)", root.join("backups/db").display()),
            &format!("/logs = {} (read-only)", root.join("logs").display()),
        ],
    );
    sb.run(&["lock", "--env", "prod.toml"]).expect_code(0);

    // A new read-write directory outside backups/, and logs/ made writable.
    let wider = prod.replace(
        "logs = { path = \"logs\" }",
        "logs = { path = \"logs\", mode = \"rw\" }\nscratch = { path = \"backups/../outside\", mode = \"rw\" }",
    );
    sb.write("prod.toml", &wider);
    let out = sb.run(&["check", "--env", "prod.toml", "--policy", "policy.toml"]);
    let e = out.stderr();
    assert_eq!(out.code(), 2, "{e}");
    assert_all(
        &e,
        &[
            &format!(
                "plugins.probe.grants.fs.logs: may use directory {} as /logs (rw): above the prod ceiling (policy.toml:1)",
                root.join("logs").display()
            ),
            &format!(
                "plugins.probe.grants.fs.scratch: may use directory {} as /scratch (rw)",
                root.join("outside").display()
            ),
            &format!("prod.toml:{}:", line_of(&wider, "scratch =")),
            "2 problems found",
        ],
    );
    assert!(!e.contains("fs.dump"), "{e}");
    let out = sb
        .run(&["caps", "--env", "prod.toml", "--diff", "runcap.lock"])
        .expect_code(1)
        .stdout();
    assert_all(
        &out,
        &[
            "widened  plugins.probe.grants.fs.logs.mode: /logs is now rw (was ro)",
            "added    plugins.probe.grants.fs.scratch: may use directory backups/../outside as /scratch (rw)",
        ],
    );
    let e = sb
        .run(&["check", "--env", "prod.toml", "--locked"])
        .expect_code(2)
        .stderr();
    assert!(e.contains("plugins.probe.grants.fs.scratch"), "{e}");
}

#[test]
fn an_overlay_elsewhere_cannot_repoint_a_directory_with_the_same_words() {
    // The base grants shared/logs; an overlay in envs/ that writes `path = "logs"` means
    // envs/logs, a different directory, and needs approval. Narrowing to a subdirectory
    // written from the overlay's own directory does not.
    let sb = Sandbox::new();
    for d in ["shared/logs/api", "envs/logs"] {
        std::fs::create_dir_all(sb.path().join(d)).unwrap();
    }
    sb.write(
        "shared/base.toml",
        &format!(
            "environment = \"base\"\n[plugins.noop]\n{}grants.fs = {{ logs = {{ path = \"logs\" }} }}\n",
            plugin_lines("noop")
        ),
    );
    let prod = "extends = \"../shared/base.toml\"\nenvironment = \"prod\"\n[plugins.noop.grants.fs]\nlogs = { path = \"logs\" }\n";
    sb.write("envs/prod.toml", prod);
    let e = sb
        .run(&["check", "--env", "envs/prod.toml"])
        .expect_code(2)
        .stderr();
    let root = sb.path().canonicalize().unwrap();
    assert_all(
        &e,
        &[
            &format!(
                "plugins.noop.grants.fs.logs.path: /logs is now {} (was {}): wider than the base grants",
                root.join("envs/logs").display(),
                root.join("shared/logs").display()
            ),
            "prod.toml:4:",
            "widen = [\"plugins.noop.grants.fs\"]",
        ],
    );
    sb.write(
        "envs/prod.toml",
        &prod.replace("\"logs\" }", "\"../shared/logs/api\" }"),
    );
    sb.run(&["check", "--env", "envs/prod.toml"]).expect_code(0);
}
