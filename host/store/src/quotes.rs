//! Stored quotes: the price a pricing plugin (or the built-in default) decided for one
//! customer, which a payment or a subscription made from it charges exactly.
//!
//! A quote is used once. The request using it claims it before it calls its gateway (with
//! the gateway idempotency key of that call, so a retry of the same request may claim it
//! again and a different request may not), and marks it used in the transaction that
//! records the payment or subscription.

use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_read, with_tx};

/// One stored quote.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Quote {
    pub id: String,
    pub customer_id: String,
    pub product_id: String,
    pub price_id: String,
    pub quantity: i64,
    pub currency: String,
    pub list_amount_minor: i64,
    pub amount_minor: i64,
    pub discount_minor: i64,
    pub reason: String,
    /// JSON array of the segment tags the quote was decided with.
    pub segments: String,
    /// `plugin` or `default`.
    pub decided_by: String,
    pub plugin: Option<String>,
    /// The plugin's content hash.
    pub plugin_version: Option<String>,
    /// Why the default decided (no_plugin, fault, …).
    pub default_reason: Option<String>,
    pub fuel_used: i64,
    /// How long deciding took, in µs.
    pub decide_us: i64,
    pub created_at: i64,
    /// Business time after which it can no longer be used.
    pub expires_at: i64,
    pub used_by: Option<String>,
    pub used_at: Option<i64>,
}

const COLUMNS: &str = "id, customer_id, product_id, price_id, quantity, currency, \
     list_amount_minor, amount_minor, discount_minor, reason, segments, decided_by, plugin, \
     plugin_version, default_reason, fuel_used, decide_us, created_at, expires_at, used_by, \
     used_at";

pub async fn insert(tx: &mut Tx, q: &Quote) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO quotes (id, customer_id, product_id, price_id, quantity, currency,
             list_amount_minor, amount_minor, discount_minor, reason, segments, decided_by,
             plugin, plugin_version, default_reason, created_at, expires_at, fuel_used,
             decide_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)"
    )
    .bind(&q.id)
    .bind(&q.customer_id)
    .bind(&q.product_id)
    .bind(&q.price_id)
    .bind(q.quantity)
    .bind(&q.currency)
    .bind(q.list_amount_minor)
    .bind(q.amount_minor)
    .bind(q.discount_minor)
    .bind(&q.reason)
    .bind(&q.segments)
    .bind(&q.decided_by)
    .bind(&q.plugin)
    .bind(&q.plugin_version)
    .bind(&q.default_reason)
    .bind(q.created_at)
    .bind(q.expires_at)
    .bind(q.fuel_used)
    .bind(q.decide_us)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Quote>> {
    let sql = format!("SELECT {COLUMNS} FROM quotes WHERE id = $1");
    Ok(with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(id)
    .fetch_optional(e)
    .await)?)
}

/// Why a quote could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    OtherCustomer,
    Expired,
    /// Used by this payment or subscription.
    Used(String),
    /// Another request holds it right now.
    InUse,
}

/// Claims quote `id` for `customer_id` on behalf of the request whose gateway call uses
/// `claim_key`, for `hold_secs` of real time. The same key may claim it again (a retried
/// request); another key only once the hold has run out. Business time `now` decides
/// expiry.
pub async fn claim(
    store: &Store,
    id: &str,
    customer_id: &str,
    claim_key: &str,
    now: Timestamp,
    hold_secs: i64,
) -> Result<std::result::Result<Quote, Unusable>> {
    let real_now = Timestamp::now().as_micros();
    let until = real_now.saturating_add(hold_secs.saturating_mul(1_000_000));
    let sql = format!(
        "UPDATE quotes SET claim_key = $3, claimed_until = $4
          WHERE id = $1 AND customer_id = $2 AND used_by IS NULL AND expires_at > $5
            AND (claim_key IS NULL OR claim_key = $3 OR claimed_until < $6)
          RETURNING {COLUMNS}"
    );
    let quote_id = id.to_string();
    let (id, customer, key) = (
        id.to_string(),
        customer_id.to_string(),
        claim_key.to_string(),
    );
    let now = now.as_micros();
    let claimed: Option<Quote> = store
        .write_statement(move |tx| {
            Box::pin(async move {
                Ok::<_, crate::StoreError>(with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(
                    sql
                ))
                .bind(&id)
                .bind(&customer)
                .bind(&key)
                .bind(until)
                .bind(now)
                .bind(real_now)
                .fetch_optional(c)
                .await)?)
            })
        })
        .await?;
    if let Some(q) = claimed {
        return Ok(Ok(q));
    }
    // Say why, from what is stored now.
    let Some(q) = get(store, &quote_id).await? else {
        return Ok(Err(Unusable::Missing));
    };
    Ok(Err(if q.customer_id != customer_id {
        Unusable::OtherCustomer
    } else if let Some(by) = q.used_by {
        Unusable::Used(by)
    } else if q.expires_at <= now {
        Unusable::Expired
    } else {
        Unusable::InUse
    }))
}

/// Lets another request use the quote again: the request holding it charged nothing (its
/// gateway failed, or the card was declined).
pub async fn release(store: &Store, id: &str, claim_key: &str) -> Result<()> {
    let (id, key) = (id.to_string(), claim_key.to_string());
    store
        .write_statement(move |tx| Box::pin(async move { release_in(tx, &id, &key).await }))
        .await
}

/// [`release`], inside a transaction.
pub async fn release_in(tx: &mut Tx, id: &str, claim_key: &str) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "UPDATE quotes SET claim_key = NULL, claimed_until = NULL
          WHERE id = $1 AND claim_key = $2 AND used_by IS NULL"
    )
    .bind(id)
    .bind(claim_key)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Marks the quote used by `used_by` (a payment or subscription id), in the transaction
/// that records it. `false` if something else used it first, which can only happen when
/// the request ran past its claim's hold; the money has moved by then, so the caller
/// records its payment all the same.
pub async fn mark_used(tx: &mut Tx, id: &str, used_by: &str, at: Timestamp) -> Result<bool> {
    let n = with_tx!(tx, |c| sqlx::query(
        "UPDATE quotes SET used_by = $2, used_at = $3 WHERE id = $1 AND used_by IS NULL"
    )
    .bind(id)
    .bind(used_by)
    .bind(at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A quote, read inside a transaction.
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<Quote>> {
    let sql = format!("SELECT {COLUMNS} FROM quotes WHERE id = $1");
    Ok(with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?)
}
