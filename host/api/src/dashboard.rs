//! The revenue dashboard's figures: overview, revenue series, customer metrics and marketing
//! metrics. Thin:
//! parse and check the range, make sure the aggregates include every event committed
//! before the request, ask `hephaestus_analytics::metrics`, render. Money in the reporting
//! currency is an exact decimal written as a JSON number; per currency, each figure is
//! given in major units and as an integer in minor units (`*_minor`), with the rate used.
//! Percentages are JSON numbers with two decimals. Every answer is also CSV (`?format=csv`
//! or `Accept: text/csv`), with the same figures written the same way. Definitions:
//! docs/api.md.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hephaestus_analytics::calendar::{self, Interval};
use hephaestus_analytics::metrics::{
    self, Amount, Converter, CustomerMetrics, MarketingMetrics, MrrForecast, MrrMovements,
    Overview, Period, Range, Revenue, Series,
};
use hephaestus_analytics::{AnalyticsError, Exact, Freshness};
use hephaestus_core::Timestamp;
use hephaestus_core::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::ReadKey;
use crate::csv::{self, Csv};
use crate::error::{ApiResult, AppError};
use crate::extract::Query;

/// The longest range one request may ask for: ten years of days.
pub const MAX_RANGE_DAYS: i64 = 3660;
/// How long an answer waits for events it cannot count yet (another host holds the
/// consumer, or an older transaction is still open); after that it answers with
/// `up_to_date: false`.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Field names that hold percentages: the OpenAPI document describes them as such.
pub const PERCENT_FIELDS: [&str; 11] = [
    "growth_rate_30d",
    "customer_growth_rate",
    "customer_churn_rate",
    "revenue_churn_rate",
    "gross_mrr_churn_rate",
    "net_mrr_churn_rate",
    "net_revenue_retention",
    "trial_to_paid",
    "signup_to_paid",
    "customer_retention",
    "mrr_retention",
];

/// Money fields in the reporting currency: the OpenAPI document says they are converted
/// sums, exact but not cut to the currency's decimals.
pub const CONVERTED_FIELDS: [&str; 12] = [
    "spend",
    "attributed_revenue",
    "mrr_lower",
    "mrr_upper",
    "total_revenue",
    "monthly_recurring_revenue",
    "arr",
    "arpa",
    "ltv",
    "cac",
    "avg_lifetime_value",
    "mrr",
];

impl From<AnalyticsError> for AppError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Store(e) => AppError::from(e),
            other => AppError::Internal(other.into()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First day of the range, `YYYY-MM-DD` (UTC). Default: 29 days before `to`.
    pub from: Option<String>,
    /// Last day of the range, included, `YYYY-MM-DD` (UTC). Default: today on the business
    /// clock.
    pub to: Option<String>,
    /// Report in this currency instead of the configured one.
    pub currency: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// First day of the range, `YYYY-MM-DD` (UTC). Default: 29 days before `to`.
    pub from: Option<String>,
    /// Last day of the range, included, `YYYY-MM-DD` (UTC). Default: today on the business
    /// clock.
    pub to: Option<String>,
    /// `day` (default), `week` (Monday to Sunday) or `month`; the first and last periods
    /// are cut to the range.
    pub interval: Option<String>,
    /// Report in this currency instead of the configured one.
    pub currency: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    pub format: Option<String>,
}

fn parse_day(text: &str, field: &str) -> ApiResult<i64> {
    calendar::parse_day(text).ok_or_else(|| {
        AppError::invalid(
            field,
            "must be a date as YYYY-MM-DD, from 1970-01-01 to 9999-12-31",
        )
    })
}

