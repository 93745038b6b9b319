use futures::future::BoxFuture;
use hephaestus_core::money::Money;

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

    /// The sandbox, when this is it: it has test controls no real gateway has.
    fn as_sandbox(&self) -> Option<&crate::sandbox::SandboxGateway> {
        None
    }
}
