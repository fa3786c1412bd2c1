//! What an http grant unlocks, tried as an attacker would against real listeners: an
//! allow entry naming a non-public address unlocks that entry's own port only, never
//! what a wildcard beside it matches, directly, by name or through a redirect; and a
//! request follows at most the grant's ceiling of redirects, whatever the plugin asks.

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

fn manifest(allow: &[String], extra: &str, steps: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"
environment = "test"

[plugins.probe]
{probe}
grants.http = {{ allow = [{allow}]{extra} }}

[runbooks.r]
steps = [
{steps}
]
"#,
        probe = plugin_lines("http-probe"),
        allow = allow.join(", "),
    )
}

fn probe(id: &str, url: &str, extra: &str) -> String {
    format!(
        "  {{ id = \"{id}\", uses = \"probe\", on_failure = \"continue\", with = {{ url = \"{url}\"{extra} }} }},\n"
    )
}

/// Runs `r` and returns the JSON report.
fn run(sb: &Sandbox) -> serde_json::Value {
    let out = sb.run(&["run", "r", "--json"]);
    out.json()
}

fn denied(r: &serde_json::Value, id: &str) -> String {
    let s = step(r, id);
    assert_eq!(s["status"], "fail", "{id} should be refused: {s:#}");
    s.to_string()
}

/// A host name other than `localhost` that this machine resolves to 127.0.0.1 (from
/// /etc/hosts: the machine's own name, `vm`, …), if it has one.
fn loopback_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let own = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    [own.trim(), "vm", "localhost."]
        .into_iter()
        .filter(|n| !n.is_empty())
        .find(|n| {
            (*n, 80)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST))
        })
        .map(str::to_string)
}

#[test]
fn an_address_entry_does_not_unlock_other_ports_names_or_redirect_targets() {
    let granted = Service::start("127.0.0.1", None);
    let forbidden = Service::start("127.0.0.1", None);
    let g = granted.addr.port();
    let p = forbidden.addr.port();
    let sb = Sandbox::new();
    let to_forbidden = format!("http://127.0.0.1:{p}/health");
    sb.write(
        "runcap.toml",
        &manifest(
            &["http://*:*".into(), format!("http://127.0.0.1:{g}")],
            "",
            &[
                probe("granted", &format!("http://127.0.0.1:{g}/health"), ""),
                probe("direct", &to_forbidden, ""),
                loopback_name()
                    .map(|n| probe("by_name", &format!("http://{n}:{p}/health"), ""))
                    .unwrap_or_default(),
                probe(
                    "redirected",
                    &format!("http://127.0.0.1:{g}/redirect?to={to_forbidden}"),
                    ", follow_redirects = 3",
                ),
            ]
            .concat(),
        ),
    );
    let r = run(&sb);
    assert_eq!(step(&r, "granted")["status"], "ok", "{r:#}");
    let d = denied(&r, "direct");
    assert!(d.contains("only a wildcard entry matches"), "{d}");
    assert!(d.contains(&format!("http://127.0.0.1:{p}")), "{d}");
    match loopback_name() {
        Some(_) => {
            let d = denied(&r, "by_name");
            assert!(
                d.contains("resolves to 127.0.0.1, a loopback address"),
                "{d}"
            );
        }
        None => eprintln!(
            "no name other than localhost resolves to 127.0.0.1 here; the resolver's check is covered by the unit tests"
        ),
    }
    let d = denied(&r, "redirected");
    assert!(d.contains("redirect from"), "{d}");
    assert_eq!(
        forbidden
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the forbidden listener was reached"
    );
}

