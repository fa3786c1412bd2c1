//! `runcap call PLUGIN --with JSON`: one action, without writing a runbook.
//!
//! For plugin authors trying a plugin against the real thing, and for tests: the call
//! runs as a one-step run named `call:PLUGIN`, with the plugin's grants, recorded in
//! the store and the audit like any run. `--record FILE` keeps every capability call
//! and its answer (redacted); `--replay FILE` answers the calls from such a file and
//! makes none, so a plugin's tests can run offline against recorded responses.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::caps::tape::{SharedTape, Tape, TapeEntry};
use crate::cli::run::How;
use crate::cli::{EnvArgs, StateArgs};
use crate::manifest::model::Overlap;
use crate::manifest::{OnFailure, Retry, Runbook, Step};

/// How the runs of `runcap call` are named (`call:http-probe`); a manifest's runbook
/// names cannot hold `:`, so they never clash.
pub const RUN_PREFIX: &str = "call:";

/// What `--record` writes and `--replay` reads.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recording {
    /// The plugin's manifest name and the digest it had when recorded.
    plugin: String,
    sha256: String,
    /// The params it was called with (used when `--with` is not given).
    params: serde_json::Value,
    /// Every capability call that brought an answer back, in order.
    calls: Vec<TapeEntry>,
}

/// How `runcap call` was asked to run.
pub struct CallArgs<'a> {
    pub plugin: &'a str,
    pub with: Option<&'a str>,
    pub record: Option<&'a Path>,
    pub replay: Option<&'a Path>,
}

pub async fn run(args: &EnvArgs, state: &StateArgs, call: &CallArgs<'_>, how: &How) -> u8 {
    let engine = super::EngineBuild::start(super::Workload::OneAtATime);
    let store = super::StoreOpen::start(args, state);
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let Some(spec) = env.plugins.get(call.plugin) else {
        super::say_unknown("plugin", call.plugin, &env, env.plugins.keys());
        return 2;
    };
    let recording = match call.replay.map(read_recording).transpose() {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message:#}");
            return 2;
        }
    };
    let params = match (call.with, &recording) {
        (Some(text), _) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => {
                eprintln!(
                    "error: --with takes a JSON object, such as --with '{{\"url\": \"http://127.0.0.1:8080/health\"}}'"
                );
                return 2;
            }
            Err(e) => {
                eprintln!("error: --with is not JSON: {e}");
                return 2;
            }
        },
        (None, Some(r)) => r.params.clone(),
        (None, None) => serde_json::json!({}),
    };
    let redactor = match super::output_redactor(args) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let tape: Option<SharedTape> = match (&recording, call.record) {
        (Some(r), _) => {
            if r.sha256 != spec.sha256 {
                eprintln!(
                    "note: plugin `{}` changed since the recording (sha256 {} then, {} now)",
                    call.plugin,
                    short(&r.sha256),
                    short(&spec.sha256)
                );
            }
            Some(Tape::replaying(r.calls.clone(), redactor.clone()))
        }
        (None, Some(_)) => Some(Tape::recording(redactor.clone())),
        (None, None) => None,
    };
    let rb = one_step(call.plugin, params.clone());
    let mut code = super::run::run_runbook(
        args,
        state,
        &env,
        &rb,
        serde_json::json!({}),
        how,
        super::run::Start {
            engine,
            store,
            tape: tape.clone(),
        },
    )
    .await;
    let Some(tape) = tape else {
        return code;
    };
    let tape = tape.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = &recording {
        if code == 0 && tape.answered() < r.calls.len() {
            eprintln!(
                "error: replay: the plugin made {} of the {} recorded calls; the next was `{}`",
                tape.answered(),
                r.calls.len(),
                r.calls[tape.answered()].call
            );
            code = code.max(1);
        }
        return code;
    }
    if let Some(path) = call.record {
        let mut params = params;
        crate::redaction::scrub_json(&redactor, &mut params);
        let doc = Recording {
            plugin: call.plugin.to_string(),
            sha256: spec.sha256.clone(),
            params,
            calls: tape.entries().to_vec(),
        };
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        if let Err(e) = crate::engine::cache::write_atomically(path, text.as_bytes()) {
            eprintln!("error: cannot write the recording {}: {e}", path.display());
            return 2;
        }
        eprintln!(
            "recorded {} capability call(s) to {}; replay with `runcap call {} --env {} --replay {}`",
            doc.calls.len(),
            path.display(),
            call.plugin,
            args.env.display(),
            path.display()
        );
    }
    code
}

fn read_recording(path: &Path) -> anyhow::Result<Recording> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the recording {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a recording written by `runcap call --record`",
            path.display()
        )
    })
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The runbook a call runs as: one step of `plugin` with `params`.
fn one_step(plugin: &str, params: serde_json::Value) -> Runbook {
    Runbook {
        name: format!("{RUN_PREFIX}{plugin}"),
        description: Some(format!("runcap call {plugin}")),
        steps: vec![Step {
            id: plugin.to_string(),
            uses: plugin.to_string(),
            with: params,
            when: None,
            timeout: None,
            retry: Retry::default(),
            on_failure: OnFailure::Abort,
            rollback: None,
            watch: None,
        }],
        handlers: Vec::new(),
        incident: Default::default(),
        keep_going: false,
        idempotent: false,
        overlap: Overlap::Wait,
        params: Default::default(),
        schedule: None,
    }
}
