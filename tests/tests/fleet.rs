//! A fleet on real parts: a real `nats-server` with JetStream (file storage), a real
//! PostgreSQL, a controller (`runcap serve` with `[serve] fleet`) and three agents
//! (`runcap agent`), each a process with its own state directory, manifest and
//! supervised demo service.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runcap_e2e::fleet_rig::{Rig, password, state};
use runcap_e2e::free_port;

/// A NATS client logged in as `user`.
fn nats_as(rig: &Rig, user: &str) -> async_nats::Client {
    runcap_e2e::background()
        .block_on(
            async_nats::ConnectOptions::new()
                .user_and_password(user.to_string(), password(user))
                .custom_inbox_prefix(format!("_INBOX_{user}"))
                .connect(rig.nats.url()),
        )
        .unwrap()
}

#[test]
fn a_fan_out_run_restarts_the_service_only_where_it_is_down_and_the_controller_sees_every_call() {
    let Some(rig) = Rig::start(false) else { return };
    rig.wait_all_up();
    // web-2 loses its service.
    let pid = rig.kill_service("web-2");

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

#[test]
fn an_agent_killed_mid_step_recovers_the_run_at_restart_and_reports_it_without_running_it_again() {
    let Some(mut rig) = Rig::start(false) else {
        return;
    };
    let before = rig.requests("web-1");
    let id = rig.send("slow", "web-1", &["ms=20000"]);
    // The slow request has reached the service: the run is inside its second step.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.requests("web-1") < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the run never reached its slow step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.wait_show(&id, "started", |d| state(d) == "started");
    rig.kill_agent("web-1");
    rig.start_agent("web-1");
    let doc = rig.wait_show(&id, "reported", |d| state(d) == "finished");
    assert_eq!(doc["run"]["status"], "interrupted", "{doc:#}");
    assert_eq!(doc["host"], "web-1");
    let mine: Vec<_> = rig
        .local_runs("web-1")
        .into_iter()
        .filter(|r| r["runbook"] == "slow")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["id"], id.as_str());
    // first probe (GET /health), the slow one, and our /stats reads: no step ran twice.
    let after_restart = rig.requests("web-1");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rig.requests("web-1"),
        after_restart + 1,
        "only this /stats read"
    );
    assert_eq!(
        rig.local_runs("web-1").len(),
        mine.len() + 1,
        "plus `start`"
    );
}

