//! Per-key rate limiting that holds across every host sharing the database.
//!
//! The count of a key's window lives in one database row, and a host admits a request only
//! with an allowance it took from that row beforehand: it takes them in small blocks (a
//! lease: one statement adds the block to the row unless the row has reached the limit, and
//! grants what still fitted), so most requests cost no database round trip, and the hosts
//! together never admit more than the limit in a window, however many there are. What a
//! host leased and did not use by the window's end is lost, so the limit can be undershot
//! by up to a block per host (a twentieth of the limit; blocks shrink as the window fills).
//! Windows are aligned to the epoch on each host's clock, so hosts whose clocks disagree
//! can count a request near a boundary in the neighbouring window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hephaestus_core::Timestamp;
use hephaestus_store::{Store, StoreError, keys, rate_limit};

/// The server-wide limit: `limit` requests per `window_secs` per key, unless a key has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per window; 0 turns limiting off.
    pub limit: i64,
    pub window_secs: i64,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `N/s`, `N/m` or `N/h`; `0` or `off` disables the limit.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("off") {
            return Ok(RateLimit {
                limit: 0,
                window_secs: 1,
            });
        }
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a rate like 100/s, 6000/m or off"))?;
        let limit: i64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{n}` is not a positive whole number of requests"))?;
        let window_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            other => return Err(format!("unknown rate unit `{other}` (use s, m or h)")),
        };
        Ok(RateLimit { limit, window_secs })
    }
}

/// Written back the way it is parsed: `20/s`, `600/m`, `off`.
impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.limit, self.window_secs) {
            (limit, _) if limit <= 0 => f.write_str("off"),
            (limit, 1) => write!(f, "{limit}/s"),
            (limit, 60) => write!(f, "{limit}/m"),
            (limit, 3600) => write!(f, "{limit}/h"),
            (limit, secs) => write!(f, "{limit} per {secs} s"),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// Over the limit: seconds until the window reopens.
    Limited(u64),
    /// The shared count could not be reached.
    Unavailable(StoreError),
}

/// What this host holds of a key's current window.
#[derive(Debug, Default)]
struct Allowance {
    window_start: i64,
    /// Leased and not yet used.
    tokens: i64,
    /// The window's total across hosts as of this host's last lease.
    seen_total: i64,
    /// The window's limit has been given out: refuse without asking again.
    exhausted: bool,
}

#[derive(Debug, Default)]
struct KeyState {
    allowance: Mutex<Allowance>,
    /// One lease at a time per key on this host; requests arriving meanwhile wait for it
    /// rather than each taking a block of their own.
    leasing: tokio::sync::Mutex<()>,
    /// Leases that failed because the database was unreachable: requests that waited for
    /// a lease that failed so fail at once, rather than each waiting out a timeout in turn.
    unreachable: AtomicU64,
    /// Used since the last flush, for `keys list`'s last-used time.
    used: AtomicBool,
}

enum Take {
    Admitted,
    Refused,
    Empty { window_start: i64, seen_total: i64 },
}

impl KeyState {
    /// Uses a token of the window starting at `window_start` (or of a newer one this host
    /// has already moved to: a request that computed its window just before a boundary is
    /// counted in the current one).
    fn take(&self, window_start: i64) -> Take {
        let mut a = self.allowance.lock().unwrap_or_else(|p| p.into_inner());
        if window_start > a.window_start {
            *a = Allowance {
                window_start,
                ..Allowance::default()
            };
        }
        if a.tokens > 0 {
            a.tokens -= 1;
            Take::Admitted
        } else if a.exhausted {
            Take::Refused
        } else {
            Take::Empty {
                window_start: a.window_start,
                seen_total: a.seen_total,
            }
        }
    }

    fn add(&self, window_start: i64, lease: rate_limit::Lease) {
        let mut a = self.allowance.lock().unwrap_or_else(|p| p.into_inner());
        if a.window_start != window_start {
            return;
        }
        a.tokens += lease.granted;
        a.seen_total = a.seen_total.max(lease.total);
        a.exhausted = lease.granted == 0;
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    default: RateLimit,
    keys: Mutex<HashMap<String, Arc<KeyState>>>,
}

/// The most one lease takes: a host never holds more than a twentieth of a window, so
/// another host is not starved while this one sits on unused allowance.
const LEASE_DIVISOR: i64 = 20;
/// And never more than this, however large the limit.
const MAX_LEASE: i64 = 1000;

impl RateLimiter {
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key_id`, under the key's own rate if it has one.
    pub async fn check(
        &self,
        store: &Store,
        key_id: &str,
        key_rate: Option<RateLimit>,
    ) -> Result<(), Refused> {
        let state = self.state_of(key_id);
        state.used.store(true, Ordering::Relaxed);
        let rate = key_rate.unwrap_or(self.default);
        if rate.limit <= 0 {
            return Ok(());
        }
        let window = rate.window_secs.max(1);
        let now = rate_limit::epoch_secs(Timestamp::now());
        let window_start = now - now.rem_euclid(window);
        let retry_after =
            || Refused::Limited(u64::try_from((window_start + window - now).max(1)).unwrap_or(1));
        loop {
            match state.take(window_start) {
                Take::Admitted => return Ok(()),
                Take::Refused => return Err(retry_after()),
                Take::Empty { .. } => {}
            }
            let failures = state.unreachable.load(Ordering::Acquire);
            let _leasing = state.leasing.lock().await;
            if state.unreachable.load(Ordering::Acquire) != failures {
                return Err(Refused::Unavailable(StoreError::Unavailable(
                    "the shared rate-limit count is unreachable".into(),
                )));
            }
            // Another request may have leased while this one waited.
            let (lease_window, seen_total) = match state.take(window_start) {
                Take::Admitted => return Ok(()),
                Take::Refused => return Err(retry_after()),
                Take::Empty {
                    window_start,
                    seen_total,
                } => (window_start, seen_total),
            };
            let want = lease_size(rate.limit, seen_total);
            match rate_limit::lease(store, key_id, lease_window, want, rate.limit).await {
                Ok(lease) => state.add(lease_window, lease),
                Err(e) if e.is_unavailable() => {
                    state.unreachable.fetch_add(1, Ordering::Release);
                    return Err(Refused::Unavailable(e));
                }
                Err(e) => {
                    // A fault in the counter must not take the API down with it: admit, and
                    // let the next request try again.
                    tracing::warn!(error = %e, "could not lease from the shared rate-limit count");
                    return Ok(());
                }
            }
        }
    }

    fn state_of(&self, key_id: &str) -> Arc<KeyState> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(key_id) {
            Some(state) => state.clone(),
            None => keys.entry(key_id.to_string()).or_default().clone(),
        }
    }

    /// Records which keys were used, so `keys list` can show it without a write per
    /// request, and forgets the allowances of windows long past.
    pub async fn flush(&self, store: &Store) -> hephaestus_store::Result<()> {
        let mut used = Vec::new();
        {
            let now = rate_limit::epoch_secs(Timestamp::now());
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.retain(|id, state| {
                let recent = state.used.swap(false, Ordering::Relaxed);
                if recent {
                    used.push(id.clone());
                }
                let a = state.allowance.lock().unwrap_or_else(|p| p.into_inner());
                // An hour covers the longest window; a key in use is kept regardless.
                recent || a.window_start + 3600 > now || Arc::strong_count(state) > 1
            });
        }
        if used.is_empty() {
            return Ok(());
        }
        // Keys in one order on every host, so two hosts' flushes cannot deadlock on
        // PostgreSQL by locking the same rows in opposite orders.
        used.sort();
        let stored: hephaestus_store::Result<()> = async {
            let mut tx = store.begin().await?;
            keys::touch(&mut tx, &used, Timestamp::now()).await?;
            tx.commit().await
        }
        .await;
        if stored.is_err() {
            // Not stored: note them again next time rather than forget them.
            for id in &used {
                self.state_of(id).used.store(true, Ordering::Relaxed);
            }
        }
        stored
    }

    /// How often to flush: last-used times are shown to the second at most.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// How much to lease of a window of `limit` whose total across hosts was `seen_total` at
