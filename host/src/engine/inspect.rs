//! What a component declares, read with a parser before anything is compiled.
//!
//! Compiling costs seconds and hundreds of megabytes for a large component; reading its
//! import and export sections costs microseconds. So a component whose imports its grants
//! refuse, or that does not export runcap's action functions, is turned away here, and
//! nothing of it is compiled or cached.

use thiserror::Error;
use wasmparser::{ComponentExternalKind, ComponentTypeRef, Encoding, Parser, Payload};

/// The functions every plugin component exports (the WIT world `action`).
pub const REQUIRED_EXPORTS: [&str; 3] = ["describe", "validate", "run"];

/// The version of the `runcap:plugin` WIT package (`wit/`) this host speaks. A component
/// built against another version is refused by name rather than by a type mismatch.
pub const WIT_VERSION: &str = "0.2.0";

/// Why bytes are not a component runcap can take, found without compiling them.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InspectError {
    #[error("it is not WebAssembly (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    #[error(
        "it is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("it cannot be parsed: {0}")]
    Malformed(String),
    #[error(
        "it does not export {}: build it against runcap's WIT world `action` (wit/world.wit)",
        .0.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    )]
    MissingExports(Vec<&'static str>),
    #[error(
        "it was built against runcap:plugin@{found} and this runcap speaks runcap:plugin@{WIT_VERSION}: rebuild it with the current SDK (or against `runcap wit --out DIR`)"
    )]
    WitVersion { found: String },
}

/// A component's top-level imports and exports.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    /// Imported interfaces without versions, sorted, deduplicated.
    pub imports: Vec<String>,
    /// Exported function names.
    pub exports: Vec<String>,
}

/// Reads the top-level import and export sections of a component (nested modules and
/// components are skipped: only the outer component's imports reach the host).
pub fn declared(wasm: &[u8]) -> Result<Declared, InspectError> {
    if !wasm.starts_with(b"\0asm") {
        return Err(InspectError::NotWasm);
    }
    let mut out = Declared::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| InspectError::Malformed(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(InspectError::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| InspectError::Malformed(e.to_string()))?;
                    // A world's `use` brings type imports along its interfaces; only
                    // instances and functions are provided by the host.
                    if matches!(import.ty, ComponentTypeRef::Type(_)) {
                        continue;
                    }
                    let name = import.name.0;
                    if let Some((_, version)) = name
                        .strip_prefix("runcap:plugin/")
                        .and_then(|n| n.split_once('@'))
                        .filter(|(_, v)| *v != WIT_VERSION)
                    {
                        return Err(InspectError::WitVersion {
                            found: version.to_string(),
                        });
                    }
                    out.imports
                        .push(name.split('@').next().unwrap_or(name).to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| InspectError::Malformed(e.to_string()))?;
                    if export.kind == ComponentExternalKind::Func {
                        out.exports.push(export.name.0.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    out.imports.sort();
    out.imports.dedup();
    Ok(out)
}

impl Declared {
    /// Refuses a component that lacks any of runcap's action functions.
    pub fn require_action_exports(&self) -> Result<(), InspectError> {
        let missing: Vec<&'static str> = REQUIRED_EXPORTS
            .into_iter()
            .filter(|n| !self.exports.iter().any(|e| e == n))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(InspectError::MissingExports(missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_components_are_named_for_what_they_are() {
        assert_eq!(declared(b"hello"), Err(InspectError::NotWasm));
        let core_module = b"\0asm\x01\0\0\0";
        assert_eq!(declared(core_module), Err(InspectError::CoreModule));
        // A component header with a truncated section after it.
        let broken = b"\0asm\x0d\0\x01\0\x0a\xff";
        assert!(matches!(declared(broken), Err(InspectError::Malformed(_))));
    }

    /// A component header and one instance import named `name`.
    fn importing(name: &str) -> Vec<u8> {
        let mut import = vec![1, 0x00, name.len() as u8];
        import.extend_from_slice(name.as_bytes());
        import.extend_from_slice(&[0x05, 0x00]);
        let mut wasm = b"\0asm\x0d\0\x01\0\x0a".to_vec();
        wasm.push(import.len() as u8);
        wasm.extend(import);
        wasm
    }

    #[test]
    fn a_component_built_against_another_wit_version_is_named_for_it() {
        let current = declared(&importing(&format!("runcap:plugin/log@{WIT_VERSION}"))).unwrap();
        assert_eq!(current.imports, ["runcap:plugin/log"]);
        let old = declared(&importing("runcap:plugin/log@0.1.0")).unwrap_err();
        assert_eq!(
            old,
            InspectError::WitVersion {
                found: "0.1.0".into()
            }
        );
        assert!(
            old.to_string().contains(
                "built against runcap:plugin@0.1.0 and this runcap speaks runcap:plugin@"
            ),
            "{old}"
        );
        // Other packages' versions are theirs to keep.
        assert!(declared(&importing("wasi:cli/environment@0.2.6")).is_ok());
    }

    #[test]
    fn the_wit_files_are_the_version_the_host_speaks() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with(&format!("package runcap:plugin@{WIT_VERSION};")),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn an_empty_component_lacks_every_action_export() {
        let empty = b"\0asm\x0d\0\x01\0";
        let d = declared(empty).unwrap();
        assert_eq!(d, Declared::default());
        assert_eq!(
            d.require_action_exports(),
            Err(InspectError::MissingExports(vec![
                "describe", "validate", "run"
            ]))
        );
    }
}
