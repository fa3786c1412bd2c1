//! Compiling a component in a child process with limits.
//!
//! Compilation is the one thing runcap does with a plugin before any sandbox applies:
//! a component built to be expensive (huge functions, deep nesting) can cost a minute of
//! CPU and gigabytes of memory. The runcap binary therefore compiles in a child of itself
//! (`runcap __compile`), bounded in wall-clock time and in memory, and takes back only
//! the compiled artifact, which the parent deserializes with its own engine (so an
//! artifact from a different configuration is refused there).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// How much a compilation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time, after which the compiler is killed.
    pub time: Duration,
    /// Bytes of data memory (`RLIMIT_DATA`) the compiler may allocate.
    pub memory: u64,
}

impl Default for CompileLimits {
    /// Two minutes and 2 GiB: several times what the largest first-party or
    /// interpreter-based (Python, JavaScript) plugins need on a 2-core machine.
    fn default() -> Self {
        CompileLimits {
            time: Duration::from_secs(120),
            memory: 2 << 30,
        }
    }
}

impl CompileLimits {
    /// The defaults, overridden by `RUNCAP_COMPILE_TIMEOUT` (a duration such as `90s`)
    /// and `RUNCAP_COMPILE_MEMORY_MB`. A value that does not parse keeps the default and
    /// says so.
    pub fn from_env() -> Self {
        let mut limits = CompileLimits::default();
        if let Ok(v) = std::env::var("RUNCAP_COMPILE_TIMEOUT") {
            match humantime::parse_duration(&v) {
                Ok(d) => limits.time = d,
                Err(e) => tracing::warn!("ignoring RUNCAP_COMPILE_TIMEOUT={v:?}: {e}"),
            }
        }
        if let Ok(v) = std::env::var("RUNCAP_COMPILE_MEMORY_MB") {
            match v.parse::<u64>() {
                Ok(mb) => limits.memory = mb << 20,
                Err(e) => tracing::warn!("ignoring RUNCAP_COMPILE_MEMORY_MB={v:?}: {e}"),
            }
        }
        limits
    }
}

/// Why an isolated compilation produced no artifact.
#[derive(Debug, Error)]
pub enum IsolatedError {
    #[error("cannot start the compiler process {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("compiling took longer than {}s, the limit (RUNCAP_COMPILE_TIMEOUT)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error(
        "compiling needed more than {} MiB of memory, the limit (RUNCAP_COMPILE_MEMORY_MB)",
        .0 >> 20
    )]
    OutOfMemory(u64),
    #[error("{0}")]
    Failed(String),
    #[error("compiler I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The argument that makes the runcap binary act as the compiler.
pub const COMPILE_ARG: &str = "__compile";

/// Compiles `wasm` by running `exe __compile MAX_INSTANCES OUT` with `limits`; returns
/// the serialized artifact.
pub fn compile(
    exe: &Path,
    max_instances: u32,
    limits: CompileLimits,
    wasm: &[u8],
) -> Result<Vec<u8>, IsolatedError> {
    let scratch = tempfile::tempdir()?;
    let input = scratch.path().join("component.wasm");
    let output = scratch.path().join("component.cwasm");
    let errors = scratch.path().join("stderr");
    std::fs::write(&input, wasm)?;
    let memory = limits.memory;
    let mut cmd = Command::new(exe);
    cmd.arg(COMPILE_ARG)
        .arg(max_instances.to_string())
        .arg(&input)
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors)?)
        .env("RUNCAP_LOG", "error");
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let data = libc::rlimit {
                rlim_cur: memory,
                rlim_max: memory,
            };
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &data) != 0
                || libc::setrlimit(libc::RLIMIT_CORE, &core) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| IsolatedError::Spawn {
        exe: exe.display().to_string(),
        source,
    })?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= limits.time {
            let _ = child.kill();
            let _ = child.wait();
            return Err(IsolatedError::Timeout(limits.time));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(std::fs::read(&output)?);
    }
    let mut message = String::new();
    std::fs::File::open(&errors)?
        .take(4096)
        .read_to_string(&mut message)?;
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.contains("memory allocation") || message.contains("out of memory") {
        return Err(IsolatedError::OutOfMemory(limits.memory));
    }
    if message.is_empty() {
        use std::os::unix::process::ExitStatusExt;
        return Err(match status.signal() {
            // An allocation failure aborts (SIGABRT) or is killed (SIGKILL/SIGSEGV) under
            // the data limit.
            Some(_) => IsolatedError::OutOfMemory(limits.memory),
            None => IsolatedError::Failed(format!("the compiler exited with {status}")),
        });
    }
    Err(IsolatedError::Failed(message))
}

/// The child's side: `runcap __compile MAX_INSTANCES IN OUT` compiles `IN` with the
/// engine configuration a runtime for `MAX_INSTANCES` uses and writes the artifact to
/// `OUT`. Its exit code says whether it did.
pub fn child_main(args: &[String]) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let [max, input, output] = args else {
            anyhow::bail!("usage: runcap {COMPILE_ARG} MAX_INSTANCES IN OUT");
        };
        // The same configuration without the instance pool: compiling instantiates
        // nothing, and the pool's reservations would count against the memory limit.
        // (The parent's engine checks that the artifact fits its configuration.)
        let mut config = super::engine_config(max.parse()?);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
        let engine = wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let wasm = std::fs::read(PathBuf::from(input))?;
        let artifact = engine
            .precompile_component(&wasm)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut f = std::fs::File::create(PathBuf::from(output))?;
        f.write_all(&artifact)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}