#[test]
fn localhost_is_reached_only_through_an_entry_naming_it() {
    let granted = Service::start("127.0.0.1", None);
    let forbidden = Service::start("127.0.0.1", None);
    let g = granted.addr.port();
    let p = forbidden.addr.port();
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &["http://*:*".into(), format!("http://localhost:{g}")],
            "",
            &[
                probe("granted", &format!("http://localhost:{g}/health"), ""),
                probe("other_port", &format!("http://localhost:{p}/health"), ""),
            ]
            .concat(),
        ),
    );
    let r = run(&sb);
    assert_eq!(step(&r, "granted")["status"], "ok", "{r:#}");
    let d = denied(&r, "other_port");
    assert!(
        d.contains("loopback, which only a wildcard entry matches"),
        "{d}"
    );
    assert_eq!(
        forbidden
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// A URL that redirects `n` times on `svc` before landing on `/health`.
fn chain(svc: &Service, n: usize) -> String {
    let mut url = svc.url("/health");
    for _ in 0..n {
        let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
        url = svc.url(&format!("/redirect?to={encoded}"));
    }
    url
}

#[test]
fn redirects_stop_at_the_grant_ceiling_whatever_the_plugin_asks() {
    let svc = Service::start("127.0.0.1", None);
    let allow = [format!("http://127.0.0.1:{}", svc.addr.port())];
    let steps = [
        probe("ten", &chain(&svc, 10), ", follow_redirects = 255"),
        probe("eleven", &chain(&svc, 11), ", follow_redirects = 255"),
    ]
    .concat();
    let sb = Sandbox::new();
    sb.write("runcap.toml", &manifest(&allow, "", &steps));
    let r = run(&sb);
    assert_eq!(step(&r, "ten")["status"], "ok", "{r:#}");
    let s = step(&r, "eleven");
    assert_eq!(s["status"], "fail", "{s:#}");
    assert_eq!(
        s["details"]["status"], 302,
        "the 11th redirect is answered, not followed: {s:#}"
    );

    // The grant may raise (or lower) the ceiling.
    sb.write(
        "runcap.toml",
        &manifest(&allow, ", max_redirects = 20", &steps),
    );
    let r = run(&sb);
    assert_eq!(step(&r, "eleven")["status"], "ok", "{r:#}");
    sb.write(
        "runcap.toml",
        &manifest(&allow, ", max_redirects = 0", &steps),
    );
    let r = run(&sb);
    assert_eq!(step(&r, "ten")["details"]["status"], 302, "{r:#}");
}

#[test]
fn a_redirect_to_another_scheme_says_it_came_from_a_redirect() {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &manifest(
            &[format!("http://127.0.0.1:{}", svc.addr.port())],
            "",
            &probe(
                "ftp",
                &svc.url("/redirect?to=ftp://127.0.0.1/file"),
                ", follow_redirects = 3",
            ),
        ),
    );
    let r = run(&sb);
    let d = denied(&r, "ftp");
    assert!(d.contains("redirect from"), "{d}");
    assert!(d.contains("ftp://127.0.0.1/file"), "{d}");
}

#[test]
fn a_file_that_is_not_a_component_is_a_configuration_error_in_one_line() {
    let sb = Sandbox::new();
    sb.write("text.wasm", "hello, this is not WebAssembly");
    std::fs::write(sb.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let digest = |f: &str| runcap_e2e::sha256_file(&sb.path().join(f));
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"
[plugins.text]
path = "text.wasm"
sha256 = "{}"
[plugins.core]
path = "core.wasm"
sha256 = "{}"
[runbooks.r]
steps = [{{ id = "a", uses = "text", on_failure = "continue" }}, {{ id = "b", uses = "core" }}]
"#,
            digest("text.wasm"),
            digest("core.wasm")
        ),
    );
    let run = sb.run(&["run", "r"]).expect_code(2);
    let (out, err) = (run.stdout(), run.stderr());
    assert!(
        out.contains("it is not WebAssembly (it does not start with the `\\0asm` magic bytes)"),
        "{out}"
    );
    assert!(
        out.contains("it is a core WebAssembly module, not a component"),
        "{out}"
    );
    assert!(
        err.contains("error: plugin core, text could not be loaded"),
        "{err}"
    );
    let check = sb.run(&["check"]).expect_code(2).stderr();
    for line in check.lines().filter(|l| l.contains(".wasm")) {
        assert!(!line.contains("0x"), "a byte dump: {check}");
    }
    assert_eq!(
        check.lines().filter(|l| l.starts_with("error:")).count(),
        2,
        "{check}"
    );
}

