use hephaestus_core::{Timestamp, ids};

use crate::{Result, Store, Tx, with_read, with_tx};

/// One mutating request, as the audit log keeps it. No bodies: the log must not become a
/// second copy of personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub api_key_id: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub request_id: Option<String>,
    pub created_at: Timestamp,
}

impl AuditEntry {
    pub fn new(
        api_key_id: Option<String>,
        method: &str,
        path: &str,
        status: u16,
        request_id: Option<String>,
    ) -> Self {
        Self {
            id: ids::new_id(ids::prefix::AUDIT),
            api_key_id,
            method: method.to_string(),
            path: path.to_string(),
            status,
            request_id,
            created_at: Timestamp::now(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    api_key_id: Option<String>,
    method: String,
    path: String,
    status: i64,
    request_id: Option<String>,
    created_at: i64,
}

/// Adds an entry to the transaction; it is written when the transaction commits.
pub fn record(tx: &mut Tx, e: AuditEntry) {
    tx.appends.audit.push(e);
}

/// Writes buffered entries, in order, as one statement.
pub(crate) async fn insert_all(tx: &mut Tx, entries: &[AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    with_tx!(tx, |c| {
        let mut q = sqlx::QueryBuilder::new("");
        push_insert(&mut q, entries);
        q.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Appends the `INSERT` of `entries` to `q` (alone, or after the event log's in one
/// statement).
pub(crate) fn push_insert<'r, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    entries: impl IntoIterator<Item = &'r AuditEntry>,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("INSERT INTO audit_log (id, api_key_id, method, path, status, request_id, created_at) ");
    q.push_values(entries, |mut row, e| {
        row.push_bind(e.id.clone())
            .push_bind(e.api_key_id.clone())
            .push_bind(e.method.clone())
            .push_bind(e.path.clone())
            .push_bind(i64::from(e.status))
            .push_bind(e.request_id.clone())
            .push_bind(e.created_at.as_micros());
    });
}

/// Records an entry in a transaction of its own, for requests that changed nothing.
pub async fn record_alone(store: &Store, e: &AuditEntry) -> Result<()> {
    let mut tx = store.begin().await?;
    record(&mut tx, e.clone());
    tx.commit().await
}

/// A page of the log, newest first, after the entry `starting_after` when given.
pub async fn list(
    store: &Store,
    limit: i64,
    starting_after: Option<&str>,
) -> Result<Vec<AuditEntry>> {
    let rows: Vec<AuditRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT id, api_key_id, method, path, status, request_id, created_at
           FROM audit_log
          WHERE ($1 IS NULL OR seq < (SELECT seq FROM audit_log WHERE id = $1))
          ORDER BY seq DESC LIMIT $2"
    )
    .bind(starting_after)
    .bind(limit)
    .fetch_all(e)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            api_key_id: r.api_key_id,
            method: r.method,
            path: r.path,
            status: u16::try_from(r.status).unwrap_or(0),
            request_id: r.request_id,
            created_at: Timestamp::from_micros(r.created_at),
        })
        .collect())
}
