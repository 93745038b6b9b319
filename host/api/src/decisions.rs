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
use hephaestus_store::{catalog, exchange_rates, profiles, quotes};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, PathId, load_by_id};
use crate::payments::{AmountText, amount_json};
use crate::reporting::convert;
use crate::write::{self, RequestMeta};
use axum::response::{IntoResponse, Response};

/// The business clock (real time plus the sandbox clock's offset), as this host last read
/// it from the database.
pub fn business_now(state: &AppState) -> Timestamp {
    Timestamp::from_micros(
        Timestamp::now()
            .as_micros()
            .saturating_add(state.clock_offset.load(Ordering::Relaxed)),
    )
}

/// Runs a plugin decision on the plugin host's worker threads and waits for it without
/// holding an async worker: it answers by its deadline whatever the call does.
pub async fn decide<R>(state: &AppState, request: R) -> ApiResult<Decision<R::Output>>
where
    R: Decide + Send + Sync + 'static,
    R::Output: Send + 'static,
{
    Ok(state.plugins.decide_async(&request).await)
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

/// What the host could and could not value for a customer's built-in segment rules.
#[derive(Debug, Clone, Default)]
pub struct Valuation {
    /// The `high_value` threshold (5,000.00 USD) in the reporting currency, `None` when no
    /// stored rate converts it.
    pub high_value_threshold: Option<hephaestus_plugins::Money>,
    /// What was left out and why, in words, when something was.
    pub note: Option<String>,
}

/// The profile plugins see for the snapshot's customer, with segments left empty (see
/// [`segmented_profile`]).
pub async fn profile(state: &AppState, snapshot: &Snapshot) -> ApiResult<CustomerProfile> {
    Ok(valued_profile(state, snapshot).await?.0)
}

/// [`profile`], with what could not be valued: money in a currency with no rate to the
/// reporting currency is left out of the lifetime value and MRR, and said so.
pub async fn valued_profile(
    state: &AppState,
    snapshot: &Snapshot,
) -> ApiResult<(CustomerProfile, Valuation)> {
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
            let total = s
                .unit_amount_minor
                .saturating_mul(s.quantity)
                .saturating_sub(s.discount_minor);
            mrr.push((currency, monthly_minor(total, every)));
        }
    }
    // Most customers pay in the reporting currency: the rates are read only when needed.
    let usd = Currency::parse("USD", "currency")
        .map_err(|_| AppError::Internal(anyhow::anyhow!("USD is an ISO 4217 currency")))?;
    let rates = if reporting != usd || net.iter().chain(&mrr).any(|(c, _)| *c != reporting) {
        exchange_rates::latest(&state.store).await?
    } else {
        Vec::new()
    };
    let threshold = Money {
        minor: hephaestus_plugins::HIGH_VALUE_LTV_USD_MINOR,
        currency: usd,
    };
    let high_value_threshold = if reporting == usd {
        Some(threshold.minor)
    } else {
        convert(threshold, reporting, &rates).map(|(m, _, _)| m)
    }
    .map(|m| hephaestus_plugins::Money::new(m, reporting.code()));
    let unrated: std::collections::BTreeSet<&str> = net
        .iter()
        .chain(&mrr)
        .filter(|(c, m)| {
            *m != 0
                && *c != reporting
                && convert(
                    Money {
                        minor: *m,
                        currency: *c,
                    },
                    reporting,
                    &rates,
                )
                .is_none()
        })
        .map(|(c, _)| c.code())
        .collect();
    let mut notes = Vec::new();
    if !unrated.is_empty() {
        notes.push(format!(
            "lifetime value and MRR leave out money in {} (no exchange rate to {reporting}): \
             high_value holds only if what was counted already passes the threshold",
            unrated.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if high_value_threshold.is_none() {
        notes.push(format!(
            "no USD/{reporting} exchange rate converts the high_value threshold (5,000.00 USD): \
             high_value was not judged"
        ));
    }
    let valuation = Valuation {
        high_value_threshold,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    let profile = CustomerProfile {
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
    };
    Ok((profile, valuation))
}

/// The customer's profile with the segments the segmentation slot gives it now, and what
/// could not be valued for them.
pub async fn segmented_profile(
    state: &AppState,
    snapshot: &Snapshot,
) -> ApiResult<(CustomerProfile, Decision<Vec<String>>, Valuation)> {
    let (mut p, valuation) = valued_profile(state, snapshot).await?;
    let decision = decide(
        state,
        SegmentRequest {
            customer: p.clone(),
            high_value_threshold: valuation.high_value_threshold.clone(),
        },
    )
    .await?;
    p.segments = decision.value.clone();
    Ok((p, decision, valuation))
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
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub quantity: Option<u32>,
    /// Anything else a pricing plugin may use (a coupon code, a channel), as text.
    pub context: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteView {
    /// `quo_…`: give it as `quote_id` to a payment or subscription to charge this amount.
    pub id: String,
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
    /// `open` (can be used), `used` or `expired`.
    pub status: &'static str,
    /// The payment or subscription that used it.
    pub used_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// After this (business time) it can no longer be used.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl QuoteView {
    /// The view of a stored quote at business time `now`.
    pub fn of(q: &quotes::Quote, now: Timestamp) -> ApiResult<Self> {
        let currency = Currency::parse(&q.currency, "currency")
            .map_err(|_| AppError::Internal(anyhow::anyhow!("quote {}: bad currency", q.id)))?;
        let m = |minor| amount_json(Money { minor, currency });
        let segments = serde_json::from_str(&q.segments).map_err(|e| {
            AppError::Internal(anyhow::anyhow!("quote {}: bad segments: {e}", q.id))
        })?;
        let expires_at = Timestamp::from_micros(q.expires_at);
        Ok(QuoteView {
            id: q.id.clone(),
            object: "quote",
            customer_id: q.customer_id.clone(),
            product_id: q.product_id.clone(),
            price_id: q.price_id.clone(),
            quantity: u32::try_from(q.quantity).unwrap_or(u32::MAX),
            currency: currency.code().to_string(),
            list_amount: m(q.list_amount_minor),
            list_amount_minor: q.list_amount_minor,
            amount: m(q.amount_minor),
            amount_minor: q.amount_minor,
            discount: m(q.discount_minor),
            discount_minor: q.discount_minor,
            reason: q.reason.clone(),
            segments,
            decided_by: DecidedByView {
                kind: if q.decided_by == "plugin" {
                    "plugin"
                } else {
                    "default"
                },
                plugin: q.plugin.clone(),
                version: q.plugin_version.clone(),
                reason: q.default_reason.clone(),
                fuel_used: u64::try_from(q.fuel_used).unwrap_or(0),
                duration_us: u64::try_from(q.decide_us).unwrap_or(0),
            },
            status: if q.used_by.is_some() {
                "used"
            } else if expires_at <= now {
                "expired"
            } else {
                "open"
            },
            used_by: q.used_by.clone(),
            created_at: Timestamp::from_micros(q.created_at),
            expires_at,
        })
    }
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
/// the list price, when none does or it faults). The quote is stored: a payment or
/// subscription given its id (`quote_id`) charges exactly its amount, once, until it
/// expires. Nothing is charged here.
#[utoipa::path(
    post, path = "/api/v1/revenue/quotes", tag = "decisions",
    request_body = QuoteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first quote for a retried request")),
    responses((status = 201, body = QuoteView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn quote(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<QuoteBody>,
) -> Response {
    match decide_quote(&state, body.value).await {
        Ok(stored) => {
            write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
                Box::pin(async move {
                    quotes::insert(tx, &stored).await?;
                    let view = QuoteView::of(&stored, Timestamp::from_micros(stored.created_at))?;
                    Ok(write::created(&stored.id, &view))
                })
            })
            .await
        }
        Err(e) => e.into_response(),
    }
}

/// A stored quote.
#[utoipa::path(
    get, path = "/api/v1/revenue/quotes/{id}", tag = "decisions",
    params(("id" = String, Path, description = "`quo_…`")),
    responses((status = 200, body = QuoteView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get_quote(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<QuoteView>> {
    let store = state.store.clone();
    let q = load_by_id("quote", prefix::QUOTE, id, |id| async move {
        quotes::get(&store, &id).await
    })
    .await?;
    Ok(axum::Json(QuoteView::of(&q, business_now(&state))?))
}

/// Decides a quote, to be stored.
async fn decide_quote(state: &AppState, body: QuoteBody) -> ApiResult<quotes::Quote> {
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=1_000_000).contains(&quantity) {
        return Err(AppError::invalid("quantity", "must be 1 to 1000000"));
    }
    let snapshot = crate::customers::live_snapshot(state, &body.customer_id).await?;
    let (price, product) = quoted_price(state, &body).await?;
    let list_minor = price
        .unit_amount
        .minor
        .checked_mul(i64::from(quantity))
        .filter(|m| *m <= money::MAX_MINOR)
        .ok_or_else(|| AppError::invalid("quantity", "makes the total too large"))?;
    let profile = current_profile(state, &snapshot).await?;
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
    let decision = decide(state, request).await?;
    let by = DecidedByView::of(&decision);
    let now = business_now(state);
    let q = &decision.value;
    Ok(quotes::Quote {
        id: ids::new_id(prefix::QUOTE),
        customer_id: snapshot.customer.id,
        product_id: product.id,
        price_id: price.id,
        quantity: i64::from(quantity),
        currency: price.unit_amount.currency.code().to_string(),
        list_amount_minor: list_minor,
        amount_minor: q.amount.amount_minor,
        discount_minor: q.discount.amount_minor,
        reason: q.reason.clone(),
        segments: serde_json::to_string(&segments)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("segments: {e}")))?,
        decided_by: by.kind.to_string(),
        plugin: by.plugin,
        plugin_version: by.version,
        default_reason: by.reason,
        fuel_used: i64::try_from(by.fuel_used).unwrap_or(i64::MAX),
        decide_us: i64::try_from(by.duration_us).unwrap_or(i64::MAX),
        created_at: now.as_micros(),
        expires_at: now.as_micros().saturating_add(
            state
                .config
                .quote_ttl
                .as_micros()
                .try_into()
                .unwrap_or(i64::MAX),
        ),
        used_by: None,
        used_at: None,
    })
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

/// What a recommendation rests on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Basis {
    /// `no_evidence` (the current price is kept and no change is expected) or
    /// `sales_history`.
    pub kind: &'static str,
    /// The evidence and how the recommendation follows from it, in words.
    pub description: String,
    /// Paid invoices counted, over all price points.
    pub purchases: u32,
    /// Distinct paying customers counted.
    pub customers: u32,
    /// Written off or voided invoices counted.
    pub failed: u32,
    /// The segment the evidence was limited to, if one was asked for.
    pub customer_segment: Option<String>,
    /// When the first and the last counted invoice were made.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_start: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_end: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptimizeView {
    pub object: &'static str,
    /// Null when no product has the name asked for (then there is no evidence either).
    pub product_id: Option<String>,
    pub currency: String,
    #[schema(value_type = f64)]
    pub current_price: Box<RawValue>,
    #[schema(value_type = f64)]
    pub recommended_price: Box<RawValue>,
    pub recommended_price_minor: i64,
    pub expected_impact: ExpectedImpact,
    pub reason: String,
    pub basis: Basis,
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

/// Recommends a list price from the product's sales at each price it was sold at (of one
/// segment's customers when `customer_segment` is given): the pricing plugin serving the
/// product decides. With no sales to learn from (no such product, no paid or failed
/// invoice at any of its prices in the currency) no plugin is asked: the current price is
/// kept, with an expected impact of 0 and a basis that says so.
#[utoipa::path(
    post, path = "/api/v1/revenue/optimize/pricing", tag = "decisions",
    request_body = OptimizeBody,
    responses((status = 200, body = OptimizeView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
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
            (Some(product), Some(price))
        }
        (None, Some(name)) => {
            hephaestus_core::validation::check_text("product_name", name, 256)?;
            (
                catalog::find_product_by_name(&state.store, name).await?,
                None,
            )
        }
        (None, None) => {
            return Err(AppError::invalid(
                "product_name",
                "give product_name or price_id",
            ));
        }
    };
    let segment = match &body.customer_segment {
        Some(seg) if !hephaestus_plugins::is_segment_tag(seg) => {
            return Err(AppError::invalid(
                "customer_segment",
                "must be a segment tag like high_value (lowercase letters, digits, _)",
            ));
        }
        other => other.clone(),
    };
    let evidence = match &product {
        Some(p) => profiles::price_evidence(&state.store, &p.id, segment.as_deref()).await?,
        None => Vec::new(),
    };
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
    if current_minor <= 0 {
        return Err(AppError::invalid("current_price", "must be above zero"));
    }
    let points: Vec<_> = evidence
        .iter()
        .filter(|e| e.currency == currency.code())
        .collect();
    let (purchases, failed, customers) = points.iter().fold((0, 0, 0), |(p, f, c), e| {
        (p + e.purchases, f + e.failed, c + e.customers)
    });
    let stamp = |at: Option<i64>| at.map(Timestamp::from_micros);
    let mut basis = Basis {
        kind: "sales_history",
        description: String::new(),
        purchases: count(purchases),
        customers: count(customers),
        failed: count(failed),
        customer_segment: segment.clone(),
        period_start: stamp(points.iter().filter_map(|e| e.first_at).min()),
        period_end: stamp(points.iter().filter_map(|e| e.last_at).max()),
    };
    let m = |minor| amount_json(Money { minor, currency });
    let of_segment = segment
        .as_deref()
        .map(|s| format!(" of customers in segment {s}"))
        .unwrap_or_default();
    let price_points = points
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
        .collect();
    if purchases + failed == 0 {
        basis.kind = "no_evidence";
        basis.description = match &product {
            None => "no product has this name, so there are no sales to learn from; the current \
                     price is kept and no change is expected"
                .to_string(),
            Some(p) => format!(
                "no paid or failed invoices{of_segment} at any price of {} in {currency}: there is \
                 no evidence to recommend a change, so the current price is kept and no change \
                 is expected",
                p.id
            ),
        };
        return Ok(axum::Json(OptimizeView {
            object: "pricing_recommendation",
            product_id: product.map(|p| p.id),
            currency: currency.code().to_string(),
            current_price: m(current_minor),
            recommended_price: m(current_minor),
            recommended_price_minor: current_minor,
            expected_impact: ExpectedImpact {
                revenue_change_percent: percent(0),
                conversion_change_percent: percent(0),
            },
            reason: "no evidence".into(),
            basis,
            evidence: Evidence { price_points },
            decided_by: DecidedByView {
                kind: "default",
                plugin: None,
                version: None,
                reason: Some("no_evidence".into()),
                fuel_used: 0,
                duration_us: 0,
            },
        }));
    }
    let Some(product) = product else {
        return Err(AppError::Internal(anyhow::anyhow!(
            "evidence without a product"
        )));
    };
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
        customer_segment: segment.clone(),
        history,
    };
    let decision = decide(&state, request).await?;
    let r = &decision.value;
    basis.description = format!(
        "{purchases} paid and {failed} failed invoices{of_segment} from {customers} customers at \
         {} price point(s) of {} in {currency}; the {} compared revenue and conversion at each \
         price: {}",
        points.len(),
        product.id,
        match &decision.decided_by {
            DecidedBy::Plugin { name, .. } => format!("pricing plugin {name}"),
            DecidedBy::Default { .. } => "built-in default (which keeps the current price)".into(),
        },
        r.reason
    );
    Ok(axum::Json(OptimizeView {
        object: "pricing_recommendation",
        product_id: Some(product.id),
        currency: currency.code().to_string(),
        current_price: m(current_minor),
        recommended_price: m(r.recommended_price.amount_minor),
        recommended_price_minor: r.recommended_price.amount_minor,
        expected_impact: ExpectedImpact {
            revenue_change_percent: percent(r.revenue_change_basis_points),
            conversion_change_percent: percent(r.conversion_change_basis_points),
        },
        reason: r.reason.clone(),
        basis,
        evidence: Evidence { price_points },
        decided_by: DecidedByView::of(&decision),
    }))
}

/// Every plugin in the plugin folder: world, version, status, last error, calls, faults
/// and latency.
#[utoipa::path(
    get, path = "/api/v1/plugins", tag = "decisions",
    responses((status = 200, description = "`{object: list, data: [plugin]}`")),
    security(("api_key" = ["read"]))
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

/// Holds stored quote `quote_id` for a request of `customer_id` about to charge it, under
/// the gateway idempotency key of that charge (see [`quotes::claim`]); the quote's price
/// must be one-time (`recurring: false`) or recurring (`true`), as the caller charges it.
/// Quote `quote_id` of `customer_id`, read without holding it: what it would charge. Whether
/// it can still be used is for [`hold_quote`] to say.
pub async fn read_quote(
    state: &AppState,
    quote_id: &str,
    customer_id: &str,
) -> ApiResult<quotes::Quote> {
    if !ids::is_well_formed(prefix::QUOTE, quote_id) {
        return Err(AppError::invalid(
            "quote_id",
            "must be a quote id like quo_…",
        ));
    }
    match quotes::get(&state.store, quote_id).await? {
        None => Err(unusable(quote_id, quotes::Unusable::Missing)),
        Some(q) if q.customer_id != customer_id => {
            Err(unusable(quote_id, quotes::Unusable::OtherCustomer))
        }
        Some(q) => Ok(q),
    }
}

pub async fn hold_quote(
    state: &AppState,
    quote_id: &str,
    customer_id: &str,
    claim_key: &str,
    recurring: bool,
) -> ApiResult<quotes::Quote> {
    if !ids::is_well_formed(prefix::QUOTE, quote_id) {
        return Err(AppError::invalid(
            "quote_id",
            "must be a quote id like quo_…",
        ));
    }
    let hold = state.config.idempotency_lock_secs;
    let quote = match quotes::claim(
        &state.store,
        quote_id,
        customer_id,
        claim_key,
        business_now(state),
        hold,
    )
    .await?
    {
        Ok(q) => q,
        Err(why) => return Err(unusable(quote_id, why)),
    };
    let price = catalog::get_price(&state.store, &quote.price_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("price of {quote_id} missing")))?;
    if price.recurring.is_some() != recurring {
        quotes::release(&state.store, quote_id, claim_key).await?;
        return Err(AppError::invalid(
            "quote_id",
            if recurring {
                format!("quote {quote_id} is for a one-time price; pay it with a payment")
            } else {
                format!("quote {quote_id} is for a recurring price; use it to start a subscription")
            },
        ));
    }
    Ok(quote)
}

fn unusable(quote_id: &str, why: quotes::Unusable) -> AppError {
    let conflict = |code, message: String, details: serde_json::Map<String, serde_json::Value>| {
        AppError::Conflict {
            code,
            message,
            details,
        }
    };
    match why {
        quotes::Unusable::Missing => {
            AppError::invalid("quote_id", format!("no such quote: {quote_id}"))
        }
        quotes::Unusable::OtherCustomer => AppError::invalid(
            "quote_id",
            format!("quote {quote_id} was made for another customer"),
        ),
        quotes::Unusable::Expired => conflict(
            "quote_expired",
            format!("quote {quote_id} has expired; ask for a new quote"),
            serde_json::Map::new(),
        ),
        quotes::Unusable::Used(by) => conflict(
            "quote_used",
            format!("quote {quote_id} was already used by {by}; ask for a new quote"),
            serde_json::Map::from_iter([("used_by".to_string(), serde_json::json!(by))]),
        ),
        quotes::Unusable::InUse => conflict(
            "quote_in_use",
            format!("quote {quote_id} is being used by another request; retry later"),
            serde_json::Map::new(),
        ),
    }
}
