//! Background upkeep for one host. Every job here is safe to run on many hosts at once:
//! flushes add to shared counters and purges are plain deletes of expired rows.

use std::time::Duration;

use hephaestus_core::Timestamp;
use hephaestus_store::{idempotency, rate_limit};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::AppState;

const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Rate-limit windows are kept a day for diagnosis, then dropped.
const WINDOW_RETENTION_SECS: i64 = 24 * 60 * 60;

/// Runs until `shutdown` turns true, then flushes the limiter one last time.
pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(state.limiter.flush_interval());
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_EVERY);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = state.limiter.flush(&state.store).await {
                        tracing::warn!(error = %e, "rate-limit flush failed; will retry");
                    }
                }
                _ = purge.tick() => purge_expired(&state).await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        if let Err(e) = state.limiter.flush(&state.store).await {
            tracing::warn!(error = %e, "final rate-limit flush failed");
        }
    })
}

async fn purge_expired(state: &AppState) {
    match idempotency::purge_expired(&state.store).await {
        Ok(n) if n > 0 => tracing::debug!(purged = n, "expired idempotency records"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge idempotency records"),
    }
    let cutoff = rate_limit::epoch_secs(Timestamp::now()) - WINDOW_RETENTION_SECS;
    if let Err(e) = rate_limit::purge(&state.store, cutoff).await {
        tracing::warn!(error = %e, "could not purge rate-limit windows");
    }
}
