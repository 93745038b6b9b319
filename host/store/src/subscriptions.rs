//! Subscriptions, their invoices and invoice lines, and the business clock.

use hephaestus_core::Timestamp;
use hephaestus_core::money::Money;
use hephaestus_core::subscription::{Invoice, InvoiceLine, Subscription};

use crate::payments::row_lock;
use crate::{
    Result, Store, StoreError, Tx, currency_of, metadata_json, metadata_of, with_read, with_tx,
};

/// The business clock's offset from real time, in microseconds.
pub async fn clock_offset(store: &Store) -> Result<i64> {
    let offset: i64 = with_read!(store, |e| sqlx::query_scalar(
        "SELECT offset_micros FROM business_clock WHERE id = 1"
    )
    .fetch_one(e)
    .await)?;
    Ok(offset)
}

/// Moves the business clock forward; answers the new offset.
pub async fn advance_clock(tx: &mut Tx, by_micros: i64) -> Result<i64> {
    let offset: i64 = with_tx!(tx, |c| sqlx::query_scalar(
        "UPDATE business_clock SET offset_micros = offset_micros + $1 WHERE id = 1
         RETURNING offset_micros"
    )
    .bind(by_micros)
    .fetch_one(c)
    .await)?;
    Ok(offset)
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: String,
    customer_id: String,
    price_id: String,
    quantity: i64,
    currency: String,
    status: String,
    payment_method: Option<String>,
    gateway: String,
    gateway_id: Option<String>,
    billing_anchor: i64,
    periods: i64,
    current_period_start: i64,
    current_period_end: i64,
    trial_start: Option<i64>,
    trial_end: Option<i64>,
    trial_notice_sent: bool,
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
    ended_at: Option<i64>,
    next_action_at: Option<i64>,
    metadata: String,
    quote_id: Option<String>,
    discount_minor: i64,
    created_at: i64,
    updated_at: i64,
}

const SUB_COLUMNS: &str = "id, customer_id, price_id, quantity, currency, status, payment_method, \
     gateway, gateway_id, billing_anchor, periods, current_period_start, current_period_end, \
     trial_start, trial_end, trial_notice_sent, cancel_at_period_end, canceled_at, ended_at, \
     next_action_at, metadata, quote_id, discount_minor, created_at, updated_at";

fn ts(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(Timestamp::from_micros)
}

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_micros)
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;
    fn try_from(r: SubscriptionRow) -> Result<Self> {
        Ok(Subscription {
            currency: currency_of(&r.currency, &r.id)?,
            metadata: metadata_of(&r.metadata, &r.id)?,
            status: r.status.parse().map_err(StoreError::Corrupt)?,
            id: r.id,
            customer_id: r.customer_id,
            price_id: r.price_id,
            quantity: r.quantity,
            payment_method: r.payment_method,
            gateway: r.gateway,
            gateway_id: r.gateway_id,
            billing_anchor: Timestamp::from_micros(r.billing_anchor),
            periods: r.periods,
            current_period_start: Timestamp::from_micros(r.current_period_start),
            current_period_end: Timestamp::from_micros(r.current_period_end),
            trial_start: ts(r.trial_start),
            trial_end: ts(r.trial_end),
            trial_notice_sent: r.trial_notice_sent,
            cancel_at_period_end: r.cancel_at_period_end,
            canceled_at: ts(r.canceled_at),
            ended_at: ts(r.ended_at),
            next_action_at: ts(r.next_action_at),
            quote_id: r.quote_id,
            discount_minor: r.discount_minor,
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
        })
    }
}