/// The range and reporting currency a request asks for, checked.
async fn resolve(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
    currency: Option<&str>,
) -> ApiResult<(Range, Currency)> {
    let reporting = match currency {
        Some(c) => Currency::parse(c, "currency")?,
        None => state.config.reporting_currency,
    };
    let to = match to {
        Some(t) => parse_day(t, "to")?,
        None => {
            calendar::day_of(hephaestus_billing::subscriptions::business_now(&state.store).await?)
        }
    };
    let from = match from {
        Some(f) => parse_day(f, "from")?,
        None => to - (metrics::WINDOW_DAYS - 1),
    };
    if from > to {
        return Err(AppError::invalid("from", "must not be after `to`"));
    }
    if to - from + 1 > MAX_RANGE_DAYS {
        return Err(AppError::invalid(
            "from",
            format!("the range may span at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok((Range { from, to }, reporting))
}

/// Makes the aggregates include every event committed before now.
async fn freshen(state: &AppState) -> ApiResult<Freshness> {
    Ok(state.analytics.current(&state.store, CATCH_UP_WAIT).await?)
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text)
        .unwrap_or_else(|_| RawValue::from_string("0".into()).unwrap_or_default())
}

/// Money in the reporting currency: exact, with at least the currency's decimals.
fn money_number(e: Exact, reporting: Currency) -> Box<RawValue> {
    raw(e.to_text(reporting.exponent()))
}

fn percent_number(e: Option<Exact>) -> Option<Box<RawValue>> {
    e.map(|e| raw(e.to_text(2)))
}

fn minor_number(minor: i64, currency: Currency) -> Box<RawValue> {
    raw(Money { minor, currency }.major_string())
}

/// Which side of a figure a view shows: the reporting-currency total, or one currency's.
#[derive(Debug, Clone, Copy)]
enum Side {
    Total(Currency),
    Currency(Currency),
}

impl Side {
    fn pick(self, a: &Amount) -> (Box<RawValue>, Option<i64>) {
        match self {
            Side::Total(reporting) => (money_number(a.total, reporting), None),
            Side::Currency(c) => {
                let minor = a
                    .by_currency
                    .iter()
                    .find(|(cur, _)| *cur == c)
                    .map_or(0, |(_, m)| *m);
                (minor_number(minor, c), Some(minor))
            }
        }
    }
}

/// MRR at the start and end of a run of days and what moved it:
/// `end = start + new + expansion + reactivation − contraction − churn`, exactly. In the
/// reporting currency the figures are converted sums (exact, possibly with more decimals
/// than the currency) and have no `*_minor`; per currency they are in that currency, with
/// `*_minor`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementsView {
    #[schema(value_type = f64)]
    pub start: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub new: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub expansion: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expansion_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub contraction: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contraction_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub churn: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub reactivation: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactivation_minor: Option<i64>,
    /// new + expansion + reactivation − contraction − churn.
    #[schema(value_type = f64)]
    pub net: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub end: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_minor: Option<i64>,
}

impl MovementsView {
    /// (name, value, value in minor units) of each figure, in order.
    fn fields(&self) -> [(&'static str, &RawValue, Option<i64>); 8] {
        [
            ("start", &self.start, self.start_minor),
            ("new", &self.new, self.new_minor),
            ("expansion", &self.expansion, self.expansion_minor),
            ("contraction", &self.contraction, self.contraction_minor),
            ("churn", &self.churn, self.churn_minor),
            ("reactivation", &self.reactivation, self.reactivation_minor),
            ("net", &self.net, self.net_minor),
            ("end", &self.end, self.end_minor),
        ]
    }

    fn of(m: &MrrMovements, side: Side) -> Self {
        let (start, start_minor) = side.pick(&m.start);
        let (new, new_minor) = side.pick(&m.new);
        let (expansion, expansion_minor) = side.pick(&m.expansion);
        let (contraction, contraction_minor) = side.pick(&m.contraction);
        let (churn, churn_minor) = side.pick(&m.churn);
        let (reactivation, reactivation_minor) = side.pick(&m.reactivation);
        let (net, net_minor) = side.pick(&m.net);
        let (end, end_minor) = side.pick(&m.end);
        MovementsView {
            start,
            start_minor,
            new,
            new_minor,
            expansion,
            expansion_minor,
            contraction,
            contraction_minor,
            churn,
            churn_minor,
            reactivation,
            reactivation_minor,
            net,
            net_minor,
            end,
            end_minor,
        }
    }
}

/// Money received over a run of days: succeeded payments (`gross`), refunds, money taken
/// by disputes, and what is left (`net`). In the reporting currency: converted sums with no
/// `*_minor`; per currency: in that currency, with `*_minor`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueView {
    pub payments: i64,
    #[schema(value_type = f64)]
    pub gross: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gross_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub refunds: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub disputes: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disputes_minor: Option<i64>,
    #[schema(value_type = f64)]
    pub net: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_minor: Option<i64>,
}

impl RevenueView {
    /// (name, value, value in minor units) of each money figure, in order.
    fn fields(&self) -> [(&'static str, &RawValue, Option<i64>); 4] {
        [
            ("gross", &self.gross, self.gross_minor),
            ("refunds", &self.refunds, self.refunds_minor),
            ("disputes", &self.disputes, self.disputes_minor),
            ("net", &self.net, self.net_minor),
        ]
    }

    /// `payments` counts every currency's payments for the total, one currency's for it.
    fn of(r: &Revenue, side: Side, payments: i64) -> Self {
        let (gross, gross_minor) = side.pick(&r.gross);
        let (refunds, refunds_minor) = side.pick(&r.refunds);
        let (disputes, disputes_minor) = side.pick(&r.disputes);
        let (net, net_minor) = side.pick(&r.net);
        RevenueView {
            payments,
            gross,
            gross_minor,
            refunds,
            refunds_minor,
            disputes,
            disputes_minor,
            net,
            net_minor,
        }
    }
}

/// How one currency is converted into the reporting currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyRateView {
    pub currency: &'static str,
    /// The factor applied (1 unit = `rate` units of the reporting currency): the newest
    /// stored rate of the pair, or the reverse pair's inverted and rounded to 12 decimals.
    /// Null when no rate links the currency to the reporting currency: its figures are
    /// then left out of the reporting-currency totals.
    pub rate: Option<String>,
    /// The stored rate used (`fx_…`); null for the reporting currency itself.
    pub rate_id: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub rate_set_at: Option<Timestamp>,
    /// Whether the stored rate was the reverse pair's.
    pub rate_inverted: bool,
}

fn rate_views(cv: &Converter) -> Vec<CurrencyRateView> {
    cv.currencies
        .iter()
        .map(|c| CurrencyRateView {
            currency: c.currency.code(),
            rate: c.rate.as_ref().map(|r| r.factor.to_text(0)),
            rate_id: c.rate.as_ref().and_then(|r| r.rate_id.clone()),
            rate_set_at: c
                .rate
                .as_ref()
                .and_then(|r| r.set_at)
                .map(Timestamp::from_micros),
            rate_inverted: c.rate.as_ref().is_some_and(|r| r.inverted),
        })
        .collect()
}

fn missing(cv: &Converter) -> Vec<&'static str> {
    cv.missing().into_iter().map(Currency::code).collect()
}

/// Conversion rates (percentages).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversionView {
    /// Trials that converted ÷ trials that ended in the range.
    #[schema(value_type = Option<f64>)]
    pub trial_to_paid: Option<Box<RawValue>>,
    /// Of the customers who signed up in the range, those who have paid since.
    #[schema(value_type = Option<f64>)]
    pub signup_to_paid: Option<Box<RawValue>>,
}

