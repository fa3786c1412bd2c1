//! `exec`: run a command the manifest declares, never an arbitrary one.
//!
//! | | |
//! |---|---|
//! | grants | one table per command: `[plugins.NAME.grants.exec.commands.migrate]` `program = "/usr/bin/alembic"`, `args = ["upgrade", "{{ revision }}"]`, `params.revision = { type = "string", pattern = "[0-9a-f]{12}" }`, `dir`, `env`, `secret_env`, `timeout`, `output_limit`, `user`, `read_only`, `shell` |
//! | manifest | the grant only |
//! | default | no grant: the interface cannot be imported; an undeclared command is denied, and so is a value a hole's type does not accept |
//! | enforced | the program path and every literal argument are the manifest's; a plugin fills typed holes (an enum value, an integer in range, text matching an anchored pattern), each one whole argument or part of one, never split into more; no shell unless `shell = true` (values then go in single-quoted); an empty environment but for the names allowed; a time limit (the command's process group is killed when it passes, and leftovers of the group are killed when the command exits); an output cap; the user to run as when runcap is root, with every group the user is in; a dry run records the command without starting it unless it is `read_only` |
//! | audit | one call record per command: its name and argument list (redacted), the decision, and its exit code and duration |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::exec as wit;
use crate::caps::compare::{Change, ChangeKind, fmt_duration, fmt_size};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator, closest};
use crate::secrets::SecretStore;

/// A command's time limit when the grant names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// A command's output cap (per stream) when the grant names none.
const DEFAULT_OUTPUT: u64 = 64 * 1024;
/// The largest output cap a grant may set (per stream).
const MAX_OUTPUT: u64 = 16 << 20;
/// Output read past the cap before redacting, so a secret that crosses the cap is still
/// found whole and replaced before the text is cut.
const LOOKAHEAD: usize = 64 * 1024;
/// How long output is still read once the command is gone (a detached process holding
/// its pipe open is not waited for longer).
const DRAIN: Duration = Duration::from_secs(2);

/// The `exec` capability.
pub struct Exec;

impl Capability for Exec {
    const NAME: &'static str = "exec";
    const INTERFACE: &'static str = "runcap:plugin/exec";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/exec.wit"));
    type Config = ExecGrantConfig;
    type Grant = ExecGrant;
    type Access = ExecAccess;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.exec]   # then one table per command: [plugins.{plugin}.grants.exec.commands.NAME] with program = \"/usr/bin/...\" and args = [...]"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: ExecGrantConfig,
        declared: &Declared,
    ) -> Option<ExecGrant> {
        ExecGrant::validate(v, at, raw, declared)
    }

    fn diff(old: &ExecGrantConfig, new: &ExecGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &ExecGrant) -> Vec<String> {
        grant.commands.values().map(|c| c.describe()).collect()
    }

    fn risks(grant: &ExecGrant) -> Vec<String> {
        grant
            .commands
            .values()
            .filter(|c| matches!(c.program, Program::Shell(_)))
            .map(|c| {
                format!(
                    "command `{}` runs through /bin/sh (shell = true): the script can run anything the user can",
                    c.name
                )
            })
            .collect()
    }

    fn secrets(grant: &ExecGrant) -> Vec<String> {
        let mut names: Vec<String> = grant
            .commands
            .values()
            .flat_map(|c| c.secret_env.values().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn granted_names(grant: Option<&ExecGrant>, kind: &str) -> Option<Vec<String>> {
        (kind.is_empty() || kind == "commands")
            .then(|| grant.map_or_else(Vec::new, |g| g.commands.keys().cloned().collect()))
    }

    fn prepare(grant: Arc<ExecGrant>, env: &Resources) -> Result<ExecAccess, PrepareError> {
        Ok(ExecAccess {
            grant,
            secrets: env.secrets.clone(),
        })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// `[plugins.NAME.grants.exec]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGrantConfig {
    /// `[...exec.commands.NAME]`: the commands the plugin may run, by name.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandConfig>,
}

/// One declared command as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program's path (absolute, or relative to the manifest); not with `shell`.
    pub program: Option<String>,
    /// Its arguments; `{{ name }}` marks a hole declared in `params`.
    #[serde(default)]
    pub args: Vec<String>,
    /// With `shell = true`: the script `/bin/sh -c` runs, holes included.
    pub script: Option<String>,
    /// Runs `script` through `/bin/sh -c` (an over-grant `runcap caps` points out).
    #[serde(default)]
    pub shell: bool,
    /// The holes and what each accepts.
    #[serde(default)]
    pub params: BTreeMap<String, HoleConfig>,
    /// Working directory (default: the manifest's directory).
    pub dir: Option<String>,
    /// Variables of runcap's own environment the command gets (it gets no other).
    #[serde(default)]
    pub env: Vec<String>,
    /// Variables set to a `[secrets.NAME]` value: `{ PGPASSWORD = "db-password" }`.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Time limit (default 60s; the step's own limit also applies).
    pub timeout: Option<String>,
    /// The most of each of stdout and stderr kept (default 64KiB).
    pub output_limit: Option<String>,
    /// The user (name or uid) to run as when runcap runs as root.
    pub user: Option<String>,
    /// Harmless to run in a dry run (a status query): it then runs instead of being
    /// only recorded.
    #[serde(default)]
    pub read_only: bool,
}

/// What a hole accepts, as written: `{ type = "enum", values = [...] }`,
/// `{ type = "int", min = 1, max = 10 }` or `{ type = "string", pattern = "..." }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HoleConfig {
    Enum { values: Vec<String> },
    Int { min: Option<i64>, max: Option<i64> },
    String { pattern: String },
}

/// A validated exec grant.
#[derive(Debug)]
pub struct ExecGrant {
    pub commands: BTreeMap<String, Arc<Command>>,
    /// `plugins.NAME.grants.exec`, for denial messages.
    pub key: String,
}

/// What a plugin's actions use: its commands and the secrets their environments name.
pub struct ExecAccess {
    pub grant: Arc<ExecGrant>,
    pub secrets: Arc<SecretStore>,
}

/// A declared command, ready to render and run.
#[derive(Debug)]
pub struct Command {
    pub name: String,
    pub program: Program,
    pub holes: BTreeMap<String, Hole>,
    pub dir: PathBuf,
    pub env: Vec<String>,
    pub secret_env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub output_limit: u64,
    pub user: Option<RunAs>,
    pub read_only: bool,
}

/// What is started.
#[derive(Debug)]
pub enum Program {
    /// A program with an argument template, one template per argument.
    Direct { path: PathBuf, args: Vec<Template> },
    /// A `/bin/sh -c` script.
    Shell(Template),
}

/// A user to run as, resolved when the grant is read.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in, the primary one included, as a login session gets
    /// them (`initgroups`): a command run as `postgres` can read what group `ssl-cert` may.
    pub groups: Vec<u32>,
}

