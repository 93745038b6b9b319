//! Subscriptions and invoices billed by a gateway (Stripe): our rows mirror its objects and
//! change only through its answers and its events, each change with its domain events in
//! the same transaction. The host's own billing engine never touches them (its claim of
//! due work skips rows with a `gateway_id`, and they have no `next_action_at`).
//!
//! **Order.** Events arrive late, twice, or out of order, and Stripe's objects carry no
//! version, so every mirrored row keeps `gateway_event_at`, the `created` second of the
//! newest event (or answer) applied to it:
//! - a subscription event older than that is ignored; one from the same second is applied,
//!   unless it is `customer.subscription.created`, which is never newer than anything
//!   already applied. An answer to our own call never moves the mark (Stripe gives no time
//!   for it, and the host's clock is not Stripe's), and it is written only over the row it
//!   was asked of: one that moved on while the call was in flight keeps its state;
//! - a subscription refetched by reconciliation follows the rules of an answer, and moves
//!   the mark to the newest time its state carries (see [`apply_refetched`]); a refetched
//!   invoice follows the rules of an event dated by its status history
//!   ([`apply_refetched_invoice`]);
//! - a canceled subscription stays canceled (Stripe never revives one);
//! - an invoice's status only moves forward (open → uncollectible → paid or void), or
//!   sideways with a newer event; a failed payment attempt is counted once, when the
//!   invoice's `attempt_count` grows;
//! - a trial notice is recorded once per subscription;
//! - a payment the gateway took for a paid invoice is recorded once as a payment of ours,
//!   linked to the invoice, whichever event names it and however often
//!   ([`record_payments`]): so refunds and disputes of its charge find it.
//!
//! Two changes to one subscription at Stripe within the same second are applied in the
//! order their events arrive: a known limit of ordering by Stripe's one-second `created`.

use hephaestus_core::Timestamp;
use hephaestus_core::catalog::Price;
use hephaestus_core::event::kind;
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::Money;
use hephaestus_core::subscription::{
    Invoice, InvoiceLine, InvoiceStatus, Subscription, SubscriptionStatus,
};
use hephaestus_store::gateway_ids::{self, Mirror};
use hephaestus_store::{StoreError, Tx, catalog, events, subscriptions};
use serde_json::json;

use crate::charges::{self, Attempt};
use crate::gateway::{
    Charge, ChargeStatus, GatewayInvoice, GatewayInvoicePayment, GatewaySubscription,
};
use crate::subscriptions::{invoice_event, subscription_event, subscription_mrr};

/// Whole seconds since the epoch: the unit of Stripe's `created` and of `gateway_event_at`.
pub fn secs(t: Timestamp) -> i64 {
    t.as_micros().div_euclid(1_000_000)
}

/// Whether an event created at `created` is newer than the state applied at `last`.
pub fn is_newer(last: Option<i64>, created: i64, creation_event: bool) -> bool {
    match last {
        None => true,
        Some(last) => created > last || (created == last && !creation_event),
    }
}

/// Our subscription as the gateway's state has it. `price_id` is ours for the gateway's
/// price, when it is one of ours.
pub fn merge(
    sub: &Subscription,
    state: &GatewaySubscription,
    price_id: Option<String>,
) -> Subscription {
    let mut next = sub.clone();
    if let Some(status) = state.status {
        next.status = status;
    }
    if let Some(price_id) = price_id {
        next.price_id = price_id;
    }
    if let Some(q) = state.quantity.filter(|q| *q > 0) {
        next.quantity = q;
    }
    if let Some(t) = state.current_period_start {
        next.current_period_start = t;
    }
    if let Some(t) = state.current_period_end {
        next.current_period_end = t;
    }
    if state.trial_start.is_some() {
        next.trial_start = state.trial_start;
    }
    if state.trial_end.is_some() {
        next.trial_end = state.trial_end;
    }
    next.cancel_at_period_end = state.cancel_at_period_end;
    let cancelling = next.cancel_at_period_end || next.status == SubscriptionStatus::Canceled;
    next.canceled_at = state.canceled_at.or(sub.canceled_at.filter(|_| cancelling));
    if next.status == SubscriptionStatus::Canceled {
        next.ended_at = state.ended_at.or(sub.ended_at);
        next.canceled_at = next.canceled_at.or(next.ended_at);
    }
    // The gateway bills it: nothing is ever due for the host's own engine.
    next.next_action_at = None;
    next
}

