use hephaestus_core::Timestamp;
use hephaestus_core::customer::{Customer, NewCustomer};

use crate::segments::Segments;
use crate::{Result, Store, StoreError, Tx, metadata_json, metadata_of, with_read, with_tx};

#[derive(sqlx::FromRow)]
pub(crate) struct CustomerRow {
    pub(crate) id: String,
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) metadata: String,
    pub(crate) default_payment_method: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) erased_at: Option<i64>,
}

impl TryFrom<CustomerRow> for Customer {
    type Error = StoreError;
    fn try_from(r: CustomerRow) -> Result<Self> {
        let metadata = metadata_of(&r.metadata, &r.id)?;
        Ok(Customer {
            id: r.id,
            email: r.email,
            name: r.name,
            metadata,
            default_payment_method: r.default_payment_method,
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
            erased_at: r.erased_at.map(Timestamp::from_micros),
        })
    }
}

const COLUMNS: &str =
    "id, email, name, metadata, default_payment_method, created_at, updated_at, erased_at";
/// [`COLUMNS`] of a customer aliased `c`, for joins.
const COLUMNS_OF_C: &str = "c.id, c.email, c.name, c.metadata, c.default_payment_method, c.created_at, c.updated_at, \
     c.erased_at";

/// Inserts a customer, or returns `Err(existing_id)` when the email is taken (compared
/// case-insensitively). Never fails on a duplicate, so a PostgreSQL transaction stays usable.
pub async fn insert(
    tx: &mut Tx,
    new: &NewCustomer,
    now: Timestamp,
) -> Result<std::result::Result<Customer, String>> {
    let metadata = metadata_json(&new.metadata)?;
    let inserted = with_tx!(&mut *tx, |c| sqlx::query(
        "INSERT INTO customers (id, email, email_key, name, metadata, created_at, updated_at,
             default_payment_method)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
         ON CONFLICT (email_key) DO NOTHING"
    )
    .bind(&new.id)
    .bind(&new.email)
    .bind(&new.email_key)
    .bind(&new.name)
    .bind(&metadata)
    .bind(now.as_micros())
    .bind(&new.default_payment_method)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if inserted == 1 {
        return Ok(Ok(Customer {
            id: new.id.clone(),
            email: Some(new.email.clone()),
            name: new.name.clone(),
            metadata: new.metadata.clone(),
            default_payment_method: new.default_payment_method.clone(),
            created_at: now,
            updated_at: now,
            erased_at: None,
        }));
    }
    let existing: String = with_tx!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM customers WHERE email_key = $1"
    )
    .bind(&new.email_key)
    .fetch_one(c)
    .await)?;
    Ok(Err(existing))
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Customer>> {
    let sql = format!("SELECT {COLUMNS} FROM customers WHERE id = $1");
    let row: Option<CustomerRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(e)
        .await)?;
    row.map(Customer::try_from).transpose()
}

/// A customer row with its stored segments' state and one of its tags (`None` for none).
#[derive(sqlx::FromRow)]
struct CustomerSegmentRow {
    #[sqlx(flatten)]
    customer: CustomerRow,
    decided_by: Option<String>,
    computed_at: Option<i64>,
    note: Option<String>,
    segment: Option<String>,
}

/// The customer with its stored segments (`None` until computed), in one statement: the
/// customer view is the busiest read, and each statement is a round trip.
pub async fn get_with_segments(
    store: &Store,
    id: &str,
) -> Result<Option<(Customer, Option<Segments>)>> {
    let sql = format!(
        "SELECT {COLUMNS_OF_C}, st.decided_by, st.computed_at, st.note, seg.segment
           FROM customers c
           LEFT JOIN customer_segment_state st ON st.customer_id = c.id
           LEFT JOIN customer_segments seg ON seg.customer_id = st.customer_id
          WHERE c.id = $1
          ORDER BY seg.segment"
    );
    let rows: Vec<CustomerSegmentRow> =
        with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(e)
            .await)?;
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let segments = match (first.decided_by, first.computed_at) {
        (Some(decided_by), Some(at)) => Some(Segments {
            tags: first
                .segment
                .into_iter()
                .chain(rows.filter_map(|r| r.segment))
                .collect(),
            decided_by,
            computed_at: Timestamp::from_micros(at),
            note: first.note,
        }),
        _ => None,
    };
    Ok(Some((Customer::try_from(first.customer)?, segments)))
}

