//! The `system` capability end to end through the `resources` plugin: granted host facts
//! are read and judged against thresholds, ungranted ones are denied naming the grant to
//! add, `caps` shows exactly what may be read, and `check` refuses meaningless thresholds.

use std::process::{Child, Command};

use runcap_e2e::{Sandbox, plugin_lines, step};

/// A `sleep` this test owns, killed when it ends.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sandbox(steps: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.resources]
{resources}
grants.system = {{ memory = true, mounts = ["/"], processes = ["sleep"] }}

{steps}
"#,
            resources = plugin_lines("resources"),
        ),
    );
    sb
}

/// Memory in use according to /proc/meminfo, percent.
fn meminfo_used_percent() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (total, available) = (field("MemTotal:"), field("MemAvailable:"));
    (total - available) * 100.0 / total
}

#[test]
fn granted_facts_are_judged_and_ungranted_ones_denied() {
    let _sleeper = Sleeper(Command::new("sleep").arg("120").spawn().unwrap());
    let sb = sandbox(
        r#"
[runbooks.healthy]
steps = [{ id = "res", uses = "resources", with = { memory = { fail_above = 100 }, disks = { "/" = { fail_above = 100 } }, inodes = { "/" = { fail_above = 100 } }, processes = { sleep = { min = 1 } } } }]

[runbooks.full]
steps = [{ id = "res", uses = "resources", with = { disks = { "/" = { fail_above = 0 } } } }]

[runbooks.ungranted]
steps = [
  { id = "load", uses = "resources", on_failure = "continue", with = { load_per_cpu = { fail_above = 4 } } },
  { id = "mount", uses = "resources", with = { disks = { "/tmp" = { fail_above = 90 } } } },
]
"#,
    );
    sb.run(&["check"]).expect_code(0);

    let report = sb.run(&["run", "healthy", "--json"]).expect_code(0).json();
    let res = step(&report, "res");
    assert_eq!(res["status"], "ok", "{res:#}");
    let details = &res["details"];
    assert!(
        details["processes.sleep.count"].as_f64().unwrap() >= 1.0,
        "{res:#}"
    );
    let memory = details["memory.used_percent"].as_f64().unwrap();
    assert!(
        (memory - meminfo_used_percent()).abs() < 10.0,
        "{memory} vs /proc/meminfo"
    );
    let disk = details["disk./.used_percent"].as_f64().unwrap();
    assert!(disk > 0.0 && disk <= 100.0, "{disk}");
    let calls = res["calls"].to_string();
    for target in ["memory", "/", "sleep"] {
        assert!(calls.contains(&format!("\"{target}\"")), "{calls}");
    }

    let full = sb.run(&["run", "full", "--json"]);
    assert_eq!(full.code(), 1, "{}", full.stdout());
    let res = step(&full.json(), "res").clone();
    assert_eq!(res["status"], "fail", "{res:#}");
    assert!(
        res["summary"].as_str().unwrap().contains("% is above 0%"),
        "{res:#}"
    );

    let out = sb.run(&["run", "ungranted", "--json"]);
    assert_eq!(out.code(), 1);
    let report = out.json();
    for (id, add) in [
        ("load", "add load = true to plugins.resources.grants.system"),
        (
            "mount",
            "add \"/tmp\" to plugins.resources.grants.system.mounts",
        ),
    ] {
        let s = step(&report, id);
        assert_eq!(s["status"], "fail", "{s:#}");
        assert!(s["summary"].as_str().unwrap().contains(add), "{s:#}");
    }
}

