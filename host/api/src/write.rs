//! The write path every creating or changing request takes: claim the `Idempotency-Key`,
//! run the domain change in one transaction, and commit the audit entry and the stored
//! response in that same transaction. A replay, a conflicting reuse and a concurrent reuse
//! are answered here, so handlers only describe their change.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use hephaestus_store::Tx;
use hephaestus_store::attempts;
use hephaestus_store::audit::{self, AuditEntry};
use hephaestus_store::idempotency::{self, Claim, IdemKey};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::AppState;
use crate::auth::{Audited, Principal, request_id};
use crate::error::AppError;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What a successful change answers with.
#[derive(Debug)]
pub struct Written {
    pub status: StatusCode,
    /// The JSON body, already serialised: amounts are written as exact decimal numbers,
    /// which a `serde_json::Value` cannot hold.
    pub body: String,
    /// The object the request made or changed: stored replays naming it can be forgotten
    /// when it is erased.
    pub resource_id: Option<String>,
}

/// Request facts the write path needs, taken before the body is read.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub method: Method,
    pub path: String,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let idempotency_key = match parts.headers.get(IDEMPOTENCY_HEADER) {
            None => None,
            Some(v) => {
                let key = v
                    .to_str()
                    .ok()
                    .filter(|k| {
                        !k.is_empty()
                            && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                            && k.bytes().all(|b| b.is_ascii_graphic())
                    })
                    .ok_or_else(|| {
                        AppError::invalid(
                            "Idempotency-Key",
                            format!(
                                "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                            ),
                        )
                    })?;
                Some(key.to_string())
            }
        };
        Ok(RequestMeta {
            method: parts.method.clone(),
            path: parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map(|u| u.path().to_string())
                .unwrap_or_else(|| parts.uri.path().to_string()),
            request_id: request_id(&parts.headers),
            idempotency_key,
        })
    }
}

/// A change to run in the request's transaction. It owns what it needs: on SQLite it runs
/// on the writer thread, batched with other requests' changes.
pub trait Change:
    for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Written, AppError>> + Send + 'static
{
}

impl<F> Change for F where
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Written, AppError>> + Send + 'static
{
}

/// Names a closure as a [`Change`], so the compiler infers its signature where it is written
/// (inside an `async` block it could not).
pub fn change<F: Change>(f: F) -> F {
    f
}

/// Runs one change. `body` is the raw request body: with the method and path it is the
/// fingerprint a reused key is compared on.
pub async fn run(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    body: &[u8],
    change: impl Change,
) -> Response {
    match claim(state, who, meta, body).await {
        Ok(claimed) => claimed.commit(change).await,
        Err(answer) => answer,
    }
}

/// A request that holds its `Idempotency-Key` (if it sent one) and has not run yet. Work
/// that must happen outside the transaction (a call to a payment gateway) goes between
/// [`claim`] and [`Claimed::commit`].
#[derive(Debug)]
pub struct Claimed {
    state: AppState,
    idem: Option<IdemKey>,
    key_id: String,
    method: Method,
    path: String,
    request_id: Option<String>,
}

/// Claims the request's `Idempotency-Key`. `Err` is the answer to send instead of running:
/// the stored first response, or a conflict.
pub async fn claim(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    body: &[u8],
) -> Result<Claimed, Response> {
    claim_inner(state, who, meta, body, None).await
}

/// [`claim`] for a request about to call the payment gateway: `attempt` (see
/// [`crate::recovery`]) is recorded in the transaction that claims the key, before the call,
/// so that if this process dies during the call, recovery finds out what the gateway did and
/// records it. Its id is `attempt.id`; the change that records the outcome must finish it.
pub async fn claim_attempt(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    body: &[u8],
    attempt: attempts::Attempt,
) -> Result<Claimed, Response> {
    claim_inner(state, who, meta, body, Some(attempt)).await
}

