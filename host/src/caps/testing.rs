//! Helpers for testing one capability alone: its grant read from a small inline manifest,
//! and an action's state to call its `Host` impl on, with no plugin and no engine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::core::{
    ActionCore, ActionInfo, CallRecord, Capability, Declared, HostState, MemoryLimiter, Registered,
    ValidGrants,
};
use super::{Entry, wasi};
use crate::manifest::{KeyPath, SourceFile, Sources, Validator};
use crate::store::{RunStart, Store};

/// What a manifest declares besides plugins, for grants that refer to it.
#[derive(Default)]
pub struct Decl {
    pub services: BTreeMap<String, crate::services::ServiceDef>,
    pub secrets: BTreeMap<String, crate::secrets::SecretSource>,
    pub proxies: BTreeMap<String, crate::chaos::ProxyDef>,
}

/// What `manifest` declares (services, secrets, proxies), validated as a manifest's are;
/// panics with the diagnostics if they do not validate.
pub fn declared(manifest: &str, dir: &std::path::Path) -> Decl {
    let file = Arc::new(SourceFile::new(
        dir.join("runcap.toml"),
        manifest.to_string(),
    ));
    let raw: crate::manifest::raw::Manifest =
        toml::from_str(&format!("environment = \"test\"\n{manifest}")).expect("manifest shape");
    let merged: toml::Table = toml::from_str(manifest).expect("test manifest is TOML");
    let sources = Sources::single(file, merged);
    let mut v = Validator::new(&sources);
    let decl = Decl {
        services: crate::services::validate_services(&mut v, raw.services),
        secrets: crate::secrets::validate_secrets(&mut v, raw.secrets),
        proxies: crate::chaos::proxy::validate_proxies(&mut v, raw.proxies),
    };
    let diags = v.into_diagnostics();
    assert!(diags.is_empty(), "{diags:?}");
    decl
}

/// The resources of an environment declaring `decl`, with its state under `state_dir`
/// and its fault journal in `store`.
pub fn resources(
    decl: &Decl,
    state_dir: &std::path::Path,
    store: Option<Arc<Store>>,
) -> super::Resources {
    let secrets = Arc::new(crate::secrets::SecretStore::new(decl.secrets.clone()));
    let services = Arc::new(crate::services::ServiceManager::new(
        decl.services.clone(),
        state_dir,
        Arc::default(),
    ));
    let proxies = Arc::new(crate::chaos::ProxyManager::new(
        decl.proxies.clone(),
        state_dir,
    ));
    super::Resources {
        faults: Arc::new(crate::chaos::FaultManager::new(
            store,
            services.clone(),
            proxies.clone(),
            state_dir,
        )),
        services,
        secrets,
        proxies,
        redactor: Arc::default(),
    }
}

/// Reads `C`'s grant of plugin `p` from `manifest` (TOML text, as if in `dir`):
/// the validated grant, or every diagnostic as printed (with `file:line`).
pub fn grant<C: Capability>(
    manifest: &str,
    dir: &std::path::Path,
    decl: &Decl,
) -> Result<Arc<C::Grant>, Vec<String>> {
    let file = Arc::new(SourceFile::new(
        dir.join("runcap.toml"),
        manifest.to_string(),
    ));
    let merged: toml::Table = toml::from_str(manifest).expect("test manifest is TOML");
    let sources = Sources::single(file, merged.clone());
    let mut v = Validator::new(&sources);
    let at = KeyPath::root()
        .key("plugins")
        .key("p")
        .key("grants")
        .key(C::NAME);
    let raw = merged["plugins"]["p"]["grants"][C::NAME].clone();
    let declared = Declared {
        services: &decl.services,
        secrets: &decl.secrets,
        proxies: &decl.proxies,
    };
    let mut out = ValidGrants::default();
    Registered::<C>::ENTRY.validate(&mut v, &at, raw, &declared, &mut out);
    let diags = v.into_diagnostics();
    if !diags.is_empty() {
        return Err(diags.iter().map(ToString::to_string).collect());
    }
    Ok(out
        .get_arc::<C, C::Grant>()
        .expect("a grant without diagnostics"))
}

/// One action's state (of plugin `p`, in run `run-1`) whose calls are recorded in a real
/// store, as during a run: [`Action::calls`] are the call records, [`Action::audit`]
/// the audit rows they wrote.
pub struct Action {
    pub state: HostState,
    pub store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl Action {
    /// The calls the store recorded for the action, as `show` reads them.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        self.store
            .run("run-1")
            .expect("the store reads")
            .expect("the run exists")
            .steps
            .into_iter()
            .flat_map(|s| s.calls)
            .collect()
    }

    /// The audit rows of the action's calls: (capability, decision, target).
    pub fn audit(&self) -> Vec<(String, String, String)> {
        self.store
            .audit_since(0)
            .expect("the audit reads")
            .into_iter()
            .filter(|r| r["kind"] == "call")
            .map(|r| {
                let p = &r["payload"];
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (s(&p["capability"]), s(&p["decision"]), s(&p["target"]))
            })
            .collect()
    }
}

/// The state of one action of plugin `p`, with `granted` prepared for it.
pub fn action(granted: super::Prepared, dry_run: bool, output_limit: u64) -> HostState {
    recorded(granted, dry_run, output_limit).state
}

/// [`action`], recording its calls in a real store (see [`Action`]).
pub fn recorded(granted: super::Prepared, dry_run: bool, output_limit: u64) -> Action {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path()).expect("store opens"));
    store
        .begin_run(&RunStart {
            id: "run-1",
            environment: "test",
            runbook: "rb",
            manifest: std::path::Path::new("runcap.toml"),
            dry_run,
        })
        .expect("run recorded");
    store
        .step_started("run-1", 0, "s", "p", crate::store::records::Phase::Main)
        .expect("step recorded");
    let sink_store = store.clone();
    let core = ActionCore {
        plugin: "p".into(),
        action: ActionInfo {
            run_id: "run-1".into(),
            environment: "test".into(),
            runbook: "rb".into(),
            step: "s".into(),
        },
        sink: Some(Arc::new(move |c: &CallRecord| {
            sink_store
                .record_call("run-1", Some(0), "p", c)
                .expect("call recorded")
        })),
        dry_run,
        deadline: Instant::now() + Duration::from_secs(30),
        output_limit,
        calls: Vec::new(),
        redactor: Arc::default(),
        tape: None,
    };
    let stdout = wasi::Capture::new(1024);
    let stderr = wasi::Capture::new(1024);
    let ctx = wasi::builder(&stdout, &stderr).build();
    let state = HostState::new(
        core,
        ctx,
        MemoryLimiter {
            memory_limit: 1 << 20,
            hit: false,
        },
        stdout,
        stderr,
        Arc::new(granted),
    );
    Action {
        state,
        store,
        _dir: dir,
    }
}

/// A loopback HTTP server that answers every request with `status` and `body` and
/// remembers each request's head; for capabilities that make requests.
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    /// Starts the server on a free port.
    pub async fn start(status: u16, body: &'static str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then the body its content-length announces.
                    loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                seen.lock().unwrap().push(text);
                                break;
                            }
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        HttpServer { addr, requests }
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Prepares `C`'s access from a validated grant, as loading a plugin does.
pub fn prepared<C: Capability>(grant: Arc<C::Grant>, env: &super::Resources) -> super::Prepared {
    let mut grants = ValidGrants::default();
    grants.insert::<C, C::Grant>(grant);
    super::prepare(&grants, env).expect("the grant prepares")
}

/// A scratch directory for manifests and their files.
pub fn dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("temp dir");
    let p = d.path().to_path_buf();
    (d, p)
}
