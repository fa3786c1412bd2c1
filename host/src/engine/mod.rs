//! The WebAssembly engine: one wasmtime `Engine` per process with the pooling
//! allocator and epoch deadlines, a compile cache, and loading of plugins into
//! ready-to-instantiate [`Plugin`]s.

pub mod cache;
pub mod imports;
pub mod inspect;
pub mod isolate;
pub mod ticker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::ActionPre;
use crate::caps::{self, HostState};
use crate::manifest::MAX_PLUGIN_FILE;
use crate::manifest::{Limits, PluginSpec};
pub use cache::CompileCache;
pub use imports::ImportProblem;
pub use isolate::CompileLimits;

/// How often the epoch advances; deadlines are checked, and long-running guests
/// yield to other tasks, at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a plugin could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the {max} bytes runcap compiles")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{path} has sha256 {actual}, not the pinned {expected}")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path} is not a valid component: {message}")]
    Compile { path: String, message: String },
    #[error("cannot compile {path}: {message}")]
    CompileFailed { path: String, message: String },
    #[error("{}", problems.iter().map(|p| format!("plugin `{plugin}` {p}")).collect::<Vec<_>>().join("\n"))]
    Imports {
        plugin: String,
        problems: Vec<ImportProblem>,
    },
    #[error("plugin `{plugin}` cannot be linked: {message}")]
    Link { plugin: String, message: String },
    #[error("plugin `{plugin}`: {message}")]
    Grant { plugin: String, message: String },
}

/// Folds a compiler error onto one line.
fn one_line(e: &impl std::fmt::Display) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where components are compiled on a cache miss.
enum Compiler {
    /// In this process: library users, tests and benchmarks.
    InProcess,
    /// In a child process of the runcap binary, with limits (see [`isolate`]).
    Isolated { exe: PathBuf, limits: CompileLimits },
}

/// How much of each recycled memory slot stays mapped and is cleared in place. On Linux
/// 6.7 and later the engine asks the kernel which pages of the window are resident
/// (`PAGEMAP_SCAN`, enabled in [`engine_config`]) and clears only those, so a wide window
/// costs an action that touches little nothing: 4 MiB covers http-probe with a response
/// body. Older kernels clear the whole window every time, so there it covers only what
/// every action touches (stack, data, the start of the heap).
fn resident_window() -> usize {
    if kernel_at_least(6, 7) {
        4 << 20
    } else {
        768 << 10
    }
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = sysinfo::System::kernel_version().unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The engine configuration of a runtime for `max_instances` concurrent actions; the
/// compiler child builds its engine from the same function, so its artifacts fit.
fn engine_config(max_instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 4)
        .total_memories(max_instances)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances)
        .max_memory_size(Limits::MAX_MEMORY as usize)
        // Reset recycled slots with memset rather than madvise for the part of memory
        // actions touch: a plugin's stack comes first in its memory (256 KiB as runcap
        // builds them), then its data and its heap. Without this each action pays page
        // faults (about 15 µs of a 25 µs action) and every reset unmaps pages, which on
        // two cores costs TLB shootdowns on the other core. See [`resident_window`].
        .async_stack_keep_resident(1 << 20)
        .linear_memory_keep_resident(resident_window())
        .table_keep_resident(64 << 10)
        // Clear only the pages of the window that are resident, not all of it: the part
        // of a plugin's stack it never reaches (most of it) is then never touched. Where
        // the kernel cannot tell (before 6.7), the whole window is cleared.
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // `RUNCAP_PROFILE=perfmap` writes /tmp/perf-PID.map, so `perf` names guest functions.
    if std::env::var_os("RUNCAP_PROFILE").is_some_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// The process-wide engine and the linker every plugin is instantiated with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    compiler: Compiler,
    max_instances: u32,
    ticker: ticker::Ticker,
    /// Components taken from the cache ahead of their loading, by pin (see
    /// [`Runtime::preload`]).
    preloaded: std::sync::Mutex<std::collections::HashMap<String, (Component, inspect::Declared)>>,
}