/// The groups `user` (whose primary group is `gid`) is in: `gid` and every group the
/// group database lists the user in, as `getgrouplist(3)` reads them.
pub fn groups_of(user: &str, gid: u32) -> Result<Vec<u32>, nix::Error> {
    let name = std::ffi::CString::new(user).map_err(|_| nix::Error::EINVAL)?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.dedup();
    Ok(groups)
}

/// What a hole accepts.
#[derive(Debug)]
pub enum Hole {
    Enum(Vec<String>),
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    /// Text the whole of which matches the pattern (kept as written for messages).
    Text(regex::Regex, String),
}

impl Hole {
    /// Checks a value; the error says what the hole accepts.
    fn accept(&self, name: &str, value: &str) -> Result<(), ArgError> {
        let ok = match self {
            Hole::Enum(values) => values.iter().any(|v| v == value),
            Hole::Int { min, max } => value
                .parse::<i64>()
                .is_ok_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)),
            Hole::Text(re, _) => re.is_match(value),
        };
        if ok {
            Ok(())
        } else {
            Err(ArgError::Rejected {
                name: name.to_string(),
                accepts: self.describe(),
                value: value.to_string(),
            })
        }
    }

    /// What it accepts, as a phrase.
    fn describe(&self) -> String {
        match self {
            Hole::Enum(values) => format!("one of {}", values.join(", ")),
            Hole::Int { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("an integer from {a} to {b}"),
                (Some(a), None) => format!("an integer of at least {a}"),
                (None, Some(b)) => format!("an integer of at most {b}"),
                (None, None) => "an integer".to_string(),
            },
            Hole::Text(_, p) => format!("text matching `{p}`"),
        }
    }
}

/// Why a plugin's arguments do not fill a command's holes; the plugin is told which.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("`{name}` is {accepts}; got {value:?}")]
    Rejected {
        name: String,
        accepts: String,
        value: String,
    },
    #[error("command `{command}` takes no arguments; got `{name}`")]
    NoHoles { command: String, name: String },
    #[error("command `{command}` has no hole `{name}`; its holes: {holes}")]
    Unknown {
        command: String,
        name: String,
        holes: String,
    },
    #[error("`{0}` is given twice")]
    Twice(String),
    #[error("command `{command}` needs `{name}` ({accepts})")]
    Missing {
        command: String,
        name: String,
        accepts: String,
    },
}

/// Why an argument template in a grant cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` in {0:?} is not closed by `}}}}`")]
    Unclosed(String),
    #[error(
        "`{{{{{mark}}}}}` in {text:?} is not a hole: write {{{{ name }}}} with a name from params"
    )]
    NotAHole { mark: String, text: String },
}

/// One argument (or a script) with holes: literal text and `{{ name }}` marks.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Hole(String),
}

impl Template {
    /// Parses `{{ name }}` marks; a `{{` that does not open a mark is an error.
    fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed(text.to_string()));
            };
            let name = after[..close].trim();
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(TemplateError::NotAHole {
                    mark: after[..close].to_string(),
                    text: text.to_string(),
                });
            }
            parts.push(Part::Hole(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    fn holes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Hole(h) => Some(h.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each hole's value, passed through `quote`.
    fn render(&self, values: &BTreeMap<&str, &str>, quote: fn(&str) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Hole(h) => quote(values.get(h.as_str()).copied().unwrap_or_default()),
            })
            .collect()
    }
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn verbatim(value: &str) -> String {
    value.to_string()
}

/// Whether `name` can be an environment variable's name.
fn env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ExecGrant {
    /// Checks a grant as written, every command in it.
    pub fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: ExecGrantConfig,
        declared: &Declared,
    ) -> Option<Self> {
        let mut ok = true;
        let mut commands = BTreeMap::new();
        for (name, c) in raw.commands {
            let cat = at.key("commands").key(&name);
            ok &= v.name(&cat, "command", &name);
            match Command::validate(v, &cat, &name, c, declared) {
                Some(cmd) => {
                    commands.insert(name, Arc::new(cmd));
                }
                None => ok = false,
            }
        }
        ok.then(|| ExecGrant {
            commands,
            key: at.to_string(),
        })
    }
}

