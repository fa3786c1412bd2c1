//! Raw manifest → validated [`Environment`], collecting every problem.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::compose::{self, Sources};
use super::model::{
    Environment, IncidentPolicy, Limits, OnFailure, Overlap, PluginSpec, Retry, Runbook, Step,
    Tier, TierAfter, Watch,
};
use super::raw;
use super::source::{Diagnostic, Diagnostics, KeyPath, SourceFile};
use super::units;
use crate::runbook::template;
use crate::store::records::Severity;

/// The largest plugin file runcap will hash and compile.
pub const MAX_PLUGIN_FILE: u64 = 64 << 20;

/// Shared state while validating one manifest: where problems are collected and
/// how relative paths resolve. Capability modules validate their grants with it.
pub struct Validator<'a> {
    /// The files the manifest was composed from, and which wrote each value.
    pub sources: &'a Sources,
    /// The directory of the manifest given (the top of an `extends` chain).
    pub dir: PathBuf,
    diags: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    pub fn new(sources: &'a Sources) -> Self {
        let dir = compose::dir_of(&sources.top().path);
        Validator {
            sources,
            dir,
            diags: Vec::new(),
        }
    }

    /// Records a problem with the value at `path`, located in the file that wrote it.
    pub fn error(&mut self, path: &KeyPath, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let help = (!help.is_empty()).then_some(help);
        self.diags
            .push(Diagnostic::at(self.sources, path, message, help));
    }

    /// Resolves the manifest path written at `key` against the directory of the file
    /// that wrote it (a base in another directory keeps its own relative paths).
    pub fn resolve(&self, key: &KeyPath, path: &str) -> PathBuf {
        compose::dir_of(&self.sources.origin(key).path).join(path)
    }

    /// Parses a human duration, recording a problem if it is not one.
    pub fn duration(&mut self, path: &KeyPath, text: &str) -> Option<Duration> {
        units::parse_duration(text)
            .map_err(|e| self.error(path, e.to_string(), ""))
            .ok()
    }

    /// Parses a human size, recording a problem if it is not one.
    pub fn size(&mut self, path: &KeyPath, text: &str) -> Option<u64> {
        units::parse_size(text)
            .map_err(|e| self.error(path, e.to_string(), ""))
            .ok()
    }

    /// Checks a plugin, runbook or step name.
    pub fn name(&mut self, path: &KeyPath, what: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.error(
                path,
                format!("`{name}` is not a valid {what} name"),
                "use lower-case letters, digits, `-` and `_`, starting with a letter or digit (at most 64)",
            );
        }
        ok
    }

    /// Checks a name templates refer to (a step id, a var): it must read as one word
    /// in `steps.NAME.status`, so `-` is not allowed.
    pub fn ident(&mut self, path: &KeyPath, what: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            let hint = if name.contains('-') {
                format!(" (try `{}`)", name.replace('-', "_"))
            } else {
                String::new()
            };
            self.error(
                path,
                format!("`{name}` is not a valid {what} name{hint}"),
                format!("{what} names appear in templates like `steps.probe.status`: use lower-case letters, digits and `_`, starting with a letter"),
            );
        }
        ok
    }

    /// Records a value that does not have the shape its key needs (serde's message), at the
    /// key inside `at` that is wrong, with the fix.
    pub fn shape_error(&mut self, at: &KeyPath, inner: &serde_path_to_error::Path, message: &str) {
        let mut path = at.clone();
        for seg in inner.iter() {
            path = match seg {
                serde_path_to_error::Segment::Seq { index } => path.index(*index),
                serde_path_to_error::Segment::Map { key } => path.key(key.as_str()),
                serde_path_to_error::Segment::Enum { variant } => path.key(variant.as_str()),
                serde_path_to_error::Segment::Unknown => path,
            };
        }
        let message = message.trim();
        self.error(&path, message, toml_help(message));
    }

    /// Every problem recorded so far.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diags
    }

    fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.diags.is_empty() {
            Ok(value)
        } else {
            Err(Diagnostics(self.diags))
        }
    }
}

/// How many steps and handlers one runbook may declare. A procedure longer than this
/// is several procedures, and the bound keeps `check` and a run's records small.
pub const MAX_STEPS_PER_RUNBOOK: usize = 10_000;

/// How many runbooks one environment may declare.
pub const MAX_RUNBOOKS: usize = 10_000;

