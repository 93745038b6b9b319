//! Positions of the event log's consumers (customer segments and analytics now; campaign
//! triggers and experiments read the log the same way). A consumer is advanced by one host
//! at a time: [`claim`] leases it, [`advance`] moves it forward while the lease holds, and
//! [`release`] lets go. A host that dies holding a lease loses it when the lease runs out;
//! the events after the last recorded position are then read again, so a consumer's work
//! must be safe to repeat — or be written with [`advance_in`], in the transaction that moves
//! the position, as the analytics consumer's sums are.

use hephaestus_core::Timestamp;

use crate::{Result, Store, StoreError, Tx, with_read, with_tx};

/// A consumer held by one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// The `seq` of the last event handled.
    pub position: i64,
}

/// Takes the consumer `name` for `holder` for `lease_secs`, unless another holder has it.
/// A consumer seen for the first time starts before the first event.
pub async fn claim(
    store: &Store,
    name: &str,
    holder: &str,
    lease_secs: i64,
) -> Result<Option<Lease>> {
    let (name, holder) = (name.to_string(), holder.to_string());
    store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now();
                with_tx!(tx, |c| sqlx::query(
                    "INSERT INTO event_consumers (name, position, updated_at) VALUES ($1, 0, $2)
                     ON CONFLICT (name) DO NOTHING"
                )
                .bind(&name)
                .bind(now.as_micros())
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                let position: Option<i64> = with_tx!(tx, |c| sqlx::query_scalar(
                    "UPDATE event_consumers SET holder = $2, locked_until = $3
                      WHERE name = $1
                        AND (holder IS NULL OR holder = $2 OR locked_until < $4)
                      RETURNING position"
                )
                .bind(&name)
                .bind(&holder)
                .bind(now.add_secs(lease_secs).as_micros())
                .bind(now.as_micros())
                .fetch_optional(c)
                .await)?;
                Ok::<_, StoreError>(position.map(|position| Lease {
                    name,
                    holder,
                    position,
                }))
            })
        })
        .await
}

/// Records that `lease`'s consumer has handled every event up to `position`, and extends
/// the lease. Returns false (and changes nothing) if the lease was lost to another host.
pub async fn advance(
    store: &Store,
    lease: &mut Lease,
    position: i64,
    lease_secs: i64,
) -> Result<bool> {
    let (name, holder) = (lease.name.clone(), lease.holder.clone());
    let moved = store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now();
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE event_consumers
                        SET position = $3, locked_until = $4, updated_at = $5
                      WHERE name = $1 AND holder = $2 AND position <= $3"
                )
                .bind(&name)
                .bind(&holder)
                .bind(position)
                .bind(now.add_secs(lease_secs).as_micros())
                .bind(now.as_micros())
                .execute(c)
                .await
                .map(|r| r.rows_affected() == 1))
                .map_err(StoreError::from)
            })
        })
        .await?;
    if moved {
        lease.position = position;
    }
    Ok(moved)
}

/// Inside the transaction that records a consumer's work on the events after `from` up to
/// `to`: moves the position from `from` to `to` and extends the lease, if `holder` still
/// holds the consumer and it still stands at `from`. Returns false (and changes nothing)
/// otherwise; the caller must then leave its work undone (or roll it back). On PostgreSQL the row stays locked
/// until the transaction ends, so a second worker at the same position waits, then fails.
/// This is how a consumer whose work is not safe to repeat (sums) counts each event once.
pub async fn advance_in(
    tx: &mut Tx,
    name: &str,
    holder: &str,
    from: i64,
    to: i64,
    lease_secs: i64,
) -> Result<bool> {
    let now = Timestamp::now();
    let moved = with_tx!(tx, |c| sqlx::query(
        "UPDATE event_consumers
            SET position = $4, locked_until = $5, updated_at = $6
          WHERE name = $1 AND holder = $2 AND position = $3"
    )
    .bind(name)
    .bind(holder)
    .bind(from)
    .bind(to)
    .bind(now.add_secs(lease_secs).as_micros())
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected() == 1))?;
    Ok(moved)
}

/// Inside a transaction: gives the consumer `name` to `holder` for `lease_secs` whoever
/// holds it, at `position` (a rebuild starting over). A holder that loses it this way finds
/// out at its next [`advance_in`] or [`advance`], which then changes nothing.
pub async fn take_over(
    tx: &mut Tx,
    name: &str,
    holder: &str,
    position: i64,
    lease_secs: i64,
) -> Result<()> {
    let now = Timestamp::now();
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO event_consumers (name, position, holder, locked_until, updated_at)
         VALUES ($1, $3, $2, $4, $5)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, holder = excluded.holder,
           locked_until = excluded.locked_until, updated_at = excluded.updated_at"
    )
    .bind(name)
    .bind(holder)
    .bind(position)
    .bind(now.add_secs(lease_secs).as_micros())
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Gives the consumer `name` back if `holder` has it, so another host need not wait for
/// the lease to run out.
pub async fn release(store: &Store, name: &str, holder: &str) -> Result<()> {
    let (name, holder) = (name.to_string(), holder.to_string());
    store
        .write(move |tx| {
            Box::pin(async move {
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE event_consumers SET holder = NULL, locked_until = NULL
                      WHERE name = $1 AND holder = $2"
                )
                .bind(&name)
                .bind(&holder)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok::<_, StoreError>(())
            })
        })
        .await
}

/// Where the consumer `name` stands (0 if it never ran).
pub async fn position(store: &Store, name: &str) -> Result<i64> {
    let position: Option<i64> = with_read!(store, |e| sqlx::query_scalar(
        "SELECT position FROM event_consumers WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(e)
    .await)?;
    Ok(position.unwrap_or(0))
}

/// The `seq` of the newest event (0 for an empty log).
pub async fn head(store: &Store) -> Result<i64> {
    let seq: Option<i64> =
        with_read!(store, |e| sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(e)
            .await)?;
    Ok(seq.unwrap_or(0))
}
