//! Per-plugin counters, a latency histogram and the circuit breaker.
//!
//! Kept per plugin *name* so counts survive a reload; a new version resets the breaker
//! (its author presumably fixed something).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::call::FaultKind;
use crate::capabilities::log::LogBudget;

/// Serde helper: a `Duration` as whole microseconds.
pub(crate) mod duration_micros {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// Log-scale latency buckets: four per power of two from 1 µs, so any quantile is
/// reported within ~19% of the truth, up to ~2^28 µs (4.5 min), in under 1 KiB per plugin.
const SUB_BUCKETS: u32 = 4;
const BUCKETS: usize = 112;

#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: [u64; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros <= 1 {
            return 0;
        }
        let log2 = 63 - micros.leading_zeros();
        // The two bits below the leading one pick the quarter-octave.
        let frac = if log2 >= 2 {
            ((micros >> (log2 - 2)) & 0b11) as u32
        } else {
            ((micros << (2 - log2)) & 0b11) as u32
        };
        ((log2 * SUB_BUCKETS + frac) as usize).min(BUCKETS - 1)
    }

    /// The upper bound of a bucket, in µs.
    fn upper(bucket: usize) -> u64 {
        let log2 = bucket as u32 / SUB_BUCKETS;
        let frac = u64::from(bucket as u32 % SUB_BUCKETS);
        let base = 1u64 << log2;
        base + base * (frac + 1) / u64::from(SUB_BUCKETS)
    }

    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0–1) in µs, `None` before the first sample.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        Some(Self::upper(BUCKETS - 1))
    }
}

