//! The API's one error type. Every failure a client can see is one of these, rendered as
//! `{"error": {"code", "message", "field"?, …}}` with a stable `code`; internal details are
//! logged with the request's span and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hephaestus_core::ValidationError;
use hephaestus_core::keys::Scope;
use hephaestus_store::StoreError;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    InvalidJson(String),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key's scope is `{have}`; this route needs `{need}`")]
    Forbidden { have: Scope, need: Scope },
    #[error("no such {kind}: {id}")]
    NotFound { kind: &'static str, id: String },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        /// Extra fields for the error object, e.g. the id of the object in the way.
        details: Map<String, Value>,
    },
    #[error("rate limit exceeded; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(anyhow::Error),
}

/// Seconds a client is told to wait before retrying a 503: about how long the pool takes to
/// reconnect once the database is back.
const RETRY_UNAVAILABLE_SECS: u64 = 1;

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid { .. } | AppError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } | AppError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Invalid { .. } => "invalid_request",
            AppError::InvalidJson(_) => "invalid_json",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden { .. } => "insufficient_scope",
            AppError::NotFound { .. } => "resource_missing",
            AppError::RouteNotFound { .. } => "route_not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Conflict { code, .. } => code,
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Unavailable(_) => "service_unavailable",
            AppError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body. Server errors say only that something went wrong: the detail is in
    /// the log under the request id the response carries.
    pub fn body(&self) -> Value {
        let message = match self {
            AppError::Internal(_) => {
                "internal error; the server log has the details under this response's x-request-id"
                    .to_string()
            }
            AppError::Unavailable(_) => {
                "the service is temporarily unavailable; retry shortly".to_string()
            }
            other => other.to_string(),
        };
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code()));
        error.insert("message".into(), json!(message));
        match self {
            AppError::Invalid { field: Some(f), .. } => {
                error.insert("field".into(), json!(f));
            }
            AppError::Conflict { details, .. } => {
                error.extend(details.clone());
            }
            _ => {}
        }
        json!({ "error": error })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Internal(e) => tracing::error!(error = ?e, "request failed"),
            AppError::Unavailable(e) => tracing::warn!(error = %e, "request failed: unavailable"),
            _ => tracing::debug!(code = self.code(), "request rejected"),
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        let retry_after = match self {
            AppError::RateLimited { retry_after } => Some(retry_after),
            AppError::Unavailable(_) => Some(RETRY_UNAVAILABLE_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An error from below is a 503 when the database was unreachable, wherever in its chain
/// that shows (a gateway or billing error wrapping the store's), and a 500 otherwise.
impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        let unavailable = e.chain().any(|cause| {
            cause
                .downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_unavailable)
                || cause
                    .downcast_ref::<hephaestus_store::SqlxError>()
                    .is_some_and(hephaestus_store::is_unavailable)
        });
        if unavailable {
            AppError::Unavailable(format!("{e:#}"))
        } else {
            AppError::Internal(e)
        }
    }
}

impl From<ValidationError> for AppError {
    fn from(e: ValidationError) -> Self {
        AppError::Invalid {
            field: Some(e.field),
            message: e.message,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            AppError::Unavailable(e.to_string())
        } else {
            AppError::Internal(e.into())
        }
    }
}

pub type ApiResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;
    use hephaestus_store::SqlxError;

    #[test]
    fn an_unreachable_database_is_a_503_wherever_it_shows() {
        let refused = || {
            SqlxError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ))
        };
        for e in [
            AppError::from(StoreError::Database(SqlxError::PoolTimedOut)),
            AppError::from(StoreError::Database(refused())),
            AppError::from(StoreError::Unavailable("batch".into())),
            AppError::from(anyhow::Error::new(StoreError::Database(refused()))),
            AppError::from(anyhow::Error::new(refused()).context("loading a payment")),
        ] {
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
            let response = e.into_response();
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
        for e in [
            AppError::from(StoreError::Database(SqlxError::RowNotFound)),
            AppError::from(StoreError::Corrupt("x".into())),
            AppError::from(anyhow::anyhow!("something else")),
        ] {
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e:?}");
        }
    }
}