/// Our subscription as the gateway's state has it, with our price for the gateway's.
pub async fn merged(
    tx: &mut Tx,
    sub: &Subscription,
    state: &GatewaySubscription,
) -> Result<Subscription, StoreError> {
    let price_id = match &state.gateway_price_id {
        Some(p) => gateway_ids::ours_in(tx, &sub.gateway, Mirror::Price, p).await?,
        None => None,
    };
    Ok(merge(sub, state, price_id))
}

/// Applies the gateway's answer to a change asked through the API, with the changes kept
/// only here (`local`: payment method, metadata) and its `subscription.*` event. `asked` is
/// the row as it was when the change was sent, `current` the row now, locked.
///
/// The answer leaves `gateway_event_at` alone: a subscription carries no time of its last
/// change, and the host's clock is not Stripe's, so stamping the answer with it would hide
/// every event Stripe created in the same moments. The event Stripe sends for this very
/// change moves the mark instead.
///
/// The answer is Stripe's state only if nothing was applied while the call was in flight:
/// when the row moved on (an event, or another change committed first), or it has ended,
/// only the local changes are written, and Stripe's events carry its state here.
pub async fn apply_answer(
    tx: &mut Tx,
    asked: &Subscription,
    current: Subscription,
    answer: &GatewaySubscription,
    local: impl FnOnce(&mut Subscription),
    now: Timestamp,
) -> Result<Subscription, StoreError> {
    let mut next = if moved_on(asked, &current) {
        current.clone()
    } else {
        merged(tx, &current, answer).await?
    };
    local(&mut next);
    record(tx, &current, next, now, true).await
}

/// Whether the row is no longer the one a call to the gateway was about: something was
/// applied to it while the call was in flight, or it has ended. The gateway's answer is then
/// not its newest news here.
fn moved_on(asked: &Subscription, current: &Subscription) -> bool {
    current != asked || current.status == SubscriptionStatus::Canceled
}

/// The newest moment the gateway's state of a subscription carries a time for, in Stripe's
/// own clock: its period's start (a renewal), its trial's start, its cancellation or end.
/// Every event created before it is older than the state.
fn stamped(state: &GatewaySubscription) -> Option<i64> {
    [
        state.current_period_start,
        state.trial_start,
        state.canceled_at,
        state.ended_at,
    ]
    .into_iter()
    .flatten()
    .map(secs)
    .max()
}

/// Applies the state reconciliation refetched from the gateway for `asked`, the row as it
/// was claimed, whose newest applied event was created at `asked_mark`. Under the rules of
/// an answer ([`apply_answer`]): written only over that very row (nothing applied to it
/// since, not even an event that changed nothing) and never over an ended one, with the
/// domain events for what changed. Unlike an answer, it moves the event mark to the newest
/// time the state itself carries ([`stamped`]): that time is Stripe's, so an event created
/// before it is older than this state and must not undo it, and one from a slow clock is
/// not mistaken for old. An event about a change that carries no time (a payment retried
/// and settled) can still be older than the state and apply after it; its successors
/// follow it. Returns whether the row changed.
pub async fn apply_refetched(
    tx: &mut Tx,
    asked: &Subscription,
    asked_mark: Option<i64>,
    state: &GatewaySubscription,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let Some((current, mark)) =
        subscriptions::find_by_gateway_id_for_update(tx, &asked.gateway, &state.id).await?
    else {
        return Ok(false);
    };
    if moved_on(asked, &current) || mark != asked_mark {
        return Ok(false);
    }
    let next = merged(tx, &current, state).await?;
    let changed = !same_row(&current, &next);
    record(tx, &current, next, now, false).await?;
    if let Some(at) = stamped(state) {
        subscriptions::set_gateway_event_at(tx, &current.id, at).await?;
    }
    Ok(changed)
}

async fn price(tx: &mut Tx, id: &str) -> Result<Price, StoreError> {
    catalog::get_price_in(tx, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("subscription price {id} is missing")))
}

