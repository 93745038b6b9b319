//! `/api/v1/revenue/customers`: create, read, list, export and erase customers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_core::Timestamp;
use hephaestus_core::customer::{Customer, CustomerChanges, Metadata, NewCustomer};
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::ids::{self, prefix};
use hephaestus_store::audit::{self, AuditEntry};
use hephaestus_store::segments::{self, Segments};
use hephaestus_store::{customers, events, gateway_ids, idempotency, profiles};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{AdminKey, ReadKey, WriteKey};
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, PathId, Query, load_by_id};
use crate::write::{self, RequestMeta, Written};

/// A customer as the API shows it. Erased customers keep their id and timestamps; their
/// personal fields are null.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    /// `cus_…`
    pub id: String,
    /// Always `customer`.
    pub object: &'static str,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: Metadata,
    /// Charged by a payment that names no `payment_method`; null if none is set.
    pub default_payment_method: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// When the customer's personal data was erased, if it was.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub erased_at: Option<Timestamp>,
    /// Segment tags (`new`, `power_user`, `at_risk`, `high_value`, `enterprise`, or a
    /// segmentation plugin's own), sorted. Kept current from the event log shortly after
    /// the customer or their payments and subscriptions change; empty until first computed.
    pub segments: Vec<String>,
    /// When the segments were last computed (business clock), or null if not yet.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub segments_computed_at: Option<Timestamp>,
    /// What the segments could not judge, and why: money in a currency with no exchange
    /// rate to the reporting currency is left out of the lifetime value, and said so here.
    pub segments_note: Option<String>,
}

impl CustomerView {
    pub fn new(c: &Customer, segments: Option<&Segments>) -> Self {
        CustomerView {
            id: c.id.clone(),
            object: "customer",
            email: c.email.clone(),
            name: c.name.clone(),
            metadata: c.metadata.clone(),
            default_payment_method: c.default_payment_method.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            erased_at: c.erased_at,
            segments: segments.map(|s| s.tags.clone()).unwrap_or_default(),
            segments_computed_at: segments.map(|s| s.computed_at),
            segments_note: segments.and_then(|s| s.note.clone()),
        }
    }
}

impl From<&Customer> for CustomerView {
    /// The view of a customer whose segments are not computed (just created, or erased).
    fn from(c: &Customer) -> Self {
        CustomerView::new(c, None)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// Unique across customers, compared case-insensitively. At most 254 characters.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// At most 256 characters.
    #[schema(example = "Ada Lovelace")]
    pub name: Option<String>,
    /// Up to 50 string pairs; keys up to 40 characters, values up to 500.
    pub metadata: Option<Metadata>,
    /// Charged by payments that name no `payment_method` (`pm_card_visa` on the sandbox,
    /// a Stripe PaymentMethod `pm_…` with Stripe).
    #[schema(example = "pm_card_visa")]
    pub default_payment_method: Option<String>,
}

/// Creates a customer. An email already in use answers 409 `customer_exists` with the
/// existing customer's id in `existing_id`.
#[utoipa::path(
    post, path = "/api/v1/revenue/customers", tag = "customers",
    request_body = CreateCustomer,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    responses(
        (status = 201, body = CustomerView),
        (status = 400, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreateCustomer>,
) -> Response {
    let req = body.value;
    let new = match NewCustomer::validate(
        req.email,
        req.name,
        req.metadata,
        req.default_payment_method,
    ) {
        Ok(new) => new,
        Err(e) => return AppError::from(e).into_response(),
    };
    write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            let now = Timestamp::now();
            match customers::insert(tx, &new, now).await? {
                Ok(customer) => {
                    events::append(
                        tx,
                        NewEvent::about_customer(kind::CUSTOMER_CREATED, &customer.id, now),
                    );
                    Ok(write::created(&customer.id, &CustomerView::from(&customer)))
                }
                Err(existing_id) => Err(customer_exists(existing_id)),
            }
        })
    })
    .await
}

fn not_found(id: String) -> AppError {
    AppError::NotFound {
        kind: "customer",
        id,
    }
}

/// Another customer has the address (addresses are unique, case-insensitively).
fn customer_exists(existing_id: String) -> AppError {
    AppError::Conflict {
        code: "customer_exists",
        message: format!("a customer with this email already exists: {existing_id}"),
        details: Map::from_iter([("existing_id".to_string(), json!(existing_id))]),
    }
}

fn customer_erased(id: &str) -> AppError {
    AppError::Conflict {
        code: "customer_erased",
        message: format!("customer {id} was erased and cannot be changed"),
        details: Map::new(),
    }
}

/// The customer with its stored segments (`None` until computed).
async fn load(state: &AppState, id: String) -> ApiResult<(Customer, Option<Segments>)> {
    load_by_id("customer", prefix::CUSTOMER, id, |id| async move {
        customers::get_with_segments(&state.store, &id).await
    })
    .await
}

