//! `resources`: checks the host's resources against thresholds, the "check system
//! resources" section of a daily checklist, through the read-only `system` capability:
//!
//! ```toml
//! [plugins.resources.grants.system]
//! memory = true
//! load = true
//! mounts = ["/", "/var"]
//! processes = ["nginx"]
//! pid_files = ["/run/api.pid"]
//! files = true
//! zombies = true
//!
//! [[runbooks.daily.steps]]
//! uses = "resources"
//! with = { memory = { warn_above = 85, fail_above = 95 }, cpu = { warn_above = 70, fail_above = 90 }, disks = { "/" = { fail_above = 90 } }, processes = { nginx = { min = 1, max = 8 } }, zombies = { fail_above = 0 } }
//!
//! [[runbooks.check-api.steps]]
//! uses = "resources"
//! with = { pid_files = { "/run/api.pid" = { max_rss_mib = 2048, max_open_files_percent = 80 } }, open_files = { warn_above = 70, fail_above = 90 } }
//! ```
//!
//! `cpu` judges CPU use of all CPUs over a quarter-second sample, percent (needs
//! `load = true`); `processes.NAME` wants between `min` (default 1) and `max` of them;
//! `zombies` judges how many processes on the host exited without their parent reaping
//! them (needs `zombies = true`), naming the first few and their parents.
//!
//! A process checked by pid file must run (a missing or stale pid file fails, naming it and
//! why: no process has the pid, or one that started after the file was written reused it);
//! `max_rss_mib`, `max_open_files` and `max_open_files_percent` (of its own open-files
//! limit) fail above them, and fail when runcap cannot see the process's open files
//! (another user's process, unless runcap runs as root). `open_files` judges the host's open
//! file handles against `fs.file-max`, percent.
//!
//! Every value read is returned in `details` (`memory.used_percent`, `cpu.used_percent`,
//! `disk./.used_percent`, `zombies.count`,
//! `processes.nginx.count`, `pid_files./run/api.pid.pid`, `….rss_mib`, `….open_files`,
//! `….open_files_limit`, `….open_files_percent`, `open_files.used_percent`, `open_files.open`,
//! `open_files.max`, …) and as a metric, so later steps and dashboards can use it.

use std::collections::BTreeMap;

use runcap_sdk::{ActionError, Context, Outcome, Status, SystemError};

/// Limits on a percentage (0–100) or a ratio: above `warn_above` warns, above
/// `fail_above` fails.
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub warn_above: Option<f64>,
    pub fail_above: Option<f64>,
}

/// What a process check expects.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessCheck {
    /// At least this many processes of the name run (default 1).
    #[serde(default = "one")]
    pub min: u32,
    /// At most this many run (a fork bomb, workers that are never retired).
    pub max: Option<u32>,
    /// Fails when one of them has more resident memory than this many MiB.
    pub max_rss_mib: Option<u64>,
}

/// What must listen on a TCP port.
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortCheck {
    /// The listening process's name, when it must be this one.
    pub process: Option<String>,
}

/// Limits on a certificate's remaining validity: fewer days left than `warn_days` warns,
/// fewer than `fail_days` fails (an expired one always fails).
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateCheck {
    pub warn_days: Option<i64>,
    pub fail_days: Option<i64>,
}

/// What a process named by a pid file must be: running, and within these limits.
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PidFileCheck {
    /// Fails when it has more resident memory than this many MiB.
    pub max_rss_mib: Option<u64>,
    /// Fails when it has more file descriptors open than this.
    pub max_open_files: Option<u32>,
    /// Fails when its open files are more than this share of its open-files limit,
    /// percent.
    pub max_open_files_percent: Option<f64>,
}

fn one() -> u32 {
    1
}

/// What to check, checked for sense when read (so `runcap check` refuses a threshold
/// that cannot mean anything).
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(try_from = "Checks")]
pub struct Params(pub Checks);

impl TryFrom<Checks> for Params {
    type Error = String;
    fn try_from(c: Checks) -> Result<Self, String> {
        c.validate()?;
        Ok(Params(c))
    }
}

