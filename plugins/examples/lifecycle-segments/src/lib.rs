//! Example segmentation plugin: the product's lifecycle tags.
//!
//! | tag | when (defaults; every threshold is a config key) |
//! |---|---|
//! | `new` | created less than 30 days before now on the business clock (`new_days`) |
//! | `power_user` | ≥ 5 payments in the last 30 days (`power_user_payments_30d`), or ≥ 2 active subscriptions (`power_user_subscriptions`) |
//! | `at_risk` | a subscription past due, or ≥ 2 failed payments in the last 30 days (`at_risk_failed_payments_30d`), or paid before but not in the last 60 days (`at_risk_inactive_days`) |
//! | `high_value` | lifetime value above 5,000 major units (`high_value_major`) |
//! | `enterprise` | attribute `plan` = `enterprise` (`enterprise_plan`, any case), or attribute `seats` ≥ 100 (`enterprise_seats`) |
//!
//! Simplification: `high_value` compares the lifetime value against 5,000 *major units of its
//! own currency* (500000 minor units for USD, 5000 for JPY, 5000000 for KWD); there are no
//! exchange rates. The host reports lifetime value in its reporting currency, so in
//! practice this is one currency.
//!
//! The decision is the plain function [`segments`], tested on the host target. The Python
//! twin in `plugins/python/lifecycle-segments` returns the same tags.

use hephaestus_plugin_sdk::clock::{self, within_days};
use hephaestus_plugin_sdk::segmentation::{Guest, tags};
use hephaestus_plugin_sdk::{CustomerProfile, Timestamp, attribute, config, money};

/// Thresholds, from the manifest's `[config]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub new_days: i64,
    pub power_user_payments_30d: u32,
    pub power_user_subscriptions: u32,
    pub at_risk_failed_payments_30d: u32,
    pub at_risk_inactive_days: i64,
    /// Lifetime value, in major units of its currency, that must be exceeded.
    pub high_value_major: i64,
    pub enterprise_plan: String,
    pub enterprise_seats: u64,
}

impl Settings {
    /// Reads settings through `lookup` (the host's `config::get`, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Ok(Settings {
            new_days: config::parse_or("new_days", lookup("new_days").as_deref(), 30)?,
            power_user_payments_30d: config::parse_or(
                "power_user_payments_30d",
                lookup("power_user_payments_30d").as_deref(),
                5,
            )?,
            power_user_subscriptions: config::parse_or(
                "power_user_subscriptions",
                lookup("power_user_subscriptions").as_deref(),
                2,
            )?,
            at_risk_failed_payments_30d: config::parse_or(
                "at_risk_failed_payments_30d",
                lookup("at_risk_failed_payments_30d").as_deref(),
                2,
            )?,
            at_risk_inactive_days: config::parse_or(
                "at_risk_inactive_days",
                lookup("at_risk_inactive_days").as_deref(),
                60,
            )?,
            high_value_major: config::parse_or(
                "high_value_major",
                lookup("high_value_major").as_deref(),
                5000,
            )?,
            enterprise_plan: lookup("enterprise_plan").unwrap_or_else(|| "enterprise".to_owned()),
            enterprise_seats: config::parse_or(
                "enterprise_seats",
                lookup("enterprise_seats").as_deref(),
                100,
            )?,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_lookup(|_| None).expect("defaults are valid")
    }
}

/// The tags for `customer` at business time `now`, in the order of the table above.
pub fn segments(customer: &CustomerProfile, now: Timestamp, settings: &Settings) -> Vec<String> {
    let activity = &customer.activity;
    let mut out = Vec::new();

    if within_days(customer.created_at, now, settings.new_days) {
        out.push(tags::NEW);
    }

    if activity.payments_last_30_days >= settings.power_user_payments_30d
        || activity.active_subscriptions >= settings.power_user_subscriptions
    {
        out.push(tags::POWER_USER);
    }

    let paid_before = activity.payments > 0 || activity.last_payment_at.is_some();
    let paid_recently = activity
        .last_payment_at
        .is_some_and(|at| within_days(at, now, settings.at_risk_inactive_days));
    if activity.has_past_due
        || activity.failed_payments_last_30_days >= settings.at_risk_failed_payments_30d
        || (paid_before && !paid_recently)
    {
        out.push(tags::AT_RISK);
    }

    let ltv = &customer.lifetime_value;
    if ltv.amount_minor > money::major_to_minor(settings.high_value_major, &ltv.currency) {
        out.push(tags::HIGH_VALUE);
    }

    let plan_matches = attribute(&customer.attributes, "plan").is_some_and(|plan| {
        plan.trim()
            .eq_ignore_ascii_case(settings.enterprise_plan.trim())
    });
    let seats = attribute(&customer.attributes, "seats").and_then(|s| s.trim().parse::<u64>().ok());
    if plan_matches || seats.is_some_and(|s| s >= settings.enterprise_seats) {
        out.push(tags::ENTERPRISE);
    }

    out.into_iter().map(str::to_owned).collect()
}

