//! `runcap config`: the environment as composed from its `extends` chain, each value
//! with the file and line that wrote it.

use serde::Serialize;

use crate::cli::EnvArgs;
use crate::manifest::compose::{self, display_path};
use crate::manifest::{Diagnostics, KeyPath, Locate, Sources};

/// One value of the composed manifest and where it was written.
#[derive(Debug, Serialize)]
struct Entry {
    key: String,
    value: serde_json::Value,
    #[serde(skip)]
    text: String,
    /// The file as the text output names it.
    #[serde(skip)]
    short: String,
    file: String,
    line: usize,
}

pub fn run(args: &EnvArgs, json: bool) -> u8 {
    let composed = match crate::manifest::source_file(&args.env).and_then(compose::compose) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return 2;
        }
    };
    let sources = &composed.sources;
    // When the whole chain sits in one directory, each value names just the file.
    let one_dir = sources
        .files
        .iter()
        .all(|f| f.path.parent() == sources.top().path.parent());
    let name = |p: &std::path::Path| {
        if one_dir {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            display_path(p)
        }
    };
    let mut entries = Vec::new();
    for (k, v) in &sources.merged {
        flatten(sources, &KeyPath::root().key(k), v, &name, &mut entries);
    }
    let files: Vec<String> = sources
        .files
        .iter()
        .map(|f| display_path(&f.path))
        .collect();
    if json {
        let doc = serde_json::json!({
            "files": files,
            "policy": sources.policy.as_ref().map(|p| display_path(p)),
            "widen": sources.layers.iter().zip(&files).map(|(l, f)| serde_json::json!({"file": f, "keys": l.widen})).collect::<Vec<_>>(),
            "remove": sources.layers.iter().zip(&files).map(|(l, f)| serde_json::json!({"file": f, "keys": l.remove})).collect::<Vec<_>>(),
            "values": entries,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("# {}", files.join(" extends "));
        if let Some(p) = &sources.policy {
            println!(
                "# policy {}  ({})",
                display_path(p),
                origin_of_layer_key(sources, "policy")
            );
        }
        for (f, l) in files.iter().zip(&sources.layers) {
            for w in &l.widen {
                println!("# {f} widens {w}");
            }
            for r in &l.remove {
                println!("# {f} removes {r}");
            }
        }
        let width = entries
            .iter()
            .map(|e| e.key.len() + 3 + e.text.chars().count())
            .filter(|w| *w <= 96)
            .max()
            .unwrap_or(40);
        for e in &entries {
            let line = format!("{} = {}", e.key, e.text);
            let pad = width.saturating_sub(line.chars().count());
            println!("{line}{:pad$}  # {}:{}", "", e.short, e.line);
        }
    }
    if composed.problems.is_empty() {
        0
    } else {
        eprintln!("{}", Diagnostics(composed.problems));
        2
    }
}

/// `file:line` of a composition key (`policy`) in the file that wrote it.
fn origin_of_layer_key(sources: &Sources, key: &str) -> String {
    for f in &sources.files {
        if let Some(s) = f.span_of(&KeyPath::root().key(key)) {
            return format!("{}:{}", display_path(&f.path), f.line_col(s.start).0);
        }
    }
    String::new()
}

fn flatten(
    sources: &Sources,
    path: &KeyPath,
    value: &toml::Value,
    name: &dyn Fn(&std::path::Path) -> String,
    out: &mut Vec<Entry>,
) {
    match value {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                flatten(sources, &path.key(k), v, name, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|v| v.is_table() || v.is_array()) => {
            for (i, v) in a.iter().enumerate() {
                flatten(sources, &path.index(i), v, name, out);
            }
        }
        v => {
            let (file, span) = sources.locate(path);
            let line = span.map(|s| file.line_col(s.start).0).unwrap_or(0);
            out.push(Entry {
                key: path.to_string(),
                value: crate::manifest::toml_to_json(v.clone()),
                text: v.to_string(),
                short: name(&file.path),
                file: display_path(&file.path),
                line,
            });
        }
    }
}
