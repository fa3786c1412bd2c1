//! `runcap pin`: rewrite each plugin's `sha256` to the digest of its file as it is now.
//!
//! For plugin authors who just rebuilt a plugin. It edits only the digest strings,
//! keeping the rest of the file as written, and prints every change so it can be
//! reviewed like any other diff.

use crate::cli::EnvArgs;
use crate::manifest::{KeyPath, SourceFile, file_digest, raw};

pub fn run(args: &EnvArgs) -> u8 {
    let text = match std::fs::read_to_string(&args.env) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.env.display());
            return 2;
        }
    };
    let source = SourceFile::new(args.env.clone(), text);
    let raw: raw::Manifest = match toml::from_str(&source.text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {}", args.env.display(), e.message());
            return 2;
        }
    };
    let dir = args
        .env
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let mut edits = Vec::new();
    let mut failed = false;
    for (name, plugin) in &raw.plugins {
        let file = dir.join(&plugin.path);
        match file_digest(&file) {
            Ok(actual) if actual == plugin.sha256.trim().to_ascii_lowercase() => {
                println!("  plugins.{name}: unchanged");
            }
            Ok(actual) => {
                let key = KeyPath::root().key("plugins").key(name).key("sha256");
                match source.span_of(&key) {
                    Some(span) if source.text[span.clone()].starts_with('"') => {
                        println!("  plugins.{name}: {} → {actual}", plugin.sha256);
                        edits.push((span, format!("\"{actual}\"")));
                    }
                    _ => {
                        eprintln!(
                            "error: plugins.{name}.sha256 is not a plain string; edit it by hand: {actual}"
                        );
                        failed = true;
                    }
                }
            }
            Err(e) => {
                eprintln!("error: plugins.{name}: {}: {e}", file.display());
                failed = true;
            }
        }
    }
    if !edits.is_empty() {
        edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
        let mut text = source.text.clone();
        for (span, value) in edits {
            text.replace_range(span, &value);
        }
        if let Err(e) = crate::engine::cache::write_atomically(&args.env, text.as_bytes()) {
            eprintln!("error: cannot write {}: {e}", args.env.display());
            return 2;
        }
        println!("pinned {}", args.env.display());
    }
    if failed { 2 } else { 0 }
}
