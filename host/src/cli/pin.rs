//! `runcap pin`: rewrite each plugin's `sha256` to the digest of its file as it is now.
//!
//! For plugin authors who just rebuilt a plugin. It edits only the digest strings,
//! keeping the rest of the file as written, and prints every change so it can be
//! reviewed like any other diff. For a manifest that `extends` others, each digest is
//! edited in the file of the chain that writes it (usually the base).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cli::EnvArgs;
use crate::manifest::compose::{self, dir_of, display_path};
use crate::manifest::{KeyPath, file_digest};

pub fn run(args: &EnvArgs) -> u8 {
    let sources = match crate::manifest::source_file(&args.env).and_then(compose::compose) {
        Ok(c) => c.sources,
        Err(d) => {
            eprintln!("{d}");
            return 2;
        }
    };
    let plugins = sources
        .merged
        .get("plugins")
        .and_then(|p| p.as_table())
        .cloned()
        .unwrap_or_default();
    // Edits per file of the chain: (span of the digest string, new text).
    let mut edits: BTreeMap<usize, Vec<(std::ops::Range<usize>, String)>> = BTreeMap::new();
    let mut failed = false;
    for (name, plugin) in &plugins {
        let at = KeyPath::root().key("plugins").key(name);
        let Some(path) = plugin.get("path").and_then(|p| p.as_str()) else {
            eprintln!("error: plugins.{name}: no `path`");
            failed = true;
            continue;
        };
        let pinned = plugin.get("sha256").and_then(|s| s.as_str()).unwrap_or("");
        let wasm = dir_of(&sources.origin(&at.key("path")).path).join(path);
        let actual = match file_digest(&wasm) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: plugins.{name}: {}: {e}", wasm.display());
                failed = true;
                continue;
            }
        };
        if actual == pinned.trim().to_ascii_lowercase() {
            println!("  plugins.{name}: unchanged");
            continue;
        }
        let key = at.key("sha256");
        let origin = sources.origin(&key);
        let idx = sources
            .files
            .iter()
            .position(|f| Arc::ptr_eq(f, origin))
            .unwrap_or(0);
        match origin.span_of(&key) {
            Some(span)
                if origin.text[span.clone()].starts_with('"') && plugin.get("sha256").is_some() =>
            {
                let shown = if idx == 0 {
                    String::new()
                } else {
                    format!(" (in {})", display_path(&origin.path))
                };
                println!("  plugins.{name}: {pinned} → {actual}{shown}");
                edits
                    .entry(idx)
                    .or_default()
                    .push((span, format!("\"{actual}\"")));
            }
            _ if plugin.get("sha256").is_none() => {
                // No digest written yet: add one beside `path`, in the file that wrote it.
                let path_key = at.key("path");
                let origin = sources.origin(&path_key);
                let idx = sources
                    .files
                    .iter()
                    .position(|f| Arc::ptr_eq(f, origin))
                    .unwrap_or(0);
                let Some(span) = origin.span_of(&path_key) else {
                    eprintln!(
                        "error: plugins.{name}.sha256 is missing; add it by hand: sha256 = \"{actual}\""
                    );
                    failed = true;
                    continue;
                };
                let line_start = origin.text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let inline = origin.text[line_start..span.start].contains('{');
                let added = if inline {
                    format!(", sha256 = \"{actual}\"")
                } else {
                    format!("\nsha256 = \"{actual}\"")
                };
                println!("  plugins.{name}: sha256 added: {actual}");
                edits
                    .entry(idx)
                    .or_default()
                    .push((span.end..span.end, added));
            }
            _ => {
                eprintln!(
                    "error: plugins.{name}.sha256 is not a plain string; set it by hand: sha256 = \"{actual}\""
                );
                failed = true;
            }
        }
    }
    for (idx, mut list) in edits {
        let file = &sources.files[idx];
        list.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
        let mut text = file.text.clone();
        for (span, value) in list {
            text.replace_range(span, &value);
        }
        if let Err(e) = crate::engine::cache::write_atomically(&file.path, text.as_bytes()) {
            eprintln!("error: cannot write {}: {e}", file.path.display());
            return 2;
        }
        println!("pinned {}", display_path(&file.path));
    }
    if failed { 2 } else { 0 }
}
