use hephaestus_core::Timestamp;
use hephaestus_core::money::Money;
use hephaestus_core::payment::{Payment, PaymentStatus, Refund};

use crate::{
    Result, Store, StoreError, Tx, currency_of, metadata_json, metadata_of, with_read, with_tx,
};

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: String,
    customer_id: String,
    amount_minor: i64,
    currency: String,
    amount_refunded_minor: i64,
    status: String,
    payment_method: String,
    description: Option<String>,
    gateway: String,
    gateway_id: Option<String>,
    decline_code: Option<String>,
    failure_message: Option<String>,
    metadata: String,
    created_at: i64,
    updated_at: i64,
    gateway_event_at: Option<i64>,
    invoice_id: Option<String>,
    quote_id: Option<String>,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;
    fn try_from(r: PaymentRow) -> Result<Self> {
        let currency = currency_of(&r.currency, &r.id)?;
        let metadata = metadata_of(&r.metadata, &r.id)?;
        Ok(Payment {
            status: r.status.parse().map_err(StoreError::Corrupt)?,
            amount: Money {
                minor: r.amount_minor,
                currency,
            },
            id: r.id,
            customer_id: r.customer_id,
            amount_refunded_minor: r.amount_refunded_minor,
            payment_method: r.payment_method,
            description: r.description,
            gateway: r.gateway,
            gateway_id: r.gateway_id,
            decline_code: r.decline_code,
            failure_message: r.failure_message,
            metadata,
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
            gateway_event_at: r.gateway_event_at,
            invoice_id: r.invoice_id,
            quote_id: r.quote_id,
        })
    }
}

const COLUMNS: &str = "id, customer_id, amount_minor, currency, amount_refunded_minor, status, \
     payment_method, description, gateway, gateway_id, decline_code, failure_message, metadata, \
     created_at, updated_at, gateway_event_at, invoice_id, quote_id";

pub async fn insert(tx: &mut Tx, p: &Payment) -> Result<()> {
    insert_all(tx, &[NewPayment::of(p)?]).await
}

/// Inserts the payment when the transaction commits, with its event and audit rows (on
/// PostgreSQL a transaction of nothing else is then one statement). Only for a payment that
/// nothing later in the transaction reads, changes or points at (an invoice, a dispute).
pub fn insert_at_commit(tx: &mut Tx, p: &Payment) -> Result<()> {
    tx.appends.payments.push(NewPayment::of(p)?);
    Ok(())
}

/// A payment row as inserted.
#[derive(Debug)]
pub(crate) struct NewPayment {
    id: String,
    customer_id: String,
    amount_minor: i64,
    currency: &'static str,
    amount_refunded_minor: i64,
    status: &'static str,
    payment_method: String,
    description: Option<String>,
    gateway: String,
    gateway_id: Option<String>,
    decline_code: Option<String>,
    failure_message: Option<String>,
    metadata: String,
    created_at: i64,
    updated_at: i64,
    invoice_id: Option<String>,
    quote_id: Option<String>,
}

impl NewPayment {
    fn of(p: &Payment) -> Result<Self> {
        Ok(NewPayment {
            id: p.id.clone(),
            customer_id: p.customer_id.clone(),
            amount_minor: p.amount.minor,
            currency: p.amount.currency.code(),
            amount_refunded_minor: p.amount_refunded_minor,
            status: p.status.as_str(),
            payment_method: p.payment_method.clone(),
            description: p.description.clone(),
            gateway: p.gateway.clone(),
            gateway_id: p.gateway_id.clone(),
            decline_code: p.decline_code.clone(),
            failure_message: p.failure_message.clone(),
            metadata: metadata_json(&p.metadata)?,
            created_at: p.created_at.as_micros(),
            updated_at: p.updated_at.as_micros(),
            invoice_id: p.invoice_id.clone(),
            quote_id: p.quote_id.clone(),
        })
    }
}

