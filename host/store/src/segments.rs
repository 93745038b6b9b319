//! Customer segments as last decided, one row of state per customer and one row per tag
//! (see migration 0010). Written by the segment consumer, read by customer views and lists.

use std::collections::HashMap;

use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, with_read, with_tx};

/// A customer's stored segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    /// The plugin version that served the slot, or `default`.
    pub decided_by: String,
    /// Business-clock time of the computation.
    pub computed_at: Timestamp,
    /// What could not be judged and why (money left out for want of an exchange rate).
    pub note: Option<String>,
}

/// Replaces the customer's segments, unless what is stored was computed later (two hosts,
/// or the consumer and the sweep, can compute one customer at once). Returns the tags held
/// before (empty if none were computed yet), or `None` when a newer computation is kept.
pub async fn replace(
    tx: &mut Tx,
    customer_id: &str,
    segments: &Segments,
) -> Result<Option<Vec<String>>> {
    // The state row is written first: on PostgreSQL its row lock makes a concurrent
    // computation of the same customer wait here until this one commits.
    let written = with_tx!(tx, |c| sqlx::query(
        "INSERT INTO customer_segment_state (customer_id, decided_by, computed_at, note)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id) DO UPDATE
            SET decided_by = excluded.decided_by, computed_at = excluded.computed_at,
                note = excluded.note
          WHERE customer_segment_state.computed_at <= excluded.computed_at"
    )
    .bind(customer_id)
    .bind(&segments.decided_by)
    .bind(segments.computed_at.as_micros())
    .bind(&segments.note)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if written == 0 {
        return Ok(None);
    }
    let before: Vec<String> = with_tx!(tx, |c| sqlx::query_scalar(
        "SELECT segment FROM customer_segments WHERE customer_id = $1 ORDER BY segment"
    )
    .bind(customer_id)
    .fetch_all(c)
    .await)?;
    if before != segments.tags {
        delete_tags(tx, customer_id).await?;
        if !segments.tags.is_empty() {
            with_tx!(tx, |c| {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO customer_segments (customer_id, segment) ",
                );
                q.push_values(&segments.tags, |mut row, tag| {
                    row.push_bind(customer_id).push_bind(tag);
                });
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
    }
    Ok(Some(before))
}

/// Forgets a customer's segments (an erased customer is not segmented).
pub async fn forget(tx: &mut Tx, customer_id: &str) -> Result<()> {
    delete_tags(tx, customer_id).await?;
    with_tx!(tx, |c| sqlx::query(
        "DELETE FROM customer_segment_state WHERE customer_id = $1"
    )
    .bind(customer_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

async fn delete_tags(tx: &mut Tx, customer_id: &str) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "DELETE FROM customer_segments WHERE customer_id = $1"
    )
    .bind(customer_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The stored segments of each of `customer_ids` that has any computed.
pub async fn of_many(store: &Store, customer_ids: &[String]) -> Result<HashMap<String, Segments>> {
    if customer_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let states: Vec<(String, String, i64, Option<String>)> = with_read!(store, |e| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT customer_id, decided_by, computed_at, note FROM customer_segment_state
              WHERE customer_id IN (",
        );
        let mut list = q.separated(", ");
        for id in customer_ids {
            list.push_bind(id);
        }
        q.push(")");
        q.build_query_as().fetch_all(e).await
    })?;
    let tags: Vec<(String, String)> = with_read!(store, |e| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT customer_id, segment FROM customer_segments WHERE customer_id IN (",
        );
        let mut list = q.separated(", ");
        for id in customer_ids {
            list.push_bind(id);
        }
        q.push(") ORDER BY customer_id, segment");
        q.build_query_as().fetch_all(e).await
    })?;
    let mut out: HashMap<String, Segments> = states
        .into_iter()
        .map(|(id, decided_by, at, note)| {
            (
                id,
                Segments {
                    tags: Vec::new(),
                    decided_by,
                    computed_at: Timestamp::from_micros(at),
                    note,
                },
            )
        })
        .collect();
    for (id, tag) in tags {
        if let Some(s) = out.get_mut(&id) {
            s.tags.push(tag);
        }
    }
    Ok(out)
}

/// Customers (not erased) whose segments are missing, were computed before `older_than`,
/// or were decided by anything but `serving`: the ones a sweep recomputes, oldest first.
pub async fn stale(
    store: &Store,
    older_than: Timestamp,
    serving: &str,
    limit: i64,
) -> Result<Vec<String>> {
    Ok(with_read!(store, |e| sqlx::query_scalar(
        "SELECT c.id FROM customers c
           LEFT JOIN customer_segment_state s ON s.customer_id = c.id
          WHERE c.erased_at IS NULL
            AND (s.customer_id IS NULL OR s.computed_at < $1 OR s.decided_by <> $2)
          ORDER BY COALESCE(s.computed_at, 0), c.id
          LIMIT $3"
    )
    .bind(older_than.as_micros())
    .bind(serving)
    .bind(limit)
    .fetch_all(e)
    .await)?)
}