pub async fn insert(tx: &mut Tx, s: &Subscription) -> Result<()> {
    let metadata = metadata_json(&s.metadata)?;
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO subscriptions (id, customer_id, price_id, quantity, currency, status,
             payment_method, gateway, gateway_id, billing_anchor, periods, current_period_start,
             current_period_end, trial_start, trial_end, trial_notice_sent, cancel_at_period_end,
             canceled_at, ended_at, next_action_at, metadata, created_at, updated_at,
             quote_id, discount_minor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21, $22, $23, $24, $25)"
    )
    .bind(&s.id)
    .bind(&s.customer_id)
    .bind(&s.price_id)
    .bind(s.quantity)
    .bind(s.currency.code())
    .bind(s.status.as_str())
    .bind(&s.payment_method)
    .bind(&s.gateway)
    .bind(&s.gateway_id)
    .bind(s.billing_anchor.as_micros())
    .bind(s.periods)
    .bind(s.current_period_start.as_micros())
    .bind(s.current_period_end.as_micros())
    .bind(micros(s.trial_start))
    .bind(micros(s.trial_end))
    .bind(s.trial_notice_sent)
    .bind(s.cancel_at_period_end)
    .bind(micros(s.canceled_at))
    .bind(micros(s.ended_at))
    .bind(micros(s.next_action_at))
    .bind(&metadata)
    .bind(s.created_at.as_micros())
    .bind(s.updated_at.as_micros())
    .bind(&s.quote_id)
    .bind(s.discount_minor)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Writes every field that can change after creation.
pub async fn update(tx: &mut Tx, s: &Subscription) -> Result<()> {
    let metadata = metadata_json(&s.metadata)?;
    with_tx!(tx, |c| sqlx::query(
        "UPDATE subscriptions SET price_id = $2, quantity = $3, status = $4, payment_method = $5,
             periods = $6, current_period_start = $7, current_period_end = $8, trial_end = $9,
             trial_notice_sent = $10, cancel_at_period_end = $11, canceled_at = $12,
             ended_at = $13, next_action_at = $14, metadata = $15, updated_at = $16,
             discount_minor = $17
          WHERE id = $1"
    )
    .bind(&s.id)
    .bind(&s.price_id)
    .bind(s.quantity)
    .bind(s.status.as_str())
    .bind(&s.payment_method)
    .bind(s.periods)
    .bind(s.current_period_start.as_micros())
    .bind(s.current_period_end.as_micros())
    .bind(micros(s.trial_end))
    .bind(s.trial_notice_sent)
    .bind(s.cancel_at_period_end)
    .bind(micros(s.canceled_at))
    .bind(micros(s.ended_at))
    .bind(micros(s.next_action_at))
    .bind(&metadata)
    .bind(s.updated_at.as_micros())
    .bind(s.discount_minor)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<Option<Subscription>> {
    let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1");
    let row: Option<SubscriptionRow> =
        with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(e)
            .await)?;
    row.map(Subscription::try_from).transpose()
}

/// A subscription, locked for the rest of the transaction.
pub async fn get_for_update(tx: &mut Tx, id: &str) -> Result<Option<Subscription>> {
    let lock = row_lock(tx);
    read_in(tx, id, lock).await
}

/// A subscription read inside a transaction without locking it: for a caller that already
/// holds a lock taken after the subscription's elsewhere (its invoice's), and so must not
/// wait for the subscription's.
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<Subscription>> {
    read_in(tx, id, "").await
}

async fn read_in(tx: &mut Tx, id: &str, lock: &str) -> Result<Option<Subscription>> {
    let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1{lock}");
    let row: Option<SubscriptionRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    row.map(Subscription::try_from).transpose()
}

/// The subscription mirroring the gateway's `gateway_id`, locked for the transaction, with
/// the `created` time (seconds) of the newest gateway event applied to it.
pub async fn find_by_gateway_id_for_update(
    tx: &mut Tx,
    gateway: &str,
    gateway_id: &str,
) -> Result<Option<(Subscription, Option<i64>)>> {
    let sql = format!(
        "SELECT {SUB_COLUMNS}, gateway_event_at FROM subscriptions
          WHERE gateway = $1 AND gateway_id = $2{}",
        row_lock(tx)
    );
    let row: Option<GatewaySubscriptionRow> =
        with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(gateway)
            .bind(gateway_id)
            .fetch_optional(c)
            .await)?;
    row.map(|r| Ok((Subscription::try_from(r.sub)?, r.gateway_event_at)))
        .transpose()
}

