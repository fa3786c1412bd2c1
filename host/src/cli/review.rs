//! The review gates of `runcap check`: policy ceilings (`--policy`) and the lockfile
//! (`--locked`).

use std::collections::BTreeMap;

use crate::caps::compare::ChangeKind;
use crate::cli::caps::locate;
use crate::cli::check::ReviewArgs;
use crate::engine::Plugin;
use crate::lockfile::{self, Lockfile};
use crate::manifest::compose::{dir_of, display_path};
use crate::manifest::{Diagnostic, Environment};
use crate::policy::Policy;

/// Runs the gates `review` asks for; appends each problem to `problems` and returns
/// the lines to print when all pass.
pub(crate) fn gates(
    env: &Environment,
    review: &ReviewArgs,
    loaded: &BTreeMap<String, Plugin>,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut ok = Vec::new();
    if let Some(p) = &env.source.policy {
        ok.push(format!(
            "✔ every grant is within the ceilings of {}",
            display_path(p)
        ));
    }
    if let Some(path) = &review.policy {
        let found = match Policy::load(path) {
            Ok(p) => p.check(env),
            Err(d) => d.0,
        };
        if found.is_empty() {
            ok.push(format!(
                "✔ every grant is within the ceilings of {}",
                display_path(path)
            ));
        }
        problems.extend(found.iter().map(problem));
    }
    if review.locked || review.lock.is_some() {
        let path = review
            .lock
            .clone()
            .unwrap_or_else(|| Lockfile::beside(&env.file));
        let shown = display_path(&path);
        let relock = format!(
            "if the changes are approved, run `runcap lock --env {}` and have the lockfile's diff reviewed",
            display_path(&env.file)
        );
        if loaded.len() != env.plugins.len() {
            problems.push(format!(
                "not compared with {shown}: some plugins do not load (see above)"
            ));
            return ok;
        }
        match Lockfile::read_env(&path, &env.name) {
            Err(e) => problems.push(format!("{e}\n  = help: {relock}")),
            Ok(locked) => {
                let imports = loaded
                    .iter()
                    .map(|(n, p)| (n.clone(), p.imports.clone()))
                    .collect();
                let current = lockfile::snapshot(env, &imports, &dir_of(&path));
                let changes = locate(env, lockfile::diff(&locked, &current));
                let (notes, changes): (Vec<_>, Vec<_>) = changes
                    .into_iter()
                    .partition(|c| c.change.kind == ChangeKind::Note);
                for n in &notes {
                    println!("note: {}: {}", n.change.path, n.change.what);
                }
                if changes.is_empty() {
                    ok.push(format!("✔ matches {shown} (environment {})", env.name));
                }
                let count = changes.len();
                for (i, c) in changes.iter().enumerate() {
                    let mut line = format!(
                        "{}: {} ({} since {shown} was written)",
                        c.change.path,
                        c.change.what,
                        c.change.kind.as_str()
                    );
                    if let Some(at) = &c.at {
                        line.push_str(&format!("\n  --> {at}"));
                    }
                    if i + 1 == count {
                        line.push_str(&format!("\n  = help: {relock}"));
                    }
                    problems.push(line);
                }
            }
        }
    }
    ok
}

/// A diagnostic as one of `check`'s problems (which are printed after `error: `).
fn problem(d: &Diagnostic) -> String {
    d.to_string()
        .trim_end()
        .trim_start_matches("error: ")
        .to_string()
}
