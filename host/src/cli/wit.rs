//! `runcap wit`: the WIT package plugins are built against, as files a toolchain can
//! point at, and worlds narrowed to the capabilities a plugin calls.
//!
//! Toolchains such as componentize-py and componentize-js import every interface of
//! the world they target, and the host refuses an import its manifest does not grant;
//! a plugin in those languages therefore targets a world that imports only what it
//! uses: one of the package's own (`check`, `service-control`, …) or one written here
//! with `--world NAME --imports http,secrets`.

use std::fmt::Write as _;
use std::path::Path;

use thiserror::Error;

/// The WIT text every interface's types come from.
const TYPES_WIT: &str = include_str!("../../../wit/types.wit");
/// The worlds plugins target.
const WORLD_WIT: &str = include_str!("../../../wit/world.wit");

/// Every file of the `runcap:plugin` package, as this runcap was built with it: the
/// shared types, each registered capability's interface, and the worlds.
pub fn package() -> Vec<(String, &'static str)> {
    let mut files = vec![("types.wit".to_string(), TYPES_WIT)];
    files.extend(
        crate::caps::REGISTRY
            .iter()
            .filter_map(|c| Some((format!("{}.wit", c.name()), c.wit()?))),
    );
    files.push(("world.wit".to_string(), WORLD_WIT));
    files
}

/// Why a world cannot be written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WitError {
    #[error(
        "`{0}` is not a WIT world name: use lower-case words joined by `-`, such as `my-check`"
    )]
    BadName(String),
    #[error("the package already has a world named `{0}`; pick another name or target it as it is")]
    Taken(String),
    #[error("`{0}` is not a capability with a WIT interface; choose from: {1}")]
    UnknownImport(String, String),
}

/// One world of the package and the capability interfaces it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub name: String,
    pub imports: Vec<String>,
    /// The first line of its doc comment.
    pub about: String,
}

/// The worlds `world.wit` declares, read from its text (each `world NAME {` block, its
/// `import X;` lines and the `///` line above it).
pub fn worlds() -> Vec<World> {
    let text = WORLD_WIT;
    let mut out: Vec<World> = Vec::new();
    let mut doc = String::new();
    let mut current: Option<World> = None;
    for line in text.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("///") {
            if doc.is_empty() {
                doc = d.trim().to_string();
            }
        } else if let Some(rest) = line.strip_prefix("world ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            current = Some(World {
                name,
                imports: Vec::new(),
                about: std::mem::take(&mut doc),
            });
        } else if let Some(import) = line.strip_prefix("import ") {
            if let Some(w) = current.as_mut() {
                w.imports
                    .push(import.trim_end_matches(';').trim().to_string());
            }
        } else if line == "}" {
            out.extend(current.take());
            doc.clear();
        } else if current.is_none() {
            doc.clear();
        }
    }
    out
}

/// The interfaces the base world `plugin` imports (`invocation`), which every world has
/// through it.
fn in_every_world() -> Vec<String> {
    worlds()
        .into_iter()
        .find(|w| w.name == "plugin")
        .map(|w| w.imports)
        .unwrap_or_default()
}

/// The WIT interface names (`http`, `secrets`, …) a world may import: every
/// capability whose interface is in this package, but those every world has already.
pub fn importable() -> Vec<&'static str> {
    let base = in_every_world();
    crate::caps::REGISTRY
        .iter()
        .flat_map(|c| std::iter::once(c.interface()).chain(c.more_interfaces().iter().copied()))
        .filter_map(|i| i.strip_prefix("runcap:plugin/"))
        .filter(|i| !base.iter().any(|b| b == i))
        .collect()
}

/// A world file named `name` that imports `log` and `imports`. Files come through
/// `wasi:filesystem`, which every language runtime imports, and the `fs` grant decides
/// what it reaches; importing `fs` adds `runcap:plugin/fs`, the same files in large pieces.
pub fn custom_world(name: &str, imports: &[String]) -> Result<String, WitError> {
    let kebab = |w: &str| {
        w.split('-').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
    };
    if name.is_empty() || !kebab(name) {
        return Err(WitError::BadName(name.to_string()));
    }
    if worlds().iter().any(|w| w.name == name) {
        return Err(WitError::Taken(name.to_string()));
    }
    let known = importable();
    let mut chosen = vec!["log"];
    // Asking for an interface every world has is accepted and adds nothing.
    let base = in_every_world();
    for i in imports
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty() && !base.iter().any(|b| b == i))
    {
        match known.iter().find(|k| **k == i) {
            Some(k) if !chosen.contains(k) => chosen.push(k),
            Some(_) => {}
            None => return Err(WitError::UnknownImport(i.to_string(), known.join(", "))),
        }
    }
    let mut w = String::new();
    let _ = writeln!(
        w,
        "package runcap:plugin@{};\n",
        crate::engine::inspect::WIT_VERSION
    );
    let _ = writeln!(
        w,
        "/// Written by `runcap wit`: the plugin exports, and imports {}.",
        chosen.join(", ")
    );
    let _ = writeln!(w, "world {name} {{\n    include plugin;");
    for i in &chosen {
        let _ = writeln!(w, "    import {i};");
    }
    let _ = writeln!(w, "}}");
    Ok(w)
}