/// What to check; everything is optional, and only what is named is read.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Memory in use, percent.
    pub memory: Option<Threshold>,
    /// One-minute load average per CPU (1.0: every CPU busy).
    pub load_per_cpu: Option<Threshold>,
    /// CPU use of all CPUs over a quarter-second sample, percent.
    pub cpu: Option<Threshold>,
    /// Zombie processes on the host (exited, not reaped by their parent), a count.
    pub zombies: Option<Threshold>,
    /// Space in use per mount point, percent.
    #[serde(default)]
    pub disks: BTreeMap<String, Threshold>,
    /// Inodes in use per mount point, percent.
    #[serde(default)]
    pub inodes: BTreeMap<String, Threshold>,
    /// Processes that must run, by exact name.
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessCheck>,
    /// TCP ports something must listen on, by number.
    #[serde(default)]
    pub ports: BTreeMap<String, PortCheck>,
    /// Certificate files that must not expire soon, by path.
    #[serde(default)]
    pub certificates: BTreeMap<String, CertificateCheck>,
    /// Processes that must run, by the absolute path of their pid file.
    #[serde(default)]
    pub pid_files: BTreeMap<String, PidFileCheck>,
    /// Open file handles on the whole host, percent of the maximum.
    pub open_files: Option<Threshold>,
}

impl Checks {
    /// Refuses thresholds that cannot mean anything, so `runcap check` catches them.
    pub fn validate(&self) -> Result<(), String> {
        let percentages = self
            .memory
            .iter()
            .map(|t| ("memory".to_string(), t))
            .chain(self.cpu.iter().map(|t| ("cpu".to_string(), t)))
            .chain(self.disks.iter().map(|(m, t)| (format!("disks.{m}"), t)))
            .chain(self.inodes.iter().map(|(m, t)| (format!("inodes.{m}"), t)))
            .chain(
                self.open_files
                    .iter()
                    .map(|t| ("open_files".to_string(), t)),
            );
        for (at, t) in percentages {
            for v in [t.warn_above, t.fail_above].into_iter().flatten() {
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{at}: {v} is not a percentage (0 to 100)"));
                }
            }
        }
        let all = self
            .memory
            .iter()
            .chain(self.load_per_cpu.iter())
            .chain(self.cpu.iter())
            .chain(self.zombies.iter())
            .chain(self.disks.values())
            .chain(self.inodes.values())
            .chain(self.open_files.iter());
        for t in all {
            if let (Some(w), Some(f)) = (t.warn_above, t.fail_above)
                && w > f
            {
                return Err(format!("warn_above {w} is above fail_above {f}"));
            }
        }
        for v in self
            .zombies
            .iter()
            .flat_map(|t| [t.warn_above, t.fail_above])
            .flatten()
        {
            if v < 0.0 || v.fract() != 0.0 {
                return Err(format!("zombies: {v} is not a count (0, 1, 2, ...)"));
            }
        }
        for (name, c) in &self.processes {
            if let Some(max) = c.max
                && max < c.min
            {
                return Err(format!(
                    "processes.{name}: max {max} is below min {} (write min = {max} too, or a larger max)",
                    c.min
                ));
            }
        }
        for m in self.disks.keys().chain(self.inodes.keys()) {
            if !m.starts_with('/') {
                return Err(format!("`{m}` is not an absolute mount point"));
            }
        }
        for p in self.ports.keys() {
            if p.parse::<u16>().map_or(true, |n| n == 0) {
                return Err(format!("ports: `{p}` is not a TCP port (1 to 65535)"));
            }
        }
        for (path, c) in &self.certificates {
            if !path.starts_with('/') {
                return Err(format!("certificates: `{path}` is not an absolute path"));
            }
            if let (Some(w), Some(f)) = (c.warn_days, c.fail_days)
                && w < f
            {
                return Err(format!(
                    "certificates.{path}: warn_days {w} is below fail_days {f}"
                ));
            }
        }
        for (path, c) in &self.pid_files {
            if !path.starts_with('/') {
                return Err(format!("pid_files: `{path}` is not an absolute path"));
            }
            if let Some(v) = c.max_open_files_percent
                && !(0.0..=100.0).contains(&v)
            {
                return Err(format!(
                    "pid_files.{path}: max_open_files_percent {v} is not a percentage (0 to 100)"
                ));
            }
            if c.max_open_files == Some(0) {
                return Err(format!(
                    "pid_files.{path}: max_open_files 0 fails every running process"
                ));
            }
        }
        if self.memory.is_none()
            && self.open_files.is_none()
            && self.pid_files.is_empty()
            && self.load_per_cpu.is_none()
            && self.cpu.is_none()
            && self.zombies.is_none()
            && self.disks.is_empty()
            && self.inodes.is_empty()
            && self.processes.is_empty()
            && self.ports.is_empty()
            && self.certificates.is_empty()
        {
            return Err(
                "nothing to check: name memory, load_per_cpu, cpu, disks, inodes, processes, zombies, pid_files, open_files, ports or certificates".into(),
            );
        }
        Ok(())
    }
}

