//! The HTTP client the Stripe gateway sends async-stripe's requests with.
//!
//! async-stripe's own client turns an error answer whose body is not Stripe's JSON (a
//! proxy's bare 404, a load balancer's 502 page) into "could not deserialize" and drops its
//! HTTP status, so such an answer could only be read as "Stripe unavailable". This client
//! keeps the status: such an answer becomes a [`StripeError::Stripe`] with that status and a
//! message saying the body was not Stripe's, and is mapped like any other answer of that
//! status. Everything else is what async-stripe's client does: the same headers (key,
//! `Stripe-Version`, user agent, `Idempotency-Key`), form bodies, one attempt per call
//! (the gateway never retries on its own: a retried request carries the same key), and a
//! time limit per attempt.

use std::time::Duration;

use ::stripe::{ApiErrors, ApiErrorsType, StripeError};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeMethod};

#[derive(Clone)]
pub(crate) struct StripeHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https://api.stripe.com/`, or another Stripe-compatible server; ends with `/`.
    api_base: String,
    authorization: HeaderValue,
    user_agent: HeaderValue,
    stripe_version: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for StripeHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeHttp")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl StripeHttp {
    pub(crate) fn new(
        secret_key: &str,
        api_base: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {secret_key}"))
            .map_err(|_| "the Stripe secret key is not a valid header value".to_string())?;
        authorization.set_sensitive(true);
        let user_agent = HeaderValue::try_from(format!(
            "Stripe/v1 RustBindings/1.0.0-rc.10 hephaestus/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .map_err(|e| e.to_string())?;
        // The API version async-stripe's types are generated for.
        let stripe_version = HeaderValue::from_str(stripe_shared::version::VERSION.as_str())
            .map_err(|e| e.to_string())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(StripeHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            api_base,
            authorization,
            user_agent,
            stripe_version,
            timeout,
        })
    }
}

impl StripeClient for StripeHttp {
    type Err = StripeError;

    async fn execute(&self, req: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let (req, config) = req.into_pieces();
        let mut uri = format!("{}v1{}", self.api_base, req.path);
        if let Some(query) = &req.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match req.method {
            StripeMethod::Get => hyper::Method::GET,
            StripeMethod::Post => hyper::Method::POST,
            StripeMethod::Delete => hyper::Method::DELETE,
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .header("stripe-version", self.stripe_version.clone());
        if let Some(key) = config.request_strategy.as_ref().and_then(|s| s.get_key()) {
            request = request.header("idempotency-key", key.as_str());
        }
        let body = match req.body {
            Some(form) => {
                request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::default(),
        };
        let request = request
            .body(body)
            .map_err(|e| StripeError::ClientError(e.to_string()))?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| StripeError::ClientError(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| StripeError::ClientError(e.to_string()))?
                .to_bytes();
            Ok::<_, StripeError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(config.timeout.unwrap_or(self.timeout), attempt)
            .await
            .map_err(|_| StripeError::Timeout)??;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(error_answer(status.as_u16(), &bytes))
    }
}

/// The error an answer of `status` with `body` stands for: Stripe's own when the body is
/// Stripe's JSON, else one that names the status and says the body was not Stripe's.
pub(crate) fn error_answer(status: u16, body: &[u8]) -> StripeError {
    let parsed = std::str::from_utf8(body)
        .ok()
        .and_then(|text| miniserde::json::from_str::<stripe_shared::Error>(text).ok());
    let error = match parsed {
        Some(e) => *e.error,
        None => ApiErrors {
            advice_code: None,
            charge: None,
            code: None,
            decline_code: None,
            doc_url: None,
            message: Some(format!(
                "Stripe answered {status} with a body that is not Stripe's JSON"
            )),
            network_advice_code: None,
            network_decline_code: None,
            param: None,
            payment_intent: None,
            payment_method: None,
            payment_method_type: None,
            request_log_url: None,
            setup_intent: None,
            source: None,
            type_: if status >= 500 {
                ApiErrorsType::ApiError
            } else {
                ApiErrorsType::InvalidRequestError
            },
        },
    };
    StripeError::Stripe(Box::new(error), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_json_keeps_its_status() {
        for (status, body) in [(404, &b"Not Found"[..]), (502, b"<html>bad gateway</html>")] {
            match error_answer(status, body) {
                StripeError::Stripe(e, s) => {
                    assert_eq!(s, status);
                    assert!(e.message.unwrap().contains(&status.to_string()));
                }
                other => panic!("{other:?}"),
            }
        }
        let json = br#"{"error": {"type": "invalid_request_error", "message": "No such customer", "param": "id"}}"#;
        match error_answer(404, json) {
            StripeError::Stripe(e, 404) => {
                assert_eq!(e.message.as_deref(), Some("No such customer"));
                assert_eq!(e.param.as_deref(), Some("id"));
            }
            other => panic!("{other:?}"),
        }
    }
}
