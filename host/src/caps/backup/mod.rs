//! `backup`: snapshots of granted sources into granted, encrypted repositories, and restores
//! into granted targets.
//!
//! | | |
//! |---|---|
//! | grants | `[plugins.NAME.grants.backup]` with named `sources` (a directory, read only, or a dump command whose stdout is the backup), `repositories` (a directory and the `[secrets.NAME]` holding its key), `targets` (a directory to restore into, or a restore command reading a dump on stdin) and `queries` (commands that check a restored copy) |
//! | manifest | `sources.db = { command = "pg_dump -Fc app", file = "app.dump" }`, `sources.files = { dir = "/srv/app" }`, `repositories.main = { dir = "/backups/app", secret = "backup-key" }`, `targets.scratch = { dir = "/tmp/drill", scratch = true }`, `targets.scratch-db = { command = "psql -d scratch" }`, `queries.orders = { command = "psql -tAc 'select count(*) from orders' scratch" }` |
//! | default | no grant: the interface cannot be imported; an unlisted source, repository, target or query is denied |
//! | enforced | the plugin picks names, never paths or command lines; the repository key is read by the host from the secret and never reaches the plugin; only `scratch` targets may be emptied; in dry-run, snapshots, restores, forgets and queries are recorded and not carried out (a restore dry-run lists what would be written and what exists); hashing, chunking, compression and encryption run natively in the host, on blocking threads; an action that runs out of time cancels its snapshot or restore and kills its commands |
//! | audit | one call record per operation: names, decision and a one-line result (snapshot id and sizes, problems found, files restored), never the key |

mod ops;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::backup as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError, Resources,
};
use crate::manifest::{KeyPath, Validator};
use crate::secrets::{SecretSource, SecretStore};

/// The `backup` capability.
pub struct Backup;

impl Capability for Backup {
    const NAME: &'static str = "backup";
    const INTERFACE: &'static str = "runcap:plugin/backup";
    const WIT: Option<&'static str> = Some(include_str!("../../../../wit/backup.wit"));
    type Config = BackupGrantConfig;
    type Grant = BackupGrant;
    type Access = Arc<BackupAccess>;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.backup]   # sources, repositories, targets and queries by name"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: BackupGrantConfig,
        declared: &Declared,
    ) -> Option<BackupGrant> {
        BackupGrant::validate(v, at, raw, declared.secrets)
    }

    fn diff(old: &BackupGrantConfig, new: &BackupGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &BackupGrant) -> Vec<String> {
        grant.describe()
    }

    fn prepare(
        grant: Arc<BackupGrant>,
        env: &Resources,
    ) -> Result<Arc<BackupAccess>, PrepareError> {
        Ok(Arc::new(BackupAccess::new(grant, env.secrets.clone())))
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

/// `[plugins.NAME.grants.backup]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupGrantConfig {
    /// `sources.NAME = { dir = "…" }` or `{ command = "…", file = "…" }`
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// `repositories.NAME = { dir = "…", secret = "…" }`
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// `targets.NAME = { dir = "…", scratch = true }` or `{ command = "…" }`
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// `queries.NAME = { command = "…" }`
    #[serde(default)]
    pub queries: BTreeMap<String, QueryConfig>,
}

/// What `new` lets a plugin back up, restore into or run that `old` did not. Any changed
/// entry (a different directory or command) needs review, so it counts as widening.
pub fn diff(old: &BackupGrantConfig, new: &BackupGrantConfig) -> Vec<Change> {
    fn section<T: std::fmt::Debug>(
        out: &mut Vec<Change>,
        what: &str,
        key: &str,
        old: &BTreeMap<String, T>,
        new: &BTreeMap<String, T>,
    ) {
        for (name, n) in new {
            let at = KeyPath::root().key(key).key(name);
            match old.get(name) {
                None => out.push(Change::new(
                    at,
                    ChangeKind::Added,
                    format!("may use {what} `{name}`: {n:?}"),
                )),
                Some(o) if format!("{o:?}") != format!("{n:?}") => out.push(Change::new(
                    at,
                    ChangeKind::Changed,
                    format!("{what} `{name}` changed: {o:?} → {n:?}"),
                )),
                Some(_) => {}
            }
        }
        for name in old.keys().filter(|k| !new.contains_key(*k)) {
            out.push(Change::new(
                KeyPath::root().key(key),
                ChangeKind::Removed,
                format!("may no longer use {what} `{name}`"),
            ));
        }
    }
    let mut out = Vec::new();
    section(
        &mut out,
        "backup source",
        "sources",
        &old.sources,
        &new.sources,
    );
    section(
        &mut out,
        "repository",
        "repositories",
        &old.repositories,
        &new.repositories,
    );
    section(
        &mut out,
        "restore target",
        "targets",
        &old.targets,
        &new.targets,
    );
    section(&mut out, "query", "queries", &old.queries, &new.queries);
    out
}