#[test]
fn a_secret_rotated_during_a_run_is_never_handed_out_unredacted() {
    let svc = Service::start("127.0.0.1", None);
    svc.state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let sb = Sandbox::new();
    let (before, after) = ("rotation-before-4f8a1c", "rotation-after-9d3e77");
    sb.write("key.txt", before);
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.key]
file = "key.txt"

[plugins.sneaky]
{sneaky}
grants.secrets = ["key"]
grants.faults = {{}}

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[runbooks.r]
steps = [
  {{ id = "first", uses = "sneaky", on_failure = "continue", with = {{ mode = "leak-secret", target = "key" }} }},
  {{ id = "gate", uses = "probe", with = {{ url = "{url}" }}, watch = {{ every = "20ms", for = "2m", until = "ok" }} }},
  {{ id = "second", uses = "sneaky", on_failure = "continue", with = {{ mode = "leak-secret", target = "key" }} }},
]
"#,
            sneaky = plugin_lines("sneaky"),
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
            url = svc.url("/health"),
        ),
    );
    let child = sb
        .runcap()
        .args(["run", "r", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run holds its lock once its secrets are read; rotate the secret then.
    let lock = sb.path().join(".runcap/locks/runbook-r.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with("run ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sb.write("key.txt", after);
    svc.state
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(step(&report, "second")["status"], "ok", "{report:#}");
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(sb.path().join(".runcap"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    for value in [before, after] {
        assert!(!printed.contains(value), "`{value}` printed:\n{printed}");
        assert!(!stored.contains(value), "`{value}` stored in .runcap/");
    }
    assert!(
        printed.contains("[SECRET_REDACTED]") || printed.contains("REDACTED"),
        "{printed}"
    );
}

/// `secret` as the hostile plugin's `find` mode takes it: every byte XOR 0xA5, in hex.
fn masked(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| format!("{:02x}", b ^ 0xA5))
        .collect()
}

#[test]
fn an_action_never_sees_what_the_one_before_it_left_in_memory() {
    let secret = format!("residue-{}-of-an-earlier-run", std::process::id());
    let mut steps = format!(
        // The search works: it finds a string of the plugin's own data.
        "  {{ id = \"own\", uses = \"hostile\", with = {{ mode = \"find\", secret = \"{}\" }} }},\n",
        masked("Misbehaves on purpose.")
    );
    for i in 0..3 {
        steps += &format!(
            "  {{ id = \"leave_{i}\", uses = \"hostile\", with = {{ mode = \"leave\", secret = \"{secret}\" }} }},\n  {{ id = \"find_{i}\", uses = \"hostile\", with = {{ mode = \"find\", secret = \"{}\" }} }},\n",
            masked(&secret)
        );
    }
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            "environment = \"test\"\n\n[plugins.hostile]\n{}\n[plugins.hostile.grants.http]\nallow = []\n\n[runbooks.r]\nsteps = [\n{steps}]\n",
            plugin_lines("hostile")
        ),
    );
    let r = run(&sb);
    assert!(
        step(&r, "own")["details"]["found_at"].is_u64(),
        "{:#}",
        step(&r, "own")
    );
    for i in 0..3 {
        assert_eq!(step(&r, &format!("leave_{i}"))["status"], "ok", "{r:#}");
        let found = step(&r, &format!("find_{i}"));
        assert_eq!(found["status"], "ok", "{found:#}");
        assert!(found["details"]["found_at"].is_null(), "{found:#}");
    }
}
