//! The built-in decisions used when no plugin serves a slot or the plugin faulted.
//! Each is the safe, unsurprising answer: the list price, the current price, the
//! product's standard segments, no personalization, no triggered messages.

use crate::model::{
    CustomerProfile, Money, Personalization, Quote, QuoteRequest, RecommendRequest, Recommendation,
    Request, Response, Timestamp,
};

const DAY_MICROS: i64 = 86_400 * 1_000_000;
/// LTV above which a customer is `high_value`: 5,000.00 USD.
pub const HIGH_VALUE_LTV_USD_MINOR: i64 = 500_000;
/// Seats at or above which a customer is `enterprise`.
pub const ENTERPRISE_SEATS: u64 = 100;

/// The default answer to `request` at business time `now` (µs).
pub fn response(request: &Request, now: Timestamp) -> Response {
    match request {
        Request::Quote(r) => Response::Quote(quote(r)),
        Request::Recommend(r) => Response::Recommend(recommendation(r)),
        Request::Segment(r) => {
            Response::Segment(segments(&r.customer, now, r.high_value_threshold.as_ref()))
        }
        Request::Personalize(_) => Response::Personalize(Personalization::default()),
        Request::OnEvent(_) => Response::OnEvent(Vec::new()),
    }
}

/// The list price: unit price × quantity, no discount.
pub fn quote(r: &QuoteRequest) -> Quote {
    let total = r
        .unit_price
        .amount_minor
        .saturating_mul(i64::from(r.quantity));
    Quote {
        amount: Money::new(total, r.unit_price.currency.clone()),
        discount: Money::new(0, r.unit_price.currency.clone()),
        reason: "list price".into(),
    }
}

/// Keep the current price; expect no change.
pub fn recommendation(r: &RecommendRequest) -> Recommendation {
    Recommendation {
        recommended_price: r.current_price.clone(),
        revenue_change_basis_points: 0,
        conversion_change_basis_points: 0,
        reason: "current price".into(),
    }
}

