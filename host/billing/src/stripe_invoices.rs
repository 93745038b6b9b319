//! Stripe's invoices, read into [`GatewayInvoice`] from an event's object or a refetch, and
//! refetched for reconciliation.
//!
//! **Shapes.** Today's API names an invoice's subscription in
//! `parent.subscription_details`, a line's price in `pricing.price_details`, and its
//! payments in a `payments` list that is there only when included. Older versions (and
//! localstripe) name `subscription`, a line's `price` or `plan`, and the one
//! `payment_intent`, or `charge` for a charge made without a PaymentIntent (a legacy card
//! source, a payment made outside the Payment Intents API). Either id is what the charge's
//! refunds and disputes name, so either is the payment's gateway id here.
//!
//! **Refetching.** A refetched invoice that is paid but names no payment (today's API)
//! gets its payments from `GET /v1/invoice_payments?invoice=…`, not from
//! `expand[]=payments`: a server of the older dialect refuses an expand it does not know,
//! and one that does not know the list answers 404, which leaves the invoice without
//! payments rather than unreadable.

use ::stripe::{StripeError, StripeRequest};
use hephaestus_core::money::Currency;
use serde::Serialize;
use serde_json::Value;
use stripe_client_core::{RequestBuilder, StripeMethod};

use crate::gateway::{GatewayError, GatewayInvoice, GatewayInvoiceLine, GatewayInvoicePayment};
use crate::stripe::{StripeGateway, from_stripe_amount, stripe_error};
use crate::stripe_subscriptions::seconds;

/// `GET /v1/invoices/{id}`, which none of the resource crates in use covers.
struct RetrieveInvoice(String);

impl StripeRequest for RetrieveInvoice {
    type Output = Value;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(StripeMethod::Get, format!("/invoices/{}", self.0))
    }
}

/// `GET /v1/invoice_payments`: the payments of one invoice.
struct ListInvoicePayments {
    query: InvoicePaymentsQuery,
}

#[derive(Serialize)]
struct InvoicePaymentsQuery {
    invoice: String,
    status: &'static str,
    limit: u8,
}

impl StripeRequest for ListInvoicePayments {
    type Output = Value;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(StripeMethod::Get, "/invoice_payments").query(&self.query)
    }
}

/// An id, or the id of the object when it is expanded.
pub(crate) fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or(v["id"].as_str())
}

/// The Stripe subscription an invoice belongs to.
fn invoice_subscription(object: &Value) -> Option<&str> {
    id_of(&object["parent"]["subscription_details"]["subscription"])
        .or(id_of(&object["subscription"]))
}

/// The line's Stripe price.
fn line_price(line: &Value) -> Option<&str> {
    line["pricing"]["price_details"]["price"]
        .as_str()
        .or(id_of(&line["price"]))
        .or(id_of(&line["plan"]))
}

