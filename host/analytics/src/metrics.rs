//! The dashboard's figures, read from the daily aggregates (a handful of sums over at most a
//! few thousand rows, whatever the number of payments) and converted into the reporting
//! currency. Definitions (docs/api.md has them for clients):
//!
//! - MRR at the end of a day: the sum of every MRR movement up to that day; ARR = MRR × 12.
//! - Total revenue: every successful payment up to the end of the range, less refunds and
//!   money taken by disputes.
//! - Growth rate 30 d: (MRR at `to` − MRR 30 days earlier) ÷ MRR 30 days earlier.
//! - Paying customers: those with MRR; active customers: those with a live subscription
//!   (trialing, active or past due).
//! - ARPA = MRR ÷ paying customers.
//! - Customer churn rate: customers who stopped paying in the range ÷ paying customers at
//!   its start; revenue churn rate (gross MRR churn): (churn + contraction) ÷ MRR at its
//!   start; net MRR churn: (churn + contraction − expansion − reactivation) ÷ MRR at its
//!   start; net revenue retention: (MRR at its start + expansion − contraction − churn) ÷
//!   MRR at its start.
//! - LTV = ARPA ÷ monthly customer churn, the churn of the 30 days ending at `to`; null
//!   when that churn is 0 (or there is no one to churn).
//! - Trial → paid: trials that converted ÷ trials that ended (converted or lapsed) in the
//!   range; signup → paid: of the customers who signed up in the range, those who have
//!   made a successful payment since.
//! - CAC = marketing spend in the range (each entry pro rata by the days of its period in
//!   the range) ÷ customers whose first payment succeeded in the range; null when no spend
//!   is recorded for the range or no one paid for the first time.
//! - Forecast: the next 3 months of MRR by Holt's linear trend method over month-end MRR
//!   (see [`crate::forecast`]), with a 95 % interval.
//!
//! Percentages are rounded half to even to two decimals, ARPA and LTV to the reporting
//! currency's decimals, forecasts to its minor unit; every other money figure is exact. A ratio with nothing to divide
//! by is `None` (null), never 0 or infinity.

use std::collections::{BTreeMap, BTreeSet};

use hephaestus_core::money::Currency;
use hephaestus_store::Store;
use hephaestus_store::analytics::{self as store, DayCustomers, DayMoney, Funnel, Movements};
use hephaestus_store::exchange_rates::{self, ExchangeRate};
use hephaestus_store::marketing::{self, Spend};

use crate::calendar::{self, Interval};
use crate::consumer::AnalyticsError;
use crate::exact::Exact;
use crate::fx::{self, Rate};

/// Days of the window that growth and monthly churn are measured over.
pub const WINDOW_DAYS: i64 = 30;

/// A range of whole UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// One currency's conversion into the reporting currency.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyRate {
    pub currency: Currency,
    /// `None`: no stored rate links it to the reporting currency; its figures are left out
    /// of the reporting-currency totals (and listed as missing), never guessed.
    pub rate: Option<Rate>,
}

/// A money figure: per currency in minor units, and the sum of those that could be
/// converted, in major units of the reporting currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    /// Every currency with figures, in code order.
    pub by_currency: Vec<(Currency, i64)>,
    pub total: Exact,
}

/// Turns per-currency figures into [`Amount`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct Converter {
    pub reporting: Currency,
    pub currencies: Vec<CurrencyRate>,
}

impl Converter {
    pub fn new(reporting: Currency, codes: &BTreeSet<String>, rates: &[ExchangeRate]) -> Self {
        let mut currencies: Vec<CurrencyRate> = codes
            .iter()
            .filter_map(|code| Currency::parse(code, "currency").ok())
            .map(|currency| CurrencyRate {
                currency,
                rate: fx::rate(currency, reporting, rates),
            })
            .collect();
        currencies.sort_by_key(|c| c.currency.code());
        Converter {
            reporting,
            currencies,
        }
    }

    /// Currencies with figures but no rate.
    pub fn missing(&self) -> Vec<Currency> {
        self.currencies
            .iter()
            .filter(|c| c.rate.is_none())
            .map(|c| c.currency)
            .collect()
    }