#[derive(sqlx::FromRow)]
struct GatewaySubscriptionRow {
    #[sqlx(flatten)]
    sub: SubscriptionRow,
    gateway_event_at: Option<i64>,
}

/// Records the `created` time (seconds) of a gateway event (or answer) applied to a
/// subscription; the mark only moves forward.
pub async fn set_gateway_event_at(tx: &mut Tx, id: &str, at: i64) -> Result<()> {
    advance_gateway_event_at(tx, "subscriptions", id, at).await
}

/// Moves `table`'s row `id` to gateway event time `at`, never backwards.
async fn advance_gateway_event_at(
    tx: &mut Tx,
    table: &'static str,
    id: &str,
    at: i64,
) -> Result<()> {
    let sql = format!(
        "UPDATE {table} SET gateway_event_at = CASE
             WHEN gateway_event_at IS NULL OR gateway_event_at < $2 THEN $2
             ELSE gateway_event_at END
          WHERE id = $1"
    );
    with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: i64,
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    pub status: Option<String>,
    pub price_id: Option<String>,
}

pub async fn list(store: &Store, q: &ListQuery) -> Result<Vec<Subscription>> {
    let sql = format!(
        "SELECT {SUB_COLUMNS} FROM subscriptions
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR customer_id = $2)
            AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR price_id = $4)
          ORDER BY id DESC LIMIT $5"
    );
    let rows: Vec<SubscriptionRow> =
        with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&q.starting_after)
            .bind(&q.customer_id)
            .bind(&q.status)
            .bind(&q.price_id)
            .bind(q.limit)
            .fetch_all(e)
            .await)?;
    rows.into_iter().map(Subscription::try_from).collect()
}

/// Claims up to `limit` subscriptions with work due by `business_now`, for `lease_secs` of
/// real time: another host skips them until the lease runs out or is released. A
/// subscription with a `gateway_id` is billed by its gateway, never here.
pub async fn claim_due(
    store: &Store,
    business_now: Timestamp,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<String>> {
    let skip_locked = crate::skip_locked(store);
    store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::now();
                let sql = format!(
                    "UPDATE subscriptions SET locked_until = $1
                      WHERE id IN (
                          SELECT id FROM subscriptions
                           WHERE next_action_at <= $2 AND gateway_id IS NULL
                             AND (locked_until IS NULL OR locked_until < $3)
                           ORDER BY next_action_at LIMIT $4 {})
                      RETURNING id",
                    skip_locked
                );
                let ids: Vec<String> =
                    with_tx!(tx, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(now.add_secs(lease_secs).as_micros())
                        .bind(business_now.as_micros())
                        .bind(now.as_micros())
                        .bind(limit)
                        .fetch_all(c)
                        .await)?;
                Ok::<_, StoreError>(ids)
            })
        })
        .await
}

