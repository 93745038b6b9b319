//! Marketing spend (migration 0019): what each channel cost over a period of days.

use crate::{Result, Store, Tx, with_read, with_tx};

/// One entry of spend.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Spend {
    /// `msp_…`
    pub id: String,
    pub channel: String,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// First and last day (UTC days since the Unix epoch), both included.
    pub period_start: i64,
    pub period_end: i64,
    /// µs since the Unix epoch.
    pub created_at: i64,
}

const COLUMNS: &str = "id, channel, amount_minor, currency, period_start, period_end, created_at";

pub async fn insert(tx: &mut Tx, s: &Spend) -> Result<()> {
    let sql =
        format!("INSERT INTO marketing_spend ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&s.id)
        .bind(&s.channel)
        .bind(s.amount_minor)
        .bind(&s.currency)
        .bind(s.period_start)
        .bind(s.period_end)
        .bind(s.created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Entries newest first, after `starting_after` (an id), at most `limit`.
pub async fn list(store: &Store, limit: i64, starting_after: Option<&str>) -> Result<Vec<Spend>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM marketing_spend WHERE ($1 IS NULL OR id < $1)
          ORDER BY id DESC LIMIT $2"
    );
    Ok(with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(starting_after)
    .bind(limit)
    .fetch_all(e)
    .await)?)
}

/// Entries whose period overlaps the days `from..=to`.
pub async fn overlapping(store: &Store, from: i64, to: i64) -> Result<Vec<Spend>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM marketing_spend WHERE period_end >= $1 AND period_start <= $2
          ORDER BY id"
    );
    Ok(with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(from)
    .bind(to)
    .fetch_all(e)
    .await)?)
}