    /// An amount from per-currency figures (by code), every known currency listed.
    pub fn amount(&self, by_code: &BTreeMap<String, i64>) -> Result<Amount, AnalyticsError> {
        let mut total = Exact::ZERO;
        let mut by_currency = Vec::new();
        for c in &self.currencies {
            let minor = by_code.get(c.currency.code()).copied().unwrap_or(0);
            by_currency.push((c.currency, minor));
            if let Some(rate) = &c.rate {
                let converted = rate
                    .convert(minor, c.currency.exponent())
                    .ok_or(AnalyticsError::Overflow("conversion"))?;
                total = total
                    .checked_add(converted)
                    .ok_or(AnalyticsError::Overflow("sum"))?;
            }
        }
        Ok(Amount { by_currency, total })
    }

    fn of_money(
        &self,
        money: &BTreeMap<String, DayMoney>,
        f: impl Fn(&DayMoney) -> i64,
    ) -> Result<Amount, AnalyticsError> {
        self.amount(&money.iter().map(|(c, m)| (c.clone(), f(m))).collect())
    }
}

/// `part ÷ whole` as a percentage, or `None` when `whole` is zero.
fn percent(part: Exact, whole: Exact) -> Option<Exact> {
    Exact::percent(part, whole)
}

fn sub(a: Exact, b: Exact) -> Result<Exact, AnalyticsError> {
    a.checked_sub(b)
        .ok_or(AnalyticsError::Overflow("difference"))
}

fn add(a: Exact, b: Exact) -> Result<Exact, AnalyticsError> {
    a.checked_add(b).ok_or(AnalyticsError::Overflow("sum"))
}

/// MRR and its movements over a run of days, in every currency.
#[derive(Debug, Clone, PartialEq)]
pub struct MrrMovements {
    pub start: Amount,
    pub new: Amount,
    pub expansion: Amount,
    pub contraction: Amount,
    pub churn: Amount,
    pub reactivation: Amount,
    /// new + expansion + reactivation − contraction − churn.
    pub net: Amount,
    pub end: Amount,
}

/// Money in over a run of days.
#[derive(Debug, Clone, PartialEq)]
pub struct Revenue {
    pub payments: i64,
    pub payments_by_currency: Vec<(Currency, i64)>,
    pub gross: Amount,
    pub refunds: Amount,
    pub disputes: Amount,
    /// gross − refunds − disputes.
    pub net: Amount,
}

/// MRR churn and retention rates over a run of days (percentages).
#[derive(Debug, Clone, PartialEq)]
pub struct MrrRates {
    pub gross_mrr_churn_rate: Option<Exact>,
    pub net_mrr_churn_rate: Option<Exact>,
    pub net_revenue_retention: Option<Exact>,
}

fn movements(
    cv: &Converter,
    start: &BTreeMap<String, i64>,
    moved: &BTreeMap<String, Movements>,
) -> Result<MrrMovements, AnalyticsError> {
    let of = |f: &dyn Fn(&Movements) -> i64| -> Result<Amount, AnalyticsError> {
        cv.amount(&moved.iter().map(|(c, m)| (c.clone(), f(m))).collect())
    };
    let end: BTreeMap<String, i64> = cv
        .currencies
        .iter()
        .map(|c| {
            let code = c.currency.code();
            let s = start.get(code).copied().unwrap_or(0);
            let n = moved.get(code).map_or(0, Movements::net);
            (code.to_string(), s + n)
        })
        .collect();
    Ok(MrrMovements {
        start: cv.amount(start)?,
        new: of(&|m| m.new)?,
        expansion: of(&|m| m.expansion)?,
        contraction: of(&|m| m.contraction)?,
        churn: of(&|m| m.churn)?,
        reactivation: of(&|m| m.reactivation)?,
        net: of(&Movements::net)?,
        end: cv.amount(&end)?,
    })
}

fn rates(m: &MrrMovements) -> Result<MrrRates, AnalyticsError> {
    let start = m.start.total;
    let lost = add(m.churn.total, m.contraction.total)?;
    let gained = add(m.expansion.total, m.reactivation.total)?;
    let kept = add(sub(start, lost)?, m.expansion.total)?;
    Ok(MrrRates {
        gross_mrr_churn_rate: percent(lost, start),
        net_mrr_churn_rate: percent(sub(lost, gained)?, start),
        net_revenue_retention: percent(kept, start),
    })
}

