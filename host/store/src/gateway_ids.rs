//! Which gateway object mirrors which of ours: a customer's Stripe customer (migration 0009),
//! a price's Stripe plan (migration 0011). One row per gateway and object of ours, made the
//! first time the gateway needs it.

use hephaestus_core::Timestamp;

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
                with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&gateway_owned)
                    .bind(&ours_owned)
                    .bind(&theirs_owned)
                    .bind(Timestamp::now().as_micros())
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected()))?;
                Ok::<_, StoreError>(())
            })
        })
        .await?;
    find(store, gateway, mirror, ours).await
}
