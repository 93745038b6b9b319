//! Background work for one host. Every job here is safe to run on many hosts at once:
//! flushes record when keys were last used, purges are plain deletes of expired rows, due
//! subscriptions are leased, webhook events are claimed (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL) before they are applied, the segment and analytics consumers are leased in
//! the database (analytics counts each batch in the transaction that moves its position),
//! segment computations never overwrite newer ones, and the gateway copies of erased
//! customers are leased in the database before they are deleted.

use std::time::Duration;

use hephaestus_billing::{erasure, reconcile, stripe_events, subscriptions};
use hephaestus_core::Timestamp;
use hephaestus_core::ids;
use hephaestus_store::{consumers, idempotency, instances, rate_limit};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{AppState, recovery, segments};

const PURGE_EVERY: Duration = Duration::from_secs(60);
/// A dead host's gateway calls are settled within about this long after its beat goes stale
/// (and at once when a retry of one arrives).
const RECOVER_EVERY: Duration = Duration::from_secs(2);
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// Renewals are due at a period's end; a few seconds late is fine, and the clock control
/// bills at once anyway.
const BILLING_EVERY: Duration = Duration::from_secs(5);
const WEBHOOK_POLL: Duration = Duration::from_millis(500);
const WEBHOOK_BATCH: i64 = 128;
/// Erasures are also run as soon as a customer is erased on this host; the tick retries
/// failed ones and picks up those erased through another host.
const ERASURE_EVERY: Duration = Duration::from_secs(30);
const ERASURE_BATCH: i64 = 20;
/// The analytics aggregates follow the event log within about this long (a dashboard
/// request also brings them up to date before it answers).
const ANALYTICS_POLL: Duration = Duration::from_secs(1);
/// Segments follow the event log within about this long.
const SEGMENTS_POLL: Duration = Duration::from_secs(1);
/// Segments age with time; the sweep also runs at once when a plugin or the clock changes.
const SEGMENT_SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Rate-limit windows are kept a day for diagnosis, then dropped.
const WINDOW_RETENTION_SECS: i64 = 24 * 60 * 60;

/// Runs until `shutdown` turns true, then flushes the limiter one last time.
pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(state.limiter.flush_interval());
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events are processed as soon as they arrive on this host; the tick picks up
        // retries and events that arrived through another host.
        let mut webhooks = tokio::time::interval(WEBHOOK_POLL);
        webhooks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut billing = tokio::time::interval(BILLING_EVERY);
        billing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut erasures = tokio::time::interval(ERASURE_EVERY);
        erasures.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_EVERY);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Beating and recovery run beside the rest: a slow pass of other upkeep must not make
        // this host look dead, nor hold up settling a dead host's gateway calls.
        let beating = tokio::spawn(beat(state.clone(), shutdown.clone()));
        let recovering = tokio::spawn(recover(state.clone(), shutdown.clone()));
        // Recomputing segments can take a while (a sweep after a plugin change touches every
        // customer), so it runs beside the upkeep here, never in its way.
        let segments = tokio::spawn(keep_segments(state.clone(), shutdown.clone()));
        let analytics = tokio::spawn(keep_analytics(state.clone(), shutdown.clone()));
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = state.limiter.flush(&state.store).await {
                        tracing::warn!(error = %e, "rate-limit flush failed; will retry");
                    }
                }
                _ = purge.tick() => purge_expired(&state).await,
                _ = webhooks.tick(), if state.config.apply_webhooks => process_webhooks(&state).await,
                _ = reconcile.tick() => reconcile_unsettled(&state).await,
                _ = billing.tick() => {
                    if let Err(e) = state.refresh_clock().await {
                        tracing::warn!(error = %e, "could not read the business clock");
                    }
                    bill_subscriptions(&state).await
                }
                () = state.webhook_worker.notified(), if state.config.apply_webhooks => {
                    process_webhooks(&state).await
                }
                _ = erasures.tick() => erase_at_gateway(&state).await,
                () = state.gateway_erasure.notified() => erase_at_gateway(&state).await,
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
        let _ = segments.await;
        let _ = analytics.await;
        let _ = recovering.await;
        let _ = beating.await;
    })
}

