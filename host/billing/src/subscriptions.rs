//! The subscription billing engine for gateways that only move money (the sandbox): the host
//! keeps the schedule on the business clock, issues an invoice per period, charges it, and
//! retries a failed charge on a dunning schedule before cancelling (or marking unpaid).
//!
//! Work is found through each subscription's `next_action_at` and claimed with a lease, so
//! any number of hosts can run [`run_due`]. A charge is the one step outside a transaction:
//! it is made between two transactions with an idempotency key derived from the invoice and
//! the attempt number, so a host that dies after charging leaves a retry that gets the same
//! charge back, never a second one.

use std::time::Duration;

use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{Interval, Price, Recurring};
use hephaestus_core::customer::Metadata;
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::Money;
use hephaestus_core::subscription::{
    Invoice, InvoiceLine, InvoiceStatus, Subscription, SubscriptionStatus, mul_div, period_end,
    prorate,
};
use hephaestus_store::{Store, StoreError, Tx, catalog, events, subscriptions};
use serde_json::{Value, json};

use crate::charges::{self, Attempt};
use crate::gateway::{ChargeRequest, ChargeStatus, Gateway, GatewayError};

/// `customer.subscription.trial_will_end` is sent this long before a trial ends, as Stripe does.
pub const TRIAL_NOTICE_SECS: i64 = 3 * 24 * 60 * 60;
const DAY_SECS: i64 = 24 * 60 * 60;
/// How long a host may work on claimed subscriptions before another may take them over.
const LEASE_SECS: i64 = 120;

/// What happens to a subscription whose invoice failed every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalAction {
    Cancel,
    MarkUnpaid,
}

/// The retry schedule for failed invoice payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dunning {
    /// Days to wait before each retry, counted from the attempt before it. `[3, 5, 7]`
    /// means four attempts over fifteen days.
    pub retry_days: Vec<i64>,
    pub final_action: FinalAction,
}

