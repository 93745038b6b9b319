//! The webhook inbox. Intake stores each verified event once (a duplicate delivery is a
//! no-op) and answers; workers on any host claim due events — PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, SQLite through its single writer — and record the outcome in
//! the same transaction as the changes the event caused.

use std::collections::HashSet;

use futures::future::BoxFuture;
use hephaestus_core::Timestamp;
use sqlx::{PgConnection, QueryBuilder};

use crate::batch::Batchable;
use crate::{Result, Store, Tx, with_read, with_tx};

/// Attempts before an event that keeps failing is parked as `failed`.
pub const MAX_ATTEMPTS: i64 = 8;

#[derive(Debug, Clone)]
pub struct NewInboxEvent {
    pub source: &'static str,
    pub id: String,
    pub kind: String,
    pub object_id: Option<String>,
    /// The event's own creation time at the gateway, Unix seconds.
    pub created: i64,
    pub payload: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEvent {
    pub source: String,
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    pub created: i64,
    pub payload: String,
    pub attempts: i64,
    pub received_at: i64,
}

/// Stores an event unless one with its id is already there. `true` if it is new. On
/// PostgreSQL concurrent deliveries share one statement ([`crate::batch`]); on SQLite the
/// insert joins the writer's next group commit.
pub async fn receive(store: &Store, e: NewInboxEvent) -> Result<bool> {
    if let Some(intake) = &store.intake {
        return intake.submit(e).await;
    }
    store
        .write_statement(move |tx| {
            Box::pin(async move {
                let events = std::slice::from_ref(&e);
                let n = with_tx!(tx, |c| {
                    let mut q = QueryBuilder::new("");
                    push_receive(&mut q, events, Timestamp::now().as_micros());
                    q.build().execute(c).await.map(|r| r.rows_affected())
                })?;
                Ok(n == 1)
            })
        })
        .await
}

/// Appends the `INSERT` of `events` to `q`, received at `now`; an event whose id is taken
/// (by one stored before, or one before it in `events`) is left out.
fn push_receive<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, events: &[NewInboxEvent], now: i64)
where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(
        "INSERT INTO webhook_events (source, id, type, object_id, created, payload, status, \
         next_attempt_at, received_at) ",
    );
    q.push_values(events, |mut b, e| {
        b.push_bind(e.source.to_string())
            .push_bind(e.id.clone())
            .push_bind(e.kind.clone())
            .push_bind(e.object_id.clone())
            .push_bind(e.created)
            .push_bind(e.payload.clone())
            .push("'pending'")
            .push_bind(now)
            .push_bind(now);
    });
    q.push(" ON CONFLICT (source, id) DO NOTHING");
}

/// Deliveries arriving together, as one statement on PostgreSQL: each learns whether its
/// event is new. Of two deliveries of one event in the same statement, the first stores it.
impl Batchable for NewInboxEvent {
    type Out = bool;

    fn run<'c>(
        conn: &'c mut PgConnection,
        jobs: &'c [Self],
    ) -> BoxFuture<'c, std::result::Result<Vec<bool>, sqlx::Error>> {
        Box::pin(async move {
            let mut q = QueryBuilder::new("");
            push_receive(&mut q, jobs, Timestamp::now().as_micros());
            q.push(" RETURNING source, id");
            let stored: HashSet<(String, String)> = q
                .build_query_as::<(String, String)>()
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
            let mut claimed = HashSet::new();
            Ok(jobs
                .iter()
                .map(|e| {
                    let key = (e.source.to_string(), e.id.clone());
                    stored.contains(&key) && claimed.insert(key)
                })
                .collect())
        })
    }

    /// A large payload counts as several rows, so that a statement of the biggest
    /// deliveries (the API takes bodies up to 256 KiB) stays within about 8 MiB.
    fn weight(&self) -> usize {
        1 + self.payload.len() / (16 * 1024)
    }
}

/// Claims up to `limit` due events for `lock_secs`, oldest (by the gateway's clock) first.
pub async fn claim_due(store: &Store, limit: i64, lock_secs: i64) -> Result<Vec<InboxEvent>> {
    let skip_locked = crate::skip_locked(store);
    let mut events = store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now();
                let sql = format!(
                    "UPDATE webhook_events SET locked_until = $1, attempts = attempts + 1
                      WHERE (source, id) IN (
                          SELECT source, id FROM webhook_events
                           WHERE status = 'pending' AND next_attempt_at <= $2
                             AND (locked_until IS NULL OR locked_until < $2)
                           ORDER BY created, received_at LIMIT $3 {})
                      RETURNING source, id, type, object_id, created, payload, attempts, received_at",
                    skip_locked
                );
                let rows: Vec<InboxEvent> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(now.add_secs(lock_secs).as_micros())
                    .bind(now.as_micros())
                    .bind(limit)
                    .fetch_all(c)
                    .await)?;
                Ok::<_, crate::StoreError>(rows)
            })
        })
        .await?;
    events.sort_by_key(|e| (e.created, e.received_at));
    Ok(events)
}

