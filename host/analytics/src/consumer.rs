//! Keeps the aggregates current: the `analytics` consumer of the event log. Each batch of
//! events is counted in one transaction that also moves the consumer's position from where
//! the batch started to its last event — and only if the consumer still stands there and
//! this holder still holds it ([`consumers::advance_in`]). So an event is counted exactly
//! once: a batch that loses the race changes nothing, a crash rolls the whole batch back,
//! and the log is read in `seq` order with no gaps (on PostgreSQL [`events::after`] holds
//! back events whose transaction might still be overtaken).
//!
//! Any number of hosts may run it: the consumer is leased to one at a time, the others
//! read what it has written.

use std::time::Duration;

use hephaestus_core::ids;
use hephaestus_store::{Store, StoreError, analytics, consumers, events};

use crate::engine::{self, Engine, Malformed};

/// The consumer's name in `event_consumers`.
pub const CONSUMER: &str = "analytics";
/// How long a holder keeps the consumer without moving it.
const LEASE_SECS: i64 = 60;
/// Events counted per transaction.
const BATCH: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// A figure too large to compute exactly.
    #[error("a figure is too large to compute exactly: {0}")]
    Overflow(&'static str),
    /// Another holder took the consumer while a rebuild ran.
    #[error("the analytics consumer was taken over during the rebuild; run it again")]
    TakenOver,
}

/// Counts the events after `from` (`batch`, in log order) and moves the consumer to the
/// last of them, in one transaction. False if `holder` no longer holds the consumer at
/// `from`: nothing was written.
async fn count_batch(
    store: &Store,
    holder: &str,
    from: i64,
    batch: Vec<hephaestus_core::event::Event>,
) -> Result<bool, AnalyticsError> {
    let Some(to) = batch.last().map(|e| e.seq) else {
        return Ok(true);
    };
    let needs = engine::needs(&batch);
    let holder = holder.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                // First, so a worker that lost the consumer reads and writes nothing (and
                // on PostgreSQL, so a second worker at this position waits here, then fails).
                if !consumers::advance_in(tx, CONSUMER, &holder, from, to, LEASE_SECS).await? {
                    return Ok(false);
                }
                let loaded =
                    analytics::load(tx, &needs.subscriptions, &needs.customers, &needs.disputes)
                        .await?;
                let mut engine = Engine::new(loaded);
                for e in &batch {
                    engine.apply(e)?;
                }
                analytics::write(tx, &engine.finish()).await?;
                Ok::<_, AnalyticsError>(true)
            })
        })
        .await
}

/// Counts every event the consumer has not counted yet, if `holder` holds it or can take
/// it. Returns how many events were counted.
pub async fn catch_up(store: &Store, holder: &str) -> Result<u64, AnalyticsError> {
    if consumers::position(store, CONSUMER).await? >= consumers::head(store).await? {
        return Ok(0);
    }
    let Some(lease) = consumers::claim(store, CONSUMER, holder, LEASE_SECS).await? else {
        return Ok(0);
    };
    let mut position = lease.position;
    let mut counted = 0;
    loop {
        let batch = events::after(store, position, BATCH).await?;
        let (Some(last), n) = (batch.last().map(|e| e.seq), batch.len()) else {
            break;
        };
        if !count_batch(store, holder, position, batch).await? {
            // Another host (or a rebuild) took the consumer over.
            break;
        }
        position = last;
        counted += n as u64;
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(counted)
}

/// Where the consumer stands against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The `seq` of the last event counted.
    pub position: i64,
    /// The `seq` of the newest event committed when the figures were asked for.
    pub head: i64,
}

impl Freshness {
    /// Whether every event committed before the question is counted.
    pub fn is_current(&self) -> bool {
        self.position >= self.head
    }
}

/// This host's side of the consumer: a name for its leases, and one catch-up at a time.
#[derive(Debug)]
pub struct Follower {
    holder: String,
    running: tokio::sync::Mutex<()>,
}

impl Default for Follower {
    fn default() -> Self {
        Follower {
            holder: ids::new_id("host"),
            running: tokio::sync::Mutex::new(()),
        }
    }
}

impl Follower {
    /// Counts what is new, unless another host holds the consumer.
    pub async fn step(&self, store: &Store) -> Result<u64, AnalyticsError> {
        let _one = self.running.lock().await;
        catch_up(store, &self.holder).await
    }

    /// Brings the aggregates up to every event committed before the call, so an answer
    /// includes the caller's own writes. While another host holds the consumer (or, on
    /// PostgreSQL, a transaction that started earlier is still open) the newest events may
    /// not be countable yet: this waits up to `wait` for them, then answers with what is
    /// counted.
    pub async fn current(
        &self,
        store: &Store,
        wait: Duration,
    ) -> Result<Freshness, AnalyticsError> {
        let head = consumers::head(store).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.step(store).await?;
            let position = consumers::position(store, CONSUMER).await?;
            let f = Freshness { position, head };
            if f.is_current() || tokio::time::Instant::now() >= deadline {
                return Ok(f);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets another host take the consumer at once (at shutdown).
    pub async fn release(&self, store: &Store) -> Result<(), AnalyticsError> {
        consumers::release(store, CONSUMER, &self.holder).await?;
        Ok(())
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub position: i64,
}

/// Empties the aggregates and counts the whole log again. The rebuild takes the consumer
/// from whoever holds it, in the same transaction that empties the tables, so a server
/// counting at the time stops at its next batch (which then changes nothing) and resumes
/// after the rebuild from where it ends.
pub async fn rebuild(store: &Store) -> Result<Rebuilt, AnalyticsError> {
    let holder = ids::new_id("rebuild");
    let h = holder.clone();
    store
        .write(move |tx| {
            Box::pin(async move {
                consumers::take_over(tx, CONSUMER, &h, 0, LEASE_SECS).await?;
                analytics::clear(tx).await?;
                Ok::<_, StoreError>(())
            })
        })
        .await?;
    let head = consumers::head(store).await?;
    let mut events = 0;
    loop {
        events += catch_up(store, &holder).await?;
        let position = consumers::position(store, CONSUMER).await?;
        if position >= head {
            consumers::release(store, CONSUMER, &holder).await?;
            return Ok(Rebuilt { events, position });
        }
        if consumers::claim(store, CONSUMER, &holder, LEASE_SECS)
            .await?
            .is_none()
        {
            return Err(AnalyticsError::TakenOver);
        }
        // On PostgreSQL, events of a transaction still open are held back; wait for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
