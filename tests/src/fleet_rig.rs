//! A fleet on real parts, for tests and benchmarks: a real `nats-server` with JetStream,
//! a real PostgreSQL, a controller (`runcap serve` with `[serve] fleet`) and three agents
//! (`runcap agent`), each a process with its own state directory, manifest, pinned audit
//! key and supervised demo service.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{Nats, Postgres};
use crate::{Sandbox, Served, free_port, plugin_lines, served_by};

pub const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
pub const TOKEN: &str = "fleet-api-token-0123456789abcdef";

pub fn password(user: &str) -> String {
    format!("nats-password-for-{user}-0123456789")
}

/// Everything a fleet test runs: the servers, the controller and the agents.
pub struct Rig {
    pub sb: Sandbox,
    pub _pg: Postgres,
    pub nats: Nats,
    pub controller: Option<Served>,
    pub agents: BTreeMap<String, Child>,
    /// Each agent's demo service port.
    pub ports: BTreeMap<String, u16>,
    /// runcap's own partition proxy between an agent and NATS, when a test cuts one off.
    pub proxy: Option<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the processes said, to tell why.
            for name in ["controller", "web-1", "web-2", "web-3"] {
                let log = std::fs::read_to_string(self.sb.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {name}.log (last lines) ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for (_, mut a) in std::mem::take(&mut self.agents) {
            let _ = a.kill();
            let _ = a.wait();
        }
        // The services the agents supervise.
        for host in HOSTS {
            crate::kill_recorded(
                &self
                    .sb
                    .path()
                    .join(format!("agents/{host}/.runcap/services/api.json")),
            );
        }
    }
}

pub fn agent_manifest(port: u16, idempotent: bool) -> String {
    format!(
        r#"
environment = "prod"

[vars]
health = "http://127.0.0.1:{port}/health"

[secrets.nats-password]
env = "AGENT_NATS_PASSWORD"

[services.api]
driver = "process"
command = "{demo}"
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

[runbooks.slow]
description = "Two probes, the second slow"
idempotent = {idempotent}
params.ms = {{ type = "int", default = 3000 }}
[[runbooks.slow.steps]]
id = "first"
uses = "probe"
with = {{ url = "{{{{ vars.health }}}}" }}
[[runbooks.slow.steps]]
id = "wait"
uses = "probe"
with = {{ url = "http://127.0.0.1:{port}/slow?ms={{{{ params.ms }}}}", timeout = "30s" }}

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
        demo = crate::demo_service_bin().display(),
        probe = plugin_lines("http-probe"),
        control = plugin_lines("service-control"),
    )
}

impl Rig {
    /// Starts PostgreSQL, nats-server (with the fleet's own permissions), the controller
    /// and the three agents, each agent's service running. `None` when a server is not
    /// installed (said on stderr).
    pub fn start(idempotent: bool) -> Option<Rig> {
        Self::start_with(idempotent, &BTreeMap::new(), "")
    }

    /// As [`Rig::start`], some agents reaching NATS at another address (a proxy): the
    /// address is given the NATS port once it is known.
    pub fn start_with(
        idempotent: bool,
        nats_via: &BTreeMap<&str, u16>,
        controller_extra: &str,
    ) -> Option<Rig> {
        Self::start_full(idempotent, nats_via, controller_extra, false)
    }

    /// As [`Rig::start`], over TLS: nats-server accepts TLS clients only, PostgreSQL is
    /// reached over TCP to `localhost` with TLS, and the fleet file names the CA both
    /// certificates come from (the sandbox's `ca.pem`).
    pub fn start_over_tls() -> Option<Rig> {
        Self::start_full(false, &BTreeMap::new(), "", true)
    }

    fn start_full(
        idempotent: bool,
        nats_via: &BTreeMap<&str, u16>,
        controller_extra: &str,
        tls: bool,
    ) -> Option<Rig> {
        let sb = Sandbox::new();
        let pki = tls.then(|| crate::demo_service::test_pki(30).unwrap());
        let (pg, store) = if let Some(pki) = &pki {
            sb.write("ca.pem", &pki.ca_pem);
            let pg = Postgres::start_tls(&pki.cert_pem, &pki.key_pem)?;
            let url = pg.tcp_conn_string("runcap");
            (pg, format!("url = \"{url}\"\nca = \"ca.pem\""))
        } else {
            let pg = Postgres::start()?;
            let url = pg.conn_string("runcap");
            (pg, format!("url = \"{url}\""))
        };
        pg.psql("postgres", "create database runcap;");
        let api_port = free_port();
        let nats_port_holder = free_port();
        let (nats_host, nats_ca) = match pki {
            Some(_) => ("localhost", "ca = \"ca.pem\"\n"),
            None => ("127.0.0.1", ""),
        };
        let mut fleet = format!(
            r#"
[nats]
url = "nats://{nats_host}:{nats_port_holder}"
password_secret = "nats-password"
{nats_ca}
[store]
{store}

[timing]
heartbeat = "300ms"
lost_after = "5s"
checkpoint_every = "1s"
"#
        );
        for h in HOSTS {
            // Each agent's audit key, made beforehand so the fleet file can pin it.
            let dir = sb.path().join(format!("agents/{h}/.runcap"));
            std::fs::create_dir_all(&dir).unwrap();
            sb.run(&["keygen", h, "--dir", dir.to_str().unwrap()])
                .expect_code(0);
            std::fs::rename(dir.join(format!("{h}.key")), dir.join("agent-audit.key")).unwrap();
            let public = std::fs::read_to_string(dir.join(format!("{h}.pub"))).unwrap();
            fleet += &format!(
                "\n[agents.{h}]\ngroups = [\"api\"]\naudit_key = \"{}\"\n",
                public.trim()
            );
            if let Some(port) = nats_via.get(h) {
                fleet += &format!("nats = \"nats://127.0.0.1:{port}\"\n");
            }
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
        let mut nats_config = auth;
        if let Some(pki) = &pki {
            sb.write("nats/server.pem", &pki.cert_pem);
            sb.write("nats/server.key", &pki.key_pem);
            nats_config = format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n{nats_config}",
                sb.path().join("nats/server.pem").display(),
                sb.path().join("nats/server.key").display()
            );
        }
        let nats = Nats::start_on(nats_port_holder, &nats_config, &env_refs)?;
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
{controller_extra}
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
            proxy: None,
        };
        if let Some(port) = nats_via.values().next() {
            rig.start_proxy(*port);
        }
        rig.start_controller();
        for h in HOSTS {
            rig.start_agent(h);
        }
        Some(rig)
    }

