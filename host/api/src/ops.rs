//! Routes for operators: health, readiness, metrics, the API description, the audit log.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hephaestus_store::audit;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::AdminKey;
use crate::customers::page_params;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::write;

/// The process is up. Says nothing about its dependencies.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200)))]
pub async fn health() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200), (status = 503)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            axum::Json(json!({ "status": "ready", "database": state.store.kind() })).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": {
                    "code": "not_ready",
                    "message": "the database is not reachable",
                }})),
            )
                .into_response()
        }
    }
}

/// Prometheus series in the OpenMetrics text format: requests and latency by route and
/// status, plugin calls, and the database's write batches. No key: scrape it from inside
/// the network.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    let mut scraped = crate::metrics::render_plugins(&state.plugins.metrics());
    let sandbox_charges = state.gateway.as_sandbox().and_then(|g| g.charge_batches());
    scraped.push_str(&crate::metrics::render_batches(
        &state.store,
        sandbox_charges,
    ));
    // The registry ends its exposition with `# EOF`; the plugin and store series go before it.
    match text.rfind("# EOF") {
        Some(at) => text.insert_str(at, &scraped),
        None => text.push_str(&scraped),
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// This document: the API description, OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    let mut response = state.openapi.as_str().to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The API reference page: Swagger UI over `/openapi.json`, every asset from this host.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html")))]
pub async fn docs() -> axum::response::Html<&'static str> {
    axum::response::Html(
        r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Hephaestus API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle({
        url: "/openapi.json",
        dom_id: "#swagger-ui",
        validatorUrl: null,
        deepLinking: true,
      });
    };
  </script>
</body>
</html>"##,
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    /// An audit entry id from the previous page (`aud_…`).
    pub starting_after: Option<String>,
}

/// Mutating requests, newest first: key, method, path, status, request id, time. Admin only.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "operations", params(AuditParams),
    responses((status = 200, body = crate::openapi::Page<crate::openapi::AuditEntryView>), (status = 403, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["admin"]))
)]
pub async fn audit_list(
    State(state): State<AppState>,
    _auth: AdminKey,
    Query(params): Query<AuditParams>,
) -> ApiResult<axum::Json<Value>> {
    let (limit, starting_after) = page_params(
        params.limit,
        params.starting_after,
        hephaestus_core::ids::prefix::AUDIT,
    )?;
    let rows = audit::list(&state.store, limit + 1, starting_after.as_deref()).await?;
    Ok(axum::Json(write::page_of(rows, limit, |e| {
        json!({
            "id": e.id,
            "object": "audit_entry",
            "api_key_id": e.api_key_id,
            "method": e.method,
            "path": e.path,
            "status": e.status,
            "request_id": e.request_id,
            "created_at": e.created_at,
        })
    })))
}
