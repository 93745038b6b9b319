//! The plugin runtime: every business decision (pricing, segmentation, personalization,
//! campaign triggers) can be handed to a sandboxed WebAssembly component, and the host
//! falls back to a built-in default whenever a plugin is missing, faulty or too slow.
//!
//! Layout:
//!
//! - [`model`]: the values exchanged with plugins (serde, snake_case), independent of
//!   any WIT version.
//! - `v0_1_0`: bindings for `hephaestus:plugins@0.1.0`, its host imports and conversions;
//!   one module per released WIT version.
//! - [`capabilities`]: what a plugin is granted (log, business clock, config, captured
//!   stdio), each a small unit with its own tests.
//! - `engine`: the single wasmtime `Engine` (component model, pooling allocator, epoch
//!   interruption + fuel), its linker and the 1 ms epoch ticker.
//! - `cache`: precompiled artifacts keyed by content hash and engine settings.
//! - `check`: is a file a plugin, of which world, and if not, why (in plain words).
//! - `call`: one call in a fresh store, bounded by fuel, deadline, memory and output; faults.
//! - `workers`: the threads calls run on, so a caller stops waiting at the deadline
//!   whatever the call does.
//! - `validate`: the WIT's documented rules for each answer, and the input cap.
//! - `defaults`: the built-in decisions, including the Rust segmentation rules.
//! - `registry`: the loaded plugins behind an `ArcSwap`, slot resolution, breaker.
//! - `watcher`: hot reload with per-file debounce.
//! - `stats`, `status`: counters, latency histogram, circuit breaker, status reports.
//! - `tools`: `check` and `call_once` for plugin authors (the CLI wraps them).
//!
//! Calls are synchronous and take tens of microseconds (Rust) to about a millisecond
//! (Python): call them from `tokio::task::spawn_blocking` or `block_in_place`. A decision
//! returns within its plugin's deadline whatever the plugin does: the call runs on a
//! worker thread and the caller stops waiting at the deadline.

mod cache;
mod call;
pub mod capabilities;
mod check;
mod defaults;
mod engine;
mod manifest;
pub mod model;
mod registry;
mod stats;
mod status;
mod tools;
mod v0_1_0;
mod validate;
mod warm;
mod watcher;
mod workers;

use std::sync::Arc;
use std::time::Duration;

pub use cache::{CacheStats, content_hash};
pub use call::{Fault, FaultKind, MAX_INPUT_BYTES};
pub use capabilities::clock::{BusinessClock, system_clock};
pub use capabilities::log::{LogLevel, LogLine, LogSource};
pub use check::{CheckError, CheckReport};
pub use defaults::{HIGH_VALUE_LTV_USD_MINOR, segments as default_segments};
pub use engine::{DEFAULT_LOG_LINES_PER_SEC, DEFAULT_MAX_CONCURRENT_CALLS, HostConfig, HostLimits};
pub use manifest::{
    Ceilings, DEFAULT_FUEL, DEFAULT_MAX_FUEL, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_TIMEOUT_MS,
    DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT, EffectiveLimits, Limits, MIN_OUTPUT_BYTES, Manifest,
    ManifestError, PerWorld,
};
pub use model::{
    Action, CustomerProfile, DomainEvent, EventRequest, Money, Personalization, PersonalizeRequest,
    Quote, QuoteRequest, RecommendRequest, Recommendation, Request, Response, SegmentRequest,
    World,
};
pub use status::{
    DecidedBy, Decision, DefaultCount, DefaultReason, MetricsSnapshot, PluginState, PluginStatus,
};
pub use tools::{CallReport, ToolError};
pub use validate::is_segment_tag;
pub use warm::MAX_DISPOSING;
pub use watcher::PluginWatcher;

use registry::{Registry, ReloadOutcome};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot watch the plugin folder {dir}: {error}")]
    Watch { dir: String, error: String },
}

/// The outcome of loading one plugin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadResult {
    /// A new version is serving.
    Loaded,
    /// The files are the version already serving.
    Unchanged,
    /// The `.wasm` is gone; the plugin was unloaded.
    Unloaded,
    /// The file failed to load (the previous version, if any, keeps serving).
    Failed(String),
    /// No such plugin file.
    Absent,
}

