//! Ctrl-C, SIGTERM and SIGKILL at every moment of a run: the rollbacks of completed steps
//! run to completion after a first signal, a second signal leaves them pending for
//! `runcap recover`, and what the output says is what happened.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use runcap_e2e::{Sandbox, Service, plugin_lines};

/// `deploy` takes the service down (its rollback brings it back), `warm` passes (its
/// rollback takes 1.5 s), then `soak` hangs until it is stopped.
fn setup() -> (Service, Sandbox) {
    let svc = Service::start("127.0.0.1", None);
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[vars]
base = "{base}"

[plugins.probe]
{probe}limits = {{ time = "2m" }}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[[runbooks.deploy.steps]]
id = "deploy"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/admin/down", method = "POST" }}
rollback = {{ uses = "probe", with = {{ url = "{{{{ vars.base }}}}/admin/up", method = "POST" }} }}

[[runbooks.deploy.steps]]
id = "warm"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/json" }}
rollback = {{ uses = "probe", with = {{ url = "{{{{ vars.base }}}}/slow?ms=1500", timeout = "30s" }} }}

[[runbooks.deploy.steps]]
id = "soak"
uses = "probe"
with = {{ url = "{{{{ vars.base }}}}/slow?ms=90000", timeout = "100s" }}
"#,
            base = svc.url(""),
            port = svc.addr.port(),
            probe = plugin_lines("http-probe"),
        ),
    );
    (svc, sb)
}

/// Waits until the service has seen `n` requests.
fn wait_requests(svc: &Service, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.state.requests.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn spawn(sb: &Sandbox) -> std::process::Child {
    sb.runcap()
        .args(["run", "deploy"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runcap")
}

/// One signal while `soak` runs: both rollbacks run, the slow one to its end.
fn one_signal_runs_every_rollback(sig: &str) {
    let (svc, sb) = setup();
    let child = spawn(&sb);
    // deploy, warm, soak.
    wait_requests(&svc, 3, "the soak step");
    assert!(svc.state.down.load(Ordering::Relaxed));
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        !svc.state.down.load(Ordering::Relaxed),
        "the deploy was rolled back: {stdout}"
    );
    assert!(stdout.contains("warm.rollback"), "{stdout}");
    assert!(
        stdout.contains("the run was cancelled; 2 of 2 rollbacks ran"),
        "{stdout}"
    );
    let rec = sb.run(&["recover"]).expect_code(0);
    assert!(
        rec.stdout().contains("nothing to recover"),
        "{}",
        rec.stdout()
    );
}

#[test]
fn sigint_runs_every_rollback_to_its_end() {
    one_signal_runs_every_rollback("-INT");
}

#[test]
fn sigterm_runs_every_rollback_to_its_end() {
    one_signal_runs_every_rollback("-TERM");
}

#[test]
fn a_second_signal_leaves_the_rollbacks_pending_and_says_so() {
    let (svc, sb) = setup();
    let child = spawn(&sb);
    wait_requests(&svc, 3, "the soak step");
    signal(&child, "-INT");
    // The slow rollback of `warm` has reached the service: stop it too.
    wait_requests(&svc, 4, "the first rollback");
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        svc.state.down.load(Ordering::Relaxed),
        "nothing rolled back"
    );
    assert!(
        stdout.contains("0 of 2 rollbacks ran, 2 pending: run them with `runcap recover"),
        "{stdout}"
    );
    let h = sb.run(&["history", "--json"]).expect_code(0).json();
    assert_eq!(h[0]["status"], "cancelled");
    let rec = sb.run(&["recover"]).expect_code(0);
    assert!(rec.stdout().contains("deploy.rollback"), "{}", rec.stdout());
    assert!(
        !svc.state.down.load(Ordering::Relaxed),
        "recovery rolled back"
    );
    sb.run(&["audit", "verify"]).expect_code(0);
}

#[test]
fn sigint_then_sigkill_during_a_rollback_stays_recoverable() {
    let (svc, sb) = setup();
    let mut child = spawn(&sb);
    wait_requests(&svc, 3, "the soak step");
    signal(&child, "-INT");
    wait_requests(&svc, 4, "the first rollback");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(svc.state.down.load(Ordering::Relaxed));
    let h = sb.run(&["history", "--json"]).expect_code(0).json();
    assert_eq!(h[0]["status"], "interrupted");
    let rec = sb.run(&["recover"]).expect_code(0);
    let text = rec.stdout();
    assert!(
        text.contains("warm.rollback") && text.contains("deploy.rollback"),
        "{text}"
    );
    assert!(!svc.state.down.load(Ordering::Relaxed));
    assert!(
        sb.run(&["recover"])
            .expect_code(0)
            .stdout()
            .contains("nothing to recover")
    );
    sb.run(&["audit", "verify"]).expect_code(0);
}
