//! Recording what a gateway answered to a charge as the host's payment, with its domain
//! event: one path for one-time payments and for invoice payments.

use hephaestus_core::Timestamp;
use hephaestus_core::customer::Metadata;
use hephaestus_core::event::NewEvent;
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::Money;
use hephaestus_core::payment::{Payment, PaymentStatus};
use hephaestus_core::subscription::{Invoice, Subscription};
use hephaestus_store::{StoreError, Tx, events, payments};
use serde_json::json;

use crate::disputes::{self, Change};
use crate::gateway::{Charge, ChargeStatus};

/// What the host knew about a charge before the gateway answered.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub customer_id: String,
    pub amount: Money,
    pub payment_method: String,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub invoice_id: Option<String>,
    /// The stored quote whose amount is charged, if any.
    pub priced_by: Option<PricedBy>,
}

/// Which stored quote, and which plugin version behind it, priced a payment or a
/// subscription: carried by their domain events so revenue can be attributed to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PricedBy {
    pub quote_id: String,
    /// `plugin` or `default`.
    pub decided_by: String,
    pub plugin: Option<String>,
    pub plugin_version: Option<String>,
}

impl PricedBy {
    pub fn of(q: &hephaestus_store::quotes::Quote) -> Self {
        PricedBy {
            quote_id: q.id.clone(),
            decided_by: q.decided_by.clone(),
            plugin: q.plugin.clone(),
            plugin_version: q.plugin_version.clone(),
        }
    }

    /// The fields an event about the priced object carries.
    pub fn json(priced: Option<&PricedBy>) -> serde_json::Value {
        match priced {
            None => serde_json::Value::Null,
            Some(p) => json!({
                "quote_id": p.quote_id,
                "decided_by": p.decided_by,
                "plugin": p.plugin,
                "plugin_version": p.plugin_version,
            }),
        }
    }
}

impl Attempt {
    /// A charge of `amount` for `inv`, an invoice of `sub`, to the subscription's method.
    pub fn for_invoice(sub: &Subscription, inv: &Invoice, amount: Money) -> Self {
        Attempt {
            customer_id: sub.customer_id.clone(),
            amount,
            payment_method: sub.payment_method.clone().unwrap_or_default(),
            description: Some(format!("Invoice {} for {}", inv.id, sub.id)),
            metadata: Metadata::new(),
            invoice_id: Some(inv.id.clone()),
            priced_by: None,
        }
    }
}

/// The domain event announcing `payment` in its current status, if that status has one.
pub fn payment_event(
    payment: &Payment,
    priced_by: Option<&PricedBy>,
    now: Timestamp,
) -> Option<NewEvent> {
    let kind = payment.status.event_kind()?;
    Some(NewEvent::new(
        kind,
        &payment.id,
        Some(payment.customer_id.clone()),
        json!({
            "payment_id": payment.id,
            "customer_id": payment.customer_id,
            "amount_minor": payment.amount.minor,
            "currency": payment.amount.currency.code(),
            "decline_code": payment.decline_code,
            "invoice_id": payment.invoice_id,
            "priced_by": PricedBy::json(priced_by),
        }),
        now,
    ))
}

pub fn status_of(charge: &Charge) -> PaymentStatus {
    match charge.status {
        ChargeStatus::Succeeded => PaymentStatus::Succeeded,
        ChargeStatus::RequiresAction => PaymentStatus::RequiresAction,
        ChargeStatus::Processing => PaymentStatus::Processing,
        ChargeStatus::Declined => PaymentStatus::Failed,
    }
}

/// Inserts the payment for `charge`, its domain event and any dispute the charge already
/// drew. `now` is the business time of the attempt.
pub async fn record(
    tx: &mut Tx,
    gateway: &str,
    attempt: Attempt,
    charge: &Charge,
    now: Timestamp,
) -> Result<Payment, StoreError> {
    let status = status_of(charge);
    let mut payment = Payment {
        id: ids::new_id(prefix::PAYMENT),
        customer_id: attempt.customer_id,
        amount: attempt.amount,
        amount_refunded_minor: 0,
        status,
        payment_method: attempt.payment_method,
        description: attempt.description,
        gateway: gateway.to_string(),
        gateway_id: Some(charge.id.clone()),
        decline_code: charge.decline_code.clone(),
        failure_message: charge.failure_message.clone(),
        metadata: attempt.metadata,
        created_at: now,
        updated_at: now,
        gateway_event_at: None,
        invoice_id: attempt.invoice_id,
        quote_id: attempt.priced_by.as_ref().map(|p| p.quote_id.clone()),
    };
    if payment.invoice_id.is_none() && charge.dispute.is_none() {
        // A one-time payment without a dispute is pointed at by nothing else in this
        // transaction: its row can go with the event and audit rows at commit.
        payments::insert_at_commit(tx, &payment)?;
    } else {
        payments::insert(tx, &payment).await?;
    }
    if let Some(event) = payment_event(&payment, attempt.priced_by.as_ref(), now) {
        events::append(tx, event);
    }
    if let Some(dispute) = &charge.dispute {
        disputes::apply(
            tx,
            payment.clone(),
            dispute,
            Change::Created,
            now.as_micros() / 1_000_000,
        )
        .await?;
        payment.status = PaymentStatus::Disputed;
    }
    Ok(payment)
}

/// The payment of `gateway` for `charge`: the one already recorded under the charge's id, or
/// a new one recorded by [`record`]. The payment is `true` when it is new. Several reports of
/// one charge (a retried renewal, two events about one paid invoice) make one payment.
pub async fn record_once(
    tx: &mut Tx,
    gateway: &str,
    attempt: Attempt,
    charge: &Charge,
    now: Timestamp,
) -> Result<(Payment, bool), StoreError> {
    if !charge.id.is_empty()
        && let Some(known) = payments::find_by_gateway_id(tx, gateway, &charge.id).await?
    {
        return Ok((known, false));
    }
    Ok((record(tx, gateway, attempt, charge, now).await?, true))
}