impl Runtime {
    /// Builds the engine. `max_instances` bounds how many actions can run at once.
    pub fn new(cache: CompileCache, max_instances: u32) -> anyhow::Result<Self> {
        let config = engine_config(max_instances);
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        caps::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link capabilities: {e}"))?;

        let ticker = ticker::Ticker::start(engine.weak())?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            compiler: Compiler::InProcess,
            max_instances,
            ticker,
            preloaded: Default::default(),
        })
    }

    /// Takes the components pinned by `pins` from the compile cache now, so their loading
    /// later finds them ready: a one-shot command does this on the engine's own thread
    /// while it opens its store. A pin the cache does not hold is compiled at its load.
    pub fn preload(&self, pins: &[String]) {
        for pin in pins {
            if let Some(hit) = self.cache.lookup(&self.engine, pin) {
                self.preloaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pin.clone(), hit);
            }
        }
    }

    /// Compiles components in child processes of `exe` (the runcap binary, which answers
    /// its `__compile` argument) within `limits`, instead of in this process.
    pub fn with_isolated_compiles(mut self, exe: PathBuf, limits: CompileLimits) -> Self {
        self.compiler = Compiler::Isolated { exe, limits };
        self
    }

    /// Keeps deadlines enforced while the guard lives: hold it for as long as an
    /// action's store exists.
    pub fn ticking(&self) -> ticker::Ticking {
        self.ticker.hold()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads the plugin file, checks it against its pin, compiles it (or takes it from
    /// the cache), checks its imports against its grants and prepares instantiation.
    pub fn load(
        &self,
        spec: &PluginSpec,
        resources: &caps::Resources,
    ) -> Result<Plugin, LoadError> {
        let compiled = self.compile(spec, true)?;
        let granted = caps::prepare(&spec.grants, resources).map_err(|e| LoadError::Grant {
            plugin: spec.name.clone(),
            message: e.to_string(),
        })?;
        self.prepare(spec, resources, compiled, granted)
    }

    /// Loads a plugin only to ask it to describe itself or check params, which it does
    /// with no grant at all: its imports are not held to its grants, and nothing of them
    /// is prepared.
    pub fn load_to_describe(
        &self,
        spec: &PluginSpec,
        resources: &caps::Resources,
    ) -> Result<Plugin, LoadError> {
        let compiled = self.compile(spec, false)?;
        self.prepare(spec, resources, compiled, caps::Prepared::default())
    }

    /// Takes a plugin's component from the cache, or reads and verifies its file, reads
    /// what it declares (refusing it, before any compiling, when it lacks the action
    /// exports or, with `check_imports`, imports what its grants do not allow), and
    /// compiles it. The cache is keyed by the pin, so a cache hit runs what the pin names
    /// whatever the file holds now; a miss reads the file and checks it against the pin.
    fn compile(&self, spec: &PluginSpec, check_imports: bool) -> Result<Compiled, LoadError> {
        let path = spec.path.display().to_string();
        let sha256 = &spec.sha256;
        let not_component = |message: String| LoadError::Compile {
            path: path.clone(),
            message,
        };
        let refuse = |declared: &inspect::Declared| {
            declared
                .require_action_exports()
                .map_err(|e| not_component(e.to_string()))?;
            if check_imports {
                let problems = imports::check(&spec.name, &declared.imports, &spec.grants);
                if !problems.is_empty() {
                    return Err(LoadError::Imports {
                        plugin: spec.name.clone(),
                        problems,
                    });
                }
            }
            Ok(())
        };
        let preloaded = self
            .preloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
            .cloned();
        if let Some((component, declared)) =
            preloaded.or_else(|| self.cache.lookup(&self.engine, sha256))
        {
            refuse(&declared)?;
            return Ok(Compiled {
                component,
                sha256: sha256.clone(),
                imports: declared.imports,
                cached: true,
            });
        }
        let wasm = read_pinned(spec)?;
        let declared = inspect::declared(&wasm).map_err(|e| not_component(e.to_string()))?;
        refuse(&declared)?;
        let component = self
            .cache
            .compile(&self.engine, sha256, &declared, || match &self.compiler {
                Compiler::InProcess => self
                    .engine
                    .precompile_component(&wasm)
                    .map_err(|e| one_line(&e)),
                Compiler::Isolated { exe, limits } => {
                    match isolate::compile(exe, self.max_instances, *limits, &wasm) {
                        // The binary can be gone (replaced by an upgrade under a running
                        // `serve`): compile here rather than not at all.
                        Err(e @ isolate::IsolatedError::Spawn { .. }) => {
                            tracing::warn!("compiling in this process, without limits: {e}");
                            self.engine
                                .precompile_component(&wasm)
                                .map_err(|e| one_line(&e))
                        }
                        other => other.map_err(|e| e.to_string()),
                    }
                }
            })
            .map_err(|e| LoadError::CompileFailed {
                path: path.clone(),
                message: one_line(&e),
            })?;
        Ok(Compiled {
            component,
            sha256: sha256.clone(),
            imports: declared.imports,
            cached: false,
        })
    }

    fn prepare(
        &self,
        spec: &PluginSpec,
        resources: &caps::Resources,
        compiled: Compiled,
        granted: caps::Prepared,
    ) -> Result<Plugin, LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: spec.name.clone(),
            message: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(link_err)?;
        let pre = ActionPre::new(pre).map_err(link_err)?;
        Ok(Plugin {
            spec: spec.clone(),
            sha256: compiled.sha256,
            imports: compiled.imports,
            from_cache: compiled.cached,
            pre,
            granted: Arc::new(granted),
            resources: resources.clone(),
        })
    }
}

/// A plugin's component, verified and compiled.
struct Compiled {
    component: Component,
    sha256: String,
    imports: Vec<String>,
    cached: bool,
}