impl Revenue {
    /// Payments in one currency.
    pub fn payments_in(&self, currency: Currency) -> i64 {
        self.payments_by_currency
            .iter()
            .find(|(c, _)| *c == currency)
            .map_or(0, |(_, n)| *n)
    }
}

fn revenue(cv: &Converter, money: &BTreeMap<String, DayMoney>) -> Result<Revenue, AnalyticsError> {
    Ok(Revenue {
        payments: money.values().map(|m| m.payments).sum(),
        payments_by_currency: cv
            .currencies
            .iter()
            .map(|c| {
                let n = money.get(c.currency.code()).map_or(0, |m| m.payments);
                (c.currency, n)
            })
            .collect(),
        gross: cv.of_money(money, |m| m.revenue)?,
        refunds: cv.of_money(money, |m| m.refunds)?,
        disputes: cv.of_money(money, |m| m.disputes)?,
        net: cv.of_money(money, DayMoney::net_revenue)?,
    })
}

fn mrr_of(money: &BTreeMap<String, DayMoney>) -> BTreeMap<String, i64> {
    money
        .iter()
        .map(|(c, m)| (c.clone(), m.mrr.net()))
        .collect()
}

fn movements_of(money: &BTreeMap<String, DayMoney>) -> BTreeMap<String, Movements> {
    money.iter().map(|(c, m)| (c.clone(), m.mrr)).collect()
}

/// Loads the converter for every currency with figures up to `to`, and those of `spend`.
async fn converter(
    store: &Store,
    reporting: Currency,
    all: &BTreeMap<String, DayMoney>,
    spend: &[Spend],
) -> Result<Converter, AnalyticsError> {
    let rates = exchange_rates::latest(store).await?;
    let codes: BTreeSet<String> = all
        .keys()
        .cloned()
        .chain(spend.iter().map(|s| s.currency.clone()))
        .collect();
    Ok(Converter::new(reporting, &codes, &rates))
}

/// The part of a spend entry that falls in `range`: its amount pro rata by days, rounded
/// half to even to the minor unit.
pub fn attributed(spend: &Spend, range: Range) -> i64 {
    let overlap = spend.period_end.min(range.to) - spend.period_start.max(range.from) + 1;
    let days = spend.period_end - spend.period_start + 1;
    if overlap <= 0 || days <= 0 {
        return 0;
    }
    if overlap >= days {
        return spend.amount_minor;
    }
    Exact::new(i128::from(spend.amount_minor) * i128::from(overlap), 0)
        .div_round(Exact::int(days), 0)
        .and_then(|e| e.to_minor(0))
        .unwrap_or(0)
}

/// Spend in a range per channel (by currency code), `None` when no entry overlaps it.
fn spend_by_channel(
    spend: &[Spend],
    range: Range,
) -> Option<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for s in spend {
        *out.entry(s.channel.clone())
            .or_default()
            .entry(s.currency.clone())
            .or_default() += attributed(s, range);
    }
    (!out.is_empty()).then_some(out)
}

/// CAC: spend in the range ÷ customers whose first payment succeeded in it.
fn cac(spend: Option<&Amount>, new_paying: i64, decimals: u32) -> Option<Exact> {
    spend?.total.div_round(Exact::int(new_paying), decimals)
}

fn total_spend(
    cv: &Converter,
    channels: &BTreeMap<String, BTreeMap<String, i64>>,
) -> Result<Amount, AnalyticsError> {
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for per_currency in channels.values() {
        for (currency, minor) in per_currency {
            *by.entry(currency.clone()).or_default() += minor;
        }
    }
    cv.amount(&by)
}

/// `GET /dashboard/overview`'s figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub range: Range,
    pub converter: Converter,
    pub total_revenue: Amount,
    pub mrr: Amount,
    pub arr: Amount,
    pub mrr_30d_ago: Amount,
    pub growth_rate_30d: Option<Exact>,
    pub active_customers: i64,
    pub paying_customers: i64,
    pub arpa: Option<Exact>,
    pub customer_churn_rate: Option<Exact>,
    pub revenue_churn_rate: Option<Exact>,
    pub ltv: Option<Exact>,
    pub trial_to_paid_rate: Option<Exact>,
    pub signup_to_paid_rate: Option<Exact>,
    /// Marketing spend in the range; `None` when none was recorded for it.
    pub spend: Option<Amount>,
    pub cac: Option<Exact>,
    pub movements: MrrMovements,
    pub revenue: Revenue,
}

