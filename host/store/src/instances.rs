//! The host processes using this database. Each registers when it starts and beats every
//! [`BEAT_EVERY`]; one whose beat is older than [`DEAD_AFTER`] is taken for dead, and what it
//! claimed (a running `Idempotency-Key`, a gateway attempt) is settled by the living at once
//! instead of after a fixed lock time. The beat is its own one-statement write, so it keeps
//! going while the process is busy; a process that cannot reach the database cannot act on
//! it either, so being taken for dead then costs it nothing it could have done.

use std::sync::atomic::{AtomicI64, Ordering};
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

/// The SQL condition "the process named by `column` is dead", judged with the cutoff bound
/// at `cutoff_param` ([`alive_cutoff`]): one that never registered, or has not beaten since
/// the cutoff. A NULL cutoff (this process cannot judge now) finds no one dead.
pub fn dead_sql(column: &str, cutoff_param: &str) -> String {
    format!(
        "({cutoff_param} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM host_instances h WHERE h.id = {column} AND h.heartbeat_at >= {cutoff_param}))"
    )
}

/// How this process's own beats went: a process that could not beat lately (the database was
/// away) does not judge others, whose beats failed as well.
#[derive(Debug, Default)]
pub struct Beats {
    last_ok: AtomicI64,
    last_failed: AtomicI64,
}

/// The moment before which a beat no longer proves life, as this process may judge it now.
/// While this process has not been beating without a failure for [`DEAD_AFTER_SECS`] — it
/// has not registered yet, or the database was away for everyone, so every beat is stale —
/// it judges no one (`None`): a living host is not taken for dead because the database could
/// not hear it.
pub fn alive_cutoff(store: &Store, now: Timestamp) -> Option<i64> {
    let beats = store.beats();
    let now_us = now.as_micros();
    let second = 1_000_000;
    let last_ok = beats.last_ok.load(Ordering::Relaxed);
    let last_failed = beats.last_failed.load(Ordering::Relaxed);
    let beating = last_ok >= now_us - 2 * second;
    let steady = last_failed < now_us - (DEAD_AFTER_SECS + 1) * second;
    (beating && steady).then(|| now.add_secs(-DEAD_AFTER_SECS).as_micros())
}

/// Registers this process, or beats: one statement either way.
pub async fn beat(store: &Store) -> Result<()> {
    let id = store.instance().to_string();
    let beaten = store
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
        .await;
    let at = if beaten.is_ok() {
        &store.beats().last_ok
    } else {
        &store.beats().last_failed
    };
    at.store(Timestamp::now().as_micros(), Ordering::Relaxed);
    beaten
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