/// Reads a Stripe invoice, amounts in our minor units. `Err` says why it is not one of
/// ours to mirror (no subscription, an unknown currency or status).
pub fn invoice_state(object: &Value) -> Result<GatewayInvoice, String> {
    let id = object["id"].as_str().ok_or("the invoice has no id")?;
    let subscription =
        invoice_subscription(object).ok_or(format!("invoice {id} belongs to no subscription"))?;
    let currency = object["currency"]
        .as_str()
        .and_then(|c| Currency::parse(c, "currency").ok())
        .ok_or(format!("invoice {id} has no known currency"))?;
    let status = match object["status"].as_str() {
        Some("draft") | None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("invoice {id} has an unknown status {s}"))?,
        ),
    };
    let amount = |v: &Value| from_stripe_amount(v.as_i64().unwrap_or(0), currency);
    let lines = object["lines"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| GatewayInvoiceLine {
            description: line["description"]
                .as_str()
                .unwrap_or("Subscription")
                .to_string(),
            gateway_price_id: line_price(line).map(str::to_string),
            quantity: line["quantity"].as_i64().unwrap_or(1),
            amount_minor: amount(&line["amount"]),
            proration: line["proration"].as_bool().unwrap_or(false)
                || line["parent"]["subscription_item_details"]["proration"]
                    .as_bool()
                    .unwrap_or(false),
            period_start: seconds(&line["period"]["start"]),
            period_end: seconds(&line["period"]["end"]),
        })
        .collect();
    let transitions = &object["status_transitions"];
    let changed_at = [
        "finalized_at",
        "paid_at",
        "voided_at",
        "marked_uncollectible_at",
    ]
    .into_iter()
    .filter_map(|t| seconds(&transitions[t]))
    .max();
    Ok(GatewayInvoice {
        id: id.to_string(),
        subscription: subscription.to_string(),
        status,
        currency,
        billing_reason: object["billing_reason"]
            .as_str()
            .unwrap_or("subscription")
            .to_string(),
        subtotal_minor: amount(&object["subtotal"]),
        amount_due_minor: amount(&object["amount_due"]),
        amount_paid_minor: amount(&object["amount_paid"]),
        attempt_count: object["attempt_count"].as_i64().unwrap_or(0),
        next_attempt_at: seconds(&object["next_payment_attempt"]),
        period_start: seconds(&object["period_start"]),
        period_end: seconds(&object["period_end"]),
        lines,
        payments: invoice_payments(object, currency),
        changed_at,
    })
}

/// The payments an invoice names: the paid entries of its `payments` list when it is
/// included, else its `payment_intent` or `charge` for `amount_paid`.
fn invoice_payments(invoice: &Value, currency: Currency) -> Vec<GatewayInvoicePayment> {
    let listed: Vec<GatewayInvoicePayment> = paid_entries(&invoice["payments"], currency);
    if !listed.is_empty() {
        return listed;
    }
    id_of(&invoice["payment_intent"])
        .or(id_of(&invoice["charge"]))
        .map(|charge| GatewayInvoicePayment {
            gateway_id: charge.to_string(),
            amount_minor: from_stripe_amount(
                invoice["amount_paid"].as_i64().unwrap_or(0),
                currency,
            ),
        })
        .into_iter()
        .collect()
}

/// The paid entries of a list of `invoice_payment`s.
fn paid_entries(list: &Value, currency: Currency) -> Vec<GatewayInvoicePayment> {
    list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| paid_payment(p, currency))
        .collect()
}

/// An `invoice_payment` that is paid, by a PaymentIntent or by a bare charge.
pub fn paid_payment(payment: &Value, currency: Currency) -> Option<GatewayInvoicePayment> {
    if payment["status"] != "paid" {
        return None;
    }
    let paid_by = &payment["payment"];
    Some(GatewayInvoicePayment {
        gateway_id: id_of(&paid_by["payment_intent"])
            .or(id_of(&paid_by["charge"]))?
            .to_string(),
        amount_minor: from_stripe_amount(payment["amount_paid"].as_i64()?, currency),
    })
}

impl StripeGateway {
    /// The invoice as Stripe holds it now, with the payments that paid it.
    pub(crate) async fn retrieve_invoice(
        &self,
        gateway_id: &str,
    ) -> Result<Option<GatewayInvoice>, GatewayError> {
        let object = match self
            .send::<Value>(&RetrieveInvoice(gateway_id.to_string()), None)
            .await
        {
            Ok(v) => v,
            Err(StripeError::Stripe(_, 404)) => return Ok(None),
            Err(e) => return Err(stripe_error(e)),
        };
        let mut invoice = invoice_state(&object).map_err(|why| {
            GatewayError::Unavailable(format!("Stripe answered an invoice we cannot read: {why}"))
        })?;
        if invoice.status == Some(hephaestus_core::subscription::InvoiceStatus::Paid)
            && invoice.payments.is_empty()
        {
            invoice.payments = self.invoice_payments(gateway_id, invoice.currency).await?;
        }
        Ok(Some(invoice))
    }