impl Command {
    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        name: &str,
        c: CommandConfig,
        declared: &Declared,
    ) -> Option<Self> {
        let mut ok = true;
        let program = Self::program(v, at, &c);
        let holes = Self::holes(v, at, &c.params);
        if let (Some(p), Some(h)) = (&program, &holes) {
            ok &= Self::holes_used(v, at, p, h);
        }
        let dir = match &c.dir {
            Some(d) => v.resolve(&at.key("dir"), d),
            None => v.resolve(at, "."),
        }
        .components()
        .collect::<PathBuf>();
        if !dir.is_dir() {
            ok = false;
            v.error(
                &at.key("dir"),
                format!("{} is not a directory", dir.display()),
                "name an existing directory; a relative path is relative to the manifest",
            );
        }
        for (i, e) in c.env.iter().enumerate() {
            if !env_name(e) {
                ok = false;
                v.error(
                    &at.key("env").index(i),
                    format!("`{e}` is not an environment variable's name"),
                    "write names like \"PATH\" or \"PGHOST\"",
                );
            }
        }
        ok &= Self::secret_env(v, at, &c.secret_env, declared);
        let timeout = match &c.timeout {
            Some(t) => v.duration(&at.key("timeout"), t),
            None => Some(DEFAULT_TIMEOUT),
        };
        let output_limit = match &c.output_limit {
            Some(s) => v.size(&at.key("output_limit"), s).filter(|n| {
                let fits = (1..=MAX_OUTPUT).contains(n);
                if !fits {
                    v.error(
                        &at.key("output_limit"),
                        format!("{s} is not between 1B and {}", fmt_size(MAX_OUTPUT)),
                        "keep a command's output small; write a file for more",
                    );
                }
                fits
            }),
            None => Some(DEFAULT_OUTPUT),
        };
        let user = c.user.as_ref().map(|u| Self::user(v, at, u));
        let (Some(program), Some(holes), Some(timeout), Some(output_limit)) =
            (program, holes, timeout, output_limit)
        else {
            return None;
        };
        let user = match user {
            Some(None) => return None,
            Some(Some(u)) => Some(u),
            None => None,
        };
        ok.then(|| Command {
            name: name.to_string(),
            program,
            holes,
            dir,
            env: c.env,
            secret_env: c.secret_env,
            timeout,
            output_limit,
            user,
            read_only: c.read_only,
        })
    }

    /// The program and its argument templates, or the shell script.
    fn program(v: &mut Validator, at: &KeyPath, c: &CommandConfig) -> Option<Program> {
        if c.shell {
            if c.program.is_some() || !c.args.is_empty() {
                v.error(
                    &at.key("program"),
                    "a shell command has a `script`, not `program` and `args`",
                    "remove program and args, or remove shell = true",
                );
                return None;
            }
            let Some(script) = &c.script else {
                v.error(
                    at,
                    "a shell command needs `script`",
                    "add script = \"...\" (run by /bin/sh -c)",
                );
                return None;
            };
            return match Template::parse(script) {
                Ok(t) => Some(Program::Shell(t)),
                Err(e) => {
                    v.error(&at.key("script"), e.to_string(), "");
                    None
                }
            };
        }
        if c.script.is_some() {
            v.error(
                &at.key("script"),
                "`script` is for shell commands",
                "use program and args, or add shell = true (a shell can run anything)",
            );
            return None;
        }
        let Some(program) = &c.program else {
            v.error(
                at,
                "a command needs `program`",
                "add program = \"/usr/bin/...\" (`command -v NAME` prints the path)",
            );
            return None;
        };
        if !program.contains('/') {
            v.error(
                &at.key("program"),
                format!("`{program}` is not a path; runcap does not search PATH"),
                format!("write the full path, e.g. \"/usr/bin/{program}\" (`command -v {program}` prints it)"),
            );
            return None;
        }
        let path = v.resolve(&at.key("program"), program);
        if !path.is_file() {
            v.error(
                &at.key("program"),
                format!("{} does not exist", path.display()),
                "fix the path; a relative path is relative to the manifest",
            );
            return None;
        }
        let mut args = Vec::new();
        let mut ok = true;
        for (i, a) in c.args.iter().enumerate() {
            match Template::parse(a) {
                Ok(t) => args.push(t),
                Err(e) => {
                    ok = false;
                    v.error(&at.key("args").index(i), e.to_string(), "");
                }
            }
        }
        ok.then_some(Program::Direct { path, args })
    }

    /// Each hole's type.
    fn holes(
        v: &mut Validator,
        at: &KeyPath,
        params: &BTreeMap<String, HoleConfig>,
    ) -> Option<BTreeMap<String, Hole>> {
        let mut ok = true;
        let mut holes = BTreeMap::new();
        for (name, h) in params {
            let hat = at.key("params").key(name);
            let hole = match h {
                HoleConfig::Enum { values } if values.is_empty() => {
                    v.error(
                        &hat.key("values"),
                        "an enum with no values accepts nothing",
                        "list the values, e.g. values = [\"api\", \"worker\"]",
                    );
                    None
                }
                HoleConfig::Enum { values } => Some(Hole::Enum(values.clone())),
                HoleConfig::Int { min, max } => match (min, max) {
                    (Some(a), Some(b)) if a > b => {
                        v.error(&hat, format!("min {a} is above max {b}"), "");
                        None
                    }
                    _ => Some(Hole::Int {
                        min: *min,
                        max: *max,
                    }),
                },
                HoleConfig::String { pattern } => {
                    match regex::Regex::new(&format!("^(?:{pattern})$")) {
                        Ok(re) => Some(Hole::Text(re, pattern.clone())),
                        Err(e) => {
                            v.error(
                                &hat.key("pattern"),
                                format!("`{pattern}` is not a regular expression: {e}"),
                                "the pattern must match the whole value, e.g. \"[0-9a-f]{12}\"",
                            );
                            None
                        }
                    }
                }
            };
            match hole {
                Some(hole) => {
                    holes.insert(name.clone(), hole);
                }
                None => ok = false,
            }
        }
        ok.then_some(holes)
    }

    /// Every hole in the templates is declared, and every declared one is used.
    fn holes_used(
        v: &mut Validator,
        at: &KeyPath,
        program: &Program,
        holes: &BTreeMap<String, Hole>,
    ) -> bool {
        let mut ok = true;
        let templates: Vec<(KeyPath, &Template)> = match program {
            Program::Direct { args, .. } => args
                .iter()
                .enumerate()
                .map(|(i, t)| (at.key("args").index(i), t))
                .collect(),
            Program::Shell(t) => vec![(at.key("script"), t)],
        };
        let declared: Vec<&str> = holes.keys().map(String::as_str).collect();
        for (path, t) in &templates {
            for h in t.holes() {
                if !holes.contains_key(h) {
                    ok = false;
                    let like = closest(h, &declared)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    v.error(
                        path,
                        format!("hole `{h}` is not declared in params{like}"),
                        format!("add params.{h} = {{ type = \"enum\", values = [...] }} (or type = \"int\", or type = \"string\" with a pattern)"),
                    );
                }
            }
        }
        for name in holes.keys() {
            if !templates.iter().any(|(_, t)| t.holes().any(|h| h == name)) {
                ok = false;
                v.error(
                    &at.key("params").key(name),
                    format!("param `{name}` is not used by any argument"),
                    format!("use it as {{{{ {name} }}}} in args, or remove it"),
                );
            }
        }
        ok
    }

    /// Secret variables name declared secrets.
    fn secret_env(
        v: &mut Validator,
        at: &KeyPath,
        secret_env: &BTreeMap<String, String>,
        declared: &Declared,
    ) -> bool {
        let mut ok = true;
        let known: Vec<&str> = declared.secrets.keys().map(String::as_str).collect();
        for (var, secret) in secret_env {
            let sat = at.key("secret_env").key(var);
            if !env_name(var) {
                ok = false;
                v.error(
                    &sat,
                    format!("`{var}` is not an environment variable's name"),
                    "write names like \"PGPASSWORD\"",
                );
            }
            if !declared.secrets.contains_key(secret) {
                ok = false;
                let like = closest(secret, &known)
                    .map(|c| format!("did you mean \"{c}\"? "))
                    .unwrap_or_default();
                v.error(
                    &sat,
                    format!("secret `{secret}` is not defined"),
                    format!("{like}declare it as [secrets.{secret}]"),
                );
            }
        }
        ok
    }

    /// The user to run as; `None` inside when it does not exist here.
    fn user(v: &mut Validator, at: &KeyPath, user: &str) -> Option<RunAs> {
        let found = match user.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(user),
        };
        match found {
            Ok(Some(u)) => match groups_of(&u.name, u.gid.as_raw()) {
                Ok(groups) => Some(RunAs {
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    groups,
                    name: u.name,
                }),
                Err(e) => {
                    v.error(
                        &at.key("user"),
                        format!("cannot read the groups of user `{user}`: {e}"),
                        "",
                    );
                    None
                }
            },
            Ok(None) => {
                v.error(
                    &at.key("user"),
                    format!("there is no user `{user}` on this host"),
                    "name an existing user (`id NAME` checks), or a uid",
                );
                None
            }
            Err(e) => {
                v.error(
                    &at.key("user"),
                    format!("cannot look up user `{user}`: {e}"),
                    "",
                );
                None
            }
        }
    }

    /// One line for `runcap caps`: what runs, where, as whom, for how long.
    pub fn describe(&self) -> String {
        let what = match &self.program {
            Program::Direct { path, args } => std::iter::once(path.display().to_string())
                .chain(args.iter().map(show_template))
                .collect::<Vec<_>>()
                .join(" "),
            Program::Shell(t) => format!("/bin/sh -c {}", shell_quote(&show_template(t))),
        };
        let mut notes = vec![format!("in {}", self.dir.display())];
        if let Some(u) = &self.user {
            notes.push(format!("as {}", u.name));
        }
        notes.push(format!("at most {}", fmt_duration(self.timeout)));
        if self.read_only {
            notes.push("read-only: runs in dry runs".into());
        }
        let holes: Vec<String> = self
            .holes
            .iter()
            .map(|(n, h)| format!("{n}: {}", h.describe()))
            .collect();
        if !holes.is_empty() {
            notes.push(holes.join("; "));
        }
        format!("command {}: {what} ({})", self.name, notes.join(", "))
    }

    /// The argument list for `args`: every hole filled with an accepted value, no value
    /// for a hole the command does not have.
    fn render(&self, args: &[wit::Arg]) -> Result<Vec<String>, ArgError> {
        let mut values: BTreeMap<&str, &str> = BTreeMap::new();
        for a in args {
            let Some(hole) = self.holes.get(&a.name) else {
                let known: Vec<&str> = self.holes.keys().map(String::as_str).collect();
                return Err(if known.is_empty() {
                    ArgError::NoHoles {
                        command: self.name.clone(),
                        name: a.name.clone(),
                    }
                } else {
                    ArgError::Unknown {
                        command: self.name.clone(),
                        name: a.name.clone(),
                        holes: known.join(", "),
                    }
                });
            };
            hole.accept(&a.name, &a.value)?;
            if values.insert(&a.name, &a.value).is_some() {
                return Err(ArgError::Twice(a.name.clone()));
            }
        }
        if let Some(missing) = self.holes.keys().find(|h| !values.contains_key(h.as_str())) {
            return Err(ArgError::Missing {
                command: self.name.clone(),
                name: missing.clone(),
                accepts: self.holes[missing].describe(),
            });
        }
        Ok(match &self.program {
            Program::Direct { path, args } => std::iter::once(path.display().to_string())
                .chain(args.iter().map(|t| t.render(&values, verbatim)))
                .collect(),
            Program::Shell(t) => vec![
                "/bin/sh".into(),
                "-c".into(),
                t.render(&values, shell_quote),
            ],
        })
    }
}