/// Claims up to `limit` subscriptions billed by `gateway` that look unsettled — past due or
/// unpaid, or past the end of their period with no renewal applied (on the gateway's
/// clock, which is real time) — and that nothing changed, and no one asked the gateway
/// about, since `before`. The claim records the asking (`gateway_checked_at`), so no other
/// host and no later pass takes them again until `before` passes it. Each comes with the
/// `created` time (seconds) of the newest gateway event applied to it.
pub async fn claim_unsettled(
    store: &Store,
    gateway: &str,
    before: Timestamp,
    limit: i64,
) -> Result<Vec<(Subscription, Option<i64>)>> {
    let skip_locked = crate::skip_locked(store);
    let gateway = gateway.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "UPDATE subscriptions SET gateway_checked_at = $4
                      WHERE id IN (
                          SELECT id FROM subscriptions
                           WHERE gateway = $1 AND gateway_id IS NOT NULL
                             AND status <> 'canceled'
                             AND (status IN ('past_due', 'unpaid') OR current_period_end < $2)
                             AND updated_at < $2
                             AND (gateway_checked_at IS NULL OR gateway_checked_at < $2)
                           ORDER BY COALESCE(gateway_checked_at, 0), updated_at LIMIT $3 {})
                      RETURNING {SUB_COLUMNS}, gateway_event_at",
                    skip_locked
                );
                let rows: Vec<GatewaySubscriptionRow> =
                    with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(&gateway)
                        .bind(before.as_micros())
                        .bind(limit)
                        .bind(Timestamp::now().as_micros())
                        .fetch_all(c)
                        .await)?;
                rows.into_iter()
                    .map(|r| Ok((Subscription::try_from(r.sub)?, r.gateway_event_at)))
                    .collect::<Result<Vec<_>>>()
            })
        })
        .await
}

/// Claims, for reconciliation, up to `limit` invoices of subscriptions `gateway` bills that
/// are still open and unchanged since `before`, those asked least recently first, and
/// returns the gateway's ids for them. As with subscriptions ([`claim_unsettled`]), the
/// claim marks when each was asked, so no other host asks again before the deadline.
pub async fn claim_open_invoices(
    store: &Store,
    gateway: &str,
    before: Timestamp,
    limit: i64,
) -> Result<Vec<String>> {
    let skip_locked = crate::skip_locked(store);
    let gateway = gateway.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "UPDATE invoices SET gateway_checked_at = $4
                      WHERE id IN (
                          SELECT id FROM invoices
                           WHERE gateway_id IS NOT NULL AND status = 'open'
                             AND subscription_id IN (SELECT id FROM subscriptions WHERE gateway = $1)
                             AND updated_at < $2
                             AND (gateway_checked_at IS NULL OR gateway_checked_at < $2)
                           ORDER BY COALESCE(gateway_checked_at, 0), updated_at LIMIT $3 {skip_locked})
                      RETURNING gateway_id"
                );
                Ok::<_, StoreError>(with_tx!(tx, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(&gateway)
                    .bind(before.as_micros())
                    .bind(limit)
                    .bind(Timestamp::now().as_micros())
                    .fetch_all(c)
                    .await)?)
            })
        })
        .await
}

/// Whether an invoice of ours mirrors the gateway's `gateway_id`.
pub async fn invoice_mirrored(store: &Store, gateway_id: &str) -> Result<bool> {
    Ok(with_read!(store, |e| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM invoices WHERE gateway_id = $1"
    )
    .bind(gateway_id)
    .fetch_one(e)
    .await)?
        > 0)
}

/// How many subscriptions have work due by `business_now`, whoever holds them.
pub async fn due_count(store: &Store, business_now: Timestamp) -> Result<i64> {
    Ok(with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscriptions WHERE next_action_at <= $1 AND gateway_id IS NULL"
    )
    .bind(business_now.as_micros())
    .fetch_one(e)
    .await)?)
}

/// Gives a claimed subscription back.
pub async fn release(store: &Store, id: &str) -> Result<()> {
    let id = id.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                with_tx!(tx, |c| sqlx::query(
                    "UPDATE subscriptions SET locked_until = NULL WHERE id = $1"
                )
                .bind(&id)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                Ok::<_, StoreError>(())
            })
        })
        .await
}