pub(super) fn validate(
    source: &std::sync::Arc<Sources>,
    raw: raw::Manifest,
) -> Result<Environment, Diagnostics> {
    let mut v = Validator::new(source);
    let root = KeyPath::root();
    v.name(&root.key("environment"), "environment", &raw.environment);

    let services = crate::services::validate_services(&mut v, raw.services);
    let secrets = crate::secrets::validate_secrets(&mut v, raw.secrets);
    let proxies = crate::chaos::proxy::validate_proxies(&mut v, raw.proxies);
    let redaction = redaction(&mut v, raw.redaction.unwrap_or_default());
    let declared = crate::caps::Declared {
        services: &services,
        secrets: &secrets,
        proxies: &proxies,
    };
    let signers = signers(&mut v, raw.signers);
    let mut plugins = BTreeMap::new();
    for (name, mut p) in raw.plugins {
        let path = root.key("plugins").key(&name);
        if !v.name(&path, "plugin", &name) {
            continue;
        }
        let required = match p.signed_by.take() {
            Some(list) => (list, path.key("signed_by")),
            None => (
                raw.signed_by.clone().unwrap_or_default(),
                root.key("signed_by"),
            ),
        };
        if let Some(mut spec) = plugin(&mut v, &path, &name, p, &declared) {
            spec.signer = signer(&mut v, &spec, &signers, &required.0, &required.1);
            plugins.insert(name, spec);
        }
    }

    let var_names: Vec<String> = raw.vars.keys().cloned().collect();
    for name in &var_names {
        v.ident(&root.key("vars").key(name), "var", name);
    }
    let mut runbooks = BTreeMap::new();
    if raw.runbooks.len() > MAX_RUNBOOKS {
        v.error(
            &root.key("runbooks"),
            format!(
                "{} runbooks are declared; at most {MAX_RUNBOOKS} are allowed",
                raw.runbooks.len()
            ),
            "split the environment into several manifests",
        );
    }
    for (name, rb) in raw.runbooks.into_iter().take(MAX_RUNBOOKS) {
        let path = root.key("runbooks").key(&name);
        if !v.name(&path, "runbook", &name) {
            continue;
        }
        if let Some(runbook) = runbook(&mut v, &path, &name, rb, &plugins, &var_names) {
            runbooks.insert(name, runbook);
        }
    }

    let sla = sla(&mut v, raw.incidents.unwrap_or_default());
    sla_tiers_have_an_sla(&mut v, &runbooks, &sla);
    let runbook_names: Vec<&str> = runbooks.keys().map(String::as_str).collect();
    let serve = crate::serve::config::validate_serve(&mut v, raw.serve, &secrets, &runbook_names);
    trigger_params(&mut v, &serve, &runbooks);
    let env = Environment {
        name: raw.environment,
        file: source.top().path.clone(),
        source: source.clone(),
        vars: raw.vars,
        services,
        secrets,
        proxies,
        redaction,
        plugins,
        runbooks,
        serve,
        sla,
        signers,
    };
    v.finish(env)
}

/// A trigger's `params` against its runbook's declared parameters: each names one, a
/// template reads only the alert (`trigger.*`), a fixed value is one the parameter
/// accepts, and every parameter without a default is given, so no alert can start a run
/// that is bound to be refused.
fn trigger_params(
    v: &mut Validator,
    serve: &crate::serve::config::ServeSettings,
    runbooks: &BTreeMap<String, Runbook>,
) {
    for (name, t) in &serve.triggers {
        // A fleet trigger's runbook is the agents'; each agent checks its parameters.
        let Some(rb) = runbooks.get(&t.runbook).filter(|_| t.target.is_none()) else {
            continue;
        };
        let at = KeyPath::root().key("serve").key("triggers").key(name);
        for (p, text) in &t.params {
            let here = at.key("params").key(p);
            let Some(param) = rb.params.get(p) else {
                let declared: Vec<&str> = rb.params.keys().map(String::as_str).collect();
                v.error(
                    &here,
                    format!("runbook `{}` declares no parameter `{p}`", t.runbook),
                    if declared.is_empty() {
                        format!("declare it under [runbooks.{}.params.{p}]", t.runbook)
                    } else {
                        format!("its parameters: {}", declared.join(", "))
                    },
                );
                continue;
            };
            if !template::is_template(text) {
                if let Err(e) = param.parse(text) {
                    v.error(&here, e.to_string(), format!("it takes {}", param.kind));
                }
                continue;
            }
            match template::references(text, false) {
                Err(e) => v.error(&here, format!("not a template: {e}"), ""),
                Ok(refs) => {
                    for r in refs {
                        let problem = if r.root() == "trigger" {
                            template::check_trigger_reference(&r).err()
                        } else {
                            Some(format!(
                                "`{r}` is not known when an alert arrives; only `trigger.*` is"
                            ))
                        };
                        if let Some(problem) = problem {
                            v.error(
                                &here,
                                problem,
                                "use trigger.labels.NAME, trigger.annotations.NAME, trigger.status or trigger.fingerprint",
                            );
                        }
                    }
                }
            }
        }
        for (p, param) in &rb.params {
            if param.default.is_none() && !t.params.contains_key(p) {
                v.error(
                    &at.key("runbook"),
                    format!(
                        "runbook `{}` requires the parameter `{p}`, which this trigger does not give",
                        t.runbook
                    ),
                    if t.params.is_empty() {
                        format!("add to [serve.triggers.{name}]:\n  params = {{ {p} = \"{{{{ trigger.labels.{p} }}}}\" }}")
                    } else {
                        format!("add to the trigger's params: {p} = \"{{{{ trigger.labels.{p} }}}}\"")
                    },
                );
            }
        }
    }
}