/// The findings so far: the worst status, one phrase per problem, values read.
struct Findings {
    status: Status,
    problems: Vec<String>,
    values: Vec<(String, f64)>,
}

impl Findings {
    fn judge(&mut self, what: &str, value: f64, t: &Threshold, unit: &str) {
        self.values.push((what.to_string(), value));
        if t.fail_above.is_some_and(|f| value > f) {
            self.status = Status::Fail;
            self.problems.push(format!(
                "{what} {value:.1}{unit} is above {}{unit}",
                t.fail_above.unwrap_or_default()
            ));
        } else if t.warn_above.is_some_and(|w| value > w) {
            if self.status == Status::Ok {
                self.status = Status::Warn;
            }
            self.problems.push(format!(
                "{what} {value:.1}{unit} is above {}{unit} (warning)",
                t.warn_above.unwrap_or_default()
            ));
        }
    }

    fn fail(&mut self, problem: String) {
        self.status = Status::Fail;
        self.problems.push(problem);
    }
}

/// Reads what the params name and judges each value; a fact not granted is a denial.
pub fn run(ctx: &Context, Params(p): Params) -> Result<Outcome, ActionError> {
    let mut f = Findings {
        status: Status::Ok,
        problems: Vec::new(),
        values: Vec::new(),
    };
    if let Some(t) = &p.memory {
        f.judge("memory.used_percent", ctx.memory()?.used_percent(), t, "%");
    }
    if p.load_per_cpu.is_some() || p.cpu.is_some() {
        let load = ctx.load()?;
        if let Some(t) = &p.load_per_cpu {
            f.judge("load.per_cpu", load.per_cpu(), t, "");
        }
        if let Some(t) = &p.cpu {
            f.judge("cpu.used_percent", f64::from(load.cpu_percent), t, "%");
        }
    }
    for (mount, t) in &p.disks {
        let d = ctx.disk(mount)?;
        f.judge(
            &format!("disk.{mount}.used_percent"),
            d.used_percent(),
            t,
            "%",
        );
    }
    for (mount, t) in &p.inodes {
        let d = ctx.disk(mount)?;
        f.judge(
            &format!("inodes.{mount}.used_percent"),
            d.inodes_used_percent(),
            t,
            "%",
        );
    }
    for (name, check) in &p.processes {
        let found = ctx.processes(name)?;
        f.values
            .push((format!("processes.{name}.count"), found.len() as f64));
        if (found.len() as u32) < check.min {
            f.fail(format!(
                "{} {name} process(es) running, expected at least {}",
                found.len(),
                check.min
            ));
        }
        if let Some(max) = check.max
            && found.len() as u32 > max
        {
            f.fail(format!(
                "{} {name} process(es) running, expected at most {max}",
                found.len()
            ));
        }
        if let Some(max) = check.max_rss_mib {
            let biggest = found.iter().map(|p| p.rss).max().unwrap_or(0) >> 20;
            f.values
                .push((format!("processes.{name}.max_rss_mib"), biggest as f64));
            if biggest > max {
                f.fail(format!(
                    "{name} uses {biggest} MiB of memory, above {max} MiB"
                ));
            }
        }
    }
    if let Some(t) = &p.zombies {
        check_zombies(ctx, t, &mut f)?;
    }
    check_pid_files(ctx, &p.pid_files, &mut f)?;
    if let Some(t) = &p.open_files {
        let files = ctx.files()?;
        f.judge("open_files.used_percent", files.used_percent(), t, "%");
        f.values.push(("open_files.open".into(), files.open as f64));
        f.values.push(("open_files.max".into(), files.max as f64));
    }
    check_ports(ctx, &p.ports, &mut f)?;
    check_certificates(ctx, &p.certificates, &mut f)?;
    let summary = if f.problems.is_empty() {
        format!("{} resource checks within limits", f.values.len())
    } else {
        f.problems.join("; ")
    };
    let mut out = Outcome::new(f.status, summary);
    for (name, value) in f.values {
        out = out.detail(name.clone(), value).metric(name, value);
    }
    Ok(out)
}