/// One source as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A directory to back up, relative to the manifest.
    pub dir: Option<String>,
    /// A shell command whose standard output is the backup (`pg_dump -Fc app`).
    pub command: Option<String>,
    /// The file name a dump is stored and restored as (default `NAME.dump`).
    pub file: Option<String>,
    /// Directory sources: do not descend into other file systems.
    pub one_file_system: Option<bool>,
}

/// One repository as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// The repository directory, relative to the manifest.
    pub dir: String,
    /// The `[secrets.NAME]` whose value protects the repository key.
    pub secret: String,
    /// Create the repository on the first snapshot when the directory is missing or empty
    /// (default true).
    pub create: Option<bool>,
}

/// One restore target as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// A directory to restore into, relative to the manifest (created if missing).
    pub dir: Option<String>,
    /// A shell command that reads a dump on standard input (`psql -d scratch`).
    pub command: Option<String>,
    /// The directory is a scratch area: a restore may empty it first.
    pub scratch: Option<bool>,
}

/// One query as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// A shell command whose output a plugin compares with what it expects.
    pub command: String,
}

/// What a source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir {
        path: PathBuf,
        one_file_system: bool,
    },
    Dump {
        command: String,
        file: String,
    },
}

/// A validated repository grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryDef {
    pub path: PathBuf,
    pub secret: String,
    pub create: bool,
}

/// What a restore target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir { path: PathBuf, scratch: bool },
    Command { command: String },
}

/// A validated backup grant.
#[derive(Debug, Clone)]
pub struct BackupGrant {
    pub sources: BTreeMap<String, Source>,
    pub repositories: BTreeMap<String, RepositoryDef>,
    pub targets: BTreeMap<String, Target>,
    pub queries: BTreeMap<String, String>,
    /// Working directory of every command (the manifest's directory).
    pub cwd: PathBuf,
    /// `plugins.NAME.grants.backup`, for denial messages.
    pub key: String,
}

/// One `[…grants.backup.sources.NAME]`: a directory, or a dump command and the file it
/// is stored as; `None` when it has a problem (recorded in `v`).
fn validate_source(v: &mut Validator, p: &KeyPath, name: &str, s: SourceConfig) -> Option<Source> {
    let mut ok = true;
    match (s.dir, s.command) {
        (Some(dir), None) => {
            if s.file.is_some() {
                ok = false;
                v.error(
                    &p.key("file"),
                    "`file` names the stored file of a dump; a directory source keeps its own file names",
                    "remove it, or use `command` for a dump source",
                );
            }
            ok.then(|| Source::Dir {
                path: normalize(&v.resolve(&p.key("dir"), &dir)),
                one_file_system: s.one_file_system.unwrap_or(false),
            })
        }
        (None, Some(command)) => {
            if s.one_file_system.is_some() {
                ok = false;
                v.error(
                    &p.key("one_file_system"),
                    "`one_file_system` applies only to directory sources",
                    "remove it",
                );
            }
            if command.trim().is_empty() {
                ok = false;
                v.error(
                    &p.key("command"),
                    "the dump command is empty",
                    "e.g. command = \"pg_dump -Fc app\"",
                );
            }
            let file = s.file.unwrap_or_else(|| format!("{name}.dump"));
            if !plain_file_name(&file) {
                ok = false;
                v.error(
                    &p.key("file"),
                    format!("`{file}` is not a plain file name"),
                    "use a name without `/`, such as \"app.sql\"",
                );
            }
            ok.then_some(Source::Dump { command, file })
        }
        _ => {
            v.error(
                p,
                "a backup source needs exactly one of `dir` or `command`",
                "e.g. dir = \"/srv/app/uploads\", or command = \"pg_dump -Fc app\" (its stdout is the backup)",
            );
            None
        }
    }
}

