//! The one shared wasmtime `Engine`, its `Linker`, the epoch ticker and the artifact cache.
//!
//! One engine for every plugin (the Spin pattern): compiled code, the pooling allocator's
//! slots and the epoch counter are shared, so adding a plugin costs its code and nothing
//! else. Calls are synchronous; async callers wrap them in `spawn_blocking`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::ArtifactCache;
use crate::call::CallState;
use crate::capabilities::clock::{BusinessClock, system_clock};
use crate::manifest::Ceilings;
use crate::v0_1_0;

/// Bytes of each pooled linear memory (and table) reset in place rather than returned to
/// the kernel when an instance is torn down.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How the plugin host is set up. `HostConfig::new(dir)` gives the documented defaults.
#[derive(Clone)]
pub struct HostConfig {
    /// The folder of `NAME.wasm` (+ `NAME.toml`) files.
    pub plugin_dir: PathBuf,
    /// Where precompiled artifacts go (`<data dir>/plugin-cache`); `None` compiles in
    /// memory on every start.
    pub cache_dir: Option<PathBuf>,
    /// The business clock (µs since the epoch) plugins read through `clock.now` and WASI.
    pub clock: BusinessClock,
    /// What the operator allows any plugin, whatever its manifest asks. The largest memory
    /// ceiling is also the size of each pooled memory slot.
    pub limits: HostLimits,
    /// Plugin instances that may exist at once (concurrent calls). Calls beyond it get the
    /// default decision with fault kind `host_busy`.
    pub max_instances: u32,
    /// Consecutive faults after which a plugin is switched off.
    pub breaker_threshold: u32,
    /// How long a switched-off plugin stays off.
    pub breaker_cooldown: Duration,
    /// How long a changed file must stay quiet before it is reloaded.
    pub debounce: Duration,
    /// Instances kept made ahead of calls for each plugin that starts slowly (JavaScript,
    /// Python); 0 makes every instance on the request path. They count against
    /// `max_instances`.
    pub warm_instances: usize,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("plugin_dir", &self.plugin_dir)
            .field("cache_dir", &self.cache_dir)
            .field("limits", &self.limits)
            .field("max_instances", &self.max_instances)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("debounce", &self.debounce)
            .field("warm_instances", &self.warm_instances)
            .finish_non_exhaustive()
    }
}

/// What the operator allows every plugin, whatever its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    /// Per-world ceilings on each call's deadline, fuel, memory and output.
    pub ceilings: Ceilings,
    /// Calls one loaded plugin may have running at once. A call beyond it gets the default
    /// decision at once (reason `busy`), so a plugin that spins or hangs holds at most this
    /// many threads and leaves the cores to every other decision.
    pub max_concurrent_calls: u32,
    /// Guest log lines (log writes and stdout/stderr lines) per second, per plugin, that
    /// reach the host's log, in bursts of up to ten seconds' worth; the rest are dropped
    /// and counted. 0 drops every line.
    pub log_lines_per_sec: u32,
}

/// Concurrent calls per plugin unless the operator sets another number.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 16;
/// Guest log lines per second per plugin unless the operator sets another number.
pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 10;

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            ceilings: Ceilings::default(),
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            log_lines_per_sec: DEFAULT_LOG_LINES_PER_SEC,
        }
    }
}

impl HostConfig {
    /// Defaults: no cache, system clock, the default [`HostLimits`] (1 s, 10^10 fuel,
    /// 64 MiB and 1 MiB of output per call; 16 concurrent calls and 10 log lines a second
    /// per plugin), 100 instances, breaker after 5 consecutive faults for 60 s, 150 ms
    /// debounce, 4 warm instances per slow plugin.
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            cache_dir: None,
            clock: system_clock(),
            limits: HostLimits::default(),
            max_instances: 100,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(60),
            debounce: Duration::from_millis(150),
            warm_instances: 4,
        }
    }
}

/// Keeps the engine's epoch at the number of milliseconds since the ticker started, so a
/// deadline of N ticks is N ms of wall time. A thread asked to sleep 1 ms wakes after 1–2 ms
/// (more on a busy machine), so the ticker counts elapsed time rather than wake-ups: counting
/// wake-ups let a 300 ms deadline run for 650 ms while the machine was compiling.
/// Stopped and joined on drop.
#[derive(Debug)]
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                let started = Instant::now();
                let mut ticks: u128 = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    let due = started.elapsed().as_millis();
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Engine, linker, cache and ticker, shared by the registry and the author tools.
pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    pub cache: ArtifactCache,
    pub clock: BusinessClock,
    pub limits: HostLimits,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(config: &HostConfig) -> wasmtime::Result<Self> {
        config
            .limits
            .ceilings
            .validate()
            .map_err(|e| wasmtime::format_err!("plugin limits: {e}"))?;
        let max_instances = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(max_instances)
            // Interpreted guests (JS, Python) are components of a few dozen core
            // instances, memories and tables each.
            .total_core_instances(max_instances * 40)
            .total_memories(max_instances * 4)
            .total_tables(max_instances * 8)
            .max_tables_per_module(4)
            .table_elements(100_000)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20)
            .max_memory_size(config.limits.ceilings.memory_mib.max() as usize * 1024 * 1024);
        // A slot is reused for every call, so how it is reset dominates a small plugin's
        // call: by default each teardown `madvise`s the memory away (a TLB shootdown on
        // every core) and the next call page-faults it back in. Instead the pages a call
        // dirtied are found with the PAGEMAP_SCAN ioctl (Linux 6.7+) and restored in place,
        // up to these sizes; elsewhere the first bytes are reset with memset. Measured:
        // Rust pricing call 30 → 12 µs p50, JavaScript 0.88 → 0.47 ms (BENCHMARKS.md).
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        v0_1_0::add_to_linker(&mut linker)?;

        let cache = ArtifactCache::new(&engine, config.cache_dir.clone())
            .map_err(|e| wasmtime::format_err!("cannot create the plugin cache folder: {e}"))?;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker: {e}"))?;
        Ok(Self {
            engine,
            linker,
            cache,
            clock: config.clock.clone(),
            limits: config.limits.clone(),
            _ticker: ticker,
        })
    }
}

/// Compiling a large component (an interpreter: 12–18 MB of wasm) leaves hundreds of MiB of
/// the compiler's freed allocations in glibc's arenas, counted as the process's resident
/// memory until reused. Handing them back after a compile keeps an idle server's footprint
/// that of what it has loaded.
#[allow(unsafe_code)]
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no live allocation
    // is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