/// `[incidents] sla`: a duration per severity.
fn sla(v: &mut Validator, raw: raw::Incidents) -> BTreeMap<Severity, Duration> {
    let mut out = BTreeMap::new();
    for (sev, text) in raw.sla {
        let at = KeyPath::root().key("incidents").key("sla").key(&sev);
        let Some(severity) = Severity::parse(&sev) else {
            v.error(
                &at,
                format!("`{sev}` is not a severity"),
                "use critical, high, medium, low or info",
            );
            continue;
        };
        if let Some(d) = v.duration(&at, &text) {
            out.insert(severity, d);
        }
    }
    out
}

/// A tier reached when the SLA is missed needs an SLA for its runbook's severity.
fn sla_tiers_have_an_sla(
    v: &mut Validator,
    runbooks: &BTreeMap<String, Runbook>,
    sla: &BTreeMap<Severity, Duration>,
) {
    for (name, rb) in runbooks {
        let severity = rb.incident.severity;
        for (i, t) in rb.incident.tiers.iter().enumerate() {
            if t.after == TierAfter::Sla && !sla.contains_key(&severity) {
                v.error(
                    &KeyPath::root()
                        .key("runbooks")
                        .key(name)
                        .key("incident")
                        .key("tiers")
                        .index(i)
                        .key("after"),
                    format!(
                        "this tier waits for the SLA of `{}` incidents, and there is none",
                        severity.as_str()
                    ),
                    if sla.is_empty() {
                        format!(
                            "add to the manifest:\n[incidents.sla]\n{} = \"15m\"",
                            severity.as_str()
                        )
                    } else {
                        format!(
                            "add {} = \"15m\" to `sla` under [incidents]",
                            severity.as_str()
                        )
                    },
                );
            }
        }
    }
}

/// `[signers]`: each key parsed, or an error at its line.
fn signers(
    v: &mut Validator,
    raw: BTreeMap<String, String>,
) -> BTreeMap<String, crate::signing::PublicKey> {
    let mut out = BTreeMap::new();
    for (name, text) in raw {
        let at = KeyPath::root().key("signers").key(&name);
        match text.parse::<crate::signing::PublicKey>() {
            Ok(key) => {
                out.insert(name, key);
            }
            Err(e) => v.error(
                &at,
                e.to_string(),
                "`runcap keygen NAME` writes a key pair; paste the text of NAME.pub here",
            ),
        }
    }
    out
}

/// Who signed a plugin's file. With `required` signers (at `at`), a file no one of them
/// signed is an error; otherwise any declared signer whose key verifies is named.
fn signer(
    v: &mut Validator,
    spec: &PluginSpec,
    signers: &BTreeMap<String, crate::signing::PublicKey>,
    required: &[String],
    at: &KeyPath,
) -> Option<String> {
    let mut keys = Vec::new();
    for name in required {
        match signers.get_key_value(name) {
            Some((n, k)) => keys.push((n.as_str(), k)),
            None => {
                let known: Vec<&str> = signers.keys().map(String::as_str).collect();
                let help = match closest(name, &known) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!(
                        "declare it: [signers]\n{name} = \"ed25519:…\" (the text of {name}.pub from `runcap keygen {name}`)"
                    ),
                };
                v.error(at, format!("`{name}` is not a declared signer"), help);
                return None;
            }
        }
    }
    if required.is_empty() {
        let all = signers.iter().map(|(n, k)| (n.as_str(), k));
        return crate::signing::signer_of(&spec.path, &spec.sha256, all)
            .ok()
            .map(str::to_string);
    }
    match crate::signing::signer_of(&spec.path, &spec.sha256, keys) {
        Ok(name) => Some(name.to_string()),
        Err(e) => {
            v.error(
                at,
                format!(
                    "plugin `{}` must be signed by {}: {e}",
                    spec.name,
                    required.join(" or ")
                ),
                format!(
                    "a signer signs the file they reviewed: runcap sign {} --key KEY_FILE",
                    spec.path.display()
                ),
            );
            None
        }
    }
}

