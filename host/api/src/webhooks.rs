//! `POST /api/v1/revenue/webhooks/stripe`: authenticated by `Stripe-Signature`, not an API
//! key. A verified event is stored in the inbox (once per event id) and answered at once;
//! a background worker applies it. Nothing is stored for a request that fails verification.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use hephaestus_billing::stripe_events;
use hephaestus_billing::webhook::{self, SignatureError};
use hephaestus_core::Timestamp;
use hephaestus_store::inbox::{self, NewInboxEvent};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::AppError;
use crate::extract::{body_bytes, parse_json};

/// The part of a Stripe event the inbox needs; the whole body is stored as received.
#[derive(Debug, Deserialize)]
struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

fn signature_error(e: SignatureError) -> AppError {
    AppError::Invalid {
        field: Some("Stripe-Signature".into()),
        message: e.to_string(),
    }
}

#[utoipa::path(
    post, path = "/api/v1/revenue/webhooks/stripe", tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=… as Stripe signs it")),
    responses(
        (status = 200, description = "`{received: true, duplicate}`: stored, processed shortly"),
        (status = 400, body = crate::openapi::ErrorBody, description = "bad, stale or missing signature; nothing stored"),
    )
)]
pub async fn stripe(State(state): State<AppState>, req: Request) -> Response {
    match receive(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn receive(state: &AppState, req: Request) -> Result<Response, AppError> {
    if state.config.stripe_webhook_secrets.is_empty() {
        return Err(AppError::Invalid {
            field: None,
            message: "no STRIPE_WEBHOOK_SECRET is configured on this server".into(),
        });
    }
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| signature_error(SignatureError::Malformed))?;
    let body = body_bytes(req, state.config.max_body_bytes).await?;
    let now = Timestamp::now().as_micros() / 1_000_000;
    webhook::verify(
        &body,
        header.as_deref(),
        &state.config.stripe_webhook_secrets,
        now,
        webhook::DEFAULT_TOLERANCE_SECS,
    )
    .map_err(signature_error)?;
    let head: EventHead = parse_json(&body)?;
    let payload = String::from_utf8(body.to_vec())
        .map_err(|_| AppError::InvalidJson("the body is not UTF-8".into()))?;
    let fresh = inbox::receive(
        &state.store,
        NewInboxEvent {
            source: stripe_events::SOURCE,
            object_id: head.data.object["id"].as_str().map(str::to_string),
            id: head.id,
            kind: head.kind,
            created: head.created,
            payload,
        },
    )
    .await?;
    if fresh {
        state.webhook_worker.notify_one();
    }
    Ok(axum::Json(json!({ "received": true, "duplicate": !fresh })).into_response())
}
