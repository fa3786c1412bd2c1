//! `release`: blue/green and release swaps. Points a symlink in a read-write directory
//! grant (`current → releases/v2`) at a new target in one atomic rename, and returns the
//! previous target so the step's rollback can point it back:
//!
//! ```toml
//! [plugins.release.grants.fs]
//! deploy = { path = "/srv/app", mode = "rw" }
//!
//! [[runbooks.deploy.steps]]
//! id = "swap"
//! uses = "release"
//! with = { link = "/deploy/current", target = "releases/v2" }
//! rollback = { uses = "release", with = { link = "/deploy/current", target = "{{ steps.swap.details.previous }}" } }
//!
//! [[runbooks.deploy.steps]]
//! uses = "http-probe"           # a failed probe rolls the swap back
//! with = { url = "http://127.0.0.1:8080/health" }
//! ```
//!
//! The target must exist and stay inside the granted directory; the link, if it exists,
//! must be a symlink (a real file or directory there is never replaced). In a dry run
//! nothing changes and the outcome says what would.

use runcap_sdk::{ActionError, Context, Outcome};

/// Params of one swap.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The symlink, as the plugin sees it under its grant: "/deploy/current".
    pub link: String,
    /// What it should point at, relative to the link's directory: "releases/v2".
    pub target: String,
}

/// `a/./b/../c` → `a/c`; `None` when it climbs above its start (or is absolute).
pub fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The granted directory holding `link` (the longest preopen that is a prefix of it)
/// and the link's path inside it.
pub fn locate(link: &str, preopens: &[String]) -> Option<(usize, String)> {
    preopens
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let base = p.trim_end_matches('/');
            let rest = link.strip_prefix(base)?.strip_prefix('/')?;
            Some((i, base.len(), rest))
        })
        .max_by_key(|(_, len, _)| *len)
        .and_then(|(i, _, rest)| Some((i, normalize(rest).filter(|r| !r.is_empty())?)))
}

/// Where `target` (relative to the link's directory) lands inside the grant, or why it
/// cannot be used.
pub fn resolve_target(link_in_grant: &str, target: &str) -> Result<String, String> {
    if target.starts_with('/') {
        return Err(format!(
            "target `{target}` must be relative to the link's directory, like \"releases/v2\""
        ));
    }
    let dir = link_in_grant.rsplit_once('/').map_or("", |(d, _)| d);
    let joined = if dir.is_empty() {
        target.to_string()
    } else {
        format!("{dir}/{target}")
    };
    match normalize(&joined) {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(format!(
            "target `{target}` leads outside the granted directory"
        )),
    }
}

/// Swaps the link; see the module docs.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    swap(ctx, &p)
}

#[cfg(not(target_arch = "wasm32"))]
fn swap(_ctx: &Context, _p: &Params) -> Result<Outcome, ActionError> {
    Err(ActionError::Failed(
        "symlinks are swapped only inside runcap, through the plugin's fs grant".into(),
    ))
}

#[cfg(target_arch = "wasm32")]
fn swap(ctx: &Context, p: &Params) -> Result<Outcome, ActionError> {
    use wasip2::filesystem::types::{DescriptorType, ErrorCode, PathFlags};

    let dirs = wasip2::filesystem::preopens::get_directories();
    let names: Vec<String> = dirs.iter().map(|(_, name)| name.clone()).collect();
    let (i, rel) = locate(&p.link, &names).ok_or_else(|| {
        ActionError::Denied(format!(
            "`{}` is not inside a granted directory ({})",
            p.link,
            if names.is_empty() {
                "none is granted".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    let dir = &dirs[i].0;
    let target_in_grant = resolve_target(&rel, &p.target).map_err(ActionError::InvalidParams)?;
    let failed = |what: &str, e: ErrorCode| ActionError::Failed(format!("{what}: {e:?}"));

    match dir.stat_at(PathFlags::SYMLINK_FOLLOW, &target_in_grant) {
        Ok(_) => {}
        Err(ErrorCode::NoEntry) => {
            return Ok(Outcome::fail(format!(
                "target {} does not exist; nothing changed",
                p.target
            )));
        }
        Err(e) => return Err(failed(&format!("cannot read {}", p.target), e)),
    }
    let previous = match dir.stat_at(PathFlags::empty(), &rel) {
        Ok(s) if s.type_ == DescriptorType::SymbolicLink => Some(
            dir.readlink_at(&rel)
                .map_err(|e| failed("cannot read the link", e))?,
        ),
        Ok(_) => {
            return Err(ActionError::Failed(format!(
                "{} exists and is not a symlink; it is never replaced",
                p.link
            )));
        }
        Err(ErrorCode::NoEntry) => None,
        Err(e) => return Err(failed(&format!("cannot read {}", p.link), e)),
    };
    let was = previous.clone().unwrap_or_default();
    if previous.as_deref() == Some(p.target.as_str()) {
        return Ok(
            Outcome::ok(format!("{} already points at {}", p.link, p.target))
                .detail("previous", was)
                .detail("target", p.target.clone())
                .detail("changed", false),
        );
    }
    if ctx.dry_run {
        return Ok(Outcome::ok(format!(
            "dry run: would point {} at {} (now {})",
            p.link,
            p.target,
            previous.as_deref().unwrap_or("absent")
        ))
        .detail("previous", was)
        .detail("target", p.target.clone())
        .detail("changed", false));
    }
    // A new link beside the old one, renamed over it: readers see the old target or the
    // new one, never no link.
    let staged = format!("{rel}.runcap-swap");
    match dir.unlink_file_at(&staged) {
        Ok(()) | Err(ErrorCode::NoEntry) => {}
        Err(e) => return Err(failed("cannot clear a leftover staged link", e)),
    }
    dir.symlink_at(&p.target, &staged)
        .map_err(|e| failed("cannot create the new link", e))?;
    if let Err(e) = dir.rename_at(&staged, dir, &rel) {
        let _ = dir.unlink_file_at(&staged);
        return Err(failed("cannot swap the link", e));
    }
    Ok(Outcome::ok(format!(
        "{} now points at {} (was {})",
        p.link,
        p.target,
        previous.as_deref().unwrap_or("absent")
    ))
    .detail("previous", was)
    .detail("target", p.target.clone())
    .detail("changed", true))
}

runcap_sdk::plugin!(name: "release", description: "Points a release symlink at a new target atomically; reports the previous one for rollback.", run: run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_found_in_the_longest_granted_directory() {
        let preopens = vec!["/deploy".to_string(), "/deploy/app".to_string()];
        assert_eq!(
            locate("/deploy/app/current", &preopens),
            Some((1, "current".into()))
        );
        assert_eq!(
            locate("/deploy/current", &preopens),
            Some((0, "current".into()))
        );
        assert_eq!(locate("/deployment/current", &preopens), None);
        assert_eq!(locate("/deploy", &preopens), None);
        assert_eq!(locate("/deploy/../etc/passwd", &preopens), None);
    }

    #[test]
    fn targets_stay_inside_the_grant() {
        assert_eq!(
            resolve_target("current", "releases/v2"),
            Ok("releases/v2".into())
        );
        assert_eq!(
            resolve_target("app/current", "../releases/v2"),
            Ok("releases/v2".into())
        );
        assert!(
            resolve_target("current", "../../etc")
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            resolve_target("current", "/etc")
                .unwrap_err()
                .contains("relative")
        );
        assert!(resolve_target("current", ".").is_err());
    }
}
