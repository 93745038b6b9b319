//! Decisions made by plugins, wired into the product: price quotes, list-price
//! recommendations, customer profiles (and their segments), and the plugin status list.
//! Every call goes through the plugin host, which falls back to the built-in default when
//! no plugin serves a slot or a plugin faults; answers say which one decided.

use std::sync::atomic::Ordering;

use axum::extract::State;
use hephaestus_billing::subscriptions::monthly_minor;
use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{Interval, Price, Product, Recurring};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{self, Currency, Money};
use hephaestus_core::subscription::SubscriptionStatus;
use hephaestus_plugins::model::{Activity, Attribute, PricePoint};
use hephaestus_plugins::{
    CustomerProfile, Decide, DecidedBy, Decision, PluginStatus, QuoteRequest, RecommendRequest,
    SegmentRequest,
};
use hephaestus_store::profiles::Snapshot;
use hephaestus_store::{catalog, exchange_rates, profiles};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::ReadKey;
use crate::error::{ApiResult, AppError};
use crate::extract::Json;
use crate::payments::{AmountText, amount_json};
use crate::reporting::convert;

/// The business clock (real time plus the sandbox clock's offset), as this host last read
/// it from the database.
pub fn business_now(state: &AppState) -> Timestamp {
    Timestamp::from_micros(
        Timestamp::now()
            .as_micros()
            .saturating_add(state.clock_offset.load(Ordering::Relaxed)),
    )
}

/// Runs a plugin decision off the async workers: a call is bounded (10 ms by default) but
/// synchronous.
pub async fn decide<R>(state: &AppState, request: R) -> ApiResult<Decision<R::Output>>
where
    R: Decide + Send + 'static,
    R::Output: Send + 'static,
{
    let plugins = state.plugins.clone();
    tokio::task::spawn_blocking(move || plugins.decide(&request))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("plugin call task failed: {e}")))
}

fn model_money(m: Money) -> hephaestus_plugins::Money {
    hephaestus_plugins::Money::new(m.minor, m.currency.code())
}

/// Converts per-currency sums into one currency; currencies with no stored rate are left
/// out (reported totals do the same and list them as missing).
fn sum_in(parts: &[(Currency, i64)], to: Currency, rates: &[exchange_rates::ExchangeRate]) -> i64 {
    parts
        .iter()
        .filter_map(|(c, minor)| {
            if *c == to {
                Some(*minor)
            } else {
                convert(
                    Money {
                        minor: *minor,
                        currency: *c,
                    },
                    to,
                    rates,
                )
                .map(|(m, _, _)| m)
            }
        })
        .fold(0_i64, i64::saturating_add)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The profile plugins see for the snapshot's customer, with segments left empty (see
/// [`segmented_profile`]).
pub async fn profile(state: &AppState, snapshot: &Snapshot) -> ApiResult<CustomerProfile> {
    let (customer, facts) = (&snapshot.customer, &snapshot.facts);
    let reporting = state.config.reporting_currency;
    let net: Vec<(Currency, i64)> = facts
        .net_by_currency
        .iter()
        .filter_map(|(c, m)| Currency::parse(c, "currency").ok().map(|c| (c, *m)))
        .collect();
    let mut mrr = Vec::new();
    let (mut live, mut ended, mut past_due) = (0, 0, false);
    for s in &facts.subscriptions {
        let status: SubscriptionStatus = s
            .status
            .parse()
            .map_err(|e: String| AppError::Internal(anyhow::anyhow!("subscription status: {e}")))?;
        if status.is_live() {
            live += 1;
        } else {
            ended += 1;
        }
        past_due |= matches!(
            status,
            SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid
        );
        let every = s
            .interval
            .as_deref()
            .and_then(|i| i.parse::<Interval>().ok())
            .zip(s.interval_count)
            .and_then(|(i, c)| Recurring::new(i, c).ok());
        if let (Some(every), Ok(currency), true) = (
            every,
            Currency::parse(&s.currency, "currency"),
            matches!(
                status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ),
        ) {
            let total = s.unit_amount_minor.saturating_mul(s.quantity);
            mrr.push((currency, monthly_minor(total, every)));
        }
    }
    // Most customers pay in the reporting currency: the rates are read only when needed.
    let rates = if net.iter().chain(&mrr).any(|(c, _)| *c != reporting) {
        exchange_rates::latest(&state.store).await?
    } else {
        Vec::new()
    };
    Ok(CustomerProfile {
        id: customer.id.clone(),
        name: customer.name.clone(),
        email_domain: customer
            .email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase()),
        created_at: customer.created_at.as_micros(),
        segments: Vec::new(),
        lifetime_value: hephaestus_plugins::Money::new(
            sum_in(&net, reporting, &rates),
            reporting.code(),
        ),
        monthly_recurring_revenue: hephaestus_plugins::Money::new(
            sum_in(&mrr, reporting, &rates),
            reporting.code(),
        ),
        activity: Activity {
            payments: count(facts.payments),
            payments_last_30_days: count(facts.payments_last_30_days),
            failed_payments_last_30_days: count(facts.failed_payments_last_30_days),
            last_payment_at: facts.last_payment_at.map(Timestamp::as_micros),
            active_subscriptions: live,
            canceled_subscriptions: ended,
            has_past_due: past_due,
        },
        attributes: customer
            .metadata
            .iter()
            .map(|(k, v)| Attribute::new(k.clone(), v.clone()))
            .collect(),
    })
}