#[derive(sqlx::FromRow)]
struct InvoiceRow {
    id: String,
    customer_id: String,
    subscription_id: Option<String>,
    currency: String,
    status: String,
    billing_reason: String,
    subtotal_minor: i64,
    amount_due_minor: i64,
    amount_paid_minor: i64,
    period_start: i64,
    period_end: i64,
    attempt_count: i64,
    next_attempt_at: Option<i64>,
    payment_id: Option<String>,
    gateway_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const INVOICE_COLUMNS: &str = "id, customer_id, subscription_id, currency, status, \
     billing_reason, subtotal_minor, amount_due_minor, amount_paid_minor, period_start, \
     period_end, attempt_count, next_attempt_at, payment_id, gateway_id, created_at, updated_at";

impl InvoiceRow {
    fn into_invoice(self, lines: Vec<InvoiceLine>) -> Result<Invoice> {
        Ok(Invoice {
            currency: currency_of(&self.currency, &self.id)?,
            status: self.status.parse().map_err(StoreError::Corrupt)?,
            id: self.id,
            customer_id: self.customer_id,
            subscription_id: self.subscription_id,
            billing_reason: self.billing_reason,
            subtotal_minor: self.subtotal_minor,
            amount_due_minor: self.amount_due_minor,
            amount_paid_minor: self.amount_paid_minor,
            period_start: Timestamp::from_micros(self.period_start),
            period_end: Timestamp::from_micros(self.period_end),
            attempt_count: self.attempt_count,
            next_attempt_at: ts(self.next_attempt_at),
            payment_id: self.payment_id,
            gateway_id: self.gateway_id,
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
            lines,
        })
    }
}

#[derive(sqlx::FromRow)]
struct LineRow {
    id: String,
    invoice_id: Option<String>,
    description: String,
    price_id: Option<String>,
    quantity: i64,
    amount_minor: i64,
    currency: String,
    proration: bool,
    period_start: i64,
    period_end: i64,
}

const LINE_COLUMNS: &str = "id, invoice_id, description, price_id, quantity, amount_minor, \
     currency, proration, period_start, period_end";

impl TryFrom<LineRow> for InvoiceLine {
    type Error = StoreError;
    fn try_from(r: LineRow) -> Result<Self> {
        Ok(InvoiceLine {
            amount: Money {
                minor: r.amount_minor,
                currency: currency_of(&r.currency, &r.id)?,
            },
            id: r.id,
            description: r.description,
            price_id: r.price_id,
            quantity: r.quantity,
            proration: r.proration,
            period_start: Timestamp::from_micros(r.period_start),
            period_end: Timestamp::from_micros(r.period_end),
        })
    }
}

async fn insert_line(
    tx: &mut Tx,
    invoice_id: Option<&str>,
    subscription_id: Option<&str>,
    l: &InvoiceLine,
    now: Timestamp,
) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO invoice_lines (id, invoice_id, subscription_id, description, price_id,
             quantity, amount_minor, currency, proration, period_start, period_end, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )
    .bind(&l.id)
    .bind(invoice_id)
    .bind(subscription_id)
    .bind(&l.description)
    .bind(&l.price_id)
    .bind(l.quantity)
    .bind(l.amount.minor)
    .bind(l.amount.currency.code())
    .bind(l.proration)
    .bind(l.period_start.as_micros())
    .bind(l.period_end.as_micros())
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records a line waiting for the subscription's next invoice (a proration).
pub async fn add_pending_line(
    tx: &mut Tx,
    subscription_id: &str,
    line: &InvoiceLine,
    now: Timestamp,
) -> Result<()> {
    insert_line(tx, None, Some(subscription_id), line, now).await
}

/// The lines waiting for a subscription's next invoice, oldest first.
pub async fn pending_lines(tx: &mut Tx, subscription_id: &str) -> Result<Vec<InvoiceLine>> {
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM invoice_lines
          WHERE subscription_id = $1 AND invoice_id IS NULL ORDER BY id"
    );
    let rows: Vec<LineRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(subscription_id)
        .fetch_all(c)
        .await)?;
    rows.into_iter().map(InvoiceLine::try_from).collect()
}

/// The lines waiting for a subscription's next invoice, read outside a transaction.
pub async fn pending_lines_of(store: &Store, subscription_id: &str) -> Result<Vec<InvoiceLine>> {
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM invoice_lines
          WHERE subscription_id = $1 AND invoice_id IS NULL ORDER BY id"
    );
    let rows: Vec<LineRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(subscription_id)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(InvoiceLine::try_from).collect()
}