/// Stores a subscription the gateway has just started (`state` is its answer), with its
/// `subscription.created` event.
pub async fn start(
    tx: &mut Tx,
    planned: Subscription,
    price: &Price,
    state: &GatewaySubscription,
    now: Timestamp,
) -> Result<Subscription, StoreError> {
    let mut sub = merge(&planned, state, None);
    sub.gateway_id = Some(state.id.clone());
    sub.price_id = price.id.clone();
    sub.created_at = now;
    sub.updated_at = now;
    // No event mark: see `apply_answer`.
    subscriptions::insert(tx, &sub).await?;
    events::append(
        tx,
        subscription_event(kind::SUBSCRIPTION_CREATED, &sub, price, None, now),
    );
    Ok(sub)
}

/// Writes `next` over `before` and appends the domain event for what changed: a
/// `subscription.canceled` when it ended, a `subscription.updated` when its status, price,
/// quantity or cancellation changed (or always, for a change asked through the API).
/// A renewal alone (new period bounds) is written with no event of its own: its invoice
/// has them.
pub async fn record(
    tx: &mut Tx,
    before: &Subscription,
    mut next: Subscription,
    now: Timestamp,
    always: bool,
) -> Result<Subscription, StoreError> {
    let same_row = same_row(before, &next);
    if same_row && !always {
        return Ok(next);
    }
    next.updated_at = now;
    subscriptions::update(tx, &next).await?;
    let noticed = before.status != next.status
        || before.price_id != next.price_id
        || before.quantity != next.quantity
        || before.cancel_at_period_end != next.cancel_at_period_end;
    if !noticed && !always {
        return Ok(next);
    }
    let old_price = price(tx, &before.price_id).await?;
    let new_price = if next.price_id == before.price_id {
        old_price.clone()
    } else {
        price(tx, &next.price_id).await?
    };
    let previous = json!({
        "status": before.status.as_str(),
        "price_id": before.price_id,
        "quantity": before.quantity,
        "mrr_minor": subscription_mrr(before, &old_price),
        "cancel_at_period_end": before.cancel_at_period_end,
    });
    let kind = if next.status == SubscriptionStatus::Canceled
        && before.status != SubscriptionStatus::Canceled
    {
        kind::SUBSCRIPTION_CANCELED
    } else {
        kind::SUBSCRIPTION_UPDATED
    };
    events::append(
        tx,
        subscription_event(kind, &next, &new_price, Some(previous), now),
    );
    Ok(next)
}

/// Whether `next` holds what `before` does, the time of its last change aside.
fn same_row(before: &Subscription, next: &Subscription) -> bool {
    Subscription {
        updated_at: before.updated_at,
        ..next.clone()
    } == *before
}

/// Records the trial's end notice once, with its `subscription.trial_will_end` event.
/// Returns whether it was new.
pub async fn trial_will_end(
    tx: &mut Tx,
    sub: Subscription,
    trial_end: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    if sub.trial_notice_sent {
        return Ok(false);
    }
    let mut next = sub;
    next.trial_notice_sent = true;
    if trial_end.is_some() {
        next.trial_end = trial_end;
    }
    next.updated_at = now;
    subscriptions::update(tx, &next).await?;
    let price = price(tx, &next.price_id).await?;
    events::append(
        tx,
        subscription_event(kind::SUBSCRIPTION_TRIAL_WILL_END, &next, &price, None, now),
    );
    Ok(true)
}

fn rank(s: InvoiceStatus) -> u8 {
    match s {
        InvoiceStatus::Open => 0,
        InvoiceStatus::Uncollectible => 1,
        InvoiceStatus::Paid | InvoiceStatus::Void => 2,
    }
}

fn status_event(s: InvoiceStatus) -> Option<&'static str> {
    match s {
        InvoiceStatus::Open => None,
        InvoiceStatus::Paid => Some(kind::INVOICE_PAID),
        InvoiceStatus::Void => Some(kind::INVOICE_VOIDED),
        InvoiceStatus::Uncollectible => Some(kind::INVOICE_UNCOLLECTIBLE),
    }
}