/// Writes the package into `dir` (created if missing), and the custom world if given.
pub fn write_package(dir: &Path, custom: Option<(&str, &str)>) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (file, text) in package() {
        std::fs::write(dir.join(&file), text)?;
        written.push(file);
    }
    if let Some((name, text)) = custom {
        let file = format!("{name}.wit");
        std::fs::write(dir.join(&file), text)?;
        written.push(file);
    }
    Ok(written)
}

/// `runcap wit [--out DIR] [--world NAME --imports A,B]`.
pub fn run(out: Option<&Path>, world: Option<&str>, imports: &[String]) -> u8 {
    let custom = match world {
        Some(name) => match custom_world(name, imports) {
            Ok(text) => Some((name, text)),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None if !imports.is_empty() => {
            eprintln!(
                "error: --imports needs --world NAME to name the world, e.g. `runcap wit --out wit --world my-check --imports {}`",
                imports.join(",")
            );
            return 2;
        }
        None => None,
    };
    let Some(dir) = out else {
        if let Some((_, text)) = &custom {
            print!("{text}");
            return 0;
        }
        println!(
            "runcap:plugin@{} worlds (write them with `runcap wit --out DIR`):",
            crate::engine::inspect::WIT_VERSION
        );
        for w in worlds() {
            println!("  {:<16} {}", w.name, w.about);
            println!(
                "  {:<16} imports: {}",
                "",
                if w.imports.is_empty() {
                    "nothing".to_string()
                } else {
                    w.imports.join(", ")
                }
            );
        }
        return 0;
    };
    let custom = custom.as_ref().map(|(n, t)| (*n, t.as_str()));
    match write_package(dir, custom) {
        Ok(files) => {
            println!("wrote {} files to {}", files.len(), dir.display());
            if let Some((name, _)) = custom {
                println!("  world `{name}` is in {name}.wit; target it as `runcap:plugin/{name}`");
            }
            0
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_embeds_every_wit_file_of_the_source_tree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = package().into_iter().map(|(f, _)| f).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn worlds_are_read_with_their_imports() {
        let all = worlds();
        let find = |n: &str| all.iter().find(|w| w.name == n).unwrap();
        // `plugin`'s one import, which every world includes.
        assert_eq!(find("plugin").imports, ["invocation"]);
        assert_eq!(find("check").imports, ["log", "http"]);
        let mut action = find("action").imports.clone();
        action.sort();
        let mut every: Vec<&str> = importable();
        every.sort();
        assert_eq!(action, every, "`action` imports every capability interface");
        assert!(find("check").about.starts_with("A custom check"));
    }

    #[test]
    fn custom_worlds_are_checked_and_resolve() {
        assert_eq!(
            custom_world("MyCheck", &[]),
            Err(WitError::BadName("MyCheck".into()))
        );
        assert_eq!(
            custom_world("check", &[]),
            Err(WitError::Taken("check".into()))
        );
        let err = custom_world("x", &["htp".into()]).unwrap_err();
        assert!(err.to_string().contains("choose from: log, http"), "{err}");

        let text = custom_world(
            "probe-and-page",
            &[
                "http".into(),
                "notify".into(),
                "fs".into(),
                "invocation".into(),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_package(dir.path(), Some(("probe-and-page", &text))).unwrap();
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve
            .push_dir(dir.path())
            .expect("the written package parses");
        for w in worlds()
            .iter()
            .map(|w| w.name.as_str())
            .chain(["probe-and-page"])
        {
            resolve.select_world(&[pkg], Some(w)).expect(w);
        }
        let id = resolve
            .select_world(&[pkg], Some("probe-and-page"))
            .unwrap();
        let mut imported: Vec<String> = resolve.worlds[id]
            .imports
            .keys()
            .map(|k| resolve.name_world_key(k))
            .filter(|k| k.contains('/'))
            .collect();
        imported.sort();
        assert_eq!(
            imported,
            [
                "runcap:plugin/fs@0.2.0",
                "runcap:plugin/http@0.2.0",
                "runcap:plugin/invocation@0.2.0",
                "runcap:plugin/log@0.2.0",
                "runcap:plugin/notify@0.2.0",
                "runcap:plugin/types@0.2.0"
            ]
        );
    }
}
