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
    use std::collections::BTreeSet;

    use super::*;
    use hephaestus_store::SqlxError;

    /// One of each variant. The match below has no catch-all, so a new variant does not
    /// compile until it is listed here, and so reaches the README check.
    fn one_of_each() -> Vec<AppError> {
        let all = vec![
            AppError::invalid("f", "m"),
            AppError::InvalidJson("m".into()),
            AppError::UnsupportedMediaType,
            AppError::PayloadTooLarge { limit: 1 },
            AppError::Unauthorized("m"),
            AppError::Forbidden {
                have: Scope::Read,
                need: Scope::Admin,
            },
            AppError::NotFound {
                kind: "k",
                id: "i".into(),
            },
            AppError::RouteNotFound {
                method: "GET".into(),
                path: "/".into(),
            },
            AppError::MethodNotAllowed,
            AppError::RateLimited { retry_after: 1 },
            AppError::Unavailable("m".into()),
            AppError::Internal(anyhow::anyhow!("m")),
        ];
        for e in &all {
            match e {
                AppError::Invalid { .. }
                | AppError::InvalidJson(_)
                | AppError::UnsupportedMediaType
                | AppError::PayloadTooLarge { .. }
                | AppError::Unauthorized(_)
                | AppError::Forbidden { .. }
                | AppError::NotFound { .. }
                | AppError::RouteNotFound { .. }
                | AppError::MethodNotAllowed
                | AppError::RateLimited { .. }
                | AppError::Unavailable(_)
                | AppError::Internal(_) => {}
                // Its codes are the crate's literals, found below.
                AppError::Conflict { .. } => {}
            }
        }
        all
    }

    /// Every code written as a literal in this crate's sources: `code: "…"` (a `Conflict`
    /// or an error struct), `"code": "…"` (a JSON body) and `conflict("…"` (the helpers
    /// that build a `Conflict`). Read from the files themselves, so a module added later is
    /// covered without being listed.
    fn literal_codes() -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = 0;
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for opening in ["code: \"", "\"code\": \"", "conflict(\"", "conflict( \""] {
                for (at, _) in text.match_indices(opening) {
                    let rest = &text[at + opening.len()..];
                    let code = &rest[..rest.find('"').unwrap()];
                    if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !code.is_empty()
                    {
                        out.insert(code.to_string());
                    }
                }
            }
        }
        assert!(files > 10, "read only {files} files in {}", dir.display());
        out
    }

    /// The codes of the README's error table (rows like ``| `code` | 409 | … |``).
    fn readme_codes() -> BTreeSet<String> {
        let readme = include_str!("../../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| code | status |"));
        assert!(
            lines.next().is_some(),
            "README has no `| code | status |` table"
        );
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cell = l.split('|').nth(1).unwrap().trim();
                cell.trim_matches('`').to_string()
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_error_code_and_no_other() {
        let mut codes: BTreeSet<String> =
            one_of_each().iter().map(|e| e.code().to_string()).collect();
        codes.extend(literal_codes());
        for status in 400..600 {
            let status = StatusCode::from_u16(status).unwrap();
            codes.insert(crate::fallback_error(status).0.to_string());
        }
        // The scan must see the codes it claims to find.
        for known in [
            "customer_exists",
            "quote_expired",
            "idempotency_key_reused",
            "not_ready",
        ] {
            assert!(codes.contains(known), "{known} not found in the sources");
        }
        let documented = readme_codes();
        let missing: Vec<_> = codes.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&codes).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "README's error table lacks {missing:?} and lists codes the API never sends: {stale:?}"
        );
    }

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
