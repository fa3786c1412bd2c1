//! `runcap plugin describe`: what a plugin says about itself (name, version, description,
//! the params it accepts) and what its component imports, without running an action.

use crate::cli::{EnvArgs, StateArgs};
use crate::runner;

pub async fn describe(args: &EnvArgs, state: &StateArgs, name: &str, json: bool) -> u8 {
    let (env, runtime, resources) = match super::for_review(args, state) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(spec) = env.plugins.get(name) else {
        super::say_unknown("plugin", name, &env, env.plugins.keys());
        return 2;
    };
    let plugin = match runtime.load_to_describe(spec, &resources) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let d = match runner::describe(&runtime, &plugin).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: plugin `{name}` could not describe itself: {e}");
            return 2;
        }
    };
    let schema: serde_json::Value = serde_json::from_str(&d.params_schema)
        .unwrap_or(serde_json::Value::String(d.params_schema));
    if json {
        let doc = serde_json::json!({
            "plugin": name,
            "name": d.name,
            "version": d.version,
            "description": d.description,
            "path": spec.path,
            "sha256": plugin.sha256,
            "imports": plugin.imports,
            "params_schema": schema,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return 0;
    }
    println!("plugin {name}: {} {}", d.name, d.version);
    if !d.description.is_empty() {
        println!("  {}", d.description);
    }
    println!("  file     {}", spec.path.display());
    println!("  sha256   {}", plugin.sha256);
    println!("  imports  {}", plugin.imports.join(", "));
    println!("  params (JSON Schema):");
    let pretty = serde_json::to_string_pretty(&schema).unwrap_or_default();
    for line in pretty.lines() {
        println!("    {line}");
    }
    0
}