/// One `[…grants.backup.repositories.NAME]`, whose key secret must be declared.
fn validate_repository(
    v: &mut Validator,
    p: &KeyPath,
    r: RepositoryConfig,
    secrets: &BTreeMap<String, SecretSource>,
) -> Option<RepositoryDef> {
    let mut ok = true;
    if !secrets.contains_key(&r.secret) {
        ok = false;
        v.error(
            &p.key("secret"),
            format!(
                "names secret `{}`, which is not defined under [secrets]",
                r.secret
            ),
            format!(
                "define it: [secrets.{}] with env = \"VAR\" or file = \"path\"; its value protects the repository key",
                r.secret
            ),
        );
    }
    ok.then(|| RepositoryDef {
        path: normalize(&v.resolve(&p.key("dir"), &r.dir)),
        secret: r.secret,
        create: r.create.unwrap_or(true),
    })
}

/// One `[…grants.backup.targets.NAME]`: a directory (a scratch one may not overlap
/// `protected`, nor be the manifest's directory or a root) or a restore command.
fn validate_target(
    v: &mut Validator,
    p: &KeyPath,
    t: TargetConfig,
    protected: &[(String, PathBuf)],
) -> Option<Target> {
    let mut ok = true;
    match (t.dir, t.command) {
        (Some(dir), None) => {
            let dir = normalize(&v.resolve(&p.key("dir"), &dir));
            let scratch = t.scratch.unwrap_or(false);
            if scratch {
                for (what, other) in protected {
                    if other.starts_with(&dir) || dir.starts_with(other) {
                        ok = false;
                        v.error(
                            &p.key("dir"),
                            format!(
                                "scratch target {} overlaps the {what} ({}); a scratch target is emptied before a restore",
                                dir.display(),
                                other.display()
                            ),
                            "point the scratch target at a directory of its own",
                        );
                    }
                }
                if dir.parent().is_none() || dir == v.dir {
                    ok = false;
                    v.error(
                        &p.key("dir"),
                        format!(
                            "{} cannot be a scratch target: it would be emptied before a restore",
                            dir.display()
                        ),
                        "use a directory of its own, such as \"scratch/restore\"",
                    );
                }
            }
            ok.then_some(Target::Dir { path: dir, scratch })
        }
        (None, Some(command)) => {
            if t.scratch.is_some() {
                ok = false;
                v.error(
                    &p.key("scratch"),
                    "`scratch` applies only to directory targets",
                    "remove it; a restore command can prepare its own scratch database (dropdb --if-exists x && createdb x && psql -d x)",
                );
            }
            if command.trim().is_empty() {
                ok = false;
                v.error(
                    &p.key("command"),
                    "the restore command is empty",
                    "e.g. command = \"psql -d scratch\"",
                );
            }
            ok.then_some(Target::Command { command })
        }
        _ => {
            v.error(
                p,
                "a restore target needs exactly one of `dir` or `command`",
                "e.g. dir = \"scratch/restore\", or command = \"psql -d scratch\" (it reads the dump on stdin)",
            );
            None
        }
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether a file name can name a dump inside a snapshot.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl BackupGrant {
    /// Checks a raw grant, recording every problem in `v`.
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: BackupGrantConfig,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Option<Self> {
        let mut ok = true;
        let mut sources = BTreeMap::new();
        for (name, s) in raw.sources {
            let p = path.key("sources").key(&name);
            ok &= v.name(&p, "source", &name);
            match validate_source(v, &p, &name, s) {
                Some(source) => {
                    sources.insert(name, source);
                }
                None => ok = false,
            }
        }
        let mut repositories = BTreeMap::new();
        for (name, r) in raw.repositories {
            let p = path.key("repositories").key(&name);
            ok &= v.name(&p, "repository", &name);
            match validate_repository(v, &p, r, secrets) {
                Some(repo) => {
                    repositories.insert(name, repo);
                }
                None => ok = false,
            }
        }
        // What a scratch target must not overlap: it is emptied before a restore.
        let protected: Vec<(String, PathBuf)> = sources
            .iter()
            .filter_map(|(n, s)| match s {
                Source::Dir { path, .. } => Some((format!("source {n}"), path.clone())),
                Source::Dump { .. } => None,
            })
            .chain(
                repositories
                    .iter()
                    .map(|(n, r)| (format!("repository {n}"), r.path.clone())),
            )
            .collect();
        let mut targets = BTreeMap::new();
        for (name, t) in raw.targets {
            let p = path.key("targets").key(&name);
            ok &= v.name(&p, "target", &name);
            match validate_target(v, &p, t, &protected) {
                Some(target) => {
                    targets.insert(name, target);
                }
                None => ok = false,
            }
        }
        let mut queries = BTreeMap::new();
        for (name, q) in raw.queries {
            let p = path.key("queries").key(&name);
            ok &= v.name(&p, "query", &name);
            if q.command.trim().is_empty() {
                ok = false;
                v.error(
                    &p.key("command"),
                    "the query command is empty",
                    "e.g. command = \"psql -tA -d scratch -c 'select count(*) from orders'\"",
                );
            }
            queries.insert(name, q.command);
        }
        ok.then(|| BackupGrant {
            sources,
            repositories,
            targets,
            queries,
            cwd: v.dir.clone(),
            key: path.to_string(),
        })
    }

    /// One line per granted entry, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (n, s) in &self.sources {
            out.push(match s {
                Source::Dir { path, .. } => {
                    format!("source {n}: directory {} (read only)", path.display())
                }
                Source::Dump { command, file } => format!("source {n}: dump `{command}` → {file}"),
            });
        }
        for (n, r) in &self.repositories {
            out.push(format!(
                "repository {n}: {} (key from secret {})",
                r.path.display(),
                r.secret
            ));
        }
        for (n, t) in &self.targets {
            out.push(match t {
                Target::Dir { path, scratch } => format!(
                    "target {n}: directory {}{}",
                    path.display(),
                    if *scratch {
                        " (scratch: may be emptied)"
                    } else {
                        ""
                    }
                ),
                Target::Command { command } => format!("target {n}: restore command `{command}`"),
            });
        }
        for (n, q) in &self.queries {
            out.push(format!("query {n}: `{q}`"));
        }
        out
    }
}