/// Customers at the end of a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    paying: i64,
    active: i64,
}

fn standing(sums: &DayCustomers) -> Standing {
    Standing {
        paying: sums.paying_net(),
        active: sums.active_gained - sums.active_lost,
    }
}

/// ARPA and LTV from MRR, paying customers now and the trailing window's churn.
fn arpa_ltv(
    mrr: Exact,
    paying_now: i64,
    paying_window_start: i64,
    churned_in_window: i64,
    decimals: u32,
) -> (Option<Exact>, Option<Exact>) {
    let arpa = mrr.div_round(Exact::int(paying_now), decimals);
    // ARPA ÷ (churned ÷ paying at the window's start), rounded once.
    let ltv = mrr
        .checked_mul(Exact::int(paying_window_start))
        .and_then(|n| {
            Exact::int(paying_now)
                .checked_mul(Exact::int(churned_in_window))
                .and_then(|d| n.div_round(d, decimals))
        })
        .filter(|_| paying_window_start > 0);
    (arpa, ltv)
}

fn ratio(part: i64, whole: i64) -> Option<Exact> {
    percent(Exact::int(part), Exact::int(whole))
}

pub async fn overview(
    store: &Store,
    range: Range,
    reporting: Currency,
) -> Result<Overview, AnalyticsError> {
    let Range { from, to } = range;
    let window_start = to - WINDOW_DAYS;
    let through_to = store::money_between(store, None, to).await?;
    let before = store::money_between(store, None, from - 1).await?;
    let window = store::money_between(store, None, window_start).await?;
    let during = store::money_between(store, Some(from), to).await?;
    let customers_to = store::customers_between(store, None, to).await?;
    let customers_before = store::customers_between(store, None, from - 1).await?;
    let customers_window = store::customers_between(store, None, window_start).await?;
    let customers_during = store::customers_between(store, Some(from), to).await?;
    let churned_window = store::customers_between(store, Some(window_start + 1), to)
        .await?
        .churned;
    let funnel = store::signup_funnel(store, from, to).await?;
    let entries = marketing::overlapping(store, from, to).await?;

    let cv = converter(store, reporting, &through_to, &entries).await?;
    let spend = spend_by_channel(&entries, range)
        .map(|channels| total_spend(&cv, &channels))
        .transpose()?;
    let mrr = cv.amount(&mrr_of(&through_to))?;
    let arr = cv.amount(
        &mrr_of(&through_to)
            .into_iter()
            .map(|(c, m)| (c, m * 12))
            .collect(),
    )?;
    let mrr_30d_ago = cv.amount(&mrr_of(&window))?;
    let moved = movements(&cv, &mrr_of(&before), &movements_of(&during))?;
    let now = standing(&customers_to);
    let at_start = standing(&customers_before);
    let at_window = standing(&customers_window);
    let (arpa, ltv) = arpa_ltv(
        mrr.total,
        now.paying,
        at_window.paying,
        churned_window,
        reporting.exponent(),
    );
    let trials_ended = customers_during.trials_converted + customers_during.trials_lapsed;
    Ok(Overview {
        range,
        total_revenue: cv.of_money(&through_to, DayMoney::net_revenue)?,
        growth_rate_30d: percent(sub(mrr.total, mrr_30d_ago.total)?, mrr_30d_ago.total),
        active_customers: now.active,
        paying_customers: now.paying,
        arpa,
        customer_churn_rate: ratio(customers_during.churned, at_start.paying),
        revenue_churn_rate: rates(&moved)?.gross_mrr_churn_rate,
        ltv,
        trial_to_paid_rate: ratio(customers_during.trials_converted, trials_ended),
        signup_to_paid_rate: ratio(funnel.paid, funnel.registered),
        cac: cac(
            spend.as_ref(),
            customers_during.first_payments,
            reporting.exponent(),
        ),
        spend,
        revenue: revenue(&cv, &during)?,
        movements: moved,
        mrr,
        arr,
        mrr_30d_ago,
        converter: cv,
    })
}