/// A request a plugin can decide, and how to read its answer. Implemented for the
/// request types of [`model`]; sealed.
pub trait Decide: sealed::Sealed {
    /// What the decision is.
    type Output;
    #[doc(hidden)]
    fn to_request(&self) -> Request;
    #[doc(hidden)]
    fn output(&self, response: Response, now: model::Timestamp) -> Self::Output;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! decide {
    ($request:ty, $output:ty, $variant:ident, |$r:ident, $now:ident| $default:expr) => {
        impl sealed::Sealed for $request {}
        impl Decide for $request {
            type Output = $output;
            fn to_request(&self) -> Request {
                Request::$variant(self.clone())
            }
            fn output(&self, response: Response, $now: model::Timestamp) -> $output {
                match response {
                    Response::$variant(value) => value,
                    // The registry validates that an answer matches its request, so this
                    // arm is a host bug; answer with the default rather than panic.
                    _ => {
                        let $r = self;
                        $default
                    }
                }
            }
        }
    };
}

decide!(QuoteRequest, Quote, Quote, |r, _now| defaults::quote(r));
decide!(RecommendRequest, Recommendation, Recommend, |r, _now| {
    defaults::recommendation(r)
});
decide!(SegmentRequest, Vec<String>, Segment, |r, now| {
    defaults::segments(&r.customer, now, r.high_value_threshold.as_ref())
});
decide!(
    PersonalizeRequest,
    Personalization,
    Personalize,
    |_r, _now| Personalization::default()
);
decide!(EventRequest, Vec<Action>, OnEvent, |_r, _now| Vec::new());

/// The plugin host: one engine, the registry of loaded plugins, and the author tools.
/// Cheap to clone; every clone shares the same plugins.
#[derive(Debug, Clone)]
pub struct PluginHost {
    registry: Arc<Registry>,
}

impl PluginHost {
    /// Sets up the engine (and the cache folder, if configured). Loads nothing yet: call
    /// [`PluginHost::load_all`] and, for hot reload, [`PluginHost::watch`].
    pub fn new(config: HostConfig) -> Result<Self, HostError> {
        let registry = Registry::new(&config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        Ok(Self {
            registry: Arc::new(registry),
        })
    }

    /// Loads every plugin in the folder (and unloads plugins whose file is gone).
    pub fn load_all(&self) -> Vec<(String, LoadResult)> {
        self.registry
            .known_stems()
            .into_iter()
            .map(|stem| {
                let result = self.reload(&stem);
                (stem, result)
            })
            .collect()
    }

    /// (Re)loads the plugin whose files are `stem.wasm` / `stem.toml`.
    pub fn reload(&self, stem: &str) -> LoadResult {
        match self.registry.reload(stem) {
            ReloadOutcome::Loaded => LoadResult::Loaded,
            ReloadOutcome::Unchanged => LoadResult::Unchanged,
            ReloadOutcome::Unloaded => LoadResult::Unloaded,
            ReloadOutcome::Failed(e) => LoadResult::Failed(e),
            ReloadOutcome::Absent => LoadResult::Absent,
        }
    }

    /// Watches the plugin folder and reloads changed plugins (after `HostConfig::debounce`
    /// of quiet) until the returned watcher is dropped.
    pub fn watch(&self) -> Result<PluginWatcher, HostError> {
        watcher::start(&self.registry, self.registry.debounce).map_err(|e| HostError::Watch {
            dir: self.registry.plugin_dir().display().to_string(),
            error: e.to_string(),
        })
    }

    /// Decides `request` with the plugin serving its slot, or the built-in default.
    pub fn decide<R: Decide>(&self, request: &R) -> Decision<R::Output> {
        let now = (self.registry.runtime.clock)();
        self.registry
            .decide(&request.to_request(), None)
            .map(|response| request.output(response, now))
    }

    /// Decides `request` with the plugin named `plugin` (experiments pick between
    /// competing plugins); the default if it is not loaded or not of the right world.
    pub fn decide_with<R: Decide>(&self, plugin: &str, request: &R) -> Decision<R::Output> {
        let now = (self.registry.runtime.clock)();
        self.registry
            .decide(&request.to_request(), Some(plugin))
            .map(|response| request.output(response, now))
    }

    /// [`PluginHost::decide`] for async callers: the call runs on a plugin worker thread
    /// and this waits for it (up to the deadline) without holding a thread, one hand-off
    /// in all, where `spawn_blocking(|| host.decide(..))` makes two.
    pub async fn decide_async<R: Decide + Sync>(&self, request: &R) -> Decision<R::Output> {
        let now = (self.registry.runtime.clock)();
        self.registry
            .decide_async(&request.to_request(), None)
            .await
            .map(|response| request.output(response, now))
    }

    /// The untyped form of [`PluginHost::decide`] / [`PluginHost::decide_with`].
    pub fn decide_request(&self, request: &Request, plugin: Option<&str>) -> Decision<Response> {
        self.registry.decide(request, plugin)
    }

    /// Names what serves `world` for every product: the plugin's content hash and its
    /// manifest's (a config change alters decisions as much as new code does), or `None`
    /// when the built-in default does. Lets derived data (stored segments) be recomputed
    /// when what decided it is replaced.
    pub fn serving(&self, world: World) -> Option<String> {
        self.registry.snapshot().serving(world).map(|p| {
            format!(
                "{}:{}",
                p.version,
                p.manifest_hash.as_deref().unwrap_or("no-manifest")
            )
        })
    }

    /// The status of every plugin, loaded or failed, sorted by file stem.
    pub fn list(&self) -> Vec<PluginStatus> {
        status_list(&self.registry)
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            plugins: self.list(),
            cache: self.cache_stats(),
            default_decisions: self
                .registry
                .default_counts()
                .into_iter()
                .map(|((world, reason), count)| DefaultCount {
                    world,
                    reason,
                    count,
                })
                .collect(),
            generation: self.registry.generation(),
        }
    }

