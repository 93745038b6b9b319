//! Applying Stripe events from the inbox. Events arrive late, twice, or out of order, so
//! every rule here is monotonic: a payment only moves forward (see
//! [`PaymentStatus::progress`]), or sideways when the event is newer than the last one
//! applied; refunded amounts only grow; a refund is recorded once per gateway refund id.
//! Subscriptions and invoices follow the rules of [`crate::gateway_subscriptions`].
//! Each event is applied in one transaction with its domain events and its inbox status.
//! `invoice.payment_succeeded` (which older API versions and localstripe send) is read as
//! `invoice.paid`: both report the same invoice paid, and the second changes nothing. Every
//! invoice event (`finalized`, `updated`, `paid`, `voided`, `marked_uncollectible`,
//! `payment_failed`) carries the whole invoice and is mirrored by its `status` under the same
//! rule, whatever its type: so a late `payment_failed` never reopens a voided invoice, and an
//! `invoice.updated` is news only when it is newer.
//!
//! **Payments of Stripe's invoices.** A paid invoice's charge is recorded as a payment of
//! ours (gateway id: its PaymentIntent, or the charge itself when it was made without one:
//! the id its refunds and disputes name; amount: what it paid of the invoice), linked to
//! the invoice, with its `payment.succeeded` event, by the first event that names it: an
//! invoice event carrying `payment_intent` or `charge` (older API versions, localstripe) or
//! an included `payments` list, or `invoice_payment.paid` (today's API); see
//! [`stripe_invoices`]. Later ones find it, so it is recorded once. A refund or dispute of
//! that charge arriving first waits, as any event about an unknown payment does, and then
//! finds it.
//!
//! **Events that never arrive** are made up for by the periodic reconciliation
//! ([`crate::reconcile`]): unsettled payments, Stripe-billed subscriptions left past
//! due, unpaid or past their period's end, and their invoices left open or never reported
//! are refetched and applied under the same forward-only rules.

use hephaestus_core::Timestamp;
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::Money;
use hephaestus_core::payment::{Payment, PaymentStatus, Refund};
use hephaestus_core::subscription::SubscriptionStatus;
use hephaestus_store::inbox::{self, InboxEvent};

use crate::disputes::{self, Change, DisputeState};
use crate::gateway_subscriptions::{self, Mirrored};
use crate::stripe::from_stripe_amount;
use crate::stripe_invoices;
use crate::stripe_subscriptions::subscription_state;
use hephaestus_store::{Store, StoreError, Tx, events, payments, subscriptions};
use serde_json::{Value, json};

pub const SOURCE: &str = "stripe";
const GATEWAY: &str = "stripe";

/// What applying an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Processed,
    /// Stored and deliberately not acted on (a type we do not handle, an object we do not
    /// know, an event older than the state we hold).
    Ignored(String),
    /// About an object not recorded yet: the event can beat the API's own commit of the
    /// payment it concerns. Tried again later; ignored after [`UNKNOWN_OBJECT_ATTEMPTS`].
    NotYet(String),
}

/// How long an event about an object we do not know (yet) waits for it before it is
/// ignored. Stripe retries a delivery that failed for up to three days, so the event that
/// brings the object here (a payment's, an invoice's) can be that late: a refund or dispute
/// that arrived first must still be applied then.
pub const UNKNOWN_OBJECT_WAIT_SECS: i64 = 3 * 86_400;

/// Tries an event about an unknown object gets: enough for the waits between them
/// ([`inbox::wait_delay`]) to add up to [`UNKNOWN_OBJECT_WAIT_SECS`].
pub const UNKNOWN_OBJECT_ATTEMPTS: i64 = tries_within(UNKNOWN_OBJECT_WAIT_SECS);

const fn tries_within(secs: i64) -> i64 {
    let (mut waited, mut tries) = (0, 1);
    while waited < secs {
        waited += inbox::wait_delay(tries);
        tries += 1;
    }
    tries
}