/// The customer's profile with the segments the segmentation slot gives it now.
pub async fn segmented_profile(
    state: &AppState,
    snapshot: &Snapshot,
) -> ApiResult<(CustomerProfile, Decision<Vec<String>>)> {
    let mut p = profile(state, snapshot).await?;
    let decision = decide(
        state,
        SegmentRequest {
            customer: p.clone(),
        },
    )
    .await?;
    p.segments = decision.value.clone();
    Ok((p, decision))
}

/// The customer's profile with segments for a decision made now: the stored ones when the
/// version serving the segmentation slot computed them within the sweep's age limit (what
/// the customer's own view shows, at most a consumer's lag behind the last event), else
/// decided afresh.
pub async fn current_profile(state: &AppState, snapshot: &Snapshot) -> ApiResult<CustomerProfile> {
    let oldest = business_now(state).add_secs(-crate::segments::MAX_AGE_SECS);
    match &snapshot.segments {
        Some(s) if s.computed_at >= oldest && s.decided_by == crate::segments::serving(state) => {
            let mut p = profile(state, snapshot).await?;
            p.segments = s.tags.clone();
            Ok(p)
        }
        _ => Ok(segmented_profile(state, snapshot).await?.0),
    }
}

/// Who decided, for answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecidedByView {
    /// `plugin` or `default`.
    pub kind: &'static str,
    pub plugin: Option<String>,
    /// The plugin's content hash.
    pub version: Option<String>,
    /// Why the default decided: no_plugin, disabled, fault, …
    pub reason: Option<String>,
    pub fuel_used: u64,
    pub duration_us: u64,
}

