//! Subscriptions and invoices: statuses, the billing calendar and proration arithmetic.
//! Pure functions, so the billing engine's date and money maths is tested without a clock
//! or a database.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Months, Utc};

use crate::Timestamp;
use crate::catalog::{Interval, Recurring};
use crate::customer::Metadata;
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// In a free trial: nothing is charged until it ends.
    Trialing,
    Active,
    /// The latest invoice failed and is being retried.
    PastDue,
    /// Ended: cancelled by the customer, or after every retry failed.
    Canceled,
    /// Every retry failed and the subscription is kept, unbilled, until it is paid or
    /// cancelled (when the dunning setting says so instead of cancelling).
    Unpaid,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
        }
    }

    /// Whether the subscription still counts as a customer's live subscription.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::PastDue
        )
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "canceled" => SubscriptionStatus::Canceled,
            "unpaid" => SubscriptionStatus::Unpaid,
            other => {
                return Err(format!(
                    "unknown subscription status `{other}` (trialing, active, past_due, canceled, unpaid)"
                ));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub price_id: String,
    pub quantity: i64,
    pub currency: crate::money::Currency,
    pub status: SubscriptionStatus,
    /// The payment method renewals are charged to (sandbox test methods; Stripe keeps its own).
    pub payment_method: Option<String>,
    pub gateway: String,
    pub gateway_id: Option<String>,
    pub billing_anchor: Timestamp,
    pub periods: i64,
    pub current_period_start: Timestamp,
    pub current_period_end: Timestamp,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub trial_notice_sent: bool,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub next_action_at: Option<Timestamp>,
    pub metadata: Metadata,
    /// The stored quote (`quo_…`) the subscription was started from, if any.
    pub quote_id: Option<String>,
    /// Taken off every period's invoice while the price and quantity stay those quoted:
    /// list total − the quoted amount. A change of price or quantity ends it.
    pub discount_minor: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Finalized and waiting for payment (or retrying it).
    Open,
    Paid,
    /// Every attempt failed; written off.
    Uncollectible,
    /// Cancelled before it was paid.
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Uncollectible => "uncollectible",
            InvoiceStatus::Void => "void",
        }
    }
}

impl FromStr for InvoiceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "open" => InvoiceStatus::Open,
            "paid" => InvoiceStatus::Paid,
            "uncollectible" => InvoiceStatus::Uncollectible,
            "void" => InvoiceStatus::Void,
            other => return Err(format!("unknown invoice status `{other}`")),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invoice {
    pub id: String,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub currency: crate::money::Currency,
    pub status: InvoiceStatus,
    /// `subscription_create`, `subscription_cycle`, …, as Stripe names them.
    pub billing_reason: String,
    pub subtotal_minor: i64,
    pub amount_due_minor: i64,
    pub amount_paid_minor: i64,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub attempt_count: i64,
    pub next_attempt_at: Option<Timestamp>,
    /// The latest payment attempted for it.
    pub payment_id: Option<String>,
    pub gateway_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub lines: Vec<InvoiceLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvoiceLine {
    pub id: String,
    pub description: String,
    pub price_id: Option<String>,
    pub quantity: i64,
    /// Negative for a credit (unused time on a plan left mid-period).
    pub amount: Money,
    pub proration: bool,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
}

fn datetime(t: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(t.as_micros())
}

/// The end of period number `n` (counting from 1) of a schedule anchored at `anchor`.
/// Computed from the anchor each time, so months clamp to their length without drifting:
/// anchored on 31 January, periods end on 28/29 February, 31 March, 30 April, ….
pub fn period_end(anchor: Timestamp, every: Recurring, n: i64) -> Option<Timestamp> {
    let start = datetime(anchor)?;
    let steps = u32::try_from(every.count.checked_mul(n)?).ok()?;
    let end = match every.interval {
        Interval::Day => start.checked_add_days(Days::new(u64::from(steps)))?,
        Interval::Week => start.checked_add_days(Days::new(u64::from(steps) * 7))?,
        Interval::Month => start.checked_add_months(Months::new(steps))?,
        Interval::Year => start.checked_add_months(Months::new(steps.checked_mul(12)?))?,
    };
    Some(Timestamp::from_micros(end.timestamp_micros()))
}

/// `amount × part / whole` for a part of a whole (clamped to 0..=whole), rounded half away
/// from zero.
pub fn pro_rata(amount_minor: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    mul_div(amount_minor, part.clamp(0, whole), whole)
}

/// `amount × num / den` (den > 0), rounded half away from zero, in 128-bit arithmetic so
/// no product of a large amount and a long period can overflow; saturates at the i64 range.
pub fn mul_div(amount_minor: i64, num: i64, den: i64) -> i64 {
    if den <= 0 {
        return 0;
    }
    let num = i128::from(amount_minor) * i128::from(num);
    let den = i128::from(den);
    let q = num / den;
    let r = num % den;
    let rounded = if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    };
    i64::try_from(rounded).unwrap_or(if num < 0 { i64::MIN } else { i64::MAX })
}