#[utoipa::path(
    get, path = "/api/v1/revenue/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "`cus_…`")),
    responses((status = 200, body = CustomerView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<Value>> {
    let (customer, segments) = load(&state, id).await?;
    Ok(axum::Json(json!(CustomerView::new(
        &customer,
        segments.as_ref()
    ))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    /// A new address, unique across customers.
    pub email: Option<String>,
    pub name: Option<String>,
    /// Keys to set; a key given an empty string is removed. Other keys are kept.
    pub metadata: Option<Metadata>,
    /// A new default payment method; `""` removes it.
    pub default_payment_method: Option<String>,
}

/// Changes a customer's email, name or metadata. Writes `customer.updated` (naming the
/// fields that changed) when anything changed, which also recomputes the customer's
/// segments. An erased customer cannot be changed (409 `customer_erased`).
#[utoipa::path(
    post, path = "/api/v1/revenue/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "`cus_…`"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    request_body = UpdateCustomer,
    responses(
        (status = 200, body = CustomerView),
        (status = 400, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<UpdateCustomer>,
) -> Response {
    if !ids::is_well_formed(prefix::CUSTOMER, &id) {
        return not_found(id).into_response();
    }
    let req = body.value;
    let changes = match CustomerChanges::validate(
        req.email,
        req.name,
        req.metadata,
        req.default_payment_method,
    ) {
        Ok(c) => c,
        Err(e) => return AppError::from(e).into_response(),
    };
    // Segments change only through their consumer, never in this transaction.
    let stored = match segments::of_many(&state.store, std::slice::from_ref(&id)).await {
        Ok(mut stored) => stored.remove(&id),
        Err(e) => return AppError::from(e).into_response(),
    };
    write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            let customer = customers::get_in(tx, &id)
                .await?
                .ok_or_else(|| not_found(id.clone()))?;
            if customer.erased_at.is_some() {
                return Err(customer_erased(&id));
            }
            let (next, changed) = changes.apply(&customer)?;
            if changed.is_empty() {
                let view = CustomerView::new(&customer, stored.as_ref());
                return Ok(Written::json(StatusCode::OK, &view, None));
            }
            let now = Timestamp::now();
            match customers::update(tx, &next, now).await? {
                Ok(true) => {}
                // Erased between the read and the write.
                Ok(false) => return Err(customer_erased(&id)),
                Err(existing_id) => return Err(customer_exists(existing_id)),
            }
            events::append(
                tx,
                NewEvent::new(
                    kind::CUSTOMER_UPDATED,
                    &next.id,
                    Some(next.id.clone()),
                    json!({ "customer_id": next.id, "changed": changed }),
                    now,
                ),
            );
            let next = Customer {
                updated_at: now,
                ..next
            };
            let view = CustomerView::new(&next, stored.as_ref());
            Ok(Written::json(StatusCode::OK, &view, Some(&next.id)))
        })
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    /// A customer id from the previous page: the page starts after it (lists run newest first).
    pub starting_after: Option<String>,
    /// Only the customer with this email (case-insensitive).
    pub email: Option<String>,
    /// Only customers in this segment (e.g. `high_value`), as last computed.
    pub segment: Option<String>,
}

/// The customer named by a request's `customer_id`: it must exist and not be erased before
/// anything is charged, started or quoted for it.
pub async fn live(state: &AppState, id: &str) -> ApiResult<Customer> {
    check_customer_id(id)?;
    match customers::get(&state.store, id).await? {
        Some(c) if c.erased_at.is_none() => Ok(c),
        _ => Err(no_such_customer(id)),
    }
}

/// What decisions about a customer who is not erased read (see [`profiles::snapshot`]).
pub async fn live_snapshot(state: &AppState, id: &str) -> ApiResult<profiles::Snapshot> {
    check_customer_id(id)?;
    let now = crate::decisions::business_now(state);
    match profiles::snapshot(&state.store, id, now).await? {
        Some(s) if s.customer.erased_at.is_none() => Ok(s),
        _ => Err(no_such_customer(id)),
    }
}

fn check_customer_id(id: &str) -> ApiResult<()> {
    if ids::is_well_formed(prefix::CUSTOMER, id) {
        Ok(())
    } else {
        Err(AppError::invalid(
            "customer_id",
            "must be a customer id like cus_…",
        ))
    }
}

fn no_such_customer(id: &str) -> AppError {
    AppError::invalid("customer_id", format!("no such customer: {id}"))
}

/// Checks `limit` and `starting_after`, shared by every list.
pub fn page_params(
    limit: Option<i64>,
    starting_after: Option<String>,
    id_prefix: &str,
) -> ApiResult<(i64, Option<String>)> {
    let limit = limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 100"));
    }
    if let Some(after) = &starting_after
        && !ids::is_well_formed(id_prefix, after)
    {
        return Err(AppError::invalid(
            "starting_after",
            format!("must be an id like {id_prefix}_…"),
        ));
    }
    Ok((limit, starting_after))
}

#[utoipa::path(
    get, path = "/api/v1/revenue/customers", tag = "customers",
    params(ListParams),
    responses((status = 200, body = crate::openapi::Page<CustomerView>), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (limit, starting_after) =
        page_params(params.limit, params.starting_after, prefix::CUSTOMER)?;
    if let Some(segment) = &params.segment
        && !hephaestus_plugins::is_segment_tag(segment)
    {
        return Err(AppError::invalid(
            "segment",
            "must be a segment tag: 1 to 32 of a-z, 0-9 and _",
        ));
    }
    let rows = customers::list(
        &state.store,
        &customers::ListQuery {
            limit: limit + 1,
            starting_after,
            email: params.email,
            segment: params.segment,
        },
    )
    .await?;
    let ids: Vec<String> = rows.iter().map(|c| c.id.clone()).collect();
    let stored = segments::of_many(&state.store, &ids).await?;
    Ok(axum::Json(write::page_of(rows, limit, |r| {
        CustomerView::new(r, stored.get(&r.id))
    })))
}

/// Everything held on one customer: the record and every event about it. A full copy of
/// their personal data, so it needs an admin key and leaves an entry in the audit log
/// naming the key, like every change does; no data is answered without that entry.
#[utoipa::path(
    get, path = "/api/v1/revenue/customers/{id}/export", tag = "customers",
    params(("id" = String, Path, description = "`cus_…`")),
    responses(
        (status = 200, description = "`{customer, events, exported_at}`"),
        (status = 403, body = crate::openapi::ErrorBody, description = "`insufficient_scope`: an admin key is needed"),
        (status = 404, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn export(
    State(state): State<AppState>,
    auth: AdminKey,
    meta: RequestMeta,
    PathId(id): PathId,
) -> ApiResult<axum::Json<Value>> {
    let answer = export_of(&state, id).await;
    let status = match &answer {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    // Reads are not audited, but an export is a copy of someone's personal data: who took
    // it must be on record, so a failure to record fails the export.
    let entry = AuditEntry::new(
        Some(auth.0.key_id.clone()),
        meta.method.as_str(),
        &meta.path,
        status.as_u16(),
        meta.request_id.clone(),
    );
    audit::record_alone(&state.store, &entry).await?;
    answer
}

async fn export_of(state: &AppState, id: String) -> ApiResult<axum::Json<Value>> {
    let (customer, segments) = load(state, id).await?;
    let events: Vec<Value> = events::for_customer(&state.store, &customer.id)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "type": e.kind,
                "subject_id": e.subject_id,
                "data": e.data,
                "occurred_at": e.occurred_at,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "customer_export",
        "customer": CustomerView::new(&customer, segments.as_ref()),
        "events": events,
        "exported_at": Timestamp::now(),
    })))
}

/// Erases the customer's personal data (email, name, metadata) and keeps the anonymous
/// record so payments and events still point at an id. Erasing twice is harmless. The
/// gateway's copy of the customer (a Stripe customer) is deleted shortly after, in the
/// background, which also ends the customer's Stripe-billed subscriptions. Irreversible,
/// so it needs an admin key; the audit log names the key.
#[utoipa::path(
    delete, path = "/api/v1/revenue/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "`cus_…`"), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = CustomerView),
        (status = 403, body = crate::openapi::ErrorBody, description = "`insufficient_scope`: an admin key is needed"),
        (status = 404, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn erase(
    State(state): State<AppState>,
    auth: AdminKey,
    meta: RequestMeta,
    PathId(id): PathId,
) -> Response {
    if !ids::is_well_formed(prefix::CUSTOMER, &id) {
        return not_found(id).into_response();
    }
    let response = write::run(&state, &auth.0, &meta, b"", move |tx| {
        Box::pin(async move {
            let now = Timestamp::now();
            let customer = match customers::erase(tx, &id, now).await? {
                Some(erased) => {
                    events::append(
                        tx,
                        NewEvent::about_customer(kind::CUSTOMER_ERASED, &erased.id, now),
                    );
                    idempotency::forget_resource(tx, &erased.id).await?;
                    segments::forget(tx, &erased.id).await?;
                    // The gateway's copy (a Stripe customer with the email and name) is
                    // deleted by the jobs, outside this transaction, once it commits.
                    gateway_ids::request_erasure(tx, &erased.id, now).await?;
                    erased
                }
                None => customers::get_in(tx, &id)
                    .await?
                    .ok_or_else(|| not_found(id.clone()))?,
            };
            Ok(Written::json(
                StatusCode::OK,
                &CustomerView::from(&customer),
                None,
            ))
        })
    })
    .await;
    // Committed (or refused): the jobs delete a gateway copy now rather than at their next
    // tick, and find nothing to do if there is none.
    state.gateway_erasure.notify_one();
    response
}