/// Counts new events into the analytics aggregates until `shutdown` turns true.
async fn keep_analytics(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ANALYTICS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.analytics.step(&state.store).await {
                    tracing::warn!(error = %e, "analytics could not count new events; will retry");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // As for segments: the next host follows the log without waiting for the lease to end.
    if let Err(e) = state.analytics.release(&state.store).await {
        tracing::warn!(error = %e, "could not release the analytics consumer");
    }
}

/// Beats until `shutdown`, then says this host is gone, so that what it still held is
/// settled by others at once.
async fn beat(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(instances::BEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = instances::beat(&state.store).await {
                    tracing::warn!(error = %e, "could not beat; other hosts may take this one for dead");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    if let Err(e) = instances::leave(&state.store).await {
        tracing::warn!(error = %e, "could not deregister this host");
    }
}

/// Settles the gateway calls of dead hosts: at start, then every [`RECOVER_EVERY`].
async fn recover(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(RECOVER_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => match recovery::run(&state).await {
                Ok(r) if r == recovery::Report::default() => {}
                Ok(r) => tracing::info!(report = %r, "settled orphaned gateway calls"),
                Err(e) => tracing::warn!(error = %e, "recovery pass failed; will retry"),
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Follows the event log and sweeps stale segments until `shutdown` turns true.
async fn keep_segments(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut events = tokio::time::interval(SEGMENTS_POLL);
    events.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SEGMENT_SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut plugins_changed = state.plugins.subscribe();
    // Names this host in the consumer leases it takes.
    let holder = ids::new_id("host");
    loop {
        tokio::select! {
            _ = events.tick() => follow_segments(&state, &holder).await,
            _ = sweep.tick() => sweep_segments(&state, &shutdown).await,
            () = state.segment_sweep.notified() => sweep_segments(&state, &shutdown).await,
            Ok(()) = plugins_changed.changed() => sweep_segments(&state, &shutdown).await,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Handed over at once rather than when the lease runs out, so the host that replaces
    // this one (a rolling restart) follows the log without a minute's pause.
    if let Err(e) = consumers::release(&state.store, segments::CONSUMER, &holder).await {
        tracing::warn!(error = %e, "could not release the segment consumer");
    }
}

async fn process_webhooks(state: &AppState) {
    // Drain what is due, batch by batch, before going back to waiting.
    loop {
        match stripe_events::process_due(&state.store, WEBHOOK_BATCH).await {
            Ok(n) if n as i64 == WEBHOOK_BATCH => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "webhook processing failed; will retry");
                break;
            }
        }
    }
}

async fn follow_segments(state: &AppState, holder: &str) {
    match segments::consume(state, holder).await {
        Ok(n) if n > 0 => tracing::debug!(customers = n, "segments recomputed from events"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "segment recomputation failed; will retry"),
    }
}

async fn sweep_segments(state: &AppState, shutdown: &watch::Receiver<bool>) {
    // Drain what is stale, batch by batch: a plugin change or a clock jump ages them all.
    while !*shutdown.borrow() {
        match segments::sweep(state).await {
            Ok(0) => break,
            Ok(n) => tracing::debug!(customers = n, "stale segments recomputed"),
            Err(e) => {
                tracing::warn!(error = %e, "segment sweep failed; will retry");
                break;
            }
        }
    }
}

async fn bill_subscriptions(state: &AppState) {
    match subscriptions::run_due(
        &state.store,
        state.gateway.as_ref(),
        &state.config.dunning,
        50,
    )
    .await
    {
        Ok(s) if s.subscriptions > 0 => tracing::info!(
            subscriptions = s.subscriptions,
            invoices = s.invoices,
            paid = s.payments_succeeded,
            failed = s.payments_failed,
            canceled = s.canceled,
            "billed due subscriptions"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "subscription billing failed; will retry"),
    }
}

async fn reconcile_unsettled(state: &AppState) {
    let deadline = i64::try_from(state.config.reconcile_after.as_secs()).unwrap_or(i64::MAX);
    let passes =
        reconcile::reconcile_all(&state.store, state.gateway.as_ref(), deadline, 100).await;
    for (what, pass) in passes {
        match pass {
            Ok(r) if r.checked > 0 => tracing::info!(
                checked = r.checked,
                updated = r.updated,
                failed = r.failed,
                "reconciled unsettled {what}"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconciliation of {what} failed; will retry"),
        }
    }
}

async fn erase_at_gateway(state: &AppState) {
    // Drain what is due, batch by batch: a batch that failed entirely is retried later.
    loop {
        match erasure::run_due(&state.store, state.gateway.as_ref(), ERASURE_BATCH).await {
            Ok(r) if r.claimed > 0 => {
                tracing::info!(
                    erased = r.erased,
                    failed = r.failed,
                    "erased customers at the gateway"
                );
                if r.erased == 0 || (r.claimed as i64) < ERASURE_BATCH {
                    break;
                }
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "erasing customers at the gateway failed; will retry");
                break;
            }
        }
    }
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
