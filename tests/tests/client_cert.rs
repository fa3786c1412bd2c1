//! mTLS: an http grant's client certificate, from files or a secret, presented to a real
//! loopback HTTPS server that refuses clients without one; and the check-time errors
//! for a key that is missing or is not the certificate's.

use runcap_e2e::demo_service::{TestPki, test_pki};
use runcap_e2e::{Sandbox, Service, assert_secret_kept_nowhere, plugin_lines, step};

/// A line from the middle of a PEM key: if it shows up anywhere, key material leaked.
fn key_line(pem: &str) -> String {
    pem.lines()
        .nth(2)
        .expect("a PEM key has body lines")
        .to_string()
}

/// Writes the CA, the client certificate and its key (also as a secret's file).
fn write_pki(sb: &Sandbox, pki: &TestPki) {
    sb.write("ca.pem", &pki.ca_pem);
    sb.write("client.pem", &pki.client_cert_pem);
    sb.write("client.key", &pki.client_key_pem);
    sb.write("secrets/client.key", &pki.client_key_pem);
}

#[test]
fn a_granted_client_certificate_passes_mtls_and_none_fails_naming_the_fix() {
    let pki = test_pki(30).expect("test certificates");
    let svc = Service::start("127.0.0.1", Some(pki.mutual.clone()));
    let sb = Sandbox::new();
    write_pki(&sb, &pki);
    let url = format!("https://localhost:{}/health", svc.addr.port());
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[secrets.client-key]
file = "secrets/client.key"

[plugins.from-files]
{probe}
grants.http = {{ allow = ["https://localhost:*"], ca = ["ca.pem"], client_cert = {{ cert = "client.pem", key = "client.key" }} }}

[plugins.from-secret]
{probe}
grants.http = {{ allow = ["https://localhost:*"], ca = ["ca.pem"], client_cert = {{ cert = "client.pem", key_secret = "client-key" }} }}

[runbooks.mtls]
steps = [
  {{ id = "files", uses = "from-files", on_failure = "continue", with = {{ url = "{url}" }} }},
  {{ id = "secret", uses = "from-secret", on_failure = "continue", with = {{ url = "{url}" }} }},
  {{ id = "none", uses = "anonymous", on_failure = "continue", with = {{ url = "{url}" }} }},
]

[plugins.anonymous]
{probe}
[plugins.anonymous.grants.http]
allow = ["https://localhost:*"]
ca = ["ca.pem"]
"#,
            probe = plugin_lines("http-probe"),
        ),
    );
    let checked = sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(
        caps.contains("client_cert certificate file `client.pem`, key file `client.key`"),
        "{caps}"
    );
    assert!(
        caps.contains("client_cert certificate file `client.pem`, key secret `client-key`"),
        "{caps}"
    );

    let r = sb.run(&["run", "mtls", "--json"]);
    let report = r.json();
    for id in ["files", "secret"] {
        let s = step(&report, id);
        assert_eq!(s["status"], "ok", "{s:#}");
    }
    assert_eq!(
        svc.state.requests.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let none = step(&report, "none");
    assert_eq!(none["status"], "fail", "{none:#}");
    let summary = none["summary"].as_str().unwrap();
    assert!(summary.contains("TLS"), "{none:#}");
    assert!(
        summary.contains("asks for a client certificate")
            && summary.contains("client_cert = { cert = \"client.pem\", key = \"client.key\" }"),
        "{none:#}"
    );

    let leak = key_line(&pki.client_key_pem);
    for out in [
        checked.stdout(),
        checked.stderr(),
        caps,
        r.stdout(),
        r.stderr(),
    ] {
        assert!(!out.contains(&leak), "key material printed:\n{out}");
    }
    let run_id = report["run_id"].as_str().unwrap();
    assert_secret_kept_nowhere(&sb, run_id, &leak);

    // The line the error suggests, pasted at the end of the anonymous plugin's grant,
    // is what it takes.
    let start = summary.find("client_cert = {").unwrap();
    let pasted = &summary[start..=start + summary[start..].find('}').unwrap()];
    let mut manifest = std::fs::read_to_string(sb.path().join("runcap.toml")).unwrap();
    manifest.push_str(pasted);
    manifest.push('\n');
    sb.write("runcap.toml", &manifest);
    let again = sb.run(&["run", "mtls", "--json"]).json();
    assert_eq!(step(&again, "none")["status"], "ok", "{again:#}");
}