async fn claim_inner(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    body: &[u8],
    attempt: Option<attempts::Attempt>,
) -> Result<Claimed, Response> {
    let mut idem = meta.idempotency_key.as_ref().map(|key| IdemKey {
        api_key_id: who.key_id.clone(),
        key: key.clone(),
        request_hash: fingerprint(&meta.method, &meta.path, body),
        claim_token: String::new(),
    });
    if idem.is_none()
        && let Some(row) = attempt.clone()
    {
        // No key to claim: the attempt alone, batched with other requests' on PostgreSQL.
        if let Err(e) = attempts::record(&state.store, row).await {
            return Err(AppError::from(e).into_response());
        }
    }
    // A claim held by a request that died with its gateway call unrecorded is settled by
    // recovery here and now, and then claimed again: answered from what it recorded.
    let mut settled_orphan = false;
    while let Some(k) = idem.as_mut() {
        let row = attempt.clone();
        let claimed = idempotency::claim_with(
            &state.store,
            k,
            state.config.idempotency_lock_secs,
            move |tx, k| {
                Box::pin(async move {
                    if let Some(mut row) = row {
                        row.api_key_id = Some(k.api_key_id.clone());
                        row.idem_key = Some(k.key.clone());
                        row.claim_token = Some(k.claim_token.clone());
                        attempts::insert(tx, &row).await?;
                    }
                    Ok::<_, AppError>(())
                })
            },
        )
        .await;
        match claimed {
            Ok((Claim::Acquired, _)) => break,
            Ok((Claim::Replay { status, body }, _)) => return Err(replay(status, body)),
            Ok((Claim::Mismatch, _)) => {
                return Err(conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request; use a new key",
                ));
            }
            Ok((Claim::InProgress, _)) => {
                if !settled_orphan
                    && let Some(k) = &idem
                    && crate::recovery::settle_claim(state, &k.api_key_id, &k.key).await
                {
                    settled_orphan = true;
                    continue;
                }
                return Err(conflict(
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still being processed; retry later",
                ));
            }
            Err(e) => return Err(e.into_response()),
        }
    }
    Ok(Claimed {
        state: state.clone(),
        idem,
        key_id: who.key_id.clone(),
        method: meta.method.clone(),
        path: meta.path.clone(),
        request_id: meta.request_id.clone(),
    })
}

/// The key a call to an external service made for this request carries, known before the
/// request is claimed ([`Claimed::external_key`]). Without a client key every call is new.
pub fn external_key(who: &Principal, meta: &RequestMeta, op: &str) -> String {
    match &meta.idempotency_key {
        Some(key) => derived_key(&who.key_id, key, op),
        None => hephaestus_core::ids::new_id("hk"),
    }
}

fn derived_key(api_key_id: &str, key: &str, op: &str) -> String {
    let mut h = Sha256::new();
    for part in [api_key_id, key, op] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    format!("hk-{}", hex::encode(h.finalize()))
}

impl Claimed {
    /// A key for an operation at an external service (`op` tells operations of one request
    /// apart). Derived from the client's `Idempotency-Key`, so a retry of the request makes
    /// the same call and the service answers it with its first result: a retried payment
    /// never charges twice. Without a client key every call is new.
    pub fn external_key(&self, op: &str) -> String {
        match &self.idem {
            Some(k) => derived_key(&k.api_key_id, &k.key, op),
            None => hephaestus_core::ids::new_id("hk"),
        }
    }

    /// Runs the change in the request's transaction, with its audit entry and stored
    /// response, and answers.
    pub async fn commit(self, change: impl Change) -> Response {
        self.then(async move { Ok(change) }).await
    }

    /// Does `work` (a call to a payment gateway, say), then runs the change it returns, or
    /// answers with its error: a client error is stored for replay, a server error releases
    /// the key so a retry runs again. From the claim on, all of it runs in a task of its
    /// own, to its end even if the client hangs up: a claimed key must end `done` with the
    /// change, or released without it, and never with the gateway having acted unrecorded.
    pub async fn then<C: Change>(
        self,
        work: impl Future<Output = Result<C, AppError>> + Send + 'static,
    ) -> Response {
        let audit_of = self.audit_fn();
        let (state, idem) = (self.state, self.idem);
        let task = tokio::spawn(
            async move { finish(state, idem, audit_of, work.await).await }
                .instrument(tracing::Span::current()),
        );
        match task.await {
            Ok(response) => response,
            Err(e) => AppError::Internal(anyhow::anyhow!("write task failed: {e}")).into_response(),
        }
    }

    fn audit_fn(&self) -> impl Fn(StatusCode) -> AuditEntry + Clone + Send + 'static {
        let key_id = self.key_id.clone();
        let method = self.method.clone();
        let path = self.path.clone();
        let request_id = self.request_id.clone();
        move |status: StatusCode| {
            AuditEntry::new(
                Some(key_id.clone()),
                method.as_str(),
                &path,
                status.as_u16(),
                request_id.clone(),
            )
        }
    }
}