/// Claims due events and applies them, each in its own transaction, all at once: on SQLite
/// they share one group commit (in claim order), on PostgreSQL they spread over the pool.
/// Every rule below holds in any order, and a payment's row is locked while an event about
/// it is applied. Returns how many were claimed.
pub async fn process_due(store: &Store, batch: i64) -> Result<usize, StoreError> {
    let due = inbox::claim_due(store, batch, 60).await?;
    let claimed = due.len();
    let outcomes = futures::future::join_all(due.into_iter().map(|event| async move {
        let for_apply = event.clone();
        let applied = store
            .write(move |tx| Box::pin(async move { apply(tx, &for_apply).await }))
            .await;
        (event, applied)
    }))
    .await;
    for (event, applied) in outcomes {
        match applied {
            Ok(Applied::Processed) => {}
            Ok(Applied::Ignored(why)) => {
                tracing::debug!(event = %event.id, kind = %event.kind, why = %why, "webhook event ignored");
            }
            Ok(Applied::NotYet(why)) => inbox::wait_later(store, &event, why).await?,
            Err(e) => {
                tracing::warn!(event = %event.id, kind = %event.kind, error = %e, attempt = event.attempts, "webhook event failed; will retry");
                inbox::retry_later(store, &event, e.to_string()).await?;
            }
        }
    }
    Ok(claimed)
}

/// Applies one event and records its outcome in the inbox, in `tx`.
pub async fn apply(tx: &mut Tx, event: &InboxEvent) -> Result<Applied, StoreError> {
    let payload: Value = serde_json::from_str(&event.payload)
        .map_err(|e| StoreError::Corrupt(format!("stored event {}: {e}", event.id)))?;
    let object = &payload["data"]["object"];
    let applied = match event.kind.as_str() {
        "payment_intent.succeeded" => intent(tx, event, object, PaymentStatus::Succeeded).await?,
        "payment_intent.payment_failed" => intent(tx, event, object, PaymentStatus::Failed).await?,
        "payment_intent.requires_action" => {
            intent(tx, event, object, PaymentStatus::RequiresAction).await?
        }
        "payment_intent.processing" => intent(tx, event, object, PaymentStatus::Processing).await?,
        "charge.refunded" => charge_refunded(tx, event, object).await?,
        "charge.refund.updated" => refund_updated(tx, object).await?,
        "charge.dispute.created" => dispute(tx, event, object, Change::Created).await?,
        "charge.dispute.updated" => dispute(tx, event, object, Change::Updated).await?,
        "charge.dispute.funds_withdrawn" => {
            dispute(tx, event, object, Change::FundsWithdrawn).await?
        }
        "charge.dispute.funds_reinstated" => {
            dispute(tx, event, object, Change::FundsReinstated).await?
        }
        "charge.dispute.closed" => dispute(tx, event, object, Change::Closed).await?,
        "customer.subscription.created" => subscription(tx, event, object, false).await?,
        "customer.subscription.updated" | "customer.subscription.deleted" => {
            subscription(tx, event, object, event.kind.ends_with(".deleted")).await?
        }
        "customer.subscription.trial_will_end" => trial_will_end(tx, object).await?,
        "invoice.finalized"
        | "invoice.updated"
        | "invoice.paid"
        | "invoice.payment_succeeded"
        | "invoice.voided"
        | "invoice.marked_uncollectible" => invoice(tx, event, object, false).await?,
        "invoice.payment_failed" => invoice(tx, event, object, true).await?,
        "invoice_payment.paid" => invoice_payment(tx, object).await?,
        other => Applied::Ignored(format!("event type {other} is not handled")),
    };
    let applied = match applied {
        Applied::NotYet(why) if event.attempts >= UNKNOWN_OBJECT_ATTEMPTS => Applied::Ignored(why),
        Applied::NotYet(why) => return Ok(Applied::NotYet(why)),
        other => other,
    };
    let (status, note) = match &applied {
        Applied::Processed => ("processed", None),
        Applied::Ignored(why) | Applied::NotYet(why) => ("ignored", Some(why.as_str())),
    };
    inbox::finish(tx, &event.source, &event.id, status, note).await?;
    Ok(applied)
}

/// Whether an event created at `created` may set `payment` to `status`.
fn moves_forward(payment: &Payment, status: PaymentStatus, created: i64) -> bool {
    let (now, next) = (payment.status.progress(), status.progress());
    next > now || (next == now && created >= payment.gateway_event_at.unwrap_or(i64::MIN))
}