impl Default for Dunning {
    fn default() -> Self {
        Dunning {
            retry_days: vec![3, 5, 7],
            final_action: FinalAction::Cancel,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// The business clock: real time plus the offset the sandbox's clock control has added.
pub async fn business_now(store: &Store) -> Result<Timestamp, StoreError> {
    let offset = subscriptions::clock_offset(store).await?;
    Ok(Timestamp::from_micros(
        Timestamp::now().as_micros().saturating_add(offset),
    ))
}

/// Moves the business clock forward by `by`.
pub async fn advance_clock(store: &Store, by: Duration) -> Result<Timestamp, StoreError> {
    let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
    store
        .write(move |tx| Box::pin(async move { subscriptions::advance_clock(tx, micros).await }))
        .await?;
    business_now(store).await
}

/// A recurring amount normalised to a month (annual ÷ 12, weekly × 52 ÷ 12, daily × 365 ÷ 12),
/// in minor units, rounded half away from zero: what MRR adds up.
pub fn monthly_minor(total_per_period: i64, every: Recurring) -> i64 {
    let (per_year, count) = match every.interval {
        Interval::Day => (365, every.count),
        Interval::Week => (52, every.count),
        Interval::Month => (12, every.count),
        Interval::Year => (1, every.count),
    };
    mul_div(total_per_period, per_year, 12 * count)
}

/// The price's amount for `quantity` units, if it fits the largest amount the host accepts.
pub fn total_of(price: &Price, quantity: i64) -> Option<i64> {
    price
        .unit_amount
        .minor
        .checked_mul(quantity)
        .filter(|t| *t <= hephaestus_core::money::MAX_MINOR)
}

/// What one period of `sub` at `price` costs: the price's total for its quantity, less the
/// discount of the quote it was started from (which lasts while price and quantity do).
pub fn period_total(sub: &Subscription, price: &Price) -> Option<i64> {
    total_of(price, sub.quantity).map(|t| t.saturating_sub(sub.discount_minor).max(0))
}

/// The invoice line taking a quote's discount off a period, if the subscription has one.
fn quote_line(sub: &Subscription, start: Timestamp, end: Timestamp) -> Option<InvoiceLine> {
    (sub.discount_minor > 0).then(|| InvoiceLine {
        id: ids::new_id(prefix::INVOICE_LINE),
        description: match &sub.quote_id {
            Some(q) => format!("Quoted price ({q})"),
            None => "Quoted price".to_string(),
        },
        price_id: None,
        quantity: 1,
        amount: Money {
            minor: -sub.discount_minor,
            currency: sub.currency,
        },
        proration: false,
        period_start: start,
        period_end: end,
    })
}

fn recurring(price: &Price) -> Result<Recurring, StoreError> {
    price.recurring.ok_or_else(|| {
        StoreError::Corrupt(format!("subscription price {} is not recurring", price.id))
    })
}

/// The `subscription.*` event for a subscription's current state. `previous` carries what
/// changed (status, price, quantity, MRR) so MRR movements can be computed from the log.
pub fn subscription_event(
    kind: &'static str,
    sub: &Subscription,
    price: &Price,
    previous: Option<Value>,
    at: Timestamp,
) -> NewEvent {
    let mrr = subscription_mrr(sub, price);
    NewEvent::new(
        kind,
        &sub.id,
        Some(sub.customer_id.clone()),
        json!({
            "subscription_id": sub.id,
            "customer_id": sub.customer_id,
            "price_id": sub.price_id,
            "product_id": price.product_id,
            "quantity": sub.quantity,
            "status": sub.status.as_str(),
            "currency": sub.currency.code(),
            "mrr_minor": mrr,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "previous": previous.unwrap_or(Value::Null),
        }),
        at,
    )
}

pub(crate) fn invoice_event(kind: &'static str, inv: &Invoice, at: Timestamp) -> NewEvent {
    NewEvent::new(
        kind,
        &inv.id,
        Some(inv.customer_id.clone()),
        json!({
            "invoice_id": inv.id,
            "customer_id": inv.customer_id,
            "subscription_id": inv.subscription_id,
            "billing_reason": inv.billing_reason,
            "amount_due_minor": inv.amount_due_minor,
            "amount_paid_minor": inv.amount_paid_minor,
            "currency": inv.currency.code(),
            "attempt_count": inv.attempt_count,
            "payment_id": inv.payment_id,
        }),
        at,
    )
}

/// When the subscription next needs the billing job, given its open invoice.
pub fn next_action(sub: &Subscription, open: Option<&Invoice>) -> Option<Timestamp> {
    if !sub.status.is_live() {
        return None;
    }
    if let Some(inv) = open {
        // While an invoice is being collected the schedule waits for it.
        return inv.next_attempt_at;
    }
    let mut at = sub.current_period_end;
    if sub.status == SubscriptionStatus::Trialing
        && !sub.trial_notice_sent
        && let Some(end) = sub.trial_end
    {
        at = at.min(end.add_secs(-TRIAL_NOTICE_SECS));
    }
    Some(at)
}

fn base_line(
    price: &Price,
    quantity: i64,
    start: Timestamp,
    end: Timestamp,
    total: i64,
) -> InvoiceLine {
    InvoiceLine {
        id: ids::new_id(prefix::INVOICE_LINE),
        description: format!(
            "{quantity} × {} ({} {} each)",
            price.id,
            price.unit_amount.major_string(),
            price.unit_amount.currency
        ),
        price_id: Some(price.id.clone()),
        quantity,
        amount: Money {
            minor: total,
            currency: price.unit_amount.currency,
        },
        proration: false,
        period_start: start,
        period_end: end,
    }
}

/// Builds an invoice from its lines. A negative subtotal (credits larger than charges) is
/// owed nothing now; the remaining credit is returned as a line for the next invoice.
fn build_invoice(
    sub: &Subscription,
    reason: &str,
    lines: Vec<InvoiceLine>,
    at: Timestamp,
) -> (Invoice, Option<InvoiceLine>) {
    let subtotal: i64 = lines.iter().map(|l| l.amount.minor).sum();
    let carry = (subtotal < 0).then(|| InvoiceLine {
        id: ids::new_id(prefix::INVOICE_LINE),
        description: "Unused credit carried forward".into(),
        price_id: None,
        quantity: 1,
        amount: Money {
            minor: subtotal,
            currency: sub.currency,
        },
        proration: false,
        period_start: sub.current_period_start,
        period_end: sub.current_period_end,
    });
    let due = subtotal.max(0);
    let inv = Invoice {
        id: ids::new_id(prefix::INVOICE),
        customer_id: sub.customer_id.clone(),
        subscription_id: Some(sub.id.clone()),
        currency: sub.currency,
        status: if due == 0 {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        },
        billing_reason: reason.to_string(),
        subtotal_minor: subtotal,
        amount_due_minor: due,
        amount_paid_minor: 0,
        period_start: sub.current_period_start,
        period_end: sub.current_period_end,
        attempt_count: 0,
        next_attempt_at: (due > 0).then_some(at),
        payment_id: None,
        gateway_id: None,
        created_at: at,
        updated_at: at,
        lines,
    };
    (inv, carry)
}

/// What a new subscription is to be.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub customer_id: String,
    pub price: Price,
    pub quantity: i64,
    /// Overrides the price's own trial; `Some(0)` means no trial.
    pub trial_days: Option<i64>,
    pub payment_method: Option<String>,
    pub metadata: Metadata,
    pub gateway: String,
    /// The stored quote it is started from, and the quote's discount on the list total
    /// (charged off every period while price and quantity stay those quoted).
    pub quote: Option<(String, i64)>,
}

/// A subscription about to start, and its first invoice: a zero invoice for a trial, or the
/// first period's, to be charged before anything is stored.
#[derive(Debug, Clone)]
pub struct Planned {
    pub subscription: Subscription,
    pub invoice: Invoice,
}

pub fn plan(new: NewSubscription, now: Timestamp) -> Result<Planned, StoreError> {
    let every = recurring(&new.price)?;
    let trial_days = new.trial_days.or(new.price.trial_days).unwrap_or(0);
    let trial_end = (trial_days > 0).then(|| now.add_secs(trial_days * DAY_SECS));
    let anchor = trial_end.unwrap_or(now);
    let (start, end, periods) = match trial_end {
        Some(end) => (now, end, 0),
        None => (
            now,
            period_end(anchor, every, 1)
                .ok_or_else(|| StoreError::Corrupt("billing period out of range".into()))?,
            1,
        ),
    };
    let total = total_of(&new.price, new.quantity)
        .ok_or_else(|| StoreError::Corrupt("subscription total out of range".into()))?;
    let mut sub = Subscription {
        id: ids::new_id(prefix::SUBSCRIPTION),
        customer_id: new.customer_id,
        price_id: new.price.id.clone(),
        quantity: new.quantity,
        currency: new.price.unit_amount.currency,
        status: if trial_end.is_some() {
            SubscriptionStatus::Trialing
        } else {
            SubscriptionStatus::Active
        },
        payment_method: new.payment_method,
        gateway: new.gateway,
        gateway_id: None,
        billing_anchor: anchor,
        periods,
        current_period_start: start,
        current_period_end: end,
        trial_start: trial_end.map(|_| now),
        trial_end,
        trial_notice_sent: false,
        cancel_at_period_end: false,
        canceled_at: None,
        ended_at: None,
        next_action_at: None,
        metadata: new.metadata,
        quote_id: new.quote.as_ref().map(|(q, _)| q.clone()),
        discount_minor: new.quote.as_ref().map_or(0, |(_, d)| *d),
        created_at: now,
        updated_at: now,
    };
    let lines = match trial_end {
        Some(_) => vec![InvoiceLine {
            description: format!("Trial period for {}", new.price.id),
            ..base_line(&new.price, new.quantity, start, end, 0)
        }],
        None => std::iter::once(base_line(&new.price, new.quantity, start, end, total))
            .chain(quote_line(&sub, start, end))
            .collect(),
    };
    let (invoice, _) = build_invoice(&sub, "subscription_create", lines, now);
    sub.next_action_at = next_action(&sub, None);
    Ok(Planned {
        subscription: sub,
        invoice,
    })
}

/// Stores a planned subscription whose first invoice is settled (paid by `payment`, or a
/// zero invoice), with its events.
pub async fn start(
    tx: &mut Tx,
    planned: Planned,
    price: &Price,
    payment_id: Option<String>,
    now: Timestamp,
) -> Result<(Subscription, Invoice), StoreError> {
    let Planned {
        subscription: sub,
        mut invoice,
    } = planned;
    subscriptions::insert(tx, &sub).await?;
    invoice.status = InvoiceStatus::Paid;
    invoice.amount_paid_minor = invoice.amount_due_minor;
    invoice.next_attempt_at = None;
    invoice.attempt_count = i64::from(payment_id.is_some());
    invoice.payment_id = payment_id;
    subscriptions::insert_invoice(tx, &invoice, now).await?;
    events::append(
        tx,
        subscription_event(kind::SUBSCRIPTION_CREATED, &sub, price, None, now),
    );
    events::append(tx, invoice_event(kind::INVOICE_FINALIZED, &invoice, now));
    events::append(tx, invoice_event(kind::INVOICE_PAID, &invoice, now));
    Ok((sub, invoice))
}

/// A change asked for through the API.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub price: Option<Price>,
    pub quantity: Option<i64>,
    pub payment_method: Option<String>,
    pub cancel_at_period_end: Option<bool>,
    pub metadata: Option<Metadata>,
    /// Credit unused time and charge the new plan's remaining time on the next invoice.
    pub prorate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("subscription {0} has ended and cannot be changed")]
    Ended(String),
    #[error("{0}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `change` can be made to `sub` at all: it must be live, and a new price must be
/// in its currency and bill on the same interval. Checked here for the changes this engine
/// bills, and before asking a gateway for the ones it bills.
pub fn check_change(
    sub: &Subscription,
    current_price: &Price,
    change: &Update,
) -> Result<(), UpdateError> {
    if !sub.status.is_live() {
        return Err(UpdateError::Ended(sub.id.clone()));
    }
    let new_price = change.price.as_ref().unwrap_or(current_price);
    if new_price.unit_amount.currency != sub.currency {
        return Err(UpdateError::Invalid(
            "price_id",
            format!(
                "must be a price in {}, the subscription's currency",
                sub.currency
            ),
        ));
    }
    if new_price.recurring != current_price.recurring {
        return Err(UpdateError::Invalid(
            "price_id",
            "must bill on the same interval as the current price; cancel and start a new subscription to change it".into(),
        ));
    }
    Ok(())
}

/// Applies a change at business time `now`, with prorations as pending invoice lines.
pub async fn update(
    tx: &mut Tx,
    sub: Subscription,
    current_price: &Price,
    change: Update,
    now: Timestamp,
) -> Result<Subscription, UpdateError> {
    check_change(&sub, current_price, &change)?;
    let mut next = sub.clone();
    let new_price = change.price.as_ref().unwrap_or(current_price);
    next.price_id = new_price.id.clone();
    next.quantity = change.quantity.unwrap_or(sub.quantity);
    let new_total = total_of(new_price, next.quantity).ok_or_else(|| {
        UpdateError::Invalid(
            "quantity",
            "makes the subscription's total too large".into(),
        )
    })?;
    if let Some(pm) = change.payment_method {
        next.payment_method = Some(pm);
    }
    if let Some(cancel) = change.cancel_at_period_end {
        next.cancel_at_period_end = cancel;
        next.canceled_at = cancel.then_some(now);
    }
    if let Some(m) = change.metadata {
        next.metadata = m;
    }
    let plan_changed = next.price_id != sub.price_id || next.quantity != sub.quantity;
    if plan_changed {
        // The quoted price was for the plan quoted: a new plan is billed at its list price.
        next.discount_minor = 0;
    }
    if plan_changed && change.prorate && sub.status != SubscriptionStatus::Trialing {
        let old_total = period_total(&sub, current_price).unwrap_or(0);
        let at = now.clamp(sub.current_period_start, sub.current_period_end);
        let p = prorate(
            old_total,
            new_total,
            sub.current_period_start,
            sub.current_period_end,
            at,
        );
        let lines = [
            (
                p.credit_minor,
                format!("Unused time on {} × {}", sub.quantity, current_price.id),
                current_price,
                sub.quantity,
            ),
            (
                p.charge_minor,
                format!("Remaining time on {} × {}", next.quantity, new_price.id),
                new_price,
                next.quantity,
            ),
        ];
        for (amount, description, price, quantity) in lines {
            if amount == 0 {
                continue;
            }
            let line = InvoiceLine {
                id: ids::new_id(prefix::INVOICE_LINE),
                description,
                price_id: Some(price.id.clone()),
                quantity,
                amount: Money {
                    minor: amount,
                    currency: sub.currency,
                },
                proration: true,
                period_start: at,
                period_end: sub.current_period_end,
            };
            subscriptions::add_pending_line(tx, &sub.id, &line, now).await?;
        }
    }
    next.updated_at = now;
    let open = subscriptions::open_invoice_for_update(tx, &sub.id).await?;
    next.next_action_at = next_action(&next, open.as_ref());
    subscriptions::update(tx, &next).await?;
    let previous = json!({
        "status": sub.status.as_str(),
        "price_id": sub.price_id,
        "quantity": sub.quantity,
        "mrr_minor": subscription_mrr(&sub, current_price),
        "cancel_at_period_end": sub.cancel_at_period_end,
    });
    events::append(
        tx,
        subscription_event(
            kind::SUBSCRIPTION_UPDATED,
            &next,
            new_price,
            Some(previous),
            now,
        ),
    );
    Ok(next)
}

pub(crate) fn subscription_mrr(sub: &Subscription, price: &Price) -> i64 {
    if sub.status.is_live() && sub.status != SubscriptionStatus::Trialing {
        period_total(sub, price)
            .zip(price.recurring)
            .map(|(t, r)| monthly_minor(t, r))
            .unwrap_or(0)
    } else {
        0
    }
}

/// Ends a subscription at `now`: nothing more is billed, pending prorations are dropped and
/// an invoice still being collected is voided.
pub async fn cancel_now(
    tx: &mut Tx,
    sub: Subscription,
    price: &Price,
    now: Timestamp,
) -> Result<Subscription, UpdateError> {
    if !sub.status.is_live() && sub.status != SubscriptionStatus::Unpaid {
        return Err(UpdateError::Ended(sub.id));
    }
    end(tx, sub, price, now, now)
        .await
        .map_err(UpdateError::from)
}

async fn end(
    tx: &mut Tx,
    sub: Subscription,
    price: &Price,
    ended_at: Timestamp,
    now: Timestamp,
) -> Result<Subscription, StoreError> {
    let mut next = sub.clone();
    next.status = SubscriptionStatus::Canceled;
    next.canceled_at = sub.canceled_at.or(Some(ended_at));
    next.ended_at = Some(ended_at);
    next.next_action_at = None;
    next.updated_at = now;
    subscriptions::drop_pending_lines(tx, &sub.id).await?;
    if let Some(mut open) = subscriptions::open_invoice_for_update(tx, &sub.id).await? {
        open.status = InvoiceStatus::Void;
        open.next_attempt_at = None;
        open.updated_at = now;
        subscriptions::update_invoice(tx, &open).await?;
        events::append(tx, invoice_event(kind::INVOICE_VOIDED, &open, ended_at));
    }
    subscriptions::update(tx, &next).await?;
    let previous = json!({
        "status": sub.status.as_str(),
        "mrr_minor": subscription_mrr(&sub, price),
    });
    events::append(
        tx,
        subscription_event(
            kind::SUBSCRIPTION_CANCELED,
            &next,
            price,
            Some(previous),
            ended_at,
        ),
    );
    Ok(next)
}

/// What one run of the billing job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub subscriptions: u64,
    pub invoices: u64,
    pub payments_succeeded: u64,
    pub payments_failed: u64,
    pub trials_ending: u64,
    pub canceled: u64,
}