/// One currency's share of the overview, in that currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyOverviewView {
    pub currency: &'static str,
    #[schema(value_type = f64)]
    pub total_revenue: Box<RawValue>,
    pub total_revenue_minor: i64,
    #[schema(value_type = f64)]
    pub monthly_recurring_revenue: Box<RawValue>,
    pub monthly_recurring_revenue_minor: i64,
    #[schema(value_type = f64)]
    pub arr: Box<RawValue>,
    pub arr_minor: i64,
    pub mrr_movements: MovementsView,
    pub revenue: RevenueView,
    /// How it is converted into the reporting currency.
    pub exchange: CurrencyRateView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewView {
    /// `dashboard_overview`
    pub object: &'static str,
    /// The range's first and last day (UTC), both included.
    #[schema(example = "2026-01-01")]
    pub from: String,
    pub to: String,
    pub reporting_currency: &'static str,
    /// Every successful payment up to `to`, less refunds and money taken by disputes.
    #[schema(value_type = f64)]
    pub total_revenue: Box<RawValue>,
    /// MRR at the end of `to`.
    #[schema(value_type = f64)]
    pub monthly_recurring_revenue: Box<RawValue>,
    /// MRR × 12.
    #[schema(value_type = f64)]
    pub arr: Box<RawValue>,
    /// (MRR at `to` − MRR 30 days earlier) ÷ MRR 30 days earlier; null when that was 0.
    #[schema(value_type = Option<f64>)]
    pub growth_rate_30d: Option<Box<RawValue>>,
    /// Customers with a live subscription (trialing, active or past due) at `to`.
    pub active_customers: i64,
    /// Customers with MRR at `to`.
    pub paying_customers: i64,
    /// MRR ÷ paying customers; null when there are none.
    #[schema(value_type = Option<f64>)]
    pub arpa: Option<Box<RawValue>>,
    /// Customers who stopped paying in the range ÷ paying customers at its start.
    #[schema(value_type = Option<f64>)]
    pub customer_churn_rate: Option<Box<RawValue>>,
    /// (churned + contraction MRR) ÷ MRR at the range's start.
    #[schema(value_type = Option<f64>)]
    pub revenue_churn_rate: Option<Box<RawValue>>,
    /// ARPA ÷ the monthly customer churn of the 30 days ending at `to`; null when that
    /// churn is 0.
    #[schema(value_type = Option<f64>)]
    pub ltv: Option<Box<RawValue>>,
    /// Marketing spend in the range ÷ customers whose first payment succeeded in it; null
    /// when no spend is recorded for the range or no one paid for the first time.
    #[schema(value_type = Option<f64>)]
    pub cac: Option<Box<RawValue>>,
    pub conversion_rate: ConversionView,
    /// MRR at the start and end of the range and what moved it.
    pub mrr_movements: MovementsView,
    /// Money received in the range.
    pub revenue: RevenueView,
    pub by_currency: Vec<CurrencyOverviewView>,
    /// Currencies with figures but no rate to the reporting currency: left out of its
    /// totals.
    pub missing_rates: Vec<&'static str>,
    /// Whether every event committed before the request is counted.
    pub up_to_date: bool,
}

fn overview_view(o: &Overview, fresh: Freshness) -> OverviewView {
    let reporting = o.converter.reporting;
    let total = Side::Total(reporting);
    let by_currency = o
        .converter
        .currencies
        .iter()
        .zip(rate_views(&o.converter))
        .map(|(c, exchange)| {
            let side = Side::Currency(c.currency);
            let minor = |a: &Amount| side.pick(a);
            let (total_revenue, total_revenue_minor) = minor(&o.total_revenue);
            let (mrr, mrr_minor) = minor(&o.mrr);
            let (arr, arr_minor) = minor(&o.arr);
            CurrencyOverviewView {
                currency: c.currency.code(),
                total_revenue,
                total_revenue_minor: total_revenue_minor.unwrap_or(0),
                monthly_recurring_revenue: mrr,
                monthly_recurring_revenue_minor: mrr_minor.unwrap_or(0),
                arr,
                arr_minor: arr_minor.unwrap_or(0),
                mrr_movements: MovementsView::of(&o.movements, side),
                revenue: RevenueView::of(&o.revenue, side, o.revenue.payments_in(c.currency)),
                exchange,
            }
        })
        .collect();
    OverviewView {
        object: "dashboard_overview",
        from: calendar::day_text(o.range.from),
        to: calendar::day_text(o.range.to),
        reporting_currency: reporting.code(),
        total_revenue: total.pick(&o.total_revenue).0,
        monthly_recurring_revenue: total.pick(&o.mrr).0,
        arr: total.pick(&o.arr).0,
        growth_rate_30d: percent_number(o.growth_rate_30d),
        active_customers: o.active_customers,
        paying_customers: o.paying_customers,
        arpa: o.arpa.map(|a| money_number(a, reporting)),
        customer_churn_rate: percent_number(o.customer_churn_rate),
        revenue_churn_rate: percent_number(o.revenue_churn_rate),
        ltv: o.ltv.map(|a| money_number(a, reporting)),
        cac: o.cac.map(|a| money_number(a, reporting)),
        conversion_rate: ConversionView {
            trial_to_paid: percent_number(o.trial_to_paid_rate),
            signup_to_paid: percent_number(o.signup_to_paid_rate),
        },
        mrr_movements: MovementsView::of(&o.movements, total),
        revenue: RevenueView::of(&o.revenue, total, o.revenue.payments),
        by_currency,
        missing_rates: missing(&o.converter),
        up_to_date: fresh.is_current(),
    }
}

