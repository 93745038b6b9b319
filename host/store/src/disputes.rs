use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_read, with_tx};

/// A dispute as the host records it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Dispute {
    pub id: String,
    pub gateway_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: Option<String>,
    /// As the gateway names it: `warning_needs_response`, `needs_response`, `under_review`,
    /// `won`, `lost`, …
    pub status: String,
    pub funds_withdrawn_minor: i64,
    pub funds_reinstated_minor: i64,
    /// The gateway creation time (Unix seconds) of the newest event applied.
    pub gateway_event_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, gateway_id, payment_id, amount_minor, currency, reason, status, \
     funds_withdrawn_minor, funds_reinstated_minor, gateway_event_at, created_at, updated_at";

/// The dispute with this gateway id, if recorded.
pub async fn by_gateway_id(tx: &mut Tx, gateway_id: &str) -> Result<Option<Dispute>> {
    let sql = format!("SELECT {COLUMNS} FROM disputes WHERE gateway_id = $1");
    Ok(with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(gateway_id)
        .fetch_optional(c)
        .await)?)
}

/// Inserts a new dispute or overwrites the recorded one (matched by gateway id); the caller
/// has decided the data is not older than what is stored.
pub async fn save(tx: &mut Tx, d: &Dispute) -> Result<()> {
    with_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO disputes (id, gateway_id, payment_id, amount_minor, currency, reason, status,
             funds_withdrawn_minor, funds_reinstated_minor, gateway_event_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (gateway_id) DO UPDATE SET
             amount_minor = excluded.amount_minor, reason = excluded.reason, status = excluded.status,
             funds_withdrawn_minor = excluded.funds_withdrawn_minor,
             funds_reinstated_minor = excluded.funds_reinstated_minor,
             gateway_event_at = excluded.gateway_event_at, updated_at = excluded.updated_at"
    )
    .bind(&d.id)
    .bind(&d.gateway_id)
    .bind(&d.payment_id)
    .bind(d.amount_minor)
    .bind(&d.currency)
    .bind(&d.reason)
    .bind(&d.status)
    .bind(d.funds_withdrawn_minor)
    .bind(d.funds_reinstated_minor)
    .bind(d.gateway_event_at)
    .bind(d.created_at)
    .bind(d.updated_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A payment's disputes, oldest first.
pub async fn of_payment(store: &Store, payment_id: &str) -> Result<Vec<Dispute>> {
    let sql =
        format!("SELECT {COLUMNS} FROM disputes WHERE payment_id = $1 ORDER BY created_at, id");
    Ok(with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(payment_id)
    .fetch_all(e)
    .await)?)
}

/// A fresh record for a dispute first heard of now.
pub fn new(gateway_id: &str, payment_id: &str, currency: &str) -> Dispute {
    let now = Timestamp::now().as_micros();
    Dispute {
        id: hephaestus_core::ids::new_id(hephaestus_core::ids::prefix::DISPUTE),
        gateway_id: gateway_id.to_string(),
        payment_id: payment_id.to_string(),
        amount_minor: 0,
        currency: currency.to_string(),
        reason: None,
        status: "needs_response".into(),
        funds_withdrawn_minor: 0,
        funds_reinstated_minor: 0,
        gateway_event_at: None,
        created_at: now,
        updated_at: now,
    }
}
