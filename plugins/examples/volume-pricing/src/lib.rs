//! Example pricing plugin: volume discounts by quantity tier, plus a loyalty discount.
//!
//! - `quote`: the list total (`unit-price` × `quantity`) minus the discount of the largest
//!   tier the quantity reaches (default: 10+ units 10%, 50+ units 20%), plus an extra
//!   loyalty discount (default 5%) when the customer holds segment `high_value`. The two
//!   percentages add up and are applied once to the list total, in integer minor units,
//!   rounding half up.
//! - `recommend`: the price point with the highest revenue per offered customer
//!   (`revenue / (customers + failed)`), compared as exact fractions. With no usable history
//!   (none in the price's currency, at a positive price, offered to anyone) it keeps the
//!   current price and expects no change, as the host does when a product has no evidence.
//!
//! The decisions are the plain functions [`quote`] and [`recommend`], tested on the host
//! target; the [`Guest`] implementation only reads the config and calls them. The
//! JavaScript twin in `plugins/js/volume-pricing` computes the same numbers and reasons.

use hephaestus_plugin_sdk::money::{self, Rounding};
use hephaestus_plugin_sdk::pricing::{
    Guest, PricePoint, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};
use hephaestus_plugin_sdk::{Money, config, has_segment};

/// One volume tier: orders of at least `min_quantity` units get `discount_bp` off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub min_quantity: u32,
    /// Basis points: 1000 is 10%.
    pub discount_bp: u32,
}

/// The plugin's configuration (the manifest's `[config]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Sorted by `min_quantity`, ascending.
    pub tiers: Vec<Tier>,
    /// Customers holding this segment tag get the loyalty discount on top.
    pub loyalty_segment: String,
    pub loyalty_discount_bp: u32,
}

/// Highest tier number read from the config (`tier_1_…` to `tier_9_…`).
const MAX_TIERS: u32 = 9;