/// Writes payments (those buffered by [`insert_at_commit`], say) as one statement.
pub(crate) async fn insert_all(tx: &mut Tx, rows: &[NewPayment]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    with_tx!(tx, |c| {
        let mut q = sqlx::QueryBuilder::new("");
        push_insert(&mut q, rows);
        q.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Appends the `INSERT` of `rows` to `q`.
pub(crate) fn push_insert<'r, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    rows: impl IntoIterator<Item = &'r NewPayment>,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    &'static str: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(
        "INSERT INTO payments (id, customer_id, amount_minor, currency, amount_refunded_minor, \
         status, payment_method, description, gateway, gateway_id, decline_code, \
         failure_message, metadata, created_at, updated_at, invoice_id, quote_id) ",
    );
    q.push_values(rows, |mut row, p| {
        row.push_bind(p.id.clone())
            .push_bind(p.customer_id.clone())
            .push_bind(p.amount_minor)
            .push_bind(p.currency)
            .push_bind(p.amount_refunded_minor)
            .push_bind(p.status)
            .push_bind(p.payment_method.clone())
            .push_bind(p.description.clone())
            .push_bind(p.gateway.clone())
            .push_bind(p.gateway_id.clone())
            .push_bind(p.decline_code.clone())
            .push_bind(p.failure_message.clone())
            .push_bind(p.metadata.clone())
            .push_bind(p.created_at)
            .push_bind(p.updated_at)
            .push_bind(p.invoice_id.clone())
            .push_bind(p.quote_id.clone());
    });
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Payment>> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1");
    let row: Option<PaymentRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(e)
        .await)?;
    row.map(Payment::try_from).transpose()
}

/// What a payment list asks for. Lists run newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: i64,
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    pub status: Option<PaymentStatus>,
    pub created_gte: Option<Timestamp>,
    pub created_lte: Option<Timestamp>,
}

pub async fn list(store: &Store, q: &ListQuery) -> Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR customer_id = $2)
            AND ($3 IS NULL OR status = $3)
            AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at <= $5)
          ORDER BY id DESC LIMIT $6"
    );
    let rows: Vec<PaymentRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&q.starting_after)
        .bind(&q.customer_id)
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.created_gte.map(Timestamp::as_micros))
        .bind(q.created_lte.map(Timestamp::as_micros))
        .bind(q.limit)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Payment::try_from).collect()
}

/// Counts `amount_minor` more as refunded, moving the status to `refunded` or
/// `partially_refunded`. `None` if the payment is not refundable or the amount exceeds what
/// is left: the check and the change are one statement, so concurrent refunds cannot
/// together exceed the payment.
pub async fn add_refunded(
    tx: &mut Tx,
    payment_id: &str,
    amount_minor: i64,
    now: Timestamp,
) -> Result<Option<Payment>> {
    let sql = format!(
        "UPDATE payments
            SET amount_refunded_minor = amount_refunded_minor + $2,
                status = CASE WHEN amount_refunded_minor + $2 = amount_minor
                              THEN 'refunded' ELSE 'partially_refunded' END,
                updated_at = $3
          WHERE id = $1 AND status IN ('succeeded', 'partially_refunded')
            AND amount_refunded_minor + $2 <= amount_minor
          RETURNING {COLUMNS}"
    );
    let row: Option<PaymentRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(payment_id)
        .bind(amount_minor)
        .bind(now.as_micros())
        .fetch_optional(c)
        .await)?;
    row.map(Payment::try_from).transpose()
}

pub async fn insert_refund(tx: &mut Tx, r: &Refund) -> Result<()> {
    with_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO refunds (id, payment_id, amount_minor, currency, status, reason, gateway_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(&r.id)
    .bind(&r.payment_id)
    .bind(r.amount.minor)
    .bind(r.amount.currency.code())
    .bind(&r.status)
    .bind(&r.reason)
    .bind(&r.gateway_id)
    .bind(r.created_at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: String,
    payment_id: String,
    amount_minor: i64,
    currency: String,
    status: String,
    reason: Option<String>,
    gateway_id: Option<String>,
    created_at: i64,
}

/// A payment's refunds, oldest first.
pub async fn refunds_of(store: &Store, payment_id: &str) -> Result<Vec<Refund>> {
    let rows: Vec<RefundRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT id, payment_id, amount_minor, currency, status, reason, gateway_id, created_at
           FROM refunds WHERE payment_id = $1 ORDER BY id"
    )
    .bind(payment_id)
    .fetch_all(e)
    .await)?;
    rows.into_iter().map(refund_of).collect()
}

fn refund_of(r: RefundRow) -> Result<Refund> {
    Ok(Refund {
        amount: Money {
            minor: r.amount_minor,
            currency: currency_of(&r.currency, &r.id)?,
        },
        id: r.id,
        payment_id: r.payment_id,
        status: r.status,
        reason: r.reason,
        gateway_id: r.gateway_id,
        created_at: Timestamp::from_micros(r.created_at),
    })
}

/// Locks the rows a statement reads for the rest of the transaction, on PostgreSQL: workers
/// on several hosts may apply events about one payment at once, and each must see what the
/// other applied. SQLite's single writer serialises them already.
pub(crate) fn row_lock(tx: &mut Tx) -> &'static str {
    if tx.is_postgres() { " FOR UPDATE" } else { "" }
}

/// A payment, locked for the rest of the transaction.
pub async fn get_for_update(tx: &mut Tx, id: &str) -> Result<Option<Payment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE id = $1{}",
        row_lock(tx)
    );
    let row: Option<PaymentRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    row.map(Payment::try_from).transpose()
}

