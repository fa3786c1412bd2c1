//! `resources`: checks the host's resources against thresholds, the "check system
//! resources" section of a daily checklist, through the read-only `system` capability:
//!
//! ```toml
//! [plugins.resources.grants.system]
//! memory = true
//! load = true
//! mounts = ["/", "/var"]
//! processes = ["nginx"]
//!
//! [[runbooks.daily.steps]]
//! uses = "resources"
//! with = { memory = { warn_above = 85, fail_above = 95 }, disks = { "/" = { fail_above = 90 } }, processes = { nginx = {} } }
//! ```
//!
//! Every value read is returned in `details` (`memory.used_percent`, `disk./.used_percent`,
//! `processes.nginx.count`, …) and as a metric, so later steps and dashboards can use it.

use std::collections::BTreeMap;

use runcap_sdk::{ActionError, Context, Outcome, Status};

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
    /// Fails when one of them has more resident memory than this many MiB.
    pub max_rss_mib: Option<u64>,
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
    /// Space in use per mount point, percent.
    #[serde(default)]
    pub disks: BTreeMap<String, Threshold>,
    /// Inodes in use per mount point, percent.
    #[serde(default)]
    pub inodes: BTreeMap<String, Threshold>,
    /// Processes that must run, by exact name.
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessCheck>,
}

impl Checks {
    /// Refuses thresholds that cannot mean anything, so `runcap check` catches them.
    pub fn validate(&self) -> Result<(), String> {
        let percentages = self
            .memory
            .iter()
            .map(|t| ("memory".to_string(), t))
            .chain(self.disks.iter().map(|(m, t)| (format!("disks.{m}"), t)))
            .chain(self.inodes.iter().map(|(m, t)| (format!("inodes.{m}"), t)));
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
            .chain(self.disks.values())
            .chain(self.inodes.values());
        for t in all {
            if let (Some(w), Some(f)) = (t.warn_above, t.fail_above)
                && w > f
            {
                return Err(format!("warn_above {w} is above fail_above {f}"));
            }
        }
        for m in self.disks.keys().chain(self.inodes.keys()) {
            if !m.starts_with('/') {
                return Err(format!("`{m}` is not an absolute mount point"));
            }
        }
        if self.memory.is_none()
            && self.load_per_cpu.is_none()
            && self.disks.is_empty()
            && self.inodes.is_empty()
            && self.processes.is_empty()
        {
            return Err(
                "nothing to check: name memory, load_per_cpu, disks, inodes or processes".into(),
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
    if let Some(t) = &p.load_per_cpu {
        f.judge("load.per_cpu", ctx.load()?.per_cpu(), t, "");
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

runcap_sdk::plugin!(name: "resources", description: "Checks memory, load, disk and processes against thresholds.", run: run);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::testing::MockHost;
    use runcap_sdk::{DiskUse, Fact, FactValue, Memory, SystemError};

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
}