/// The exported plugin.
#[derive(Debug)]
pub struct LifecycleSegments;

impl Guest for LifecycleSegments {
    fn segment(customer: CustomerProfile) -> Result<Vec<String>, String> {
        let settings = Settings::from_lookup(config::get)?;
        Ok(segments(&customer, clock::now(), &settings))
    }
}

hephaestus_plugin_sdk::export_segmentation!(LifecycleSegments);

#[cfg(test)]
mod tests {
    use super::*;
    use hephaestus_plugin_sdk::Attribute;
    use hephaestus_plugin_sdk::clock::days;

    const NOW: Timestamp = 1_750_000_000_000_000;

    fn customer() -> CustomerProfile {
        CustomerProfile {
            id: "cus_1".into(),
            name: Some("Ada Lovelace".into()),
            email_domain: Some("example.com".into()),
            created_at: NOW - days(400),
            segments: vec![],
            lifetime_value: hephaestus_plugin_sdk::money(0, "USD"),
            monthly_recurring_revenue: hephaestus_plugin_sdk::money(0, "USD"),
            activity: hephaestus_plugin_sdk::no_activity(),
            attributes: vec![],
        }
    }

    fn tags_of(c: &CustomerProfile) -> Vec<String> {
        segments(c, NOW, &Settings::default())
    }

    #[test]
    fn quiet_old_customer_has_no_tags() {
        assert!(tags_of(&customer()).is_empty());
    }

    #[test]
    fn new_and_power_user() {
        let mut c = customer();
        c.created_at = NOW - days(30) + 1;
        c.activity.active_subscriptions = 2;
        c.activity.payments = 1;
        c.activity.last_payment_at = Some(NOW - days(1));
        assert_eq!(tags_of(&c), ["new", "power_user"]);
        c.created_at = NOW - days(30);
        c.activity.active_subscriptions = 1;
        c.activity.payments_last_30_days = 5;
        assert_eq!(tags_of(&c), ["power_user"]);
    }

    #[test]
    fn at_risk_reasons() {
        let mut c = customer();
        c.activity.has_past_due = true;
        assert_eq!(tags_of(&c), ["at_risk"]);
        let mut c = customer();
        c.activity.failed_payments_last_30_days = 2;
        assert_eq!(tags_of(&c), ["at_risk"]);
        let mut c = customer();
        c.activity.payments = 3;
        c.activity.last_payment_at = Some(NOW - days(60));
        assert_eq!(tags_of(&c), ["at_risk"]);
        c.activity.last_payment_at = Some(NOW - days(60) + 1);
        assert!(tags_of(&c).is_empty());
    }

    #[test]
    fn high_value_uses_the_currency_exponent() {
        let mut c = customer();
        c.lifetime_value = hephaestus_plugin_sdk::money(500_000, "USD");
        assert!(tags_of(&c).is_empty());
        c.lifetime_value = hephaestus_plugin_sdk::money(500_001, "USD");
        assert_eq!(tags_of(&c), ["high_value"]);
        c.lifetime_value = hephaestus_plugin_sdk::money(5_001, "JPY");
        assert_eq!(tags_of(&c), ["high_value"]);
        c.lifetime_value = hephaestus_plugin_sdk::money(5_000_000, "KWD");
        assert!(tags_of(&c).is_empty());
    }

    #[test]
    fn enterprise_by_plan_or_seats_and_config() {
        let mut c = customer();
        c.attributes = vec![Attribute {
            key: "plan".into(),
            value: "Enterprise".into(),
        }];
        assert_eq!(tags_of(&c), ["enterprise"]);
        c.attributes = vec![Attribute {
            key: "seats".into(),
            value: "99".into(),
        }];
        assert!(tags_of(&c).is_empty());
        c.attributes = vec![Attribute {
            key: "seats".into(),
            value: "100".into(),
        }];
        assert_eq!(tags_of(&c), ["enterprise"]);
        let s = Settings::from_lookup(|k| (k == "enterprise_seats").then(|| "50".into())).unwrap();
        c.attributes = vec![Attribute {
            key: "seats".into(),
            value: "50".into(),
        }];
        assert_eq!(segments(&c, NOW, &s), ["enterprise"]);
        assert!(Settings::from_lookup(|k| (k == "new_days").then(|| "a month".into())).is_err());
    }
}
