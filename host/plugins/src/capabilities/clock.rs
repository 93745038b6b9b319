//! The business clock: real time in production, the sandbox test clock in the sandbox.

use std::sync::Arc;
use std::time::Duration;

/// Microseconds since the Unix epoch, supplied by the embedder.
pub type BusinessClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock, for embedders without a clock of their own (and for the CLI tools).
pub fn system_clock() -> BusinessClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// The WASI wall clock reads the business clock too, so a JavaScript `Date.now()` or a
/// Python `time.time()` inside a plugin agrees with `clock.now` and with billing.
pub struct WasiBusinessClock(pub BusinessClock);

impl std::fmt::Debug for WasiBusinessClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasiBusinessClock")
    }
}

impl wasmtime_wasi::HostWallClock for WasiBusinessClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        // Times before 1970 cannot be expressed by WASI's wall clock; clamp rather than wrap.
        Duration::from_micros(u64::try_from((self.0)()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::HostWallClock;

    #[test]
    fn the_wasi_wall_clock_follows_the_business_clock() {
        let clock = WasiBusinessClock(Arc::new(|| 1_700_000_000_123_456));
        assert_eq!(clock.now(), Duration::from_micros(1_700_000_000_123_456));
        let before_epoch = WasiBusinessClock(Arc::new(|| -5));
        assert_eq!(before_epoch.now(), Duration::ZERO);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(system_clock()() > 1_577_836_800_000_000);
    }
}