/// A template with its holes shown as `{{ name }}`.
fn show_template(t: &Template) -> String {
    t.0.iter()
        .map(|p| match p {
            Part::Text(s) => s.clone(),
            Part::Hole(h) => format!("{{{{ {h} }}}}"),
        })
        .collect()
}

/// Compares two exec grants as written: a new command, or a command that runs something
/// else, elsewhere, as someone else, with more input or more environment, widens.
pub fn diff(old: &ExecGrantConfig, new: &ExecGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, c) in &new.commands {
        let at = KeyPath::root().key("commands").key(name);
        let Some(was) = old.commands.get(name) else {
            out.push(Change::new(
                at,
                ChangeKind::Added,
                format!("may run command `{name}`"),
            ));
            continue;
        };
        out.extend(diff_command(&at, name, was, c));
    }
    for name in old
        .commands
        .keys()
        .filter(|n| !new.commands.contains_key(*n))
    {
        out.push(Change::new(
            KeyPath::root().key("commands").key(name),
            ChangeKind::Removed,
            format!("may no longer run command `{name}`"),
        ));
    }
    out
}

/// How one command changed, field by field.
fn diff_command(at: &KeyPath, name: &str, was: &CommandConfig, is: &CommandConfig) -> Vec<Change> {
    let mut out = diff_settings(at, name, was, is);
    out.extend(diff_inputs(at, name, was, is));
    out
}

/// What the command runs, where, as whom and for how long.
fn diff_settings(at: &KeyPath, name: &str, was: &CommandConfig, is: &CommandConfig) -> Vec<Change> {
    let runs_other = was.program != is.program || was.args != is.args || was.script != is.script;
    let now = |v: &Option<String>| v.as_deref().unwrap_or("the default").to_string();
    let timeout = format!("has a timeout of {}", now(&is.timeout));
    let output = format!("keeps output up to {}", now(&is.output_limit));
    // (key, whether it changed, how, what the command now does)
    let facts = [
        (
            "args",
            runs_other,
            ChangeKind::Changed,
            "runs something else",
        ),
        (
            "shell",
            is.shell && !was.shell,
            ChangeKind::Widened,
            "runs through a shell",
        ),
        (
            "shell",
            was.shell && !is.shell,
            ChangeKind::Narrowed,
            "no longer runs through a shell",
        ),
        (
            "dir",
            was.dir != is.dir,
            ChangeKind::Changed,
            "runs in another directory",
        ),
        (
            "user",
            was.user != is.user,
            ChangeKind::Changed,
            "runs as another user",
        ),
        (
            "read_only",
            is.read_only && !was.read_only,
            ChangeKind::Widened,
            "runs in dry runs too",
        ),
        (
            "timeout",
            was.timeout != is.timeout,
            ChangeKind::Changed,
            timeout.as_str(),
        ),
        (
            "output_limit",
            was.output_limit != is.output_limit,
            ChangeKind::Changed,
            output.as_str(),
        ),
    ];
    facts
        .into_iter()
        .filter(|(_, changed, _, _)| *changed)
        .map(|(key, _, kind, what)| {
            Change::new(at.key(key), kind, format!("command `{name}` {what}"))
        })
        .collect()
}

/// What reaches the command: its environment and its holes.
fn diff_inputs(at: &KeyPath, name: &str, was: &CommandConfig, is: &CommandConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let pairs = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter().map(|(k, v)| format!("{k}={v}")).collect()
    };
    for (key, w, i) in [
        ("env", was.env.clone(), is.env.clone()),
        ("secret_env", pairs(&was.secret_env), pairs(&is.secret_env)),
    ] {
        out.extend(i.iter().filter(|e| !w.contains(e)).map(|e| {
            Change::new(
                at.key(key),
                ChangeKind::Added,
                format!("command `{name}` gets {e} in its environment"),
            )
        }));
        out.extend(w.iter().filter(|e| !i.contains(e)).map(|e| {
            Change::new(
                at.key(key),
                ChangeKind::Removed,
                format!("command `{name}` no longer gets {e}"),
            )
        }));
    }
    for (hole, h) in &is.params {
        let (kind, what) = match was.params.get(hole) {
            Some(old) if old == h => continue,
            Some(old) => (
                hole_change(old, h),
                format!("hole `{hole}` of command `{name}` accepts other values"),
            ),
            None => (
                ChangeKind::Added,
                format!("command `{name}` has a new hole `{hole}`"),
            ),
        };
        out.push(Change::new(at.key("params").key(hole), kind, what));
    }
    out
}