/// The breaker and counters of one plugin name, and its allowance of host log lines.
#[derive(Debug)]
pub(crate) struct PluginStats {
    inner: Mutex<Inner>,
    pub log_budget: Arc<LogBudget>,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self::new(LogBudget::unlimited())
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Inner {
    pub calls: u64,
    pub faults: u64,
    pub fault_kinds: BTreeMap<FaultKind, u64>,
    pub consecutive_faults: u32,
    /// Set while the breaker is open.
    pub disabled_until: Option<(Instant, SystemTime)>,
    /// Set once a cool-down has passed: the next fault re-opens the breaker at once
    /// (half-open), a success closes it.
    pub half_open: bool,
    /// A half-open breaker's one trial call is running: others get the default meanwhile,
    /// so a plugin that still hangs costs one call per cool-down, not one per request.
    pub probing: bool,
    pub last_fault: Option<String>,
    pub latency: Histogram,
    pub fuel_last: u64,
    pub fuel_total: u64,
    pub log_lines_dropped: u64,
    /// Of `log_lines_dropped`, the lines over the plugin's rate across calls.
    pub log_lines_rate_limited: u64,
    /// Calls answered by the default at once because the plugin had its maximum of
    /// concurrent calls running.
    pub busy: u64,
}

impl PluginStats {
    pub fn new(log_budget: LogBudget) -> Self {
        Self {
            inner: Mutex::default(),
            log_budget: Arc::new(log_budget),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay meaningful even if a holder panicked mid-update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(until)` while the breaker is open; `Ok(true)` for the one trial call after a
    /// cool-down.
    pub fn admit(&self, now: Instant) -> Result<bool, SystemTime> {
        let mut s = self.lock();
        match s.disabled_until {
            Some((until, wall)) if now < until => Err(wall),
            Some((_, wall)) => {
                if s.probing {
                    return Err(wall);
                }
                s.probing = true;
                s.half_open = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What a call burnt and logged after its caller stopped waiting (and counted it).
    pub fn record_late(&self, fuel: u64, log_dropped: u32, log_rate_limited: u32) {
        let mut s = self.lock();
        s.fuel_last = fuel;
        s.fuel_total = s.fuel_total.saturating_add(fuel);
        s.log_lines_dropped += u64::from(log_dropped);
        s.log_lines_rate_limited += u64::from(log_rate_limited);
    }

    /// Counts a call refused because the plugin had its maximum of calls running.
    pub fn record_busy(&self) {
        self.lock().busy += 1;
    }

    /// A call was admitted but never made (refused as busy): a trial call it held is
    /// given back.
    pub fn release_probe(&self) {
        self.lock().probing = false;
    }

    /// Records one call. Faults that are not the plugin's (host busy, oversized input)
    /// count as calls but leave the breaker alone. Returns true when this call opened the
    /// breaker.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        fault: Option<(FaultKind, &str)>,
        duration: Duration,
        fuel: u64,
        log_dropped: u32,
        log_rate_limited: u32,
        threshold: u32,
        cooldown: Duration,
    ) -> bool {
        let mut s = self.lock();
        s.calls += 1;
        s.latency.record(duration);
        s.fuel_last = fuel;
        s.fuel_total = s.fuel_total.saturating_add(fuel);
        s.log_lines_dropped += u64::from(log_dropped);
        s.log_lines_rate_limited += u64::from(log_rate_limited);
        let probe = std::mem::replace(&mut s.probing, false);
        match fault {
            None => {
                s.consecutive_faults = 0;
                s.half_open = false;
                if probe {
                    s.disabled_until = None;
                }
                false
            }
            Some((kind, _)) if !kind.is_plugin_fault() => {
                if probe {
                    // Not the plugin's doing: the trial is still owed.
                    s.disabled_until = s
                        .disabled_until
                        .map(|_| (Instant::now(), SystemTime::now()));
                }
                false
            }
            Some((kind, message)) => {
                s.faults += 1;
                *s.fault_kinds.entry(kind).or_default() += 1;
                s.consecutive_faults += 1;
                s.last_fault = Some(format!("{kind}: {message}"));
                let open_now = s.disabled_until.is_none_or(|_| probe);
                if open_now && (s.half_open || s.consecutive_faults >= threshold.max(1)) {
                    s.half_open = false;
                    s.disabled_until =
                        Some((Instant::now() + cooldown, SystemTime::now() + cooldown));
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A new version is loaded: give it a clean breaker.
    pub fn reset_breaker(&self) {
        let mut s = self.lock();
        s.consecutive_faults = 0;
        s.disabled_until = None;
        s.half_open = false;
        s.probing = false;
    }

    pub fn snapshot(&self) -> Inner {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..99 {
            h.record(Duration::from_micros(20));
        }
        h.record(Duration::from_millis(5));
        let p50 = h.quantile(0.5).unwrap();
        assert!((20..=25).contains(&p50), "{p50}");
        let p100 = h.quantile(1.0).unwrap();
        assert!((5000..=6200).contains(&p100), "{p100}");
        for micros in [1u64, 2, 3, 7, 100, 1_000_000] {
            let b = Histogram::bucket(micros);
            assert!(
                Histogram::upper(b) >= micros,
                "{micros} -> {}",
                Histogram::upper(b)
            );
        }
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_half_opens_after_the_cooldown() {
        let stats = PluginStats::default();
        let cooldown = Duration::from_millis(20);
        let fault = Some((FaultKind::Trap, "boom"));
        for _ in 0..2 {
            assert!(!stats.record(fault, Duration::ZERO, 0, 0, 0, 3, cooldown));
        }
        assert!(stats.admit(Instant::now()).is_ok());
        assert!(stats.record(fault, Duration::ZERO, 0, 0, 0, 3, cooldown));
        assert!(stats.admit(Instant::now()).is_err());
        // After the cool-down one call is let through; one more fault re-opens.
        assert!(stats.admit(Instant::now() + cooldown).is_ok());
        assert!(stats.record(fault, Duration::ZERO, 0, 0, 0, 3, cooldown));
        assert!(stats.admit(Instant::now()).is_err());
        assert!(stats.admit(Instant::now() + cooldown).is_ok());
        assert!(!stats.record(None, Duration::ZERO, 0, 0, 0, 3, cooldown));
        assert!(!stats.record(fault, Duration::ZERO, 0, 0, 0, 3, cooldown));
        assert!(stats.admit(Instant::now()).is_ok());
        // Faults that are not the plugin's leave the breaker alone.
        let busy = Some((FaultKind::HostBusy, "pool"));
        for _ in 0..10 {
            assert!(!stats.record(busy, Duration::ZERO, 0, 0, 0, 3, cooldown));
        }
        // While the one trial call after a cool-down runs, others get the default.
        for _ in 0..3 {
            stats.record(fault, Duration::ZERO, 0, 0, 0, 3, cooldown);
        }
        let later = Instant::now() + cooldown;
        assert!(stats.admit(later).is_ok(), "the trial call");
        assert!(
            stats.admit(later).is_err(),
            "no second call during the trial"
        );
        assert!(!stats.record(None, Duration::ZERO, 0, 0, 0, 3, cooldown));
        assert!(stats.admit(later).is_ok() && stats.admit(later).is_ok());
        let s = stats.snapshot();
        assert_eq!(s.calls, 20);
        assert_eq!(s.faults, 8);
        assert_eq!(s.fault_kinds[&FaultKind::Trap], 8);
    }
}
