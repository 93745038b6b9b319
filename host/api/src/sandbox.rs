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
    params(("id" = String, Path)), request_body = Authenticate,
    responses((status = 200, body = PaymentView), (status = 400, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = []))
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