#[test]
fn caps_shows_what_may_be_read_and_check_refuses_senseless_thresholds() {
    let sb = sandbox(
        r#"
[runbooks.bad]
steps = [{ id = "res", uses = "resources", with = { disks = { "/" = { fail_above = 120 } } } }]
"#,
    );
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    for line in ["memory and swap", "disk use of /", "processes named sleep"] {
        assert!(caps.contains(line), "{caps}");
    }
    let check = sb.run(&["check"]);
    assert_eq!(check.code(), 2, "{}", check.stdout());
    assert!(
        check
            .stderr()
            .contains("disks./: 120 is not a percentage (0 to 100)"),
        "{}",
        check.stderr()
    );

    // Without the grant, the plugin is refused at load with the TOML to add, and that
    // TOML, pasted at the end of the manifest, is accepted.
    let manifest = std::fs::read_to_string(sb.path().join("runcap.toml"))
        .unwrap()
        .replace(
            "grants.system = { memory = true, mounts = [\"/\"], processes = [\"sleep\"] }\n",
            "",
        )
        .replace("fail_above = 120", "fail_above = 90");
    sb.write("runcap.toml", &manifest);
    let refused = sb.run(&["check"]);
    assert_eq!(refused.code(), 2);
    let stderr = refused.stderr();
    let hint_start = stderr
        .find("[plugins.resources.grants.system]")
        .expect(&stderr);
    let hint: String = stderr[hint_start..]
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    sb.write("runcap.toml", &format!("{manifest}\n{hint}"));
    sb.run(&["check"]).expect_code(0);
}

#[test]
fn a_port_nothing_listens_on_and_a_certificate_about_to_expire_fail_the_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = listener.local_addr().unwrap().port();
    let empty = runcap_e2e::free_port();
    let sb = Sandbox::new();
    // A certificate valid for three more days.
    let mut params = rcgen::CertificateParams::new(vec!["api.test".into()]).unwrap();
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(3 * 86_400 + 3600);
    params.not_after = soon.into();
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = sb.write("api.pem", &params.self_signed(&key).unwrap().pem());
    let pem = pem.display().to_string();
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.resources]
{resources}
grants.system = {{ ports = [{held}, {empty}], certificates = ["{pem}"] }}

[runbooks.listening]
steps = [{{ id = "res", uses = "resources", with = {{ ports = {{ "{held}" = {{}} }}, certificates = {{ "{pem}" = {{ fail_days = 2 }} }} }} }}]

[runbooks.nothing]
steps = [{{ id = "res", uses = "resources", with = {{ ports = {{ "{empty}" = {{}} }} }} }}]

[runbooks.expiring]
steps = [{{ id = "res", uses = "resources", with = {{ certificates = {{ "{pem}" = {{ warn_days = 30, fail_days = 7 }} }} }} }}]
"#,
            resources = plugin_lines("resources"),
        ),
    );
    sb.run(&["check"]).expect_code(0);
    let ok = sb
        .run(&["run", "listening", "--json"])
        .expect_code(0)
        .json();
    let res = step(&ok, "res");
    assert_eq!(
        res["details"][format!("ports.{held}.pid")].as_f64(),
        Some(f64::from(std::process::id())),
        "{res:#}"
    );
    assert_eq!(
        res["details"][format!("certificates.{pem}.days_left")].as_f64(),
        Some(3.0),
        "{res:#}"
    );
    let nothing = sb.run(&["run", "nothing", "--json"]);
    assert_eq!(nothing.code(), 1);
    let res = step(&nothing.json(), "res").clone();
    assert!(
        res["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("nothing listens on TCP port {empty}")),
        "{res:#}"
    );
    let expiring = sb.run(&["run", "expiring", "--json"]);
    assert_eq!(expiring.code(), 1);
    let res = step(&expiring.json(), "res").clone();
    assert!(
        res["summary"]
            .as_str()
            .unwrap()
            .contains("expires in 3 days, fewer than 7"),
        "{res:#}"
    );
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    assert!(
        caps.contains(&format!("what listens on TCP port {held}")),
        "{caps}"
    );
    assert!(
        caps.contains(&format!("the expiry of certificate {pem}")),
        "{caps}"
    );
    drop(listener);
}

