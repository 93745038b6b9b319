//! API key authentication, scopes, rate limiting and the audit trail of mutating requests.
//!
//! [`authenticate`] runs on every `/api/v1` route: it resolves the bearer key (through a
//! short-lived cache so a hot key costs no query), counts the request against the key's
//! rate limit, and after the handler records an audit entry for any mutating request the
//! handler did not already record inside its own transaction (POSTs that only compute,
//! marked [`ChangesNothing`], are not mutating). Handlers state the scope they
//! need by taking [`Auth<R>`](Auth).

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hephaestus_core::keys::{self, Scope};
use hephaestus_store::audit::{self, AuditEntry};
use hephaestus_store::keys::ApiKey;

use crate::AppState;
use crate::error::AppError;
use crate::rate_limit::{RateLimit, Refused};
use crate::ttl_cache::TtlCache;

/// The key a request was made with, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub scope: Scope,
}

/// Put on a response whose audit entry was written in the request's own transaction.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Put on the responses of POST routes that only compute an answer (quotes, previews) and
/// change nothing: the audit trail records changes, and a write per quote would cost more
/// than the quote.
#[derive(Debug, Clone, Copy)]
pub struct ChangesNothing;

/// A route layer (`axum::middleware::map_response`) marking a route [`ChangesNothing`].
pub async fn changes_nothing(mut response: Response) -> Response {
    response.extensions_mut().insert(ChangesNothing);
    response
}

/// Remembers recent key lookups, by key hash. Revocations made through this host drop the
/// entry at once; made elsewhere (the CLI, another host), they take effect within the TTL.
pub type KeyCache = TtlCache<ApiKey>;

fn bearer(parts_headers: &axum::http::HeaderMap) -> Result<&str, AppError> {
    let value = parts_headers
        .get(header::AUTHORIZATION)
        .ok_or(AppError::Unauthorized(
            "missing API key: send `Authorization: Bearer hk_…`",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("invalid API key"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AppError::Unauthorized(
        "Authorization must be `Bearer <API key>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::Unauthorized(
            "Authorization must be `Bearer <API key>`",
        ));
    }
    Ok(token.trim())
}

async fn resolve(state: &AppState, token: &str) -> Result<ApiKey, AppError> {
    if !keys::looks_like_key(token) {
        return Err(AppError::Unauthorized("invalid API key"));
    }
    let hash = keys::hash(token);
    let key = match state.key_cache.get(&hash) {
        Some(key) => key,
        None => {
            let key = hephaestus_store::keys::find_by_hash(&state.store, &hash)
                .await?
                .ok_or(AppError::Unauthorized("invalid API key"))?;
            state.key_cache.put(hash, key.clone());
            key
        }
    };
    if key.revoked_at.is_some() {
        return Err(AppError::Unauthorized("this API key has been revoked"));
    }
    Ok(key)
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware for every `/api/v1` route except the signature-authenticated webhooks.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let key = match bearer(req.headers()) {
        Ok(token) => resolve(&state, token).await,
        Err(e) => Err(e),
    };
    let key = match key {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    // A key made before keys stored their window counts in the server's window.
    let key_rate = key.rate_limit.map(|limit| RateLimit {
        limit,
        window_secs: key
            .rate_limit_window_secs
            .unwrap_or(state.config.rate_limit.window_secs),
    });
    match state.limiter.check(&state.store, &key.id, key_rate).await {
        Ok(()) => {}
        Err(Refused::Limited(retry_after)) => {
            return AppError::RateLimited { retry_after }.into_response();
        }
        Err(Refused::Unavailable(e)) => return AppError::from(e).into_response(),
    }
    let method = req.method().clone();
    let path = original_path(&req);
    let request_id = request_id(req.headers());
    req.extensions_mut().insert(Principal {
        key_id: key.id.clone(),
        scope: key.scope,
    });
    let response = next.run(req).await;
    if is_mutating(&method)
        && response.extensions().get::<Audited>().is_none()
        && response.extensions().get::<ChangesNothing>().is_none()
    {
        let entry = AuditEntry::new(
            Some(key.id),
            method.as_str(),
            &path,
            response.status().as_u16(),
            request_id,
        );
        if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            // Most likely the database is away: writing the entry now would hold the answer
            // for another acquire timeout, so it is tried once in the background instead.
            let store = state.store.clone();
            tokio::spawn(async move {
                if let Err(e) = audit::record_alone(&store, &entry).await {
                    tracing::warn!(error = %e, "could not write the audit entry of a 503");
                }
            });
        } else if let Err(e) = audit::record_alone(&state.store, &entry).await {
            tracing::error!(error = %e, "could not write the audit entry");
        }
    }
    response
}

/// The path as the client sent it: nested routers see it without their prefix.
pub fn original_path<B>(req: &axum::http::Request<B>) -> String {
    req.extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

pub fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The scope a route needs, as a type.
pub trait RequiredScope {
    const SCOPE: Scope;
}

#[derive(Debug)]
pub struct ReadScope;
#[derive(Debug)]
pub struct WriteScope;
#[derive(Debug)]
pub struct AdminScope;

impl RequiredScope for ReadScope {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for WriteScope {
    const SCOPE: Scope = Scope::Write;
}
impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

/// The authenticated key, checked to have at least scope `R`.
#[derive(Debug)]
pub struct Auth<R>(pub Principal, PhantomData<R>);

pub type ReadKey = Auth<ReadScope>;
pub type WriteKey = Auth<WriteScope>;
pub type AdminKey = Auth<AdminScope>;

impl<R: RequiredScope, S: Send + Sync> FromRequestParts<S> for Auth<R> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(AppError::Unauthorized("missing API key"))?;
        if !principal.scope.allows(R::SCOPE) {
            return Err(AppError::Forbidden {
                have: principal.scope,
                need: R::SCOPE,
            });
        }
        Ok(Auth(principal, PhantomData))
    }
}
