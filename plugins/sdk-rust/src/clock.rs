//! The business clock and day arithmetic on [`Timestamp`]s (microseconds since the Unix
//! epoch, UTC).
//!
//! Ask the host for the time with [`now`] rather than WASI's wall clock: in the sandbox the
//! business clock follows the test clock, so "is this customer new?" agrees with billing.

use crate::Timestamp;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day (24 hours; the business clock has no leap seconds).
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The current time on the business clock (a host call).
pub fn now() -> Timestamp {
    crate::bindings::host::hephaestus::plugins::clock::now()
}

/// A span of `days` whole days, in microseconds.
pub const fn days(days: i64) -> i64 {
    days.saturating_mul(MICROS_PER_DAY)
}

/// Whole days from `earlier` to `later`, rounded toward negative infinity: 29 days and
/// 23 hours is 29, and one microsecond before `earlier` is -1.
pub const fn days_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.saturating_sub(earlier).div_euclid(MICROS_PER_DAY)
}

/// Whether `at` lies strictly less than `days` whole days before `now`
/// (`now - at < days × 24 h`). A timestamp in the future counts as within.
pub const fn within_days(at: Timestamp, now: Timestamp, days_: i64) -> bool {
    now.saturating_sub(at) < days(days_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_between_floors() {
        let t0 = 1_700_000_000 * MICROS_PER_SECOND;
        assert_eq!(days_between(t0, t0), 0);
        assert_eq!(days_between(t0, t0 + days(30) - 1), 29);
        assert_eq!(days_between(t0, t0 + days(30)), 30);
        assert_eq!(days_between(t0, t0 - 1), -1);
        assert!(within_days(t0 - days(30) + 1, t0, 30));
        assert!(!within_days(t0 - days(30), t0, 30));
        assert!(within_days(t0 + 5, t0, 30));
    }
}
