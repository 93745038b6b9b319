//! Extractors that answer bad input with [`AppError`] instead of axum's plain-text
//! rejections, and name the field to blame.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
pub use bytes_ext::body_bytes;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::AppError;

/// A JSON request body, parsed strictly: the body must be `application/json`, within the
/// configured size, syntactically valid, with no trailing data, and match `T` exactly
/// (request types deny unknown fields).
#[derive(Debug)]
pub struct Json<T> {
    pub value: T,
    /// The body as received, for the idempotency fingerprint.
    pub raw: axum::body::Bytes,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Json<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let raw = body_bytes(req, state.config.max_body_bytes).await?;
        let value = parse_json(&raw)?;
        Ok(Json { value, raw })
    }
}

/// Parses `bytes` as exactly one JSON value of type `T`, turning serde's errors into
/// field-naming API errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::InvalidJson(
            "request body is empty; send a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end()
        .map_err(|e| AppError::InvalidJson(format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}

fn json_error(path: &str, err: &serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            AppError::InvalidJson(format!("request body is not valid JSON: {err}"))
        }
        Category::Data => field_error(path, &err.to_string()),
    }
}

/// Builds the error for a value that did not fit the request type. serde reports missing,
/// unknown and duplicate fields at the enclosing object, naming the field only in its
/// message, so the name is lifted out of the message here.
fn field_error(path: &str, message: &str) -> AppError {
    let message = strip_position(message);
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let parent = if path == "." { "" } else { path };
    // Unknown fields are reported at the field itself, missing ones at the parent.
    let field = match named {
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_string(),
        Some(name) if parent.is_empty() => name.to_string(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => {
            return AppError::Invalid {
                field: None,
                message,
            };
        }
        None => parent.to_string(),
    };
    AppError::Invalid {
        field: Some(field),
        message,
    }
}

/// serde_json appends " at line L column C"; clients get the field instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Reads an optional whole number that a client may have written as `3` or `3.0`: JSON
/// does not tell the two apart, and the API's schema calls both an integer. Use with
/// `#[serde(default, deserialize_with = "crate::extract::whole_number")]`.
pub fn whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("number too large"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // Exactly representable whole floats only; i64::MAX as f64 rounds up, so the
            // bound is exclusive.
            if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("expected a whole number, got {v}")))
            }
        }
    }
    match d.deserialize_any(Whole)? {
        None => Ok(None),
        Some(n) => T::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("number {n} is out of range"))),
    }
}

/// Query-string parameters, parsed with the field to blame named on error.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                match field_error(&path, &message) {
                    AppError::Invalid {
                        field: None,
                        message,
                    } => AppError::Invalid {
                        field: None,
                        message: format!("bad query string: {message}"),
                    },
                    other => other,
                }
            })
    }
}

/// Loads the object `id` names with `fetch`. A malformed id (wrong prefix, wrong shape) is
/// answered 404 without a query, as is an id that names nothing.
pub async fn load_by_id<T, Fut>(
    kind: &'static str,
    id_prefix: &str,
    id: String,
    fetch: impl FnOnce(String) -> Fut,
) -> Result<T, AppError>
where
    Fut: std::future::Future<Output = hephaestus_store::Result<Option<T>>>,
{
    if !hephaestus_core::ids::is_well_formed(id_prefix, &id) {
        return Err(AppError::NotFound { kind, id });
    }
    fetch(id.clone())
        .await?
        .ok_or(AppError::NotFound { kind, id })
}

/// One path parameter, as text. Malformed ids are answered by the handler as missing.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| AppError::Invalid {
                    field: None,
                    message: format!("bad path: {}", e.body_text()),
                })?;
        Ok(PathId(id))
    }
}

mod bytes_ext {
    use axum::body::Bytes;
    use axum::extract::Request;
    use http_body_util::{BodyExt, Limited};

    use crate::error::AppError;

    /// A body this much over the limit is still read (and dropped) before answering 413:
    /// answering while the client is still sending makes many clients report a broken
    /// connection instead of the 413. Anything larger is cut off.
    const DRAIN_CAP: usize = 4 * 1024 * 1024;

    /// Reads the whole body, refusing more than `limit` bytes (checked against the declared
    /// length first, so an honest large upload is refused before it is buffered).
    pub async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, AppError> {
        let too_large = AppError::PayloadTooLarge { limit };
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = req.into_body();
        if declared.is_some_and(|n| n > limit as u64) {
            if declared.is_some_and(|n| n <= (limit + DRAIN_CAP) as u64) {
                drain(body).await;
            }
            return Err(too_large);
        }
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                AppError::InvalidJson(format!("could not read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > limit + DRAIN_CAP {
                    return Err(too_large);
                }
                if seen <= limit {
                    buf.extend_from_slice(&data);
                }
            }
        }
        if seen > limit {
            return Err(too_large);
        }
        Ok(Bytes::from(buf))
    }

    async fn drain(body: axum::body::Body) {
        let _ = Limited::new(body, DRAIN_CAP).collect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn field_of(json: &str) -> (String, Option<String>) {
        match parse_json::<Body>(json.as_bytes()).unwrap_err() {
            AppError::Invalid { field, .. } => ("invalid_request".into(), field),
            other => (other.code().into(), None),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of(r#"{}"#).1.as_deref(), Some("email"));
        assert_eq!(field_of(r#"{"email": 5}"#).1.as_deref(), Some("email"));
        assert_eq!(
            field_of(r#"{"email": "a", "x": 1}"#).1.as_deref(),
            Some("x")
        );
        assert_eq!(
            field_of(r#"{"email": "a", "inner": {"n": -1}}"#)
                .1
                .as_deref(),
            Some("inner.n")
        );
        assert_eq!(
            field_of(r#"{"email": "a", "inner": {}}"#).1.as_deref(),
            Some("inner.n")
        );
        assert_eq!(
            field_of(r#"{"email": "a", "email": "b"}"#).1.as_deref(),
            Some("email")
        );
        assert_eq!(
            field_of(r#"{"email": "a", "inner": {"n": 1, "m": 2}}"#)
                .1
                .as_deref(),
            Some("inner.m")
        );
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for bad in [
            "",
            "  ",
            "{",
            r#"{"email": "a"} x"#,
            "nul",
            r#"{"email": "a",}"#,
        ] {
            assert_eq!(field_of(bad).0, "invalid_json", "{bad:?}");
        }
    }
}
