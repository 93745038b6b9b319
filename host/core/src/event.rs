//! The domain event log's record. Every state change writes one in the same transaction as
//! the change; analytics, campaign triggers and experiments consume the log in `seq` order and
//! never read domain tables. Payloads hold ids and amounts, never personal data, so erasing a
//! customer needs no rewrite of history.

use crate::{Timestamp, ids};

/// Event type names. Kept as constants so producers and consumers cannot drift apart.
pub mod kind {
    pub const CUSTOMER_CREATED: &str = "customer.created";
    pub const CUSTOMER_ERASED: &str = "customer.erased";
    pub const CUSTOMER_UPDATED: &str = "customer.updated";
    /// The segmentation slot gave a customer a different set of segment tags.
    pub const CUSTOMER_SEGMENTS_CHANGED: &str = "customer.segments_changed";
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    pub const PAYMENT_FAILED: &str = "payment.failed";
    pub const PAYMENT_REQUIRES_ACTION: &str = "payment.requires_action";
    pub const PAYMENT_REQUIRES_PAYMENT_METHOD: &str = "payment.requires_payment_method";
    pub const REFUND_CREATED: &str = "refund.created";
    pub const DISPUTE_CREATED: &str = "dispute.created";
    pub const DISPUTE_UPDATED: &str = "dispute.updated";
    pub const DISPUTE_FUNDS_WITHDRAWN: &str = "dispute.funds_withdrawn";
    pub const DISPUTE_FUNDS_REINSTATED: &str = "dispute.funds_reinstated";
    pub const DISPUTE_CLOSED: &str = "dispute.closed";
    pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
    pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
    pub const SUBSCRIPTION_TRIAL_WILL_END: &str = "subscription.trial_will_end";
    pub const SUBSCRIPTION_CANCELED: &str = "subscription.canceled";
    pub const INVOICE_FINALIZED: &str = "invoice.finalized";
    pub const INVOICE_PAID: &str = "invoice.paid";
    pub const INVOICE_PAYMENT_FAILED: &str = "invoice.payment_failed";
    pub const INVOICE_UNCOLLECTIBLE: &str = "invoice.marked_uncollectible";
    pub const INVOICE_VOIDED: &str = "invoice.voided";
    pub const PRODUCT_CREATED: &str = "product.created";
    pub const PRICE_CREATED: &str = "price.created";
    pub const PRICE_DEACTIVATED: &str = "price.deactivated";
    /// Marketing spend was recorded (`POST /marketing/spend`).
    pub const MARKETING_SPEND_RECORDED: &str = "marketing.spend_recorded";
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub kind: &'static str,
    /// The customer the event concerns, if any: lets exports and per-customer timelines
    /// find events without parsing payloads.
    pub customer_id: Option<String>,
    /// The object that changed (a customer, a payment, …).
    pub subject_id: String,
    pub data: serde_json::Value,
    pub occurred_at: Timestamp,
}

impl NewEvent {
    pub fn new(
        kind: &'static str,
        subject_id: impl Into<String>,
        customer_id: Option<String>,
        data: serde_json::Value,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            id: ids::new_id(ids::prefix::EVENT),
            kind,
            customer_id,
            subject_id: subject_id.into(),
            data,
            occurred_at,
        }
    }

    /// An event about a customer record itself (created, erased, …).
    pub fn about_customer(kind: &'static str, customer_id: &str, occurred_at: Timestamp) -> Self {
        Self::new(
            kind,
            customer_id,
            Some(customer_id.to_string()),
            serde_json::json!({ "customer_id": customer_id }),
            occurred_at,
        )
    }
}

impl NewEvent {
    /// `refund.created` for a refund of a customer's payment.
    pub fn refund_created(
        refund: &crate::payment::Refund,
        customer_id: &str,
        occurred_at: Timestamp,
    ) -> Self {
        Self::new(
            kind::REFUND_CREATED,
            &refund.id,
            Some(customer_id.to_string()),
            serde_json::json!({
                "refund_id": refund.id,
                "payment_id": refund.payment_id,
                "amount_minor": refund.amount.minor,
                "currency": refund.amount.currency.code(),
            }),
            occurred_at,
        )
    }
}

/// An event as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the log; consumers remember the last one they processed.
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub customer_id: Option<String>,
    pub subject_id: String,
    pub data: serde_json::Value,
    pub occurred_at: Timestamp,
}