async fn finish<C: Change>(
    state: AppState,
    idem: Option<IdemKey>,
    audit_of: impl Fn(StatusCode) -> AuditEntry + Clone + Send + 'static,
    change: Result<C, AppError>,
) -> Response {
    let outcome = match change {
        Err(err) => Err(err),
        Ok(change) => {
            let idem = idem.clone();
            let audit_of = audit_of.clone();
            state
                .store
                .write(move |tx| {
                    Box::pin(async move {
                        let written = change(tx).await?;
                        let text = written.body;
                        audit::record(tx, audit_of(written.status));
                        if let Some(k) = &idem {
                            idempotency::complete(
                                tx,
                                k,
                                written.status.as_u16(),
                                &text,
                                written.resource_id.as_deref(),
                            )
                            .await?;
                        }
                        Ok::<_, AppError>((written.status, text))
                    })
                })
                .await
        }
    };

    match outcome {
        Ok((status, text)) => {
            let mut response = json_response(status, text);
            response.extensions_mut().insert(Audited);
            response
        }
        Err(err) => {
            let Some(k) = idem else {
                return err.into_response();
            };
            if matches!(err, AppError::Unavailable(_)) {
                // The database is away: releasing now would wait out the acquire timeout
                // again before answering. It is released as soon as the database is back.
                release_later(&state, k);
                return err.into_response();
            }
            if !err.status().is_client_error() {
                // A server-side failure is not the request's answer: let a retry run it.
                if let Err(e) = idempotency::release(&state.store, &k).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
                return err.into_response();
            }
            // The request's own answer (a conflict, a decline): replay it, never re-run it.
            let status = err.status();
            let text = err.body().to_string();
            let key = k.clone();
            let stored = state
                .store
                .write(move |tx| {
                    Box::pin(async move {
                        idempotency::complete(tx, &key, status.as_u16(), &text, None).await?;
                        audit::record(tx, audit_of(status));
                        Ok::<_, hephaestus_store::StoreError>(())
                    })
                })
                .await;
            let mut response = err.into_response();
            match stored {
                Ok(()) => {
                    response.extensions_mut().insert(Audited);
                }
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "could not store a failed request's response");
                    release_later(&state, k);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not store a failed request's response");
                    let _ = idempotency::release(&state.store, &k).await;
                }
            }
            response
        }
    }
}

/// Releases a claimed key in the background, trying until the database answers or the
/// claim would have expired anyway: the failed request is answered at once, and its retry
/// can run as soon as the database is back rather than after the claim's lock time.
fn release_later(state: &AppState, k: IdemKey) {
    let store = state.store.clone();
    let give_up = std::time::Instant::now()
        + std::time::Duration::from_secs(
            u64::try_from(state.config.idempotency_lock_secs).unwrap_or(0),
        );
    tokio::spawn(async move {
        loop {
            match idempotency::release(&store, &k).await {
                Ok(()) => return,
                Err(e) if e.is_unavailable() && std::time::Instant::now() < give_up => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                    return;
                }
            }
        }
    });
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = json_response(status, body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn conflict(code: &'static str, message: &str) -> Response {
    AppError::Conflict {
        code,
        message: message.to_string(),
        details: Map::new(),
    }
    .into_response()
}

impl Written {
    pub fn json(
        status: StatusCode,
        body: &impl serde::Serialize,
        resource_id: Option<&str>,
    ) -> Self {
        Written {
            status,
            body: serde_json::to_string(body).unwrap_or_else(|e| {
                tracing::error!(error = %e, "response did not serialise");
                "{}".to_string()
            }),
            resource_id: resource_id.map(str::to_string),
        }
    }
}

/// A `Written` for a freshly made object.
pub fn created(resource_id: &str, body: &impl serde::Serialize) -> Written {
    Written::json(StatusCode::CREATED, body, Some(resource_id))
}

/// The body of a list page.
pub fn page<T: serde::Serialize>(items: &[T], has_more: bool) -> Value {
    json!({ "object": "list", "data": items, "has_more": has_more })
}

/// A list page from `rows` fetched with `limit + 1` (the extra row only says there is more),
/// each shown through `view`.
pub fn page_of<T, V: serde::Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    view: impl Fn(&T) -> V,
) -> Value {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let items: Vec<V> = rows.iter().map(view).collect();
    page(&items, has_more)
}