async fn intent(
    tx: &mut Tx,
    event: &InboxEvent,
    object: &Value,
    status: PaymentStatus,
) -> Result<Applied, StoreError> {
    let Some(intent_id) = object["id"].as_str() else {
        return Ok(Applied::Ignored(
            "the event has no payment intent id".into(),
        ));
    };
    let Some(mut payment) = payments::find_by_gateway_id(tx, GATEWAY, intent_id).await? else {
        if let Some(invoice) = object["invoice"].as_str() {
            // Stripe charging one of its invoices (a subscription it bills): the invoice's
            // own events say what came of it, and record the payment once it is paid.
            return Ok(Applied::Ignored(format!(
                "{intent_id} pays Stripe invoice {invoice}, recorded from its invoice events"
            )));
        }
        return Ok(Applied::NotYet(format!("no payment for {intent_id}")));
    };
    if !moves_forward(&payment, status, event.created) {
        return Ok(Applied::Ignored(format!(
            "payment {} is {}; this {} event is older",
            payment.id, payment.status, event.kind
        )));
    }
    let before = payment.status;
    payment.status = status;
    payment.gateway_event_at = Some(
        payment
            .gateway_event_at
            .unwrap_or(i64::MIN)
            .max(event.created),
    );
    if status == PaymentStatus::Failed {
        // Named as the Stripe gateway names a decline it is answered; an event that gives no
        // reason leaves the one already recorded.
        let error = &object["last_payment_error"];
        let reason =
            crate::stripe::decline_reason(error["decline_code"].as_str(), error["code"].as_str());
        payment.decline_code = reason.or(payment.decline_code.take());
        payment.failure_message = error["message"]
            .as_str()
            .map(str::to_string)
            .or(payment.failure_message.take());
    }
    let now = Timestamp::now();
    payments::apply_gateway_state(tx, &payment, now).await?;
    let domain_kind = status.event_kind();
    if let Some(domain_kind) = domain_kind.filter(|_| before != status) {
        events::append(tx, payment_event(domain_kind, &payment, now));
    }
    Ok(Applied::Processed)
}

pub(crate) fn payment_event(kind: &'static str, p: &Payment, now: Timestamp) -> NewEvent {
    NewEvent::new(
        kind,
        &p.id,
        Some(p.customer_id.clone()),
        json!({
            "payment_id": p.id,
            "customer_id": p.customer_id,
            "amount_minor": p.amount.minor,
            "currency": p.amount.currency.code(),
            "decline_code": p.decline_code,
        }),
        now,
    )
}