/// Drops the lines waiting for a subscription's next invoice (it ended, so there is none).
pub async fn drop_pending_lines(tx: &mut Tx, subscription_id: &str) -> Result<u64> {
    Ok(with_tx!(tx, |c| sqlx::query(
        "DELETE FROM invoice_lines WHERE subscription_id = $1 AND invoice_id IS NULL"
    )
    .bind(subscription_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// Inserts an invoice. Its lines are written with it, except those already stored as
/// pending for the subscription, which are attached.
pub async fn insert_invoice(tx: &mut Tx, inv: &Invoice, now: Timestamp) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO invoices (id, customer_id, subscription_id, currency, status,
             billing_reason, subtotal_minor, amount_due_minor, amount_paid_minor, period_start,
             period_end, attempt_count, next_attempt_at, payment_id, gateway_id, created_at,
             updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )
    .bind(&inv.id)
    .bind(&inv.customer_id)
    .bind(&inv.subscription_id)
    .bind(inv.currency.code())
    .bind(inv.status.as_str())
    .bind(&inv.billing_reason)
    .bind(inv.subtotal_minor)
    .bind(inv.amount_due_minor)
    .bind(inv.amount_paid_minor)
    .bind(inv.period_start.as_micros())
    .bind(inv.period_end.as_micros())
    .bind(inv.attempt_count)
    .bind(micros(inv.next_attempt_at))
    .bind(&inv.payment_id)
    .bind(&inv.gateway_id)
    .bind(inv.created_at.as_micros())
    .bind(inv.updated_at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let pending: Vec<String> = match &inv.subscription_id {
        Some(sub) => pending_lines(tx, sub)
            .await?
            .into_iter()
            .map(|l| l.id)
            .collect(),
        None => Vec::new(),
    };
    if let Some(sub) = &inv.subscription_id {
        with_tx!(tx, |c| {
            sqlx::query(
            "UPDATE invoice_lines SET invoice_id = $1 WHERE subscription_id = $2 AND invoice_id IS NULL"
        )
        .bind(&inv.id)
        .bind(sub)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
    }
    for line in inv.lines.iter().filter(|l| !pending.contains(&l.id)) {
        insert_line(tx, Some(&inv.id), inv.subscription_id.as_deref(), line, now).await?;
    }
    Ok(())
}

/// Writes an invoice's payment state.
pub async fn update_invoice(tx: &mut Tx, inv: &Invoice) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "UPDATE invoices SET status = $2, amount_paid_minor = $3, attempt_count = $4,
             next_attempt_at = $5, payment_id = $6, updated_at = $7
          WHERE id = $1"
    )
    .bind(&inv.id)
    .bind(inv.status.as_str())
    .bind(inv.amount_paid_minor)
    .bind(inv.attempt_count)
    .bind(micros(inv.next_attempt_at))
    .bind(&inv.payment_id)
    .bind(inv.updated_at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

async fn lines_of(tx_or_store: LinesSource<'_>, invoice_ids: &[String]) -> Result<Vec<LineRow>> {
    // One query for a page of invoices: their ids are few (at most a page), so an IN list
    // of placeholders is fine on both databases.
    if invoice_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=invoice_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM invoice_lines WHERE invoice_id IN ({}) ORDER BY id",
        placeholders.join(", ")
    );
    match tx_or_store {
        LinesSource::Store(store) => Ok(with_read!(store, |e| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in invoice_ids {
                q = q.bind(id);
            }
            q.fetch_all(e).await
        })?),
        LinesSource::Tx(tx) => Ok(with_tx!(tx, |c| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in invoice_ids {
                q = q.bind(id);
            }
            q.fetch_all(c).await
        })?),
    }
}

enum LinesSource<'a> {
    Store(&'a Store),
    Tx(&'a mut Tx),
}

fn with_lines(rows: Vec<InvoiceRow>, lines: Vec<LineRow>) -> Result<Vec<Invoice>> {
    let mut lines: Vec<(Option<String>, InvoiceLine)> = lines
        .into_iter()
        .map(|l| Ok((l.invoice_id.clone(), InvoiceLine::try_from(l)?)))
        .collect::<Result<_>>()?;
    rows.into_iter()
        .map(|r| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut lines)
                .into_iter()
                .partition(|(inv, _)| inv.as_deref() == Some(r.id.as_str()));
            lines = rest;
            r.into_invoice(mine.into_iter().map(|(_, l)| l).collect())
        })
        .collect()
}

pub async fn get_invoice(store: &Store, id: &str) -> Result<Option<Invoice>> {
    let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1");
    let row: Option<InvoiceRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(e)
        .await)?;
    let Some(row) = row else { return Ok(None) };
    let lines = lines_of(LinesSource::Store(store), std::slice::from_ref(&row.id)).await?;
    Ok(with_lines(vec![row], lines)?.pop())
}

/// The invoice mirroring the gateway's `gateway_id`, locked for the transaction, with the
/// `created` time (seconds) of the newest gateway event applied to it.
pub async fn find_invoice_by_gateway_id_for_update(
    tx: &mut Tx,
    gateway_id: &str,
) -> Result<Option<(Invoice, Option<i64>)>> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS}, gateway_event_at FROM invoices WHERE gateway_id = $1{}",
        row_lock(tx)
    );
    let row: Option<GatewayInvoiceRow> =
        with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(gateway_id)
            .fetch_optional(c)
            .await)?;
    let Some(row) = row else { return Ok(None) };
    let lines = lines_of(LinesSource::Tx(tx), std::slice::from_ref(&row.invoice.id)).await?;
    let at = row.gateway_event_at;
    Ok(with_lines(vec![row.invoice], lines)?.pop().map(|i| (i, at)))
}