/// What a customer list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// At most this many; the caller adds one to learn whether there is more.
    pub limit: i64,
    /// Only customers created before this one (lists run newest first).
    pub starting_after: Option<String>,
    /// Only the customer with this address, compared case-insensitively.
    pub email: Option<String>,
    /// Only customers whose stored segments include this tag.
    pub segment: Option<String>,
}

pub async fn list(store: &Store, q: &ListQuery) -> Result<Vec<Customer>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM customers
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR email_key = $2)
            AND ($4 IS NULL OR EXISTS (SELECT 1 FROM customer_segments s
                                        WHERE s.customer_id = customers.id AND s.segment = $4))
          ORDER BY id DESC LIMIT $3"
    );
    let email_key = q.email.as_ref().map(|e| e.trim().to_lowercase());
    let rows: Vec<CustomerRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&q.starting_after)
        .bind(&email_key)
        .bind(q.limit)
        .bind(&q.segment)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Customer::try_from).collect()
}

/// Writes `next` (a customer read in this transaction, with changes applied), unless it
/// was erased meanwhile. Returns `Err(existing_id)` when its email belongs to another
/// customer; the transaction stays usable either way.
pub async fn update(
    tx: &mut Tx,
    next: &Customer,
    now: Timestamp,
) -> Result<std::result::Result<bool, String>> {
    let metadata = metadata_json(&next.metadata)?;
    let email_key = next.email.as_ref().map(|e| e.to_lowercase());
    // A savepoint, so that losing a race for the address to another request (a unique
    // violation) does not abort the whole transaction on PostgreSQL.
    with_tx!(&mut *tx, |c| sqlx::query("SAVEPOINT customer_update")
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    let updated = with_tx!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE customers SET email = $2, email_key = $3, name = $4, metadata = $5, updated_at = $6,
             default_payment_method = $7
          WHERE id = $1 AND erased_at IS NULL"
    )
    .bind(&next.id)
    .bind(&next.email)
    .bind(&email_key)
    .bind(&next.name)
    .bind(&metadata)
    .bind(now.as_micros())
    .bind(&next.default_payment_method)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    });
    match updated {
        Ok(r) => {
            with_tx!(&mut *tx, |c| sqlx::query(
                "RELEASE SAVEPOINT customer_update"
            )
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            Ok(Ok(r == 1))
        }
        Err(e) if crate::is_unique_violation(&e) => {
            with_tx!(&mut *tx, |c| sqlx::query(
                "ROLLBACK TO SAVEPOINT customer_update"
            )
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            with_tx!(&mut *tx, |c| sqlx::query(
                "RELEASE SAVEPOINT customer_update"
            )
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            let existing: String = with_tx!(tx, |c| sqlx::query_scalar(
                "SELECT id FROM customers WHERE email_key = $1"
            )
            .bind(&email_key)
            .fetch_one(c)
            .await)?;
            Ok(Err(existing))
        }
        Err(e) => Err(e.into()),
    }
}

/// Erases a customer's personal data, keeping the row (and so every reference to the id).
/// Returns the erased record, or `None` if there is no such customer or it was erased before.
pub async fn erase(tx: &mut Tx, id: &str, now: Timestamp) -> Result<Option<Customer>> {
    let sql = format!(
        "UPDATE customers
            SET email = NULL, email_key = NULL, name = NULL, metadata = '{{}}',
                default_payment_method = NULL,
                updated_at = $2, erased_at = $2
          WHERE id = $1 AND erased_at IS NULL
          RETURNING {COLUMNS}"
    );
    let row: Option<CustomerRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(now.as_micros())
        .fetch_optional(c)
        .await)?;
    row.map(Customer::try_from).transpose()
}

/// Reads a customer inside a transaction.
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<Customer>> {
    let sql = format!("SELECT {COLUMNS} FROM customers WHERE id = $1");
    let row: Option<CustomerRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    row.map(Customer::try_from).transpose()
}

pub async fn count(store: &Store) -> Result<i64> {
    Ok(with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM customers"
    )
    .fetch_one(e)
    .await)?)
}

/// Saves `payment_method` as the customer's default (a successful payment asked for it).
pub async fn set_default_payment_method(
    tx: &mut Tx,
    id: &str,
    payment_method: &str,
    now: Timestamp,
) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "UPDATE customers SET default_payment_method = $2, updated_at = $3
          WHERE id = $1 AND erased_at IS NULL"
    )
    .bind(id)
    .bind(payment_method)
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