    async fn invoice_payments(
        &self,
        invoice: &str,
        currency: Currency,
    ) -> Result<Vec<GatewayInvoicePayment>, GatewayError> {
        let list = ListInvoicePayments {
            query: InvoicePaymentsQuery {
                invoice: invoice.to_string(),
                status: "paid",
                limit: 100,
            },
        };
        match self.send::<Value>(&list, None).await {
            Ok(v) => Ok(paid_entries(&v, currency)),
            Err(StripeError::Stripe(_, 404)) => Ok(Vec::new()),
            Err(e) => Err(stripe_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hephaestus_core::Timestamp;
    use hephaestus_core::subscription::InvoiceStatus;
    use serde_json::json;

    #[test]
    fn reads_todays_and_older_invoice_shapes() {
        let today = invoice_state(&json!({
            "id": "in_1", "object": "invoice", "status": "paid", "currency": "usd",
            "billing_reason": "subscription_cycle", "subtotal": 2000, "amount_due": 2000,
            "amount_paid": 2000, "attempt_count": 1,
            "status_transitions": {"finalized_at": 1_767_225_600, "paid_at": 1_767_225_660,
                                   "voided_at": null, "marked_uncollectible_at": null},
            "parent": {"subscription_details": {"subscription": "sub_1"}},
            "lines": {"data": [{"amount": 2000, "quantity": 1, "description": "Pro",
                "pricing": {"price_details": {"price": "price_1"}},
                "parent": {"subscription_item_details": {"proration": true}},
                "period": {"start": 1_767_225_600, "end": 1_769_904_000}}]},
            "payments": {"data": [
                {"status": "paid", "amount_paid": 1500,
                 "payment": {"type": "payment_intent", "payment_intent": "pi_1"}},
                {"status": "paid", "amount_paid": 500,
                 "payment": {"type": "charge", "charge": {"id": "ch_1"}}},
                {"status": "canceled", "amount_paid": 0,
                 "payment": {"type": "payment_intent", "payment_intent": "pi_2"}},
            ]},
        }))
        .unwrap();
        assert_eq!(today.subscription, "sub_1");
        assert_eq!(today.status, Some(InvoiceStatus::Paid));
        assert_eq!(
            today.changed_at,
            Some(Timestamp::from_micros(1_767_225_660_000_000))
        );
        assert_eq!(today.lines[0].gateway_price_id.as_deref(), Some("price_1"));
        assert!(today.lines[0].proration);
        let paid: Vec<_> = today
            .payments
            .iter()
            .map(|p| (p.gateway_id.as_str(), p.amount_minor))
            .collect();
        assert_eq!(paid, [("pi_1", 1500), ("ch_1", 500)]);

        // Older: paid by a bare charge, the subscription and plan named directly.
        let older = invoice_state(&json!({
            "id": "in_2", "status": "paid", "currency": "jpy", "amount_paid": 500,
            "subscription": "sub_2", "payment_intent": null, "charge": "ch_2",
            "lines": {"data": [{"amount": 500, "plan": {"id": "plan_2"}}]},
        }))
        .unwrap();
        assert_eq!(older.subscription, "sub_2");
        assert_eq!(older.changed_at, None);
        assert_eq!(older.lines[0].gateway_price_id.as_deref(), Some("plan_2"));
        assert_eq!(older.payments[0].gateway_id, "ch_2");
        assert_eq!(older.payments[0].amount_minor, 500);

        let draft = invoice_state(&json!({"id": "in_3", "status": "draft",
            "currency": "usd", "subscription": "sub_3"}))
        .unwrap();
        assert_eq!(draft.status, None);
        for (object, why) in [
            (
                json!({"id": "in_4", "status": "open", "currency": "usd"}),
                "no subscription",
            ),
            (
                json!({"id": "in_5", "status": "open", "currency": "xyz", "subscription": "sub_5"}),
                "no known currency",
            ),
            (
                json!({"id": "in_6", "status": "weird", "currency": "usd", "subscription": "sub_6"}),
                "unknown status weird",
            ),
        ] {
            let err = invoice_state(&object).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