impl Settings {
    /// Reads settings through `lookup` (the host's `config::get`, or a map in tests). Tiers 1
    /// and 2 default to 10+ → 10% and 50+ → 20%; further tiers are read while
    /// `tier_N_quantity` is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |key: &str| lookup(key);
        let mut tiers = Vec::new();
        for n in 1..=MAX_TIERS {
            let (default_quantity, default_bp) = match n {
                1 => (Some(10), 1000),
                2 => (Some(50), 2000),
                _ => (None, 0),
            };
            let quantity_key = format!("tier_{n}_quantity");
            let bp_key = format!("tier_{n}_discount_bp");
            let Some(min_quantity) =
                config::parse::<u32>(&quantity_key, get(&quantity_key).as_deref())?
                    .or(default_quantity)
            else {
                break;
            };
            let discount_bp =
                config::parse_or::<u32>(&bp_key, get(&bp_key).as_deref(), default_bp)?;
            if min_quantity == 0 {
                return Err(format!("config `{quantity_key}` must be at least 1"));
            }
            if discount_bp > 10_000 {
                return Err(format!("config `{bp_key}` must be at most 10000 (100%)"));
            }
            tiers.push(Tier {
                min_quantity,
                discount_bp,
            });
        }
        tiers.sort_by_key(|t| t.min_quantity);
        let loyalty_discount_bp = config::parse_or::<u32>(
            "loyalty_discount_bp",
            get("loyalty_discount_bp").as_deref(),
            500,
        )?;
        if loyalty_discount_bp > 10_000 {
            return Err("config `loyalty_discount_bp` must be at most 10000 (100%)".into());
        }
        Ok(Settings {
            tiers,
            loyalty_segment: get("loyalty_segment").unwrap_or_else(|| "high_value".to_owned()),
            loyalty_discount_bp,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_lookup(|_| None).expect("defaults are valid")
    }
}

/// Quotes `request` under `settings`.
pub fn quote(request: &QuoteRequest, settings: &Settings) -> Result<PriceQuote, String> {
    if request.quantity == 0 {
        return Err("quantity must be at least 1".into());
    }
    let unit = &request.unit_price;
    if unit.amount_minor < 0 {
        return Err("unit price must not be negative".into());
    }
    let list_total = unit
        .amount_minor
        .checked_mul(i64::from(request.quantity))
        .ok_or("list total does not fit in 64 bits")?;

    let tier = settings
        .tiers
        .iter()
        .rev()
        .find(|t| request.quantity >= t.min_quantity);
    let loyal = settings.loyalty_discount_bp > 0
        && has_segment(&request.customer, &settings.loyalty_segment);

    let mut parts = Vec::new();
    let mut discount_bp: u32 = 0;
    if let Some(tier) = tier.filter(|t| t.discount_bp > 0) {
        discount_bp += tier.discount_bp;
        parts.push(format!(
            "{} volume discount for {}+ units",
            money::format_percent(i64::from(tier.discount_bp)),
            tier.min_quantity
        ));
    }
    if loyal {
        discount_bp += settings.loyalty_discount_bp;
        parts.push(format!(
            "{} loyalty discount for {} customers",
            money::format_percent(i64::from(settings.loyalty_discount_bp)),
            settings.loyalty_segment
        ));
    }
    let discount_bp = discount_bp.min(10_000);
    let discount = money::percent_of(list_total, i64::from(discount_bp), Rounding::HalfUp);
    let reason = if parts.is_empty() {
        "list price".to_owned()
    } else {
        parts.join("; ")
    };
    Ok(PriceQuote {
        amount: Money {
            amount_minor: list_total - discount,
            currency: unit.currency.clone(),
        },
        discount: Money {
            amount_minor: discount,
            currency: unit.currency.clone(),
        },
        reason,
    })
}

/// Customers who were offered a price point: those who paid plus failed attempts.
fn offered(point: &PricePoint) -> i128 {
    i128::from(point.customers) + i128::from(point.failed)
}

/// Whether `a` earns strictly more per offered customer than `b` (exact cross-multiplication).
fn earns_more(a: &PricePoint, b: &PricePoint) -> bool {
    i128::from(a.revenue.amount_minor) * offered(b)
        > i128::from(b.revenue.amount_minor) * offered(a)
}

/// Relative change from `base_num / base_den` to `new_num / new_den`, in basis points,
/// rounded half up; 0 when the base is zero (no meaningful relative change).
fn ratio_change_bp(new_num: i128, new_den: i128, base_num: i128, base_den: i128) -> i32 {
    let denominator = base_num * new_den;
    let numerator = (new_num * base_den - base_num * new_den) * 10_000;
    money::div_round(numerator, denominator, Rounding::HalfUp)
        .map(|bp| bp.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32)
        .unwrap_or(0)
}

/// Recommends a list price for `request`. No setting changes it.
pub fn recommend(request: &RecommendRequest) -> Result<Recommendation, String> {
    let current = &request.current_price;
    if current.amount_minor <= 0 {
        return Err("current price must be positive".into());
    }
    // Usable evidence: same currency, a positive price, and someone was offered it.
    let usable: Vec<&PricePoint> = request
        .history
        .iter()
        .filter(|p| {
            p.unit_price.currency == current.currency
                && p.unit_price.amount_minor > 0
                && offered(p) > 0
        })
        .collect();

    let Some(best) = usable
        .iter()
        .copied()
        .reduce(|best, p| if earns_more(p, best) { p } else { best })
    else {
        // Nothing to learn from: an invented change would be a guess presented as a finding.
        return Ok(Recommendation {
            recommended_price: current.clone(),
            revenue_change_basis_points: 0,
            conversion_change_basis_points: 0,
            reason: "no usable evidence: the current price is kept".into(),
        });
    };

    // Compare against the point at the current price, or else the newest point.
    let base = usable
        .iter()
        .copied()
        .find(|p| p.unit_price.amount_minor == current.amount_minor)
        .unwrap_or(usable[0]);
    let revenue_change = ratio_change_bp(
        i128::from(best.revenue.amount_minor),
        offered(best),
        i128::from(base.revenue.amount_minor),
        offered(base),
    );
    let conversion_change = ratio_change_bp(
        i128::from(best.customers),
        offered(best),
        i128::from(base.customers),
        offered(base),
    );
    let per_offered = money::div_round(
        i128::from(best.revenue.amount_minor),
        offered(best),
        Rounding::HalfUp,
    )
    .unwrap_or(0) as i64;
    let reason = format!(
        "highest revenue per offered customer: {} at {} ({} of {} offered customers paid)",
        money::format(&Money {
            amount_minor: per_offered,
            currency: current.currency.clone()
        }),
        money::format(&best.unit_price),
        best.customers,
        offered(best),
    );
    Ok(Recommendation {
        recommended_price: best.unit_price.clone(),
        revenue_change_basis_points: revenue_change,
        conversion_change_basis_points: conversion_change,
        reason,
    })
}

/// The exported plugin.
#[derive(Debug)]
pub struct VolumePricing;

impl Guest for VolumePricing {
    fn quote(request: QuoteRequest) -> Result<PriceQuote, String> {
        quote(&request, &Settings::from_lookup(config::get)?)
    }

    fn recommend(request: RecommendRequest) -> Result<Recommendation, String> {
        // A broken config fails every call, as it does for quotes.
        Settings::from_lookup(config::get)?;
        recommend(&request)
    }
}

hephaestus_plugin_sdk::export_pricing!(VolumePricing);

#[cfg(test)]
mod tests {
    use super::*;
    use hephaestus_plugin_sdk::CustomerProfile;

    fn customer(segments: &[&str]) -> CustomerProfile {
        CustomerProfile {
            id: "cus_1".into(),
            name: None,
            email_domain: None,
            created_at: 0,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            lifetime_value: m("0", "USD"),
            monthly_recurring_revenue: m("0", "USD"),
            activity: hephaestus_plugin_sdk::no_activity(),
            attributes: vec![],
        }
    }

    fn m(amount: &str, currency: &str) -> Money {
        hephaestus_plugin_sdk::money(amount.parse().unwrap(), currency)
    }

