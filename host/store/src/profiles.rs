//! What the host knows about a customer's behaviour, summarised for decisions (the profile
//! plugins receive), and the sales evidence per price that pricing recommendations use.

use hephaestus_core::Timestamp;
use hephaestus_core::customer::Customer;

use crate::customers::CustomerRow;
use crate::segments::Segments;
use crate::{Result, Store, StoreError, with_read};

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// A customer's activity, from the running figures the database keeps beside every
/// payment (migration 0015): what a decision reads does not grow with the customer's
/// history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub payments: i64,
    pub payments_last_30_days: i64,
    pub failed_payments_last_30_days: i64,
    pub last_payment_at: Option<Timestamp>,
    /// Net captured money (payments less refunds; disputed payments count nothing) per
    /// currency.
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
    /// A quote's discount taken off each period (see `Subscription::discount_minor`).
    pub discount_minor: i64,
}

/// Everything a decision about one customer reads: the customer, its activity and its
/// stored segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub customer: Customer,
    pub facts: Facts,
    /// `None` until the segment consumer or sweep has computed them.
    pub segments: Option<Segments>,
}

/// One row of [`snapshot`]'s statement; `part` says which table it summarises and so what
/// the other columns hold.
#[derive(sqlx::FromRow)]
struct Part {
    part: String,
    t1: Option<String>,
    t2: Option<String>,
    t3: Option<String>,
    t4: Option<String>,
    n1: Option<i64>,
    n2: Option<i64>,
    n3: Option<i64>,
    n4: Option<i64>,
}

/// The customer's [`Snapshot`] as of `now` (business time), or `None` for an unknown id.
///
/// Quotes read this on every request, so it is one statement (one round trip, and on
/// SQLite one hop to a reader thread) rather than one per table: the parts are stacked
/// with `UNION ALL`, each row tagged with the part it belongs to.
pub async fn snapshot(
    store: &Store,
    customer_id: &str,
    now: Timestamp,
) -> Result<Option<Snapshot>> {
    // The 30-day counts are kept per UTC day: the window is the 30 whole days before
    // today's, and today so far.
    let since = now.as_micros().div_euclid(DAY_MICROS) - 30;
    // The first SELECT fixes each column's type for PostgreSQL, hence the casts there.
    let sql = "SELECT 'c' AS part, email AS t1, name AS t2, metadata AS t3, default_payment_method AS t4,
                created_at AS n1, updated_at AS n2, erased_at AS n3, CAST(NULL AS BIGINT) AS n4
           FROM customers WHERE id = $1
         UNION ALL
         SELECT 'p', NULL, NULL, NULL, NULL, captured, NULL, NULL, last_captured_at
           FROM customer_activity WHERE customer_id = $1
         UNION ALL
         SELECT 'd', NULL, NULL, NULL, NULL,
                CAST(COALESCE(SUM(captured), 0) AS BIGINT), CAST(COALESCE(SUM(failed), 0) AS BIGINT),
                NULL, NULL
           FROM customer_daily WHERE customer_id = $1 AND day >= $2
         UNION ALL
         SELECT 'n', currency, NULL, NULL, NULL, net_minor, NULL, NULL, NULL
           FROM customer_net WHERE customer_id = $1
         UNION ALL
         SELECT 's', s.status, p.currency, p.interval, NULL,
                s.quantity, p.unit_amount_minor, p.interval_count, s.discount_minor
           FROM subscriptions s JOIN prices p ON p.id = s.price_id
          WHERE s.customer_id = $1
         UNION ALL
         SELECT 'g', st.decided_by, seg.segment, st.note, NULL, st.computed_at, NULL, NULL, NULL
           FROM customer_segment_state st
           LEFT JOIN customer_segments seg ON seg.customer_id = st.customer_id
          WHERE st.customer_id = $1
         ORDER BY 1, 2, 3";
    let parts: Vec<Part> = with_read!(store, |e| sqlx::query_as(sql)
        .bind(customer_id)
        .bind(since)
        .fetch_all(e)
        .await)?;
    let mut customer = None;
    let mut facts = Facts::default();
    let mut segments: Option<Segments> = None;
    let corrupt = |what: &str| StoreError::Corrupt(format!("customer {customer_id}: {what}"));
    for p in parts {
        match p.part.as_str() {
            "c" => {
                let row = CustomerRow {
                    id: customer_id.to_string(),
                    email: p.t1,
                    name: p.t2,
                    metadata: p.t3.ok_or_else(|| corrupt("metadata is null"))?,
                    default_payment_method: p.t4,
                    created_at: p.n1.ok_or_else(|| corrupt("created_at is null"))?,
                    updated_at: p.n2.ok_or_else(|| corrupt("updated_at is null"))?,
                    erased_at: p.n3,
                };
                customer = Some(Customer::try_from(row)?);
            }
            "p" => {
                facts.payments = p.n1.unwrap_or(0);
                facts.last_payment_at = p.n4.map(Timestamp::from_micros);
            }
            "d" => {
                facts.payments_last_30_days = p.n1.unwrap_or(0);
                facts.failed_payments_last_30_days = p.n2.unwrap_or(0);
            }
            "n" => facts.net_by_currency.push((
                p.t1.ok_or_else(|| corrupt("payment currency is null"))?,
                p.n1.unwrap_or(0),
            )),
            "s" => facts.subscriptions.push(SubscriptionFact {
                status: p.t1.ok_or_else(|| corrupt("subscription status is null"))?,
                currency: p.t2.ok_or_else(|| corrupt("price currency is null"))?,
                interval: p.t3,
                quantity: p.n1.unwrap_or(0),
                unit_amount_minor: p.n2.unwrap_or(0),
                interval_count: p.n3,
                discount_minor: p.n4.unwrap_or(0),
            }),
            "g" => {
                let s = segments.get_or_insert_with(|| Segments {
                    tags: Vec::new(),
                    decided_by: p.t1.clone().unwrap_or_default(),
                    computed_at: Timestamp::from_micros(p.n1.unwrap_or(0)),
                    note: p.t3.clone(),
                });
                s.tags.extend(p.t2);
            }
            other => return Err(corrupt(&format!("unknown snapshot part {other}"))),
        }
    }
    Ok(customer.map(|customer| Snapshot {
        customer,
        facts,
        segments,
    }))
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
    /// When the first and the last counted invoice were made (µs), if any was.
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
}

