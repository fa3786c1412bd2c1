//! The `runcap` command line. Parsing lives here; each subcommand's work lives in its
//! own module and returns an exit code: 0 all good, 1 something the command checked
//! failed, 2 a usage or manifest error.

mod caps;
mod check;
mod pin;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::{CompileCache, Runtime};
use crate::manifest::{self, Environment};

/// Runs operational-runbook actions as sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "runcap", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log verbosity for runcap's own diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "RUNCAP_LOG", default_value = "warn")]
    log_level: String,
    /// Format of runcap's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a manifest, compile and inspect its plugins, and check every step's params.
    /// Runs no action.
    Check {
        #[command(flatten)]
        env: EnvArgs,
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
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `runcap` binary.
pub fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`runcap … | head`).
    // SAFETY: called before any thread starts; SIG_DFL is always a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_tracing(&cli.log_level, cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Check { env } => check::run(&env).await,
            Command::Run {
                runbook,
                env,
                json,
                dry_run,
            } => run::run(&env, &runbook, json, dry_run).await,
            Command::Caps { env, json } => caps::run(&env, json).await,
            Command::Pin { env } => pin::run(&env),
        }
    });
    ExitCode::from(code)
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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

/// Starts the engine with the default compile cache.
pub(crate) fn runtime() -> Result<Runtime, u8> {
    Runtime::new(CompileCache::open(CompileCache::default_dir()), 1000).map_err(|e| {
        eprintln!("error: {e:#}");
        2
    })
}
