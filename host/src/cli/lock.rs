//! `runcap lock`: record what an environment's plugins may do, for review.
//!
//! Writes the environment's entry in `runcap.lock` beside the manifest (other
//! environments' entries are kept) and prints what changed since the last lock, so
//! the person locking sees what they are about to approve.

use std::path::Path;

use crate::cli::caps::{change_lines, locate};
use crate::cli::{EnvArgs, StateArgs};
use crate::lockfile::{self, Lockfile};
use crate::manifest::compose::{dir_of, display_path};

pub async fn run(args: &EnvArgs, state: &StateArgs, lock: Option<&Path>) -> u8 {
    let (env, runtime, resources) = match super::for_review(args, state) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut imports = std::collections::BTreeMap::new();
    let mut failed = false;
    for (name, spec) in &env.plugins {
        match runtime.load(spec, &resources) {
            Ok(p) => {
                imports.insert(name.clone(), p.imports);
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("nothing locked: a lock records plugins that load; fix the problems above");
        return 2;
    }
    let path = lock
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Lockfile::beside(&env.file));
    let mut file = match Lockfile::read(&path) {
        Ok(Some(l)) => l,
        Ok(None) => Lockfile {
            version: lockfile::VERSION,
            environments: Default::default(),
        },
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("  = help: move it aside to write a new one");
            return 2;
        }
    };
    let entry = lockfile::snapshot(&env, &imports, &dir_of(&path));
    let previous = file.environments.insert(env.name.clone(), entry.clone());
    let shown = display_path(&path);
    match previous {
        None => println!(
            "locked environment {} ({} plugins) in {shown}",
            env.name,
            entry.plugins.len()
        ),
        Some(prev) => {
            let changes = locate(&env, lockfile::diff(&prev, &entry));
            if changes.is_empty() {
                println!("✔ {shown}: environment {} is unchanged", env.name);
                return 0;
            }
            println!("environment {} in {shown}:", env.name);
            for line in change_lines(&changes) {
                println!("  {line}");
            }
            let widened = changes.iter().filter(|c| c.widens).count();
            println!(
                "locked {} changes ({widened} widen what {} may do); review the lockfile's diff before committing it",
                changes.len(),
                env.name
            );
        }
    }
    if let Err(e) = crate::engine::cache::write_atomically(&path, file.to_text().as_bytes()) {
        eprintln!("error: cannot write {shown}: {e}");
        return 2;
    }
    0
}