/// Records how an event ended (`processed` or `ignored`, with why), in the transaction that
/// applied it.
pub async fn finish(
    tx: &mut Tx,
    source: &str,
    id: &str,
    status: &str,
    note: Option<&str>,
) -> Result<()> {
    with_tx!(tx, |c| {
        sqlx::query(
        "UPDATE webhook_events SET status = $3, last_error = $4, processed_at = $5, locked_until = NULL
          WHERE source = $1 AND id = $2"
    )
    .bind(source)
    .bind(id)
    .bind(status)
    .bind(note)
    .bind(Timestamp::now().as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Schedules another attempt with exponential backoff, or parks the event as `failed`
/// after [`MAX_ATTEMPTS`].
pub async fn retry_later(store: &Store, e: &InboxEvent, error: String) -> Result<()> {
    let status = if e.attempts >= MAX_ATTEMPTS {
        "failed"
    } else {
        "pending"
    };
    let delay = hephaestus_core::time::backoff_secs(e.attempts, RETRY_CAP_SECS);
    reschedule(store, e, status, error, delay).await
}

/// The longest wait between two attempts of a failing event; it is parked long before
/// (2, 4, … 256 s over its [`MAX_ATTEMPTS`]).
const RETRY_CAP_SECS: i64 = 1 << 12;

/// The longest wait between two tries of an event waiting for an object it names.
pub const WAIT_CAP_SECS: i64 = 3600;

/// Seconds before the next try of an event waiting for an object it names, after its
/// `attempts`-th: doubling from 2 s, at most [`WAIT_CAP_SECS`].
pub const fn wait_delay(attempts: i64) -> i64 {
    hephaestus_core::time::backoff_secs(attempts, WAIT_CAP_SECS)
}

/// Schedules another try of an event that names an object not here yet ([`wait_delay`]).
/// It stays pending however many tries it took: its handler decides when to stop waiting.
pub async fn wait_later(store: &Store, e: &InboxEvent, why: String) -> Result<()> {
    reschedule(store, e, "pending", why, wait_delay(e.attempts)).await
}

async fn reschedule(
    store: &Store,
    e: &InboxEvent,
    status: &'static str,
    note: String,
    delay_secs: i64,
) -> Result<()> {
    let (source, id) = (e.source.clone(), e.id.clone());
    store
        .write(move |tx| {
            Box::pin(async move {
                let next = Timestamp::now().add_secs(delay_secs);
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE webhook_events SET status = $3, last_error = $4, next_attempt_at = $5,
                         locked_until = NULL WHERE source = $1 AND id = $2"
                )
                .bind(&source)
                .bind(&id)
                .bind(status)
                .bind(&note)
                .bind(next.as_micros())
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok::<_, crate::StoreError>(())
            })
        })
        .await
}

/// An event's status and attempts, for operators and tests.
pub async fn status(
    store: &Store,
    source: &str,
    id: &str,
) -> Result<Option<(String, i64, Option<String>)>> {
    Ok(with_read!(store, |e| sqlx::query_as(
        "SELECT status, attempts, last_error FROM webhook_events WHERE source = $1 AND id = $2"
    )
    .bind(source)
    .bind(id)
    .fetch_optional(e)
    .await)?)
}

/// Events not yet finished; for readiness and tests.
pub async fn pending_count(store: &Store) -> Result<i64> {
    Ok(with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_events WHERE status = 'pending'"
    )
    .fetch_one(e)
    .await)?)
}

/// An inbox entry as operators see it (without the payload).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEntry {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created: i64,
    pub received_at: i64,
    pub processed_at: Option<i64>,
}

/// A page of one source's events, most recently received first, optionally of one status,
/// after the event `starting_after`.
pub async fn list(
    store: &Store,
    source: &str,
    status: Option<&str>,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<InboxEntry>> {
    Ok(with_read!(store, |e| {
        sqlx::query_as(
        "SELECT id, type, object_id, status, attempts, last_error, created, received_at, processed_at
           FROM webhook_events
          WHERE source = $1 AND ($2 IS NULL OR status = $2)
            AND ($3 IS NULL OR (received_at, id) <
                 (SELECT received_at, id FROM webhook_events WHERE source = $1 AND id = $3))
          ORDER BY received_at DESC, id DESC LIMIT $4"
    )
    .bind(source)
    .bind(status)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(e)
    .await
    })?)
}

/// Puts a finished event (`failed` or `ignored`) back in the queue with a fresh attempt
/// budget, for an operator who fixed what made it fail. `false` if there is no such
/// finished event.
pub async fn requeue(tx: &mut Tx, source: &str, id: &str) -> Result<bool> {
    let n = with_tx!(tx, |c| sqlx::query(
        "UPDATE webhook_events
            SET status = 'pending', attempts = 0, next_attempt_at = $3, locked_until = NULL,
                processed_at = NULL
          WHERE source = $1 AND id = $2 AND status IN ('failed', 'ignored')"
    )
    .bind(source)
    .bind(id)
    .bind(Timestamp::now().as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}
