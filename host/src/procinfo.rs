//! Identity of local processes. A pid alone can be reused; a pid together with its
//! start time (clock ticks since boot, /proc/PID/stat field 22) names one process for
//! good, so runcap never signals or trusts a process by pid alone.

/// The start time of a live (not zombie) process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// This process's pid and start time, read once: every run a server starts records them.
pub fn this_process() -> (u32, u64) {
    static THIS: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();
    *THIS.get_or_init(|| {
        let pid = std::process::id();
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// Whether the process `pid` that started at `start` still runs.
pub fn alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_made_up_one_is_not() {
        let (pid, start) = this_process();
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(!alive(u32::MAX, 0));
    }
}