/// How many zombies the host has, judged against `t`; a problem names the first few and
/// their parents, which are the processes to look at.
fn check_zombies(ctx: &Context, t: &Threshold, f: &mut Findings) -> Result<(), ActionError> {
    const NAMED: usize = 5;
    let zombies = ctx.zombies()?;
    let count = zombies.len() as f64;
    f.values.push(("zombies.count".into(), count));
    let mut listed: Vec<String> = zombies
        .iter()
        .take(NAMED)
        .map(|z| match z.parent_pid {
            Some(parent) => format!("{} (pid {}, parent {parent})", z.name, z.pid),
            None => format!("{} (pid {})", z.name, z.pid),
        })
        .collect();
    if zombies.len() > NAMED {
        listed.push(format!("{} more", zombies.len() - NAMED));
    }
    let which = |limit: f64, warning: &str| {
        format!(
            "{} zombie process(es), above {limit}{warning}: {}; their parents have not reaped them",
            zombies.len(),
            listed.join(", ")
        )
    };
    if let Some(limit) = t.fail_above.filter(|l| count > *l) {
        f.fail(which(limit, ""));
    } else if let Some(limit) = t.warn_above.filter(|l| count > *l) {
        if f.status == Status::Ok {
            f.status = Status::Warn;
        }
        f.problems.push(which(limit, " (warning)"));
    }
    Ok(())
}

