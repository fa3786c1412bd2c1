//! Blue/green swaps with the `release` plugin: the link moves to the new release in one
//! rename, a failed health check after it rolls the link back to the previous release,
//! a dry run changes nothing, and a target outside the grant or a real file in the link's
//! place is refused.

use std::path::Path;

use runcap_e2e::{Sandbox, Service, plugin_lines, step};

fn link_target(sb: &Sandbox) -> String {
    std::fs::read_link(sb.path().join("app/current"))
        .unwrap()
        .display()
        .to_string()
}

fn sandbox(svc: &Service) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("app/releases/v1/version", "1\n");
    sb.write("app/releases/v2/version", "2\n");
    std::os::unix::fs::symlink("releases/v1", sb.path().join("app/current")).unwrap();
    sb.write("outside/secret", "no\n");
    let deploy = |name: &str, check: &str| {
        format!(
            r#"
[[runbooks.{name}.steps]]
id = "swap"
uses = "release"
with = {{ link = "/deploy/current", target = "releases/v2" }}
rollback = {{ uses = "release", with = {{ link = "/deploy/current", target = "{{{{ steps.swap.details.previous }}}}" }} }}

[[runbooks.{name}.steps]]
id = "verify"
uses = "probe"
with = {{ url = "{url}" }}
"#,
            url = svc.url(check)
        )
    };
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.release]
{release}
grants.fs = {{ deploy = {{ path = "app", mode = "rw" }} }}

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
{good}{bad}
[runbooks.escape]
steps = [{{ id = "swap", uses = "release", with = {{ link = "/deploy/current", target = "../../outside" }} }}]

[runbooks.missing]
steps = [{{ id = "swap", uses = "release", with = {{ link = "/deploy/current", target = "releases/v3" }} }}]

[runbooks.not-a-link]
steps = [{{ id = "swap", uses = "release", with = {{ link = "/deploy/releases/v1/version", target = "../v2/version" }} }}]
"#,
            release = plugin_lines("release"),
            probe = plugin_lines("http-probe"),
            port = svc.addr.port(),
            good = deploy("deploy", "/health"),
            bad = deploy("deploy-broken", "/unhealthy"),
        ),
    );
    sb
}

#[test]
fn a_swap_sticks_when_healthy_and_rolls_back_when_not() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc);
    sb.run(&["check"]).expect_code(0);

    let dry = sb
        .run(&["run", "deploy", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    assert!(
        step(&dry, "swap")["summary"]
            .as_str()
            .unwrap()
            .contains("dry run: would point /deploy/current at releases/v2 (now releases/v1)"),
        "{dry:#}"
    );
    assert_eq!(link_target(&sb), "releases/v1");

    let broken = sb.run(&["run", "deploy-broken", "--json"]);
    assert_eq!(broken.code(), 1, "{}", broken.stdout());
    let report = broken.json();
    assert_eq!(step(&report, "verify")["status"], "fail", "{report:#}");
    let rolled = step(&report, "swap.rollback");
    assert_eq!(rolled["status"], "ok", "{report:#}");
    assert_eq!(
        link_target(&sb),
        "releases/v1",
        "rolled back to the previous release"
    );

    let good = sb.run(&["run", "deploy", "--json"]).expect_code(0).json();
    assert_eq!(step(&good, "swap")["details"]["previous"], "releases/v1");
    assert_eq!(step(&good, "swap")["details"]["changed"], true);
    assert_eq!(link_target(&sb), "releases/v2");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("app/current/version")).unwrap(),
        "2\n"
    );
    assert!(!Path::new(&sb.path().join("app/current.runcap-swap")).exists());
}

#[test]
fn targets_outside_the_grant_missing_releases_and_real_files_are_refused() {
    let svc = Service::start("127.0.0.1", None);
    let sb = sandbox(&svc);
    let escape = sb.run(&["run", "escape", "--json"]);
    assert_eq!(escape.code(), 1);
    let s = step(&escape.json(), "swap").clone();
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("leads outside the granted directory"),
        "{s:#}"
    );

    let missing = sb.run(&["run", "missing", "--json"]);
    assert_eq!(missing.code(), 1);
    let s = step(&missing.json(), "swap").clone();
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("target releases/v3 does not exist; nothing changed"),
        "{s:#}"
    );

    let file = sb.run(&["run", "not-a-link", "--json"]);
    assert_eq!(file.code(), 1);
    let s = step(&file.json(), "swap").clone();
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("is not a symlink; it is never replaced"),
        "{s:#}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("app/releases/v1/version")).unwrap(),
        "1\n"
    );
    assert_eq!(link_target(&sb), "releases/v1");
}