    fn request(unit: i64, quantity: u32, segments: &[&str]) -> QuoteRequest {
        QuoteRequest {
            customer: customer(segments),
            product_id: "prod_1".into(),
            product_name: "Seat".into(),
            price_id: "price_1".into(),
            unit_price: hephaestus_plugin_sdk::money(unit, "USD"),
            quantity,
            interval: Some("month".into()),
            context: vec![],
        }
    }

    #[test]
    fn tiers_and_loyalty() {
        let s = Settings::default();
        let q = quote(&request(9700, 1, &[]), &s).unwrap();
        assert_eq!((q.amount.amount_minor, q.discount.amount_minor), (9700, 0));
        assert_eq!(q.reason, "list price");

        let q = quote(&request(9700, 10, &[]), &s).unwrap();
        assert_eq!(
            (q.amount.amount_minor, q.discount.amount_minor),
            (87300, 9700)
        );
        assert_eq!(q.reason, "10% volume discount for 10+ units");

        let q = quote(&request(9700, 50, &["high_value"]), &s).unwrap();
        assert_eq!(
            (q.amount.amount_minor, q.discount.amount_minor),
            (363750, 121250)
        );
        assert_eq!(
            q.reason,
            "20% volume discount for 50+ units; 5% loyalty discount for high_value customers"
        );

        // Half-up rounding: 15% of 333 × 10 = 499.5 → 500; 15% of 999 × 11 = 1648.35 → 1648.
        let q = quote(&request(333, 10, &["high_value"]), &s).unwrap();
        assert_eq!(
            (q.amount.amount_minor, q.discount.amount_minor),
            (2830, 500)
        );
        let q = quote(&request(999, 11, &["high_value"]), &s).unwrap();
        assert_eq!(q.discount.amount_minor, 1648);
        assert_eq!(q.discount.currency, "USD");

        assert_eq!(
            quote(&request(9700, 0, &[]), &s).unwrap_err(),
            "quantity must be at least 1"
        );
    }

    #[test]
    fn config_overrides() {
        let map = [
            ("tier_1_quantity", "5"),
            ("tier_1_discount_bp", "250"),
            ("tier_3_quantity", "100"),
            ("tier_3_discount_bp", "3000"),
        ];
        let s = Settings::from_lookup(|k| {
            map.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(s.tiers.len(), 3);
        let q = quote(&request(1000, 5, &[]), &s).unwrap();
        assert_eq!(
            (q.discount.amount_minor, q.reason.as_str()),
            (125, "2.5% volume discount for 5+ units")
        );
        let q = quote(&request(1000, 100, &[]), &s).unwrap();
        assert_eq!(q.discount.amount_minor, 30000);
        let err =
            Settings::from_lookup(|k| (k == "tier_2_discount_bp").then(|| "lots".to_string()))
                .unwrap_err();
        assert!(err.contains("tier_2_discount_bp"), "{err}");
    }

    fn point(price: i64, customers: u32, failed: u32, revenue: i64) -> PricePoint {
        PricePoint {
            unit_price: hephaestus_plugin_sdk::money(price, "USD"),
            customers,
            purchases: customers,
            failed,
            revenue: hephaestus_plugin_sdk::money(revenue, "USD"),
        }
    }

    fn rec_request(current: i64, history: Vec<PricePoint>) -> RecommendRequest {
        RecommendRequest {
            product_id: "prod_1".into(),
            product_name: "Seat".into(),
            current_price: hephaestus_plugin_sdk::money(current, "USD"),
            customer_segment: None,
            history,
        }
    }

    #[test]
    fn recommends_best_revenue_per_offered_customer() {
        // No history, or none usable (another currency, a zero price, nobody offered it):
        // the current price, no expected change.
        for history in [
            vec![],
            vec![point(9700, 0, 0, 0)],
            vec![PricePoint {
                unit_price: hephaestus_plugin_sdk::money(12900, "EUR"),
                ..point(12900, 80, 40, 1_032_000)
            }],
            vec![point(0, 3, 1, 100)],
        ] {
            let r = recommend(&rec_request(9700, history)).unwrap();
            assert_eq!(
                r.recommended_price,
                hephaestus_plugin_sdk::money(9700, "USD")
            );
            assert_eq!(
                (
                    r.revenue_change_basis_points,
                    r.conversion_change_basis_points
                ),
                (0, 0)
            );
            assert_eq!(r.reason, "no usable evidence: the current price is kept");
        }

        // 9700: 100 paid, 50 failed, 970000 → 6466.67 per offered.
        // 12900: 80 paid, 40 failed, 1032000 → 8600 per offered (best).
        let history = vec![
            point(12900, 80, 40, 1_032_000),
            point(9700, 100, 50, 970_000),
        ];
        let r = recommend(&rec_request(9700, history)).unwrap();
        assert_eq!(r.recommended_price.amount_minor, 12900);
        // 8600 / 6466.67 - 1 = +32.99%; conversion 66.67% vs 66.67% → 0.
        assert_eq!(
            (
                r.revenue_change_basis_points,
                r.conversion_change_basis_points
            ),
            (3299, 0)
        );
        assert_eq!(
            r.reason,
            "highest revenue per offered customer: 86.00 USD at 129.00 USD (80 of 120 offered customers paid)"
        );
    }
}