/// Checks `[redaction]` by building it, and points at the rule that does not build.
fn redaction(v: &mut Validator, config: runcap_redact::Config) -> runcap_redact::Config {
    use runcap_redact::Error;
    let Err(e) = config.build() else {
        return config;
    };
    let root = KeyPath::root().key("redaction");
    let custom_at = |name: &str| {
        config
            .custom
            .iter()
            .position(|c| c.name == name)
            .map(|i| root.key("custom").index(i))
    };
    let (path, help) = match &e {
        Error::UnknownRule { name, known } => (
            config
                .rules
                .as_ref()
                .and_then(|r| r.iter().position(|x| x == name))
                .map_or(root.key("rules"), |i| root.key("rules").index(i)),
            format!("built-in rules: {known}; add your own under [[redaction.custom]]"),
        ),
        Error::DuplicateRule(name) => (
            custom_at(name).unwrap_or_else(|| root.key("rules")),
            "give every rule a different name".to_string(),
        ),
        Error::InvalidPattern { name, .. } | Error::EmptyMatch { name } => (
            custom_at(name).map_or(root.clone(), |p| p.key("pattern")),
            "patterns use Rust regex syntax (no look-around) and must match at least one character"
                .to_string(),
        ),
        Error::InvalidName { name, .. } => (
            custom_at(name).map_or(root.clone(), |p| p.key("name")),
            "use ASCII letters, digits, `_`, `-` and `.`, not a built-in rule's name".to_string(),
        ),
        Error::InvalidReplacement { name, .. } => (
            custom_at(name).map_or(root.clone(), |p| p.key("replacement")),
            "a replacement is one line of text, like \"[EMPLOYEE_ID]\"".to_string(),
        ),
        _ => (root.clone(), String::new()),
    };
    v.error(&path, e.to_string(), help);
    runcap_redact::Config::default()
}

fn plugin(
    v: &mut Validator,
    path: &KeyPath,
    name: &str,
    p: raw::Plugin,
    declared: &crate::caps::Declared,
) -> Option<PluginSpec> {
    let file = v.resolve(&path.key("path"), &p.path);
    let pin = p.sha256.trim().to_ascii_lowercase();
    let pin_ok = pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit());
    if !pin_ok {
        v.error(
            &path.key("sha256"),
            "is not a sha256 digest (64 hex characters)",
            format!("set it to the output of `sha256sum {}`", p.path),
        );
    }
    match pinned_digest(&file) {
        Err(e) => v.error(
            &path.key("path"),
            format!("cannot use plugin file {}: {e}", file.display()),
            "build the plugin (`./dev plugins` builds the first-party ones) or fix the path; it is relative to the manifest's directory",
        ),
        Ok(actual) if pin_ok && actual != pin => v.error(
            &path.key("sha256"),
            format!("{} has sha256 {actual}, not the pinned {pin}", file.display()),
            format!(
                "the file changed since it was pinned. If you built or reviewed this version, pin it:\n  sha256 = \"{actual}\""
            ),
        ),
        Ok(_) => {}
    }

    let lp = path.key("limits");
    let mut limits = Limits::default();
    if let Some(m) = &p.limits.memory
        && let Some(bytes) = v.size(&lp.key("memory"), m)
    {
        if bytes == 0 || bytes > Limits::MAX_MEMORY {
            v.error(
                &lp.key("memory"),
                format!("{m} is outside 1 byte ..= 1GiB"),
                "runcap gives a plugin at most 1GiB of linear memory",
            );
        }
        limits.memory = bytes;
    }
    if let Some(t) = &p.limits.time
        && let Some(d) = v.duration(&lp.key("time"), t)
    {
        if d.is_zero() {
            v.error(&lp.key("time"), "must be more than zero", "");
        }
        limits.time = d;
    }
    if let Some(o) = &p.limits.output
        && let Some(bytes) = v.size(&lp.key("output"), o)
    {
        if bytes < 1024 {
            v.error(&lp.key("output"), "must be at least 1KiB", "");
        }
        limits.output = bytes;
    }

    let grants = crate::caps::validate_grants(v, &path.key("grants"), p.grants, declared);
    Some(PluginSpec {
        name: name.to_string(),
        path: file,
        sha256: pin,
        limits,
        grants,
        signer: None,
    })
}

/// Where a list of steps sits in a runbook, which decides what its templates may see.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Main,
    Handler,
    Escalation,
}