async fn charge_refunded(
    tx: &mut Tx,
    event: &InboxEvent,
    charge: &Value,
) -> Result<Applied, StoreError> {
    let Some(paid_by) = stripe_invoices::id_of(&charge["payment_intent"]).or(charge["id"].as_str())
    else {
        return Ok(Applied::Ignored("the charge has no id".into()));
    };
    let Some(mut payment) = payments::find_by_gateway_id(tx, GATEWAY, paid_by).await? else {
        return Ok(Applied::NotYet(format!("no payment for {paid_by}")));
    };
    let now = Timestamp::now();
    // Record each refund the charge lists that we have not seen (refunds made through our
    // own API are already recorded under their gateway id).
    let listed = charge["refunds"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for r in &listed {
        let (Some(id), Some(amount)) = (r["id"].as_str(), r["amount"].as_i64()) else {
            continue;
        };
        let amount = from_stripe_amount(amount, payment.amount.currency);
        if payments::refund_known(tx, id).await? {
            continue;
        }
        let refund = Refund {
            id: ids::new_id(prefix::REFUND),
            payment_id: payment.id.clone(),
            amount: Money {
                minor: amount,
                currency: payment.amount.currency,
            },
            status: r["status"].as_str().unwrap_or("succeeded").to_string(),
            reason: r["reason"].as_str().map(str::to_string),
            gateway_id: Some(id.to_string()),
            created_at: now,
        };
        payments::insert_refund(tx, &refund).await?;
        events::append(
            tx,
            NewEvent::refund_created(&refund, &payment.customer_id, now),
        );
    }
    let refunded = from_stripe_amount(
        charge["amount_refunded"].as_i64().unwrap_or(0),
        payment.amount.currency,
    )
    .clamp(0, payment.amount.minor);
    if refunded > payment.amount_refunded_minor {
        // A refund means the charge succeeded, whether or not its success event came first;
        // the success event arriving later is then ignored, so it is counted once.
        if payment.status.progress() < PaymentStatus::Succeeded.progress() {
            events::append(tx, payment_event(kind::PAYMENT_SUCCEEDED, &payment, now));
        }
        payment.amount_refunded_minor = refunded;
        let status = if refunded == payment.amount.minor {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        };
        // A dispute outranks a refund; otherwise the refund is the newest news.
        if status.progress() >= payment.status.progress() {
            payment.status = status;
        }
        payment.gateway_event_at = Some(
            payment
                .gateway_event_at
                .unwrap_or(i64::MIN)
                .max(event.created),
        );
        payments::apply_gateway_state(tx, &payment, now).await?;
    }
    Ok(Applied::Processed)
}

async fn dispute(
    tx: &mut Tx,
    event: &InboxEvent,
    object: &Value,
    change: Change,
) -> Result<Applied, StoreError> {
    let paid_by = stripe_invoices::id_of(&object["payment_intent"])
        .or(stripe_invoices::id_of(&object["charge"]));
    let (Some(id), Some(paid_by)) = (object["id"].as_str(), paid_by) else {
        return Ok(Applied::Ignored("the dispute has no id or charge".into()));
    };
    let Some(payment) = payments::find_by_gateway_id(tx, GATEWAY, paid_by).await? else {
        return Ok(Applied::NotYet(format!("no payment for {paid_by}")));
    };
    // Balance transactions are the dispute's money movements: negative withdrawn, positive
    // reinstated. The list in each event is the whole history so far.
    let moves: Vec<i64> = object["balance_transactions"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| t["amount"].as_i64())
                .map(|a| from_stripe_amount(a, payment.amount.currency))
                .collect()
        })
        .unwrap_or_default();
    let state = DisputeState {
        gateway_id: id.to_string(),
        amount_minor: object["amount"]
            .as_i64()
            .map(|a| from_stripe_amount(a, payment.amount.currency))
            .unwrap_or(payment.amount.minor),
        reason: object["reason"].as_str().map(str::to_string),
        status: object["status"]
            .as_str()
            .unwrap_or("needs_response")
            .to_string(),
        withdrawn_minor: moves.iter().filter(|m| **m < 0).map(|m| -m).sum(),
        reinstated_minor: moves.iter().filter(|m| **m > 0).sum(),
    };
    disputes::apply(tx, payment, &state, change, event.created).await?;
    Ok(Applied::Processed)
}

async fn refund_updated(tx: &mut Tx, refund: &Value) -> Result<Applied, StoreError> {
    let (Some(id), Some(status)) = (refund["id"].as_str(), refund["status"].as_str()) else {
        return Ok(Applied::Ignored("the refund has no id or status".into()));
    };
    if payments::set_refund_status(tx, id, status).await? == 0 {
        return Ok(Applied::Ignored(format!("no refund {id}")));
    }
    Ok(Applied::Processed)
}

async fn subscription(
    tx: &mut Tx,
    event: &InboxEvent,
    object: &Value,
    deleted: bool,
) -> Result<Applied, StoreError> {
    let Some(mut state) = subscription_state(object) else {
        return Ok(Applied::Ignored("the event has no subscription id".into()));
    };
    if deleted {
        state.status = Some(SubscriptionStatus::Canceled);
    }
    let Some((sub, last)) =
        subscriptions::find_by_gateway_id_for_update(tx, GATEWAY, &state.id).await?
    else {
        return Ok(Applied::NotYet(format!("no subscription for {}", state.id)));
    };
    if sub.status == SubscriptionStatus::Canceled && state.status != Some(sub.status) {
        return Ok(Applied::Ignored(format!(
            "subscription {} has ended; this {} event is older",
            sub.id, event.kind
        )));
    }
    let creation = event.kind == "customer.subscription.created";
    if !gateway_subscriptions::is_newer(last, event.created, creation) {
        return Ok(Applied::Ignored(format!(
            "subscription {} holds a newer state than this {} event",
            sub.id, event.kind
        )));
    }
    let next = gateway_subscriptions::merged(tx, &sub, &state).await?;
    gateway_subscriptions::record(tx, &sub, next, Timestamp::now(), false).await?;
    subscriptions::set_gateway_event_at(tx, &sub.id, event.created).await?;
    Ok(Applied::Processed)
}

