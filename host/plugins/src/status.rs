//! What callers get back: decisions that say who decided them, and the status of every
//! plugin for the API, the CLI and `/metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cache::CacheStats;
use crate::call::FaultKind;
use crate::model::World;

/// Serde helper: a `SystemTime` as microseconds since the Unix epoch (the host's unit).
pub(crate) mod time_micros {
    use std::time::SystemTime;

    pub fn micros(t: &SystemTime) -> i64 {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        }
    }

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(micros(t))
    }

    pub mod option {
        use std::time::SystemTime;

        pub fn serialize<S: serde::Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&super::micros(t)),
                None => s.serialize_none(),
            }
        }
    }
}

/// A decision and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<T> {
    pub value: T,
    pub decided_by: DecidedBy,
    /// Fuel the plugin burned (0 for a default without a call).
    pub fuel_used: u64,
    /// Wall time of the call: instantiation, the call itself and validation.
    #[serde(rename = "duration_us", with = "crate::stats::duration_micros")]
    pub duration: Duration,
    /// Linear memory the call's instance held at its peak, in bytes.
    pub peak_memory: u64,
}

impl<T> Decision<T> {
    /// Whether a plugin (rather than the built-in default) decided.
    pub fn by_plugin(&self) -> bool {
        matches!(self.decided_by, DecidedBy::Plugin { .. })
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Decision<U> {
        Decision {
            value: f(self.value),
            decided_by: self.decided_by,
            fuel_used: self.fuel_used,
            duration: self.duration,
            peak_memory: self.peak_memory,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecidedBy {
    Plugin {
        name: String,
        /// SHA-256 of the plugin's `.wasm`, hex.
        version: String,
    },
    Default {
        reason: DefaultReason,
    },
}

/// Why the built-in default decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DefaultReason {
    /// No plugin serves this slot.
    NoPlugin,
    /// The caller named a plugin that is not loaded.
    UnknownPlugin { plugin: String },
    /// The caller named a plugin of another world.
    WrongWorld { plugin: String, world: World },
    /// The plugin already had its maximum of concurrent calls running
    /// (`HostLimits::max_concurrent_calls`); answered at once, not queued.
    Busy { plugin: String },
    /// The plugin is switched off after repeated faults.
    Disabled {
        plugin: String,
        #[serde(with = "time_micros")]
        until: SystemTime,
    },
    /// The plugin was called and its answer could not be used.
    Fault {
        plugin: String,
        version: String,
        kind: FaultKind,
        message: String,
    },
}

impl DefaultReason {
    /// A short label, e.g. for a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DefaultReason::NoPlugin => "no_plugin",
            DefaultReason::UnknownPlugin { .. } => "unknown_plugin",
            DefaultReason::WrongWorld { .. } => "wrong_world",
            DefaultReason::Busy { .. } => "busy",
            DefaultReason::Disabled { .. } => "disabled",
            DefaultReason::Fault { kind, .. } => kind.as_str(),
        }
    }

    /// The fault kind, when a call faulted.
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            DefaultReason::Fault { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The state of one plugin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PluginState {
    /// Loaded and serving.
    Active,
    /// The current file failed to load; the previous version keeps serving.
    FailedKeepingPrevious,
    /// The file failed to load and there is no previous version.
    Failed,
    /// Switched off after repeated faults until the given time.
    Disabled {
        #[serde(with = "time_micros")]
        until: SystemTime,
    },
}

/// Everything known about one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Display name (manifest `name`, else the file stem).
    pub name: String,
    /// The file stem in the plugin folder.
    pub file_stem: String,
    /// The serving version's world; `None` when nothing ever loaded.
    pub world: Option<World>,
    /// SHA-256 of the serving `.wasm`, hex.
    pub version: Option<String>,
    /// The first 12 hex digits of `version`.
    pub version_short: Option<String>,
    pub source: PathBuf,
    #[serde(with = "time_micros::option")]
    pub loaded_at: Option<SystemTime>,
    pub state: PluginState,
    /// The latest load error, or the latest fault when loading is fine.
    pub last_error: Option<String>,
    /// When the current file failed to load, if it did.
    #[serde(with = "time_micros::option")]
    pub failed_at: Option<SystemTime>,
    /// Products a pricing plugin is limited to; `None` is every product.
    pub products: Option<Vec<String>>,
    pub calls: u64,
    pub faults: u64,
    pub fault_kinds: BTreeMap<FaultKind, u64>,
    pub consecutive_faults: u32,
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub fuel_last: u64,
    pub fuel_avg: u64,
    /// Guest log lines not written to the host's log: over a call's cap or over the
    /// plugin's rate.
    pub log_lines_dropped: u64,
    /// Of `log_lines_dropped`, the lines over the plugin's rate across calls.
    pub log_lines_rate_limited: u64,
    /// Calls answered by the default at once because the plugin had its maximum of
    /// concurrent calls running.
    pub busy: u64,
    /// Calls of the serving version running now, counting calls whose caller stopped
    /// waiting (a call stuck in a host call holds its place until it ends).
    pub in_flight: u32,
    /// The limits each call runs under: the manifest's, cut to the host's ceilings.
    pub limits: Option<crate::manifest::EffectiveLimits>,
    /// What the serving version's manifest asked beyond the host's ceilings.
    pub warnings: Vec<String>,
    /// Whether the serving version came from the precompiled cache.
    pub from_cache: Option<bool>,
    #[serde(with = "crate::stats::duration_micros")]
    pub compile_time: Duration,
    /// One instantiation at load, start code included.
    #[serde(with = "crate::stats::duration_micros")]
    pub start_time: Duration,
    /// Instances kept made ahead of calls (0: each call makes its own), and how many are
    /// ready now.
    pub warm_instances: usize,
    pub warm_ready: usize,
}

/// Counters for `/metrics`: feed these into a prometheus-client registry.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub plugins: Vec<PluginStatus>,
    pub cache: CacheStats,
    /// Default decisions taken, per world and reason label (`no_plugin`, `disabled`,
    /// a fault kind...).
    pub default_decisions: Vec<DefaultCount>,
    /// Increases on every load, unload or failed load.
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultCount {
    pub world: World,
    pub reason: &'static str,
    pub count: u64,
}