fn runbook(
    v: &mut Validator,
    path: &KeyPath,
    name: &str,
    rb: raw::Runbook,
    plugins: &BTreeMap<String, PluginSpec>,
    vars: &[String],
) -> Option<Runbook> {
    let declared = rb.steps.len() + rb.handlers.len();
    if declared > MAX_STEPS_PER_RUNBOOK {
        let at = if rb.steps.len() > MAX_STEPS_PER_RUNBOOK {
            path.key("steps")
        } else {
            path.key("handlers")
        };
        v.error(
            &at,
            format!(
                "runbook `{name}` declares {declared} steps and handlers; at most {MAX_STEPS_PER_RUNBOOK} are allowed"
            ),
            "split it into several runbooks",
        );
        return None;
    }
    let main_ids: Vec<String> = rb.steps.iter().map(default_id).collect();
    let params = super::params::validate_params(v, &path.key("params"), rb.params);
    let overlap = overlap(v, &path.key("overlap"), rb.overlap.as_deref());
    let param_names: Vec<&str> = params.keys().map(String::as_str).collect();
    let var_names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let cx = StepContext {
        plugins,
        steps: template::StepIds::new(main_ids.iter().map(String::as_str)),
        vars: &var_names,
        params: &param_names,
        keep_going: rb.keep_going,
    };
    let mut seen = HashSet::new();
    let steps = step_list(v, &path.key("steps"), rb.steps, Phase::Main, &cx, &mut seen);
    let handlers = step_list(
        v,
        &path.key("handlers"),
        rb.handlers,
        Phase::Handler,
        &cx,
        &mut seen,
    );
    check_handler_names(v, path, name, &steps, &handlers);
    let incident = match rb.incident {
        Some(raw_incident) => {
            incident_policy(v, &path.key("incident"), raw_incident, &cx, &mut seen)
        }
        None => IncidentPolicy::default(),
    };
    Some(Runbook {
        name: name.to_string(),
        description: rb.description,
        steps,
        handlers,
        incident,
        keep_going: rb.keep_going,
        idempotent: rb.idempotent,
        overlap,
        params,
        schedule: rb
            .schedule
            .and_then(|s| crate::serve::config::validate_schedule(v, &path.key("schedule"), s)),
    })
}

/// A runbook's `overlap` policy: "wait" (the default) or "refuse".
fn overlap(v: &mut Validator, at: &KeyPath, text: Option<&str>) -> Overlap {
    match text {
        None | Some("wait") => Overlap::Wait,
        Some("refuse") => Overlap::Refuse,
        Some(other) => {
            v.error(
                at,
                format!("`{other}` is not an overlap policy"),
                "use \"wait\" (the default) or \"refuse\"",
            );
            Overlap::Wait
        }
    }
}

/// Every handler a main step's `on_failure` names must be one of the runbook's handlers.
fn check_handler_names(
    v: &mut Validator,
    path: &KeyPath,
    name: &str,
    steps: &[Step],
    handlers: &[Step],
) {
    for (i, step) in steps.iter().enumerate() {
        let OnFailure::Run(names) = &step.on_failure else {
            continue;
        };
        for h in names {
            if handlers.iter().any(|x| &x.id == h) {
                continue;
            }
            let ids: Vec<&str> = handlers.iter().map(|x| x.id.as_str()).collect();
            v.error(
                &path.key("steps").index(i).key("on_failure"),
                format!("names handler `{h}`, which is not under [[runbooks.{name}.handlers]]"),
                if ids.is_empty() {
                    "add it as a handler step, or use \"abort\" or \"continue\"".to_string()
                } else {
                    format!("handlers: {}", ids.join(", "))
                },
            );
        }
    }
}

/// A runbook's `[incident]`: severity, and the escalation steps with when they run.
fn incident_policy(
    v: &mut Validator,
    ip: &KeyPath,
    raw_incident: raw::Incident,
    cx: &StepContext,
    seen: &mut HashSet<String>,
) -> IncidentPolicy {
    let mut incident = IncidentPolicy::default();
    if let Some(sev) = raw_incident.severity {
        match crate::store::records::Severity::parse(&sev) {
            Some(s) => incident.severity = s,
            None => v.error(
                &ip.key("severity"),
                format!("`{sev}` is not a severity"),
                "use critical, high, medium, low or info",
            ),
        }
    }
    let escalate_after = raw_incident.escalate_after.unwrap_or(0);
    let escalate = step_list(
        v,
        &ip.key("escalate"),
        raw_incident.escalate,
        Phase::Escalation,
        cx,
        seen,
    );
    if escalate_after == 0 && !escalate.is_empty() {
        v.error(
            &ip.key("escalate_after"),
            "escalation steps are declared but never run",
            "set `escalate_after = N`: the number of consecutive failed runs that escalates",
        );
    }
    if escalate_after > 0 {
        incident.tiers.push(Tier {
            name: "escalation".into(),
            after: TierAfter::Failures(escalate_after),
            steps: escalate,
            at: ip.key("escalate"),
        });
    }
    for (i, t) in raw_incident.tiers.into_iter().enumerate() {
        let tp = ip.key("tiers").index(i);
        let after = tier_after(v, &tp.key("after"), &t.after);
        let steps = step_list(v, &tp.key("steps"), t.steps, Phase::Escalation, cx, seen);
        if let Some(after) = after {
            incident.tiers.push(Tier {
                name: t
                    .name
                    .unwrap_or_else(|| format!("tier {}", incident.tiers.len() + 1)),
                after,
                steps,
                at: tp.key("steps"),
            });
        }
    }
    if incident.tiers.len() > MAX_TIERS {
        v.error(
            &ip.key("tiers"),
            format!(
                "{} escalation tiers; at most {MAX_TIERS} are allowed",
                incident.tiers.len()
            ),
            "merge tiers that fire together",
        );
    }
    incident
}