/// Bills every subscription with work due on the business clock, period by period, until
/// none is due. Safe to run on several hosts at once.
pub async fn run_due(
    store: &Store,
    gateway: &dyn Gateway,
    dunning: &Dunning,
    batch: i64,
) -> Result<Summary, BillingError> {
    let mut summary = Summary::default();
    loop {
        let now = business_now(store).await?;
        let ids = subscriptions::claim_due(store, now, LEASE_SECS, batch).await?;
        if ids.is_empty() {
            return Ok(summary);
        }
        for id in &ids {
            let outcome = bill(store, gateway, dunning, id, now, &mut summary).await;
            if let Err(e) = subscriptions::release(store, id).await {
                tracing::warn!(subscription = %id, error = %e, "could not release a billing claim; it expires on its own");
            }
            outcome?;
            summary.subscriptions += 1;
        }
    }
}

/// Bills what is due, then waits (up to `limit`) for subscriptions other hosts are billing
/// to be done too: on return, everything due by the business clock has been billed.
pub async fn settle_all(
    store: &Store,
    gateway: &dyn Gateway,
    dunning: &Dunning,
    limit: Duration,
) -> Result<Summary, BillingError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut total = Summary::default();
    loop {
        let s = run_due(store, gateway, dunning, 100).await?;
        total.add(s);
        let now = business_now(store).await?;
        if subscriptions::due_count(store, now).await? == 0
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Summary {
    fn add(&mut self, o: Summary) {
        self.subscriptions += o.subscriptions;
        self.invoices += o.invoices;
        self.payments_succeeded += o.payments_succeeded;
        self.payments_failed += o.payments_failed;
        self.trials_ending += o.trials_ending;
        self.canceled += o.canceled;
    }
}

/// The next thing due for one subscription, decided (and, except for a charge, done) inside
/// one transaction.
enum Step {
    Idle,
    Done,
    Charge(Box<Due>),
}

/// An invoice attempt to make, outside any transaction.
struct Due {
    sub: Subscription,
    invoice: Invoice,
    at: Timestamp,
}

async fn bill(
    store: &Store,
    gateway: &dyn Gateway,
    dunning: &Dunning,
    id: &str,
    now: Timestamp,
    summary: &mut Summary,
) -> Result<(), BillingError> {
    loop {
        let (step, delta) = {
            let id = id.to_string();
            let store2 = store.clone();
            store
                .write(move |tx| Box::pin(async move { advance(tx, &store2, &id, now).await }))
                .await?
        };
        summary.invoices += delta.invoices;
        summary.trials_ending += delta.trials_ending;
        summary.canceled += delta.canceled;
        match step {
            Step::Idle => return Ok(()),
            Step::Done => continue,
            Step::Charge(due) => {
                let Due { sub, invoice, at } = *due;
                let attempt = invoice.attempt_count + 1;
                let request = ChargeRequest {
                    customer_id: sub.customer_id.clone(),
                    amount: Money {
                        minor: invoice.amount_due_minor,
                        currency: invoice.currency,
                    },
                    payment_method: sub.payment_method.clone().unwrap_or_default(),
                    description: Some(format!("Invoice {} for {}", invoice.id, sub.id)),
                    idempotency_key: format!("{}:attempt:{attempt}", invoice.id),
                    off_session: true,
                };
                let charge = match gateway.charge(request).await {
                    Ok(c) => Ok(c),
                    // The method is gone or unknown: a failed attempt, like a decline.
                    Err(GatewayError::InvalidRequest { message, .. }) => Err(message),
                    Err(e) => return Err(e.into()),
                };
                let gateway_name = gateway.name().to_string();
                let dunning = dunning.clone();
                let store2 = store.clone();
                let succeeded = store
                    .write(move |tx| {
                        Box::pin(async move {
                            settle(
                                tx,
                                &store2,
                                &gateway_name,
                                &dunning,
                                sub,
                                invoice,
                                attempt,
                                charge,
                                at,
                            )
                            .await
                        })
                    })
                    .await?;
                match succeeded {
                    Some(true) => summary.payments_succeeded += 1,
                    Some(false) => summary.payments_failed += 1,
                    None => {}
                }
            }
        }
    }
}

#[derive(Default)]
struct Delta {
    invoices: u64,
    trials_ending: u64,
    canceled: u64,
}

async fn price_of(store: &Store, id: &str) -> Result<Price, StoreError> {
    catalog::get_price(store, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("subscription price {id} is missing")))
}

