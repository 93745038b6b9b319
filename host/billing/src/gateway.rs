use futures::future::BoxFuture;
use hephaestus_core::Timestamp;
use hephaestus_core::catalog::Price;
use hephaestus_core::money::{Currency, Money};
use hephaestus_core::subscription::{InvoiceStatus, SubscriptionStatus};

/// A request to charge a payment method.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Our customer (`cus_…`): a gateway that keeps customers of its own (Stripe) charges
    /// its mirror of this one.
    pub customer_id: String,
    pub amount: Money,
    pub payment_method: String,
    pub description: Option<String>,
    /// Sent to the gateway so a retried request never charges twice: the same key returns
    /// the first charge.
    pub idempotency_key: String,
    /// The customer is not there to act (a subscription renewal): a method that would need
    /// authentication is declined with `authentication_required` instead of waiting.
    pub off_session: bool,
}

/// Where a charge stands at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    RequiresAction,
    Processing,
    Declined,
}

/// A charge as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The gateway's id for it (`pi_…`).
    pub id: String,
    pub amount: Money,
    pub status: ChargeStatus,
    /// For a decline: the issuer's reason, as Stripe names them (`insufficient_funds`, …).
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub amount_refunded_minor: i64,
    /// A dispute the charge already drew (the sandbox's dispute test card).
    pub dispute: Option<crate::disputes::DisputeState>,
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub charge_id: String,
    pub amount_minor: i64,
    /// The charge's currency, which says how a gateway counts the amount.
    pub currency: hephaestus_core::money::Currency,
    /// `duplicate`, `fraudulent` or `requested_by_customer`, passed on to the gateway
    /// (Stripe blocks a card refunded as fraudulent).
    pub reason: Option<String>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRefund {
    pub id: String,
    pub charge_id: String,
    pub amount_minor: i64,
    /// `succeeded`, or `pending` while the gateway works on it (a later
    /// `charge.refund.updated` event settles it).
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is wrong in a way the caller can fix (unknown payment method, refund
    /// larger than what is left, reused idempotency key).
    #[error("{message}")]
    InvalidRequest {
        param: Option<&'static str>,
        message: String,
    },
    /// The gateway is unreachable or failed: retry later with the same idempotency key.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// A card was declined where the gateway keeps no charge of ours to record it on (the
    /// first invoice of a subscription the gateway bills): nothing was created.
    #[error("{message}")]
    Declined {
        decline_code: Option<String>,
        message: String,
    },
}

/// A subscription to start at a gateway that bills subscriptions itself.
#[derive(Debug, Clone)]
pub struct SubscriptionRequest {
    /// Ours (`sub_…`), kept in the gateway's metadata.
    pub subscription_id: String,
    pub customer_id: String,
    pub price: Price,
    pub quantity: i64,
    /// Days of free trial; 0 for none.
    pub trial_days: i64,
    /// Made the customer's default at the gateway, which charges every invoice to it.
    pub payment_method: Option<String>,
    /// The subscription's metadata, kept at the gateway beside the keys naming ours.
    pub metadata: std::collections::BTreeMap<String, String>,
    pub idempotency_key: String,
}

/// A change to a subscription the gateway bills.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    /// The gateway's id for the subscription.
    pub gateway_id: String,
    pub customer_id: String,
    pub price: Option<Price>,
    pub quantity: Option<i64>,
    /// Credit unused time and charge the new plan's remaining time on the next invoice
    /// (`create_prorations`), or not (`none`).
    pub prorate: bool,
    pub cancel_at_period_end: Option<bool>,
    pub payment_method: Option<String>,
    /// One per operation: a change and the payment method set with it get keys of their own.
    pub idempotency_key: String,
}

/// A subscription as the gateway reports it (in an answer or an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySubscription {
    pub id: String,
    /// `None` for a state with no equivalent here (Stripe's `incomplete`, `paused`).
    pub status: Option<SubscriptionStatus>,
    /// The gateway's price (a Stripe plan or price id) and its item, when it has one item.
    pub gateway_price_id: Option<String>,
    pub item_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_start: Option<Timestamp>,
    pub current_period_end: Option<Timestamp>,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// The gateway's id of the newest invoice it made for the subscription.
    pub latest_invoice: Option<String>,
}

/// A line of an invoice the gateway made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInvoiceLine {
    pub description: String,
    /// The gateway's price (a Stripe price or plan id): ours when it mirrors one of ours.
    pub gateway_price_id: Option<String>,
    pub quantity: i64,
    pub amount_minor: i64,
    pub proration: bool,
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
}