    /// As [`Rig::start`], with the agents `via` names reaching NATS through runcap's
    /// partition proxy (whose control file is `partition.json`).
    pub fn start_with_proxy(via: &BTreeMap<&str, u16>) -> Option<Rig> {
        Self::start_with(false, via, "")
    }

    pub fn start_proxy(&mut self, port: u16) {
        let control = self.sb.path().join("partition.json");
        std::fs::write(&control, "{\"faults\": []}").unwrap();
        let child = self
            .sb
            .runcap()
            .args([
                "proxy-serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &format!("127.0.0.1:{}", self.nats.port),
                "--control",
                control.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proxy = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the proxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start_controller(&mut self) {
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

    pub fn start_agent(&mut self, host: &str) {
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
    pub fn operator(&self, args: &[&str]) -> crate::Run {
        let addr = &self.controller.as_ref().expect("controller").addr;
        let out = self
            .sb
            .runcap()
            .args(args)
            .env("RUNCAP_CONTROLLER", format!("http://{addr}"))
            .env("RUNCAP_TOKEN", TOKEN)
            .output()
            .unwrap();
        crate::Run(out)
    }

    /// Waits until `runcap fleet status` says every agent is up.
    pub fn wait_all_up(&self) {
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

    pub fn service_pid(&self, host: &str) -> i64 {
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

    pub fn healthy(&self, host: &str) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.ports[host])).is_ok()
    }
}

/// `GET path` on loopback `port`, the body as JSON.
pub fn http_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Rig {
    /// `POST path` on the controller with the API token as bearer; the status and the
    /// body as JSON.
    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let addr = &self.controller.as_ref().expect("controller").addr;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not HTTP: {text}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }

    /// Kills `host`'s supervised service with SIGKILL and waits until it no longer
    /// answers; its pid.
    pub fn kill_service(&self, host: &str) -> i64 {
        let pid = self.service_pid(host);
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.healthy(host) {
            assert!(Instant::now() < deadline, "{host}'s service did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    /// Sends `runbook` to one host without waiting; its run id.
    pub fn send(&self, runbook: &str, host: &str, vars: &[&str]) -> String {
        let mut args = vec![
            "fleet",
            "run",
            runbook,
            "--host",
            host,
            "--no-wait",
            "--json",
        ];
        for v in vars {
            args.extend(["--var", v]);
        }
        let doc = self.operator(&args).expect_code(0).json();
        doc["runs"][0]["run_id"].as_str().unwrap().to_string()
    }

    /// `runcap fleet show ID --json`.
    pub fn show(&self, run_id: &str) -> serde_json::Value {
        self.operator(&["fleet", "show", run_id, "--json"])
            .expect_code(0)
            .json()
    }

    /// Polls `fleet show` until `done` holds.
    pub fn wait_show(
        &self,
        run_id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let doc = self.show(run_id);
            if done(&doc) {
                return doc;
            }
            assert!(Instant::now() < deadline, "never {what}: {doc:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The runs an agent's own store holds.
    pub fn local_runs(&self, host: &str) -> Vec<serde_json::Value> {
        self.sb
            .run(&[
                "history",
                "--env",
                &format!("agents/{host}/runcap.toml"),
                "--json",
            ])
            .expect_code(0)
            .json()
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Requests the agent's demo service has answered.
    pub fn requests(&self, host: &str) -> u64 {
        http_json(self.ports[host], "/stats")["requests"]
            .as_u64()
            .unwrap()
    }

    pub fn kill_agent(&mut self, host: &str) {
        let mut a = self.agents.remove(host).unwrap();
        a.kill().unwrap();
        a.wait().unwrap();
    }
}

pub fn state(doc: &serde_json::Value) -> &str {
    doc["job"]["state"].as_str().unwrap_or_default()
}