/// The built-in segmentation rules.
///
/// - `new`: created less than 30 days ago.
/// - `power_user`: at least 5 payments in the last 30 days, or at least 2 active
///   subscriptions.
/// - `at_risk`: past due now, or at least 2 failed payments in 30 days, or paid before
///   but not in the last 60 days.
/// - `high_value`: lifetime value above 5,000.00 USD: above `high_value_threshold` (the
///   threshold in the lifetime value's currency, which the host converts through its rates)
///   when given, else compared in USD only (none when the value is in another currency).
/// - `enterprise`: attribute `plan` = `enterprise`, or attribute `seats` ≥ 100.
pub fn segments(
    c: &CustomerProfile,
    now: Timestamp,
    high_value_threshold: Option<&Money>,
) -> Vec<String> {
    let mut tags = Vec::new();
    let age = now.saturating_sub(c.created_at);
    if age < 30 * DAY_MICROS {
        tags.push("new");
    }
    let a = &c.activity;
    if a.payments_last_30_days >= 5 || a.active_subscriptions >= 2 {
        tags.push("power_user");
    }
    let lapsed = a.payments > 0
        && a.last_payment_at
            .is_some_and(|at| now.saturating_sub(at) >= 60 * DAY_MICROS);
    if a.has_past_due || a.failed_payments_last_30_days >= 2 || lapsed {
        tags.push("at_risk");
    }
    let threshold = high_value_threshold
        .cloned()
        .unwrap_or_else(|| Money::new(HIGH_VALUE_LTV_USD_MINOR, "USD"));
    if c.lifetime_value.currency == threshold.currency
        && c.lifetime_value.amount_minor > threshold.amount_minor
    {
        tags.push("high_value");
    }
    let attribute = |key: &str| {
        c.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value.trim())
    };
    let enterprise_plan = attribute("plan").is_some_and(|p| p.eq_ignore_ascii_case("enterprise"));
    let seats = attribute("seats")
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n >= ENTERPRISE_SEATS);
    if enterprise_plan || seats {
        tags.push("enterprise");
    }
    tags.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activity, Attribute};

    const NOW: i64 = 1_750_000_000_000_000;

    fn customer() -> CustomerProfile {
        CustomerProfile {
            id: "cus_1".into(),
            name: None,
            email_domain: None,
            created_at: NOW - 400 * DAY_MICROS,
            segments: vec![],
            lifetime_value: Money::new(0, "USD"),
            monthly_recurring_revenue: Money::new(0, "USD"),
            activity: Activity::default(),
            attributes: vec![],
        }
    }

    #[test]
    fn each_rule_fires_on_its_own_and_only_then() {
        assert!(segments(&customer(), NOW, None).is_empty());

        let mut c = customer();
        c.created_at = NOW - 29 * DAY_MICROS;
        assert_eq!(segments(&c, NOW, None), ["new"]);
        c.created_at = NOW - 30 * DAY_MICROS;
        assert!(segments(&c, NOW, None).is_empty());

        let mut c = customer();
        c.activity.payments_last_30_days = 5;
        assert_eq!(segments(&c, NOW, None), ["power_user"]);
        let mut c = customer();
        c.activity.active_subscriptions = 2;
        assert_eq!(segments(&c, NOW, None), ["power_user"]);

        let mut c = customer();
        c.activity.has_past_due = true;
        assert_eq!(segments(&c, NOW, None), ["at_risk"]);
        let mut c = customer();
        c.activity.failed_payments_last_30_days = 2;
        assert_eq!(segments(&c, NOW, None), ["at_risk"]);
        let mut c = customer();
        c.activity.payments = 3;
        c.activity.last_payment_at = Some(NOW - 61 * DAY_MICROS);
        assert_eq!(segments(&c, NOW, None), ["at_risk"]);
        c.activity.last_payment_at = Some(NOW - 59 * DAY_MICROS);
        assert!(segments(&c, NOW, None).is_empty());

        let mut c = customer();
        c.lifetime_value = Money::new(500_001, "USD");
        assert_eq!(segments(&c, NOW, None), ["high_value"]);
        // In another currency, against the threshold the host converted into it.
        let mut eur = c.clone();
        eur.lifetime_value = Money::new(460_001, "EUR");
        assert!(segments(&eur, NOW, None).is_empty(), "no rate: not judged");
        let threshold = Money::new(460_000, "EUR");
        assert_eq!(segments(&eur, NOW, Some(&threshold)), ["high_value"]);
        eur.lifetime_value = Money::new(460_000, "EUR");
        assert!(segments(&eur, NOW, Some(&threshold)).is_empty());
        c.lifetime_value = Money::new(500_000, "USD");
        assert!(segments(&c, NOW, None).is_empty());
        c.lifetime_value = Money::new(9_000_000, "EUR");
        assert!(segments(&c, NOW, None).is_empty());

        let mut c = customer();
        c.attributes = vec![Attribute::new("plan", "enterprise")];
        assert_eq!(segments(&c, NOW, None), ["enterprise"]);
        c.attributes = vec![Attribute::new("seats", "100")];
        assert_eq!(segments(&c, NOW, None), ["enterprise"]);
        c.attributes = vec![Attribute::new("seats", "99")];
        assert!(segments(&c, NOW, None).is_empty());
    }

    #[test]
    fn the_default_quote_is_the_list_price() {
        let request = Request::Quote(QuoteRequest {
            customer: customer(),
            product_id: "prod_1".into(),
            product_name: "P".into(),
            price_id: "price_1".into(),
            unit_price: Money::new(9700, "USD"),
            quantity: 3,
            interval: None,
            context: vec![],
        });
        let Response::Quote(q) = response(&request, NOW) else {
            panic!("a quote request gets a quote")
        };
        assert_eq!(q.amount, Money::new(29_100, "USD"));
        assert_eq!(q.discount, Money::new(0, "USD"));
        assert_eq!(q.reason, "list price");
    }
}