/// The headline figures over a range (default: the last 30 days): revenue, MRR, growth,
/// customers, churn, LTV, conversion and the range's MRR movements, in the reporting
/// currency and per currency.
#[utoipa::path(
    get, path = "/api/v1/dashboard/overview", tag = "dashboard", params(RangeParams),
    responses((status = 200, description = "The overview, as JSON or CSV", content((OverviewView = "application/json"), (String = "text/csv"))), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn overview(
    State(state): State<AppState>,
    _auth: ReadKey,
    headers: HeaderMap,
    Query(p): Query<RangeParams>,
) -> ApiResult<Response> {
    let as_csv = csv::wanted(p.format.as_deref(), &headers)?;
    let (range, reporting) = resolve(
        &state,
        p.from.as_deref(),
        p.to.as_deref(),
        p.currency.as_deref(),
    )
    .await?;
    let fresh = freshen(&state).await?;
    let o = metrics::overview(&state.store, range, reporting).await?;
    let view = overview_view(&o, fresh);
    Ok(if as_csv {
        overview_csv(&view).into_response(&format!("overview-{}-{}.csv", view.from, view.to))
    } else {
        axum::Json(view).into_response()
    })
}

fn text(v: Option<&RawValue>) -> &str {
    v.map_or("", RawValue::get)
}

/// One row per figure: `scope` is `total` (in the reporting currency) or `currency` (in
/// that currency, with its minor units).
fn overview_csv(v: &OverviewView) -> Csv {
    let mut out = Csv::new(&["scope", "currency", "figure", "value", "value_minor"]);
    let total = |out: &mut Csv, figure: &str, value: &str| {
        out.row(["total", v.reporting_currency, figure, value, ""]);
    };
    let counts = [
        ("active_customers", v.active_customers.to_string()),
        ("paying_customers", v.paying_customers.to_string()),
        ("revenue.payments", v.revenue.payments.to_string()),
    ];
    total(&mut out, "total_revenue", v.total_revenue.get());
    total(
        &mut out,
        "monthly_recurring_revenue",
        v.monthly_recurring_revenue.get(),
    );
    total(&mut out, "arr", v.arr.get());
    total(
        &mut out,
        "growth_rate_30d",
        text(v.growth_rate_30d.as_deref()),
    );
    total(&mut out, "arpa", text(v.arpa.as_deref()));
    total(
        &mut out,
        "customer_churn_rate",
        text(v.customer_churn_rate.as_deref()),
    );
    total(
        &mut out,
        "revenue_churn_rate",
        text(v.revenue_churn_rate.as_deref()),
    );
    total(&mut out, "ltv", text(v.ltv.as_deref()));
    total(&mut out, "cac", text(v.cac.as_deref()));
    let conversion = &v.conversion_rate;
    total(
        &mut out,
        "conversion_rate.trial_to_paid",
        text(conversion.trial_to_paid.as_deref()),
    );
    total(
        &mut out,
        "conversion_rate.signup_to_paid",
        text(conversion.signup_to_paid.as_deref()),
    );
    for (figure, n) in &counts {
        total(&mut out, figure, n);
    }
    for (name, value, _) in v.mrr_movements.fields() {
        total(&mut out, &format!("mrr_movements.{name}"), value.get());
    }
    for (name, value, _) in v.revenue.fields() {
        total(&mut out, &format!("revenue.{name}"), value.get());
    }
    for c in &v.by_currency {
        let mut row = |figure: &str, value: &str, minor: Option<i64>| {
            let minor = minor.map(|m| m.to_string()).unwrap_or_default();
            out.row(["currency", c.currency, figure, value, &minor]);
        };
        row(
            "exchange.rate",
            c.exchange.rate.as_deref().unwrap_or(""),
            None,
        );
        row(
            "total_revenue",
            c.total_revenue.get(),
            Some(c.total_revenue_minor),
        );
        row(
            "monthly_recurring_revenue",
            c.monthly_recurring_revenue.get(),
            Some(c.monthly_recurring_revenue_minor),
        );
        row("arr", c.arr.get(), Some(c.arr_minor));
        row("revenue.payments", &c.revenue.payments.to_string(), None);
        for (name, value, minor) in c.mrr_movements.fields() {
            row(&format!("mrr_movements.{name}"), value.get(), minor);
        }
        for (name, value, minor) in c.revenue.fields() {
            row(&format!("revenue.{name}"), value.get(), minor);
        }
    }
    out
}

/// One currency's share of a period, in that currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyPeriodView {
    pub currency: &'static str,
    pub mrr: MovementsView,
    pub revenue: RevenueView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodView {
    /// The period's first and last day (UTC), both included.
    pub from: String,
    pub to: String,
    pub mrr: MovementsView,
    /// (churn + contraction) ÷ MRR at the period's start.
    #[schema(value_type = Option<f64>)]
    pub gross_mrr_churn_rate: Option<Box<RawValue>>,
    /// (churn + contraction − expansion − reactivation) ÷ MRR at the period's start.
    #[schema(value_type = Option<f64>)]
    pub net_mrr_churn_rate: Option<Box<RawValue>>,
    /// (MRR at the start + expansion − contraction − churn) ÷ MRR at the start.
    #[schema(value_type = Option<f64>)]
    pub net_revenue_retention: Option<Box<RawValue>>,
    pub revenue: RevenueView,
    pub by_currency: Vec<CurrencyPeriodView>,
}

fn period_view(p: &Period, cv: &Converter) -> PeriodView {
    let total = Side::Total(cv.reporting);
    PeriodView {
        from: calendar::day_text(p.from),
        to: calendar::day_text(p.to),
        mrr: MovementsView::of(&p.mrr, total),
        gross_mrr_churn_rate: percent_number(p.rates.gross_mrr_churn_rate),
        net_mrr_churn_rate: percent_number(p.rates.net_mrr_churn_rate),
        net_revenue_retention: percent_number(p.rates.net_revenue_retention),
        revenue: RevenueView::of(&p.revenue, total, p.revenue.payments),
        by_currency: cv
            .currencies
            .iter()
            .map(|c| {
                let side = Side::Currency(c.currency);
                CurrencyPeriodView {
                    currency: c.currency.code(),
                    mrr: MovementsView::of(&p.mrr, side),
                    revenue: RevenueView::of(&p.revenue, side, p.revenue.payments_in(c.currency)),
                }
            })
            .collect(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastMonthView {
    /// `YYYY-MM`
    pub month: String,
    /// Forecast MRR at the month's end, in the reporting currency.
    #[schema(value_type = f64)]
    pub mrr: Box<RawValue>,
    /// The 95 % prediction interval (the lower bound never below 0).
    #[schema(value_type = f64)]
    pub mrr_lower: Box<RawValue>,
    #[schema(value_type = f64)]
    pub mrr_upper: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MonthMrrView {
    /// `YYYY-MM`
    pub month: String,
    /// MRR at the month's end (at `to` for its month), in the reporting currency.
    #[schema(value_type = f64)]
    pub mrr: Box<RawValue>,
}

/// The next 3 months of MRR by Holt's linear trend method (double exponential smoothing)
/// over month-end MRR, with its smoothing parameters chosen from 0.1 to 0.9 by the least
/// squared one-step error, and a 95 % interval of ±1.96 σ_h (docs/api.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastView {
    /// `holt_linear`
    pub method: &'static str,
    /// Level smoothing.
    #[schema(value_type = f64)]
    pub alpha: Box<RawValue>,
    /// Trend smoothing.
    #[schema(value_type = f64)]
    pub beta: Box<RawValue>,
    /// The month-end MRR it learned from (up to 24 months, from the first with MRR).
    pub history: Vec<MonthMrrView>,
    pub months: Vec<ForecastMonthView>,
}

fn forecast_view(f: &MrrForecast, reporting: Currency) -> ForecastView {
    let money = |e: Exact| money_number(e.round(reporting.exponent()).unwrap_or(e), reporting);
    ForecastView {
        method: "holt_linear",
        alpha: raw(f.alpha.to_text(1)),
        beta: raw(f.beta.to_text(1)),
        history: f
            .history
            .iter()
            .map(|(month, mrr)| MonthMrrView {
                month: calendar::month_text(*month),
                mrr: money_number(*mrr, reporting),
            })
            .collect(),
        months: f
            .months
            .iter()
            .map(|m| ForecastMonthView {
                month: calendar::month_text(m.month),
                mrr: money(m.mrr),
                mrr_lower: money(m.lower),
                mrr_upper: money(m.upper),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    /// `revenue_metrics`
    pub object: &'static str,
    pub from: String,
    pub to: String,
    /// `day`, `week` or `month`.
    pub interval: &'static str,
    pub reporting_currency: &'static str,
    /// One per period, oldest first; each period's `mrr.start` is the previous one's
    /// `mrr.end`.
    pub periods: Vec<PeriodView>,
    /// The whole range as one period.
    pub total: PeriodView,
    /// Null with fewer than 3 months of MRR to learn from.
    pub forecast: Option<ForecastView>,
    pub currencies: Vec<CurrencyRateView>,
    pub missing_rates: Vec<&'static str>,
    pub up_to_date: bool,
}

fn series_view(s: &Series, fresh: Freshness) -> SeriesView {
    SeriesView {
        object: "revenue_metrics",
        from: calendar::day_text(s.range.from),
        to: calendar::day_text(s.range.to),
        interval: s.interval.as_str(),
        reporting_currency: s.converter.reporting.code(),
        periods: s
            .periods
            .iter()
            .map(|p| period_view(p, &s.converter))
            .collect(),
        total: period_view(&s.total, &s.converter),
        forecast: s
            .forecast
            .as_ref()
            .map(|f| forecast_view(f, s.converter.reporting)),
        currencies: rate_views(&s.converter),
        missing_rates: missing(&s.converter),
        up_to_date: fresh.is_current(),
    }
}

/// Revenue, refunds, MRR and its movements period by period, with MRR churn and net
/// revenue retention; in every period `end = start + new + expansion + reactivation −
/// contraction − churn` holds exactly. With a forecast of the next 3 months of MRR.
#[utoipa::path(
    get, path = "/api/v1/dashboard/revenue-metrics", tag = "dashboard", params(SeriesParams),
    responses((status = 200, description = "The series, as JSON or CSV", content((SeriesView = "application/json"), (String = "text/csv"))), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn revenue_metrics(
    State(state): State<AppState>,
    _auth: ReadKey,
    headers: HeaderMap,
    Query(p): Query<SeriesParams>,
) -> ApiResult<Response> {
    let as_csv = csv::wanted(p.format.as_deref(), &headers)?;
    let (range, reporting) = resolve(
        &state,
        p.from.as_deref(),
        p.to.as_deref(),
        p.currency.as_deref(),
    )
    .await?;
    let interval = match p.interval.as_deref() {
        None => Interval::Day,
        Some(text) => Interval::parse(text)
            .ok_or_else(|| AppError::invalid("interval", "must be day, week or month"))?,
    };
    let fresh = freshen(&state).await?;
    let s = metrics::revenue_series(&state.store, range, interval, reporting).await?;
    let view = series_view(&s, fresh);
    Ok(if as_csv {
        series_csv(&view).into_response(&format!(
            "revenue-metrics-{}-{}-{}.csv",
            view.interval, view.from, view.to
        ))
    } else {
        axum::Json(view).into_response()
    })
}

/// One row per period and scope (`total` in the reporting currency, then each currency),
/// the whole range last (`from`, `to` of the range, `scope` `range_total`/`range_currency`).
fn series_csv(v: &SeriesView) -> Csv {
    let mut out = Csv::new(&[
        "from",
        "to",
        "scope",
        "currency",
        "mrr_start",
        "new",
        "expansion",
        "contraction",
        "churn",
        "reactivation",
        "net",
        "mrr_end",
        "gross_mrr_churn_rate",
        "net_mrr_churn_rate",
        "net_revenue_retention",
        "payments",
        "revenue_gross",
        "refunds",
        "disputes",
        "revenue_net",
    ]);
    let mut period = |p: &PeriodView, total: &str, each: &str| {
        let rates = [
            text(p.gross_mrr_churn_rate.as_deref()),
            text(p.net_mrr_churn_rate.as_deref()),
            text(p.net_revenue_retention.as_deref()),
        ];
        let mut row = |scope: &str,
                       currency: &str,
                       mrr: &MovementsView,
                       revenue: &RevenueView,
                       rates: [&str; 3]| {
            let payments = revenue.payments.to_string();
            let fields = [p.from.as_str(), p.to.as_str(), scope, currency]
                .into_iter()
                .chain(mrr.fields().map(|(_, value, _)| value.get()))
                .chain(rates)
                .chain([payments.as_str()])
                .chain(revenue.fields().map(|(_, value, _)| value.get()));
            out.row(fields);
        };
        row(total, v.reporting_currency, &p.mrr, &p.revenue, rates);
        for c in &p.by_currency {
            row(each, c.currency, &c.mrr, &c.revenue, ["", "", ""]);
        }
    };
    for p in &v.periods {
        period(p, "total", "currency");
    }
    period(&v.total, "range_total", "range_currency");
    out
}

/// Customers who signed up in the range and how far they have come since.
#[derive(Debug, Serialize, ToSchema)]
pub struct LifecycleView {
    pub registered: i64,
    /// Started a subscription (a trial counts).
    pub activated: i64,
    /// Made a successful payment.
    pub revenue: i64,
    /// Have MRR now.
    pub retained: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrialsView {
    pub started: i64,
    pub converted: i64,
    /// Ended without a paid period.
    pub lapsed: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentView {
    pub segment: String,
    pub customers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyMrrView {
    pub currency: &'static str,
    #[schema(value_type = f64)]
    pub mrr: Box<RawValue>,
    pub mrr_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CohortMonthView {
    /// `YYYY-MM`
    pub month: String,
    /// Of the cohort, customers paying at the end of this month.
    pub customers: i64,
    /// `customers` ÷ the cohort's size.
    #[schema(value_type = Option<f64>)]
    pub customer_retention: Option<Box<RawValue>>,
    /// The cohort's MRR at the end of this month, in the reporting currency.
    #[schema(value_type = f64)]
    pub mrr: Box<RawValue>,
    /// `mrr` ÷ the cohort's MRR at the end of its first month.
    #[schema(value_type = Option<f64>)]
    pub mrr_retention: Option<Box<RawValue>>,
    pub by_currency: Vec<CurrencyMrrView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CohortView {
    /// The month its customers first had MRR, `YYYY-MM`.
    pub cohort: String,
    /// Paying at the end of that month.
    pub customers: i64,
    pub months: Vec<CohortMonthView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerMetricsView {
    /// `customer_metrics`
    pub object: &'static str,
    pub from: String,
    pub to: String,
    pub reporting_currency: &'static str,
    /// (paying customers at `to` − at the range's start) ÷ paying customers at its start.
    #[schema(value_type = Option<f64>)]
    pub customer_growth_rate: Option<Box<RawValue>>,
    /// LTV: ARPA ÷ the monthly customer churn of the 30 days ending at `to`; null when
    /// that churn is 0.
    #[schema(value_type = Option<f64>)]
    pub avg_lifetime_value: Option<Box<RawValue>>,
    #[schema(value_type = Option<f64>)]
    pub arpa: Option<Box<RawValue>>,
    #[schema(value_type = Option<f64>)]
    pub customer_churn_rate: Option<Box<RawValue>>,
    /// Paying customers (with MRR) at the range's start (the end of the day before).
    pub paying_customers_start: i64,
    pub paying_customers: i64,
    pub active_customers: i64,
    pub signups: i64,
    /// First had MRR in the range.
    pub new_customers: i64,
    pub reactivated_customers: i64,
    pub churned_customers: i64,
    pub trials: TrialsView,
    pub lifecycle: LifecycleView,
    /// Customers per segment tag, as last computed.
    pub segments: Vec<SegmentView>,
    /// Monthly cohorts that started in the range: paying customers and MRR month by month.
    pub cohorts: Vec<CohortView>,
    pub currencies: Vec<CurrencyRateView>,
    pub missing_rates: Vec<&'static str>,
    pub up_to_date: bool,
}

fn customers_view(m: &CustomerMetrics, fresh: Freshness) -> CustomerMetricsView {
    let reporting = m.converter.reporting;
    CustomerMetricsView {
        object: "customer_metrics",
        from: calendar::day_text(m.range.from),
        to: calendar::day_text(m.range.to),
        reporting_currency: reporting.code(),
        customer_growth_rate: percent_number(m.customer_growth_rate),
        avg_lifetime_value: m.avg_lifetime_value.map(|v| money_number(v, reporting)),
        arpa: m.arpa.map(|v| money_number(v, reporting)),
        customer_churn_rate: percent_number(m.customer_churn_rate),
        paying_customers_start: m.paying_at_start,
        paying_customers: m.paying_customers,
        active_customers: m.active_customers,
        signups: m.counts.signups,
        new_customers: m.counts.new_customers,
        reactivated_customers: m.counts.reactivated,
        churned_customers: m.counts.churned,
        trials: TrialsView {
            started: m.counts.trials_started,
            converted: m.counts.trials_converted,
            lapsed: m.counts.trials_lapsed,
        },
        lifecycle: LifecycleView {
            registered: m.funnel.registered,
            activated: m.funnel.activated,
            revenue: m.funnel.paid,
            retained: m.funnel.retained,
        },
        segments: m
            .segments
            .iter()
            .map(|(segment, customers)| SegmentView {
                segment: segment.clone(),
                customers: *customers,
            })
            .collect(),
        cohorts: m
            .cohorts
            .iter()
            .map(|c| CohortView {
                cohort: calendar::month_text(c.month),
                customers: c.customers,
                months: c
                    .months
                    .iter()
                    .map(|month| CohortMonthView {
                        month: calendar::month_text(month.month),
                        customers: month.customers,
                        customer_retention: percent_number(month.customer_retention),
                        mrr: money_number(month.mrr.total, reporting),
                        mrr_retention: percent_number(month.mrr_retention),
                        by_currency: month
                            .mrr
                            .by_currency
                            .iter()
                            .map(|(currency, minor)| CurrencyMrrView {
                                currency: currency.code(),
                                mrr: minor_number(*minor, *currency),
                                mrr_minor: *minor,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        currencies: rate_views(&m.converter),
        missing_rates: missing(&m.converter),
        up_to_date: fresh.is_current(),
    }
}

/// Customers over a range: growth, lifetime value, new, churned and reactivated customers,
/// trials, the signup lifecycle, segments and monthly cohort retention.
#[utoipa::path(
    get, path = "/api/v1/dashboard/customer-metrics", tag = "dashboard", params(RangeParams),
    responses((status = 200, description = "The customer metrics, as JSON or CSV", content((CustomerMetricsView = "application/json"), (String = "text/csv"))), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn customer_metrics(
    State(state): State<AppState>,
    _auth: ReadKey,
    headers: HeaderMap,
    Query(p): Query<RangeParams>,
) -> ApiResult<Response> {
    let as_csv = csv::wanted(p.format.as_deref(), &headers)?;
    let (range, reporting) = resolve(
        &state,
        p.from.as_deref(),
        p.to.as_deref(),
        p.currency.as_deref(),
    )
    .await?;
    let fresh = freshen(&state).await?;
    let m = metrics::customer_metrics(&state.store, range, reporting).await?;
    let view = customers_view(&m, fresh);
    Ok(if as_csv {
        customers_csv(&view)
            .into_response(&format!("customer-metrics-{}-{}.csv", view.from, view.to))
    } else {
        axum::Json(view).into_response()
    })
}

/// One row per figure; cohort figures name their cohort and month.
fn customers_csv(v: &CustomerMetricsView) -> Csv {
    let mut out = Csv::new(&["figure", "cohort", "month", "value"]);
    let mut row = |figure: &str, cohort: &str, month: &str, value: &str| {
        out.row([figure, cohort, month, value]);
    };
    for (figure, value) in [
        ("customer_growth_rate", &v.customer_growth_rate),
        ("avg_lifetime_value", &v.avg_lifetime_value),
        ("arpa", &v.arpa),
        ("customer_churn_rate", &v.customer_churn_rate),
    ] {
        row(figure, "", "", text(value.as_deref()));
    }
    for (figure, n) in [
        ("paying_customers_start", v.paying_customers_start),
        ("paying_customers", v.paying_customers),
        ("active_customers", v.active_customers),
        ("signups", v.signups),
        ("new_customers", v.new_customers),
        ("reactivated_customers", v.reactivated_customers),
        ("churned_customers", v.churned_customers),
        ("trials.started", v.trials.started),
        ("trials.converted", v.trials.converted),
        ("trials.lapsed", v.trials.lapsed),
        ("lifecycle.registered", v.lifecycle.registered),
        ("lifecycle.activated", v.lifecycle.activated),
        ("lifecycle.revenue", v.lifecycle.revenue),
        ("lifecycle.retained", v.lifecycle.retained),
    ] {
        row(figure, "", "", &n.to_string());
    }
    for s in &v.segments {
        row(
            &format!("segments.{}", s.segment),
            "",
            "",
            &s.customers.to_string(),
        );
    }
    for c in &v.cohorts {
        row("cohorts.customers", &c.cohort, "", &c.customers.to_string());
        for m in &c.months {
            row(
                "cohorts.months.customers",
                &c.cohort,
                &m.month,
                &m.customers.to_string(),
            );
            row(
                "cohorts.months.customer_retention",
                &c.cohort,
                &m.month,
                text(m.customer_retention.as_deref()),
            );
            row("cohorts.months.mrr", &c.cohort, &m.month, m.mrr.get());
            row(
                "cohorts.months.mrr_retention",
                &c.cohort,
                &m.month,
                text(m.mrr_retention.as_deref()),
            );
        }
    }
    out
}

/// One channel's spend in the range.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub channel: String,
    /// In the reporting currency.
    #[schema(value_type = f64)]
    pub spend: Box<RawValue>,
    pub by_currency: Vec<CurrencySpendView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencySpendView {
    pub currency: &'static str,
    #[schema(value_type = f64)]
    pub spend: Box<RawValue>,
    pub spend_minor: i64,
}

/// A campaign's results. Campaigns come with email (templates, segments, sends): until they
/// exist there are none to list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    pub campaign_id: String,
    pub name: String,
    /// The campaign's type.
    pub campaign_type: String,
    pub sends: i64,
    pub opens: i64,
    pub clicks: i64,
    pub conversions: i64,
    #[schema(value_type = f64)]
    pub attributed_revenue: Box<RawValue>,
    /// (attributed revenue − spend) ÷ spend; null without spend.
    #[schema(value_type = Option<f64>)]
    pub roi_percent: Option<Box<RawValue>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketingMetricsView {
    /// `marketing_metrics`
    pub object: &'static str,
    pub from: String,
    pub to: String,
    pub reporting_currency: &'static str,
    /// Marketing spend in the range (each entry pro rata by the days of its period in the
    /// range); null when none is recorded for it.
    #[schema(value_type = Option<f64>)]
    pub spend: Option<Box<RawValue>>,
    /// Customers whose first payment succeeded in the range.
    pub new_paying_customers: i64,
    /// `spend` ÷ `new_paying_customers`; null when either is missing or zero customers.
    #[schema(value_type = Option<f64>)]
    pub cac: Option<Box<RawValue>>,
    pub channels: Vec<ChannelView>,
    /// Per campaign: none until email campaigns exist.
    pub campaigns: Vec<CampaignView>,
    pub currencies: Vec<CurrencyRateView>,
    pub missing_rates: Vec<&'static str>,
    pub up_to_date: bool,
}

fn marketing_view(m: &MarketingMetrics, fresh: Freshness) -> MarketingMetricsView {
    let reporting = m.converter.reporting;
    MarketingMetricsView {
        object: "marketing_metrics",
        from: calendar::day_text(m.range.from),
        to: calendar::day_text(m.range.to),
        reporting_currency: reporting.code(),
        spend: m.spend.as_ref().map(|a| money_number(a.total, reporting)),
        new_paying_customers: m.new_paying_customers,
        cac: m.cac.map(|a| money_number(a, reporting)),
        channels: m
            .channels
            .iter()
            .map(|(channel, amount)| ChannelView {
                channel: channel.clone(),
                spend: money_number(amount.total, reporting),
                by_currency: amount
                    .by_currency
                    .iter()
                    .filter(|(_, minor)| *minor != 0)
                    .map(|(currency, minor)| CurrencySpendView {
                        currency: currency.code(),
                        spend: minor_number(*minor, *currency),
                        spend_minor: *minor,
                    })
                    .collect(),
            })
            .collect(),
        campaigns: Vec::new(),
        currencies: rate_views(&m.converter),
        missing_rates: missing(&m.converter),
        up_to_date: fresh.is_current(),
    }
}

/// One row per figure: the totals, then each channel's spend in the reporting currency and
/// in each currency it was entered in.
fn marketing_csv(v: &MarketingMetricsView) -> Csv {
    let mut out = Csv::new(&["figure", "channel", "currency", "value", "value_minor"]);
    let reporting = v.reporting_currency;
    out.row(["spend", "", reporting, text(v.spend.as_deref()), ""]);
    out.row([
        "new_paying_customers",
        "",
        "",
        &v.new_paying_customers.to_string(),
        "",
    ]);
    out.row(["cac", "", reporting, text(v.cac.as_deref()), ""]);
    for c in &v.channels {
        out.row(["channels.spend", &c.channel, reporting, c.spend.get(), ""]);
        for by in &c.by_currency {
            out.row([
                "channels.by_currency.spend",
                &c.channel,
                by.currency,
                by.spend.get(),
                &by.spend_minor.to_string(),
            ]);
        }
    }
    out
}

/// Marketing spend per channel and CAC over a range, in the reporting currency and per
/// currency; per campaign once email campaigns exist.
#[utoipa::path(
    get, path = "/api/v1/dashboard/marketing-metrics", tag = "dashboard", params(RangeParams),
    responses((status = 200, description = "The marketing metrics, as JSON or CSV", content((MarketingMetricsView = "application/json"), (String = "text/csv"))), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn marketing_metrics(
    State(state): State<AppState>,
    _auth: ReadKey,
    headers: HeaderMap,
    Query(p): Query<RangeParams>,
) -> ApiResult<Response> {
    let as_csv = csv::wanted(p.format.as_deref(), &headers)?;
    let (range, reporting) = resolve(
        &state,
        p.from.as_deref(),
        p.to.as_deref(),
        p.currency.as_deref(),
    )
    .await?;
    let fresh = freshen(&state).await?;
    let m = metrics::marketing_metrics(&state.store, range, reporting).await?;
    let view = marketing_view(&m, fresh);
    Ok(if as_csv {
        marketing_csv(&view)
            .into_response(&format!("marketing-metrics-{}-{}.csv", view.from, view.to))
    } else {
        axum::Json(view).into_response()
    })
}
