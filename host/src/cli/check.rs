//! `runcap check`: everything that can be known without running an action.

use std::path::PathBuf;

use crate::cli::{EnvArgs, StateArgs};
use crate::manifest::{Diagnostic, KeyPath, Runbook, Step};
use crate::runner;

/// Review gates `runcap check` can add: the lockfile and a policy.
#[derive(Debug, Default, clap::Args)]
pub struct ReviewArgs {
    /// Also fail, naming each difference, unless the environment matches its entry in
    /// the lockfile (plugin digests, imports, limits, grants, services, secrets).
    #[arg(long)]
    pub locked: bool,
    /// The lockfile for --locked (default: runcap.lock beside the manifest).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Also check every grant and limit against the ceilings of this policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

pub async fn run(args: &EnvArgs, state: &StateArgs, review: &ReviewArgs) -> u8 {
    let (env, runtime, resources) = match super::for_review(args, state) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    super::note_leftovers_if_any(args, state);
    let mut problems = secrets_readable(&env, &resources);
    let loaded = load_plugins(&env, &runtime, &resources, &mut problems);
    let mut marks = std::collections::BTreeMap::new();
    for (name, plugin) in &loaded {
        if let Ok(d) = runner::describe(&runtime, plugin).await
            && let Ok(schema) = serde_json::from_str(&d.params_schema)
        {
            marks.insert(name.clone(), grant_marks(&schema));
        }
    }
    let plugins = Plugins {
        runtime: &runtime,
        loaded: &loaded,
        marks: &marks,
    };
    for (rb_name, rb) in &env.runbooks {
        if check_runbook(args, &env, &plugins, rb_name, rb, &mut problems).await {
            println!(
                "✔ runbook {rb_name}: {} step{}",
                rb.steps.len(),
                if rb.steps.len() == 1 { "" } else { "s" }
            );
        }
    }
    let review_ok = super::review::gates(&env, review, &loaded, &mut problems);
    if problems.is_empty() {
        for line in review_ok {
            println!("{line}");
        }
        println!(
            "✔ {}: environment `{}` is valid ({} plugins, {} runbooks)",
            env.file.display(),
            env.name,
            env.plugins.len(),
            env.runbooks.len()
        );
        0
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        2
    }
}

/// Loads every plugin of `env`, saying so for each that loads; the others add their
/// problems (one per refused import, each with the TOML that fixes it).
fn load_plugins(
    env: &crate::manifest::Environment,
    runtime: &crate::engine::Runtime,
    resources: &crate::caps::Resources,
    problems: &mut Vec<String>,
) -> std::collections::BTreeMap<String, crate::engine::Plugin> {
    let mut loaded = std::collections::BTreeMap::new();
    for (name, spec) in &env.plugins {
        match runtime.load(spec, resources) {
            Ok(p) => {
                println!(
                    "✔ plugin {name}: sha256 {}… {}, imports {}",
                    &p.sha256[..12],
                    if p.from_cache {
                        "(compiled, cached)"
                    } else {
                        "(compiled)"
                    },
                    list(&p.capabilities())
                );
                loaded.insert(name.clone(), p);
            }
            Err(crate::engine::LoadError::Imports {
                plugin,
                problems: p,
            }) => problems.extend(p.iter().map(|p| format!("plugin `{plugin}` {p}"))),
            Err(e) => problems.push(e.to_string()),
        }
    }
    loaded
}

/// The loaded plugins of an environment and what their params schemas mark.
struct Plugins<'a> {
    runtime: &'a crate::engine::Runtime,
    loaded: &'a std::collections::BTreeMap<String, crate::engine::Plugin>,
    /// Per plugin: params fields that name something its grants must list.
    marks: &'a std::collections::BTreeMap<String, Vec<(String, String)>>,
}

/// Checks the params of every step of a runbook that can be checked before it runs;
/// whether all passed.
async fn check_runbook(
    args: &EnvArgs,
    env: &crate::manifest::Environment,
    plugins: &Plugins<'_>,
    rb_name: &str,
    rb: &crate::manifest::Runbook,
    problems: &mut Vec<String>,
) -> bool {
    let mut ok = true;
    for (path, step) in every_step(rb_name, rb) {
        let Some(plugin) = plugins.loaded.get(&step.uses) else {
            continue;
        };
        // Params that depend on earlier steps can only be checked when they run;
        // the rest are resolved with the manifest's vars and checked now.
        let Some(params) = static_params(env, rb_name, &step.with) else {
            continue;
        };
        if let Err(e) = runner::validate_params(plugins.runtime, plugin, &params).await {
            ok = false;
            let help = format!(
                "`runcap plugin describe {} --env {}` shows the params it accepts",
                step.uses,
                args.env.display()
            );
            let d = Diagnostic::at(
                &env.source,
                &path.key("with"),
                format!("params rejected by `{}`: {e}", step.uses),
                Some(help),
            );
            problems.push(
                d.to_string()
                    .trim_end()
                    .trim_start_matches("error: ")
                    .to_string(),
            );
            continue;
        }
        for (field, mark) in plugins.marks.get(&step.uses).into_iter().flatten() {
            if let Some(problem) =
                ungranted_name(env, &path, &step.uses, plugin, &params, field, mark)
            {
                ok = false;
                problems.push(problem);
            }
        }
    }
    ok
}

