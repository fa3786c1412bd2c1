//! `runcap services`: what the manifest's services are doing right now.

use crate::cli::{EnvArgs, StateArgs};
use crate::services::Verb;

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