/// The two lines a mid-period change produces: a credit for the unused time on the old
/// plan and a charge for the remaining time on the new one, both proportional to the time
/// left in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proration {
    pub credit_minor: i64,
    pub charge_minor: i64,
}

pub fn prorate(
    old_total_minor: i64,
    new_total_minor: i64,
    period_start: Timestamp,
    period_end: Timestamp,
    at: Timestamp,
) -> Proration {
    let whole = period_end.as_micros() - period_start.as_micros();
    let left = period_end.as_micros() - at.as_micros();
    Proration {
        credit_minor: -pro_rata(old_total_minor, left, whole),
        charge_minor: pro_rata(new_total_minor, left, whole),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::from_micros(
            DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
                .timestamp_micros(),
        )
    }

    #[test]
    fn months_clamp_without_drifting() {
        let monthly = Recurring::new(Interval::Month, 1).unwrap();
        let anchor = ts("2026-01-31T10:00:00Z");
        let ends: Vec<_> = (1..=4)
            .map(|n| period_end(anchor, monthly, n).unwrap().to_rfc3339())
            .collect();
        assert_eq!(
            ends,
            [
                "2026-02-28T10:00:00.000000Z",
                "2026-03-31T10:00:00.000000Z",
                "2026-04-30T10:00:00.000000Z",
                "2026-05-31T10:00:00.000000Z"
            ]
        );
        let quarterly = Recurring::new(Interval::Month, 3).unwrap();
        assert_eq!(
            period_end(anchor, quarterly, 1).unwrap(),
            ts("2026-04-30T10:00:00Z")
        );
        let yearly = Recurring::new(Interval::Year, 1).unwrap();
        assert_eq!(
            period_end(ts("2028-02-29T00:00:00Z"), yearly, 1).unwrap(),
            ts("2029-02-28T00:00:00Z")
        );
        let fortnight = Recurring::new(Interval::Week, 2).unwrap();
        assert_eq!(
            period_end(anchor, fortnight, 2).unwrap(),
            ts("2026-02-28T10:00:00Z")
        );
    }

    #[test]
    fn pro_rata_rounds_half_away_from_zero_and_never_overflows() {
        assert_eq!(pro_rata(1000, 1, 3), 333);
        assert_eq!(pro_rata(1000, 2, 3), 667);
        assert_eq!(pro_rata(1, 1, 2), 1);
        assert_eq!(pro_rata(-1, 1, 2), -1);
        assert_eq!(pro_rata(1000, 5, 3), 1000, "part is clamped to the whole");
        assert_eq!(pro_rata(1000, -5, 3), 0);
        assert_eq!(pro_rata(1000, 1, 0), 0);
        let big = 1_000_000_000_000_000;
        assert_eq!(pro_rata(big, 31_536_000_000_000, 31_536_000_000_000), big);
        assert_eq!(
            pro_rata(big, 15_768_000_000_000, 31_536_000_000_000),
            big / 2
        );
    }

    #[test]
    fn upgrade_halfway_credits_half_the_old_and_charges_half_the_new() {
        let start = ts("2026-04-01T00:00:00Z");
        let end = ts("2026-05-01T00:00:00Z");
        let mid = ts("2026-04-16T00:00:00Z");
        let p = prorate(2000, 5000, start, end, mid);
        assert_eq!(
            p,
            Proration {
                credit_minor: -1000,
                charge_minor: 2500
            }
        );
        let at_end = prorate(2000, 5000, start, end, end);
        assert_eq!(
            at_end,
            Proration {
                credit_minor: 0,
                charge_minor: 0
            }
        );
    }
}
