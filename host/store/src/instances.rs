//! The host processes using this database. Each registers when it starts and beats every
//! [`BEAT_EVERY`]; one whose beat is older than [`DEAD_AFTER`] is taken for dead, and what it
//! claimed (a running `Idempotency-Key`, a gateway attempt) is settled by the living at once
//! instead of after a fixed lock time. The beat is its own one-statement write, so it keeps
//! going while the process is busy; a process that cannot reach the database cannot act on
//! it either, so being taken for dead then costs it nothing it could have done.

use std::time::Duration;

use hephaestus_core::Timestamp;

use crate::{Result, Store};

/// How often a living process beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a beat is believed: a process silent for longer is dead. Several beats, so a
/// slow commit or a busy moment does not bury a living process.
pub const DEAD_AFTER_SECS: i64 = 5;
/// Rows of processes silent this long are deleted.
const FORGET_AFTER_SECS: i64 = 24 * 60 * 60;

/// The SQL condition "the process named by `$column` is not alive at the `$n`th bound
/// moment": true for a process that never registered, or has not beaten since.
pub fn dead_sql(column: &str, cutoff_param: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM host_instances h WHERE h.id = {column} AND h.heartbeat_at >= {cutoff_param})"
    )
}

/// The moment before which a beat no longer proves life.
pub fn alive_cutoff(now: Timestamp) -> i64 {
    now.add_secs(-DEAD_AFTER_SECS).as_micros()
}

/// Registers this process, or beats: one statement either way.
pub async fn beat(store: &Store) -> Result<()> {
    let id = store.instance().to_string();
    store
        .write_statement(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now().as_micros();
                crate::with_tx!(tx, |c| sqlx::query(
                    "INSERT INTO host_instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
                )
                .bind(&id)
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
}

/// Says this process is gone (a clean shutdown), so its claims need not wait for its beat
/// to go stale; and forgets processes long dead.
pub async fn leave(store: &Store) -> Result<()> {
    let id = store.instance().to_string();
    store
        .write_statement(move |tx| {
            Box::pin(async move {
                let forget = Timestamp::now().add_secs(-FORGET_AFTER_SECS).as_micros();
                crate::with_tx!(tx, |c| sqlx::query(
                    "DELETE FROM host_instances WHERE id = $1 OR heartbeat_at < $2"
                )
                .bind(&id)
                .bind(forget)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
}

/// Whether the process `id` is alive.
pub async fn is_alive(store: &Store, id: &str) -> Result<bool> {
    let cutoff = alive_cutoff(Timestamp::now());
    let n: i64 = crate::with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM host_instances WHERE id = $1 AND heartbeat_at >= $2"
    )
    .bind(id)
    .bind(cutoff)
    .fetch_one(e)
    .await)?;
    Ok(n > 0)
}