/// The most escalation tiers a runbook may have (each is one bit of the incident's record).
const MAX_TIERS: usize = 32;

/// A tier's `after`: a count of failed runs, a duration, or `"sla"`.
fn tier_after(v: &mut Validator, at: &KeyPath, raw: &toml::Value) -> Option<TierAfter> {
    let help = "write after = 2 (consecutive failed runs), after = \"30m\" (unacknowledged this long) or after = \"sla\"";
    match raw {
        toml::Value::Integer(n) if (1..=1000).contains(n) => Some(TierAfter::Failures(*n as u32)),
        toml::Value::String(s) if s == "sla" => Some(TierAfter::Sla),
        toml::Value::String(s) => v.duration(at, s).map(TierAfter::Unacknowledged),
        other => {
            v.error(at, format!("`{other}` is not when a tier is reached"), help);
            None
        }
    }
}

/// What every step list of one runbook is checked against.
struct StepContext<'a> {
    plugins: &'a BTreeMap<String, PluginSpec>,
    /// The runbook's main steps, which templates may refer to.
    steps: template::StepIds<'a>,
    vars: &'a [&'a str],
    params: &'a [&'a str],
    /// Main steps fail the run at its end rather than stop it, unless they say otherwise.
    keep_going: bool,
}

fn step_list(
    v: &mut Validator,
    path: &KeyPath,
    raw_steps: Vec<raw::Step>,
    phase: Phase,
    cx: &StepContext,
    seen: &mut HashSet<String>,
) -> Vec<Step> {
    let mut out = Vec::new();
    let plugins = cx.plugins;
    for (i, s) in raw_steps.into_iter().enumerate() {
        let sp = path.index(i);
        let id = step_id(v, &sp, &s, seen);
        uses(v, &sp.key("uses"), &s.uses, plugins);
        // What templates here may refer to: earlier main steps, or all of them after the fact.
        let ran = match phase {
            Phase::Main => i.min(cx.steps.len()),
            Phase::Handler | Phase::Escalation => cx.steps.len(),
        };
        let scope = template::Scope {
            steps: &cx.steps,
            ran,
            also: None,
            vars: cx.vars,
            params: cx.params,
            incident: phase == Phase::Escalation,
        };
        let with = toml_to_json(toml::Value::Table(s.with));
        check_templates(v, &sp.key("with"), &with, &scope);
        if let Some(cond) = &s.when {
            check_text(v, &sp.key("when"), cond, true, &scope);
        }
        let timeout = step_timeout(v, &sp, s.timeout.as_deref(), &s.uses, plugins);
        let retry = step_retry(
            v,
            &sp,
            s.retries,
            s.backoff.as_deref(),
            s.backoff_max.as_deref(),
        );
        let on_failure = match &s.on_failure {
            None if cx.keep_going && phase == Phase::Main => OnFailure::Finish,
            None => OnFailure::Abort,
            Some(value) => on_failure(v, &sp.key("on_failure"), value, phase),
        };
        let watch = s
            .watch
            .and_then(|w| watch(v, &sp.key("watch"), w, retry.retries));
        let rollback = s
            .rollback
            .map(|r| rollback_step(v, &sp.key("rollback"), r, &id, &scope, plugins));
        out.push(Step {
            id,
            uses: s.uses,
            with,
            when: s.when,
            timeout,
            retry,
            on_failure,
            rollback,
            watch,
        });
    }
    out
}

/// A step's id (its `uses` when it has none), which must be a name used once per runbook.
fn step_id(v: &mut Validator, sp: &KeyPath, s: &raw::Step, seen: &mut HashSet<String>) -> String {
    let id = default_id(s);
    let id_path = if s.id.is_some() {
        sp.key("id")
    } else {
        sp.key("uses")
    };
    if v.ident(&id_path, "step", &id) && !seen.insert(id.clone()) {
        v.error(
            &id_path,
            format!("step id `{id}` is used twice in this runbook"),
            "give each step a distinct `id = \"…\"`",
        );
    }
    id
}

/// A step's `retries`, `backoff` and `backoff_max`.
fn step_retry(
    v: &mut Validator,
    sp: &KeyPath,
    retries: Option<u32>,
    backoff: Option<&str>,
    backoff_max: Option<&str>,
) -> Retry {
    let mut retry = Retry {
        retries: retries.unwrap_or(0),
        ..Retry::default()
    };
    if retry.retries > 100 {
        v.error(
            &sp.key("retries"),
            "more than 100 retries",
            "use at most 100",
        );
    }
    if let Some(b) = backoff {
        retry.backoff = v.duration(&sp.key("backoff"), b).unwrap_or(retry.backoff);
    }
    if let Some(b) = backoff_max {
        retry.max = v.duration(&sp.key("backoff_max"), b).unwrap_or(retry.max);
    }
    retry
}