#[test]
fn a_process_by_pid_file_passes_until_it_is_killed_and_a_relative_pid_file_is_refused() {
    let sb = Sandbox::new();
    let mut api = Command::new("sleep").arg("120").spawn().unwrap();
    let pid = api.id();
    let pid_file = sb.write("run/api.pid", &format!("{pid}\n"));
    let pid_file = pid_file.display().to_string();
    let manifest = |pid_files: &str| {
        format!(
            r#"
environment = "test"

[plugins.resources]
{resources}

[plugins.resources.grants.system]
files = true
{pid_files}

[runbooks.api]
steps = [{{ id = "api", uses = "resources", with = {{ pid_files = {{ "{pid_file}" = {{ max_rss_mib = 1024, max_open_files = 100000, max_open_files_percent = 100 }} }}, open_files = {{ fail_above = 100 }} }} }}]
"#,
            resources = plugin_lines("resources"),
        )
    };
    sb.write(
        "runcap.toml",
        &manifest(&format!("pid_files = [\"{pid_file}\"]")),
    );
    sb.run(&["check"]).expect_code(0);
    let caps = sb.run(&["caps"]).expect_code(0).stdout();
    for line in [
        format!("the process pid file {pid_file} names, and its open files"),
        "open file handles on the host".to_string(),
    ] {
        assert!(caps.contains(&line), "{caps}");
    }

    let report = sb.run(&["run", "api", "--json"]).expect_code(0).json();
    let res = step(&report, "api");
    assert_eq!(res["status"], "ok", "{res:#}");
    let details = &res["details"];
    let at = |what: &str| details[format!("pid_files.{pid_file}.{what}")].as_f64();
    assert_eq!(at("pid"), Some(f64::from(pid)), "{res:#}");
    assert!(at("open_files").is_some_and(|n| n >= 1.0), "{res:#}");
    assert!(at("open_files_limit").is_some_and(|n| n > 0.0), "{res:#}");
    let used = details["open_files.used_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&used), "{res:#}");
    assert!(
        details["open_files.open"].as_f64().unwrap() >= 1.0,
        "{res:#}"
    );
    assert!(res["calls"].to_string().contains(&pid_file), "{res:#}");

    // The API dies; its pid file stays behind.
    api.kill().unwrap();
    api.wait().unwrap();
    let down = sb.run(&["run", "api", "--json"]);
    assert_eq!(down.code(), 1, "{}", down.stdout());
    let res = step(&down.json(), "api").clone();
    assert_eq!(res["status"], "fail", "{res:#}");
    assert!(
        res["summary"].as_str().unwrap().contains(&format!(
            "the pid file {pid_file} is stale: no process has pid {pid}"
        )),
        "{res:#}"
    );

    // Another program is given a pid the file holds, long after the file was written:
    // that process is not the API.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let other = Killed(Command::new("sleep").arg("120").spawn().unwrap());
    sb.write("run/api.pid", &format!("{}\n", other.0.id()));
    std::fs::File::options()
        .write(true)
        .open(&pid_file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    let reused = sb.run(&["run", "api", "--json"]);
    assert_eq!(reused.code(), 1, "{}", reused.stdout());
    let res = step(&reused.json(), "api").clone();
    let summary = res["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "the pid file {pid_file} is stale: pid {} is now sleep, started ",
            other.0.id()
        )) && summary.contains("the pid was reused"),
        "{res:#}"
    );
    drop(other);

    // A pid file named relative to the manifest is refused, with the line to paste.
    let relative = "pid_files = [\"run/api.pid\"]";
    sb.write("runcap.toml", &manifest(relative));
    let refused = sb.run(&["check"]);
    assert_eq!(refused.code(), 2, "{}", refused.stdout());
    let stderr = refused.stderr();
    assert!(
        stderr.contains("pid_files[0]: `run/api.pid` is not an absolute path"),
        "{stderr}"
    );
    assert!(stderr.contains("runcap.toml:"), "{stderr}");
    let fix = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("pid_files = ["))
        .expect(&stderr)
        .to_string();
    assert!(fix.contains(&pid_file), "{fix}");
    sb.write("runcap.toml", &manifest(&fix));
    sb.run(&["check"]).expect_code(0);
}