#[test]
fn check_names_the_line_and_key_of_a_missing_or_mismatched_key() {
    let pki = test_pki(30).expect("test certificates");
    let other = test_pki(30).expect("more test certificates");
    let sb = Sandbox::new();
    write_pki(&sb, &pki);
    sb.write("other.key", &other.client_key_pem);
    sb.write("secrets/other.key", &other.client_key_pem);
    let manifest = format!(
        r#"environment = "test"

[secrets.wrong-key]
file = "secrets/other.key"

[plugins.mismatched]
{probe}
[plugins.mismatched.grants.http]
allow = ["https://localhost:*"]
client_cert = {{ cert = "client.pem", key = "other.key" }}

[plugins.missing]
{probe}
[plugins.missing.grants.http]
allow = ["https://localhost:*"]
client_cert = {{ cert = "client.pem", key = "gone.key" }}

[plugins.wrong-secret]
{probe}
[plugins.wrong-secret.grants.http]
allow = ["https://localhost:*"]
client_cert = {{ cert = "client.pem", key_secret = "wrong-key" }}
"#,
        probe = plugin_lines("http-probe"),
    );
    sb.write("runcap.toml", &manifest);
    let line = |needle: &str| {
        manifest
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    let at = |needle: &str| format!("runcap.toml:{}:44\n", line(needle));
    for expected in [
        "plugins.mismatched.grants.http.client_cert.key: the key in file `other.key` does not match the certificate in file `client.pem`",
        &at("key = \"other.key\""),
        "help: point `key` at the private key the certificate in `cert` was issued for",
        "plugins.missing.grants.http.client_cert.key: cannot read file `gone.key`",
        &at("key = \"gone.key\""),
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // A key from a secret is read when the plugin is loaded; with the manifest fixed,
    // check reaches that and names the grant and the secret.
    let fixed = manifest
        .replace("key = \"other.key\"", "key = \"client.key\"")
        .replace("key = \"gone.key\"", "key = \"client.key\"");
    sb.write("runcap.toml", &fixed);
    let out = sb.run(&["check"]).expect_code(2);
    let err = out.stderr();
    assert!(
        err.contains("plugins.wrong-secret.grants.http.client_cert: the key in secret `wrong-key` does not match the certificate in file `client.pem`"),
        "{err}"
    );
    let leak = key_line(&other.client_key_pem);
    assert!(
        !err.contains(&leak) && !out.stdout().contains(&leak),
        "{err}"
    );
}

#[test]
fn caps_diff_names_a_client_certificate_newly_presented() {
    let pki = test_pki(30).expect("test certificates");
    let sb = Sandbox::new();
    write_pki(&sb, &pki);
    let manifest = |client_cert: &str| {
        format!(
            "environment = \"test\"\n\n[secrets.client-key]\nfile = \"secrets/client.key\"\n\n[plugins.probe]\n{}\n[plugins.probe.grants.http]\nallow = [\"https://localhost:*\"]\n{client_cert}",
            plugin_lines("http-probe")
        )
    };
    sb.write("runcap.toml", &manifest(""));
    sb.run(&["lock"]).expect_code(0);
    sb.write(
        "runcap.toml",
        &manifest("client_cert = { cert = \"client.pem\", key_secret = \"client-key\" }\n"),
    );
    let out = sb.run(&["caps", "--diff", "runcap.lock"]);
    let text = out.stdout();
    assert!(
        text.contains("plugins.probe.grants.http.client_cert: presents a client certificate: certificate file `client.pem`, key secret `client-key`"),
        "{text}\n{}",
        out.stderr()
    );
    assert!(!text.contains(&key_line(&pki.client_key_pem)), "{text}");
}
