//! The WebAssembly engine: one wasmtime `Engine` per process with the pooling
//! allocator and epoch deadlines, a compile cache, and loading of plugins into
//! ready-to-instantiate [`Plugin`]s.

pub mod cache;
pub mod imports;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::ActionPre;
use crate::caps::{self, HostState};
use crate::manifest::MAX_PLUGIN_FILE;
use crate::manifest::{Limits, PluginSpec};
pub use cache::CompileCache;
pub use imports::ImportProblem;

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
    #[error("plugin `{plugin}` {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Imports {
        plugin: String,
        problems: Vec<ImportProblem>,
    },
    #[error("plugin `{plugin}` cannot be linked: {message}")]
    Link { plugin: String, message: String },
    #[error("plugin `{plugin}`: {message}")]
    Grant { plugin: String, message: String },
}

/// The process-wide engine and the linker every plugin is instantiated with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    ticking: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine. `max_instances` bounds how many actions can run at once.
    pub fn new(cache: CompileCache, max_instances: u32) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * 4)
            .total_memories(max_instances)
            .total_tables(max_instances * 4)
            .total_stacks(max_instances)
            .max_memory_size(Limits::MAX_MEMORY as usize)
            // Reset recycled slots with memset rather than madvise for the part of memory
            // every action touches: a plugin's stack comes first in its memory (256 KiB as
            // runcap builds them), then its data and the start of its heap. Without this
            // each action pays page faults (about 15 µs of a 25 µs action); with it, none.
            // Plugins built with Rust's default 1 MiB stack still work, with those faults.
            .async_stack_keep_resident(64 << 10)
            .linear_memory_keep_resident(768 << 10)
            .table_keep_resident(64 << 10);
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
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        caps::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link capabilities: {e}"))?;

        let ticking = Arc::new(AtomicBool::new(true));
        let weak = engine.weak();
        let flag = ticking.clone();
        std::thread::Builder::new()
            .name("runcap-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            ticking,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads the plugin file, checks it against its pin, compiles it (or takes it from
    /// the cache), checks its imports against its grants and prepares instantiation.
    pub fn load(&self, spec: &PluginSpec, shared: &caps::Shared) -> Result<Plugin, LoadError> {
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
        let (component, cached) =
            self.cache
                .load(&self.engine, &actual, &wasm)
                .map_err(|e| LoadError::Compile {
                    path: path.clone(),
                    message: format!("{e:#}"),
                })?;
        let imports = imports::imported_interfaces(&self.engine, &component);
        let problems = imports::check(&spec.name, &imports, &spec.grants);
        if !problems.is_empty() {
            return Err(LoadError::Imports {
                plugin: spec.name.clone(),
                problems,
            });
        }
        self.prepare(spec, shared, component, actual, imports, cached)
    }

    fn prepare(
        &self,
        spec: &PluginSpec,
        shared: &caps::Shared,
        component: Component,
        sha256: String,
        imports: Vec<String>,
        cached: bool,
    ) -> Result<Plugin, LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: spec.name.clone(),
            message: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = ActionPre::new(pre).map_err(link_err)?;
        let granted =
            caps::Prepared::new(&spec.grants, shared).map_err(|message| LoadError::Grant {
                plugin: spec.name.clone(),
                message,
            })?;
        Ok(Plugin {
            spec: spec.clone(),
            sha256,
            imports,
            from_cache: cached,
            pre,
            granted,
            redactor: shared.redactor.clone(),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

/// A verified, compiled plugin, ready to instantiate once per action.
pub struct Plugin {
    pub spec: PluginSpec,
    pub sha256: String,
    /// Interfaces the component imports (without versions), sorted.
    pub imports: Vec<String>,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    pub(crate) pre: ActionPre<HostState>,
    /// Per-plugin capability state (clients, channels) built once from its grants.
    pub(crate) granted: caps::Prepared,
    /// The environment's redaction, applied to everything an action reports.
    pub(crate) redactor: Arc<runcap_redact::Redactor>,
}

impl Plugin {
    /// Names of the capabilities this plugin imports and may use (a WASI interface such as
    /// the file system counts only when it is granted: every component imports it).
    pub fn capabilities(&self) -> Vec<&'static str> {
        self.imports
            .iter()
            .filter_map(|i| imports::capability_of(i))
            .filter(|c| c.import_needs_grant() || (c.granted)(&self.spec.grants))
            .map(|c| c.name)
            .collect()
    }
}