#[derive(sqlx::FromRow)]
struct GatewayInvoiceRow {
    #[sqlx(flatten)]
    invoice: InvoiceRow,
    gateway_event_at: Option<i64>,
}

/// Records the `created` time (seconds) of a gateway event applied to an invoice; the mark
/// only moves forward.
pub async fn set_invoice_gateway_event_at(tx: &mut Tx, id: &str, at: i64) -> Result<()> {
    advance_gateway_event_at(tx, "invoices", id, at).await
}

/// The subscription's invoice still being collected, locked for the transaction.
pub async fn open_invoice_for_update(
    tx: &mut Tx,
    subscription_id: &str,
) -> Result<Option<Invoice>> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices
          WHERE subscription_id = $1 AND status = 'open' ORDER BY id DESC LIMIT 1{}",
        row_lock(tx)
    );
    let row: Option<InvoiceRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(subscription_id)
        .fetch_optional(c)
        .await)?;
    let Some(row) = row else { return Ok(None) };
    let lines = lines_of(LinesSource::Tx(tx), std::slice::from_ref(&row.id)).await?;
    Ok(with_lines(vec![row], lines)?.pop())
}

#[derive(Debug, Clone, Default)]
pub struct InvoiceQuery {
    pub limit: i64,
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub status: Option<String>,
}

/// Invoices newest first, each with its lines.
pub async fn list_invoices(store: &Store, q: &InvoiceQuery) -> Result<Vec<Invoice>> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR customer_id = $2)
            AND ($3 IS NULL OR subscription_id = $3) AND ($4 IS NULL OR status = $4)
          ORDER BY id DESC LIMIT $5"
    );
    let rows: Vec<InvoiceRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&q.starting_after)
        .bind(&q.customer_id)
        .bind(&q.subscription_id)
        .bind(&q.status)
        .bind(q.limit)
        .fetch_all(e)
        .await)?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let lines = lines_of(LinesSource::Store(store), &ids).await?;
    with_lines(rows, lines)
}