/// this host's last lease: a twentieth of the limit, and less as the window fills (a quarter
/// of what was left), so what hosts hold unused at the window's end stays small.
fn lease_size(limit: i64, seen_total: i64) -> i64 {
    let left = (limit - seen_total).max(0);
    (limit / LEASE_DIVISOR).min(left / 4).clamp(1, MAX_LEASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "100/s".parse::<RateLimit>().unwrap(),
            RateLimit {
                limit: 100,
                window_secs: 1
            }
        );
        assert_eq!("6000/m".parse::<RateLimit>().unwrap().window_secs, 60);
        assert_eq!("off".parse::<RateLimit>().unwrap().limit, 0);
        for bad in ["", "100", "-1/s", "x/s", "10/d", "0/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        for text in ["20/s", "600/m", "1000/h", "off"] {
            assert_eq!(text.parse::<RateLimit>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn leases_are_small_and_shrink_as_the_window_fills() {
        assert_eq!(lease_size(20, 0), 1);
        assert_eq!(lease_size(100, 0), 5);
        assert_eq!(lease_size(100, 90), 2);
        assert_eq!(lease_size(100, 100), 1);
        assert_eq!(lease_size(10_000_000, 0), MAX_LEASE);
    }

    #[tokio::test]
    async fn limits_across_hosts_exactly() {
        let dir = std::env::temp_dir().join(format!("rl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("rl.db").display());
        let store = Store::connect(&url, &Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        let hour = |limit| RateLimit {
            limit,
            window_secs: 3600,
        };
        let rl = RateLimiter::new(hour(3));
        for _ in 0..3 {
            assert!(rl.check(&store, "k", None).await.is_ok());
        }
        match rl.check(&store, "k", None).await {
            Err(Refused::Limited(retry)) => assert!((1..=3600).contains(&retry), "{retry}"),
            other => panic!("the fourth request got {other:?}"),
        }
        assert!(
            rl.check(&store, "other", None).await.is_ok(),
            "keys are counted apart"
        );
        assert!(
            rl.check(&store, "big", Some(hour(10))).await.is_ok(),
            "a key's own limit wins"
        );
        assert!(
            rl.check(&store, "free", Some(hour(0))).await.is_ok(),
            "a key's own `off` wins"
        );
        // A second host on the same database shares the window at once, with no flush.
        let second = RateLimiter::new(hour(3));
        assert!(second.check(&store, "k", None).await.is_err());
        let mut admitted = 1;
        while second.check(&store, "big", Some(hour(10))).await.is_ok() {
            admitted += 1;
        }
        assert_eq!(admitted, 10, "the two hosts admitted {admitted} of 10");
        rl.flush(&store).await.unwrap();
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
