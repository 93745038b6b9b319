//! `POST /api/v1/revenue/webhooks/stripe`: authenticated by `Stripe-Signature`, not an API
//! key. A verified event is stored in the inbox (once per event id) and answered at once;
//! a background worker applies it. Nothing is stored for a request that fails verification.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_billing::stripe_events;
use hephaestus_core::Timestamp;
use hephaestus_core::webhook::{self, SignatureError};
use hephaestus_store::inbox::{self, NewInboxEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::AdminKey;
use crate::error::{ApiResult, AppError};
use crate::extract::{PathId, Query, body_bytes, parse_json};
use crate::write::{self, RequestMeta, Written};

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
        (status = 400, body = crate::openapi::ErrorBody, description = "bad, stale or missing signature, or a body the worker could not read (nested more than 64 levels); nothing stored"),
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
    if webhook::nests_deeper_than(&body, webhook::MAX_NESTING) {
        return Err(AppError::InvalidJson(format!(
            "the event nests arrays and objects more than {} levels deep: it could not be \
             read back to be applied",
            webhook::MAX_NESTING
        )));
    }
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// pending, processed, ignored or failed.
    pub status: Option<String>,
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    /// An event id from the previous page.
    pub starting_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxView {
    /// The gateway's event id (`evt_…`).
    pub id: String,
    pub object: &'static str,
    #[serde(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    /// pending, processed, ignored or failed.
    pub status: String,
    pub attempts: i64,
    /// Why it was ignored, or the last failure.
    pub last_error: Option<String>,
    /// The gateway's creation time, Unix seconds.
    pub created: i64,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub processed_at: Option<Timestamp>,
}

/// Received Stripe events, most recent first: what the worker did with each and why.
#[utoipa::path(
    get, path = "/api/v1/revenue/webhooks/events", tag = "payments", params(InboxParams),
    responses((status = 200, body = crate::openapi::Page<InboxView>), (status = 403, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["admin"]))
)]
pub async fn list_events(
    State(state): State<AppState>,
    _auth: AdminKey,
    Query(params): Query<InboxParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 100"));
    }
    if let Some(s) = &params.status
        && !matches!(s.as_str(), "pending" | "processed" | "ignored" | "failed")
    {
        return Err(AppError::invalid(
            "status",
            "must be pending, processed, ignored or failed",
        ));
    }
    let rows = inbox::list(
        &state.store,
        stripe_events::SOURCE,
        params.status.as_deref(),
        params.starting_after.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(axum::Json(write::page_of(rows, limit, |e| InboxView {
        id: e.id.clone(),
        object: "webhook_event",
        kind: e.kind.clone(),
        object_id: e.object_id.clone(),
        status: e.status.clone(),
        attempts: e.attempts,
        last_error: e.last_error.clone(),
        created: e.created,
        received_at: Timestamp::from_micros(e.received_at),
        processed_at: e.processed_at.map(Timestamp::from_micros),
    })))
}

/// Puts a `failed` or `ignored` event back in the queue, with a fresh attempt budget.
#[utoipa::path(
    post, path = "/api/v1/revenue/webhooks/events/{id}/retry", tag = "payments",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, description = "`{id, status: pending}`"), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["admin"]))
)]
pub async fn retry_event(
    State(state): State<AppState>,
    auth: AdminKey,
    meta: RequestMeta,
    PathId(id): PathId,
) -> Response {
    let worker = state.webhook_worker.clone();
    let response = write::run(&state, &auth.0, &meta, b"", move |tx| {
        Box::pin(async move {
            if !inbox::requeue(tx, stripe_events::SOURCE, &id).await? {
                return Err(AppError::NotFound {
                    kind: "failed or ignored webhook event",
                    id,
                });
            }
            Ok(Written::json(
                StatusCode::OK,
                &json!({ "id": id, "object": "webhook_event", "status": "pending" }),
                None,
            ))
        })
    })
    .await;
    if response.status().is_success() {
        worker.notify_one();
    }
    response
}