    /// Precompiled-cache hits and compiles since start.
    pub fn cache_stats(&self) -> CacheStats {
        self.registry.runtime.cache.stats()
    }

    /// Increases on every load, unload or failed load.
    pub fn generation(&self) -> u64 {
        self.registry.generation()
    }

    /// Notified on every generation change (for async waiters, e.g. an SSE status feed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry.subscribe()
    }

    /// Blocks until the generation exceeds `seen` or `timeout` passes; returns the
    /// generation then.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        self.registry.wait_for_change(seen, timeout)
    }

    /// Says which world `bytes` satisfies, or exactly why it is not a plugin.
    pub fn check(&self, bytes: &[u8], manifest: &Manifest) -> Result<CheckReport, CheckError> {
        tools::check(&self.registry.runtime, bytes, manifest)
    }

    /// Calls the component in `bytes` once with `input` (a [`Request`] as JSON), under the
    /// same limits, validation and capture as a real call.
    pub fn call_once(
        &self,
        bytes: &[u8],
        world: Option<World>,
        input: serde_json::Value,
        manifest: &Manifest,
    ) -> Result<CallReport, ToolError> {
        tools::call_once(&self.registry.runtime, bytes, world, input, manifest)
    }
}

fn status_list(registry: &Registry) -> Vec<PluginStatus> {
    let snapshot = registry.snapshot();
    let failures = registry.failures();
    let mut stems: Vec<&String> = snapshot.plugins.keys().chain(failures.keys()).collect();
    stems.sort();
    stems.dedup();
    stems
        .into_iter()
        .map(|stem| {
            let plugin = snapshot.plugins.get(stem);
            let failure = failures.get(stem);
            let stats = plugin.map(|p| p.stats.snapshot()).unwrap_or_default();
            let state = match (plugin, failure) {
                (Some(_), Some(_)) => PluginState::FailedKeepingPrevious,
                (None, _) => PluginState::Failed,
                (Some(_), None) => match stats.disabled_until {
                    Some((until, wall)) if until > std::time::Instant::now() => {
                        PluginState::Disabled { until: wall }
                    }
                    _ => PluginState::Active,
                },
            };
            let source = plugin
                .map(|p| p.source.clone())
                .or_else(|| failure.map(|f| f.source.clone()))
                .unwrap_or_default();
            PluginStatus {
                name: plugin.map_or_else(|| stem.clone(), |p| p.name.to_string()),
                file_stem: stem.clone(),
                world: plugin.map(|p| p.world),
                version: plugin.map(|p| p.version.to_string()),
                version_short: plugin.map(|p| p.version[..12].to_owned()),
                source,
                loaded_at: plugin.map(|p| p.loaded_at),
                state,
                last_error: failure
                    .map(|f| f.error.clone())
                    .or_else(|| stats.last_fault.clone()),
                failed_at: failure.map(|f| f.at),
                products: plugin.and_then(|p| p.products.clone()),
                calls: stats.calls,
                faults: stats.faults,
                fault_kinds: stats.fault_kinds.clone(),
                consecutive_faults: stats.consecutive_faults,
                latency_p50_us: stats.latency.quantile(0.5),
                latency_p99_us: stats.latency.quantile(0.99),
                fuel_last: stats.fuel_last,
                fuel_avg: stats.fuel_total.checked_div(stats.calls).unwrap_or(0),
                log_lines_dropped: stats.log_lines_dropped,
                log_lines_rate_limited: stats.log_lines_rate_limited,
                busy: stats.busy,
                in_flight: plugin.map_or(0, |p| p.calls.in_flight()),
                limits: plugin.map(|p| p.limits),
                warnings: plugin.map(|p| p.warnings.clone()).unwrap_or_default(),
                from_cache: plugin.map(|p| p.from_cache),
                compile_time: plugin.map(|p| p.compile_time).unwrap_or_default(),
                start_time: plugin.map(|p| p.start_time).unwrap_or_default(),
                warm_instances: plugin.map_or(0, |p| p.warm.capacity()),
                warm_ready: plugin.map_or(0, |p| p.warm.ready()),
            }
        })
        .collect()
}
