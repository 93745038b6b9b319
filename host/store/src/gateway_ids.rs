//! Which gateway object mirrors which of ours: a customer's Stripe customer (migration 0009),
//! a price's Stripe plan (migration 0011). One row per gateway and object of ours, made the
//! first time the gateway needs it.
//!
//! A customer's mirror is erased with the customer (migration 0012): the erasure marks it
//! ([`request_erasure`]), and a background pass claims due mirrors with a lease
//! ([`claim_erasures`]), deletes them at the gateway and records the outcome ([`erased`],
//! [`erase_failed`]).

use hephaestus_core::Timestamp;

use crate::payments::row_lock;
use crate::{Result, Store, StoreError, Tx, with_read, with_tx};

/// The kinds of object a gateway mirrors, each with its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    Customer,
    Price,
}

impl Mirror {
    /// Table, our id's column, the gateway's id's column: fixed names, never input.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Mirror::Customer => ("gateway_customers", "customer_id", "gateway_customer_id"),
            Mirror::Price => ("gateway_prices", "price_id", "gateway_price_id"),
        }
    }
}

/// The gateway's id for our object `ours`, if it has one yet.
pub async fn find(
    store: &Store,
    gateway: &str,
    mirror: Mirror,
    ours: &str,
) -> Result<Option<String>> {
    let (table, ours_col, theirs_col) = mirror.names();
    let sql = format!("SELECT {theirs_col} FROM {table} WHERE gateway = $1 AND {ours_col} = $2");
    Ok(with_read!(store, |e| sqlx::query_scalar(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(gateway)
    .bind(ours)
    .fetch_optional(e)
    .await)?)
}

/// Our object mirrored by the gateway's `theirs`, if it is one of ours.
pub async fn ours_in(
    tx: &mut Tx,
    gateway: &str,
    mirror: Mirror,
    theirs: &str,
) -> Result<Option<String>> {
    let (table, ours_col, theirs_col) = mirror.names();
    let sql = format!("SELECT {ours_col} FROM {table} WHERE gateway = $1 AND {theirs_col} = $2");
    Ok(with_tx!(tx, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(gateway)
    .bind(theirs)
    .fetch_optional(c)
    .await)?)
}

/// Records that the gateway's `theirs` mirrors our `ours`, and returns the id that stands:
/// when two first uses raced, the first row recorded is kept and both use it.
pub async fn remember(
    store: &Store,
    gateway: &str,
    mirror: Mirror,
    ours: &str,
    theirs: &str,
) -> Result<Option<String>> {
    let (table, ours_col, theirs_col) = mirror.names();
    let sql = format!(
        "INSERT INTO {table} (gateway, {ours_col}, {theirs_col}, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (gateway, {ours_col}) DO NOTHING"
    );
    let (gateway_owned, ours_owned, theirs_owned) =
        (gateway.to_string(), ours.to_string(), theirs.to_string());
    store
        .write(move |tx| {
            Box::pin(async move {
                // A customer erased while its mirror was being made (its first charge was in
                // flight) gets a mirror made with its details, due for erasure at once. The
                // customer's row is locked first: an erasure committing meanwhile is seen
                // here, and one that starts later finds this mirror to mark.
                let erased = match mirror {
                    Mirror::Customer => customer_erased_at(tx, &ours_owned).await?,
                    Mirror::Price => None,
                };
                with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&gateway_owned)
                    .bind(&ours_owned)
                    .bind(&theirs_owned)
                    .bind(Timestamp::now().as_micros())
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected()))?;
                if let Some(at) = erased {
                    request_erasure(tx, &ours_owned, Timestamp::from_micros(at)).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .await?;
    find(store, gateway, mirror, ours).await
}

/// When the customer was erased, if it was, with its row locked for the transaction.
async fn customer_erased_at(tx: &mut Tx, customer_id: &str) -> Result<Option<i64>> {
    let sql = format!(
        "SELECT erased_at FROM customers WHERE id = $1{}",
        row_lock(tx)
    );
    let erased: Option<Option<i64>> =
        with_tx!(tx, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .fetch_optional(c)
            .await)?;
    Ok(erased.flatten())
}

/// Marks every gateway mirror of the customer due for erasure, in the transaction that
/// erases the customer. Returns how many were marked.
pub async fn request_erasure(tx: &mut Tx, customer_id: &str, now: Timestamp) -> Result<u64> {
    Ok(with_tx!(tx, |c| sqlx::query(
        "UPDATE gateway_customers SET erase_requested_at = $2, erase_next_attempt_at = $2
          WHERE customer_id = $1 AND erase_requested_at IS NULL"
    )
    .bind(customer_id)
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// A gateway's copy of an erased customer, claimed for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub customer_id: String,
    pub gateway_customer_id: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// Claims up to `limit` mirrors kept by `gateway` whose erasure is due, for `lease_secs`:
/// no other host claims them until the lease runs out or the outcome is recorded.
pub async fn claim_erasures(
    store: &Store,
    gateway: &str,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Erasure>> {
    let skip_locked = crate::skip_locked(store);
    let gateway = gateway.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now();
                let sql = format!(
                    "UPDATE gateway_customers
                        SET erase_locked_until = $2, erase_attempts = erase_attempts + 1
                      WHERE (gateway, customer_id) IN (
                          SELECT gateway, customer_id FROM gateway_customers
                           WHERE gateway = $1 AND erase_requested_at IS NOT NULL
                             AND erased_at IS NULL AND erase_next_attempt_at <= $3
                             AND (erase_locked_until IS NULL OR erase_locked_until < $3)
                           ORDER BY erase_next_attempt_at LIMIT $4 {})
                      RETURNING customer_id, gateway_customer_id, erase_attempts",
                    skip_locked
                );
                let rows: Vec<(String, String, i64)> =
                    with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(&gateway)
                        .bind(now.add_secs(lease_secs).as_micros())
                        .bind(now.as_micros())
                        .bind(limit)
                        .fetch_all(c)
                        .await)?;
                Ok::<_, StoreError>(
                    rows.into_iter()
                        .map(|(customer_id, gateway_customer_id, attempts)| Erasure {
                            customer_id,
                            gateway_customer_id,
                            attempts,
                        })
                        .collect(),
                )
            })
        })
        .await
}

/// Records that the gateway's copy of the customer is gone.
pub async fn erased(store: &Store, gateway: &str, customer_id: &str) -> Result<()> {
    let (gateway, customer_id) = (gateway.to_string(), customer_id.to_string());
    store
        .write(move |tx| {
            Box::pin(async move {
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE gateway_customers
                        SET erased_at = $3, erase_locked_until = NULL,
                            erase_next_attempt_at = NULL, erase_last_error = NULL
                      WHERE gateway = $1 AND customer_id = $2 AND erased_at IS NULL"
                )
                .bind(&gateway)
                .bind(&customer_id)
                .bind(Timestamp::now().as_micros())
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok::<_, StoreError>(())
            })
        })
        .await
}

/// Records a failed attempt to delete the gateway's copy: the next is due at `retry_at`.
pub async fn erase_failed(
    store: &Store,
    gateway: &str,
    customer_id: &str,
    error: &str,
    retry_at: Timestamp,
) -> Result<()> {
    let (gateway, customer_id, error) = (
        gateway.to_string(),
        customer_id.to_string(),
        error.to_string(),
    );
    store
        .write(move |tx| {
            Box::pin(async move {
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE gateway_customers
                        SET erase_locked_until = NULL, erase_next_attempt_at = $3,
                            erase_last_error = $4
                      WHERE gateway = $1 AND customer_id = $2 AND erased_at IS NULL"
                )
                .bind(&gateway)
                .bind(&customer_id)
                .bind(retry_at.as_micros())
                .bind(&error)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok::<_, StoreError>(())
            })
        })
        .await
}

/// Where the erasure of a customer's mirror stands, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ErasureState {
    pub erase_requested_at: Option<i64>,
    pub erased_at: Option<i64>,
    pub erase_attempts: i64,
    pub erase_last_error: Option<String>,
}

/// The erasure state of the customer's mirror at `gateway`, if it has one.
pub async fn erasure_state(
    store: &Store,
    gateway: &str,
    customer_id: &str,
) -> Result<Option<ErasureState>> {
    Ok(with_read!(store, |e| sqlx::query_as(
        "SELECT erase_requested_at, erased_at, erase_attempts, erase_last_error
           FROM gateway_customers WHERE gateway = $1 AND customer_id = $2"
    )
    .bind(gateway)
    .bind(customer_id)
    .fetch_optional(e)
    .await)?)
}