/// Evidence for every price of `product_id`, newest price first: its subscription
/// invoices, only those of customers holding segment tag `segment` when one is given.
pub async fn price_evidence(
    store: &Store,
    product_id: &str,
    segment: Option<&str>,
) -> Result<Vec<PriceEvidence>> {
    let sql = "SELECT p.id AS price_id, p.unit_amount_minor, p.currency,
                      COUNT(DISTINCT CASE WHEN i.status = 'paid' THEN i.customer_id END) AS customers,
                      COALESCE(SUM(CASE WHEN i.status = 'paid' THEN 1 ELSE 0 END), 0) AS purchases,
                      COALESCE(SUM(CASE WHEN i.status IN ('uncollectible', 'void') THEN 1 ELSE 0 END), 0) AS failed,
                      CAST(COALESCE(SUM(CASE WHEN i.status = 'paid' THEN l.amount_minor ELSE 0 END), 0) AS BIGINT) AS revenue_minor,
                      MIN(i.created_at) AS first_at, MAX(i.created_at) AS last_at
                 FROM prices p
                 LEFT JOIN invoice_lines l ON l.price_id = p.id AND l.proration = FALSE AND l.amount_minor > 0
                 LEFT JOIN invoices i ON i.id = l.invoice_id
                      AND ($2 IS NULL OR EXISTS (SELECT 1 FROM customer_segments s
                                                  WHERE s.customer_id = i.customer_id AND s.segment = $2))
                WHERE p.product_id = $1
                GROUP BY p.id, p.unit_amount_minor, p.currency
                ORDER BY p.id DESC";
    Ok(with_read!(store, |e| sqlx::query_as(sql)
        .bind(product_id)
        .bind(segment)
        .fetch_all(e)
        .await)?)
}