/// One period of the revenue series.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub from: i64,
    pub to: i64,
    pub mrr: MrrMovements,
    pub rates: MrrRates,
    pub revenue: Revenue,
}

/// Months of month-end MRR the forecast learns from (at most).
pub const FORECAST_HISTORY_MONTHS: i64 = 24;
/// Months the forecast looks ahead.
pub const FORECAST_MONTHS: i64 = 3;

/// One forecast month, in the reporting currency.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastMonth {
    pub month: i64,
    pub mrr: Exact,
    /// The 95 % prediction interval.
    pub lower: Exact,
    pub upper: Exact,
}

/// The next months' MRR by Holt's linear trend method (see [`crate::forecast`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MrrForecast {
    pub alpha: Exact,
    pub beta: Exact,
    /// Month-end MRR figures it learned from (the last is MRR at `to`).
    pub history: Vec<(i64, Exact)>,
    pub months: Vec<ForecastMonth>,
}

/// `GET /dashboard/revenue-metrics`' figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub range: Range,
    pub interval: Interval,
    pub converter: Converter,
    pub periods: Vec<Period>,
    /// The whole range as one period.
    pub total: Period,
    /// `None` with fewer than [`crate::forecast::MIN_POINTS`] months of MRR.
    pub forecast: Option<MrrForecast>,
}

/// MRR at the end of each month up to the month of `to` (at `to` for that one), from the
/// first month with MRR among the last [`FORECAST_HISTORY_MONTHS`], then the forecast.
async fn forecast(
    store: &Store,
    cv: &Converter,
    to: i64,
) -> Result<Option<MrrForecast>, AnalyticsError> {
    let last = calendar::month_of(to);
    let first = last - (FORECAST_HISTORY_MONTHS - 1);
    let Some(first_day) = calendar::month_start(first) else {
        return Ok(None);
    };
    let mut mrr = mrr_of(&store::money_between(store, None, first_day - 1).await?);
    let days = store::money_by_day(store, first_day, to).await?;
    let mut rows = days.iter().peekable();
    let mut history = Vec::new();
    for month in first..=last {
        let end = calendar::month_start(month + 1).map_or(to, |d| (d - 1).min(to));
        while let Some((_, currency, m)) = rows.next_if(|(day, _, _)| *day <= end) {
            *mrr.entry(currency.clone()).or_default() += m.mrr.net();
        }
        let total = cv.amount(&mrr)?.total;
        if !history.is_empty() || !total.is_zero() {
            history.push((month, total));
        }
    }
    // Forecast in hundredths of the reporting currency's minor unit.
    let decimals = cv.reporting.exponent() + 2;
    let ys = history
        .iter()
        .map(|(_, v)| v.scaled(decimals))
        .collect::<Option<Vec<i128>>>()
        .ok_or(AnalyticsError::Overflow("forecast"))?;
    let Some(f) = crate::forecast::holt(&ys, FORECAST_MONTHS) else {
        return Ok(None);
    };
    let at = |units: i128| Exact::new(units, decimals);
    Ok(Some(MrrForecast {
        alpha: Exact::new(f.alpha_tenths, 1),
        beta: Exact::new(f.beta_tenths, 1),
        months: f
            .points
            .iter()
            .map(|p| ForecastMonth {
                month: last + p.ahead,
                mrr: at(p.value),
                lower: at(p.lower),
                upper: at(p.upper),
            })
            .collect(),
        history,
    }))
}