/// What mirroring an invoice came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirrored {
    Applied,
    /// A draft, or an event older than the state held: nothing changed.
    Unchanged,
}

/// Mirrors the gateway's invoice of `sub` as an event created at `created` reports it.
/// `payment_failed`: the event reports a failed payment attempt.
pub async fn mirror_invoice(
    tx: &mut Tx,
    sub: &Subscription,
    inv: &GatewayInvoice,
    created: i64,
    payment_failed: bool,
    now: Timestamp,
) -> Result<Mirrored, StoreError> {
    let Some(status) = inv.status else {
        return Ok(Mirrored::Unchanged);
    };
    let Some((mut ours, last)) =
        subscriptions::find_invoice_by_gateway_id_for_update(tx, &inv.id).await?
    else {
        let period_start = inv.period_start.unwrap_or(sub.current_period_start);
        let period_end = inv.period_end.unwrap_or(sub.current_period_end);
        let mut invoice = Invoice {
            id: ids::new_id(prefix::INVOICE),
            customer_id: sub.customer_id.clone(),
            subscription_id: Some(sub.id.clone()),
            currency: inv.currency,
            status,
            billing_reason: inv.billing_reason.clone(),
            subtotal_minor: inv.subtotal_minor,
            amount_due_minor: inv.amount_due_minor.max(0),
            amount_paid_minor: inv.amount_paid_minor,
            period_start,
            period_end,
            attempt_count: inv.attempt_count,
            next_attempt_at: inv
                .next_attempt_at
                .filter(|_| status == InvoiceStatus::Open),
            payment_id: None,
            gateway_id: Some(inv.id.clone()),
            created_at: now,
            updated_at: now,
            lines: Vec::with_capacity(inv.lines.len()),
        };
        for l in &inv.lines {
            let price_id = match &l.gateway_price_id {
                Some(p) => gateway_ids::ours_in(tx, &sub.gateway, Mirror::Price, p).await?,
                None => None,
            };
            invoice.lines.push(InvoiceLine {
                id: ids::new_id(prefix::INVOICE_LINE),
                description: l.description.clone(),
                price_id,
                quantity: l.quantity,
                amount: Money {
                    minor: l.amount_minor,
                    currency: inv.currency,
                },
                proration: l.proration,
                period_start: l.period_start.unwrap_or(period_start),
                period_end: l.period_end.unwrap_or(period_end),
            });
        }
        subscriptions::insert_invoice(tx, &invoice, now).await?;
        subscriptions::set_invoice_gateway_event_at(tx, &invoice.id, created).await?;
        events::append(tx, invoice_event(kind::INVOICE_FINALIZED, &invoice, now));
        if payment_failed && invoice.attempt_count > 0 {
            events::append(
                tx,
                invoice_event(kind::INVOICE_PAYMENT_FAILED, &invoice, now),
            );
        }
        if status == InvoiceStatus::Paid
            && record_payments(tx, sub, &mut invoice, &inv.payments, now).await?
        {
            subscriptions::update_invoice(tx, &invoice).await?;
        }
        if let Some(k) = status_event(status) {
            events::append(tx, invoice_event(k, &invoice, now));
        }
        return Ok(Mirrored::Applied);
    };
    let newer = rank(status) > rank(ours.status)
        || (rank(status) == rank(ours.status) && created >= last.unwrap_or(i64::MIN));
    let failed_attempt = payment_failed && inv.attempt_count > ours.attempt_count;
    // A paid invoice's payments are recorded whatever the report's age: the one that names
    // them need not be the one that marked the invoice paid.
    let names_payments = status == InvoiceStatus::Paid && !inv.payments.is_empty();
    if !newer && !failed_attempt && !names_payments {
        return Ok(Mirrored::Unchanged);
    }
    let before = ours.clone();
    if newer || failed_attempt {
        ours.attempt_count = ours.attempt_count.max(inv.attempt_count);
    }
    if newer {
        ours.status = status;
        ours.amount_paid_minor = inv.amount_paid_minor;
        ours.next_attempt_at = inv
            .next_attempt_at
            .filter(|_| status == InvoiceStatus::Open);
    }
    let recorded = names_payments
        && ours.status == InvoiceStatus::Paid
        && record_payments(tx, sub, &mut ours, &inv.payments, now).await?;
    let changed = ours != before;
    if changed {
        ours.updated_at = now;
        subscriptions::update_invoice(tx, &ours).await?;
    }
    if newer || failed_attempt {
        subscriptions::set_invoice_gateway_event_at(tx, &ours.id, created).await?;
    }
    if failed_attempt {
        events::append(tx, invoice_event(kind::INVOICE_PAYMENT_FAILED, &ours, now));
    }
    if ours.status != before.status
        && let Some(k) = status_event(ours.status)
    {
        events::append(tx, invoice_event(k, &ours, now));
    }
    Ok(if changed || recorded {
        Mirrored::Applied
    } else {
        Mirrored::Unchanged
    })
}