/// Whether a hole's new type accepts fewer values (an enum losing values, a tighter
/// range) or possibly more.
fn hole_change(old: &HoleConfig, new: &HoleConfig) -> ChangeKind {
    match (old, new) {
        (HoleConfig::Enum { values: a }, HoleConfig::Enum { values: b })
            if b.iter().all(|v| a.contains(v)) =>
        {
            ChangeKind::Narrowed
        }
        (HoleConfig::Int { min: a0, max: a1 }, HoleConfig::Int { min: b0, max: b1 }) => {
            let lower = match (a0, b0) {
                (_, None) => a0.is_none(),
                (None, Some(_)) => true,
                (Some(a), Some(b)) => b >= a,
            };
            let upper = match (a1, b1) {
                (_, None) => a1.is_none(),
                (None, Some(_)) => true,
                (Some(a), Some(b)) => b <= a,
            };
            if lower && upper {
                ChangeKind::Narrowed
            } else {
                ChangeKind::Widened
            }
        }
        _ => ChangeKind::Widened,
    }
}

/// One output stream as read: the first bytes (up to the cap and a lookahead) and how
/// many there were in all.
#[derive(Default)]
struct Read {
    head: Vec<u8>,
    total: u64,
}

/// Reads a stream to its end, keeping the first `keep` bytes.
async fn read_capped(mut pipe: impl AsyncRead + Unpin, keep: usize) -> Read {
    let mut out = Read::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = keep.saturating_sub(out.head.len()).min(n);
                out.head.extend_from_slice(&buf[..room]);
                out.total += n as u64;
            }
        }
    }
}

/// The text a plugin gets from a stream: redacted first (so a secret crossing the cap is
/// replaced whole), then cut at the cap; a cut drops its last, partial line, so no value
/// is kept half. Returns the text and whether it was cut.
fn finish_output(read: &Read, cap: u64, redactor: &runcap_redact::Redactor) -> (String, bool) {
    let mut text = String::from_utf8_lossy(&read.head).into_owned();
    crate::redaction::scrub_string(redactor, &mut text);
    let cut = read.total > read.head.len() as u64 || text.len() as u64 > cap;
    if cut {
        let mut end = (cap as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        crate::redaction::drop_cut_line(&mut text);
    }
    (text, cut)
}

/// How a started command ended.
struct Ended {
    status: std::process::ExitStatus,
    timed_out: bool,
    stdout: Read,
    stderr: Read,
    duration: Duration,
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot wait for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("secret `{name}` for {var} cannot be read: {reason}")]
    Secret {
        name: String,
        var: String,
        reason: String,
    },
    #[error(
        "runcap runs as uid {euid}, not root, so it cannot run `{command}` as `{user}`; run runcap as root or as {user}, or remove user from the grant"
    )]
    NotRoot {
        euid: u32,
        command: String,
        user: String,
    },
}

/// Kills every process of the group `pgid` leads.
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

