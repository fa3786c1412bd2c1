//! `runcap services`: what the manifest's services are doing right now.

use crate::caps::logs::{ReadError, read_end};
use crate::cli::{EnvArgs, StateArgs};
use crate::services::Verb;

/// The most of a log's end `--logs` reads, whatever `--lines` asks.
const LOG_TAIL_BYTES: u64 = 4 << 20;

/// `runcap services --logs NAME`: the last `lines` lines of a supervised service's log.
/// The supervisor wrote it through the environment's redaction; it is redacted again
/// with the rules as they are now, in case they grew since.
pub fn logs(args: &EnvArgs, state: &StateArgs, service: &str, lines: usize) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let resources = match super::resources(&env, args, state, None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(path) = resources.services.log_file(service) else {
        let known: Vec<&str> = resources
            .services
            .names()
            .filter(|n| resources.services.log_file(n).is_some())
            .map(String::as_str)
            .collect();
        eprintln!(
            "error: `{service}` is not a supervised (driver = \"process\") service of {}; those are: {}",
            env.file.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return 2;
    };
    let text = match tail(&path, lines) {
        Ok(t) => t,
        Err(ReadError::Missing { .. }) => {
            eprintln!("{service} has no log yet: it has not been started by runcap here");
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for mut line in text {
        crate::redaction::scrub_string(&resources.redactor, &mut line);
        println!("{line}");
    }
    0
}

/// The last `n` lines of the file at `path` (read from its last few MiB).
fn tail(path: &std::path::Path, n: usize) -> Result<Vec<String>, ReadError> {
    let bytes = read_end(path, LOG_TAIL_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(n);
    Ok(all[from..].iter().map(|l| l.to_string()).collect())
}

pub async fn run(args: &EnvArgs, state: &StateArgs, json: bool) -> u8 {
    let env = match super::load_env(args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    super::note_leftovers_if_any(args, state);
    let resources = match super::resources(&env, args, state, None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut all = Vec::new();
    for name in resources.services.names() {
        match resources.services.control(name, Verb::Status).await {
            Ok(s) => all.push(s),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                return 2;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return 0;
    }
    if all.is_empty() {
        println!("no services are defined in {}", env.file.display());
    }
    for s in all {
        let pid = s.pid.map(|p| format!("pid {p}")).unwrap_or_default();
        let uptime = s
            .uptime_ms
            .map(|u| {
                format!(
                    "up {}",
                    humantime::format_duration(std::time::Duration::from_secs(u / 1000))
                )
            })
            .unwrap_or_default();
        println!(
            "{:<16} {:<8} {:<10} {:<12} {}",
            s.name, s.state, pid, uptime, s.detail
        );
    }
    0
}
