//! What a component imports, and whether its grants allow it.
//!
//! Inspected at load, before anything runs: a plugin importing a capability its
//! manifest entry does not grant is refused, naming the interface and the key that
//! would grant it.

use crate::caps::{self, Granted, ValidGrants};

/// Why an import is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportProblem {
    /// A capability interface the grants do not cover; `hint` is the TOML that grants it.
    NotGranted { interface: String, hint: String },
    /// An interface runcap never provides.
    Unknown { interface: String },
}

impl std::fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportProblem::NotGranted { interface, hint } => write!(
                f,
                "imports `{interface}` but the manifest does not grant it; to allow it, add:\n{hint}"
            ),
            ImportProblem::Unknown { interface } if interface.starts_with("wasi:http/") => {
                write!(
                    f,
                    "imports `{interface}`, which runcap does not provide; plugins reach the network only through runcap:plugin/http"
                )
            }
            ImportProblem::Unknown { interface } => {
                write!(f, "imports `{interface}`, which runcap does not provide")
            }
        }
    }
}

/// Checks every import against the plugin's grants; `plugin` names the manifest table.
pub fn check(plugin: &str, imports: &[String], grants: &ValidGrants) -> Vec<ImportProblem> {
    let mut problems = Vec::new();
    for interface in imports {
        if interface == caps::TYPES_INTERFACE
            || caps::wasi::classify(interface) != caps::wasi::WasiImport::NotProvided
        {
            continue;
        }
        match caps::by_interface(interface) {
            Some(cap) if cap.granted() != Granted::ByGrant || grants.has(cap.name()) => {}
            Some(cap) => problems.push(ImportProblem::NotGranted {
                interface: interface.clone(),
                hint: cap.hint(plugin),
            }),
            None => {
                // One line per refused family is enough (`wasi:sockets/*` is seven interfaces).
                let family = caps::wasi::family(interface);
                let seen = problems.iter().any(|p| {
                    matches!(p, ImportProblem::Unknown { interface: i } if caps::wasi::family(i) == family)
                });
                if !seen {
                    problems.push(ImportProblem::Unknown {
                        interface: interface.clone(),
                    });
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ungranted_and_unknown_imports_are_named() {
        let imports = vec![
            "runcap:plugin/http".to_string(),
            "runcap:plugin/log".to_string(),
            "wasi:cli/stdout".to_string(),
            "wasi:sockets/tcp".to_string(),
            "wasi:http/types".to_string(),
            "wasi:http/outgoing-handler".to_string(),
        ];
        let problems = check("probe", &imports, &ValidGrants::default());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].to_string().starts_with(
                "imports `runcap:plugin/http` but the manifest does not grant it; to allow it, add:\n[plugins.probe.grants.http]\n"
            ),
            "{}",
            problems[0]
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("imports `wasi:http/types`, which runcap does not provide"),
            "{}",
            problems[1]
        );
    }
}