/// Each pid file names a running process within its limits. A pid file the host cannot
/// read (missing, empty, no pid) fails the check like a stopped process; a denial stops it.
fn check_pid_files(
    ctx: &Context,
    pid_files: &BTreeMap<String, PidFileCheck>,
    f: &mut Findings,
) -> Result<(), ActionError> {
    for (path, check) in pid_files {
        let p = match ctx.pid_file_status(path) {
            Ok(state) => match state.process {
                Some(p) => p,
                None => {
                    let why = state.not_running.unwrap_or_default();
                    f.fail(format!("the pid file {path} is stale: {why}"));
                    continue;
                }
            },
            Err(SystemError::Unavailable(m)) => {
                f.fail(format!("no process known for pid file {path}: {m}"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let at = |what: &str| format!("pid_files.{path}.{what}");
        f.values.push((at("pid"), f64::from(p.pid)));
        let rss_mib = p.rss >> 20;
        f.values.push((at("rss_mib"), rss_mib as f64));
        if let Some(open) = p.open_files {
            f.values.push((at("open_files"), f64::from(open)));
        }
        if let Some(limit) = p.open_files_limit {
            f.values.push((at("open_files_limit"), f64::from(limit)));
        }
        let percent = p.open_files_percent();
        if let Some(pc) = percent {
            f.values.push((at("open_files_percent"), pc));
        }
        let who = format!("{} (pid {}, from {path})", p.name, p.pid);
        if let Some(max) = check.max_rss_mib
            && rss_mib > max
        {
            f.fail(format!(
                "{who} uses {rss_mib} MiB of memory, above {max} MiB"
            ));
        }
        let unseen = || {
            format!(
                "runcap cannot see the open files of {who}: run it as the process's user or as root"
            )
        };
        if let Some(max) = check.max_open_files {
            match p.open_files {
                Some(open) if open > max => {
                    f.fail(format!("{who} has {open} files open, above {max}"))
                }
                Some(_) => {}
                None => f.fail(unseen()),
            }
        }
        if let Some(max) = check.max_open_files_percent {
            match percent {
                Some(pc) if pc > max => f.fail(format!(
                    "{who} has {pc:.1}% of its open-files limit open ({} of {}), above {max}%",
                    p.open_files.unwrap_or_default(),
                    p.open_files_limit.unwrap_or_default()
                )),
                Some(_) => {}
                None => f.fail(unseen()),
            }
        }
    }
    Ok(())
}

/// Something listens on each port, and it is the process named when one is.
fn check_ports(
    ctx: &Context,
    ports: &BTreeMap<String, PortCheck>,
    f: &mut Findings,
) -> Result<(), ActionError> {
    for (text, check) in ports {
        let port: u16 = text.parse().unwrap_or_default();
        match ctx.port(port)? {
            None => f.fail(format!("nothing listens on TCP port {port}")),
            Some(l) => {
                if let Some(pid) = l.pid {
                    f.values.push((format!("ports.{port}.pid"), f64::from(pid)));
                }
                if let Some(want) = &check.process
                    && l.name.as_deref() != Some(want.as_str())
                {
                    f.fail(format!(
                        "TCP port {port} is held by {}, not {want}",
                        l.name.as_deref().unwrap_or("a process runcap cannot see")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Each certificate has more days left than its limits.
fn check_certificates(
    ctx: &Context,
    certificates: &BTreeMap<String, CertificateCheck>,
    f: &mut Findings,
) -> Result<(), ActionError> {
    for (path, check) in certificates {
        let c = ctx.certificate(path)?;
        let left = c.days_left;
        f.values
            .push((format!("certificates.{path}.days_left"), left as f64));
        if left < 0 {
            f.fail(format!("certificate {path} ({}) has expired", c.subject));
        } else if check.fail_days.is_some_and(|d| left < d) {
            f.fail(format!(
                "certificate {path} expires in {left} days, fewer than {}",
                check.fail_days.unwrap_or_default()
            ));
        } else if check.warn_days.is_some_and(|d| left < d) {
            if f.status == Status::Ok {
                f.status = Status::Warn;
            }
            f.problems.push(format!(
                "certificate {path} expires in {left} days (warning below {})",
                check.warn_days.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

runcap_sdk::plugin!(name: "resources", description: "Checks memory, load, CPU, disk, processes, zombies and open files against thresholds.", run: run);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::testing::MockHost;
    use runcap_sdk::{DiskUse, Fact, FactValue, FileHandles, Memory, PidFileState, ProcessDetail};

    fn disk(used: u64) -> FactValue {
        FactValue::Disk(DiskUse {
            mount: "/".into(),
            total: 100,
            available: 100 - used,
            inodes_total: 10,
            inodes_free: 9,
        })
    }

    fn params(json: serde_json::Value) -> Params {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_disk_above_its_limit_fails_and_one_below_passes() {
        let host = MockHost::new().answer_system(Ok(disk(95)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"disks": {"/": {"fail_above": 90}}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail, "{}", out.summary);
        assert!(
            out.summary
                .contains("disk./.used_percent 95.0% is above 90%"),
            "{}",
            out.summary
        );
        assert_eq!(host.system_calls.borrow()[0], Fact::Disk("/".into()));

        let host = MockHost::new().answer_system(Ok(disk(50)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"disks": {"/": {"fail_above": 90}}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.details["disk./.used_percent"], 50.0);
    }

    #[test]
    fn memory_between_warn_and_fail_warns() {
        let m = FactValue::Memory(Memory {
            total: 100,
            available: 10,
            swap_total: 0,
            swap_free: 0,
        });
        let host = MockHost::new().answer_system(Ok(m));
        let out = run(
            &host.context(),
            params(serde_json::json!({"memory": {"warn_above": 85, "fail_above": 95}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Warn, "{}", out.summary);
    }

    #[test]
    fn a_missing_process_fails_and_an_ungranted_fact_is_denied() {
        let host = MockHost::new().answer_system(Ok(FactValue::Processes(vec![])));
        let out = run(
            &host.context(),
            params(serde_json::json!({"processes": {"nginx": {}}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.summary
                .contains("0 nginx process(es) running, expected at least 1")
        );
        let host =
            MockHost::new().answer_system(Err(SystemError::Denied("add load = true".into())));
        let err = run(
            &host.context(),
            params(serde_json::json!({"load_per_cpu": {"fail_above": 2}})),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Denied(m) if m.contains("load = true")));
    }

    #[test]
    fn meaningless_thresholds_are_refused_before_anything_is_read() {
        for (json, expected) in [
            (
                serde_json::json!({"disks": {"/": {"fail_above": 120}}}),
                "not a percentage",
            ),
            (
                serde_json::json!({"memory": {"warn_above": 90, "fail_above": 80}}),
                "is above fail_above",
            ),
            (
                serde_json::json!({"disks": {"var": {"fail_above": 90}}}),
                "not an absolute mount point",
            ),
            (serde_json::json!({}), "nothing to check"),
        ] {
            let err = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_port_held_by_another_process_or_a_certificate_near_expiry_is_judged() {
        use runcap_sdk::{CertificateInfo, PortListener};
        let host = MockHost::new()
            .answer_system(Ok(FactValue::Port(Some(PortListener {
                port: 443,
                pid: Some(7),
                name: Some("haproxy".into()),
            }))))
            .answer_system(Ok(FactValue::Certificate(CertificateInfo {
                path: "/etc/ssl/api.pem".into(),
                subject: "CN=api".into(),
                not_after: 0,
                days_left: 20,
            })));
        let out = run(
            &host.context(),
            params(serde_json::json!({
                "ports": {"443": {"process": "nginx"}},
                "certificates": {"/etc/ssl/api.pem": {"warn_days": 30, "fail_days": 7}}
            })),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail, "{}", out.summary);
        assert!(
            out.summary
                .contains("TCP port 443 is held by haproxy, not nginx"),
            "{}",
            out.summary
        );
        assert!(
            out.summary
                .contains("expires in 20 days (warning below 30)"),
            "{}",
            out.summary
        );
        assert_eq!(out.details["certificates./etc/ssl/api.pem.days_left"], 20.0);
        assert_eq!(host.system_calls.borrow()[0], Fact::Port(443));

        let host = MockHost::new().answer_system(Ok(FactValue::Port(None)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"ports": {"8080": {}}})),
        )
        .unwrap();
        assert!(
            out.summary.contains("nothing listens on TCP port 8080"),
            "{}",
            out.summary
        );
        for (json, expected) in [
            (
                serde_json::json!({"ports": {"http": {}}}),
                "is not a TCP port",
            ),
            (
                serde_json::json!({"certificates": {"/c.pem": {"warn_days": 3, "fail_days": 7}}}),
                "warn_days 3 is below fail_days 7",
            ),
        ] {
            let e = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    fn api(open_files: Option<u32>, limit: Option<u32>) -> FactValue {
        FactValue::PidFileStatus(PidFileState {
            pid: 4242,
            process: Some(ProcessDetail {
                pid: 4242,
                name: "api".into(),
                rss: 300 << 20,
                cpu_percent: 1.0,
                uptime_seconds: 60,
                open_files,
                open_files_limit: limit,
            }),
            not_running: None,
        })
    }

    #[test]
    fn a_process_by_pid_file_is_judged_on_memory_and_open_files() {
        let host = MockHost::new().answer_system(Ok(api(Some(900), Some(1024))));
        let out = run(
            &host.context(),
            params(serde_json::json!({"pid_files": {"/run/api.pid": {
                "max_rss_mib": 512, "max_open_files": 1000, "max_open_files_percent": 80
            }}})),
        )
        .unwrap();
        assert_eq!(
            host.system_calls.borrow()[0],
            Fact::PidFileStatus("/run/api.pid".into())
        );
        assert_eq!(out.status, Status::Fail, "{}", out.summary);
        assert!(
            out.summary.contains(
                "api (pid 4242, from /run/api.pid) has 87.9% of its open-files limit open (900 of 1024), above 80%"
            ),
            "{}",
            out.summary
        );
        assert_eq!(out.details["pid_files./run/api.pid.pid"], 4242.0);
        assert_eq!(out.details["pid_files./run/api.pid.rss_mib"], 300.0);
        assert_eq!(out.details["pid_files./run/api.pid.open_files"], 900.0);
        assert_eq!(
            out.details["pid_files./run/api.pid.open_files_limit"],
            1024.0
        );

        let host = MockHost::new().answer_system(Ok(api(Some(1001), Some(4096))));
        let out = run(
            &host.context(),
            params(serde_json::json!({"pid_files": {"/run/api.pid": {"max_open_files": 1000, "max_rss_mib": 200}}})),
        )
        .unwrap();
        assert!(
            out.summary.contains("has 1001 files open, above 1000"),
            "{}",
            out.summary
        );
        assert!(
            out.summary
                .contains("uses 300 MiB of memory, above 200 MiB"),
            "{}",
            out.summary
        );

        let host = MockHost::new().answer_system(Ok(api(Some(10), Some(1024))));
        let out = run(
            &host.context(),
            params(
                serde_json::json!({"pid_files": {"/run/api.pid": {"max_open_files_percent": 80}}}),
            ),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok, "{}", out.summary);

        // A limit on open files runcap cannot see fails rather than passing unchecked.
        let host = MockHost::new().answer_system(Ok(api(None, None)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"pid_files": {"/run/api.pid": {"max_open_files": 100}}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.summary.contains("cannot see the open files"),
            "{}",
            out.summary
        );
        assert!(
            !out.details
                .contains_key("pid_files./run/api.pid.open_files")
        );
    }

    #[test]
    fn a_stale_or_missing_pid_file_fails_naming_it_and_a_denial_stops() {
        let gone = |why: &str| {
            Ok(FactValue::PidFileStatus(PidFileState {
                pid: 99,
                process: None,
                not_running: Some(why.into()),
            }))
        };
        let host = MockHost::new()
            .answer_system(gone("no process has pid 99"))
            .answer_system(Err(SystemError::Unavailable(
                "cannot read /run/db.pid: No such file or directory (os error 2)".into(),
            )))
            .answer_system(gone("pid 99 is now sleep, started 3600s after /run/web.pid was last written: the pid was reused"));
        let out = run(
            &host.context(),
            params(serde_json::json!({"pid_files": {"/run/api.pid": {}, "/run/web.pid": {}, "/run/db.pid": {}}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.summary
                .contains("the pid file /run/api.pid is stale: no process has pid 99"),
            "{}",
            out.summary
        );
        assert!(
            out.summary
                .contains("the pid file /run/web.pid is stale: pid 99 is now sleep, started 3600s after /run/web.pid was last written: the pid was reused"),
            "{}",
            out.summary
        );
        assert!(
            out.summary
                .contains("no process known for pid file /run/db.pid: cannot read"),
            "{}",
            out.summary
        );
        let host = MockHost::new().answer_system(Err(SystemError::Denied(
            "add \"/run/api.pid\" to plugins.resources.grants.system.pid_files".into(),
        )));
        let err = run(
            &host.context(),
            params(serde_json::json!({"pid_files": {"/run/api.pid": {}}})),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Denied(m) if m.contains("pid_files")));
    }

    fn load(cpu_percent: f32) -> FactValue {
        FactValue::Load(runcap_sdk::Load {
            one: 0.5,
            five: 0.5,
            fifteen: 0.5,
            cpus: 2,
            cpu_percent,
        })
    }

    #[test]
    fn cpu_use_above_its_thresholds_warns_or_fails_and_load_is_read_once() {
        for (cpu, status) in [
            (20.0, Status::Ok),
            (75.5, Status::Warn),
            (95.0, Status::Fail),
        ] {
            let host = MockHost::new().answer_system(Ok(load(cpu)));
            let out = run(
                &host.context(),
                params(serde_json::json!({
                    "cpu": {"warn_above": 70, "fail_above": 90},
                    "load_per_cpu": {"fail_above": 4}
                })),
            )
            .unwrap();
            assert_eq!(out.status, status, "{}", out.summary);
            assert_eq!(*host.system_calls.borrow(), [Fact::Load]);
            assert_eq!(out.details["cpu.used_percent"], f64::from(cpu));
            assert_eq!(out.details["load.per_cpu"], 0.25);
        }
        let host = MockHost::new().answer_system(Ok(load(95.0)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"cpu": {"fail_above": 90}})),
        )
        .unwrap();
        assert!(
            out.summary.contains("cpu.used_percent 95.0% is above 90%"),
            "{}",
            out.summary
        );
    }

    fn processes(n: u32) -> FactValue {
        FactValue::Processes(
            (0..n)
                .map(|i| runcap_sdk::ProcessInfo {
                    pid: 100 + i,
                    name: "worker".into(),
                    rss: 1 << 20,
                    cpu_percent: 0.0,
                    uptime_seconds: 5,
                })
                .collect(),
        )
    }

    #[test]
    fn more_processes_than_max_fail_and_a_count_between_min_and_max_passes() {
        let check = serde_json::json!({"processes": {"worker": {"min": 2, "max": 4}}});
        for (n, status) in [
            (1, Status::Fail),
            (3, Status::Ok),
            (4, Status::Ok),
            (5, Status::Fail),
        ] {
            let host = MockHost::new().answer_system(Ok(processes(n)));
            let out = run(&host.context(), params(check.clone())).unwrap();
            assert_eq!(out.status, status, "{n}: {}", out.summary);
            assert_eq!(out.details["processes.worker.count"], f64::from(n));
        }
        let host = MockHost::new().answer_system(Ok(processes(5)));
        let out = run(&host.context(), params(check)).unwrap();
        assert!(
            out.summary
                .contains("5 worker process(es) running, expected at most 4"),
            "{}",
            out.summary
        );
    }

    fn zombies(n: u32) -> FactValue {
        FactValue::Zombies(
            (0..n)
                .map(|i| runcap_sdk::Zombie {
                    pid: 200 + i,
                    name: "child".into(),
                    parent_pid: (i % 2 == 0).then_some(50),
                })
                .collect(),
        )
    }

    #[test]
    fn zombies_above_the_threshold_fail_naming_them_and_their_parents() {
        let host = MockHost::new().answer_system(Ok(zombies(0)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"zombies": {"fail_above": 0}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Ok, "{}", out.summary);
        assert_eq!(*host.system_calls.borrow(), [Fact::Zombies]);
        assert_eq!(out.details["zombies.count"], 0.0);

        let host = MockHost::new().answer_system(Ok(zombies(7)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"zombies": {"fail_above": 0}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Fail);
        assert_eq!(
            out.summary,
            "7 zombie process(es), above 0: child (pid 200, parent 50), child (pid 201), child (pid 202, parent 50), child (pid 203), child (pid 204, parent 50), 2 more; their parents have not reaped them"
        );

        let host = MockHost::new().answer_system(Ok(zombies(2)));
        let out = run(
            &host.context(),
            params(serde_json::json!({"zombies": {"warn_above": 1, "fail_above": 5}})),
        )
        .unwrap();
        assert_eq!(out.status, Status::Warn, "{}", out.summary);

        let host = MockHost::new().answer_system(Err(SystemError::Denied(
            "zombies is not granted; add zombies = true to plugins.resources.grants.system".into(),
        )));
        let err = run(
            &host.context(),
            params(serde_json::json!({"zombies": {"fail_above": 0}})),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Denied(m) if m.contains("zombies = true")));
    }

    #[test]
    fn senseless_cpu_zombie_and_process_count_params_are_refused() {
        for (json, expected) in [
            (
                serde_json::json!({"cpu": {"fail_above": 150}}),
                "cpu: 150 is not a percentage",
            ),
            (
                serde_json::json!({"cpu": {"warn_above": 90, "fail_above": 70}}),
                "warn_above 90 is above fail_above 70",
            ),
            (
                serde_json::json!({"zombies": {"fail_above": 0.5}}),
                "zombies: 0.5 is not a count",
            ),
            (
                serde_json::json!({"zombies": {"fail_above": -1}}),
                "zombies: -1 is not a count",
            ),
            (
                serde_json::json!({"processes": {"nginx": {"min": 3, "max": 2}}}),
                "processes.nginx: max 2 is below min 3",
            ),
        ] {
            let e = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn host_open_files_above_the_threshold_warn_or_fail() {
        let files = |open| FactValue::Files(FileHandles { open, max: 1000 });
        for (open, status) in [(500, Status::Ok), (800, Status::Warn), (950, Status::Fail)] {
            let host = MockHost::new().answer_system(Ok(files(open)));
            let out = run(
                &host.context(),
                params(serde_json::json!({"open_files": {"warn_above": 70, "fail_above": 90}})),
            )
            .unwrap();
            assert_eq!(out.status, status, "{}", out.summary);
            assert_eq!(host.system_calls.borrow()[0], Fact::Files);
            assert_eq!(out.details["open_files.used_percent"], open as f64 / 10.0);
            assert_eq!(out.details["open_files.open"], open as f64);
            assert_eq!(out.details["open_files.max"], 1000.0);
        }
    }

    #[test]
    fn senseless_pid_file_and_open_files_params_are_refused() {
        for (json, expected) in [
            (
                serde_json::json!({"pid_files": {"run/api.pid": {}}}),
                "pid_files: `run/api.pid` is not an absolute path",
            ),
            (
                serde_json::json!({"pid_files": {"/run/api.pid": {"max_open_files_percent": 150}}}),
                "max_open_files_percent 150 is not a percentage",
            ),
            (
                serde_json::json!({"pid_files": {"/run/api.pid": {"max_open_files": 0}}}),
                "max_open_files 0",
            ),
            (
                serde_json::json!({"pid_files": {"/run/api.pid": {"min": 1}}}),
                "unknown field `min`",
            ),
            (
                serde_json::json!({"open_files": {"fail_above": 101}}),
                "open_files: 101 is not a percentage",
            ),
            (
                serde_json::json!({"open_files": {"warn_above": 95, "fail_above": 90}}),
                "warn_above 95 is above fail_above 90",
            ),
        ] {
            let e = serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }
}
