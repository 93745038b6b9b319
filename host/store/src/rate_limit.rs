//! Shared request counters: one row per key and window, counting the requests every host
//! has been allowed to admit in it. Hosts take allowances from it in small blocks (see the
//! API layer's limiter), so the row never grants more than the limit in all.

use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_tx};

/// What a host got from a key's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Requests this host may admit now, 0 when the window's limit was already given out.
    pub granted: i64,
    /// The window's total given out across all hosts, this lease included.
    pub total: i64,
}

/// Takes up to `want` requests of `limit` from a key's window, atomically across hosts: the
/// count only grows while it is under the limit, and what it grew by past the limit is not
/// granted. One statement, committed on its own.
pub async fn lease(
    store: &Store,
    api_key_id: &str,
    window_start: i64,
    want: i64,
    limit: i64,
) -> Result<Lease> {
    let key = api_key_id.to_string();
    let want = want.clamp(1, limit.max(1));
    let total: Option<i64> = store
        .write_statement(move |tx: &mut Tx| {
            Box::pin(async move {
                let total: Option<i64> = with_tx!(tx, |c| sqlx::query_scalar(
                    "INSERT INTO rate_limit_windows (api_key_id, window_start, count)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (api_key_id, window_start)
                     DO UPDATE SET count = rate_limit_windows.count + excluded.count
                     WHERE rate_limit_windows.count < $4
                     RETURNING count"
                )
                .bind(&key)
                .bind(window_start)
                .bind(want)
                .bind(limit)
                .fetch_optional(c)
                .await)?;
                Ok::<_, crate::StoreError>(total)
            })
        })
        .await?;
    Ok(match total {
        // The window was full before this statement: nothing changed.
        None => Lease {
            granted: 0,
            total: limit,
        },
        Some(total) => Lease {
            granted: (limit - (total - want)).clamp(0, want),
            total: total.min(limit),
        },
    })
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
