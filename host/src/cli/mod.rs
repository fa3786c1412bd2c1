//! The `runcap` command line. Parsing lives here; each subcommand's work lives in its
//! own module and returns an exit code: 0 all good, 1 something the command checked
//! failed, 2 a usage or manifest error.

mod audit;
mod bundle;
mod call;
mod caps;
mod check;
mod config;
mod describe;
mod faults;
mod fleet;
pub(crate) mod history;
mod incidents;
mod lock;
mod new;
mod pin;
mod plugin;
mod recover;
mod review;
mod run;
mod serve;
mod services;
mod sign;
mod wit;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::{CompileCache, CompileLimits, Runtime};
use crate::manifest::{self, Environment};
use crate::store::Store;
use crate::store::incidents::OperatorAction;

/// Runs operational-runbook actions as sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "runcap", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    state: StateArgs,
    /// Log verbosity for runcap's own diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "RUNCAP_LOG", default_value = "warn")]
    log_level: String,
    /// Format of runcap's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `runcap fleet …`
#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Every agent: up, last heartbeat, version, lock digest and drift. Exits 1 if one is down.
    Status {
        #[command(flatten)]
        controller: fleet::ControllerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Run a runbook on a host, a group or every agent, and wait for every result.
    /// Exits 0 only if every host's run succeeded.
    #[command(group = clap::ArgGroup::new("target").required(true).args(["host", "group", "all"]))]
    Run {
        runbook: String,
        /// One agent.
        #[arg(long)]
        host: Option<String>,
        /// Every agent of this group.
        #[arg(long)]
        group: Option<String>,
        /// Every agent.
        #[arg(long)]
        all: bool,
        /// With --group: one agent of the group that is up, the least busy.
        #[arg(long, requires = "group")]
        one: bool,
        #[arg(long)]
        dry_run: bool,
        /// A value for one of the runbook's parameters (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// How long to wait for the results.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Print each host's run id and return without waiting.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        controller: fleet::ControllerArgs,
        #[arg(long)]
        json: bool,
    },
    /// One fleet run: its job's state, its host, everything the agent reported.
    Show {
        run_id: String,
        #[command(flatten)]
        controller: fleet::ControllerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every agent's audit chain against the checkpoints it signed. Exits 1 on a problem.
    Audit {
        #[command(flatten)]
        controller: fleet::ControllerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every agent's capability report; flags a manifest that drifted from its lock.
    Caps {
        #[command(flatten)]
        controller: fleet::ControllerArgs,
        /// Compare two hosts instead: what TO may do that FROM may not (exits 1 if any).
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
        diff: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Print the nats-server `authorization` block that holds each agent to its own subjects.
    NatsConfig {
        #[arg(long)]
        fleet: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; report the first broken link and exit 1 if there is one.
    Verify {
        #[command(flatten)]
        env: EnvArgs,
        /// An anchor printed earlier by `runcap audit head` (SEQ:HASH): the chain must
        /// still hold that row, unchanged, which catches a chain rebuilt or cut short.
        #[arg(long)]
        anchor: Option<crate::store::audit::Anchor>,
        #[arg(long)]
        json: bool,
    },
    /// Print the head of a verified chain as an anchor (SEQ:HASH), to keep where this
    /// host cannot rewrite it: a central log, a ticket, another machine.
    Head {
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
    },
}

/// What an operator does to an incident.
#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// Someone is on it: the incident stays open and stops escalating.
    Ack {
        id: i64,
        #[command(flatten)]
        env: EnvArgs,
        /// What the operator says, kept in the timeline.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// It is over: resolves the incident, which also lets a flapping runbook's triggers
    /// start runs again.
    Resolve {
        id: i64,
        #[command(flatten)]
        env: EnvArgs,
        /// What the operator says, kept in the timeline.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// What a plugin says about itself: name, version, description, the JSON Schema of
    /// its params, and what its component imports. Runs no action.
    Describe {
        /// The plugin's name in the manifest.
        name: String,
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Options every command that reads a manifest takes.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// The environment manifest.
    #[arg(
        long = "env",
        short = 'e',
        env = "RUNCAP_ENV",
        default_value = "runcap.toml"
    )]
    pub env: PathBuf,
}

/// Where run history, the audit chain and incidents live.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// State directory (default: `.runcap/` beside the manifest).
    #[arg(long, env = "RUNCAP_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a manifest, compile and inspect its plugins, and check every step's params.
    /// Runs no action.
    Check {
        #[command(flatten)]
        env: EnvArgs,
        #[command(flatten)]
        review: check::ReviewArgs,
    },
    /// Run a runbook.
    Run {
        /// The runbook's name in the manifest.
        runbook: String,
        #[command(flatten)]
        env: EnvArgs,
        /// Print one JSON document with every step's result instead of live progress.
        #[arg(long)]
        json: bool,
        /// Plugins are told to change nothing; mutating capability calls are recorded, not made.
        #[arg(long)]
        dry_run: bool,
        /// A value for one of the runbook's parameters (repeatable); `runcap describe
        /// RUNBOOK` lists them.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Run one plugin's action without a runbook (recorded like a run named
    /// `call:PLUGIN`); record its capability calls to a file, or replay them from one.
    Call {
        /// The plugin's name in the manifest.
        plugin: String,
        /// The params, as a JSON object (default: the recording's, or `{}`).
        #[arg(long = "with", value_name = "JSON")]
        with: Option<String>,
        #[command(flatten)]
        env: EnvArgs,
        /// Keep every capability call and its answer (redacted) in this file.
        #[arg(long, value_name = "FILE", conflicts_with = "replay")]
        record: Option<PathBuf>,
        /// Answer the capability calls from this recording; nothing leaves the host.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        /// Print one JSON document with the step's result instead of live progress.
        #[arg(long)]
        json: bool,
        /// The plugin is told to change nothing; mutating capability calls are recorded, not made.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create an ed25519 key pair for signing plugins: NAME.key (secret) and NAME.pub.
    Keygen {
        /// The signer's name, as `[signers]` will list it.
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a plugin file you reviewed: writes FILE.sig beside it.
    Sign {
        /// The plugin's .wasm file.
        file: PathBuf,
        /// The secret key file from `runcap keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check that FILE.sig is a key's signature of FILE.
    Verify {
        /// The plugin's .wasm file.
        file: PathBuf,
        /// The public key: its text (ed25519:…) or a NAME.pub file.
        #[arg(long)]
        key: String,
    },
    /// Create a plugin project that builds, tests and runs as written.
    New {
        /// The plugin's name (lower-case letters, digits and `-`).
        name: String,
        /// The language it is written in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The endpoint its check probes; its grant allows this URL's origin.
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
        /// The Rust SDK's directory (default: the one this runcap was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run as a service: schedules, an HTTP API, Prometheus metrics and a status page.
    Serve {
        #[command(flatten)]
        env: EnvArgs,
        /// How long runs under way may take to finish when stopping, before they are
        /// cancelled (their rollbacks still run).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// What a runbook does and takes: its parameters, steps, rollbacks and policies.
    Describe {
        /// The runbook's name in the manifest.
        runbook: String,
        #[command(flatten)]
        env: EnvArgs,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Plugins on their own.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
    /// Recent runs, newest first.
    History {
        /// Only runs of this runbook.
        runbook: Option<String>,
        #[command(flatten)]
        env: EnvArgs,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
        /// Read the fleet's history from its controller (URL) instead of this store.
        #[arg(long, env = "RUNCAP_CONTROLLER")]
        controller: Option<String>,
        /// With --controller: only runs of this agent.
        #[arg(long, requires = "controller")]
        host: Option<String>,
    },
    /// Everything recorded about one run: steps, outcomes, logs, output, capability calls.
    Show {
        /// A run id, or a prefix that names one run.
        run_id: String,
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
        /// Read the run from the fleet's controller (URL), whichever host ran it.
        #[arg(long, env = "RUNCAP_CONTROLLER")]
        controller: Option<String>,
    },
    /// Run this host as an agent of a fleet: take runs from the controller, record them
    /// here, report them there.
    Agent {
        #[command(flatten)]
        env: EnvArgs,
        /// The fleet file (the same one the controller's `[serve] fleet` names).
        #[arg(long)]
        fleet: PathBuf,
        /// This agent's name in the fleet file (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// How long runs under way may take to finish when stopping.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Operate a fleet through its controller: agents, fan-out runs, audit, capabilities.
    Fleet {
        #[command(subcommand)]
        action: FleetCommand,
    },
    /// Check the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Open and past incidents with their timelines.
    Incidents {
        #[command(subcommand)]
        action: Option<IncidentCommand>,
        #[command(flatten)]
        env: EnvArgs,
        /// Include resolved incidents.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        /// List the fleet's incidents from its controller (URL) instead of this store;
        /// with --host, `ack` and `resolve` act on that agent's incident through it
        /// (without --host they act on this host's own store).
        #[arg(long, env = "RUNCAP_CONTROLLER")]
        controller: Option<String>,
        /// With --controller: only incidents of this agent (and `ack`/`resolve` its own).
        #[arg(long, requires = "controller")]
        host: Option<String>,
    },
    /// Export runs, outcomes, logs, capability calls, incidents and audit rows of a time
    /// window as one .tar.gz archive.
    Bundle {
        #[command(flatten)]
        env: EnvArgs,
        /// How far back, e.g. `15m`, `2h`, `1d`.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Archive to write (default: runcap-bundle-<time>.tar.gz).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The services the manifest defines and their state (pid, uptime, last exit code).
    Services {
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
        /// Print the last lines of this supervised service's log (kept redacted) instead.
        #[arg(long, value_name = "SERVICE")]
        logs: Option<String>,
        /// How many lines `--logs` prints.
        #[arg(long, default_value_t = 50, requires = "logs")]
        lines: usize,
    },
    /// Runs one service under runcap's supervision (started by the process driver).
    #[command(hide = true)]
    SuperviseService {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        cwd: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Open and past faults from the fault journal.
    Faults {
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
    },
    /// The drill proxies and their processes.
    Proxies {
        #[command(flatten)]
        env: EnvArgs,
        /// Stop every proxy.
        #[arg(long, conflicts_with = "start")]
        stop: bool,
        /// Start every proxy (a run starts the ones its drills use on its own).
        #[arg(long)]
        start: bool,
        #[arg(long)]
        json: bool,
    },
    /// Runs one drill proxy (started by runcap when a run needs it).
    #[command(hide = true)]
    ProxyServe {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        control: PathBuf,
    },
    /// Run the rollbacks that interrupted runs left pending.
    Recover {
        /// Only this run (id or prefix); default: every interrupted run of this manifest.
        run_id: Option<String>,
        #[command(flatten)]
        env: EnvArgs,
    },
    /// The WIT package plugins build against: list its worlds, write it for a toolchain
    /// (`--out DIR`), or add a world that imports only the capabilities a plugin calls.
    Wit {
        /// Write the package's files into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Name of a world to write (or print, without --out) that imports `log` and
        /// the capabilities given with --imports.
        #[arg(long)]
        world: Option<String>,
        /// Capabilities the world imports, comma-separated (e.g. `http,secrets`).
        #[arg(long, value_delimiter = ',')]
        imports: Vec<String>,
    },
    /// Set every plugin's `sha256` to its file's current digest (after a rebuild you trust).
    Pin {
        #[command(flatten)]
        env: EnvArgs,
    },
    /// Show what each plugin can touch: digest, imported capabilities, grants, over-grants.
    Caps {
        #[command(flatten)]
        env: EnvArgs,
        /// Machine-readable output.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// A review document in Markdown.
        #[arg(long)]
        markdown: bool,
        /// Compare with another environment's manifest, or with a lockfile: every
        /// capability added, removed or widened, changed digests, new plugins. Exits 1
        /// when anything widened. With --fleet, two hosts: `--diff FROM TO`.
        #[arg(long, num_args = 1..=2, value_names = ["OTHER", "TO"])]
        diff: Option<Vec<String>>,
        /// Every agent's report and lock drift, from the fleet's controller
        /// (`--controller`, RUNCAP_CONTROLLER), as `runcap fleet caps` prints it.
        #[arg(long, conflicts_with = "markdown")]
        fleet: bool,
        /// With --fleet: the controller's address.
        #[arg(
            long,
            env = "RUNCAP_CONTROLLER",
            default_value = "http://127.0.0.1:9090"
        )]
        controller: String,
    },
    /// Record the environment's plugin digests, imports, limits and grants in
    /// runcap.lock beside the manifest, for review; `check --locked` holds it to them.
    Lock {
        #[command(flatten)]
        env: EnvArgs,
        /// The lockfile (default: runcap.lock beside the manifest).
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
    },
    /// Print the environment as composed from its `extends` chain, each value with
    /// the file and line it came from.
    Config {
        #[command(flatten)]
        env: EnvArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `runcap` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The supervisor of a service must stay small: no async runtime, no logging set-up.
    if let Command::SuperviseService {
        state,
        log,
        cwd,
        pid_file,
        command,
    } = &cli.command
    {
        let code = crate::services::supervise(state, log, cwd, pid_file.as_deref(), command);
        return ExitCode::from(code as u8);
    }
    // Die quietly when the reader of our output goes away (`runcap … | head`); a
    // server or agent keeps serving when whoever read its first lines stops reading.
    if !matches!(cli.command, Command::Serve { .. } | Command::Agent { .. }) {
        // SAFETY: called before any thread starts; SIG_DFL is always a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }

    init_tracing(&cli.log_level, cli.log_format);
    // A server or agent serves many clients and runs actions side by side; every other
    // command runs one thing at a time, and a second worker thread only costs its start.
    let workers = match cli.command {
        Command::Serve { .. } | Command::Agent { .. } => {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
        _ => 1,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(dispatch(cli.command, &cli.state));
    // A plugin's file call cut short by its time limit or by a signal can leave its
    // blocking-pool thread waiting in the kernel (opening a FIFO no one writes): the
    // command is done, so it does not wait for such threads.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// Runs an operator's command (running, serving, history, audit, incidents, grants,
/// services and faults); plugin authors' commands go on to [`dispatch_authoring`].
async fn dispatch(command: Command, state: &StateArgs) -> u8 {
    match command {
        Command::Check { env, review } => check::run(&env, state, &review).await,
        Command::Run {
            runbook,
            env,
            json,
            dry_run,
            vars,
        } => {
            let how = run::How {
                json,
                dry_run,
                vars,
            };
            run::run(&env, state, &runbook, &how).await
        }
        Command::Describe { runbook, env, json } => describe::run(&env, &runbook, json),
        Command::Serve { env, grace } => serve::run(&env, state, grace).await,
        Command::History {
            runbook,
            env,
            limit,
            json,
            controller: None,
            ..
        } => history::history(&env, state, runbook.as_deref(), limit, json),
        Command::Show {
            run_id,
            env,
            json,
            controller: None,
        } => history::show(&env, state, &run_id, json),
        Command::Audit {
            action: AuditCommand::Verify { env, anchor, json },
        } => audit::verify(&env, state, anchor.as_ref(), json),
        Command::Audit {
            action: AuditCommand::Head { env, json },
        } => audit::head(&env, state, json),
        Command::Incidents {
            action: Some(action),
            controller: Some(controller),
            host: Some(host),
            ..
        } => {
            let (id, note, resolve) = match action {
                IncidentCommand::Ack { id, note, .. } => (id, note, false),
                IncidentCommand::Resolve { id, note, .. } => (id, note, true),
            };
            let c = fleet::ControllerArgs { controller };
            fleet::incident_act(&c, &host, id, resolve, &note).await
        }
        Command::Incidents {
            action: Some(IncidentCommand::Ack { id, env, note }),
            ..
        } => incidents::act(&env, state, id, OperatorAction::Acknowledge, &note),
        Command::Incidents {
            action: Some(IncidentCommand::Resolve { id, env, note }),
            ..
        } => incidents::act(&env, state, id, OperatorAction::Resolve, &note),
        Command::Incidents {
            action: None,
            env,
            all,
            json,
            controller: None,
            ..
        } => incidents::run(&env, state, all, json),
        Command::Bundle { env, since, out } => bundle::run(&env, state, &since, out),
        Command::Recover { run_id, env } => recover::run(&env, state, run_id.as_deref()).await,
        Command::Caps {
            fleet: true,
            controller,
            diff,
            json,
            ..
        } => {
            let c = fleet::ControllerArgs { controller };
            match diff.as_deref() {
                None => fleet::caps(&c, json).await,
                Some([from, to]) => fleet::caps_diff(&c, from, to, json).await,
                Some(one) => {
                    eprintln!(
                        "error: with --fleet, --diff compares two hosts\n  = help: name the other one too: runcap caps --fleet --diff {} TO",
                        one.join(" ")
                    );
                    2
                }
            }
        }
        Command::Caps {
            env,
            json,
            markdown,
            diff,
            ..
        } => {
            let format = match (json, markdown) {
                (true, _) => caps::Format::Json,
                (_, true) => caps::Format::Markdown,
                _ => caps::Format::Text,
            };
            let other = match diff.as_deref() {
                None => None,
                Some([other]) => Some(PathBuf::from(other)),
                Some(two) => {
                    eprintln!(
                        "error: --diff compares with one manifest or lockfile; two hosts are compared through the controller\n  = help: runcap caps --fleet --diff {}",
                        two.join(" ")
                    );
                    return 2;
                }
            };
            caps::run(&env, state, format, other.as_deref()).await
        }
        Command::Lock { env, lock } => lock::run(&env, state, lock.as_deref()).await,
        Command::Config { env, json } => {
            note_leftovers_if_any(&env, state);
            config::run(&env, json)
        }
        Command::Services {
            env,
            logs: Some(service),
            lines,
            ..
        } => services::logs(&env, state, &service, lines),
        Command::Services { env, json, .. } => services::run(&env, state, json).await,
        Command::SuperviseService { .. } => 2,
        Command::Faults { env, json } => faults::list(&env, state, json),
        Command::Proxies {
            env,
            stop,
            start,
            json,
        } => {
            let verb = match (stop, start) {
                (true, _) => crate::services::Verb::Stop,
                (_, true) => crate::services::Verb::Start,
                _ => crate::services::Verb::Status,
            };
            faults::proxies(&env, state, verb, json).await
        }
        Command::ProxyServe {
            listen,
            upstream,
            control,
        } => match crate::chaos::proxy::serve(listen, upstream, control).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: proxy on {listen}: {e}");
                2
            }
        },
        command @ (Command::History { .. }
        | Command::Show { .. }
        | Command::Incidents { .. }
        | Command::Agent { .. }
        | Command::Fleet { .. }) => dispatch_fleet(command, state).await,
        other => dispatch_authoring(other, state).await,
    }
}

/// Runs a fleet command: an agent, the controller's client commands, and history read
/// from a controller.
async fn dispatch_fleet(command: Command, state: &StateArgs) -> u8 {
    match command {
        Command::History {
            runbook,
            limit,
            json,
            controller: Some(controller),
            host,
            ..
        } => {
            let c = fleet::ControllerArgs { controller };
            fleet::history(&c, host.as_deref(), runbook.as_deref(), limit, json).await
        }
        Command::Show {
            run_id,
            json,
            controller: Some(controller),
            ..
        } => {
            let c = fleet::ControllerArgs { controller };
            fleet::show(&c, &run_id, json).await
        }
        Command::Incidents {
            action: None,
            all,
            json,
            controller: Some(controller),
            host,
            ..
        } => {
            let c = fleet::ControllerArgs { controller };
            fleet::incidents(&c, host.as_deref(), all, json).await
        }
        Command::Agent {
            env,
            fleet: file,
            name,
            grace,
        } => fleet::agent(&env, state, &file, name, grace).await,
        Command::Fleet { action } => match action {
            FleetCommand::Status { controller, json } => fleet::status(&controller, json).await,
            FleetCommand::Run {
                runbook,
                host,
                group,
                all,
                one,
                dry_run,
                vars,
                timeout,
                no_wait,
                controller,
                json,
            } => {
                // clap lets exactly one of host, group and all through, and one only
                // with group.
                let Ok(target) = crate::fleet::config::Target::from_parts(host, group, all, one)
                else {
                    eprintln!("error: name one of --host, --group or --all");
                    return 2;
                };
                let req = fleet::FleetRun {
                    runbook: &runbook,
                    target,
                    dry_run,
                    vars: &vars,
                    json,
                    timeout,
                    wait: !no_wait,
                };
                fleet::run(&controller, req).await
            }
            FleetCommand::Audit { controller, json } => fleet::audit(&controller, json).await,
            FleetCommand::Show {
                run_id,
                controller,
                json,
            } => fleet::show(&controller, &run_id, json).await,
            FleetCommand::Caps {
                controller,
                diff: Some(hosts),
                json,
            } => fleet::caps_diff(&controller, &hosts[0], &hosts[1], json).await,
            FleetCommand::Caps {
                controller,
                diff: None,
                json,
            } => fleet::caps(&controller, json).await,
            FleetCommand::NatsConfig { fleet: file } => fleet::nats_config(&file),
        },
        // Other commands are run by `dispatch`.
        _ => 2,
    }
}

/// Runs a plugin author's command: pinning, signing, scaffolding, calling and
/// describing plugins.
async fn dispatch_authoring(command: Command, state: &StateArgs) -> u8 {
    match command {
        Command::Pin { env } => pin::run(&env),
        Command::Keygen { name, dir } => sign::keygen(&name, &dir),
        Command::Sign { file, key } => sign::sign(&file, &key),
        Command::Verify { file, key } => sign::verify(&file, &key),
        Command::New {
            name,
            lang,
            dir,
            url,
            sdk,
        } => new::run(&new::NewArgs {
            name: &name,
            lang,
            dir: dir.as_deref(),
            url: &url,
            sdk: sdk.as_deref(),
        }),
        Command::Call {
            plugin,
            with,
            env,
            record,
            replay,
            json,
            dry_run,
        } => {
            let how = run::How {
                json,
                dry_run,
                vars: Vec::new(),
            };
            let call = call::CallArgs {
                plugin: &plugin,
                with: with.as_deref(),
                record: record.as_deref(),
                replay: replay.as_deref(),
            };
            call::run(&env, state, &call, &how).await
        }
        Command::Wit {
            out,
            world,
            imports,
        } => wit::run(out.as_deref(), world.as_deref(), &imports),
        Command::Plugin {
            action: PluginCommand::Describe { name, env, json },
        } => plugin::describe(&env, state, &name, json).await,
        // Operators' commands are run by `dispatch`.
        _ => 2,
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a service's log (journald, a file) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(crate::diagnostics::RedactedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads a manifest, printing its diagnostics on failure.
pub(crate) fn load_env(args: &EnvArgs) -> Result<Environment, u8> {
    manifest::load(&args.env).map_err(|d| {
        eprintln!("{d}");
        2
    })
}

/// Opens the state store for a manifest. Opening changes nothing: read-only commands
/// call [`note_leftovers`], and commands that act call [`recover_after_crash`].
pub(crate) fn open_store(env: &EnvArgs, state: &StateArgs) -> Result<Arc<Store>, u8> {
    // Without a manifest (or an explicit state directory) there is no store to speak of:
    // creating an empty one here would answer "nothing recorded" about the wrong place.
    if state.state_dir.is_none() && !env.env.is_file() {
        eprintln!(
            "error: no manifest at {}: the state store lives beside it\n  = help: pass --env FILE (or set RUNCAP_ENV), or --state-dir DIR for a store elsewhere",
            env.env.display()
        );
        return Err(2);
    }
    let dir = state_dir(env, state);
    let store = Store::open(&dir).map_err(|e| {
        eprintln!("error: {e}");
        2
    })?;
    Ok(Arc::new(store))
}

/// What `run`, `recover` (and a long-running server) do first: runs a dead runcap left
/// `running` are marked interrupted (their pending rollbacks named), and faults it left
/// open are reverted from the journal alone. Everything is said on stderr; returns
/// whether everything that needed undoing was undone.
pub(crate) async fn recover_after_crash(store: &Arc<Store>) -> bool {
    let mut ok = true;
    match store.recover_interrupted() {
        Ok(found) => {
            for i in found {
                eprintln!(
                    "note: run {} of runbook `{}` was interrupted (the runcap running it died); {} steps had completed",
                    i.run_id, i.runbook, i.completed_steps
                );
                if !i.pending_rollbacks.is_empty() {
                    let names: Vec<&str> = i
                        .pending_rollbacks
                        .iter()
                        .map(|r| r.step_id.as_str())
                        .collect();
                    eprintln!(
                        "      {} rollbacks are pending ({}); run them with: runcap recover {} --env {}",
                        names.len(),
                        names.join(", "),
                        i.run_id,
                        i.manifest
                    );
                }
            }
        }
        Err(e) => {
            ok = false;
            eprintln!("error: could not check for interrupted runs: {e}");
        }
    }
    // Faults left open by a runcap that died are reverted now, from the journal alone.
    let recovery = crate::chaos::recover(store).await;
    for e in &recovery.errors {
        eprintln!("error: could not recover faults left open by a runcap that died: {e}");
    }
    for (f, result) in &recovery.reverted {
        match result {
            Ok(how) => eprintln!(
                "note: reverted fault {} ({} on {}) left open by a runcap that died: {how}",
                f.id, f.kind, f.target
            ),
            Err(e) => eprintln!(
                "error: could not revert fault {} ({} on {}) left open by a runcap that died: {e}",
                f.id, f.kind, f.target
            ),
        }
    }
    ok && recovery.ok()
}

/// For commands that do not otherwise read the store (services, proxies, check, caps,
/// config): what a dead runcap left behind, if the environment has a store at all.
pub(crate) fn note_leftovers_if_any(env: &EnvArgs, state: &StateArgs) {
    let dir = state_dir(env, state);
    if !Store::file_in(&dir).is_file() {
        return;
    }
    match Store::open(&dir) {
        Ok(store) => note_leftovers(&store, env),
        Err(e) => eprintln!("warning: cannot read the state store to check for leftovers: {e}"),
    }
}

/// What read-only commands say about what a dead runcap left behind, changing nothing:
/// runs still marked running whose process is gone, and faults it left open.
pub(crate) fn note_leftovers(store: &Store, env: &EnvArgs) {
    match store.leftovers() {
        Ok(l) => {
            for run in &l.interrupted_runs {
                eprintln!(
                    "note: run {run} was interrupted (the runcap running it died); `runcap recover --env {}` records it and runs its pending rollbacks",
                    env.env.display()
                );
            }
            for f in &l.orphaned_faults {
                eprintln!(
                    "warning: fault {} ({} on {}) was left open by a runcap that died; `runcap recover --env {}` reverts it",
                    f.id,
                    f.kind,
                    f.target,
                    env.env.display()
                );
            }
        }
        Err(e) => eprintln!("warning: could not check for interrupted runs or open faults: {e}"),
    }
}

/// The state directory: `--state-dir`, `$RUNCAP_STATE_DIR`, or `.runcap/` beside the manifest.
pub(crate) fn state_dir(env: &EnvArgs, state: &StateArgs) -> PathBuf {
    let dir = state
        .state_dir
        .clone()
        .unwrap_or_else(|| Store::default_dir(&env.env));
    // Absolute, because supervised processes (services, proxies) run elsewhere.
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Host-side state every plugin of the environment shares (its services). A store
/// given here redacts what it writes with the environment's rules from now on.
pub(crate) fn resources(
    env: &Environment,
    args: &EnvArgs,
    state: &StateArgs,
    store: Option<Arc<Store>>,
) -> Result<crate::caps::Resources, u8> {
    let resources = crate::caps::Resources::new(env, &state_dir(args, state), store.clone())
        .map_err(|e| redaction_error(env, &e))?;
    crate::diagnostics::use_redactor(resources.redactor.clone());
    if let Some(store) = store {
        store.set_scrubber(resources.redactor.clone());
    }
    Ok(resources)
}

/// Says why the environment's redaction cannot be built (a secret too short to redact),
/// naming the fix; the command then stops with exit 2.
fn redaction_error(env: &Environment, e: &runcap_redact::Error) -> u8 {
    eprintln!("error: {}: {e}", env.file.display());
    if let runcap_redact::Error::LiteralTooShort { name, min, .. } = e {
        eprintln!(
            "  = help: runcap cannot keep a value that short out of its records; give [secrets.{name}] a value of at least {min} bytes"
        );
    }
    2
}

/// What the review commands (check, caps, lock) start from: the environment, an engine
/// to compile its plugins, and the host state their grants are validated against.
pub(crate) fn for_review(
    args: &EnvArgs,
    state: &StateArgs,
) -> Result<(Environment, Runtime, crate::caps::Resources), u8> {
    let env = load_env(args)?;
    let runtime = runtime(Workload::OneAtATime)?;
    let resources = resources(&env, args, state, None)?;
    Ok((env, runtime, resources))
}

/// The redaction for what a command prints from the store: the manifest's rules and secret
/// values when the manifest loads, the default rules otherwise. Records were redacted when
/// they were written; this catches any written before a rule or a secret was added.
pub(crate) fn output_redactor(args: &EnvArgs) -> Result<Arc<runcap_redact::Redactor>, u8> {
    match manifest::load(&args.env) {
        Ok(env) => {
            let secrets = crate::secrets::SecretStore::new(env.secrets.clone());
            let spec = crate::redaction::Spec::new(&env.redaction, &secrets);
            crate::redaction::host_redactor(&spec).map_err(|e| redaction_error(&env, &e))
        }
        Err(_) => Ok(Arc::default()),
    }
}

/// A record read from the store, redacted for printing; exits 2 if it cannot be.
pub(crate) fn redacted<T: serde::Serialize + serde::de::DeserializeOwned>(
    r: &runcap_redact::Redactor,
    value: &T,
) -> Result<T, u8> {
    crate::redaction::scrub_serde(r, value).ok_or_else(|| {
        eprintln!("error: a stored record could not be redacted for printing; nothing printed");
        2
    })
}

/// Says that no `what` called `name` is in the manifest, and which ones it declares.
pub(crate) fn say_unknown<'a>(
    what: &str,
    name: &str,
    env: &Environment,
    declared: impl Iterator<Item = &'a String>,
) {
    let names: Vec<&str> = declared.map(String::as_str).collect();
    eprintln!(
        "error: no {what} `{name}` in {}; it declares: {}",
        env.file.display(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
}

/// What `run` and `serve` set up before running anything: the store (after undoing what
/// a dead runcap left; `false` if something could not be undone), the engine, and the
/// host state plugins' grants reach.
pub(crate) async fn for_runs(
    env: &Environment,
    args: &EnvArgs,
    state: &StateArgs,
    engine: EngineBuild,
    store: StoreOpen,
) -> Result<(Arc<Store>, bool, Runtime, crate::caps::Resources), u8> {
    let store = store.finish(args, state)?;
    let recovered = recover_after_crash(&store).await;
    let runtime = engine.finish()?;
    let resources = resources(env, args, state, Some(store.clone()))?;
    Ok((store, recovered, runtime, resources))
}

/// The store, opened on a thread of its own while the command reads its manifest, when
/// one already exists: reading its schema costs a one-shot command about as much as
/// reading the manifest. A new store is made only once the manifest has loaded, so a
/// manifest that fails to load leaves no state directory behind it.
pub(crate) struct StoreOpen(
    Option<std::thread::JoinHandle<Result<Store, crate::store::StoreError>>>,
);

impl StoreOpen {
    /// Starts opening the store `env` and `state` name, if it exists.
    pub(crate) fn start(env: &EnvArgs, state: &StateArgs) -> Self {
        if state.state_dir.is_none() && !env.env.is_file() {
            return StoreOpen(None);
        }
        let dir = state_dir(env, state);
        if !Store::file_in(&dir).is_file() {
            return StoreOpen(None);
        }
        let opening = std::thread::Builder::new()
            .name("runcap-store-open".into())
            .spawn(move || Store::open(&dir));
        StoreOpen(opening.ok())
    }

    /// The store, opened now if it was not opened ahead.
    pub(crate) fn finish(self, env: &EnvArgs, state: &StateArgs) -> Result<Arc<Store>, u8> {
        match self.0.map(std::thread::JoinHandle::join) {
            Some(Ok(Ok(store))) => Ok(Arc::new(store)),
            Some(Ok(Err(e))) => {
                eprintln!("error: {e}");
                Err(2)
            }
            Some(Err(_)) | None => open_store(env, state),
        }
    }
}

/// The engine, built on a thread of its own while the command reads its manifest and
/// opens its store: the two take about as long, and a one-shot command's start-up is what
/// a cron user waits for.
pub(crate) struct EngineBuild {
    building: std::thread::JoinHandle<Result<Runtime, u8>>,
    pins: std::sync::mpsc::Sender<Vec<String>>,
}

impl EngineBuild {
    /// Starts building the engine for `workload`.
    pub(crate) fn start(workload: Workload) -> Self {
        let (pins, wanted) = std::sync::mpsc::channel::<Vec<String>>();
        let building = std::thread::spawn(move || {
            let runtime = runtime(workload)?;
            // Told which plugins the command will load before it needs the engine, the
            // thread takes their components from the cache too.
            if let Ok(pins) = wanted.recv() {
                runtime.preload(&pins);
            }
            Ok(runtime)
        });
        EngineBuild { building, pins }
    }

    /// Has the engine's thread take the components these pins name from the cache once
    /// the engine is built.
    pub(crate) fn preload(&self, pins: Vec<String>) {
        let _ = self.pins.send(pins);
    }

    /// The engine, once built.
    pub(crate) fn finish(self) -> Result<Runtime, u8> {
        drop(self.pins);
        self.building.join().unwrap_or_else(|_| {
            eprintln!("error: building the wasm engine failed");
            Err(2)
        })
    }
}

/// How many plugin instances a command can have alive at once, which sizes the engine's
/// pools. Every slot costs start-up work (a stack with a guard page each), so a command
/// that runs one action at a time does not pay for a server's thousand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// One action at a time: `run`, `check`, `caps`, `lock`, `recover`.
    OneAtATime,
    /// Many runs at once: `serve`, `agent`.
    Server,
}

impl Workload {
    /// The engine's pool size. Steps run one after another and a step's instance is
    /// dropped before the next starts; the margin covers a notify or rollback started while
    /// a step's instance is still being torn down.
    fn max_instances(self) -> u32 {
        match self {
            Workload::OneAtATime => 8,
            Workload::Server => 1000,
        }
    }
}

/// The runtime every command uses: the user's compile cache, compiles in bounded child
/// processes of this binary, and pools sized for `workload`.
pub(crate) fn runtime(workload: Workload) -> Result<Runtime, u8> {
    let runtime = Runtime::new(
        CompileCache::open(CompileCache::default_dir()),
        workload.max_instances(),
    )
    .map_err(|e| {
        eprintln!("error: {e:#}");
        2u8
    })?;
    Ok(match std::env::current_exe() {
        Ok(exe) => runtime.with_isolated_compiles(exe, CompileLimits::from_env()),
        Err(e) => {
            tracing::warn!("compiling in this process, without limits: {e}");
            runtime
        }
    })
}