/// Payments of `gateway` still waiting on it (processing, or requiring the customer's
/// action) and untouched since `before`: what reconciliation asks the gateway about.
pub async fn unsettled(
    store: &Store,
    gateway: &str,
    before: Timestamp,
    limit: i64,
) -> Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments
          WHERE gateway = $1 AND status IN ('processing', 'requires_action') AND updated_at < $2
          ORDER BY updated_at LIMIT $3"
    );
    let rows: Vec<PaymentRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(gateway)
        .bind(before.as_micros())
        .bind(limit)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Payment::try_from).collect()
}

/// The payment a gateway object belongs to, locked for the rest of the transaction.
pub async fn find_by_gateway_id(
    tx: &mut Tx,
    gateway: &str,
    gateway_id: &str,
) -> Result<Option<Payment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE gateway = $1 AND gateway_id = $2{}",
        row_lock(tx)
    );
    let row: Option<PaymentRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(gateway)
        .bind(gateway_id)
        .fetch_optional(c)
        .await)?;
    row.map(Payment::try_from).transpose()
}

/// Applies what a gateway event says about a payment. The caller has decided the event is
/// not older than what was applied before.
pub async fn apply_gateway_state(tx: &mut Tx, p: &Payment, now: Timestamp) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "UPDATE payments SET status = $2, amount_refunded_minor = $3, decline_code = $4,
             failure_message = $5, gateway_event_at = $6, updated_at = $7
          WHERE id = $1"
    )
    .bind(&p.id)
    .bind(p.status.as_str())
    .bind(p.amount_refunded_minor)
    .bind(&p.decline_code)
    .bind(&p.failure_message)
    .bind(p.gateway_event_at)
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Whether a payment waits for a method, and how many confirmations it has had (see
/// [`confirm`]), read together: [`confirm`] changes both in one statement, so a reader never
/// sees a waiting payment with the count of a confirmation that charged it.
pub async fn confirm_state(store: &Store, id: &str) -> Result<Option<(bool, i64)>> {
    let row: Option<(String, i64)> = with_read!(store, |e| sqlx::query_as(
        "SELECT status, confirm_attempts FROM payments WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(e)
    .await)?;
    Ok(row.map(|(status, n)| (status == "requires_payment_method", n)))
}

/// Records the gateway's answer to confirmation number `attempt` of a payment that waited
/// for a payment method (`p` carries the new status, method, gateway id and decline): only
/// while it still waits and no other confirmation was recorded since, so two confirmations
/// cannot both apply. A declined one leaves it waiting for another method, as Stripe does.
/// `false` when it no longer waited.
pub async fn confirm(tx: &mut Tx, p: &Payment, attempt: i64, now: Timestamp) -> Result<bool> {
    let n = with_tx!(tx, |c| sqlx::query(
        "UPDATE payments SET status = $2, payment_method = $3, gateway_id = $4,
             decline_code = $5, failure_message = $6, updated_at = $7,
             confirm_attempts = confirm_attempts + 1
          WHERE id = $1 AND status = 'requires_payment_method' AND confirm_attempts = $8"
    )
    .bind(&p.id)
    .bind(p.status.as_str())
    .bind(&p.payment_method)
    .bind(&p.gateway_id)
    .bind(&p.decline_code)
    .bind(&p.failure_message)
    .bind(now.as_micros())
    .bind(attempt)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Whether a refund with this gateway id is already recorded.
pub async fn refund_known(tx: &mut Tx, gateway_id: &str) -> Result<bool> {
    Ok(refund_by_gateway_id(tx, gateway_id).await?.is_some())
}

/// The refund recorded under this gateway id, if any.
pub async fn refund_by_gateway_id(tx: &mut Tx, gateway_id: &str) -> Result<Option<Refund>> {
    let row: Option<RefundRow> = with_tx!(tx, |c| sqlx::query_as(
        "SELECT id, payment_id, amount_minor, currency, status, reason, gateway_id, created_at
           FROM refunds WHERE gateway_id = $1"
    )
    .bind(gateway_id)
    .fetch_optional(c)
    .await)?;
    row.map(refund_of).transpose()
}

/// Sets a refund's status from the gateway (`succeeded`, `pending`, `failed`, `canceled`).
pub async fn set_refund_status(tx: &mut Tx, gateway_id: &str, status: &str) -> Result<u64> {
    Ok(with_tx!(tx, |c| sqlx::query(
        "UPDATE refunds SET status = $2 WHERE gateway_id = $1"
    )
    .bind(gateway_id)
    .bind(status)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}
