use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_read, with_tx};

/// One rate: 1 `base` = `rate` `quote`. The rate is kept as the decimal text it was given.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExchangeRate {
    pub id: String,
    pub base: String,
    pub quote: String,
    pub rate: String,
    pub source: String,
    pub created_at: i64,
}

pub async fn insert(tx: &mut Tx, r: &ExchangeRate) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO exchange_rates (id, base, quote, rate, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(&r.id)
    .bind(&r.base)
    .bind(&r.quote)
    .bind(&r.rate)
    .bind(&r.source)
    .bind(r.created_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The newest rate of every pair.
pub async fn latest(store: &Store) -> Result<Vec<ExchangeRate>> {
    Ok(with_read!(store, |e| {
        sqlx::query_as(
        "SELECT r.id, r.base, r.quote, r.rate, r.source, r.created_at FROM exchange_rates r
          WHERE r.id = (SELECT MAX(x.id) FROM exchange_rates x WHERE x.base = r.base AND x.quote = r.quote)
          ORDER BY r.base, r.quote"
    )
    .fetch_all(e)
    .await
    })?)
}

/// Net captured amounts per currency: (currency, payments, gross minor, refunded minor).
pub async fn captured_by_currency(
    store: &Store,
    created_gte: Option<Timestamp>,
    created_lte: Option<Timestamp>,
) -> Result<Vec<(String, i64, i64, i64)>> {
    Ok(with_read!(store, |e| {
        sqlx::query_as(
        "SELECT currency, COUNT(*), CAST(SUM(amount_minor) AS BIGINT), CAST(SUM(amount_refunded_minor) AS BIGINT)
           FROM payments
          WHERE status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')
            AND ($1 IS NULL OR created_at >= $1) AND ($2 IS NULL OR created_at <= $2)
          GROUP BY currency ORDER BY currency"
    )
    .bind(created_gte.map(Timestamp::as_micros))
    .bind(created_lte.map(Timestamp::as_micros))
    .fetch_all(e)
    .await
    })?)
}