async fn advance(
    tx: &mut Tx,
    store: &Store,
    id: &str,
    now: Timestamp,
) -> Result<(Step, Delta), StoreError> {
    let mut delta = Delta::default();
    let Some(mut sub) = subscriptions::get_for_update(tx, id).await? else {
        return Ok((Step::Idle, delta));
    };
    let Some(at) = sub.next_action_at.filter(|t| *t <= now) else {
        return Ok((Step::Idle, delta));
    };
    let price = price_of(store, &sub.price_id).await?;
    let open = subscriptions::open_invoice_for_update(tx, id).await?;
    if let Some(invoice) = open {
        if invoice.next_attempt_at.is_some_and(|t| t <= at) {
            return Ok((Step::Charge(Box::new(Due { sub, invoice, at })), delta));
        }
        // An open invoice with no attempt left to make: it should have been settled.
        return Err(StoreError::Corrupt(format!(
            "subscription {id} waits on invoice {} with no attempt scheduled",
            invoice.id
        )));
    }
    if sub.status == SubscriptionStatus::Trialing
        && !sub.trial_notice_sent
        && sub
            .trial_end
            .is_some_and(|end| end.add_secs(-TRIAL_NOTICE_SECS) <= at && at < end)
    {
        sub.trial_notice_sent = true;
        sub.updated_at = at;
        sub.next_action_at = next_action(&sub, None);
        subscriptions::update(tx, &sub).await?;
        events::append(
            tx,
            subscription_event(kind::SUBSCRIPTION_TRIAL_WILL_END, &sub, &price, None, at),
        );
        delta.trials_ending += 1;
        return Ok((Step::Done, delta));
    }
    if sub.current_period_end > at {
        // Nothing due after all (a trial notice already passed); reschedule.
        sub.trial_notice_sent = true;
        sub.next_action_at = next_action(&sub, None);
        subscriptions::update(tx, &sub).await?;
        return Ok((Step::Done, delta));
    }
    if sub.cancel_at_period_end {
        let ended_at = sub.current_period_end;
        end(tx, sub, &price, ended_at, now).await?;
        delta.canceled += 1;
        return Ok((Step::Done, delta));
    }
    // The period is over: start the next one and bill it.
    let every = recurring(&price)?;
    let start = sub.current_period_end;
    sub.periods += 1;
    sub.current_period_start = start;
    sub.current_period_end = period_end(sub.billing_anchor, every, sub.periods)
        .ok_or_else(|| StoreError::Corrupt(format!("subscription {id}: period out of range")))?;
    sub.trial_notice_sent = true;
    sub.updated_at = at;
    let total = total_of(&price, sub.quantity)
        .ok_or_else(|| StoreError::Corrupt(format!("subscription {id}: total out of range")))?;
    let mut lines = subscriptions::pending_lines(tx, id).await?;
    lines.push(base_line(
        &price,
        sub.quantity,
        sub.current_period_start,
        sub.current_period_end,
        total,
    ));
    lines.extend(quote_line(
        &sub,
        sub.current_period_start,
        sub.current_period_end,
    ));
    let reason = if sub.status == SubscriptionStatus::Trialing {
        "subscription_trial_end"
    } else {
        "subscription_cycle"
    };
    let (mut invoice, carry) = build_invoice(&sub, reason, lines, at);
    subscriptions::insert_invoice(tx, &invoice, at).await?;
    if let Some(carry) = carry {
        subscriptions::add_pending_line(tx, id, &carry, at).await?;
    }
    delta.invoices += 1;
    events::append(tx, invoice_event(kind::INVOICE_FINALIZED, &invoice, at));
    if invoice.status == InvoiceStatus::Paid {
        events::append(tx, invoice_event(kind::INVOICE_PAID, &invoice, at));
        let before = sub.status;
        if before == SubscriptionStatus::Trialing {
            sub.status = SubscriptionStatus::Active;
        }
        sub.next_action_at = next_action(&sub, None);
        subscriptions::update(tx, &sub).await?;
        if before != sub.status {
            let previous = json!({ "status": before.as_str(), "mrr_minor": 0 });
            events::append(
                tx,
                subscription_event(kind::SUBSCRIPTION_UPDATED, &sub, &price, Some(previous), at),
            );
        }
        return Ok((Step::Done, delta));
    }
    invoice.next_attempt_at = Some(at);
    sub.next_action_at = next_action(&sub, Some(&invoice));
    subscriptions::update(tx, &sub).await?;
    Ok((Step::Charge(Box::new(Due { sub, invoice, at })), delta))
}