/// A payment the gateway took for one of its invoices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInvoicePayment {
    /// The gateway's id for the charge: the id its refunds and disputes name (at Stripe
    /// the PaymentIntent, or the charge itself when it was made without one).
    pub gateway_id: String,
    /// What it paid of the invoice, in our minor units of the invoice's currency.
    pub amount_minor: i64,
}

/// An invoice as the gateway reports it, amounts in our minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInvoice {
    pub id: String,
    /// The gateway's id of the subscription it bills.
    pub subscription: String,
    /// `None` for a draft: not an invoice of ours until it is finalized.
    pub status: Option<InvoiceStatus>,
    pub currency: Currency,
    pub billing_reason: String,
    pub subtotal_minor: i64,
    pub amount_due_minor: i64,
    pub amount_paid_minor: i64,
    pub attempt_count: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
    pub lines: Vec<GatewayInvoiceLine>,
    /// The payments the report names, when it names any: recorded once it says the invoice
    /// is paid.
    pub payments: Vec<GatewayInvoicePayment>,
    /// The newest moment the invoice's own status history carries (finalized, paid, voided,
    /// marked uncollectible), in the gateway's clock: a refetched invoice is as new as that.
    pub changed_at: Option<Timestamp>,
}

/// Subscriptions billed by the gateway itself (Stripe Billing). A gateway without this
/// capability (the sandbox) leaves subscriptions to the host's own billing engine.
pub trait SubscriptionGateway: Send + Sync + std::fmt::Debug {
    /// Starts a subscription; its first invoice is charged at once unless there is a trial,
    /// and a decline creates nothing ([`GatewayError::Declined`]).
    fn create_subscription(
        &self,
        req: SubscriptionRequest,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>>;

    /// Changes price, quantity, payment method or cancellation at period end.
    fn change_subscription(
        &self,
        req: SubscriptionChange,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>>;

    /// Ends a subscription now.
    fn cancel_subscription(
        &self,
        gateway_id: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>>;

    /// The subscription's current state, to reconcile after a missed or out-of-order event.
    fn fetch_subscription(
        &self,
        gateway_id: String,
    ) -> BoxFuture<'_, Result<Option<GatewaySubscription>, GatewayError>>;

    /// An invoice's current state, with the payments that paid it, to reconcile after a
    /// missed event. `Ok(None)`: the gateway does not know it.
    fn fetch_invoice(
        &self,
        gateway_id: String,
    ) -> BoxFuture<'_, Result<Option<GatewayInvoice>, GatewayError>>;
}

/// What the host needs from a payment processor. Implementations: the sandbox (built in)
/// and Stripe.
pub trait Gateway: Send + Sync + std::fmt::Debug {
    /// `sandbox` or `stripe`: stored with every payment.
    fn name(&self) -> &'static str;

    /// Creates and confirms a charge in one step.
    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<Charge, GatewayError>>;

    /// Refunds part or all of a charge. The gateway refuses more than what is left.
    fn refund(&self, req: RefundRequest) -> BoxFuture<'_, Result<GatewayRefund, GatewayError>>;

    /// The charge's current state, to reconcile after a missed or out-of-order event.
    fn fetch(&self, charge_id: String) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>>;

    /// The charge that `req` (sent with its idempotency key) made, found without making it:
    /// `Ok(None)` when the gateway never received it. For recovery of a call whose outcome
    /// nobody recorded (the process making it died).
    fn find_charge(
        &self,
        req: ChargeRequest,
    ) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>>;

    /// The refund that `req` made, found without making it; `Ok(None)` when the gateway never
    /// received it.
    fn find_refund(
        &self,
        req: RefundRequest,
    ) -> BoxFuture<'_, Result<Option<GatewayRefund>, GatewayError>>;

    /// How long after a call was sent the gateway may still act on it (a request on the wire
    /// when its sender died): recovery asks about a call only once it is this old, so "never
    /// received" is final.
    fn in_flight_for(&self) -> std::time::Duration;

    /// Deletes the gateway's own record of a customer, named by its id there, when the
    /// customer is erased. `idempotency_key` is the same on every attempt. A customer the
    /// gateway no longer knows is deleted already: `Ok`. A gateway that keeps no customers
    /// of its own (the sandbox) has nothing to delete.
    fn delete_customer(
        &self,
        gateway_customer_id: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<(), GatewayError>> {
        let _ = (gateway_customer_id, idempotency_key);
        Box::pin(async { Ok(()) })
    }

    /// The gateway's own subscription billing, when it has one; `None` means the host bills
    /// subscriptions itself, charging each invoice through [`Gateway::charge`].
    fn subscriptions(&self) -> Option<&dyn SubscriptionGateway> {
        None
    }

    /// The sandbox, when this is it: it has test controls no real gateway has.
    fn as_sandbox(&self) -> Option<&crate::sandbox::SandboxGateway> {
        None
    }
}