/// Per-plugin access: its grant, the environment's secrets, and the repositories it has
/// opened (deriving a key costs about a quarter of a second, so it is done once per secret).
pub struct BackupAccess {
    pub grant: Arc<BackupGrant>,
    pub secrets: Arc<SecretStore>,
    open: Mutex<BTreeMap<String, OpenRepository>>,
}

/// A repository opened for a plugin, with the digest of the secret that opened it (a changed
/// secret opens it again).
type OpenRepository = ([u8; 32], Arc<runcap_repo::Repository>);

impl BackupAccess {
    pub fn new(grant: Arc<BackupGrant>, secrets: Arc<SecretStore>) -> Self {
        BackupAccess {
            grant,
            secrets,
            open: Mutex::default(),
        }
    }
}

/// Sets the flag when the host call is abandoned (the action ran out of time or was
/// cancelled), so the blocking work stops and its commands are killed.
struct CancelOnDrop(Option<runcap_repo::CancelFlag>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.cancel();
        }
    }
}

/// Runs blocking repository work off the async threads, cancelling it if the caller goes away.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce(runcap_repo::CancelFlag) -> Result<T, wit::Error> + Send + 'static,
) -> Result<T, wit::Error> {
    let cancel = runcap_repo::CancelFlag::new();
    let mut guard = CancelOnDrop(Some(cancel.clone()));
    let result = tokio::task::spawn_blocking(move || work(cancel)).await;
    // Finished: nothing left to cancel.
    guard.0 = None;
    result.map_err(|e| wit::Error::Failed(format!("the backup work stopped unexpectedly: {e}")))?
}

fn error_text(e: &wit::Error) -> String {
    match e {
        wit::Error::Denied(m) => format!("denied: {m}"),
        wit::Error::WrongKey(m) => format!("wrong key: {m}"),
        wit::Error::NotFound(m) => format!("not found: {m}"),
        wit::Error::Failed(m) => format!("failed: {m}"),
    }
}

