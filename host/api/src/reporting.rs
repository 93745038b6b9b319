//! Multi-currency reporting: exchange rates (set through the API or config, never edited,
//! each kept) and payment totals per currency and in the reporting currency. Every
//! converted figure names the rate it used.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hephaestus_core::Timestamp;
use hephaestus_core::ids;
use hephaestus_core::money::{Currency, Money};
use hephaestus_store::exchange_rates::{self, ExchangeRate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, Query};
use crate::payments::{AmountText, amount_json};
use crate::write::{self, RequestMeta};

/// The prefix of exchange-rate ids.
pub const RATE_PREFIX: &str = "fx";

/// The most decimal places a rate may have.
pub const RATE_DECIMALS: u32 = 12;
/// Every rate is below this.
pub const MAX_RATE: i64 = 1_000_000_000;

/// Parses a rate: a positive decimal with at most 12 decimal places.
pub fn parse_rate(text: &str, field: &str) -> ApiResult<Decimal> {
    let rate = Decimal::from_str_exact(text.trim())
        .ok()
        .filter(|r| {
            *r > Decimal::ZERO && r.scale() <= RATE_DECIMALS && *r < Decimal::from(MAX_RATE)
        })
        .ok_or_else(|| {
            AppError::invalid(
                field,
                "must be a positive decimal below 1000000000 with at most 12 decimals",
            )
        })?;
    Ok(rate.normalize())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateView {
    /// `fx_…`
    pub id: String,
    pub object: &'static str,
    /// 1 `base` = `rate` `quote`.
    pub base: String,
    pub quote: String,
    pub rate: String,
    /// `api` or `config`.
    pub source: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<&ExchangeRate> for RateView {
    fn from(r: &ExchangeRate) -> Self {
        RateView {
            id: r.id.clone(),
            object: "exchange_rate",
            base: r.base.clone(),
            quote: r.quote.clone(),
            rate: r.rate.clone(),
            source: r.source.clone(),
            created_at: Timestamp::from_micros(r.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRate {
    #[schema(example = "eur")]
    pub base: String,
    #[schema(example = "usd")]
    pub quote: String,
    /// 1 base = rate quote, e.g. `1.0832`.
    #[schema(value_type = f64, example = 1.0832)]
    pub rate: AmountText,
}

/// A new rate for a pair (the previous ones stay, for figures that used them).
pub fn new_rate(
    base: &str,
    quote: &str,
    rate: &str,
    source: &'static str,
) -> ApiResult<ExchangeRate> {
    let base = Currency::parse(base, "base")?;
    let quote = Currency::parse(quote, "quote")?;
    if base == quote {
        return Err(AppError::invalid("quote", "must differ from base"));
    }
    let rate = parse_rate(rate, "rate")?;
    Ok(ExchangeRate {
        id: ids::new_id(RATE_PREFIX),
        base: base.code().to_string(),
        quote: quote.code().to_string(),
        rate: rate.to_string(),
        source: source.to_string(),
        created_at: Timestamp::now().as_micros(),
    })
}

#[utoipa::path(
    post, path = "/api/v1/revenue/exchange-rates", tag = "reporting", request_body = SetRate,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = RateView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn set_rate(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<SetRate>,
) -> Response {
    let rate = match new_rate(
        &body.value.base,
        &body.value.quote,
        &body.value.rate.0,
        "api",
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            exchange_rates::insert(tx, &rate).await?;
            Ok(write::created(&rate.id, &RateView::from(&rate)))
        })
    })
    .await
}

#[utoipa::path(
    get, path = "/api/v1/revenue/exchange-rates", tag = "reporting",
    responses((status = 200, body = crate::openapi::Page<RateView>, description = "The newest rate of each pair")),
    security(("api_key" = ["read"]))
)]
pub async fn list_rates(
    State(state): State<AppState>,
    _auth: ReadKey,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let rates = exchange_rates::latest(&state.store).await?;
    let items: Vec<RateView> = rates.iter().map(RateView::from).collect();
    Ok(axum::Json(write::page(&items, false)))
}

/// `amount` in `to`, at the newest rate for the pair (or the inverse of the reverse pair),
/// rounded half to even; with the rate used.
pub(crate) fn convert(
    amount: Money,
    to: Currency,
    rates: &[ExchangeRate],
) -> Option<(i64, &ExchangeRate, Decimal)> {
    let find = |b: &str, q: &str| rates.iter().find(|r| r.base == b && r.quote == q);
    let (used, factor) = if let Some(r) = find(amount.currency.code(), to.code()) {
        (r, Decimal::from_str_exact(&r.rate).ok()?)
    } else {
        let r = find(to.code(), amount.currency.code())?;
        (
            r,
            Decimal::ONE.checked_div(Decimal::from_str_exact(&r.rate).ok()?)?,
        )
    };
    let from_scale = Decimal::from(10_i64.pow(amount.currency.exponent()));
    let to_scale = Decimal::from(10_i64.pow(to.exponent()));
    let converted = Decimal::from(amount.minor)
        .checked_mul(factor)?
        .checked_mul(to_scale)?
        .checked_div(from_scale)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
    Some((i64::try_from(converted).ok()?, used, factor))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TotalsParams {
    /// Report in this currency instead of the configured one.
    pub currency: Option<String>,
    /// Payments created at or after this Unix time (seconds).
    pub created_gte: Option<i64>,
    /// Payments created at or before this Unix time (seconds).
    pub created_lte: Option<i64>,
}

#[derive(Debug, Serialize)]
struct CurrencyTotal {
    currency: String,
    payments: i64,
    gross: Box<RawValue>,
    gross_minor: i64,
    refunded: Box<RawValue>,
    refunded_minor: i64,
    net: Box<RawValue>,
    net_minor: i64,
    /// `net` in the reporting currency, with the rate used; absent when no rate is known.
    converted: Option<Converted>,
}

#[derive(Debug, Serialize)]
struct Converted {
    amount: Box<RawValue>,
    amount_minor: i64,
    rate_id: String,
    /// The factor applied: the pair's rate, or its inverse when only the reverse pair is set.
    rate: String,
    #[serde(serialize_with = "ts")]
    rate_set_at: i64,
}

fn ts<S: serde::Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
    Timestamp::from_micros(*micros).serialize(s)
}

/// Captured money (succeeded payments less refunds) per currency, and converted into the
/// reporting currency. Currencies with no rate are listed in `missing_rates` and left out of
/// the converted total rather than guessed.
#[utoipa::path(
    get, path = "/api/v1/revenue/payments/totals", tag = "reporting", params(TotalsParams),
    responses((status = 200, description = "`{reporting_currency, by_currency: [...], total, missing_rates}`")),
    security(("api_key" = ["read"]))
)]
pub async fn totals(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<TotalsParams>,
) -> ApiResult<Response> {
    let reporting = match &params.currency {
        Some(c) => Currency::parse(c, "currency")?,
        None => state.config.reporting_currency,
    };
    let secs = |field: &str, v: Option<i64>| match v {
        None => Ok(None),
        Some(s) if (0..=253_402_300_799).contains(&s) => {
            Ok(Some(Timestamp::from_micros(s * 1_000_000)))
        }
        Some(_) => Err(AppError::invalid(field, "must be a Unix time in seconds")),
    };
    let rows = exchange_rates::captured_by_currency(
        &state.store,
        secs("created_gte", params.created_gte)?,
        secs("created_lte", params.created_lte)?,
    )
    .await?;
    let rates = exchange_rates::latest(&state.store).await?;
    let mut total_minor: i64 = 0;
    let mut missing = Vec::new();
    let mut by_currency = Vec::new();
    for (code, count, gross, refunded) in rows {
        let currency = Currency::parse(&code, "currency")
            .map_err(|e| AppError::Internal(anyhow::anyhow!("stored currency {code}: {e}")))?;
        let money = |minor| Money { minor, currency };
        let net = gross - refunded;
        let converted = if currency == reporting {
            total_minor += net;
            None
        } else {
            match convert(money(net), reporting, &rates) {
                Some((minor, rate, factor)) => {
                    total_minor += minor;
                    Some(Converted {
                        amount: amount_json(Money {
                            minor,
                            currency: reporting,
                        }),
                        amount_minor: minor,
                        rate_id: rate.id.clone(),
                        rate: factor.normalize().to_string(),
                        rate_set_at: rate.created_at,
                    })
                }
                None => {
                    missing.push(code.clone());
                    None
                }
            }
        };
        by_currency.push(CurrencyTotal {
            currency: code,
            payments: count,
            gross: amount_json(money(gross)),
            gross_minor: gross,
            refunded: amount_json(money(refunded)),
            refunded_minor: refunded,
            net: amount_json(money(net)),
            net_minor: net,
            converted,
        });
    }
    #[derive(Serialize)]
    struct Body {
        object: &'static str,
        reporting_currency: &'static str,
        by_currency: Vec<CurrencyTotal>,
        total: Box<RawValue>,
        total_minor: i64,
        missing_rates: Vec<String>,
    }
    Ok(axum::Json(Body {
        object: "payment_totals",
        reporting_currency: reporting.code(),
        by_currency,
        total: amount_json(Money {
            minor: total_minor,
            currency: reporting,
        }),
        total_minor,
        missing_rates: missing,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(base: &str, quote: &str, r: &str) -> ExchangeRate {
        ExchangeRate {
            id: format!("fx_{base}{quote}"),
            base: base.into(),
            quote: quote.into(),
            rate: r.into(),
            source: "api".into(),
            created_at: 0,
        }
    }

    fn cur(c: &str) -> Currency {
        Currency::parse(c, "c").unwrap()
    }

    #[test]
    fn converts_across_exponents_with_banker_rounding() {
        let rates = vec![
            rate("EUR", "USD", "1.5"),
            rate("USD", "JPY", "150"),
            rate("KWD", "USD", "3.25"),
        ];
        let eur = Money {
            minor: 1001,
            currency: cur("EUR"),
        };
        assert_eq!(
            convert(eur, cur("USD"), &rates).unwrap().0,
            1502,
            "10.01 EUR = 15.015 USD → 15.02 (half to even)"
        );
        let usd = Money {
            minor: 100,
            currency: cur("USD"),
        };
        assert_eq!(convert(usd, cur("JPY"), &rates).unwrap().0, 150);
        let yen = Money {
            minor: 300,
            currency: cur("JPY"),
        };
        assert_eq!(
            convert(yen, cur("USD"), &rates).unwrap().0,
            200,
            "inverse pair: 300 JPY = 2.00 USD"
        );
        let kwd = Money {
            minor: 1000,
            currency: cur("KWD"),
        };
        assert_eq!(
            convert(kwd, cur("USD"), &rates).unwrap().0,
            325,
            "1.000 KWD = 3.25 USD"
        );
        assert!(convert(eur, cur("GBP"), &rates).is_none());
    }

    #[test]
    fn rates_are_checked() {
        assert!(parse_rate("1.0832", "rate").is_ok());
        for bad in ["0", "-1", "abc", "1e3", "1000000000", "0.0000000000001"] {
            assert!(parse_rate(bad, "rate").is_err(), "{bad}");
        }
    }
}
