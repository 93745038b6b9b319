//! The loaded plugins, swapped atomically.
//!
//! Readers take the current [`Snapshot`] with one atomic load (`arc-swap`) and keep their
//! `Arc` to the plugin for the whole call, so a call in flight finishes on the version it
//! started with and the next call sees the new one; no call waits for or fails during a
//! swap. Writers (initial scan, watcher) are serialised by a mutex and build a new
//! snapshot, including the slot indexes, before publishing it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::cache::content_hash;
use crate::call::{self, CallOutcome, CallTarget, Fault, FaultKind};
use crate::capabilities::config::PluginConfig;
use crate::capabilities::log::LogBudget;
use crate::check;
use crate::defaults;
use crate::engine::{HostConfig, Runtime};
use crate::manifest::{EffectiveLimits, Manifest};
use crate::model::{Request, Response, World};
use crate::stats::PluginStats;
use crate::status::{DecidedBy, Decision, DefaultReason};
use crate::warm::{self, Refiller, WarmPool};
use crate::workers::Workers;

/// How long past a call's deadline its caller still waits for the call's own answer: the
/// epoch deadline stops WebAssembly within a tick (1 ms), and the trap, the teardown and
/// the hand-back take a little more. Waiting for them gets the call's real figures (fuel,
/// memory, log); a call that has not answered by then is stuck outside WebAssembly.
fn grace(timeout: Duration) -> Duration {
    Duration::from_millis(5) + (timeout / 10).min(Duration::from_millis(50))
}

/// The calls one loaded version has running, bounded.
#[derive(Debug)]
pub(crate) struct CallSlots {
    max: u32,
    running: AtomicU32,
}

impl CallSlots {
    fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            running: AtomicU32::new(0),
        }
    }

    /// A place for one more call, unless `max` are running.
    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    pub fn in_flight(&self) -> u32 {
        self.running.load(Ordering::Acquire)
    }
}

/// One running call's place; given back when dropped.
struct Slot(Arc<CallSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sending half of a call's reply channel: hands the outcome to the caller, or gives
/// it back when the caller has stopped waiting.
type Reply = Box<dyn FnOnce(Box<CallOutcome>) -> Result<(), Box<CallOutcome>> + Send>;

/// How waiting for a call ended.
enum Waited {
    Answered(Box<CallOutcome>),
    TimedOut,
    /// The worker dropped the reply without answering (a panic: a host bug).
    Lost,
}

/// A call handed to a worker, to be waited for until `wait` has passed.
struct Pending {
    plugin: Arc<LoadedPlugin>,
    state: Arc<AtomicU8>,
    started: Instant,
    wait: Duration,
}

/// What [`Registry::begin`] did.
enum Begun {
    Decided(Decision<Response>),
    Pending(Pending),
}

/// Where a call handed to a worker is: the caller and the worker race to move it out of
/// `QUEUED`, so a call whose caller has given up before it started never runs.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;

/// One loaded plugin version.
#[derive(Debug)]
pub(crate) struct LoadedPlugin {
    /// The file stem: the plugin's identity in the folder.
    pub stem: String,
    /// Display name (manifest `name`, else the stem).
    pub name: Arc<str>,
    pub world: World,
    /// SHA-256 of the `.wasm`, hex.
    pub version: Arc<str>,
    /// SHA-256 of the manifest text, so a config-only change is a reload too.
    pub manifest_hash: Option<String>,
    pub source: PathBuf,
    pub products: Option<Vec<String>>,
    pub limits: EffectiveLimits,
    /// What the manifest asked beyond the host's ceilings.
    pub warnings: Vec<String>,
    /// Calls of this version running now, at most the host's `max_concurrent_calls`.
    pub calls: Arc<CallSlots>,
    pub config: PluginConfig,
    pub pre: crate::v0_1_0::TypedPre,
    pub loaded_at: SystemTime,
    pub compile_time: Duration,
    pub from_cache: bool,
    pub start_time: Duration,
    pub stats: Arc<PluginStats>,
    /// Instances made ahead of calls; capacity 0 for plugins that start fast.
    pub warm: WarmPool,
}

impl LoadedPlugin {
    pub fn target(&self) -> CallTarget<'_> {
        CallTarget {
            name: &self.name,
            version: &self.version,
            pre: &self.pre,
            limits: self.limits,
            config: &self.config,
            log_budget: &self.stats.log_budget,
        }
    }
}

