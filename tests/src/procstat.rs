//! CPU time and memory of processes, read from `/proc`, for the benchmarks.

/// Clock ticks per second, the unit of `/proc`'s CPU times.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of a `/proc/…/stat` line after the command name (which may hold spaces).
pub fn stat_fields(path: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .skip(1) // state
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// CPU seconds (user + system) used by this process's waited-for children so far.
pub fn children_cpu() -> f64 {
    // After `state`: ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime …
    let f = stat_fields("/proc/self/stat");
    (f[12] + f[13]) as f64 / ticks_per_second()
}

/// CPU seconds (user + system) used by a live process.
pub fn process_cpu(pid: u32) -> f64 {
    let f = stat_fields(&format!("/proc/{pid}/stat"));
    (f[10] + f[11]) as f64 / ticks_per_second()
}

/// Resident set size of a live process, in MiB.
pub fn process_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