/// The rollback of step `id`, whose templates may also refer to the step it undoes.
fn rollback_step(
    v: &mut Validator,
    rp: &KeyPath,
    r: raw::Rollback,
    id: &str,
    scope: &template::Scope,
    plugins: &BTreeMap<String, PluginSpec>,
) -> Box<Step> {
    uses(v, &rp.key("uses"), &r.uses, plugins);
    let rscope = template::Scope {
        also: Some(id),
        ..*scope
    };
    let with = toml_to_json(toml::Value::Table(r.with));
    check_templates(v, &rp.key("with"), &with, &rscope);
    let timeout = step_timeout(v, rp, r.timeout.as_deref(), &r.uses, plugins);
    Box::new(Step {
        id: format!("{id}.rollback"),
        uses: r.uses,
        with,
        when: None,
        timeout,
        retry: Retry::default(),
        on_failure: OnFailure::Continue,
        rollback: None,
        watch: None,
    })
}

/// A step's `timeout`, which must fit within its plugin's `limits.time`: a longer one
/// would be cut to the limit without a word, so it is refused with both fixes.
fn step_timeout(
    v: &mut Validator,
    step: &KeyPath,
    text: Option<&str>,
    uses: &str,
    plugins: &BTreeMap<String, PluginSpec>,
) -> Option<Duration> {
    let at = step.key("timeout");
    let timeout = v.duration(&at, text?)?;
    let limit = plugins.get(uses)?.limits.time;
    if timeout > limit {
        v.error(
            &at,
            format!(
                "timeout {} is longer than plugin `{uses}`'s time limit of {}, which would cut it short",
                humantime::format_duration(timeout),
                humantime::format_duration(limit)
            ),
            format!(
                "shorten it, or raise the limit: limits = {{ time = \"{}\" }} under [plugins.{uses}]",
                humantime::format_duration(timeout)
            ),
        );
        return None;
    }
    Some(timeout)
}

/// A step's `watch`: both periods set, the period shorter than the duration, and no
/// retries beside it (a watch already repeats the check).
fn watch(v: &mut Validator, path: &KeyPath, w: raw::Watch, retries: u32) -> Option<Watch> {
    let every = v.duration(&path.key("every"), &w.every)?;
    let duration = v.duration(&path.key("for"), &w.duration)?;
    let until_ok = match w.until.as_deref() {
        None => false,
        Some("ok") => true,
        Some(other) => {
            v.error(
                &path.key("until"),
                format!("`{other}` is not a watch condition"),
                "use `until = \"ok\"` to stop at the first pass, or leave it out to require every check to pass",
            );
            return None;
        }
    };
    if every.is_zero() || every > duration {
        v.error(
            &path.key("every"),
            format!(
                "checking every {} over {} is not a watch",
                humantime::format_duration(every),
                humantime::format_duration(duration)
            ),
            "make `every` longer than zero and no longer than `for`",
        );
        return None;
    }
    if retries > 0 {
        v.error(
            path,
            "a watched step repeats its check already; retries would repeat each check",
            "remove `retries`, or remove `watch`",
        );
        return None;
    }
    Some(Watch {
        every,
        duration,
        until_ok,
    })
}

/// A step's id: its `id`, or the plugin it uses with `-` read as `_`.
fn default_id(s: &raw::Step) -> String {
    s.id.clone().unwrap_or_else(|| s.uses.replace('-', "_"))
}

fn uses(v: &mut Validator, path: &KeyPath, name: &str, plugins: &BTreeMap<String, PluginSpec>) {
    if plugins.contains_key(name) {
        return;
    }
    let declared: Vec<&str> = plugins.keys().map(String::as_str).collect();
    let help = match closest(name, &declared) {
        Some(c) => format!(
            "did you mean `{c}`? Declared plugins: {}",
            declared.join(", ")
        ),
        None if declared.is_empty() => {
            "declare it first under [plugins.NAME] with `path` and `sha256`".into()
        }
        None => format!(
            "declare it under [plugins.{name}], or use one of: {}",
            declared.join(", ")
        ),
    };
    v.error(
        path,
        format!("uses `{name}`, which is not declared under [plugins]"),
        help,
    );
}

fn on_failure(v: &mut Validator, path: &KeyPath, value: &toml::Value, phase: Phase) -> OnFailure {
    let help = "use \"abort\" (the default), \"continue\", \"finish\" (go on, fail the run at the end), or a list of handler ids like [\"page-oncall\"]";
    match value {
        toml::Value::String(s) if s == "abort" => OnFailure::Abort,
        toml::Value::String(s) if s == "continue" => OnFailure::Continue,
        toml::Value::String(s) if s == "finish" && phase == Phase::Main => OnFailure::Finish,
        toml::Value::Array(items) if phase == Phase::Main => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect();
            if names.len() != items.len() || names.is_empty() {
                v.error(
                    path,
                    "the handler list must be a non-empty list of step ids",
                    help,
                );
            }
            OnFailure::Run(names)
        }
        toml::Value::Array(_) => {
            v.error(
                path,
                "handlers and escalation steps cannot run handlers",
                "use \"abort\" or \"continue\"",
            );
            OnFailure::Abort
        }
        other => {
            v.error(path, format!("`{other}` is not a failure policy"), help);
            OnFailure::Abort
        }
    }
}