impl DecidedByView {
    pub fn of<T>(d: &Decision<T>) -> Self {
        let duration_us = u64::try_from(d.duration.as_micros()).unwrap_or(u64::MAX);
        match &d.decided_by {
            DecidedBy::Plugin { name, version } => DecidedByView {
                kind: "plugin",
                plugin: Some(name.clone()),
                version: Some(version.clone()),
                reason: None,
                fuel_used: d.fuel_used,
                duration_us,
            },
            DecidedBy::Default { reason } => DecidedByView {
                kind: "default",
                plugin: serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("plugin")?.as_str().map(str::to_string)),
                version: None,
                reason: Some(reason.as_str().to_string()),
                fuel_used: d.fuel_used,
                duration_us,
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteBody {
    /// `cus_…`
    pub customer_id: String,
    /// The price to quote (`price_…`); or give `product_id` of a product with one active price.
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    /// Default 1.
    pub quantity: Option<u32>,
    /// Anything else a pricing plugin may use (a coupon code, a channel), as text.
    pub context: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteView {
    pub object: &'static str,
    pub customer_id: String,
    pub product_id: String,
    pub price_id: String,
    pub quantity: u32,
    pub currency: String,
    /// The list price for the quantity, in major units.
    #[schema(value_type = f64)]
    pub list_amount: Box<RawValue>,
    pub list_amount_minor: i64,
    /// What the customer pays, in major units.
    #[schema(value_type = f64)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    #[schema(value_type = f64)]
    pub discount: Box<RawValue>,
    pub discount_minor: i64,
    pub reason: String,
    /// The customer's segments the quote was made with.
    pub segments: Vec<String>,
    pub decided_by: DecidedByView,
}

async fn quoted_price(state: &AppState, body: &QuoteBody) -> ApiResult<(Price, Product)> {
    let price = match (&body.price_id, &body.product_id) {
        (Some(id), _) => {
            if !ids::is_well_formed(prefix::PRICE, id) {
                return Err(AppError::invalid(
                    "price_id",
                    "must be a price id like price_…",
                ));
            }
            let (price, product) = match state.catalog_cache.get(id) {
                Some(hit) => hit,
                None => {
                    let read = catalog::get_price_with_product(&state.store, id)
                        .await?
                        .ok_or_else(|| {
                            AppError::invalid("price_id", format!("no such price: {id}"))
                        })?;
                    state.catalog_cache.put(id.clone(), read.clone());
                    read
                }
            };
            return quotable(price).map(|price| (price, product));
        }
        (None, Some(product)) => {
            if !ids::is_well_formed(prefix::PRODUCT, product) {
                return Err(AppError::invalid(
                    "product_id",
                    "must be a product id like prod_…",
                ));
            }
            let prices = catalog::list_prices(
                &state.store,
                &catalog::PriceQuery {
                    limit: 2,
                    product_id: Some(product.clone()),
                    active: Some(true),
                    ..Default::default()
                },
            )
            .await?;
            match prices.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(AppError::invalid(
                        "product_id",
                        format!("product {product} has no active price"),
                    ));
                }
                _ => {
                    return Err(AppError::invalid(
                        "price_id",
                        format!("product {product} has several active prices; name one"),
                    ));
                }
            }
        }
        (None, None) => return Err(AppError::invalid("price_id", "give price_id or product_id")),
    };
    let price = quotable(price)?;
    let product = catalog::get_product(&state.store, &price.product_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("product of {} missing", price.id)))?;
    Ok((price, product))
}

fn quotable(price: Price) -> ApiResult<Price> {
    if !price.active {
        return Err(AppError::invalid(
            "price_id",
            format!("price {} is inactive and cannot be quoted", price.id),
        ));
    }
    Ok(price)
}

/// Quotes a price for one customer: the pricing plugin serving the product decides (or
/// the list price, when none does or it faults). Nothing is charged or stored.
#[utoipa::path(
    post, path = "/api/v1/revenue/quotes", tag = "decisions",
    request_body = QuoteBody,
    responses((status = 200, body = QuoteView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn quote(
    State(state): State<AppState>,
    _auth: ReadKey,
    body: Json<QuoteBody>,
) -> ApiResult<axum::Json<QuoteView>> {
    let body = body.value;
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=1_000_000).contains(&quantity) {
        return Err(AppError::invalid("quantity", "must be 1 to 1000000"));
    }
    let snapshot = crate::customers::live_snapshot(&state, &body.customer_id).await?;
    let (price, product) = quoted_price(&state, &body).await?;
    let list_minor = price
        .unit_amount
        .minor
        .checked_mul(i64::from(quantity))
        .filter(|m| *m <= money::MAX_MINOR)
        .ok_or_else(|| AppError::invalid("quantity", "makes the total too large"))?;
    let profile = current_profile(&state, &snapshot).await?;
    let segments = profile.segments.clone();
    let request = QuoteRequest {
        customer: profile,
        product_id: product.id.clone(),
        product_name: product.name.clone(),
        price_id: price.id.clone(),
        unit_price: model_money(price.unit_amount),
        quantity,
        interval: price.recurring.map(|r| r.interval.as_str().to_string()),
        context: body
            .context
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| Attribute::new(k, v))
            .collect(),
    };
    let decision = decide(&state, request).await?;
    let currency = price.unit_amount.currency;
    let m = |minor| amount_json(Money { minor, currency });
    Ok(axum::Json(QuoteView {
        object: "quote",
        customer_id: snapshot.customer.id,
        product_id: product.id,
        price_id: price.id,
        quantity,
        currency: currency.code().to_string(),
        list_amount: m(list_minor),
        list_amount_minor: list_minor,
        amount: m(decision.value.amount.amount_minor),
        amount_minor: decision.value.amount.amount_minor,
        discount: m(decision.value.discount.amount_minor),
        discount_minor: decision.value.discount.amount_minor,
        reason: decision.value.reason.clone(),
        segments,
        decided_by: DecidedByView::of(&decision),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeBody {
    /// The product, by name (case-insensitive) …
    pub product_name: Option<String>,
    /// … or by one of its prices.
    pub price_id: Option<String>,
    /// The list price now, decimal in major units.
    #[schema(value_type = f64, example = 97.00)]
    pub current_price: AmountText,
    /// ISO 4217; default the price's currency, or the product's active price's.
    pub currency: Option<String>,
    /// Optimise for this segment (e.g. `enterprise`).
    pub customer_segment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpectedImpact {
    /// Expected change in revenue, percent (`12.50` is +12.5%).
    #[schema(value_type = f64)]
    pub revenue_change_percent: Box<RawValue>,
    #[schema(value_type = f64)]
    pub conversion_change_percent: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PricePointView {
    pub price_id: String,
    #[schema(value_type = f64)]
    pub unit_price: Box<RawValue>,
    pub unit_price_minor: i64,
    pub customers: u32,
    pub purchases: u32,
    pub failed: u32,
    #[schema(value_type = f64)]
    pub revenue: Box<RawValue>,
    pub revenue_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Evidence {
    /// Paid and uncollectible subscription invoices per price of the product.
    pub price_points: Vec<PricePointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptimizeView {
    pub object: &'static str,
    pub product_id: String,
    pub currency: String,
    #[schema(value_type = f64)]
    pub current_price: Box<RawValue>,
    #[schema(value_type = f64)]
    pub recommended_price: Box<RawValue>,
    pub recommended_price_minor: i64,
    pub expected_impact: ExpectedImpact,
    pub reason: String,
    pub evidence: Evidence,
    pub decided_by: DecidedByView,
}

/// Basis points as a percent with two decimals (`1250` → `12.50`), as an exact JSON number.
fn percent(bp: i32) -> Box<RawValue> {
    let sign = if bp < 0 { "-" } else { "" };
    let abs = bp.unsigned_abs();
    RawValue::from_string(format!("{sign}{}.{:02}", abs / 100, abs % 100))
        .unwrap_or_else(|_| RawValue::from_string("0".into()).unwrap_or_default())
}

/// Recommends a list price from the product's sales at each price it was sold at: the
/// pricing plugin serving the product decides (the default keeps the current price).
#[utoipa::path(
    post, path = "/api/v1/revenue/optimize/pricing", tag = "decisions",
    request_body = OptimizeBody,
    responses((status = 200, body = OptimizeView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn optimize_pricing(
    State(state): State<AppState>,
    _auth: ReadKey,
    body: Json<OptimizeBody>,
) -> ApiResult<axum::Json<OptimizeView>> {
    let body = body.value;
    let (product, price) = match (&body.price_id, &body.product_name) {
        (Some(id), _) => {
            if !ids::is_well_formed(prefix::PRICE, id) {
                return Err(AppError::invalid(
                    "price_id",
                    "must be a price id like price_…",
                ));
            }
            let price = catalog::get_price(&state.store, id)
                .await?
                .ok_or_else(|| AppError::invalid("price_id", format!("no such price: {id}")))?;
            let product = catalog::get_product(&state.store, &price.product_id)
                .await?
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("product of {id} missing")))?;
            (product, Some(price))
        }
        (None, Some(name)) => {
            let product = catalog::find_product_by_name(&state.store, name)
                .await?
                .ok_or_else(|| {
                    AppError::invalid("product_name", format!("no product named {name:?}"))
                })?;
            (product, None)
        }
        (None, None) => {
            return Err(AppError::invalid(
                "product_name",
                "give product_name or price_id",
            ));
        }
    };
    let evidence = profiles::price_evidence(&state.store, &product.id).await?;
    let currency = match (&body.currency, &price) {
        (Some(c), _) => Currency::parse(c, "currency")?,
        (None, Some(p)) => p.unit_amount.currency,
        (None, None) => evidence
            .first()
            .and_then(|e| Currency::parse(&e.currency, "currency").ok())
            .unwrap_or(state.config.reporting_currency),
    };
    let current_minor = money::parse_major(
        &body.current_price.0,
        currency,
        money::MAX_MINOR,
        "current_price",
    )?;
    if let Some(seg) = &body.customer_segment {
        hephaestus_core::validation::check_text("customer_segment", seg, 32)?;
    }
    let points: Vec<_> = evidence
        .iter()
        .filter(|e| e.currency == currency.code())
        .collect();
    let history = points
        .iter()
        .map(|e| PricePoint {
            unit_price: hephaestus_plugins::Money::new(e.unit_amount_minor, currency.code()),
            customers: count(e.customers),
            purchases: count(e.purchases),
            failed: count(e.failed),
            revenue: hephaestus_plugins::Money::new(e.revenue_minor, currency.code()),
        })
        .collect();
    let request = RecommendRequest {
        product_id: product.id.clone(),
        product_name: product.name.clone(),
        current_price: hephaestus_plugins::Money::new(current_minor, currency.code()),
        customer_segment: body.customer_segment.clone(),
        history,
    };
    let decision = decide(&state, request).await?;
    let m = |minor| amount_json(Money { minor, currency });
    let r = &decision.value;
    Ok(axum::Json(OptimizeView {
        object: "pricing_recommendation",
        product_id: product.id,
        currency: currency.code().to_string(),
        current_price: m(current_minor),
        recommended_price: m(r.recommended_price.amount_minor),
        recommended_price_minor: r.recommended_price.amount_minor,
        expected_impact: ExpectedImpact {
            revenue_change_percent: percent(r.revenue_change_basis_points),
            conversion_change_percent: percent(r.conversion_change_basis_points),
        },
        reason: r.reason.clone(),
        evidence: Evidence {
            price_points: points
                .iter()
                .map(|e| PricePointView {
                    price_id: e.price_id.clone(),
                    unit_price: m(e.unit_amount_minor),
                    unit_price_minor: e.unit_amount_minor,
                    customers: count(e.customers),
                    purchases: count(e.purchases),
                    failed: count(e.failed),
                    revenue: m(e.revenue_minor),
                    revenue_minor: e.revenue_minor,
                })
                .collect(),
        },
        decided_by: DecidedByView::of(&decision),
    }))
}

/// Every plugin in the plugin folder: world, version, status, last error, calls, faults
/// and latency.
#[utoipa::path(
    get, path = "/api/v1/plugins", tag = "decisions",
    responses((status = 200, description = "`{object: list, data: [plugin]}`")),
    security(("api_key" = []))
)]
pub async fn list_plugins(
    State(state): State<AppState>,
    _auth: ReadKey,
) -> axum::Json<serde_json::Value> {
    let list: Vec<PluginStatus> = state.plugins.list();
    axum::Json(serde_json::json!({
        "object": "list",
        "plugin_dir": state.config.plugin_dir,
        "data": list,
        "has_more": false,
    }))
}
