//! A fleet on real parts: a real `nats-server` with JetStream (file storage), a real
//! PostgreSQL, a controller (`runcap serve` with `[serve] fleet`) and three agents
//! (`runcap agent`), each a process with its own state directory, manifest and
//! supervised demo service.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use runcap_e2e::servers::{Nats, Postgres};
use runcap_e2e::{Sandbox, Served, free_port, plugin_lines, served_by};

const DEMO: &str = env!("CARGO_BIN_EXE_runcap-demo-service");
const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
const TOKEN: &str = "fleet-api-token-0123456789abcdef";

fn password(user: &str) -> String {
    format!("nats-password-for-{user}-0123456789")
}

/// Everything a fleet test runs: the servers, the controller and the agents.
struct Rig {
    sb: Sandbox,
    _pg: Postgres,
    nats: Nats,
    controller: Option<Served>,
    agents: BTreeMap<String, Child>,
    /// Each agent's demo service port.
    ports: BTreeMap<String, u16>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, mut a) in std::mem::take(&mut self.agents) {
            let _ = a.kill();
            let _ = a.wait();
        }
        // The services the agents supervise.
        for host in HOSTS {
            let pidfile = self
                .sb
                .path()
                .join(format!("agents/{host}/.runcap/services/api.json"));
            if let Ok(text) = std::fs::read_to_string(pidfile)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(pid) = v["pid"].as_i64()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn agent_manifest(port: u16, idempotent: bool) -> String {
    format!(
        r#"
environment = "prod"

[vars]
health = "http://127.0.0.1:{port}/health"

[secrets.nats-password]
env = "AGENT_NATS_PASSWORD"

[services.api]
driver = "process"
command = "{DEMO}"
args = ["--listen", "127.0.0.1:{port}"]
stop_signal = "SIGTERM"
grace = "3s"
health_url = "http://127.0.0.1:{port}/health"

[plugins.probe]
{probe}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}

[plugins.control]
{control}
grants.http = {{ allow = ["http://127.0.0.1:{port}"] }}
grants.services = {{ api = ["status", "start", "stop", "restart"] }}

[runbooks.start]
steps = [{{ uses = "control", with = {{ service = "api", action = "start", healthy_within = "10s" }} }}]

[runbooks.service-down]
description = "Probe, restart if down, verify"
idempotent = {idempotent}
[[runbooks.service-down.steps]]
id = "probe"
uses = "probe"
on_failure = "continue"
with = {{ url = "{{{{ vars.health }}}}", timeout = "2s" }}
[[runbooks.service-down.steps]]
id = "restart"
uses = "control"
when = "steps.probe.status == 'fail'"
with = {{ service = "api", action = "restart", healthy_within = "10s" }}
[[runbooks.service-down.steps]]
id = "verify"
uses = "probe"
with = {{ url = "{{{{ vars.health }}}}", expect = {{ json = {{ "/status" = "up" }} }} }}
"#,
        probe = plugin_lines("http-probe"),
        control = plugin_lines("service-control"),
    )
}

impl Rig {
    /// Starts PostgreSQL, nats-server (with the fleet's own permissions), the controller
    /// and the three agents, each agent's service running. `None` when a server is not
    /// installed (said on stderr).
    fn start(idempotent: bool) -> Option<Rig> {
        let pg = Postgres::start()?;
        pg.psql("postgres", "create database runcap;");
        let sb = Sandbox::new();
        let api_port = free_port();
        let nats_port_holder = free_port();
        let mut fleet = format!(
            r#"
[nats]
url = "nats://127.0.0.1:{nats_port_holder}"
password_secret = "nats-password"

[store]
url = "{}"

[timing]
heartbeat = "300ms"
lost_after = "2s"
checkpoint_every = "1s"
"#,
            pg.conn_string("runcap")
        );
        for h in HOSTS {
            fleet += &format!("\n[agents.{h}]\ngroups = [\"api\"]\n");
        }
        sb.write("fleet.toml", &fleet);
        let auth = sb
            .run(&["fleet", "nats-config", "--fleet", "fleet.toml"])
            .expect_code(0)
            .stdout();
        let mut env = vec![("RUNCAP_NATS_CONTROLLER".to_string(), password("controller"))];
        for h in HOSTS {
            env.push((
                format!("RUNCAP_NATS_{}", h.to_uppercase().replace('-', "_")),
                password(h),
            ));
        }
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let nats = Nats::start_on(nats_port_holder, &auth, &env_refs)?;
        sb.write(
            "controller/runcap.toml",
            &format!(
                r#"
environment = "control"

[secrets.nats-password]
env = "CONTROLLER_NATS_PASSWORD"

[secrets.api-token]
env = "CONTROLLER_API_TOKEN"

[serve]
listen = "127.0.0.1:{api_port}"
fleet = "../fleet.toml"
tokens = [{{ secret = "api-token", scopes = ["read", "run"] }}]
"#
            ),
        );
        let mut ports = BTreeMap::new();
        for h in HOSTS {
            let port = free_port();
            sb.write(
                &format!("agents/{h}/runcap.toml"),
                &agent_manifest(port, idempotent),
            );
            sb.run(&["run", "start", "--env", &format!("agents/{h}/runcap.toml")])
                .expect_code(0);
            ports.insert(h.to_string(), port);
        }
        let mut rig = Rig {
            sb,
            _pg: pg,
            nats,
            controller: None,
            agents: BTreeMap::new(),
            ports,
        };
        rig.start_controller();
        for h in HOSTS {
            rig.start_agent(h);
        }
        Some(rig)
    }

