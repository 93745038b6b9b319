//! Customer segments kept current. The segmentation slot (a plugin, or the built-in rules)
//! decides a customer's tags; they are stored so customers can be listed by segment and
//! campaigns can target one. Two things recompute them:
//!
//! - a consumer of the event log: every event about a customer (created, updated, paid,
//!   refunded, subscribed, …) recomputes that customer's segments, once per batch;
//! - a sweep: segments depend on time ("new" for 30 days, "at risk" after quiet months), so
//!   any older than [`MAX_AGE_SECS`] of business time, never computed, or decided by a
//!   plugin version that no longer serves the slot are recomputed in batches.
//!
//! Both are safe on many hosts at once: the consumer is leased to one host at a time in the
//! database, and a computation never overwrites a newer one. A changed tag set writes
//! `customer.segments_changed` (with what was added and removed) in the same transaction,
//! for campaign triggers to read.

use std::collections::BTreeSet;

use hephaestus_core::Timestamp;
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_plugins::World;
use hephaestus_store::segments::{self, Segments};
use hephaestus_store::{StoreError, consumers, customers, events, profiles};
use serde_json::json;

use crate::AppState;
use crate::decisions::{business_now, segmented_profile};
use crate::error::ApiResult;

/// The consumer's name in `event_consumers`.
pub const CONSUMER: &str = "segments";
/// How long a host holds the consumer without renewing it.
const LEASE_SECS: i64 = 60;
/// Events read per step.
const EVENT_BATCH: i64 = 500;
/// Segments older than this (business time) are recomputed by the sweep.
pub const MAX_AGE_SECS: i64 = 60 * 60;
/// Customers one sweep recomputes.
const SWEEP_BATCH: i64 = 200;
/// What `decided_by` holds when no plugin serves the slot.
const DEFAULT: &str = "default";

/// What `decided_by` records for the segmentation slot now.
pub fn serving(state: &AppState) -> String {
    state
        .plugins
        .serving(World::Segmentation)
        .unwrap_or_else(|| DEFAULT.to_string())
}

/// Recomputes and stores one customer's segments. An unknown or erased customer has none.
pub async fn recompute(state: &AppState, customer_id: &str) -> ApiResult<()> {
    // Read before deciding: if the plugin is swapped during the call, the row names the old
    // version and the next sweep recomputes it.
    let decided_by = serving(state);
    let computed_at = business_now(state);
    let Some(snapshot) = profiles::snapshot(&state.store, customer_id, computed_at).await? else {
        return Ok(());
    };
    if snapshot.customer.erased_at.is_some() {
        return Ok(());
    }
    let (_, decision, valuation) = segmented_profile(state, &snapshot).await?;
    let tags: Vec<String> = decision
        .value
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored = Segments {
        tags,
        decided_by,
        computed_at,
        note: valuation.note,
    };
    let id = snapshot.customer.id;
    state
        .store
        .write(move |tx| {
            Box::pin(async move {
                // Erased while the plugin decided: erasure already forgot the segments.
                match customers::get_in(tx, &id).await? {
                    Some(c) if c.erased_at.is_none() => {}
                    _ => return Ok(()),
                }
                let Some(before) = segments::replace(tx, &id, &stored).await? else {
                    return Ok(());
                };
                if before != stored.tags {
                    let added: Vec<&String> =
                        stored.tags.iter().filter(|t| !before.contains(t)).collect();
                    let removed: Vec<&String> =
                        before.iter().filter(|t| !stored.tags.contains(t)).collect();
                    events::append(
                        tx,
                        NewEvent::new(
                            kind::CUSTOMER_SEGMENTS_CHANGED,
                            &id,
                            Some(id.clone()),
                            json!({
                                "customer_id": id,
                                "segments": stored.tags,
                                "added": added,
                                "removed": removed,
                            }),
                            Timestamp::now(),
                        ),
                    );
                }
                Ok::<_, StoreError>(())
            })
        })
        .await?;
    Ok(())
}

/// Reads the event log from where the consumer stands and recomputes the segments of the
/// customers the events concern, if this host holds (or can take) the consumer. Returns
/// how many customers were recomputed.
pub async fn consume(state: &AppState, holder: &str) -> ApiResult<usize> {
    let store = &state.store;
    let Some(mut lease) = consumers::claim(store, CONSUMER, holder, LEASE_SECS).await? else {
        return Ok(0);
    };
    let mut recomputed = 0;
    loop {
        let batch = events::after(store, lease.position, EVENT_BATCH).await?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        // Its own events say nothing new about the customer.
        let customers: BTreeSet<&str> = batch
            .iter()
            .filter(|e| e.kind != kind::CUSTOMER_SEGMENTS_CHANGED)
            .filter_map(|e| e.customer_id.as_deref())
            .collect();
        for id in customers {
            recompute(state, id).await?;
            recomputed += 1;
        }
        if !consumers::advance(store, &mut lease, last, LEASE_SECS).await? {
            // Another host took the consumer over (this one stalled past its lease).
            return Ok(recomputed);
        }
        if (batch.len() as i64) < EVENT_BATCH {
            break;
        }
    }
    Ok(recomputed)
}

/// Recomputes up to one batch of stale segments. Returns how many.
pub async fn sweep(state: &AppState) -> ApiResult<usize> {
    let older_than = business_now(state).add_secs(-MAX_AGE_SECS);
    let stale = segments::stale(&state.store, older_than, &serving(state), SWEEP_BATCH).await?;
    for id in &stale {
        recompute(state, id).await?;
    }
    Ok(stale.len())
}
