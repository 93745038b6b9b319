//! Test controls of the sandbox gateway, under `/api/v1/sandbox`. They exist only while the
//! sandbox is the gateway; with Stripe configured these routes answer 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_billing::reconcile;
use hephaestus_core::ids::prefix;
use hephaestus_core::payment::PaymentStatus;
use hephaestus_store::payments;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::WriteKey;
use crate::error::AppError;
use crate::extract::{Json, PathId, load_by_id};
use crate::payments::PaymentView;
use crate::write::{self, RequestMeta, Written};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    /// `succeed` (default) or `fail`.
    pub outcome: Option<String>,
}

/// Plays the customer completing (or failing) 3-D Secure for a payment made with
/// `pm_card_authenticationRequired`. The payment moves on as it would when the gateway
/// reports it, with its domain event.
#[utoipa::path(
    post, path = "/api/v1/sandbox/payments/{id}/authenticate", tag = "sandbox",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = Authenticate,
    responses((status = 200, body = PaymentView), (status = 400, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn authenticate(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<Authenticate>,
) -> Response {
    if state.gateway.as_sandbox().is_none() {
        return AppError::RouteNotFound {
            method: meta.method.to_string(),
            path: meta.path.clone(),
        }
        .into_response();
    }
    let succeed = match body.value.outcome.as_deref() {
        None | Some("succeed") => true,
        Some("fail") => false,
        Some(_) => return AppError::invalid("outcome", "must be succeed or fail").into_response(),
    };
    let store = &state.store;
    let payment = match load_by_id("payment", prefix::PAYMENT, id.clone(), |id| async move {
        payments::get(store, &id).await
    })
    .await
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (true, Some(charge_id), PaymentStatus::RequiresAction) = (
        payment.gateway == "sandbox",
        payment.gateway_id.clone(),
        payment.status,
    ) else {
        return AppError::Invalid {
            field: None,
            message: format!("payment {id} is not waiting for the customer's action"),
        }
        .into_response();
    };
    let claimed = match write::claim(&state, &auth.0, &meta, &body.raw).await {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let gateway = state.gateway.clone();
    claimed
        .then(async move {
            let sandbox = gateway
                .as_sandbox()
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the gateway changed")))?;
            let charge = sandbox
                .complete_action(&charge_id, succeed)
                .await
                .map_err(|e| AppError::Unavailable(e.to_string()))?
                .ok_or_else(|| AppError::Invalid {
                    field: None,
                    message: format!("payment {id} is not waiting for the customer's action"),
                })?;
            Ok(write::change(move |tx| {
                Box::pin(async move {
                    reconcile::apply_charge(tx, &id, &charge).await?;
                    let payment = payments::get_for_update(tx, &id).await?.ok_or_else(|| {
                        AppError::NotFound {
                            kind: "payment",
                            id: id.clone(),
                        }
                    })?;
                    Ok(Written::json(
                        StatusCode::OK,
                        &PaymentView::from(&payment),
                        None,
                    ))
                })
            }))
        })
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    /// Seconds to move forward, up to five years. Give this or `days` (or both: they add
    /// up, to at most ten years).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub seconds: Option<i64>,
    /// Days to move forward, up to five years (1830).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub days: Option<i64>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ClockView {
    pub object: &'static str,
    /// The business clock now.
    #[schema(value_type = String, format = DateTime)]
    pub now: hephaestus_core::Timestamp,
    /// How far it is ahead of real time, in seconds.
    pub offset_seconds: i64,
    /// What this call billed to catch up (renewals, retries, trial ends, cancellations);
    /// null on reads of the clock. Work another host or the background job took on is
    /// waited for, not counted here.
    #[schema(value_type = Option<BilledView>)]
    pub billed: Option<hephaestus_billing::subscriptions::Summary>,
}

/// What one advance of the clock billed: the shape of
/// [`hephaestus_billing::subscriptions::Summary`], which it is written from.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct BilledView {
    /// Subscriptions billed.
    pub subscriptions: u64,
    /// Invoices made.
    pub invoices: u64,
    pub payments_succeeded: u64,
    pub payments_failed: u64,
    pub trials_ending: u64,
    pub canceled: u64,
}

/// The furthest one call may move the clock: ten years, half of it by each field.
const MAX_ADVANCE_SECS: i64 = 10 * 366 * 24 * 60 * 60;
/// The most `seconds` may say.
pub(crate) const MAX_ADVANCE_SECONDS: i64 = MAX_ADVANCE_SECS / 2;
/// The most `days` may say.
pub(crate) const MAX_ADVANCE_DAYS: i64 = MAX_ADVANCE_SECS / 2 / 86_400;

async fn clock_view(
    state: &AppState,
    billed: Option<hephaestus_billing::subscriptions::Summary>,
) -> Result<ClockView, AppError> {
    let now = hephaestus_billing::subscriptions::business_now(&state.store).await?;
    Ok(ClockView {
        object: "clock",
        offset_seconds: (now.as_micros() - hephaestus_core::Timestamp::now().as_micros())
            / 1_000_000,
        now,
        billed,
    })
}

/// The business clock that subscriptions are billed on.
#[utoipa::path(
    get, path = "/api/v1/sandbox/clock", tag = "sandbox",
    responses((status = 200, body = ClockView)),
    security(("api_key" = ["read"]))
)]
pub async fn clock(
    State(state): State<AppState>,
    _auth: crate::auth::ReadKey,
    meta: RequestMeta,
) -> Response {
    if state.gateway.as_sandbox().is_none() {
        return not_found(&meta);
    }
    match clock_view(&state, None).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_found(meta: &RequestMeta) -> Response {
    AppError::RouteNotFound {
        method: meta.method.to_string(),
        path: meta.path.clone(),
    }
    .into_response()
}

/// Moves the business clock forward, like a Stripe test clock, and bills everything that
/// became due on the way — each renewal, retry and trial end at its own moment — before
/// answering (waiting up to 20 s for work another host holds). The clock never goes back.
#[utoipa::path(
    post, path = "/api/v1/sandbox/clock/advance", tag = "sandbox",
    request_body = AdvanceClock,
    responses((status = 200, body = ClockView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn advance_clock(
    State(state): State<AppState>,
    _auth: WriteKey,
    meta: RequestMeta,
    body: Json<AdvanceClock>,
) -> Response {
    if state.gateway.as_sandbox().is_none() {
        return not_found(&meta);
    }
    let req = body.value;
    // Each field on its own, so the rule can be written in the API's schema.
    let seconds = req.seconds.unwrap_or(0);
    let days = req.days.unwrap_or(0);
    if !(0..=MAX_ADVANCE_SECONDS).contains(&seconds) {
        return AppError::invalid(
            "seconds",
            format!("must be 0 to {MAX_ADVANCE_SECONDS} (five years)"),
        )
        .into_response();
    }
    if !(0..=MAX_ADVANCE_DAYS).contains(&days) {
        return AppError::invalid("days", format!("must be 0 to {MAX_ADVANCE_DAYS}"))
            .into_response();
    }
    let secs = seconds + days * 86_400;
    if secs == 0 {
        return AppError::invalid(
            if req.days.is_some() {
                "days"
            } else {
                "seconds"
            },
            "must move the clock forward by at least 1 second",
        )
        .into_response();
    }
    let result = async {
        hephaestus_billing::subscriptions::advance_clock(
            &state.store,
            std::time::Duration::from_secs(secs.unsigned_abs()),
        )
        .await?;
        state.refresh_clock().await?;
        let billed = hephaestus_billing::subscriptions::settle_all(
            &state.store,
            state.gateway.as_ref(),
            &state.config.dunning,
            std::time::Duration::from_secs(20),
        )
        .await
        .map_err(|e| AppError::Unavailable(format!("billing did not finish: {e}")))?;
        state.refresh_clock().await?;
        // Segments depend on time: the jump aged every customer's at once.
        state.segment_sweep.notify_one();
        clock_view(&state, Some(billed)).await
    }
    .await;
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