impl CapCtx<'_, Backup> {
    /// The plugin's backup access, or a recorded denial.
    fn backup_access(
        &mut self,
        op: &str,
        target: &str,
        what: &str,
    ) -> Result<Arc<BackupAccess>, wit::Error> {
        match self.access {
            Some(a) => Ok(a.clone()),
            None => {
                let reason = format!(
                    "no backup grant; add [plugins.{}.grants.backup] with the {what}",
                    self.plugin()
                );
                Err(wit::Error::Denied(self.deny(op, target, reason)))
            }
        }
    }

    /// The grant for an operation on one repository, or its denial (recorded): no backup
    /// grant, or one that does not list `repository`.
    fn repository_access(
        &mut self,
        op: &str,
        repository: &str,
    ) -> Result<Arc<BackupAccess>, wit::Error> {
        let access = self.backup_access(op, repository, "repository")?;
        self.granted_repository(op, repository, &access, repository)?;
        Ok(access)
    }

    /// Denies (and records) an operation on `target` when `access` does not list
    /// `repository`.
    fn granted_repository(
        &mut self,
        op: &str,
        target: &str,
        access: &BackupAccess,
        repository: &str,
    ) -> Result<(), wit::Error> {
        if access.grant.repositories.contains_key(repository) {
            return Ok(());
        }
        Err(self.backup_deny(
            op,
            target,
            &access.grant.key,
            "repository",
            repository,
            "dir = \"…\" and secret = \"…\"",
        ))
    }

    /// Denies (and records) a name the grant does not list.
    fn backup_deny(
        &mut self,
        op: &str,
        target: &str,
        key: &str,
        kind: &str,
        name: &str,
        example: &str,
    ) -> wit::Error {
        let reason = format!(
            "{kind} `{name}` is not granted; add [{key}.{kind_plural}.{name}] with {example}",
            kind_plural = match kind {
                "repository" => "repositories".to_string(),
                "query" => "queries".to_string(),
                k => format!("{k}s"),
            }
        );
        wit::Error::Denied(self.deny(op, target, reason))
    }

    /// Records the end of an allowed (or dry-run) operation.
    fn backup_done<T>(
        &mut self,
        record: CallRecord,
        result: &Result<T, wit::Error>,
        describe: impl Fn(&T) -> String,
    ) {
        let text = match result {
            Ok(v) => describe(v),
            Err(e) => error_text(e),
        };
        self.record(record.with_result(text));
    }
}