/// Publishes `job` to `subject` twice, as two messages JetStream cannot tell apart as
/// repeats (each with its own message id).
fn publish_twice(js: &async_nats::jetstream::Context, subject: &str, job: &serde_json::Value) {
    let run_id = job["run_id"].as_str().expect("a job names its run");
    runcap_e2e::background().block_on(async {
        for copy in ["a", "b"] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{run_id}-{copy}").as_str());
            js.publish_with_headers(subject.to_string(), headers, job.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

#[test]
fn a_job_delivered_twice_runs_once_and_the_second_delivery_reports_the_first_run() {
    let Some(rig) = Rig::start(false) else { return };
    let before = rig.requests("web-2");
    let nats = nats_as(&rig, "controller");
    let job = serde_json::json!({
        "run_id": "dup-0001", "runbook": "slow", "vars": ["ms=10"], "dispatched_ms": 1
    });
    let js = runcap_e2e::background().block_on(async { async_nats::jetstream::new(nats) });
    // The agent, not JetStream, must tell the two apart.
    publish_twice(&js, "runcap.job.host.web-2", &job);
    // Unknown to the controller until the agent reports it (no job was dispatched).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = rig.operator(&["fleet", "show", "dup-0001", "--json"]);
        if out.code() == 0 && out.json()["run"]["status"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}{}",
            out.stdout(),
            out.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs: Vec<_> = rig
        .local_runs("web-2")
        .into_iter()
        .filter(|r| r["id"] == "dup-0001")
        .collect();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    // Both deliveries are acknowledged: nothing is left to deliver.
    let controller = nats_as(&rig, "controller");
    let pending = runcap_e2e::background().block_on(async {
        let js = async_nats::jetstream::new(controller);
        let mut stream = js.get_stream("RUNCAP_JOBS").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(pending, 0, "the work queue is empty");
    // Two probes ran once each: /health and /slow, plus the /stats reads.
    assert_eq!(rig.requests("web-2"), before + 2 + 1);
}

#[test]
fn an_agent_cannot_publish_as_another_agent_nor_take_its_jobs() {
    let Some(rig) = Rig::start(false) else { return };
    rig.wait_all_up();
    let forged =
        serde_json::json!({"type": "started", "run_id": "forged-1", "runbook": "slow", "at_ms": 1});
    let web1 = nats_as(&rig, "web-1");
    let (published, pulled, other_queue, claimed, own) = runcap_e2e::background().block_on(async {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(web1.clone());
        let published = match js
            .publish("runcap.event.web-2.started", forged.to_string().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        let pulled = web1
            .request(
                "$JS.API.CONSUMER.MSG.NEXT.RUNCAP_JOBS.agent-web-2",
                "{\"batch\":1,\"no_wait\":true}".into(),
            )
            .await;
        // A group it is not in: neither its queue nor a claim of its jobs.
        let other_queue = web1
            .request(
                "$JS.API.CONSUMER.MSG.NEXT.RUNCAP_JOBS.group-db",
                "{\"batch\":1,\"no_wait\":true}".into(),
            )
            .await;
        let claimed = match js.publish("runcap.claim.db.run-1", "web-1".into()).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        // Its own group's claim goes through.
        let own = js
            .publish("runcap.claim.api.perm-test-1", "web-1".into())
            .await
            .unwrap()
            .await;
        (published, pulled, other_queue, claimed, own)
    });
    assert!(published.is_err(), "web-1 published as web-2");
    assert!(pulled.is_err(), "web-1 pulled web-2's jobs: {pulled:?}");
    assert!(
        other_queue.is_err(),
        "web-1 pulled group db's jobs: {other_queue:?}"
    );
    assert!(claimed.is_err(), "web-1 claimed a job of group db");
    assert!(
        own.is_ok(),
        "web-1 cannot claim its own group's job: {own:?}"
    );
    // Its own subject works, and the controller never heard of the forged run.
    let out = rig.operator(&["fleet", "show", "forged-1", "--json"]);
    assert_eq!(out.code(), 2, "{}", out.stdout());
    assert!(out.stderr().contains("404"), "{}", out.stderr());
}

#[test]
fn a_tampered_or_cut_agent_chain_is_caught_by_fleet_audit() {
    let Some(rig) = Rig::start(false) else { return };
    rig.operator(&["fleet", "run", "slow", "--all", "--var", "ms=10"])
        .expect_code(0);
    // Every agent's checkpoint covering that run reaches the controller.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = rig.operator(&["fleet", "audit", "--json"]);
        let v = out.json();
        let all_ok = v.as_array().is_some_and(|a| {
            a.len() == 3
                && a.iter()
                    .all(|h| h["ok"] == true && h["checkpoint"].is_string())
        });
        if out.code() == 0 && all_ok {
            let text = rig.operator(&["fleet", "audit"]).expect_code(0).stdout();
            assert!(text.contains("✔ web-3: chain intact"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // web-3's history is edited; web-1's chain loses its last rows.
    let edit = |host: &str, sql: &str| {
        let db = rig
            .sb
            .path()
            .join(format!("agents/{host}/.runcap/runcap.db"));
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(sql).unwrap();
    };
    edit(
        "web-3",
        "UPDATE audit SET payload = '{\"rewritten\": true}' WHERE seq = 2;",
    );
    edit("web-1", "DELETE FROM audit WHERE seq > 2;");
    let out = rig.operator(&["fleet", "audit"]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    let text = out.stdout();
    assert!(text.contains("✔ web-2"), "{text}");
    assert!(text.contains("✘ web-3:"), "{text}");
    assert!(text.contains("✘ web-1:"), "{text}");
    assert!(text.contains("deleted from the end"), "{text}");
}

#[test]
fn a_nats_server_restarted_mid_run_loses_nothing() {
    let Some(mut rig) = Rig::start(false) else {
        return;
    };
    let id = rig.send("slow", "web-2", &["ms=3000"]);
    rig.wait_show(&id, "started", |d| state(d) == "started");
    rig.nats.kill();
    rig.nats.restart();
    let doc = rig.wait_show(&id, "finished", |d| state(d) == "finished");
    assert_eq!(doc["run"]["status"], "ok", "{doc:#}");
    assert_eq!(doc["run"]["steps"].as_array().unwrap().len(), 2, "{doc:#}");
    // Everything reconnected: a fan-out after the restart works too.
    rig.operator(&[
        "fleet",
        "run",
        "slow",
        "--group",
        "api",
        "--var",
        "ms=10",
        "--timeout",
        "2m",
    ])
    .expect_code(0);
    let runs = rig.local_runs("web-2");
    assert_eq!(runs.iter().filter(|r| r["id"] == id.as_str()).count(), 1);
}

#[test]
fn an_agent_cut_off_by_a_partition_is_seen_down_and_reports_its_run_when_it_comes_back() {
    let proxy_port = free_port();
    let via = BTreeMap::from([("web-3", proxy_port)]);
    // The proxy forwards to NATS: started once the rig knows NATS's port.
    let Some(rig) = Rig::start_with_proxy(&via) else {
        return;
    };
    let control = rig.sb.path().join("partition.json");
    // The run outlasts `lost_after` (5s), so it is under way when the controller gives up.
    let id = rig.send("slow", "web-3", &["ms=15000"]);
    rig.wait_show(&id, "started", |d| state(d) == "started");
    let fault = serde_json::json!({"faults": [{"id": "cut", "kind": "partition",
        "expires_at_ms": runcap_now_ms() + 60_000}]});
    std::fs::write(&control, fault.to_string()).unwrap();
    // The controller notices: web-3 is down, and its run lost.
    let lost = rig.wait_show(&id, "lost", |d| state(d) == "lost");
    assert!(
        lost["job"]["reason"].as_str().unwrap().contains("web-3"),
        "{lost:#}"
    );
    let status = rig.operator(&["fleet", "status", "--json"]).json();
    let web3 = status
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "web-3")
        .unwrap()
        .clone();
    assert_eq!(web3["up"], false, "{status:#}");
    std::fs::write(&control, "{\"faults\": []}").unwrap();
    let doc = rig.wait_show(&id, "reported after the partition", |d| {
        state(d) == "finished"
    });
    assert_eq!(doc["run"]["status"], "ok", "{doc:#}");
    assert_eq!(
        doc["retries"].as_array().unwrap().len(),
        0,
        "not idempotent: not run again"
    );
    assert_eq!(
        rig.local_runs("web-3")
            .iter()
            .filter(|r| r["runbook"] == "slow")
            .count(),
        1
    );
}

#[test]
fn a_lost_idempotent_run_runs_again_on_another_host_of_its_group() {
    let Some(mut rig) = Rig::start(true) else {
        return;
    };
    rig.wait_all_up();
    let id = rig.send("slow", "web-1", &["ms=10000"]);
    rig.wait_show(&id, "started", |d| state(d) == "started");
    rig.kill_agent("web-1");
    let doc = rig.wait_show(&id, "run again elsewhere", |d| {
        d["retries"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert_eq!(state(&doc), "lost", "{doc:#}");
    let retry = doc["retries"][0]["run_id"].as_str().unwrap().to_string();
    let again = rig.wait_show(&retry, "finished", |d| state(d) == "finished");
    let host = again["host"].as_str().unwrap();
    assert!(host == "web-2" || host == "web-3", "{again:#}");
    assert_eq!(again["run"]["status"], "ok", "{again:#}");
}

fn runcap_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_scheduled_dispatch_runs_the_runbook_on_every_host_of_its_group() {
    let extra = r#"
[serve.dispatch.probe-api]
runbook = "slow"
group = "api"
schedule = { every = "1s" }
"#;
    let Some(rig) = Rig::start_with(false, &BTreeMap::new(), extra) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for host in ["web-1", "web-2", "web-3"] {
        loop {
            let n = rig
                .local_runs(host)
                .iter()
                .filter(|r| r["runbook"] == "slow")
                .count();
            if n >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{host} ran `slow` {n} times");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The controller recorded them, by host.
    let runs = rig
        .operator(&["history", "--host", "web-3", "--json"])
        .expect_code(0)
        .json();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["runbook"] == "slow"),
        "{runs:#}"
    );
}

/// An Alertmanager webhook (version 4) with one alert per label set.
fn alerts(status: &str, label_sets: &[serde_json::Value]) -> String {
    let alerts: Vec<serde_json::Value> = label_sets
        .iter()
        .map(|l| serde_json::json!({ "status": status, "labels": l }))
        .collect();
    serde_json::json!({ "version": "4", "status": status, "alerts": alerts }).to_string()
}

#[test]
fn an_alert_runs_its_runbook_on_the_host_it_names_or_every_host_of_a_group_and_flapping_is_held() {
    let extra = r#"
[serve.triggers.host-down]
runbook = "slow"
match = { alertname = "ServiceDown" }
token = "alert-token"
host = "{{ trigger.labels.instance }}"
params = { ms = "1" }

[serve.triggers.group-check]
runbook = "service-down"
token = "alert-token"
group = "api"
flap = { runs = 2, within = "10m" }

[secrets.alert-token]
env = "CONTROLLER_API_TOKEN"
"#;
    let Some(rig) = Rig::start_with(false, &BTreeMap::new(), extra) else {
        return;
    };
    rig.wait_all_up();
    let down = |instance: &str| {
        alerts(
            "firing",
            &[serde_json::json!({ "alertname": "ServiceDown", "instance": instance })],
        )
    };

    // The alert names web-2: the runbook runs there and nowhere else.
    let (code, doc) = rig.post("/api/v1/triggers/host-down", &down("web-2"));
    assert_eq!(code, 202, "{doc:#}");
    let sent = doc["dispatched"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "{doc:#}");
    assert_eq!(sent[0]["host"], "web-2");
    let id = sent[0]["run_id"].as_str().unwrap();
    assert_eq!(doc["started"], serde_json::json!([id]));
    let done = rig.wait_show(id, "finished", |d| state(d) == "finished");
    assert_eq!(done["host"], "web-2");
    assert_eq!(done["run"]["status"], "ok", "{done:#}");
    for other in ["web-1", "web-3"] {
        assert!(
            rig.local_runs(other).iter().all(|r| r["runbook"] != "slow"),
            "{other}"
        );
    }

    // The same alert again is a duplicate; one naming no agent is refused with the reason.
    let (code, doc) = rig.post("/api/v1/triggers/host-down", &down("web-2"));
    assert_eq!(
        (code, doc["deduplicated"].as_u64()),
        (202, Some(1)),
        "{doc:#}"
    );
    let (code, doc) = rig.post("/api/v1/triggers/host-down", &down("db-9"));
    assert_eq!(code, 422, "{doc:#}");
    let reason = doc["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("host db-9 names no agent"), "{reason}");
    let (_, doc) = rig.post(
        "/api/v1/triggers/host-down",
        &alerts(
            "resolved",
            &[serde_json::json!({ "alertname": "ServiceDown", "instance": "web-1" })],
        ),
    );
    assert_eq!(doc["resolved"], 1, "{doc:#}");
    assert_eq!(doc["dispatched"], serde_json::json!([]));

    // A group trigger sends one job per member; its flap guard counts the jobs each host
    // was sent, so the third alert within the window is held under an incident.
    let mut hosts_sent = Vec::new();
    for n in 0..2 {
        let (code, doc) = rig.post(
            "/api/v1/triggers/group-check",
            &alerts(
                "firing",
                &[serde_json::json!({ "alertname": "Check", "n": n.to_string() })],
            ),
        );
        assert_eq!(code, 202, "{doc:#}");
        let mut hosts: Vec<String> = doc["dispatched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["host"].as_str().unwrap().to_string())
            .collect();
        hosts.sort();
        hosts_sent.push(hosts);
    }
    assert_eq!(hosts_sent, vec![vec!["web-1", "web-2", "web-3"]; 2]);
    let (code, doc) = rig.post(
        "/api/v1/triggers/group-check",
        &alerts(
            "firing",
            &[serde_json::json!({ "alertname": "Check", "n": "2" })],
        ),
    );
    assert_eq!(code, 202, "{doc:#}");
    assert_eq!(doc["held"], 1, "{doc:#}");
    assert!(doc["incident"].as_i64().is_some(), "{doc:#}");
    assert_eq!(doc["dispatched"], serde_json::json!([]));
}

#[test]
fn check_says_where_a_fleet_trigger_cannot_go() {
    let sb = runcap_e2e::Sandbox::new();
    sb.write(
        "fleet.toml",
        "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[store]\nurl = \"host=/tmp dbname=runcap\"\n[agents.web-1]\ngroups = [\"api\"]\n",
    );
    let manifest = |serve: &str, trigger: &str| {
        format!(
            "environment = \"control\"\n[secrets.alert]\nenv = \"ALERT_TOKEN\"\n[serve]\n{serve}\n[serve.triggers.down]\nrunbook = \"service-down\"\ntoken = \"alert\"\n{trigger}\n"
        )
    };
    let fleet = "fleet = \"fleet.toml\"";
    for (serve, trigger, expect) in [
        (
            "",
            "group = \"api\"",
            "sends its runbook to a fleet, and this server controls none",
        ),
        (fleet, "group = \"db\"", "group db names no agent of"),
        (fleet, "host = \"web-9\"", "host web-9 names no agent of"),
        (
            fleet,
            "host = \"web-1\"\nall = true",
            "a trigger needs exactly one target",
        ),
        (
            fleet,
            "host = \"web-1\"\none = true",
            "a trigger needs exactly one target",
        ),
        // Without a target the runbook runs here, so it must be declared here.
        (fleet, "", "no runbook `service-down` is declared"),
    ] {
        sb.write("runcap.toml", &manifest(serve, trigger));
        let out = sb.run(&["check"]);
        assert_eq!(out.code(), 2, "{trigger}: {}", out.stdout());
        assert!(out.stderr().contains(expect), "{trigger}: {}", out.stderr());
        assert!(out.stderr().contains("runcap.toml:"), "{}", out.stderr());
    }
    // A fixed agent, a group, everyone, or a template over the alert are all accepted.
    for trigger in [
        "host = \"web-1\"",
        "group = \"api\"",
        "all = true",
        "group = \"api\"\none = true",
        "host = \"{{ trigger.labels.instance }}\"",
    ] {
        sb.write("runcap.toml", &manifest(fleet, trigger));
        let out = sb.run(&["check"]);
        assert_eq!(out.code(), 0, "{trigger}: {}", out.stderr());
    }
}

#[test]
fn a_fleet_over_tls_works_and_refuses_plain_clients_and_servers_its_ca_did_not_sign() {
    let Some(mut rig) = Rig::start_over_tls() else {
        return;
    };
    rig.wait_all_up();
    // nats-server takes TLS clients only, and the agents and the controller reach it:
    // a client that does not trust the fleet's CA gets nowhere.
    let plain = runcap_e2e::background().block_on(
        async_nats::ConnectOptions::new()
            .user_and_password("controller".into(), password("controller"))
            .connect(format!("nats://localhost:{}", rig.nats.port)),
    );
    let e = plain
        .expect_err("a client without the CA connected")
        .to_string();
    assert!(
        e.to_lowercase().contains("tls") || e.contains("certificate"),
        "{e}"
    );
    let id = rig.send("slow", "web-1", &["ms=1"]);
    let done = rig.wait_show(&id, "finished", |d| state(d) == "finished");
    assert_eq!(done["run"]["status"], "ok", "{done:#}");
    // The controller's connections are TLS, as the server itself reports.
    let tls = rig._pg.psql(
        "postgres",
        "select count(*) filter (where s.ssl), count(*) from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name = 'runcap';",
    );
    let (ssl, all) = tls.split_once('|').unwrap();
    assert!(all != "0" && ssl == all, "TLS connections|all: {tls}");

    // Another CA: the controller will not talk to this server, and says why.
    rig.controller = None;
    let other = runcap_e2e::demo_service::test_pki(30).unwrap();
    rig.sb.write("ca.pem", &other.ca_pem);
    let out = rig
        .sb
        .runcap()
        .args(["serve", "--env", "controller/runcap.toml"])
        .env("CONTROLLER_NATS_PASSWORD", password("controller"))
        .env("CONTROLLER_API_TOKEN", runcap_e2e::fleet_rig::TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PostgreSQL") && stderr.contains("certificate"),
        "{stderr}"
    );

    // sslmode=require with no CA to verify the server is refused before anything runs.
    let fleet = std::fs::read_to_string(rig.sb.path().join("fleet.toml")).unwrap();
    let store = fleet.find("[store]").unwrap();
    let (nats, store) = fleet.split_at(store);
    let fleet = format!(
        "{nats}{}",
        store
            .replacen("ca = \"ca.pem\"\n", "", 1)
            .replace("dbname=runcap", "dbname=runcap sslmode=require")
    );
    rig.sb.write("fleet.toml", &fleet);
    let check = rig.sb.run(&["check", "--env", "controller/runcap.toml"]);
    assert_eq!(check.code(), 2, "{}", check.stdout());
    assert!(
        check.stderr().contains("sslmode=require but names no CA"),
        "{}",
        check.stderr()
    );
}

#[test]
fn caps_diff_between_two_hosts_shows_what_one_may_do_that_the_other_may_not() {
    let Some(mut rig) = Rig::start(false) else {
        return;
    };
    rig.wait_all_up();
    // web-3's probe may now also reach a status page: its manifest is changed and it
    // comes back with its new grants.
    let path = "agents/web-3/runcap.toml";
    let manifest = std::fs::read_to_string(rig.sb.path().join(path)).unwrap();
    let port = rig.ports["web-3"];
    let before = format!("grants.http = {{ allow = [\"http://127.0.0.1:{port}\"] }}");
    assert!(manifest.contains(&before), "{manifest}");
    let wider = manifest.replacen(
        &before,
        &format!(
            "grants.http = {{ allow = [\"http://127.0.0.1:{port}\", \"https://status.example.com\"] }}"
        ),
        1,
    );
    rig.sb.write(path, &wider);
    rig.kill_agent("web-3");
    rig.start_agent("web-3");
    let diff = |from: &str, to: &str| rig.operator(&["fleet", "caps", "--diff", from, to]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = diff("web-1", "web-3");
        if out.stdout().contains("status.example.com") {
            break out;
        }
        assert!(Instant::now() < deadline, "{}", out.stdout());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.code(), 1, "{}", out.stdout());
    let text = out.stdout();
    assert!(text.starts_with("web-3 against web-1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("plugins.probe.grants.http") && l.contains("status.example.com")),
        "{text}"
    );
    assert!(
        text.contains("widen what web-3 may do beyond web-1"),
        "{text}"
    );

    // The other way round, the status page is something web-1 may not do: it narrows.
    let back = rig
        .operator(&["fleet", "caps", "--diff", "web-3", "web-1", "--json"])
        .json();
    let about: Vec<&serde_json::Value> = back["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["what"].as_str().unwrap().contains("status.example.com"))
        .collect();
    assert!(!about.is_empty(), "{back:#}");
    assert!(about.iter().all(|c| c["widens"] == false), "{back:#}");

    // The same through `runcap caps --fleet`, and the hint for two hosts without it
    // works as written.
    let fleet_caps = rig
        .operator(&["caps", "--fleet", "--json"])
        .expect_code(0)
        .json();
    let hosts: Vec<&str> = fleet_caps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["web-1", "web-2", "web-3"], "{fleet_caps:#}");
    let no_fleet = rig.operator(&["caps", "--diff", "web-1", "web-3", "--json"]);
    assert_eq!(no_fleet.code(), 2, "{}", no_fleet.stderr());
    let hint = no_fleet
        .stderr()
        .lines()
        .find_map(|l| l.split_once("= help: ").map(|(_, h)| h.to_string()))
        .unwrap();
    assert_eq!(hint, "runcap caps --fleet --diff web-1 web-3");
    let mut pasted: Vec<&str> = hint.split_whitespace().skip(1).collect();
    pasted.push("--json");
    let through_caps = rig.operator(&pasted);
    assert_eq!(through_caps.code(), 1, "{}", through_caps.stderr());
    let through_fleet = rig.operator(&["fleet", "caps", "--diff", "web-1", "web-3", "--json"]);
    assert_eq!(through_caps.json(), through_fleet.json());

    let unknown = diff("web-1", "db-9");
    assert_ne!(unknown.code(), 0);
    assert!(
        unknown.stderr().contains("no agent `db-9`"),
        "{}",
        unknown.stderr()
    );
}

/// Sends `slow` to one agent of group api (its queue); the job's run id.
fn queue_one(rig: &Rig, ms: &str) -> String {
    let doc = rig
        .operator(&[
            "fleet",
            "run",
            "slow",
            "--group",
            "api",
            "--one",
            "--var",
            ms,
            "--no-wait",
            "--json",
        ])
        .expect_code(0)
        .json();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{doc:#}");
    // No host yet: the first agent of the group with a free slot takes it.
    assert!(runs[0]["host"].is_null(), "{doc:#}");
    assert_eq!(runs[0]["queue"], "api", "{doc:#}");
    runs[0]["run_id"].as_str().unwrap().to_string()
}

#[test]
fn a_run_for_one_agent_of_a_group_is_queued_and_taken_by_an_idle_agent_that_is_up() {
    let Some(mut rig) = Rig::start(false) else {
        return;
    };
    rig.wait_all_up();
    // Three long runs at once: an agent with one under way (one slot) leaves the next
    // to an idle one.
    let sent: Vec<String> = (0..3).map(|_| queue_one(&rig, "ms=3000")).collect();
    let mut hosts: Vec<String> = sent
        .iter()
        .map(|id| {
            let done = rig.wait_show(id, "finished", |d| state(d) == "finished");
            assert_eq!(done["run"]["status"], "ok", "{done:#}");
            assert_eq!(done["job"]["host"], done["host"], "{done:#}");
            done["host"].as_str().unwrap().to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["web-1", "web-2", "web-3"], "{sent:?}");

    // An agent that is gone takes nothing.
    rig.kill_agent("web-2");
    for _ in 0..4 {
        let id = queue_one(&rig, "ms=1");
        let done = rig.wait_show(&id, "finished", |d| state(d) == "finished");
        assert_ne!(done["host"], "web-2", "{done:#}");
    }
}

#[test]
fn a_group_job_delivered_twice_is_claimed_once_and_runs_on_one_host_only() {
    let Some(rig) = Rig::start(false) else { return };
    rig.wait_all_up();
    let before: u64 = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|h| rig.requests(h))
        .sum();
    let nats = nats_as(&rig, "controller");
    let job = serde_json::json!({
        "run_id": "dup-group-1", "runbook": "slow", "vars": ["ms=1500"], "dispatched_ms": 1
    });
    let js = runcap_e2e::background().block_on(async { async_nats::jetstream::new(nats) });
    // Two agents can take the two copies at once: the claim must tell them apart.
    publish_twice(&js, "runcap.job.group.api", &job);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let out = rig.operator(&["fleet", "show", "dup-group-1", "--json"]);
        if out.code() == 0 && out.json()["run"]["status"] == "ok" {
            break out.json();
        }
        assert!(
            Instant::now() < deadline,
            "{}{}",
            out.stdout(),
            out.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let claimant = done["host"].as_str().unwrap().to_string();
    // The claim names the host that ran it, and no other host has the run.
    let claim = runcap_e2e::background().block_on(async {
        let stream = js.get_stream("RUNCAP_CLAIMS").await.unwrap();
        stream
            .get_last_raw_message_by_subject("runcap.claim.api.dup-group-1")
            .await
            .unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&claim.payload), claimant);
    for host in ["web-1", "web-2", "web-3"] {
        let has = rig
            .local_runs(host)
            .into_iter()
            .filter(|r| r["id"] == "dup-group-1")
            .count();
        assert_eq!(has, usize::from(host == claimant), "{host}");
    }
    // Both copies end up acknowledged (the second once it reaches the claimant).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = runcap_e2e::background().block_on(async {
            let mut stream = js.get_stream("RUNCAP_JOBS").await.unwrap();
            stream.info().await.unwrap().state.messages
        });
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} jobs still queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its two probes were made once, plus each host's /stats reads.
    let after: u64 = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|h| rig.requests(h))
        .sum();
    assert_eq!(after, before + 2 + 3);
    // The second copy reached another agent while the claimant was busy, and was
    // handed back.
    let handed_back = ["web-1", "web-2", "web-3"].iter().any(|h| {
        std::fs::read_to_string(rig.sb.path().join(format!("{h}.log")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("dup-group-1") && l.contains(&format!("claimed by {claimant}")))
    });
    assert!(handed_back, "no agent was refused the claim");
}

#[test]
fn a_lost_run_of_a_group_queue_is_queued_again_and_taken_by_another_agent() {
    let Some(mut rig) = Rig::start(true) else {
        return;
    };
    rig.wait_all_up();
    let id = queue_one(&rig, "ms=10000");
    let started = rig.wait_show(&id, "started", |d| state(d) == "started");
    let first = started["job"]["host"].as_str().unwrap().to_string();
    rig.kill_agent(&first);
    let doc = rig.wait_show(&id, "run again", |d| {
        d["retries"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert_eq!(state(&doc), "lost", "{doc:#}");
    assert!(
        doc["job"]["reason"].as_str().unwrap().contains(&first),
        "{doc:#}"
    );
    assert_eq!(doc["retries"][0]["queue"], "api", "{doc:#}");
    let retry = doc["retries"][0]["run_id"].as_str().unwrap().to_string();
    let again = rig.wait_show(&retry, "finished", |d| state(d) == "finished");
    assert_ne!(again["host"], first.as_str(), "{again:#}");
    assert_eq!(again["run"]["status"], "ok", "{again:#}");
}

#[test]
fn incidents_of_every_agent_are_read_from_the_controller_and_follow_an_acknowledgement() {
    let Some(rig) = Rig::start(false) else {
        return;
    };
    rig.wait_all_up();
    // web-2's service dies, so its `slow` runbook fails and opens an incident there.
    rig.kill_service("web-2");
    let id = rig.send("slow", "web-2", &["ms=1"]);
    let done = rig.wait_show(&id, "finished", |d| state(d) == "finished");
    assert_eq!(done["run"]["status"], "fail", "{done:#}");
    // `show` reads the run from the controller too, whichever host ran it.
    let shown = rig.operator(&["show", &id, "--json"]).expect_code(0).json();
    assert_eq!(shown["host"], "web-2", "{shown:#}");

    let incident_of = |want: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = rig.operator(&["incidents", "--json"]).expect_code(0).json();
            if let Some(i) = list
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["host"] == "web-2" && i["runbook"] == "slow" && i["status"] == want)
            {
                return i.clone();
            }
            assert!(Instant::now() < deadline, "no {want} incident: {list:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let open = incident_of("open");
    assert!(
        open["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["run_id"] == id.as_str()),
        "{open:#}"
    );
    let text = rig.operator(&["incidents"]).expect_code(0).stdout();
    assert!(text.contains("web-2: incident #"), "{text}");
    let quiet = rig
        .operator(&["incidents", "--host", "web-1"])
        .expect_code(0)
        .stdout();
    assert_eq!(quiet.trim(), "no open incidents");

    // Acknowledged on web-2 itself: the controller hears of it with the next checkpoint.
    let number = open["id"].as_i64().unwrap().to_string();
    rig.sb
        .run(&[
            "incidents",
            "ack",
            &number,
            "--note",
            "looking at it",
            "--env",
            "agents/web-2/runcap.toml",
        ])
        .expect_code(0);
    let acked = incident_of("acknowledged");
    assert!(
        acked["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap_or("")
                .contains("looking at it")),
        "{acked:#}"
    );

    // Resolved from the controller: the agent records it in its own store, and reports it.
    let out = rig
        .operator(&[
            "incidents",
            "--host",
            "web-2",
            "resolve",
            &number,
            "--note",
            "upstream fixed",
        ])
        .expect_code(0)
        .stdout();
    assert!(
        out.contains("web-2: incident #") && out.contains("resolved"),
        "{out}"
    );
    let local = rig
        .sb
        .run(&[
            "incidents",
            "--all",
            "--json",
            "--env",
            "agents/web-2/runcap.toml",
        ])
        .expect_code(0)
        .json();
    let here = local
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == open["id"])
        .unwrap()
        .clone();
    assert_eq!(here["status"], "resolved", "{here:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = rig
            .operator(&["incidents", "--all", "--json", "--host", "web-2"])
            .expect_code(0)
            .json();
        if list
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["status"] == "resolved")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never resolved: {list:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // An incident the agent does not have open is refused with the reason.
    let again = rig.operator(&["incidents", "--host", "web-2", "ack", &number]);
    assert_ne!(again.code(), 0);
    assert!(
        again.stderr().contains("no open incident"),
        "{}",
        again.stderr()
    );
}