/// The published state: plugins by stem plus the indexes calls resolve through.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    by_name: HashMap<String, Arc<LoadedPlugin>>,
    /// Pricing plugins that list products, by product.
    pricing_by_product: HashMap<String, Arc<LoadedPlugin>>,
    /// First (by name) plugin of each world that serves everything.
    serving_all: BTreeMap<World, Arc<LoadedPlugin>>,
}

impl Snapshot {
    /// The plugin serving `world` for every product, if one does.
    pub fn serving(&self, world: World) -> Option<&Arc<LoadedPlugin>> {
        self.serving_all.get(&world)
    }

    fn new(plugins: BTreeMap<String, Arc<LoadedPlugin>>) -> Self {
        let mut by_name_sorted: Vec<&Arc<LoadedPlugin>> = plugins.values().collect();
        by_name_sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.stem.cmp(&b.stem)));
        let mut snapshot = Snapshot::default();
        for plugin in by_name_sorted {
            snapshot
                .by_name
                .entry(plugin.name.to_string())
                .or_insert_with(|| plugin.clone());
            match (&plugin.products, plugin.world) {
                (Some(products), World::Pricing) => {
                    for product in products {
                        snapshot
                            .pricing_by_product
                            .entry(product.clone())
                            .or_insert_with(|| plugin.clone());
                    }
                }
                _ => {
                    snapshot
                        .serving_all
                        .entry(plugin.world)
                        .or_insert_with(|| plugin.clone());
                }
            }
        }
        snapshot.plugins = plugins;
        snapshot
    }

    /// The plugin serving `request`: for pricing, one listing the product, else one
    /// serving all products; for other worlds, the first by name.
    fn resolve(&self, request: &Request) -> Option<&Arc<LoadedPlugin>> {
        if let Some(product) = request.product_id()
            && let Some(plugin) = self.pricing_by_product.get(product)
        {
            return Some(plugin);
        }
        self.serving_all.get(&request.world())
    }
}

/// A file that failed to load.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub source: PathBuf,
    pub error: String,
    pub at: SystemTime,
}

