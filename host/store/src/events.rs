use hephaestus_core::Timestamp;
use hephaestus_core::event::{Event, NewEvent};

use crate::{Result, Store, StoreError, Tx, with_read, with_tx};

/// Appends an event to the transaction that made the change it describes; it is written
/// when that transaction commits, and not at all if it does not.
pub fn append(tx: &mut Tx, e: NewEvent) {
    tx.appends.events.push(e);
}

/// Writes buffered events, in order, as one statement.
pub(crate) async fn insert_all(tx: &mut Tx, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    with_tx!(tx, |c| {
        let mut q = sqlx::QueryBuilder::new("");
        push_insert(&mut q, events);
        q.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Appends the `INSERT` of `events` to `q` (alone, or inside a statement that also writes
/// the audit log).
pub(crate) fn push_insert<'r, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    events: impl IntoIterator<Item = &'r NewEvent>,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    &'static str: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("INSERT INTO events (id, type, customer_id, subject_id, data, occurred_at) ");
    q.push_values(events, |mut row, e| {
        row.push_bind(e.id.clone())
            .push_bind(e.kind)
            .push_bind(e.customer_id.clone())
            .push_bind(e.subject_id.clone())
            .push_bind(e.data.to_string())
            .push_bind(e.occurred_at.as_micros());
    });
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    #[sqlx(rename = "type")]
    kind: String,
    customer_id: Option<String>,
    subject_id: String,
    data: String,
    occurred_at: i64,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self> {
        Ok(Event {
            data: serde_json::from_str(&r.data)
                .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", r.id)))?,
            seq: r.seq,
            id: r.id,
            kind: r.kind,
            customer_id: r.customer_id,
            subject_id: r.subject_id,
            occurred_at: Timestamp::from_micros(r.occurred_at),
        })
    }
}

/// One event by its id (`evt_…`).
pub async fn get(store: &Store, id: &str) -> Result<Option<Event>> {
    let row: Option<EventRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT seq, id, type, customer_id, subject_id, data, occurred_at
           FROM events WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(e)
    .await)?;
    row.map(Event::try_from).transpose()
}

/// Every event about one customer, oldest first.
pub async fn for_customer(store: &Store, customer_id: &str) -> Result<Vec<Event>> {
    let rows: Vec<EventRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT seq, id, type, customer_id, subject_id, data, occurred_at
           FROM events WHERE customer_id = $1 ORDER BY seq"
    )
    .bind(customer_id)
    .fetch_all(e)
    .await)?;
    rows.into_iter().map(Event::try_from).collect()
}

/// Events after position `after_seq`, oldest first: how consumers read the log. On
/// PostgreSQL only events whose transaction is older than every transaction still running
/// are returned, so a reader that moves past a position never misses an event that was
/// assigned a lower `seq` but commits later. (SQLite's single writer commits in `seq` order.)
pub async fn after(store: &Store, after_seq: i64, limit: i64) -> Result<Vec<Event>> {
    let visible = match store.backend() {
        crate::Backend::Postgres(_) => "AND tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        crate::Backend::Sqlite(_) => "",
    };
    let sql = format!(
        "SELECT seq, id, type, customer_id, subject_id, data, occurred_at
           FROM events WHERE seq > $1 {visible} ORDER BY seq LIMIT $2"
    );
    let rows: Vec<EventRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Event::try_from).collect()
}