impl wit::Host for CapCtx<'_, Backup> {
    async fn snapshot(
        &mut self,
        source: String,
        repository: String,
        tags: Vec<String>,
    ) -> wasmtime::Result<Result<wit::SnapshotReport, wit::Error>> {
        self.core.before_change();
        crate::taped!(
            self,
            "backup.snapshot",
            (source, repository, tags),
            self.snapshot_live(source, repository, tags)
        )
    }

    async fn verify(
        &mut self,
        repository: String,
        read_data: bool,
    ) -> wasmtime::Result<Result<wit::VerifyReport, wit::Error>> {
        crate::taped!(
            self,
            "backup.verify",
            (repository, read_data),
            self.verify_live(repository, read_data)
        )
    }

    async fn restore(
        &mut self,
        request: wit::RestoreRequest,
    ) -> wasmtime::Result<Result<wit::RestoreReport, wit::Error>> {
        self.core.before_change();
        crate::taped!(
            self,
            "backup.restore",
            (request),
            self.restore_live(request)
        )
    }

    async fn compare(
        &mut self,
        repository: String,
        snapshot: String,
        target: String,
    ) -> wasmtime::Result<Result<wit::CompareReport, wit::Error>> {
        crate::taped!(
            self,
            "backup.compare",
            (repository, snapshot, target),
            self.compare_live(repository, snapshot, target)
        )
    }

    async fn forget(
        &mut self,
        repository: String,
        policy: wit::ForgetPolicy,
        prune: bool,
    ) -> wasmtime::Result<Result<wit::ForgetReport, wit::Error>> {
        self.core.before_change();
        crate::taped!(
            self,
            "backup.forget",
            (repository, policy, prune),
            self.forget_live(repository, policy, prune)
        )
    }

    async fn list_snapshots(
        &mut self,
        repository: String,
        source: Option<String>,
    ) -> wasmtime::Result<Result<Vec<wit::SnapshotInfo>, wit::Error>> {
        crate::taped!(
            self,
            "backup.list-snapshots",
            (repository, source),
            self.list_snapshots_live(repository, source)
        )
    }

    async fn query(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<wit::QueryResult, wit::Error>> {
        crate::taped!(self, "backup.query", (name), self.query_live(name))
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Backup> {
    async fn snapshot_live(
        &mut self,
        source: String,
        repository: String,
        tags: Vec<String>,
    ) -> wasmtime::Result<Result<wit::SnapshotReport, wit::Error>> {
        let op = "snapshot";
        let target = format!("{source} → {repository}");
        let access = match self.backup_access(op, &target, "source and repository") {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let key = access.grant.key.clone();
        let Some(src) = access.grant.sources.get(&source).cloned() else {
            let e = self.backup_deny(
                op,
                &target,
                &key,
                "source",
                &source,
                "dir = \"…\" or command = \"…\"",
            );
            return Ok(Err(e));
        };
        if let Err(e) = self.granted_repository(op, &target, &access, &repository) {
            return Ok(Err(e));
        }
        let dry_run = self.dry_run();
        let a = access.clone();
        let result = blocking(move |cancel| {
            if dry_run {
                ops::snapshot_preview(&a, &source, &src, &repository)
            } else {
                ops::snapshot(&a, &source, &src, &repository, tags, cancel)
            }
        })
        .await;
        let record = if dry_run {
            CallRecord::dry_run(Backup::NAME, op, &target)
        } else {
            CallRecord::allowed(Backup::NAME, op, &target)
        };
        self.backup_done(record, &result, |r| {
            if r.dry_run {
                format!(
                    "dry run: would back up {} files, {}",
                    r.snapshot.files,
                    ops::bytes(r.snapshot.size)
                )
            } else {
                format!(
                    "snapshot {}: {} files, {} read, {} stored, dedup {:.2}, {} ms",
                    &r.snapshot.id[..8.min(r.snapshot.id.len())],
                    r.snapshot.files,
                    ops::bytes(r.bytes_read),
                    ops::bytes(r.bytes_stored),
                    r.dedup_ratio,
                    r.duration_ms
                )
            }
        });
        Ok(result)
    }

    async fn verify_live(
        &mut self,
        repository: String,
        read_data: bool,
    ) -> wasmtime::Result<Result<wit::VerifyReport, wit::Error>> {
        let op = if read_data { "verify-data" } else { "verify" };
        let access = match self.repository_access(op, &repository) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let a = access.clone();
        let name = repository.clone();
        let result = blocking(move |_| ops::verify(&a, &name, read_data)).await;
        self.backup_done(
            CallRecord::allowed(Backup::NAME, op, &repository),
            &result,
            |r| {
                if r.ok {
                    format!(
                        "ok: {} snapshots, {} chunks{}",
                        r.snapshots,
                        r.chunks_referenced,
                        if r.read_data {
                            " read and checked"
                        } else {
                            " present"
                        }
                    )
                } else {
                    format!(
                        "{} problems: {} chunks missing, {} corrupt, {} snapshots unreadable",
                        r.problems_total,
                        r.chunks_missing,
                        r.chunks_corrupt,
                        r.snapshots_unreadable
                    )
                }
            },
        );
        Ok(result)
    }

    async fn restore_live(
        &mut self,
        request: wit::RestoreRequest,
    ) -> wasmtime::Result<Result<wit::RestoreReport, wit::Error>> {
        let op = "restore";
        let what = request
            .snapshot
            .clone()
            .or_else(|| request.source.as_ref().map(|s| format!("latest of {s}")))
            .unwrap_or_default();
        let target_text = format!("{what} from {} → {}", request.repository, request.target);
        let access = match self.backup_access(op, &target_text, "repository and target") {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let key = access.grant.key.clone();
        if let Err(e) = self.granted_repository(op, &target_text, &access, &request.repository) {
            return Ok(Err(e));
        }
        let Some(target) = access.grant.targets.get(&request.target).cloned() else {
            let e = self.backup_deny(
                op,
                &target_text,
                &key,
                "target",
                &request.target,
                "dir = \"…\" or command = \"…\"",
            );
            return Ok(Err(e));
        };
        match (&request.snapshot, &request.source) {
            (None, None) => {
                let m =
                    "name a snapshot id, or a source whose latest snapshot to restore".to_string();
                self.record(
                    CallRecord::allowed(Backup::NAME, op, &target_text)
                        .with_result(format!("failed: {m}")),
                );
                return Ok(Err(wit::Error::Failed(m)));
            }
            (None, Some(source)) if !access.grant.sources.contains_key(source) => {
                let e = self.backup_deny(
                    op,
                    &target_text,
                    &key,
                    "source",
                    source,
                    "dir = \"…\" or command = \"…\"",
                );
                return Ok(Err(e));
            }
            _ => {}
        }
        if request.clean && !matches!(target, Target::Dir { scratch: true, .. }) {
            let reason = format!(
                "target `{}` is not a scratch directory, so it may not be emptied; set scratch = true in [{key}.targets.{}] if it is one",
                request.target, request.target
            );
            return Ok(Err(wit::Error::Denied(self.deny(op, &target_text, reason))));
        }
        let dry_run = self.dry_run() || request.dry_run;
        let a = access.clone();
        let result =
            blocking(move |cancel| ops::restore(&a, &request, &target, dry_run, cancel)).await;
        let record = if dry_run {
            CallRecord::dry_run(Backup::NAME, op, &target_text)
        } else {
            CallRecord::allowed(Backup::NAME, op, &target_text)
        };
        self.backup_done(record, &result, |r| {
            format!(
                "{}snapshot {}: {} files, {}{} in {} ms{}",
                if r.dry_run { "dry run: " } else { "" },
                &r.snapshot.id[..8.min(r.snapshot.id.len())],
                r.files,
                ops::bytes(r.bytes),
                if r.existing > 0 {
                    format!(", {} existing", r.existing)
                } else {
                    String::new()
                },
                r.duration_ms,
                if r.complete { "" } else { ", incomplete" }
            )
        });
        Ok(result)
    }

    async fn compare_live(
        &mut self,
        repository: String,
        snapshot: String,
        target: String,
    ) -> wasmtime::Result<Result<wit::CompareReport, wit::Error>> {
        let op = "compare";
        let target_text = format!("{snapshot} from {repository} ↔ {target}");
        let access = match self.backup_access(op, &target_text, "repository and target") {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let key = access.grant.key.clone();
        if let Err(e) = self.granted_repository(op, &target_text, &access, &repository) {
            return Ok(Err(e));
        }
        let dir = match access.grant.targets.get(&target) {
            Some(Target::Dir { path, .. }) => path.clone(),
            Some(Target::Command { .. }) => {
                let m = format!(
                    "target `{target}` is a restore command; compare works on directory targets (check a restored database with a query)"
                );
                self.record(
                    CallRecord::allowed(Backup::NAME, op, &target_text)
                        .with_result(format!("failed: {m}")),
                );
                return Ok(Err(wit::Error::Failed(m)));
            }
            None => {
                let e = self.backup_deny(op, &target_text, &key, "target", &target, "dir = \"…\"");
                return Ok(Err(e));
            }
        };
        let a = access.clone();
        let result = blocking(move |_| ops::compare(&a, &repository, &snapshot, &dir)).await;
        self.backup_done(
            CallRecord::allowed(Backup::NAME, op, &target_text),
            &result,
            |r| {
                if r.ok {
                    format!("identical: {} files, {}", r.files, ops::bytes(r.bytes))
                } else {
                    format!("{} differences in {} files", r.differences_total, r.files)
                }
            },
        );
        Ok(result)
    }

    async fn forget_live(
        &mut self,
        repository: String,
        policy: wit::ForgetPolicy,
        prune: bool,
    ) -> wasmtime::Result<Result<wit::ForgetReport, wit::Error>> {
        let op = if prune { "forget-prune" } else { "forget" };
        let access = match self.repository_access(op, &repository) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let dry_run = self.dry_run();
        let a = access.clone();
        let name = repository.clone();
        let result = blocking(move |_| ops::forget(&a, &name, &policy, prune, dry_run)).await;
        let record = if dry_run {
            CallRecord::dry_run(Backup::NAME, op, &repository)
        } else {
            CallRecord::allowed(Backup::NAME, op, &repository)
        };
        self.backup_done(record, &result, |r| {
            format!(
                "{}kept {}, removed {}{}",
                if r.dry_run { "dry run: " } else { "" },
                r.kept.len(),
                r.removed.len(),
                if prune {
                    format!(", freed {}", ops::bytes(r.bytes_freed))
                } else {
                    String::new()
                }
            )
        });
        Ok(result)
    }

    async fn list_snapshots_live(
        &mut self,
        repository: String,
        source: Option<String>,
    ) -> wasmtime::Result<Result<Vec<wit::SnapshotInfo>, wit::Error>> {
        let op = "list";
        let access = match self.repository_access(op, &repository) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let a = access.clone();
        let name = repository.clone();
        let result = blocking(move |_| ops::list(&a, &name, source.as_deref())).await;
        self.backup_done(
            CallRecord::allowed(Backup::NAME, op, &repository),
            &result,
            |r| format!("{} snapshots", r.len()),
        );
        Ok(result)
    }

    async fn query_live(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<wit::QueryResult, wit::Error>> {
        let op = "query";
        let access = match self.backup_access(op, &name, "query") {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let Some(command) = access.grant.queries.get(&name).cloned() else {
            let key = access.grant.key.clone();
            let e = self.backup_deny(op, &name, &key, "query", &name, "command = \"…\"");
            return Ok(Err(e));
        };
        if self.dry_run() {
            self.record(
                CallRecord::dry_run(Backup::NAME, op, &name).with_result("dry run: not run"),
            );
            return Ok(Ok(wit::QueryResult {
                exit_code: 0,
                stdout: String::new(),
                stderr: "dry run: the query was not run".into(),
                duration_ms: 0,
            }));
        }
        let cwd = access.grant.cwd.clone();
        let result = blocking(move |cancel| ops::query(&command, &cwd, cancel)).await;
        self.backup_done(CallRecord::allowed(Backup::NAME, op, &name), &result, |r| {
            format!("exit {} in {} ms", r.exit_code, r.duration_ms)
        });
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing;

    const DECLARED: &str = "[secrets.key]\nfile = \"repo.key\"\n";

    #[tokio::test]
    async fn granted_names_back_up_check_and_query_while_others_are_denied() {
        let (_d, dir) = testing::dir();
        std::fs::write(dir.join("repo.key"), "correct horse battery staple\n").unwrap();
        std::fs::create_dir(dir.join("uploads")).unwrap();
        std::fs::write(dir.join("uploads/a.txt"), "alpha").unwrap();
        let decl = testing::declared(DECLARED, &dir);
        let manifest = format!(
            "{DECLARED}\n[plugins.p.grants.backup]\nsources.files = {{ dir = \"uploads\" }}\nrepositories.main = {{ dir = \"repo\", secret = \"key\" }}\nqueries.count = {{ command = \"ls uploads | wc -l\" }}\n"
        );
        let grant = testing::grant::<Backup>(&manifest, &dir, &decl).unwrap();
        let env = testing::resources(&decl, &dir.join(".runcap"), None);
        let mut action = testing::recorded(testing::prepared::<Backup>(grant, &env), false, 1024);
        let mut ctx = action.state.view::<Backup>();
        let snap = wit::Host::snapshot(&mut ctx, "files".into(), "main".into(), vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.snapshot.files, 1);
        let listed = wit::Host::list_snapshots(&mut ctx, "main".into(), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listed.len(), 1);
        let verified = wit::Host::verify(&mut ctx, "main".into(), true)
            .await
            .unwrap()
            .unwrap();
        assert!(verified.ok);
        let q = wit::Host::query(&mut ctx, "count".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q.stdout.trim(), "1");
        let denied = wit::Host::snapshot(&mut ctx, "etc".into(), "main".into(), vec![])
            .await
            .unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("[plugins.p.grants.backup.sources.etc]")),
            "{denied:?}"
        );
        let audit = action.audit();
        let decisions: Vec<&str> = audit.iter().map(|a| a.1.as_str()).collect();
        assert_eq!(
            decisions,
            ["allowed", "allowed", "allowed", "allowed", "denied"]
        );
        let stored = serde_json::to_string(&action.calls()).unwrap();
        assert!(
            !stored.contains("battery staple"),
            "the key never reaches a record"
        );
    }

    #[test]
    fn grant_errors_and_the_hint() {
        let (_d, dir) = testing::dir();
        let decl = testing::declared(DECLARED, &dir);
        let errors = testing::grant::<Backup>(
            "[plugins.p.grants.backup]\nrepositories.main = { dir = \"repo\", secret = \"nope\" }\ntargets.t = { dir = \".\", scratch = true }\n",
            &dir,
            &decl,
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("nope"), "{errors}");
        assert!(errors.contains("cannot be a scratch target"), "{errors}");
        testing::grant::<Backup>(&Backup::hint("p"), &dir, &decl).unwrap();
    }
}