pub async fn revenue_series(
    store: &Store,
    range: Range,
    interval: Interval,
    reporting: Currency,
) -> Result<Series, AnalyticsError> {
    let Range { from, to } = range;
    let through_to = store::money_between(store, None, to).await?;
    let before = store::money_between(store, None, from - 1).await?;
    let days = store::money_by_day(store, from, to).await?;
    let cv = converter(store, reporting, &through_to, &[]).await?;

    let mut periods = Vec::new();
    let mut start = mrr_of(&before);
    let mut rows = days.iter().peekable();
    for (p_from, p_to) in interval.periods(from, to) {
        let mut money: BTreeMap<String, DayMoney> = BTreeMap::new();
        while let Some((_, currency, m)) = rows.next_if(|(day, _, _)| *day <= p_to) {
            money.entry(currency.clone()).or_default().add(m);
        }
        let mrr = movements(&cv, &start, &movements_of(&money))?;
        for (currency, m) in &money {
            *start.entry(currency.clone()).or_default() += m.mrr.net();
        }
        periods.push(Period {
            from: p_from,
            to: p_to,
            rates: rates(&mrr)?,
            revenue: revenue(&cv, &money)?,
            mrr,
        });
    }
    let during: BTreeMap<String, DayMoney> = {
        let mut sums: BTreeMap<String, DayMoney> = BTreeMap::new();
        for (_, currency, m) in &days {
            sums.entry(currency.clone()).or_default().add(m);
        }
        sums
    };
    let mrr = movements(&cv, &mrr_of(&before), &movements_of(&during))?;
    let total = Period {
        from,
        to,
        rates: rates(&mrr)?,
        revenue: revenue(&cv, &during)?,
        mrr,
    };
    Ok(Series {
        range,
        interval,
        forecast: forecast(store, &cv, to).await?,
        converter: cv,
        periods,
        total,
    })
}

/// One monthly cohort: the customers who first paid in `month`, month by month.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    pub month: i64,
    /// Paying customers of the cohort at the end of its first month.
    pub customers: i64,
    pub months: Vec<CohortMonth>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CohortMonth {
    pub month: i64,
    /// Of the cohort, paying at the end of this month.
    pub customers: i64,
    pub customer_retention: Option<Exact>,
    pub mrr: Amount,
    /// MRR now ÷ MRR at the end of the cohort's first month.
    pub mrr_retention: Option<Exact>,
}

/// `GET /dashboard/customer-metrics`' figures.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerMetrics {
    pub range: Range,
    pub converter: Converter,
    pub paying_at_start: i64,
    pub paying_customers: i64,
    pub active_customers: i64,
    pub customer_growth_rate: Option<Exact>,
    pub counts: DayCustomers,
    pub customer_churn_rate: Option<Exact>,
    pub arpa: Option<Exact>,
    pub avg_lifetime_value: Option<Exact>,
    pub funnel: Funnel,
    pub segments: Vec<(String, i64)>,
    pub cohorts: Vec<Cohort>,
}

pub async fn customer_metrics(
    store: &Store,
    range: Range,
    reporting: Currency,
) -> Result<CustomerMetrics, AnalyticsError> {
    let Range { from, to } = range;
    let window_start = to - WINDOW_DAYS;
    let through_to = store::money_between(store, None, to).await?;
    let customers_to = store::customers_between(store, None, to).await?;
    let customers_before = store::customers_between(store, None, from - 1).await?;
    let customers_window = store::customers_between(store, None, window_start).await?;
    let counts = store::customers_between(store, Some(from), to).await?;
    let churned_window = store::customers_between(store, Some(window_start + 1), to)
        .await?
        .churned;
    let funnel = store::signup_funnel(store, from, to).await?;
    let segments = store::segment_counts(store).await?;
    let (first_month, last_month) = (calendar::month_of(from), calendar::month_of(to));
    let changes = store::cohorts(store, first_month, last_month).await?;

    let cv = converter(store, reporting, &through_to, &[]).await?;
    let mrr = cv.amount(&mrr_of(&through_to))?;
    let now = standing(&customers_to);
    let at_start = standing(&customers_before);
    let (arpa, ltv) = arpa_ltv(
        mrr.total,
        now.paying,
        standing(&customers_window).paying,
        churned_window,
        reporting.exponent(),
    );

    let mut cohorts = Vec::new();
    for cohort in first_month..=last_month {
        let mut customers = 0;
        let mut mrr_by: BTreeMap<String, i64> = BTreeMap::new();
        let mut months = Vec::new();
        let mut first: Option<(i64, Exact)> = None;
        for month in cohort..=last_month {
            customers += changes
                .customers
                .get(&(cohort, month))
                .copied()
                .unwrap_or(0);
            for ((_, _, currency), delta) in changes
                .mrr
                .range((cohort, month, String::new())..(cohort, month + 1, String::new()))
            {
                *mrr_by.entry(currency.clone()).or_default() += delta;
            }
            let amount = cv.amount(&mrr_by)?;
            let (size, base) = *first.get_or_insert((customers, amount.total));
            months.push(CohortMonth {
                month,
                customers,
                customer_retention: ratio(customers, size),
                mrr_retention: percent(amount.total, base),
                mrr: amount,
            });
        }
        let size = first.map_or(0, |(n, _)| n);
        if size > 0 || months.iter().any(|m| m.customers != 0) {
            cohorts.push(Cohort {
                month: cohort,
                customers: size,
                months,
            });
        }
    }

    Ok(CustomerMetrics {
        range,
        paying_at_start: at_start.paying,
        paying_customers: now.paying,
        active_customers: now.active,
        customer_growth_rate: ratio(now.paying - at_start.paying, at_start.paying),
        customer_churn_rate: ratio(counts.churned, at_start.paying),
        counts,
        arpa,
        avg_lifetime_value: ltv,
        funnel,
        segments,
        cohorts,
        converter: cv,
    })
}