    fn start_controller(&mut self) {
        let mut cmd = self.sb.runcap();
        cmd.args(["serve", "--env", "controller/runcap.toml"])
            .env("CONTROLLER_NATS_PASSWORD", password("controller"))
            .env("CONTROLLER_API_TOKEN", TOKEN)
            .env("RUNCAP_LOG", "runcap=info")
            .stderr(std::fs::File::create(self.sb.path().join("controller.log")).unwrap());
        let log = self.sb.path().join("controller.log");
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| served_by(cmd)));
        match served {
            Ok(s) => self.controller = Some(s),
            Err(_) => panic!(
                "the controller did not start:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }

    fn start_agent(&mut self, host: &str) {
        let mut child = self
            .sb
            .runcap()
            .args([
                "agent",
                "--env",
                &format!("agents/{host}/runcap.toml"),
                "--fleet",
                "fleet.toml",
                "--name",
                host,
            ])
            .env("AGENT_NATS_PASSWORD", password(host))
            .env("RUNCAP_LOG", "runcap=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.sb.path().join(format!("{host}.log"))).unwrap())
            .spawn()
            .expect("runcap agent starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with(&format!("agent {host} of")), "{line}");
        self.agents.insert(host.to_string(), child);
    }

    /// `runcap ARGS` as an operator on the controller's host.
    fn operator(&self, args: &[&str]) -> runcap_e2e::Run {
        let addr = &self.controller.as_ref().expect("controller").addr;
        let out = self
            .sb
            .runcap()
            .args(args)
            .env("RUNCAP_CONTROLLER", format!("http://{addr}"))
            .env("RUNCAP_TOKEN", TOKEN)
            .output()
            .unwrap();
        runcap_e2e::Run(out)
    }

    /// Waits until `runcap fleet status` says every agent is up.
    fn wait_all_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.operator(&["fleet", "status", "--json"]);
            if s.code() == 0 {
                let v = s.json();
                if v.as_array().is_some_and(|a| {
                    a.len() == 3
                        && a.iter()
                            .all(|x| x["up"] == true && x["version"].is_string())
                }) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agents never all up: {}\n{}",
                s.stdout(),
                s.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn service_pid(&self, host: &str) -> i64 {
        let text = std::fs::read_to_string(
            self.sb
                .path()
                .join(format!("agents/{host}/.runcap/services/api.json")),
        )
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
            .as_i64()
            .unwrap()
    }

    fn healthy(&self, host: &str) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.ports[host])).is_ok()
    }
}

#[test]
fn a_fan_out_run_restarts_the_service_only_where_it_is_down_and_the_controller_sees_every_call() {
    let Some(rig) = Rig::start(false) else { return };
    rig.wait_all_up();
    // web-2 loses its service.
    let pid = rig.service_pid("web-2");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.healthy("web-2") {
        assert!(Instant::now() < deadline, "the service did not die");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = rig
        .operator(&[
            "fleet",
            "run",
            "service-down",
            "--group",
            "api",
            "--json",
            "--timeout",
            "2m",
        ])
        .expect_code(0);
    let doc = out.json();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{doc:#}");
    for r in runs {
        let host = r["host"].as_str().unwrap();
        // The failed probe (on_failure = "continue") makes web-2's run a warning.
        let expected = if host == "web-2" { "warn" } else { "ok" };
        assert_eq!(r["outcome"], expected, "{r:#}");
        let steps = r["detail"]["run"]["steps"].as_array().unwrap();
        let restart = steps.iter().find(|s| s["id"] == "restart").unwrap();
        if host == "web-2" {
            assert_eq!(restart["status"], "ok", "{restart:#}");
            let calls = restart["calls"].as_array().unwrap();
            assert!(
                calls.iter().any(|c| c["capability"] == "services"
                    && c["operation"] == "restart"
                    && c["decision"] == "allowed"),
                "{calls:#?}"
            );
        } else {
            assert_eq!(restart["status"], "skipped", "{host}: {restart:#}");
        }
        assert!(rig.healthy(host), "{host} is not serving");
    }
    assert_ne!(
        rig.service_pid("web-2"),
        pid,
        "web-2's service was restarted"
    );

    // The controller's history, across hosts and for one host.
    let all = rig
        .operator(&["history", "--json", "--limit", "10"])
        .expect_code(0)
        .json();
    assert_eq!(
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["runbook"] == "service-down")
            .count(),
        3,
        "{all:#}"
    );
    let one = rig
        .operator(&["history", "--host", "web-2", "--json"])
        .expect_code(0)
        .json();
    assert!(
        one.as_array().unwrap().iter().all(|r| r["host"] == "web-2"),
        "{one:#}"
    );
    let text = rig
        .operator(&["history", "--host", "web-2"])
        .expect_code(0)
        .stdout();
    assert!(
        text.contains("web-2") && text.contains("service-down"),
        "{text}"
    );
}
