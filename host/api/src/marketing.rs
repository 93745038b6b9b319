//! Marketing spend: what each channel cost over a period, entered by hand or by a script,
//! for CAC (dashboard overview and marketing metrics).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hephaestus_analytics::calendar;
use hephaestus_core::Timestamp;
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{self, Currency, MAX_MINOR, Money};
use hephaestus_store::events;
use hephaestus_store::marketing::{self, Spend};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::customers::page_params;
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, Query};
use crate::payments::{AmountText, amount_json};
use crate::write::{self, RequestMeta};

/// The longest period one entry may cover.
const MAX_PERIOD_DAYS: i64 = 366;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodBody {
    /// First day, `YYYY-MM-DD` (UTC).
    #[schema(example = "2026-01-01")]
    pub from: String,
    /// Last day, included.
    #[schema(example = "2026-01-31")]
    pub to: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSpend {
    /// In major units of `currency`, e.g. `500.00`.
    #[schema(value_type = f64, example = 500.00)]
    pub amount: AmountText,
    #[schema(example = "usd")]
    pub currency: String,
    /// The days the money was spent over (at most 366).
    pub period: PeriodBody,
    /// Where it went: `google_ads`, `newsletter`, … (1–64 of a–z, 0–9, `_`, `-`, `.`).
    #[schema(example = "google_ads")]
    pub channel: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodView {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendView {
    /// `msp_…`
    pub id: String,
    pub object: &'static str,
    pub channel: String,
    #[schema(value_type = f64, example = 500.00)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    pub currency: String,
    pub period: PeriodView,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl SpendView {
    fn of(s: &Spend) -> ApiResult<Self> {
        let currency = Currency::parse(&s.currency, "currency")
            .map_err(|e| AppError::Internal(anyhow::anyhow!("stored spend {}: {e}", s.id)))?;
        Ok(SpendView {
            id: s.id.clone(),
            object: "marketing_spend",
            channel: s.channel.clone(),
            amount: amount_json(Money {
                minor: s.amount_minor,
                currency,
            }),
            amount_minor: s.amount_minor,
            currency: s.currency.clone(),
            period: PeriodView {
                from: calendar::day_text(s.period_start),
                to: calendar::day_text(s.period_end),
            },
            created_at: Timestamp::from_micros(s.created_at),
        })
    }
}

fn check(req: &CreateSpend) -> ApiResult<Spend> {
    let currency = Currency::parse(&req.currency, "currency")?;
    let amount_minor = money::parse_major(&req.amount.0, currency, MAX_MINOR, "amount")?;
    let day = |text: &str, field: &str| {
        calendar::parse_day(text).ok_or_else(|| {
            AppError::invalid(
                field,
                "must be a date as YYYY-MM-DD, from 1970-01-01 to 9999-12-31",
            )
        })
    };
    let (start, end) = (
        day(&req.period.from, "period.from")?,
        day(&req.period.to, "period.to")?,
    );
    if start > end {
        return Err(AppError::invalid(
            "period.from",
            "must not be after period.to",
        ));
    }
    if end - start + 1 > MAX_PERIOD_DAYS {
        return Err(AppError::invalid(
            "period.to",
            format!("a period may span at most {MAX_PERIOD_DAYS} days"),
        ));
    }
    let channel = req.channel.as_str();
    if channel.is_empty()
        || channel.len() > 64
        || !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
    {
        return Err(AppError::invalid(
            "channel",
            "must be 1 to 64 of a-z, 0-9, `_`, `-` and `.`",
        ));
    }
    Ok(Spend {
        id: ids::new_id(prefix::MARKETING_SPEND),
        channel: channel.to_string(),
        amount_minor,
        currency: currency.code().to_string(),
        period_start: start,
        period_end: end,
        created_at: Timestamp::now().as_micros(),
    })
}

/// Records what a channel cost over a period; CAC divides it (pro rata by days) among the
/// customers who first paid in the range asked about. Entries are kept as entered: a
/// correction is a new entry (a negative amount is refused; enter the net instead).
#[utoipa::path(
    post, path = "/api/v1/marketing/spend", tag = "dashboard", request_body = CreateSpend,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = SpendView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn create_spend(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreateSpend>,
) -> Response {
    let spend = match check(&body.value) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let view = match SpendView::of(&spend) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            marketing::insert(tx, &spend).await?;
            events::append(
                tx,
                NewEvent::new(
                    kind::MARKETING_SPEND_RECORDED,
                    &spend.id,
                    None,
                    json!({
                        "spend_id": spend.id,
                        "channel": spend.channel,
                        "amount_minor": spend.amount_minor,
                        "currency": spend.currency,
                        "period_start": calendar::day_text(spend.period_start),
                        "period_end": calendar::day_text(spend.period_end),
                    }),
                    Timestamp::from_micros(spend.created_at),
                ),
            );
            Ok(write::created(&spend.id, &view))
        })
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SpendParams {
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/marketing/spend", tag = "dashboard", params(SpendParams),
    responses((status = 200, description = "`{object: list, data: [marketing_spend], has_more}`")),
    security(("api_key" = ["read"]))
)]
pub async fn list_spend(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(p): Query<SpendParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, after) = page_params(p.limit, p.starting_after, prefix::MARKETING_SPEND)?;
    let rows = marketing::list(&state.store, limit + 1, after.as_deref()).await?;
    let views = rows
        .iter()
        .map(SpendView::of)
        .collect::<ApiResult<Vec<_>>>()?;
    let has_more = views.len() as i64 > limit;
    let shown = &views[..views.len().min(usize::try_from(limit).unwrap_or(0))];
    Ok(axum::Json(write::page(shown, has_more)))
}