/// A verified, compiled plugin, ready to instantiate once per action. Cloning shares the
/// compiled code and the prepared capability state.
#[derive(Clone)]
pub struct Plugin {
    pub spec: PluginSpec,
    pub sha256: String,
    /// Interfaces the component imports (without versions), sorted.
    pub imports: Vec<String>,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    pub(crate) pre: ActionPre<HostState>,
    /// Per-plugin capability state (clients, channels) built once from its grants.
    pub(crate) granted: Arc<caps::Prepared>,
    /// What the environment provides: its redaction, applied to everything an action
    /// reports, and its faults (a cert-expiry fault moves this plugin's clock).
    pub(crate) resources: caps::Resources,
}

impl Plugin {
    /// Names of the capabilities this plugin imports and may use (a WASI interface such as
    /// the file system counts only when it is granted: every component imports it).
    pub fn capabilities(&self) -> Vec<&'static str> {
        self.imports
            .iter()
            .filter_map(|i| caps::by_interface(i))
            .filter(|c| caps::import_needs_grant(*c) || self.spec.grants.has(c.name()))
            .map(|c| c.name())
            .fold(Vec::new(), |mut names, name| {
                // A capability may provide more than one interface (fs).
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            })
    }
}

/// Reads a plugin file and checks it against its pin and the size limit.
fn read_pinned(spec: &PluginSpec) -> Result<Vec<u8>, LoadError> {
    let path = spec.path.display().to_string();
    let size = std::fs::metadata(&spec.path)
        .map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?
        .len();
    if size > MAX_PLUGIN_FILE {
        return Err(LoadError::TooLarge {
            path,
            size,
            max: MAX_PLUGIN_FILE,
        });
    }
    let wasm = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let actual = hex::encode(Sha256::digest(&wasm));
    if actual != spec.sha256 {
        return Err(LoadError::DigestMismatch {
            path,
            expected: spec.sha256.clone(),
            actual,
        });
    }
    Ok(wasm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first-party no-op plugin, as `./dev plugins` builds it.
    fn noop_wasm() -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip2/release/noop.wasm");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run ./dev plugins", path.display()))
    }

    /// The no-op plugin written to a new directory (kept alive by the returned guard),
    /// its file and a spec pinning it, with no grants.
    fn noop_in_dir() -> (tempfile::TempDir, PathBuf, PluginSpec) {
        let wasm = noop_wasm();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("noop.wasm");
        std::fs::write(&file, &wasm).unwrap();
        let spec = PluginSpec {
            name: "noop".into(),
            path: file.clone(),
            sha256: hex::encode(Sha256::digest(&wasm)),
            limits: Limits::default(),
            grants: Default::default(),
            signer: None,
        };
        (dir, file, spec)
    }

    #[test]
    fn a_file_swapped_after_validation_never_runs() {
        let (dir, file, spec) = noop_in_dir();
        let cache = crate::engine::cache::CompileCache::open(Some(dir.path().join("cache")));
        let runtime = Runtime::new(cache, 2).unwrap();
        let first = runtime.compile(&spec, false).unwrap();
        assert!(!first.cached);
        // Swapped after validation: not a component at all.
        std::fs::write(&file, b"not what was checked").unwrap();
        // The cache is keyed by the pin: what runs is what the pin names.
        let again = runtime.compile(&spec, false).unwrap();
        assert!(again.cached);
        assert_eq!(again.imports, first.imports);
        // Without a cached entry the loader reads the file, and its pin refuses it.
        let uncached = Runtime::new(crate::engine::cache::CompileCache::disabled(), 2).unwrap();
        match uncached.compile(&spec, false) {
            Err(LoadError::DigestMismatch { .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a file that does not match its pin was compiled"),
        }
    }

    #[test]
    fn a_preloaded_component_is_loaded_without_going_back_to_the_cache() {
        let (dir, file, spec) = noop_in_dir();
        let cache_dir = dir.path().join("cache");
        let warm = Runtime::new(CompileCache::open(Some(cache_dir.clone())), 2).unwrap();
        assert!(!warm.compile(&spec, false).unwrap().cached);
        let runtime = Runtime::new(CompileCache::open(Some(cache_dir.clone())), 2).unwrap();
        // A pin the cache does not hold is left for its load.
        runtime.preload(&[spec.sha256.clone(), "0".repeat(64)]);
        std::fs::remove_dir_all(&cache_dir).unwrap();
        std::fs::remove_file(&file).unwrap();
        // Neither the cache entry nor the plugin file is there any more: the component
        // taken ahead is the one loaded.
        let loaded = runtime.compile(&spec, false).unwrap();
        assert!(loaded.cached);
    }

    #[test]
    fn the_running_kernel_release_is_read() {
        // Any Linux this runs on is at least 3.0 and below 10,000.
        assert!(kernel_at_least(3, 0));
        assert!(!kernel_at_least(10_000, 0));
    }
}