/// Waits (off the runtime's threads) until `pid` has exited, without reaping it, so its
/// pid, and the id of the group it leads, cannot be taken by another process meanwhile.
async fn exited(pid: u32) {
    let _ = tokio::task::spawn_blocking(move || {
        loop {
            // SAFETY: waitid fills `info`, a zeroed siginfo_t it owns for the call.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    })
    .await;
}

/// Makes the child run as `u` with every group of `u`: the supplementary groups, the
/// primary group, then the uid, set between fork and exec. (`Command::uid` would drop
/// every supplementary group.) The directory is entered again as the user, so a
/// directory the user may not enter fails the start as it would without root.
fn switch_user(
    c: &mut tokio::process::Command,
    u: &RunAs,
    dir: &std::path::Path,
) -> Result<(), ExecError> {
    use nix::unistd::{Gid, Uid};
    use std::os::unix::ffi::OsStrExt;
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (uid, gid) = (Uid::from_raw(u.uid), Gid::from_raw(u.gid));
    let dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| ExecError::Spawn {
        program: dir.display().to_string(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: setgroups, setgid, setuid and chdir are async-signal-safe system calls, and
    // the closure allocates nothing: the lists were built before the fork.
    unsafe {
        c.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            if libc::chdir(dir.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Starts `argv` as the command says, waits at most `limit`, and collects its output.
async fn run_command(
    cmd: &Command,
    argv: &[String],
    env: Vec<(String, String)>,
    limit: Duration,
) -> Result<Ended, ExecError> {
    let mut c = tokio::process::Command::new(&argv[0]);
    c.args(&argv[1..])
        .current_dir(&cmd.dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(u) = &cmd.user {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            switch_user(&mut c, u, &cmd.dir)?;
        } else if euid != u.uid {
            return Err(ExecError::NotRoot {
                euid,
                command: cmd.name.clone(),
                user: u.name.clone(),
            });
        }
    }
    let started = Instant::now();
    let mut child = c.spawn().map_err(|source| ExecError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    let keep = cmd.output_limit as usize + LOOKAHEAD;
    let stdout = tokio::spawn(read_capped(child.stdout.take().expect("piped"), keep));
    let stderr = tokio::spawn(read_capped(child.stderr.take().expect("piped"), keep));
    let timed_out = tokio::time::timeout(limit, exited(pid)).await.is_err();
    // The leader is exited or still running, but not reaped: the group id is still its.
    kill_group(pid);
    let status = child.wait().await.map_err(|source| ExecError::Wait {
        program: argv[0].clone(),
        source,
    })?;
    let duration = started.elapsed();
    let drain = async {
        (
            stdout.await.unwrap_or_default(),
            stderr.await.unwrap_or_default(),
        )
    };
    let (stdout, stderr) = tokio::time::timeout(DRAIN, drain).await.unwrap_or_default();
    Ok(Ended {
        status,
        timed_out,
        stdout,
        stderr,
        duration,
    })
}

impl wit::Host for CapCtx<'_, Exec> {
    async fn run(
        &mut self,
        command: String,
        args: Vec<wit::Arg>,
    ) -> wasmtime::Result<Result<wit::CommandResult, wit::Error>> {
        crate::taped!(
            self,
            "exec.run",
            (command, args),
            self.run_live(command, args)
        )
    }
}

impl CapCtx<'_, Exec> {
    /// The call itself; the [`wit::Host`] impl above records or replays it.
    async fn run_live(
        &mut self,
        command: String,
        args: Vec<wit::Arg>,
    ) -> wasmtime::Result<Result<wit::CommandResult, wit::Error>> {
        let Some(access) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny("run", &command, reason))));
        };
        let Some(cmd) = access.grant.commands.get(&command).cloned() else {
            let known: Vec<&str> = access.grant.commands.keys().map(String::as_str).collect();
            let like = closest(&command, &known)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            let reason = format!(
                "command `{command}` is not declared{like}; declare it as [{}.commands.{command}]",
                access.grant.key
            );
            return Ok(Err(wit::Error::Denied(self.deny("run", &command, reason))));
        };
        let argv = match cmd.render(&args) {
            Ok(argv) => argv,
            Err(e) => {
                let reason = e.to_string();
                return Ok(Err(wit::Error::Denied(self.deny("run", &command, reason))));
            }
        };
        let target = format!("{command}: {}", argv.join(" "));
        let mut shown = argv.clone();
        for a in &mut shown {
            crate::redaction::scrub_string(&self.core.redactor, a);
        }
        if self.dry_run() && !cmd.read_only {
            self.record(CallRecord::dry_run(Exec::NAME, "run", &target).with_result("not started"));
            return Ok(Ok(wit::CommandResult {
                exit_code: None,
                signal: None,
                timed_out: false,
                skipped: true,
                stdout: String::new(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                duration_ms: 0,
                argv: shown,
            }));
        }
        let env = match environment(&cmd, &access.secrets) {
            Ok(env) => env,
            Err(e) => return Ok(Err(self.failed(&target, e))),
        };
        let limit = cmd.timeout.min(self.core.remaining());
        if !cmd.read_only {
            self.core.before_change();
        }
        let ended = match run_command(&cmd, &argv, env, limit).await {
            Ok(ended) => ended,
            Err(e) => return Ok(Err(self.failed(&target, e))),
        };
        let result = self.result(&cmd, ended, shown);
        let summary = match (result.exit_code, result.signal) {
            _ if result.timed_out => {
                format!("killed after its time limit ({})", fmt_duration(limit))
            }
            (Some(code), _) => format!("exit {code} in {} ms", result.duration_ms),
            (None, Some(sig)) => format!("killed by signal {sig} after {} ms", result.duration_ms),
            (None, None) => "ended".to_string(),
        };
        let record = CallRecord::allowed(Exec::NAME, "run", &target).with_result(summary);
        self.record(if cmd.read_only {
            record.read_only()
        } else {
            record
        });
        Ok(Ok(result))
    }

    /// Records a command that could not be run and returns the plugin's error.
    fn failed(&mut self, target: &str, e: ExecError) -> wit::Error {
        let message = e.to_string();
        self.record(
            CallRecord::allowed(Exec::NAME, "run", target)
                .with_result(format!("failed: {message}")),
        );
        wit::Error::Failed(message)
    }

    /// What the plugin gets: exit, timing and the output, redacted and cut.
    fn result(&self, cmd: &Command, ended: Ended, argv: Vec<String>) -> wit::CommandResult {
        use std::os::unix::process::ExitStatusExt;
        let redactor = &self.core.redactor;
        let (stdout, stdout_truncated) = finish_output(&ended.stdout, cmd.output_limit, redactor);
        let (stderr, stderr_truncated) = finish_output(&ended.stderr, cmd.output_limit, redactor);
        wit::CommandResult {
            exit_code: ended.status.code(),
            signal: ended.status.signal(),
            timed_out: ended.timed_out,
            skipped: false,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms: ended.duration.as_millis() as u64,
            argv,
        }
    }
}

/// The command's environment: the allowed variables runcap has, and the secret ones.
fn environment(cmd: &Command, secrets: &SecretStore) -> Result<Vec<(String, String)>, ExecError> {
    let mut env: Vec<(String, String)> = cmd
        .env
        .iter()
        .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
        .collect();
    for (var, name) in &cmd.secret_env {
        let value = secrets.value(name).map_err(|e| ExecError::Secret {
            name: name.clone(),
            var: var.clone(),
            reason: e.to_string(),
        })?;
        env.push((var.clone(), value));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing;

    fn arg(name: &str, value: &str) -> wit::Arg {
        wit::Arg {
            name: name.into(),
            value: value.into(),
        }
    }

    /// An action of plugin `p` granted `grant` (TOML after `[plugins.p.grants.exec]`),
    /// with `decl` declaring secrets; `secrets` are redacted from what it records.
    fn action(
        dir: &std::path::Path,
        decl: &str,
        grant: &str,
        dry_run: bool,
        secrets: &[(&str, &str)],
    ) -> testing::Action {
        let d = testing::declared(decl, dir);
        let manifest = format!("{decl}\n{grant}");
        let grant = testing::grant::<Exec>(&manifest, dir, &d).unwrap();
        let mut env = testing::resources(&d, &dir.join(".runcap"), None);
        let spec = crate::redaction::Spec {
            config: Default::default(),
            literals: secrets
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        };
        env.redactor = crate::redaction::host_redactor(&spec).unwrap();
        let mut action = testing::recorded(testing::prepared::<Exec>(grant, &env), dry_run, 1024);
        action.state.core.redactor = env.redactor.clone();
        action
    }

    async fn run(
        action: &mut testing::Action,
        command: &str,
        args: &[(&str, &str)],
    ) -> Result<wit::CommandResult, wit::Error> {
        let mut ctx = action.state.view::<Exec>();
        let args = args.iter().map(|(n, v)| arg(n, v)).collect();
        wit::Host::run(&mut ctx, command.into(), args)
            .await
            .unwrap()
    }

    const GREET: &str = r#"
[plugins.p.grants.exec.commands.greet]
program = "/bin/echo"
args = ["hello", "{{ who }}", "x{{ n }}"]
params.who = { type = "enum", values = ["world", "team"] }
params.n = { type = "int", min = 1, max = 3 }
"#;

    #[tokio::test]
    async fn a_declared_command_runs_with_its_holes_filled_and_anything_else_is_denied() {
        let (_d, dir) = testing::dir();
        let mut a = action(&dir, "", GREET, false, &[]);
        let ok = run(&mut a, "greet", &[("who", "world"), ("n", "2")])
            .await
            .unwrap();
        assert_eq!(ok.stdout, "hello world x2\n");
        assert_eq!(ok.exit_code, Some(0));
        assert_eq!(ok.argv, ["/bin/echo", "hello", "world", "x2"]);
        for (args, expect) in [
            (
                vec![("who", "world; rm -rf /"), ("n", "1")],
                "`who` is one of world, team",
            ),
            (vec![("who", "team"), ("n", "4")], "an integer from 1 to 3"),
            (vec![("who", "team")], "needs `n`"),
            (
                vec![("who", "team"), ("n", "1"), ("extra", "1")],
                "has no hole `extra`",
            ),
        ] {
            let denied = run(&mut a, "greet", &args).await;
            assert!(
                matches!(&denied, Err(wit::Error::Denied(m)) if m.contains(expect)),
                "{denied:?}"
            );
        }
        let other = run(&mut a, "gret", &[]).await;
        assert!(
            matches!(&other, Err(wit::Error::Denied(m)) if m.contains("did you mean `greet`") && m.contains("[plugins.p.grants.exec.commands.gret]")),
            "{other:?}"
        );
        let audit = a.audit();
        assert_eq!(audit.len(), 6, "{audit:?}");
        assert_eq!(
            audit[0],
            (
                "exec".into(),
                "allowed".into(),
                "greet: /bin/echo hello world x2".into()
            )
        );
        assert!(
            audit[1..].iter().all(|(_, d, _)| d == "denied"),
            "{audit:?}"
        );
        let calls = a.calls();
        assert!(
            calls[0]["result"]
                .as_str()
                .unwrap()
                .starts_with("exit 0 in")
        );
    }

    #[tokio::test]
    async fn the_command_gets_only_its_environment_directory_and_exit_code() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("work")).unwrap();
        let grant = r#"
[secrets.db]
file = "db.key"

[plugins.p.grants.exec.commands.show]
program = "/bin/sh"
args = ["-c", "echo home=$HOME path=${PATH:+set} pw=$PGPASSWORD; pwd; exit 3"]
dir = "work"
env = ["PATH"]
secret_env = { PGPASSWORD = "db" }
"#;
        std::fs::write(dir.join("db.key"), "db-pass-0123456789\n").unwrap();
        let (decl, grant) = grant.split_at(grant.find("[plugins").unwrap());
        let mut a = action(&dir, decl, grant, false, &[("db", "db-pass-0123456789")]);
        let r = run(&mut a, "show", &[]).await.unwrap();
        assert_eq!(r.exit_code, Some(3));
        let work = dir.join("work").canonicalize().unwrap();
        assert_eq!(
            r.stdout,
            format!("home= path=set pw=[SECRET_REDACTED]\n{}\n", work.display())
        );
        assert!(!format!("{:?}", a.calls()).contains("db-pass"));
    }

    #[tokio::test]
    async fn a_command_past_its_time_limit_is_killed_with_its_children_and_so_are_leftovers() {
        let (_d, dir) = testing::dir();
        let grant = r#"
[plugins.p.grants.exec.commands.hang]
program = "/bin/sh"
args = ["-c", "sleep 30 & echo $! > child.pid; wait"]
timeout = "300ms"

[plugins.p.grants.exec.commands.detach]
program = "/bin/sh"
args = ["-c", "sleep 30 & echo $! > left.pid"]
"#;
        let mut a = action(&dir, "", grant, false, &[]);
        let r = run(&mut a, "hang", &[]).await.unwrap();
        assert!(r.timed_out, "{r:?}");
        assert_eq!(r.signal, Some(libc::SIGKILL));
        let r = run(&mut a, "detach", &[]).await.unwrap();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        for file in ["child.pid", "left.pid"] {
            let pid: i32 = std::fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SIGKILL is delivered, not waited for: the process is gone soon after.
            let deadline = Instant::now() + Duration::from_secs(10);
            while running(pid) {
                assert!(Instant::now() < deadline, "{file}: {pid} still runs");
                std::thread::yield_now();
            }
        }
        assert!(
            a.calls()[0]["result"]
                .as_str()
                .unwrap()
                .contains("killed after its time limit")
        );
    }

    /// Whether `pid` exists and is not a zombie (a killed orphan waits for init).
    fn running(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
                state != Some('Z')
            }
        }
    }

    #[tokio::test]
    async fn output_is_redacted_before_it_is_cut_whatever_the_cut_crosses() {
        let (_d, dir) = testing::dir();
        let secret = "tok-9f8e7d6c5b4a";
        let multi = "first-half-of-it\nsecond-half-of-it";
        let grant = r#"
[plugins.p.grants.exec.commands.print]
program = "/bin/sh"
args = ["-c", "printf '%s' \"$(cat out.txt)\""]
output_limit = "64B"
"#;
        let mut a = action(&dir, "", grant, false, &[("t", secret), ("m", multi)]);
        let mut checked = 0;
        for value in [secret, multi] {
            // The value starts at every offset around the cap, and ends past it.
            for start in 40..70 {
                let text = format!("{}{value}\nmore\n", "a".repeat(start));
                std::fs::write(dir.join("out.txt"), &text).unwrap();
                let r = run(&mut a, "print", &[]).await.unwrap();
                assert!(r.stdout.len() <= 64, "{}", r.stdout);
                for piece in ["tok-9", "first-h", "second-h", "half-of"] {
                    assert!(!r.stdout.contains(piece), "{start}: {:?}", r.stdout);
                }
                // What is kept is the start of the whole output, redacted.
                let whole = text.trim_end().replace(value, "[SECRET_REDACTED]");
                assert!(whole.starts_with(&r.stdout), "{start}: {:?}", r.stdout);
                assert_eq!(r.stdout_truncated, whole.len() > 64, "{start}");
                checked += 1;
            }
        }
        assert_eq!(checked, 60);
        let short = "ok\n";
        std::fs::write(dir.join("out.txt"), short).unwrap();
        let r = run(&mut a, "print", &[]).await.unwrap();
        assert_eq!((r.stdout.as_str(), r.stdout_truncated), ("ok", false));
    }

    #[tokio::test]
    async fn a_dry_run_records_a_command_without_starting_it_unless_it_is_read_only() {
        let (_d, dir) = testing::dir();
        let grant = r#"
[plugins.p.grants.exec.commands.touch]
program = "/usr/bin/touch"
args = ["made"]

[plugins.p.grants.exec.commands.look]
program = "/bin/ls"
read_only = true
"#;
        let mut a = action(&dir, "", grant, true, &[]);
        let r = run(&mut a, "touch", &[]).await.unwrap();
        assert!(r.skipped && r.exit_code.is_none(), "{r:?}");
        assert!(!dir.join("made").exists());
        let r = run(&mut a, "look", &[]).await.unwrap();
        assert_eq!(r.exit_code, Some(0));
        let decisions: Vec<String> = a.audit().into_iter().map(|(_, d, _)| d).collect();
        assert_eq!(decisions, ["dry-run", "allowed"]);
    }

    #[tokio::test]
    async fn a_shell_command_gets_values_as_single_words() {
        let (_d, dir) = testing::dir();
        let grant = r#"
[plugins.p.grants.exec.commands.say]
shell = true
script = "echo {{ msg }} | tr a-z A-Z"
params.msg = { type = "string", pattern = ".*" }
"#;
        let mut a = action(&dir, "", grant, false, &[]);
        let r = run(&mut a, "say", &[("msg", "it's $(touch pwned); `id` x")])
            .await
            .unwrap();
        assert_eq!(r.stdout, "IT'S $(TOUCH PWNED); `ID` X\n");
        assert!(!dir.join("pwned").exists());
        let grant = testing::grant::<Exec>(grant, &dir, &Default::default()).unwrap();
        assert!(Exec::risks(&grant)[0].contains("runs through /bin/sh"));
        assert!(
            Exec::describe(&grant)[0].contains("/bin/sh -c 'echo {{ msg }} | tr a-z A-Z'"),
            "{:?}",
            Exec::describe(&grant)
        );
    }

    #[tokio::test]
    async fn a_command_runs_as_its_user_when_runcap_is_root() {
        let (_d, dir) = testing::dir();
        let grant = r#"
[plugins.p.grants.exec.commands.whoami]
program = "/usr/bin/id"
args = ["-u"]
user = "nobody"
dir = "/"
"#;
        let mut a = action(&dir, "", grant, false, &[]);
        let r = run(&mut a, "whoami", &[]).await;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(r.unwrap().stdout, "65534\n");
        } else {
            assert!(
                matches!(&r, Err(wit::Error::Failed(m)) if m.contains("not root")),
                "{r:?}"
            );
        }
    }

    /// A user the group database lists as a member of a group other than its own, if
    /// this host has one.
    fn user_with_supplementary_groups() -> Option<nix::unistd::User> {
        let groups = std::fs::read_to_string("/etc/group").ok()?;
        groups.lines().find_map(|line| {
            let members = line.split(':').nth(3)?;
            let name = members.split(',').find(|m| !m.is_empty())?;
            nix::unistd::User::from_name(name).ok()?
        })
    }

    /// `id -G NAME`: the groups the system's own tool says a user is in.
    fn id_groups(name: &str) -> Vec<u32> {
        let out = std::process::Command::new("id")
            .args(["-G", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut ids: Vec<u32> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_users_groups_are_those_id_lists() {
        let sorted = |mut g: Vec<u32>| {
            g.sort();
            g
        };
        assert_eq!(sorted(groups_of("root", 0).unwrap()), id_groups("root"));
        let u = user_with_supplementary_groups()
            .expect("a user with supplementary groups in /etc/group");
        let groups = groups_of(&u.name, u.gid.as_raw()).unwrap();
        assert_eq!(sorted(groups.clone()), id_groups(&u.name));
        assert!(groups.len() > 1, "{} is in {groups:?}", u.name);
        assert!(groups.contains(&u.gid.as_raw()));
    }

    #[tokio::test]
    async fn a_command_run_as_a_user_keeps_the_users_supplementary_groups() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: switching users needs root");
            return;
        }
        let u = user_with_supplementary_groups()
            .expect("a user with supplementary groups in /etc/group");
        let (_d, dir) = testing::dir();
        let grant = format!(
            "[plugins.p.grants.exec.commands.groups]\nprogram = \"/usr/bin/id\"\nargs = [\"-G\"]\nuser = \"{}\"\ndir = \"/\"\n",
            u.name
        );
        let mut a = action(&dir, "", &grant, false, &[]);
        let r = run(&mut a, "groups", &[]).await.unwrap();
        let mut got: Vec<u32> = r
            .stdout
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, id_groups(&u.name), "{}", u.name);
        assert!(got.len() > 1);
    }

    #[tokio::test]
    async fn a_directory_the_user_cannot_enter_fails_the_start() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: switching users needs root");
            return;
        }
        let (_d, dir) = testing::dir();
        let private = dir.join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let grant = format!(
            "[plugins.p.grants.exec.commands.pwd]\nprogram = \"/bin/pwd\"\nuser = \"nobody\"\ndir = {:?}\n",
            private.display().to_string()
        );
        let mut a = action(&dir, "", &grant, false, &[]);
        let r = run(&mut a, "pwd", &[]).await;
        assert!(
            matches!(&r, Err(wit::Error::Failed(m)) if m.contains("ermission denied")),
            "{r:?}"
        );
    }

    #[test]
    fn grant_errors_are_located_and_the_hint_validates() {
        let (_d, dir) = testing::dir();
        let decl = testing::declared("[secrets.db]\nenv = \"X\"\n", &dir);
        let errors = |grant: &str| {
            testing::grant::<Exec>(grant, &dir, &decl)
                .unwrap_err()
                .join("\n")
        };
        let cases = [
            (
                "program = \"git\"",
                "`git` is not a path; runcap does not search PATH",
            ),
            (
                "program = \"/no/such/tool\"",
                "/no/such/tool does not exist",
            ),
            (
                "program = \"/bin/echo\"\nargs = [\"{{ servce }}\"]\nparams.service = { type = \"enum\", values = [\"a\"] }",
                "did you mean `service`",
            ),
            (
                "program = \"/bin/echo\"\nparams.n = { type = \"int\" }",
                "param `n` is not used",
            ),
            (
                "program = \"/bin/echo\"\nargs = [\"{{ r }}\"]\nparams.r = { type = \"string\", pattern = \"(\" }",
                "is not a regular expression",
            ),
            (
                "program = \"/bin/echo\"\nargs = [\"{{ r }}\"]\nparams.r = { type = \"string\" }",
                "missing field `pattern`",
            ),
            (
                "program = \"/bin/echo\"\nargs = [\"{{ r }}\"]\nparams.r = { type = \"enum\", values = [\"a\"], extra = 1 }",
                "unknown field `extra`",
            ),
            (
                "program = \"/bin/echo\"\nsecret_env = { PW = \"dbx\" }",
                "did you mean \"db\"",
            ),
            (
                "program = \"/bin/echo\"\nuser = \"no-such-user-here\"",
                "no user `no-such-user-here`",
            ),
            (
                "program = \"/bin/echo\"\ndir = \"missing\"",
                "is not a directory",
            ),
            (
                "program = \"/bin/echo\"\noutput_limit = \"1GiB\"",
                "is not between 1B and 16MiB",
            ),
            ("script = \"ls\"", "`script` is for shell commands"),
            (
                "shell = true\nprogram = \"/bin/ls\"",
                "a shell command has a `script`",
            ),
            (
                "program = \"/bin/echo\"\nargs = [\"{{ a\"]",
                "is not closed",
            ),
        ];
        for (body, expect) in cases {
            let e = errors(&format!("[plugins.p.grants.exec.commands.c]\n{body}\n"));
            assert!(e.contains(expect), "{body}:\n{e}");
            assert!(e.contains("runcap.toml:"), "located: {e}");
        }
        testing::grant::<Exec>(&Exec::hint("p"), &dir, &decl).unwrap();
    }

    #[test]
    fn a_new_command_or_a_wider_hole_widens_and_a_narrower_one_does_not() {
        let read = |t: &str| -> ExecGrantConfig { toml::from_str(t).unwrap() };
        let base = read(
            "[commands.r]\nprogram = \"/bin/systemctl\"\nargs = [\"restart\", \"{{ s }}\"]\nparams.s = { type = \"enum\", values = [\"api\", \"web\"] }\n",
        );
        let fewer = read(
            "[commands.r]\nprogram = \"/bin/systemctl\"\nargs = [\"restart\", \"{{ s }}\"]\nparams.s = { type = \"enum\", values = [\"api\"] }\n",
        );
        let shell = read(
            "[commands.r]\nshell = true\nscript = \"systemctl restart {{ s }}\"\nparams.s = { type = \"enum\", values = [\"api\"] }\n",
        );
        let two = read(
            "[commands.r]\nprogram = \"/bin/systemctl\"\nargs = [\"restart\", \"{{ s }}\"]\nparams.s = { type = \"enum\", values = [\"api\", \"web\"] }\n[commands.q]\nprogram = \"/bin/true\"\n",
        );
        assert!(diff(&base, &fewer).iter().all(|c| !c.widens()));
        assert!(diff(&fewer, &base).iter().any(|c| c.widens()));
        assert!(diff(&fewer, &shell).iter().any(|c| c.widens()));
        let added = diff(&base, &two);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].path.to_string(), "commands.q");
        assert!(added[0].widens());
        assert!(diff(&two, &base).iter().all(|c| !c.widens()));
        assert!(diff(&base, &base).is_empty());
    }
}
