//! What the host knows about a customer's behaviour, summarised for decisions (the profile
//! plugins receive), and the sales evidence per price that pricing recommendations use.

use hephaestus_core::Timestamp;

use crate::{Result, Store, with_read};

/// Payments that captured money (some may since have been refunded or disputed).
const CAPTURED: &str = "('succeeded', 'partially_refunded', 'refunded', 'disputed')";

/// A customer's activity, as counts and sums straight from the billing tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub payments: i64,
    pub payments_last_30_days: i64,
    pub failed_payments_last_30_days: i64,
    pub last_payment_at: Option<Timestamp>,
    /// Net captured money (payments less refunds) per currency.
    pub net_by_currency: Vec<(String, i64)>,
    pub subscriptions: Vec<SubscriptionFact>,
}

/// One subscription with what its price bills per period.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionFact {
    pub status: String,
    pub quantity: i64,
    pub unit_amount_minor: i64,
    pub currency: String,
    pub interval: Option<String>,
    pub interval_count: Option<i64>,
}

pub async fn facts(store: &Store, customer_id: &str, now: Timestamp) -> Result<Facts> {
    let since = now.add_secs(-30 * 24 * 60 * 60).as_micros();
    let sql = format!(
        "SELECT
            COALESCE(SUM(CASE WHEN status IN {CAPTURED} THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN status IN {CAPTURED} AND created_at >= $2 THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN status = 'failed' AND created_at >= $2 THEN 1 ELSE 0 END), 0),
            MAX(CASE WHEN status IN {CAPTURED} THEN created_at END)
           FROM payments WHERE customer_id = $1"
    );
    let (payments, recent, failed, last): (i64, i64, i64, Option<i64>) =
        with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .bind(since)
            .fetch_one(e)
            .await)?;
    let sql = "SELECT currency, CAST(SUM(amount_minor - amount_refunded_minor) AS BIGINT)
                 FROM payments
                WHERE customer_id = $1 AND status IN ('succeeded', 'partially_refunded', 'refunded')
                GROUP BY currency ORDER BY currency";
    let net_by_currency: Vec<(String, i64)> = with_read!(store, |e| sqlx::query_as(sql)
        .bind(customer_id)
        .fetch_all(e)
        .await)?;
    let sql = "SELECT s.status, s.quantity, p.unit_amount_minor, p.currency, p.interval,
                      p.interval_count
                 FROM subscriptions s JOIN prices p ON p.id = s.price_id
                WHERE s.customer_id = $1";
    let subscriptions: Vec<SubscriptionFact> = with_read!(store, |e| sqlx::query_as(sql)
        .bind(customer_id)
        .fetch_all(e)
        .await)?;
    Ok(Facts {
        payments,
        payments_last_30_days: recent,
        failed_payments_last_30_days: failed,
        last_payment_at: last.map(Timestamp::from_micros),
        net_by_currency,
        subscriptions,
    })
}

/// Sales at one price: paid and failed subscription invoices that billed it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PriceEvidence {
    pub price_id: String,
    pub unit_amount_minor: i64,
    pub currency: String,
    pub customers: i64,
    pub purchases: i64,
    pub failed: i64,
    pub revenue_minor: i64,
}

/// Evidence for every price of `product_id`, newest price first.
pub async fn price_evidence(store: &Store, product_id: &str) -> Result<Vec<PriceEvidence>> {
    let sql = "SELECT p.id AS price_id, p.unit_amount_minor, p.currency,
                      COUNT(DISTINCT CASE WHEN i.status = 'paid' THEN i.customer_id END) AS customers,
                      COALESCE(SUM(CASE WHEN i.status = 'paid' THEN 1 ELSE 0 END), 0) AS purchases,
                      COALESCE(SUM(CASE WHEN i.status IN ('uncollectible', 'void') THEN 1 ELSE 0 END), 0) AS failed,
                      CAST(COALESCE(SUM(CASE WHEN i.status = 'paid' THEN l.amount_minor ELSE 0 END), 0) AS BIGINT) AS revenue_minor
                 FROM prices p
                 LEFT JOIN invoice_lines l ON l.price_id = p.id AND l.proration = FALSE AND l.amount_minor > 0
                 LEFT JOIN invoices i ON i.id = l.invoice_id
                WHERE p.product_id = $1
                GROUP BY p.id, p.unit_amount_minor, p.currency
                ORDER BY p.id DESC";
    Ok(with_read!(store, |e| sqlx::query_as(sql)
        .bind(product_id)
        .fetch_all(e)
        .await)?)
}