/// Records one charge attempt on an invoice and moves the invoice and the subscription on.
/// `Some(true)` if it was paid, `Some(false)` if the attempt failed, `None` if another host
/// recorded this attempt first.
#[allow(clippy::too_many_arguments)]
async fn settle(
    tx: &mut Tx,
    store: &Store,
    gateway: &str,
    dunning: &Dunning,
    sub: Subscription,
    invoice: Invoice,
    attempt: i64,
    charge: Result<crate::gateway::Charge, String>,
    at: Timestamp,
) -> Result<Option<bool>, StoreError> {
    let Some(mut sub_now) = subscriptions::get_for_update(tx, &sub.id).await? else {
        return Ok(None);
    };
    let Some(mut inv) = subscriptions::open_invoice_for_update(tx, &sub.id).await? else {
        return Ok(None);
    };
    if inv.id != invoice.id || inv.attempt_count != attempt - 1 {
        return Ok(None);
    }
    let price = price_of(store, &sub_now.price_id).await?;
    let (paid, payment_id) = match &charge {
        Ok(c) => {
            let amount = Money {
                minor: inv.amount_due_minor,
                currency: inv.currency,
            };
            let attempt = Attempt::for_invoice(&sub_now, &inv, amount);
            let (payment, _) = charges::record_once(tx, gateway, attempt, c, at).await?;
            (c.status == ChargeStatus::Succeeded, Some(payment.id))
        }
        Err(_) => (false, None),
    };
    inv.attempt_count = attempt;
    inv.updated_at = at;
    if payment_id.is_some() {
        inv.payment_id = payment_id;
    }
    let before = sub_now.status;
    if paid {
        inv.status = InvoiceStatus::Paid;
        inv.amount_paid_minor = inv.amount_due_minor;
        inv.next_attempt_at = None;
        subscriptions::update_invoice(tx, &inv).await?;
        events::append(tx, invoice_event(kind::INVOICE_PAID, &inv, at));
        sub_now.status = SubscriptionStatus::Active;
    } else {
        let retry = usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| dunning.retry_days.get(i));
        events::append(tx, invoice_event(kind::INVOICE_PAYMENT_FAILED, &inv, at));
        match retry {
            Some(days) => {
                inv.next_attempt_at = Some(at.add_secs(days * DAY_SECS));
                subscriptions::update_invoice(tx, &inv).await?;
                sub_now.status = SubscriptionStatus::PastDue;
            }
            None => {
                inv.status = InvoiceStatus::Uncollectible;
                inv.next_attempt_at = None;
                subscriptions::update_invoice(tx, &inv).await?;
                events::append(tx, invoice_event(kind::INVOICE_UNCOLLECTIBLE, &inv, at));
                if dunning.final_action == FinalAction::Cancel {
                    end(tx, sub_now, &price, at, at).await?;
                    return Ok(Some(false));
                }
                sub_now.status = SubscriptionStatus::Unpaid;
            }
        }
    }
    sub_now.updated_at = at;
    let open = (inv.status == InvoiceStatus::Open).then_some(&inv);
    sub_now.next_action_at = next_action(&sub_now, open);
    subscriptions::update(tx, &sub_now).await?;
    if before != sub_now.status {
        let previous = json!({
            "status": before.as_str(),
            "mrr_minor": subscription_mrr(&sub, &price),
        });
        events::append(
            tx,
            subscription_event(
                kind::SUBSCRIPTION_UPDATED,
                &sub_now,
                &price,
                Some(previous),
                at,
            ),
        );
    }
    Ok(Some(paid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_normalisation() {
        let m = |i, c| Recurring::new(i, c).unwrap();
        assert_eq!(monthly_minor(12_000, m(Interval::Year, 1)), 1_000);
        assert_eq!(monthly_minor(3_000, m(Interval::Month, 3)), 1_000);
        assert_eq!(monthly_minor(1_000, m(Interval::Month, 1)), 1_000);
        assert_eq!(monthly_minor(1_200, m(Interval::Week, 1)), 5_200);
        assert_eq!(monthly_minor(100, m(Interval::Day, 1)), 3_042);
    }
}
