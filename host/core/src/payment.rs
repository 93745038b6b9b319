//! One-time payments and their refunds, as the host records them.

use std::fmt;
use std::str::FromStr;

use crate::Timestamp;
use crate::customer::Metadata;
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Created without a payment method (the customer has no default): nothing was
    /// charged; `POST …/payments/{id}/confirm` with a method charges it.
    RequiresPaymentMethod,
    Succeeded,
    /// The customer must act (e.g. 3-D Secure) before the charge can succeed.
    RequiresAction,
    /// The gateway has not decided yet.
    Processing,
    Failed,
    Refunded,
    PartiallyRefunded,
    Disputed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::RequiresPaymentMethod,
        PaymentStatus::Succeeded,
        PaymentStatus::RequiresAction,
        PaymentStatus::Processing,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Disputed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresPaymentMethod => "requires_payment_method",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Disputed => "disputed",
        }
    }

    /// How far along a payment is. A gateway event may move a payment forward, or sideways
    /// when it is newer; never back (a late `payment_failed` cannot undo a success).
    pub fn progress(self) -> u8 {
        match self {
            PaymentStatus::RequiresPaymentMethod => 0,
            PaymentStatus::Processing | PaymentStatus::RequiresAction | PaymentStatus::Failed => 1,
            PaymentStatus::Succeeded => 2,
            PaymentStatus::PartiallyRefunded => 3,
            PaymentStatus::Refunded => 4,
            PaymentStatus::Disputed => 5,
        }
    }

    /// The domain event announcing that a payment reached this status, if there is one.
    pub fn event_kind(self) -> Option<&'static str> {
        match self {
            PaymentStatus::Succeeded => Some(crate::event::kind::PAYMENT_SUCCEEDED),
            PaymentStatus::Failed => Some(crate::event::kind::PAYMENT_FAILED),
            PaymentStatus::RequiresAction => Some(crate::event::kind::PAYMENT_REQUIRES_ACTION),
            PaymentStatus::RequiresPaymentMethod => {
                Some(crate::event::kind::PAYMENT_REQUIRES_PAYMENT_METHOD)
            }
            _ => None,
        }
    }

    /// Whether money was captured and some of it can still be given back.
    pub fn is_refundable(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status `{s}` (one of {})", all.join(", "))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: String,
    pub customer_id: String,
    pub amount: Money,
    pub amount_refunded_minor: i64,
    pub status: PaymentStatus,
    pub payment_method: String,
    pub description: Option<String>,
    /// Which gateway holds the money: `sandbox` or `stripe`.
    pub gateway: String,
    /// The gateway's own id for the charge, once it has one.
    pub gateway_id: Option<String>,
    /// The issuer's reason for a decline (`insufficient_funds`, …), as the gateway gave it.
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The gateway's creation time (Unix seconds) of the newest webhook event applied: an
    /// older event arriving later must not move the payment back.
    pub gateway_event_at: Option<i64>,
    /// The invoice this payment was made to settle (a subscription's), if any.
    pub invoice_id: Option<String>,
    /// The stored quote (`quo_…`) whose amount this payment charged, if any.
    pub quote_id: Option<String>,
}

impl Payment {
    /// What can still be refunded, in minor units.
    pub fn refundable_minor(&self) -> i64 {
        self.amount.minor - self.amount_refunded_minor
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: Money,
    pub status: String,
    pub reason: Option<String>,
    pub gateway_id: Option<String>,
    pub created_at: Timestamp,
}
