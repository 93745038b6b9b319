//! Shared request counters. Each host buffers its own counts for a moment and adds them here
//! in one statement per key, reading back the total across all hosts; see the API layer's
//! limiter for how the buffer bounds overshoot.

use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_tx};

/// Adds `delta` requests to a key's window and returns the window's total across all hosts.
pub async fn add(tx: &mut Tx, api_key_id: &str, window_start: i64, delta: i64) -> Result<i64> {
    let total: i64 = with_tx!(tx, |c| sqlx::query_scalar(
        "INSERT INTO rate_limit_windows (api_key_id, window_start, count) VALUES ($1, $2, $3)
         ON CONFLICT (api_key_id, window_start)
         DO UPDATE SET count = rate_limit_windows.count + excluded.count
         RETURNING count"
    )
    .bind(api_key_id)
    .bind(window_start)
    .bind(delta)
    .fetch_one(c)
    .await)?;
    Ok(total)
}

/// The shared total of a key's window so far.
pub async fn total(store: &Store, api_key_id: &str, window_start: i64) -> Result<i64> {
    let total: Option<i64> = crate::with_read!(store, |e| sqlx::query_scalar(
        "SELECT count FROM rate_limit_windows WHERE api_key_id = $1 AND window_start = $2"
    )
    .bind(api_key_id)
    .bind(window_start)
    .fetch_optional(e)
    .await)?;
    Ok(total.unwrap_or(0))
}

/// Drops windows that ended before `before` (seconds since the epoch).
pub async fn purge(store: &Store, before: i64) -> Result<u64> {
    let mut tx = store.begin().await?;
    let n = with_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM rate_limit_windows WHERE window_start < $1"
    )
    .bind(before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// Seconds since the epoch, the unit windows are keyed in.
pub fn epoch_secs(at: Timestamp) -> i64 {
    at.as_micros().div_euclid(1_000_000)
}
