//! Per-key rate limiting whose counts live in the database, so every host sharing it
//! enforces one limit per key.
//!
//! A database write per request would cap the whole API at the database's commit rate, so
//! each host counts locally and adds its counts to the shared window every `flush_every`
//! (one upsert per active key), reading back the total across hosts. A host admits a
//! request while `shared total + its own unflushed count < limit`. With one host this is
//! exact; with N hosts the overshoot is bounded by what the other hosts admitted since
//! their last flush, at most a window's limit and in practice a few flush intervals' worth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hephaestus_core::Timestamp;
use hephaestus_store::{Store, keys, rate_limit};

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

#[derive(Debug, Default)]
struct KeyWindow {
    window_start: i64,
    /// The shared total for this window as of this host's last flush.
    shared: i64,
    /// Counted here and being added to the shared total right now.
    in_flight: i64,
    /// Counted here, not yet sent.
    pending: i64,
    /// Whether `shared` has been read from the database for this window.
    synced: bool,
}

#[derive(Debug)]
pub struct RateLimiter {
    default: RateLimit,
    windows: Mutex<HashMap<String, KeyWindow>>,
}

impl RateLimiter {
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key_id`. `Err(seconds)` says when the window reopens.
    ///
    /// The first request of a window on this host reads the window's shared total, so a
    /// host that just started (or just saw the key) does not grant a full budget of its own.
    pub async fn check(
        &self,
        store: &Store,
        key_id: &str,
        key_limit: Option<i64>,
    ) -> Result<(), u64> {
        let limit = key_limit.unwrap_or(self.default.limit);
        if limit <= 0 {
            return Ok(());
        }
        let window = self.default.window_secs.max(1);
        let now = rate_limit::epoch_secs(Timestamp::now());
        let window_start = now - now.rem_euclid(window);
        let synced = self.with_window(key_id, window_start, |w| w.synced);
        if !synced {
            match rate_limit::total(store, key_id, window_start).await {
                Ok(total) => self.with_window(key_id, window_start, |w| {
                    w.shared = w.shared.max(total);
                    w.synced = true;
                }),
                // Count locally until the next flush brings the total; never fail the request.
                Err(e) => tracing::warn!(error = %e, "could not read the shared rate-limit count"),
            }
        }
        self.with_window(key_id, window_start, |w| {
            if w.shared + w.in_flight + w.pending >= limit {
                let retry_after = (window_start + window - now).max(1);
                return Err(u64::try_from(retry_after).unwrap_or(1));
            }
            w.pending += 1;
            Ok(())
        })
    }

    /// Runs `f` on the key's counters for the window starting at `window_start`, starting
    /// them afresh when the key's window has moved on.
    fn with_window<T>(
        &self,
        key_id: &str,
        window_start: i64,
        f: impl FnOnce(&mut KeyWindow) -> T,
    ) -> T {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = match windows.get_mut(key_id) {
            Some(w) => w,
            None => windows.entry(key_id.to_string()).or_default(),
        };
        // Only a newer window starts afresh: a request that computed its window just before
        // a boundary and got here after it is counted in the current one.
        if window_start > w.window_start {
            *w = KeyWindow {
                window_start,
                ..KeyWindow::default()
            };
        }
        f(w)
    }

    /// Adds this host's counts to the shared windows and learns the totals. Also records
    /// which keys were used, so `keys list` can show it without a write per request.
    pub async fn flush(&self, store: &Store) -> hephaestus_store::Result<()> {
        let batch: Vec<(String, i64, i64)> = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let now = rate_limit::epoch_secs(Timestamp::now());
            let window = self.default.window_secs.max(1);
            windows.retain(|_, w| w.window_start + window > now || w.pending > 0);
            windows
                .iter_mut()
                .filter(|(_, w)| w.pending > 0)
                .map(|(k, w)| {
                    w.in_flight = w.pending;
                    w.pending = 0;
                    (k.clone(), w.window_start, w.in_flight)
                })
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        // Keys in one order on every host, so two hosts' flushes cannot deadlock on
        // PostgreSQL by locking the same rows in opposite orders.
        let mut batch = batch;
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let stored: hephaestus_store::Result<Vec<i64>> = async {
            let mut tx = store.begin().await?;
            let mut totals = Vec::with_capacity(batch.len());
            for (key, window_start, delta) in &batch {
                totals.push(rate_limit::add(&mut tx, key, *window_start, *delta).await?);
            }
            let used: Vec<String> = batch.iter().map(|(k, _, _)| k.clone()).collect();
            keys::touch(&mut tx, &used, Timestamp::now()).await?;
            tx.commit().await?;
            Ok(totals)
        }
        .await;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (key, window_start, delta)) in batch.iter().enumerate() {
            if let Some(w) = windows.get_mut(key)
                && w.window_start == *window_start
            {
                w.in_flight = 0;
                match &stored {
                    Ok(totals) => w.shared = w.shared.max(totals[i]),
                    // Not stored: count it again next time rather than forget it.
                    Err(_) => w.pending += delta,
                }
            }
        }
        stored.map(|_| ())
    }

    /// How often to flush: often enough that hosts see each other's counts within a small
    /// fraction of a window.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(if self.default.window_secs <= 1 {
            50
        } else {
            200
        })
    }
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
    }

    #[tokio::test]
    async fn limits_within_one_host_exactly() {
        let dir = std::env::temp_dir().join(format!("rl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("rl.db").display());
        let store = Store::connect(&url, &Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        let rl = RateLimiter::new(RateLimit {
            limit: 3,
            window_secs: 3600,
        });
        for _ in 0..3 {
            assert!(rl.check(&store, "k", None).await.is_ok());
        }
        let retry = rl.check(&store, "k", None).await.unwrap_err();
        assert!((1..=3600).contains(&retry));
        assert!(
            rl.check(&store, "other", None).await.is_ok(),
            "keys are counted apart"
        );
        assert!(
            rl.check(&store, "big", Some(10)).await.is_ok(),
            "a key's own limit wins"
        );
        rl.flush(&store).await.unwrap();
        // A second host on the same database sees what the first admitted.
        let second = RateLimiter::new(RateLimit {
            limit: 3,
            window_secs: 3600,
        });
        assert!(second.check(&store, "k", None).await.is_err());
        assert!(second.check(&store, "big", Some(10)).await.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