/// Params fields a plugin's schema marks as naming something its grants must list,
/// with the mark (`"x-runcap-grant": "services"`, `"notify.channels"`): the top-level
/// properties, and those of each variant of a top-level `oneOf`/`anyOf`/`allOf`.
fn grant_marks(schema: &serde_json::Value) -> Vec<(String, String)> {
    let mut objects = vec![schema];
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(variants) = schema.get(key).and_then(|v| v.as_array()) {
            objects.extend(variants);
        }
    }
    let mut out: Vec<(String, String)> = objects
        .into_iter()
        .filter_map(|o| o.get("properties").and_then(|p| p.as_object()))
        .flatten()
        .filter_map(|(field, prop)| {
            let mark = prop.get("x-runcap-grant")?.as_str()?;
            Some((field.clone(), mark.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A step whose param `field` (marked `mark`) names something the plugin's grants do not
/// list, as a located problem; templated values are left to run time.
fn ungranted_name(
    env: &crate::manifest::Environment,
    step: &crate::manifest::KeyPath,
    uses: &str,
    plugin: &crate::engine::Plugin,
    params: &serde_json::Value,
    field: &str,
    mark: &str,
) -> Option<String> {
    let values: Vec<&str> = match params.get(field)? {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => return None,
    };
    let granted = crate::caps::granted_names(&plugin.spec.grants, mark)?;
    let missing: Vec<&str> = values
        .into_iter()
        .filter(|v| !granted.iter().any(|g| g == v))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let listed = if granted.is_empty() {
        "it is granted none".to_string()
    } else {
        format!("granted: {}", granted.join(", "))
    };
    let d = Diagnostic::at(
        &env.source,
        &step.key("with").key(field),
        format!(
            "`{field}` names {}, which plugin `{uses}` is not granted ({mark})",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(listed),
    );
    Some(
        d.to_string()
            .trim_end()
            .trim_start_matches("error: ")
            .to_string(),
    )
}

/// Every secret a grant needs must be readable now (its value is read, never printed);
/// one no grant uses only gets a warning.
fn secrets_readable(
    env: &crate::manifest::Environment,
    resources: &crate::caps::Resources,
) -> Vec<String> {
    let needed: std::collections::BTreeSet<String> = env
        .plugins
        .values()
        .flat_map(|p| {
            crate::caps::REGISTRY
                .iter()
                .flat_map(|c| c.secrets(&p.grants))
        })
        .collect();
    let mut problems = Vec::new();
    for name in env.secrets.keys() {
        let Err(e) = resources.secrets.value(name) else {
            continue;
        };
        let at = env
            .source
            .position(&KeyPath::root().key("secrets").key(name));
        if needed.contains(name) {
            problems.push(format!(
                "secret `{name}` ({at}) cannot be read: {e}\n  = help: a grant needs it; set it where runcap runs, or fix [secrets.{name}]"
            ));
        } else {
            eprintln!("warning: secret `{name}` ({at}) cannot be read: {e}; no grant uses it");
        }
    }
    problems
}

/// Every step of a runbook that runs an action, with where it is written: main steps,
/// handlers, escalation steps, and each one's rollback.
fn every_step<'a>(name: &str, rb: &'a Runbook) -> Vec<(KeyPath, &'a Step)> {
    let at = KeyPath::root().key("runbooks").key(name);
    let lists = [
        (at.key("steps"), &rb.steps),
        (at.key("handlers"), &rb.handlers),
    ]
    .into_iter()
    .chain(rb.incident.tiers.iter().map(|t| (t.at.clone(), &t.steps)));
    let mut out = Vec::new();
    for (path, steps) in lists {
        for (i, step) in steps.iter().enumerate() {
            out.push((path.index(i), step));
            if let Some(rb) = &step.rollback {
                out.push((path.index(i).key("rollback"), rb.as_ref()));
            }
        }
    }
    out
}

pub(crate) fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "no capabilities".into()
    } else {
        items.join(", ")
    }
}

/// A step's params with vars and run fields filled in, or `None` when they refer to
/// results of other steps (or an incident) that only exist at run time.
fn static_params(
    env: &crate::manifest::Environment,
    runbook: &str,
    with: &serde_json::Value,
) -> Option<serde_json::Value> {
    use crate::runbook::template;
    for (_, text) in template::template_strings(with) {
        let refs = template::references(text, false).ok()?;
        if refs
            .iter()
            .any(|r| matches!(r.root(), "steps" | "incident"))
        {
            return None;
        }
    }
    let ctx = serde_json::json!({
        "vars": env.vars,
        "run": {"id": "check", "runbook": runbook, "environment": env.name, "dry_run": false},
        "steps": {},
    });
    template::render_params(with, &ctx).ok()
}