async fn trial_will_end(tx: &mut Tx, object: &Value) -> Result<Applied, StoreError> {
    let Some(id) = object["id"].as_str() else {
        return Ok(Applied::Ignored("the event has no subscription id".into()));
    };
    let Some((sub, _)) = subscriptions::find_by_gateway_id_for_update(tx, GATEWAY, id).await?
    else {
        return Ok(Applied::NotYet(format!("no subscription for {id}")));
    };
    let trial_end = subscription_state(object).and_then(|s| s.trial_end);
    let sub_id = sub.id.clone();
    if !gateway_subscriptions::trial_will_end(tx, sub, trial_end, Timestamp::now()).await? {
        return Ok(Applied::Ignored(format!(
            "the trial of {sub_id} was already noticed"
        )));
    }
    Ok(Applied::Processed)
}

async fn invoice(
    tx: &mut Tx,
    event: &InboxEvent,
    object: &Value,
    payment_failed: bool,
) -> Result<Applied, StoreError> {
    let inv = match stripe_invoices::invoice_state(object) {
        Ok(inv) => inv,
        Err(why) => return Ok(Applied::Ignored(why)),
    };
    let Some((sub, _)) =
        subscriptions::find_by_gateway_id_for_update(tx, GATEWAY, &inv.subscription).await?
    else {
        return Ok(Applied::NotYet(format!(
            "no subscription for {}",
            inv.subscription
        )));
    };
    if inv.status.is_none() {
        return Ok(Applied::Ignored(format!(
            "invoice {} is a draft; it is mirrored once finalized",
            inv.id
        )));
    }
    match gateway_subscriptions::mirror_invoice(
        tx,
        &sub,
        &inv,
        event.created,
        payment_failed,
        Timestamp::now(),
    )
    .await?
    {
        Mirrored::Applied => Ok(Applied::Processed),
        Mirrored::Unchanged => Ok(Applied::Ignored(format!(
            "invoice {} holds this state or a newer one",
            inv.id
        ))),
    }
}

/// `invoice_payment.paid`: a payment of one of Stripe's invoices, recorded as ours once the
/// invoice is mirrored. The invoice's own events say whether it is paid in full.
async fn invoice_payment(tx: &mut Tx, object: &Value) -> Result<Applied, StoreError> {
    let Some(invoice_id) = stripe_invoices::id_of(&object["invoice"]) else {
        return Ok(Applied::Ignored(
            "the invoice payment names no invoice".into(),
        ));
    };
    let Some((mut ours, _)) =
        subscriptions::find_invoice_by_gateway_id_for_update(tx, invoice_id).await?
    else {
        return Ok(Applied::NotYet(format!("no invoice for {invoice_id}")));
    };
    let Some(paid) = stripe_invoices::paid_payment(object, ours.currency) else {
        return Ok(Applied::Ignored(format!(
            "this payment of {invoice_id} is not paid, or names no charge"
        )));
    };
    // Not locked: the invoice's lock is held, and the invoice events take the
    // subscription's first.
    let sub = match &ours.subscription_id {
        Some(id) => subscriptions::get_in(tx, id).await?,
        None => None,
    };
    let Some(sub) = sub else {
        return Ok(Applied::Ignored(format!(
            "invoice {} belongs to no subscription",
            ours.id
        )));
    };
    if !gateway_subscriptions::record_payments(tx, &sub, &mut ours, &[paid], Timestamp::now())
        .await?
    {
        return Ok(Applied::Ignored(format!(
            "the payment of {invoice_id} is recorded already"
        )));
    }
    ours.updated_at = Timestamp::now();
    subscriptions::update_invoice(tx, &ours).await?;
    Ok(Applied::Processed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_about_an_unknown_object_waits_three_days_and_no_longer() {
        let waited = |tries: i64| (1..tries).map(inbox::wait_delay).sum::<i64>();
        assert_eq!(inbox::wait_delay(1), 2);
        assert_eq!(inbox::wait_delay(11), 2048);
        assert_eq!(inbox::wait_delay(12), inbox::WAIT_CAP_SECS);
        assert_eq!(inbox::wait_delay(80), inbox::WAIT_CAP_SECS);
        // The last try comes once three days have passed since the first, not before.
        assert!(waited(UNKNOWN_OBJECT_ATTEMPTS) >= UNKNOWN_OBJECT_WAIT_SECS);
        assert!(waited(UNKNOWN_OBJECT_ATTEMPTS - 1) < UNKNOWN_OBJECT_WAIT_SECS);
        assert_eq!(UNKNOWN_OBJECT_ATTEMPTS, 83);
    }
}
