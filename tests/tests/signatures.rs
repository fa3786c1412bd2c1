//! Plugin signatures: `keygen`, `sign` and `verify`; a manifest that requires a signer
//! refuses an unsigned or wrongly signed file; `caps` names the signer and `caps --diff`
//! flags a changed one; a policy can reserve a capability for signed plugins.

use runcap_e2e::{Sandbox, plugin_wasm};

fn public(sb: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sb.path().join(format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_string()
}

fn manifest(sb: &Sandbox, signed_by: &str) -> String {
    format!(
        r#"
environment = "test"

[signers]
platform = "{platform}"
rogue = "{rogue}"

[plugins.probe]
path = "probe.wasm"
sha256 = "{sha}"
signed_by = {signed_by}
grants.http = {{ allow = ["http://127.0.0.1:9"] }}
"#,
        platform = public(sb, "platform"),
        rogue = public(sb, "rogue"),
        sha = runcap_e2e::sha256_file(&sb.path().join("probe.wasm")),
    )
}

#[test]
fn a_required_signature_is_checked_shown_and_diffed() {
    let sb = Sandbox::new();
    std::fs::copy(plugin_wasm("http_probe"), sb.path().join("probe.wasm")).unwrap();
    let made = sb.run(&["keygen", "platform"]).expect_code(0).stdout();
    assert!(made.contains("[signers]\nplatform = \"ed25519:"), "{made}");
    sb.run(&["keygen", "rogue"]).expect_code(0);
    sb.run(&["keygen", "rogue"]).expect_code(2);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sb.path().join("platform.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");

    sb.write("runcap.toml", &manifest(&sb, r#"["platform"]"#));
    // Unsigned: refused at check, with the command that signs it.
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        err.contains("must be signed by platform") && err.contains("probe.wasm.sig is missing"),
        "{err}"
    );
    assert!(err.contains("runcap sign"), "{err}");

    // Signed by the wrong key: refused.
    sb.run(&["sign", "probe.wasm", "--key", "rogue.key"])
        .expect_code(0);
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(err.contains("does not match this file and key"), "{err}");
    sb.run(&["verify", "probe.wasm", "--key", "platform.pub"])
        .expect_code(1);
    sb.run(&["verify", "probe.wasm", "--key", "rogue.pub"])
        .expect_code(0);

    // Signed by the platform: accepted and shown.
    sb.run(&["sign", "probe.wasm", "--key", "platform.key"])
        .expect_code(0);
    sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(caps.contains("signed   by platform"), "{caps}");
    let json = sb.run(&["caps", "--json"]).expect_code(0).json();
    assert_eq!(json["plugins"][0]["signer"], "platform");

    // Approved, then re-signed by another signer: the diff against the lock flags it.
    sb.run(&["lock"]).expect_code(0);
    sb.write("runcap.toml", &manifest(&sb, r#"["platform", "rogue"]"#));
    sb.run(&["sign", "probe.wasm", "--key", "rogue.key"])
        .expect_code(0);
    let diff = sb
        .run(&["caps", "--diff", "runcap.lock"])
        .expect_code(1)
        .stdout();
    assert!(diff.contains("signed by platform → rogue"), "{diff}");

    // A policy reserves http for the platform's signature, checked with its own key.
    sb.write(
        "policy.toml",
        &format!(
            "[signers]\nplatform = \"{}\"\n\n[environments.test.signed]\nhttp = [\"platform\"]\n",
            public(&sb, "platform")
        ),
    );
    let err = sb
        .run(&["check", "--policy", "policy.toml"])
        .expect_code(2)
        .stderr();
    assert!(
        err.contains("allows only to plugins signed by platform (policy.toml:5)"),
        "{err}"
    );
    sb.run(&["sign", "probe.wasm", "--key", "platform.key"])
        .expect_code(0);
    sb.run(&["check", "--policy", "policy.toml"]).expect_code(0);

    // A key that is not one is refused where it is written.
    sb.write(
        "runcap.toml",
        &manifest(&sb, r#"["platform"]"#).replace(&public(&sb, "rogue"), "ed25519:short"),
    );
    let err = sb.run(&["check"]).expect_code(2).stderr();
    assert!(
        err.contains("signers.rogue") || err.contains("runcap.toml:6"),
        "{err}"
    );
    assert!(err.contains("is not a public key"), "{err}");
}