/// `GET /dashboard/marketing-metrics`' figures.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketingMetrics {
    pub range: Range,
    pub converter: Converter,
    /// Spend in the range, per channel (`None`: nothing recorded for the range).
    pub spend: Option<Amount>,
    pub channels: Vec<(String, Amount)>,
    /// Customers whose first payment succeeded in the range.
    pub new_paying_customers: i64,
    pub cac: Option<Exact>,
}

pub async fn marketing_metrics(
    store: &Store,
    range: Range,
    reporting: Currency,
) -> Result<MarketingMetrics, AnalyticsError> {
    let Range { from, to } = range;
    let through_to = store::money_between(store, None, to).await?;
    let counts = store::customers_between(store, Some(from), to).await?;
    let entries = marketing::overlapping(store, from, to).await?;
    let cv = converter(store, reporting, &through_to, &entries).await?;
    let by_channel = spend_by_channel(&entries, range);
    let spend = by_channel
        .as_ref()
        .map(|channels| total_spend(&cv, channels))
        .transpose()?;
    let channels = by_channel
        .unwrap_or_default()
        .iter()
        .map(|(channel, by)| Ok((channel.clone(), cv.amount(by)?)))
        .collect::<Result<Vec<_>, AnalyticsError>>()?;
    Ok(MarketingMetrics {
        range,
        cac: cac(spend.as_ref(), counts.first_payments, reporting.exponent()),
        spend,
        channels,
        new_paying_customers: counts.first_payments,
        converter: cv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(amount_minor: i64, period_start: i64, period_end: i64) -> Spend {
        Spend {
            id: "msp_1".into(),
            channel: "ads".into(),
            amount_minor,
            currency: "USD".into(),
            period_start,
            period_end,
            created_at: 0,
        }
    }

    #[test]
    fn spend_is_attributed_pro_rata_by_days() {
        let s = spend(31_000, 0, 30);
        assert_eq!(attributed(&s, Range { from: 0, to: 30 }), 31_000);
        assert_eq!(attributed(&s, Range { from: -5, to: 40 }), 31_000);
        assert_eq!(attributed(&s, Range { from: 10, to: 19 }), 10_000);
        assert_eq!(attributed(&s, Range { from: 31, to: 40 }), 0);
        // 100 over 3 days: one day is 33.33…, rounded half to even to 33.
        assert_eq!(attributed(&spend(100, 0, 2), Range { from: 0, to: 0 }), 33);
        assert_eq!(
            attributed(&spend(5, 0, 1), Range { from: 0, to: 0 }),
            2,
            "2.5 → 2"
        );
    }

    #[test]
    fn ltv_is_null_without_churn() {
        let mrr = Exact::minor(30_000, 2);
        let (arpa, ltv) = arpa_ltv(mrr, 3, 4, 0, 2);
        assert_eq!(arpa.unwrap().to_text(2), "100.00");
        assert!(ltv.is_none());
        // 4 paying a month ago, 1 churned: 25 % monthly churn, LTV = 100.00 ÷ 0.25.
        let (_, ltv) = arpa_ltv(mrr, 3, 4, 1, 2);
        assert_eq!(ltv.unwrap().to_text(2), "400.00");
        let (arpa, ltv) = arpa_ltv(Exact::ZERO, 0, 0, 0, 2);
        assert!(arpa.is_none() && ltv.is_none());
    }
}
