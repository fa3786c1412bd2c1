//! `runcap caps`: what every plugin can touch, for operators and reviewers.

use serde::Serialize;

use crate::caps::CAPABILITIES;
use crate::cli::{EnvArgs, StateArgs};
use crate::engine::imports;

/// One plugin's capability report.
#[derive(Debug, Serialize)]
pub struct PluginCaps {
    pub name: String,
    pub path: String,
    pub sha256: String,
    /// Interfaces the component imports, or the reason they could not be read.
    pub imports: Result<Vec<String>, String>,
    pub limits: Limits,
    /// Capability → granted entries.
    pub grants: Vec<Grant>,
    /// Capabilities granted but never imported.
    pub over_grants: Vec<String>,
    /// Capabilities imported but not granted (the plugin will be refused).
    pub ungranted_imports: Vec<String>,
    pub used_by: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub memory: String,
    pub time: String,
    pub output: String,
}

#[derive(Debug, Serialize)]
pub struct Grant {
    pub capability: &'static str,
    pub entries: Vec<String>,
}

pub async fn run(args: &EnvArgs, state: &StateArgs, json: bool) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let shared = super::shared(&env, args, state);
    let mut report = Vec::new();
    for (name, spec) in &env.plugins {
        let imports = match runtime.load(spec, &shared) {
            Ok(p) => Ok(p.imports),
            Err(crate::engine::LoadError::Imports { .. }) => {
                // Still show what it imports: that is what a reviewer needs to see.
                inspect_only(&runtime, spec)
            }
            Err(e) => Err(e.to_string()),
        };
        let imported: Vec<&str> = imports
            .as_ref()
            .map(|i| {
                i.iter()
                    .filter_map(|x| imports::capability_of(x))
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        let mut grants = Vec::new();
        let mut over = Vec::new();
        let mut ungranted = Vec::new();
        for cap in CAPABILITIES.iter().filter(|c| c.grant_key.is_some()) {
            let granted = (cap.granted)(&spec.grants);
            if granted {
                grants.push(Grant {
                    capability: cap.name,
                    entries: (cap.describe)(&spec.grants),
                });
            }
            let uses = imported.contains(&cap.name);
            if granted && !uses && imports.is_ok() {
                over.push(cap.name.to_string());
            }
            if uses && !granted && cap.import_needs_grant() {
                ungranted.push(cap.name.to_string());
            }
        }
        let used_by = env
            .runbooks
            .values()
            .filter(|rb| rb.steps.iter().any(|s| &s.uses == name))
            .map(|rb| rb.name.clone())
            .collect();
        report.push(PluginCaps {
            name: name.clone(),
            path: spec.path.display().to_string(),
            sha256: spec.sha256.clone(),
            imports,
            limits: Limits {
                memory: bytesize::ByteSize(spec.limits.memory).to_string(),
                time: humantime::format_duration(spec.limits.time).to_string(),
                output: bytesize::ByteSize(spec.limits.output).to_string(),
            },
            grants,
            over_grants: over,
            ungranted_imports: ungranted,
            used_by,
        });
    }
    if json {
        let doc = serde_json::json!({ "environment": env.name, "plugins": report });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_text(&env.name, &report);
    }
    0
}

fn inspect_only(
    runtime: &crate::engine::Runtime,
    spec: &crate::manifest::PluginSpec,
) -> Result<Vec<String>, String> {
    let wasm = std::fs::read(&spec.path).map_err(|e| e.to_string())?;
    let component = wasmtime::component::Component::new(runtime.engine(), &wasm)
        .map_err(|e| format!("{e:#}"))?;
    Ok(imports::imported_interfaces(runtime.engine(), &component))
}

fn print_text(env: &str, report: &[PluginCaps]) {
    println!("environment {env}");
    for p in report {
        println!();
        println!("plugin {}", p.name);
        println!("  sha256   {}", p.sha256);
        println!(
            "  limits   memory {}, time {}, output {}",
            p.limits.memory, p.limits.time, p.limits.output
        );
        match &p.imports {
            Ok(i) => {
                let caps: Vec<&str> = i
                    .iter()
                    .filter(|x| {
                        (x.starts_with("runcap:") && x.as_str() != crate::caps::TYPES_INTERFACE)
                            // A WASI interface every component imports matters with a grant.
                            || imports::capability_of(x)
                                .is_some_and(|c| p.grants.iter().any(|g| g.capability == c.name))
                    })
                    .map(String::as_str)
                    .collect();
                println!(
                    "  imports  {}",
                    if caps.is_empty() {
                        "none".into()
                    } else {
                        caps.join(", ")
                    }
                );
            }
            Err(e) => println!("  imports  unknown: {e}"),
        }
        if p.grants.is_empty() {
            println!("  grants   none");
        }
        for g in &p.grants {
            let flag = if p.over_grants.iter().any(|o| o == g.capability) {
                "   ⚠ over-grant: never imported"
            } else {
                ""
            };
            println!("  grants   {}{flag}", g.capability);
            for e in &g.entries {
                println!("             {e}");
            }
        }
        for u in &p.ungranted_imports {
            println!("  ✘ imports {u} without a grant: the plugin is refused at load");
        }
        println!(
            "  used by  {}",
            if p.used_by.is_empty() {
                "no runbook".into()
            } else {
                p.used_by.join(", ")
            }
        );
    }
}