/// Applies an invoice reconciliation refetched from the gateway `gateway`, under the rules
/// of an event ([`mirror_invoice`]) dated by the newest time the invoice's own status
/// history carries: a status only moves forward, a failed attempt is counted when
/// `attempt_count` grew on an invoice still open, and the payments of a paid one are
/// recorded once. With no such time it is older than every event applied: only a move
/// forward or a new attempt applies. The subscription is locked first, as the invoice
/// events lock it. `Unchanged` too when we bill no such subscription.
pub async fn apply_refetched_invoice(
    tx: &mut Tx,
    gateway: &str,
    inv: &GatewayInvoice,
    now: Timestamp,
) -> Result<Mirrored, StoreError> {
    let Some((sub, _)) =
        subscriptions::find_by_gateway_id_for_update(tx, gateway, &inv.subscription).await?
    else {
        return Ok(Mirrored::Unchanged);
    };
    let dated = inv.changed_at.map(secs).unwrap_or(i64::MIN);
    let failed_attempt = inv.status == Some(InvoiceStatus::Open);
    mirror_invoice(tx, &sub, inv, dated, failed_attempt, now).await
}

/// Records the payments the gateway took for `invoice` (of `sub`) that are not payments of
/// ours yet, each with its `payment.succeeded` event, down the path of the host's own
/// invoice payments ([`charges::record_once`]); the first becomes the invoice's payment.
/// Whichever event about the invoice names a payment first records it, and the others find
/// it: a gateway id is one payment. Returns whether anything was recorded or linked.
pub async fn record_payments(
    tx: &mut Tx,
    sub: &Subscription,
    invoice: &mut Invoice,
    paid: &[GatewayInvoicePayment],
    now: Timestamp,
) -> Result<bool, StoreError> {
    let mut changed = false;
    for p in paid.iter().filter(|p| p.amount_minor > 0) {
        let amount = Money {
            minor: p.amount_minor,
            currency: invoice.currency,
        };
        let charge = Charge {
            id: p.gateway_id.clone(),
            amount,
            status: ChargeStatus::Succeeded,
            decline_code: None,
            failure_message: None,
            amount_refunded_minor: 0,
            dispute: None,
        };
        let attempt = Attempt::for_invoice(sub, invoice, amount);
        let (payment, new) = charges::record_once(tx, &sub.gateway, attempt, &charge, now).await?;
        changed |= new;
        if invoice.payment_id.is_none() {
            invoice.payment_id = Some(payment.id);
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_events_never_beat_what_is_applied() {
        assert!(is_newer(None, 10, true));
        assert!(is_newer(Some(9), 10, true));
        assert!(!is_newer(Some(10), 10, true));
        assert!(is_newer(Some(10), 10, false));
        assert!(!is_newer(Some(11), 10, false));
        assert_eq!(secs(Timestamp::from_micros(1_999_999)), 1);
        assert_eq!(secs(Timestamp::from_micros(-1)), -1);
    }

    #[test]
    fn invoice_states_only_move_forward() {
        assert!(rank(InvoiceStatus::Paid) > rank(InvoiceStatus::Open));
        assert!(rank(InvoiceStatus::Paid) > rank(InvoiceStatus::Uncollectible));
        assert_eq!(rank(InvoiceStatus::Void), rank(InvoiceStatus::Paid));
    }
}