fn check_templates(
    v: &mut Validator,
    path: &KeyPath,
    with: &serde_json::Value,
    scope: &template::Scope,
) {
    for (param, text) in template::template_strings(with) {
        let mut p = path.clone();
        for part in param.split('.') {
            p = p.key(part);
        }
        check_text(v, &p, text, false, scope);
    }
}

fn check_text(
    v: &mut Validator,
    path: &KeyPath,
    text: &str,
    condition: bool,
    scope: &template::Scope,
) {
    match template::references(text, condition) {
        Err(e) => v.error(path, format!("cannot parse `{text}`: {e}"), "conditions look like `steps.probe.status == 'fail'`; templates like \"{{ steps.probe.details.url }}\""),
        Ok(refs) => {
            for r in refs {
                if let Err(e) = template::check_reference(&r, scope) {
                    v.error(path, e.to_string(), "");
                }
            }
        }
    }
}

/// Why a plugin file could not be digested (and so cannot be pinned or loaded).
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error(
        "{size} bytes is more than the {} runcap accepts for a plugin",
        bytesize::ByteSize(MAX_PLUGIN_FILE)
    )]
    TooLarge { size: u64 },
}

/// The hex sha256 of a plugin file, refusing files too large to compile.
pub fn file_digest(path: &Path) -> Result<String, DigestError> {
    let meta = plugin_file(path)?;
    digest_of(path, &meta)
}

/// The hex sha256 of a plugin file as validation checks it against the pin: a file
/// unchanged since it was last hashed is not hashed again (see [`crate::stamps`]).
fn pinned_digest(path: &Path) -> Result<String, DigestError> {
    let meta = plugin_file(path)?;
    let stamps = crate::stamps::Stamps::beside_cache();
    if let Some(digest) = stamps.as_ref().and_then(|s| s.recall(path, &meta)) {
        return Ok(digest);
    }
    let digest = digest_of(path, &meta)?;
    if let Some(stamps) = &stamps {
        stamps.record(path, &meta, &digest);
    }
    Ok(digest)
}

/// A plugin file's metadata, refusing what is not a file or too large to compile.
fn plugin_file(path: &Path) -> Result<std::fs::Metadata, DigestError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(DigestError::NotAFile);
    }
    if meta.len() > MAX_PLUGIN_FILE {
        return Err(DigestError::TooLarge { size: meta.len() });
    }
    Ok(meta)
}

/// The hex sha256 of the file at `path`, read in pieces; refused if it grew past the
/// size `meta` gave while being read.
fn digest_of(path: &Path, meta: &std::fs::Metadata) -> Result<String, DigestError> {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let total = std::io::copy(
        &mut std::fs::File::open(path)?.take(MAX_PLUGIN_FILE + 1),
        &mut hasher,
    )?;
    if total > MAX_PLUGIN_FILE {
        return Err(DigestError::TooLarge {
            size: total.max(meta.len()),
        });
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Converts a TOML value to JSON; datetimes become RFC 3339 strings.
pub fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Turns a TOML syntax or shape error into a diagnostic with a suggestion.
pub(crate) fn toml_error(source: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().to_string();
    let key = e
        .span()
        .and_then(|s| source.path_at(s.start))
        .map(|p| p.to_string())
        .unwrap_or_default();
    let help = toml_help(&message);
    Diagnostic::at_span(source, e.span(), key, message, Some(help))
}

/// A shape error in a composed manifest: `merged` is the composed text the error's
/// span points into; the diagnostic names the file of the chain that wrote the key.
pub(super) fn composed_toml_error(
    sources: &Sources,
    merged: &SourceFile,
    e: &toml::de::Error,
) -> Diagnostic {
    let message = e.message().trim().to_string();
    let key = e
        .span()
        .and_then(|s| merged.path_at(s.start))
        .unwrap_or_default();
    let help = toml_help(&message);
    Diagnostic::at(sources, &key, message, Some(help))
}

/// What to do about a TOML error message.
fn toml_help(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        match closest(field, &choices) {
            Some(c) => format!("did you mean `{c}`?"),
            None if choices.is_empty() => format!("remove `{field}`"),
            None => format!(
                "remove `{field}`; this table accepts: {}",
                choices.join(", ")
            ),
        }
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        format!("add `{field} = …` to this table")
    } else {
        "see the manifest reference in README.md".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("http-prob", &["http-probe", "redact"]),
            Some("http-probe")
        );
        assert_eq!(closest("backup", &["http-probe", "redact"]), None);
    }
}