/// Counts the default decisions taken, by world and reason, for metrics.
pub(crate) type DefaultCounts = BTreeMap<(World, &'static str), u64>;

pub(crate) struct Registry {
    pub runtime: Runtime,
    plugin_dir: PathBuf,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    pub debounce: Duration,
    /// Pool size for plugins that start slowly (see [`crate::warm`]).
    warm_instances: usize,
    refiller: Arc<Refiller>,
    workers: Workers,
    current: ArcSwap<Snapshot>,
    /// Stats per display name, shared by successive versions.
    stats: Mutex<HashMap<String, Arc<PluginStats>>>,
    failures: Mutex<BTreeMap<String, LoadFailure>>,
    defaults: Mutex<DefaultCounts>,
    /// Serialises writers; readers never take it.
    write: Mutex<()>,
    generation: Mutex<u64>,
    changed: Condvar,
    generation_tx: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugin_dir", &self.plugin_dir)
            .field(
                "plugins",
                &self.current.load().plugins.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What a reload did, for the watcher's log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadOutcome {
    Loaded,
    Unchanged,
    Unloaded,
    Failed(String),
    Absent,
}

impl Registry {
    pub fn new(config: &HostConfig) -> wasmtime::Result<Self> {
        let runtime = Runtime::new(config)?;
        let refiller = Refiller::start(runtime.engine.clone(), runtime.clock.clone())
            .map_err(|e| wasmtime::format_err!("cannot start the warm-instance thread: {e}"))?;
        Ok(Self {
            runtime,
            warm_instances: config.warm_instances,
            refiller: Arc::new(refiller),
            workers: Workers::default(),
            plugin_dir: config.plugin_dir.clone(),
            breaker_threshold: config.breaker_threshold,
            breaker_cooldown: config.breaker_cooldown,
            debounce: config.debounce,
            current: ArcSwap::from_pointee(Snapshot::default()),
            stats: Mutex::default(),
            failures: Mutex::default(),
            defaults: Mutex::default(),
            write: Mutex::new(()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            generation_tx: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn failures(&self) -> BTreeMap<String, LoadFailure> {
        lock(&self.failures).clone()
    }

    pub fn default_counts(&self) -> DefaultCounts {
        lock(&self.defaults).clone()
    }

    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Blocks until the generation exceeds `seen` or `timeout` passes; returns the
    /// generation then.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut generation = lock(&self.generation);
        while *generation <= seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            generation = self
                .changed
                .wait_timeout(generation, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *generation
    }

    fn bump(&self) {
        let mut generation = lock(&self.generation);
        *generation += 1;
        let now = *generation;
        drop(generation);
        self.changed.notify_all();
        self.generation_tx.send_replace(now);
    }

    fn stats_for(&self, name: &str) -> Arc<PluginStats> {
        lock(&self.stats)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(PluginStats::new(LogBudget::new(
                    self.runtime.limits.log_lines_per_sec,
                )))
            })
            .clone()
    }

    /// Every `*.wasm` stem in the folder plus every stem loaded or failed before.
    pub fn known_stems(&self) -> Vec<String> {
        let mut stems: Vec<String> = std::fs::read_dir(&self.plugin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| plugin_stem(&entry.path()))
            .collect();
        stems.extend(self.current.load().plugins.keys().cloned());
        stems.extend(lock(&self.failures).keys().cloned());
        stems.sort();
        stems.dedup();
        stems
    }

    /// (Re)loads `stem` from the folder: new or changed files are checked, compiled and
    /// swapped in; a failure keeps the previous version and records the error; a
    /// missing `.wasm` unloads the plugin.
    pub fn reload(&self, stem: &str) -> ReloadOutcome {
        let _writer = lock(&self.write);
        let wasm_path = self.plugin_dir.join(format!("{stem}.wasm"));
        let toml_path = self.plugin_dir.join(format!("{stem}.toml"));
        let bytes = match std::fs::read(&wasm_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let had_failure = lock(&self.failures).remove(stem).is_some();
                let current = self.current.load_full();
                if !current.plugins.contains_key(stem) {
                    if had_failure {
                        self.bump();
                    }
                    return ReloadOutcome::Absent;
                }
                let mut plugins = current.plugins.clone();
                plugins.remove(stem);
                self.current.store(Arc::new(Snapshot::new(plugins)));
                tracing::info!(plugin = stem, "plugin unloaded (file removed)");
                self.bump();
                return ReloadOutcome::Unloaded;
            }
            Err(error) => return self.fail(stem, &wasm_path, format!("cannot read: {error}")),
        };
        let manifest_text = match std::fs::read_to_string(&toml_path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return self.fail(stem, &toml_path, format!("cannot read manifest: {error}"));
            }
        };
        let version = content_hash(&bytes);
        let manifest_hash = manifest_text.as_deref().map(|t| content_hash(t.as_bytes()));
        if let Some(loaded) = self.current.load().plugins.get(stem)
            && *loaded.version == version
            && loaded.manifest_hash == manifest_hash
        {
            if lock(&self.failures).remove(stem).is_some() {
                self.bump();
            }
            return ReloadOutcome::Unchanged;
        }
        let manifest = match manifest_text.as_deref().map(Manifest::parse).transpose() {
            Ok(manifest) => manifest.unwrap_or_default(),
            Err(error) => return self.fail(stem, &toml_path, error.to_string()),
        };
        match self.build(stem, &wasm_path, &bytes, manifest, manifest_hash) {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                let mut plugins = self.current.load().plugins.clone();
                if let Some(clash) = plugins
                    .values()
                    .find(|p| p.stem != stem && p.name == plugin.name)
                {
                    let error = format!(
                        "name {:?} is already used by {}.wasm",
                        &*plugin.name, clash.stem
                    );
                    return self.fail(stem, &wasm_path, error);
                }
                plugin.stats.reset_breaker();
                if !plugin.from_cache {
                    crate::engine::release_freed_memory();
                }
                tracing::info!(
                    plugin = %plugin.name,
                    world = %plugin.world,
                    version = &plugin.version[..12],
                    from_cache = plugin.from_cache,
                    compile_time = ?plugin.compile_time,
                    "plugin loaded"
                );
                for warning in &plugin.warnings {
                    tracing::warn!(
                        plugin = %plugin.name,
                        source = %plugin.source.display(),
                        %warning,
                        "plugin limits cut to the host's ceilings"
                    );
                }
                // The old failure goes before the new version is published: a reader that
                // sees the new version must never see it reported as a failed load.
                lock(&self.failures).remove(stem);
                self.refiller.request(&plugin);
                plugins.insert(stem.to_owned(), plugin);
                self.current.store(Arc::new(Snapshot::new(plugins)));
                self.bump();
                ReloadOutcome::Loaded
            }
            Err(error) => self.fail(stem, &wasm_path, error),
        }
    }

    fn fail(&self, stem: &str, source: &Path, error: String) -> ReloadOutcome {
        let keeping = self.current.load().plugins.contains_key(stem);
        tracing::warn!(
            plugin = stem,
            source = %source.display(),
            %error,
            keeping_previous = keeping,
            "plugin failed to load"
        );
        lock(&self.failures).insert(
            stem.to_owned(),
            LoadFailure {
                source: source.to_owned(),
                error: error.clone(),
                at: SystemTime::now(),
            },
        );
        self.bump();
        ReloadOutcome::Failed(error)
    }

    fn build(
        &self,
        stem: &str,
        source: &Path,
        bytes: &[u8],
        manifest: Manifest,
        manifest_hash: Option<String>,
    ) -> Result<LoadedPlugin, String> {
        let name = manifest.name.clone().unwrap_or_else(|| stem.to_owned());
        let config = PluginConfig::new(manifest.config);
        let checked = check::check(
            &self.runtime,
            bytes,
            manifest.world,
            &name,
            &manifest.limits,
            &config,
        )
        .map_err(|e| e.to_string())?;
        if manifest.products.is_some() && checked.world != World::Pricing {
            return Err(format!(
                "manifest: `products` only applies to pricing plugins; this is a {} plugin",
                checked.world
            ));
        }
        let warm = if checked.report.start_time >= warm::SLOW_START {
            self.warm_instances
        } else {
            0
        };
        Ok(LoadedPlugin {
            warm: WarmPool::new(warm),
            stem: stem.to_owned(),
            stats: self.stats_for(&name),
            name: name.into(),
            world: checked.world,
            version: checked.report.version.into(),
            manifest_hash,
            source: source.to_owned(),
            products: manifest.products,
            limits: checked.report.limits,
            warnings: checked.report.warnings.clone(),
            calls: Arc::new(CallSlots::new(self.runtime.limits.max_concurrent_calls)),
            config,
            pre: checked.pre,
            loaded_at: SystemTime::now(),
            compile_time: checked.report.compile_time,
            start_time: checked.report.start_time,
            from_cache: checked.report.from_cache,
        })
    }

    /// Resolves, admits and hands the call to a worker, or decides at once (no plugin,
    /// switched off, busy). `reply` carries the call's outcome back to the caller.
    fn begin(&self, request: &Request, plugin: Option<&str>, reply: Reply) -> Begun {
        let snapshot = self.current.load();
        let chosen = match plugin {
            Some(name) => match snapshot.by_name.get(name) {
                Some(p) => Some(p.clone()),
                None => {
                    return Begun::Decided(self.default(
                        request,
                        DefaultReason::UnknownPlugin {
                            plugin: name.to_owned(),
                        },
                    ));
                }
            },
            None => snapshot.resolve(request).cloned(),
        };
        // Release the snapshot guard: the call holds only its own plugin's Arc.
        drop(snapshot);
        let Some(plugin) = chosen else {
            return Begun::Decided(self.default(request, DefaultReason::NoPlugin));
        };
        if plugin.world != request.world() {
            return Begun::Decided(self.default(
                request,
                DefaultReason::WrongWorld {
                    plugin: plugin.name.to_string(),
                    world: plugin.world,
                },
            ));
        }
        let probe = match plugin.stats.admit(Instant::now()) {
            Ok(probe) => probe,
            Err(until) => {
                return Begun::Decided(self.default(
                    request,
                    DefaultReason::Disabled {
                        plugin: plugin.name.to_string(),
                        until,
                    },
                ));
            }
        };
        let Some(slot) = plugin.calls.try_acquire() else {
            if probe {
                plugin.stats.release_probe();
            }
            plugin.stats.record_busy();
            return Begun::Decided(self.default(
                request,
                DefaultReason::Busy {
                    plugin: plugin.name.to_string(),
                },
            ));
        };
        let started = Instant::now();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job = {
            let (plugin, state) = (plugin.clone(), state.clone());
            let (engine, clock) = (self.runtime.engine.clone(), self.runtime.clock.clone());
            let refiller = self.refiller.clone();
            let request = request.clone();
            move || {
                if state
                    .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // The caller gave up before the call started.
                    return;
                }
                let warm = plugin.warm.take();
                let mut outcome = call::execute(&engine, &clock, plugin.target(), &request, warm);
                if let Some(spent) = outcome.spent.take() {
                    refiller.dispose(&plugin, spent);
                }
                // Asked after the call, not during it: making an instance maps memory,
                // and the call's own page faults would wait on the same process-wide
                // lock.
                refiller.request(&plugin);
                drop(slot);
                if let Err(late) = reply(Box::new(outcome)) {
                    // The caller stopped waiting and counted the fault; what the call
                    // burnt and logged still counts.
                    plugin.stats.record_late(
                        late.fuel_used,
                        late.log_dropped,
                        late.log_rate_limited,
                    );
                }
            }
        };
        if let Err(error) = self.workers.run(Box::new(job)) {
            let outcome = CallOutcome::failed(
                Fault::new(
                    FaultKind::HostBusy,
                    format!("cannot start a thread for the call: {error}"),
                ),
                started.elapsed(),
            );
            return Begun::Decided(self.finish(&plugin, request, outcome));
        }
        let wait = plugin.limits.timeout + grace(plugin.limits.timeout);
        Begun::Pending(Pending {
            plugin,
            state,
            started,
            wait,
        })
    }

    /// Answers `request` with the plugin serving it (or the one named), falling back to
    /// the built-in default on any fault; returns by the plugin's deadline (plus a few
    /// milliseconds) whatever the call does.
    pub fn decide(&self, request: &Request, plugin: Option<&str>) -> Decision<Response> {
        let (tx, rx) = mpsc::sync_channel::<Box<CallOutcome>>(1);
        let reply: Reply = Box::new(move |outcome| tx.send(outcome).map_err(|e| e.0));
        match self.begin(request, plugin, reply) {
            Begun::Decided(decision) => decision,
            Begun::Pending(pending) => {
                let waited = match rx.recv_timeout(pending.wait) {
                    Ok(outcome) => Waited::Answered(outcome),
                    Err(RecvTimeoutError::Timeout) => Waited::TimedOut,
                    Err(RecvTimeoutError::Disconnected) => Waited::Lost,
                };
                // Dropped before the call is marked abandoned: from here on, an answer
                // that comes is late and counted as such.
                drop(rx);
                self.end(pending, request, waited)
            }
        }
    }

    /// [`Registry::decide`] for async callers: waits for the worker without holding a
    /// thread, so a decision costs one hand-off, as `spawn_blocking` did.
    pub async fn decide_async(
        &self,
        request: &Request,
        plugin: Option<&str>,
    ) -> Decision<Response> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Box<CallOutcome>>();
        let reply: Reply = Box::new(move |outcome| tx.send(outcome));
        match self.begin(request, plugin, reply) {
            Begun::Decided(decision) => decision,
            Begun::Pending(pending) => {
                let waited = match tokio::time::timeout(pending.wait, rx).await {
                    Ok(Ok(outcome)) => Waited::Answered(outcome),
                    Ok(Err(_)) => Waited::Lost,
                    Err(_) => Waited::TimedOut,
                };
                self.end(pending, request, waited)
            }
        }
    }

    /// The decision once waiting for a call has ended.
    fn end(&self, pending: Pending, request: &Request, waited: Waited) -> Decision<Response> {
        let Pending {
            plugin,
            state,
            started,
            ..
        } = pending;
        let outcome = match waited {
            Waited::Answered(outcome) => *outcome,
            Waited::TimedOut => {
                let never_started = state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                let fault = if never_started {
                    // The host was too busy to start the call in time: not the plugin's
                    // doing, so it leaves the breaker alone.
                    Fault::new(
                        FaultKind::HostBusy,
                        format!(
                            "the call did not start within its {} ms deadline",
                            plugin.limits.timeout.as_millis()
                        ),
                    )
                } else {
                    Fault::new(
                        FaultKind::Timeout,
                        format!(
                            "no answer within the {} ms deadline; stopped waiting (the call is blocked outside WebAssembly, e.g. in a host call, where the deadline cannot stop it)",
                            plugin.limits.timeout.as_millis()
                        ),
                    )
                };
                CallOutcome::failed(fault, started.elapsed())
            }
            Waited::Lost => CallOutcome::failed(
                Fault::new(
                    FaultKind::HostBusy,
                    "the call's thread stopped without an answer (a host bug)",
                ),
                started.elapsed(),
            ),
        };
        self.finish(&plugin, request, outcome)
    }

    fn finish(
        &self,
        plugin: &LoadedPlugin,
        request: &Request,
        outcome: CallOutcome,
    ) -> Decision<Response> {
        let CallOutcome {
            result,
            fuel_used,
            duration,
            peak_memory,
            log_dropped,
            log_rate_limited,
            ..
        } = outcome;
        let fault = result.as_ref().err().map(|f| (f.kind, f.message.as_str()));
        let opened = plugin.stats.record(
            fault,
            duration,
            fuel_used,
            log_dropped,
            log_rate_limited,
            self.breaker_threshold,
            self.breaker_cooldown,
        );
        if opened {
            tracing::warn!(
                plugin = %plugin.name,
                cooldown = ?self.breaker_cooldown,
                "plugin switched off after repeated faults"
            );
        }
        match result {
            Ok(value) => Decision {
                value,
                decided_by: DecidedBy::Plugin {
                    name: plugin.name.to_string(),
                    version: plugin.version.to_string(),
                },
                fuel_used,
                duration,
                peak_memory,
            },
            Err(Fault { kind, message }) => {
                tracing::warn!(
                    plugin = %plugin.name,
                    version = &plugin.version[..12],
                    function = request.function(),
                    fault = %kind,
                    %message,
                    "plugin fault; using the default decision"
                );
                let mut decision = self.default(
                    request,
                    DefaultReason::Fault {
                        plugin: plugin.name.to_string(),
                        version: plugin.version.to_string(),
                        kind,
                        message,
                    },
                );
                decision.fuel_used = fuel_used;
                decision.duration = duration;
                decision.peak_memory = peak_memory;
                decision
            }
        }
    }

    fn default(&self, request: &Request, reason: DefaultReason) -> Decision<Response> {
        let started = Instant::now();
        *lock(&self.defaults)
            .entry((request.world(), reason.as_str()))
            .or_default() += 1;
        let value = defaults::response(request, (self.runtime.clock)());
        Decision {
            value,
            decided_by: DecidedBy::Default { reason },
            fuel_used: 0,
            duration: started.elapsed(),
            peak_memory: 0,
        }
    }
}

/// Runs one call outside the registry (the author tool `call_once`).
pub(crate) fn execute_once(
    runtime: &Runtime,
    name: &Arc<str>,
    version: &Arc<str>,
    pre: &crate::v0_1_0::TypedPre,
    limits: EffectiveLimits,
    config: &PluginConfig,
    request: &Request,
) -> CallOutcome {
    // The author asked for this one call and wants every line it logs.
    let log_budget = Arc::new(LogBudget::unlimited());
    call::execute(
        &runtime.engine,
        &runtime.clock,
        CallTarget {
            name,
            version,
            pre,
            limits,
            config,
            log_budget: &log_budget,
        },
        request,
        None,
    )
}

/// `dir/NAME.wasm` or `dir/NAME.toml` → `NAME`; anything else (temp files, dot files) → None.
pub(crate) fn plugin_stem(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.is_empty() || stem.starts_with('.') {
        return None;
    }
    Some(stem.to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data are counters and maps that stay consistent between statements.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
