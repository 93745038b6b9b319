//! `/api/v1/revenue/products` and `/api/v1/revenue/prices`: what is sold, and at what price.
//! A price's amount, currency and schedule never change; to change a price, create a new
//! one with `replaces`, which retires the old one in the same transaction.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{Interval, MAX_TRIAL_DAYS, Price, Product, Recurring};
use hephaestus_core::customer::{Metadata, validate_metadata};
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{self, Currency, MAX_MINOR, Money};
use hephaestus_core::validation::check_text;
use hephaestus_store::{catalog, events};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::customers::page_params;
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, PathId, Query, load_by_id};
use crate::payments::{AmountText, amount_json};
use crate::write::{self, RequestMeta, Written};

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    /// `prod_…`
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub metadata: Metadata,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            id: p.id.clone(),
            object: "product",
            name: p.name.clone(),
            description: p.description.clone(),
            active: p.active,
            metadata: p.metadata.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// 1 to 250 characters.
    #[schema(example = "Pro plan")]
    pub name: String,
    pub description: Option<String>,
    /// Default true.
    pub active: Option<bool>,
    pub metadata: Option<Metadata>,
}

#[utoipa::path(
    post, path = "/api/v1/revenue/products", tag = "catalog", request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ProductView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn create_product(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreateProduct>,
) -> Response {
    let req = body.value;
    let checked = (|| {
        if req.name.trim().is_empty() {
            return Err(AppError::invalid("name", "must not be empty"));
        }
        check_text("name", &req.name, 250)?;
        if let Some(d) = &req.description {
            check_text("description", d, 5000)?;
        }
        let metadata = req.metadata.unwrap_or_default();
        validate_metadata(&metadata)?;
        Ok(metadata)
    })();
    let metadata = match checked {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let (name, description, active) = (req.name, req.description, req.active.unwrap_or(true));
    write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            let now = Timestamp::now();
            let product = Product {
                id: ids::new_id(prefix::PRODUCT),
                name,
                description,
                active,
                metadata,
                created_at: now,
                updated_at: now,
            };
            catalog::insert_product(tx, &product).await?;
            events::append(
                tx,
                NewEvent::new(
                    kind::PRODUCT_CREATED,
                    &product.id,
                    None,
                    json!({ "product_id": product.id }),
                    now,
                ),
            );
            Ok(write::created(&product.id, &ProductView::from(&product)))
        })
    })
    .await
}

async fn load_product(state: &AppState, id: &str, field: Option<&str>) -> ApiResult<Product> {
    let missing = || match field {
        Some(f) => AppError::invalid(f, format!("no such product: {id}")),
        None => AppError::NotFound {
            kind: "product",
            id: id.to_string(),
        },
    };
    if !ids::is_well_formed(prefix::PRODUCT, id) {
        return Err(missing());
    }
    catalog::get_product(&state.store, id)
        .await?
        .ok_or_else(missing)
}

#[utoipa::path(
    get, path = "/api/v1/revenue/products/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get_product(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<ProductView>> {
    Ok(axum::Json(ProductView::from(
        &load_product(&state, &id, None).await?,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductParams {
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
    pub active: Option<bool>,
}

#[utoipa::path(
    get, path = "/api/v1/revenue/products", tag = "catalog", params(ProductParams),
    responses((status = 200, body = crate::openapi::Page<ProductView>)),
    security(("api_key" = ["read"]))
)]
pub async fn list_products(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<ProductParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, after) = page_params(params.limit, params.starting_after, prefix::PRODUCT)?;
    let rows =
        catalog::list_products(&state.store, limit + 1, after.as_deref(), params.active).await?;
    Ok(axum::Json(write::page_of(rows, limit, |r| {
        ProductView::from(r)
    })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecurringView {
    /// day, week, month or year
    pub interval: &'static str,
    pub interval_count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    /// `price_…`
    pub id: String,
    pub object: &'static str,
    pub product_id: String,
    pub currency: String,
    /// Major units, with the currency's decimals.
    #[schema(value_type = f64, example = 29.00)]
    pub unit_amount: Box<RawValue>,
    pub unit_amount_minor: i64,
    /// `one_time` or `recurring`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recurring: Option<RecurringView>,
    pub trial_days: Option<i64>,
    pub active: bool,
    pub replaces: Option<String>,
    pub replaced_by: Option<String>,
    pub metadata: Metadata,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<&Price> for PriceView {
    fn from(p: &Price) -> Self {
        PriceView {
            id: p.id.clone(),
            object: "price",
            product_id: p.product_id.clone(),
            currency: p.unit_amount.currency.code().to_string(),
            unit_amount: amount_json(p.unit_amount),
            unit_amount_minor: p.unit_amount.minor,
            kind: p.kind(),
            recurring: p.recurring.map(|r| RecurringView {
                interval: r.interval.as_str(),
                interval_count: r.count,
            }),
            trial_days: p.trial_days,
            active: p.active,
            replaces: p.replaces.clone(),
            replaced_by: p.replaced_by.clone(),
            metadata: p.metadata.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecurringRequest {
    /// day, week, month or year
    pub interval: String,
    /// Default 1; a period is at most a year.
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub interval_count: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrice {
    /// `prod_…`
    pub product_id: String,
    #[schema(example = "usd")]
    pub currency: String,
    /// Decimal in major units; zero is a free price.
    #[schema(value_type = f64, example = 29.00)]
    pub unit_amount: AmountText,
    /// Present for a subscription price; absent for a one-time price.
    pub recurring: Option<RecurringRequest>,
    /// Free days before the first charge (recurring prices only), up to 730.
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub trial_days: Option<i64>,
    /// An active price of the same product that this one replaces; it is retired.
    pub replaces: Option<String>,
    pub metadata: Option<Metadata>,
}

#[utoipa::path(
    post, path = "/api/v1/revenue/prices", tag = "catalog", request_body = CreatePrice,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = PriceView), (status = 400, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn create_price(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreatePrice>,
) -> Response {
    let price = match validate_price(&state, body.value).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let retired = price.replaces.clone();
    let response = write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            // The new price first: the old one's `replaced_by` must point at a row.
            catalog::insert_price(tx, &price).await?;
            if let Some(old) = &price.replaces
                && !catalog::replace_price(tx, old, &price.id, price.created_at).await?
            {
                return Err(AppError::Conflict {
                    code: "price_already_replaced",
                    message: format!("price {old} has already been replaced"),
                    details: serde_json::Map::new(),
                });
            }
            events::append(
                tx,
                NewEvent::new(
                    kind::PRICE_CREATED,
                    &price.id,
                    None,
                    json!({ "price_id": price.id, "product_id": price.product_id, "replaces": price.replaces }),
                    price.created_at,
                ),
            );
            if let Some(old) = &price.replaces {
                events::append(
                    tx,
                    NewEvent::new(
                        kind::PRICE_DEACTIVATED,
                        old,
                        None,
                        json!({ "price_id": old, "replaced_by": price.id }),
                        price.created_at,
                    ),
                );
            }
            Ok(write::created(&price.id, &PriceView::from(&price)))
        })
    })
    .await;
    if let Some(old) = retired {
        state.catalog_cache.forget_where(|(p, _)| p.id == old);
    }
    response
}

async fn validate_price(state: &AppState, req: CreatePrice) -> ApiResult<Price> {
    let product = load_product(state, &req.product_id, Some("product_id")).await?;
    let currency = Currency::parse(&req.currency, "currency")?;
    let minor = money::parse_major_or_zero(&req.unit_amount.0, currency, MAX_MINOR, "unit_amount")?;
    let recurring = match &req.recurring {
        None => None,
        Some(r) => {
            let interval: Interval = r
                .interval
                .parse()
                .map_err(|m| AppError::invalid("recurring.interval", m))?;
            Some(Recurring::new(interval, r.interval_count.unwrap_or(1))?)
        }
    };
    if let Some(days) = req.trial_days {
        if recurring.is_none() {
            return Err(AppError::invalid(
                "trial_days",
                "only recurring prices have trials",
            ));
        }
        if !(0..=MAX_TRIAL_DAYS).contains(&days) {
            return Err(AppError::invalid(
                "trial_days",
                format!("must be 0 to {MAX_TRIAL_DAYS}"),
            ));
        }
    }
    if let Some(old_id) = &req.replaces {
        let old = match ids::is_well_formed(prefix::PRICE, old_id) {
            true => catalog::get_price(&state.store, old_id).await?,
            false => None,
        }
        .ok_or_else(|| AppError::invalid("replaces", format!("no such price: {old_id}")))?;
        if old.product_id != product.id {
            return Err(AppError::invalid(
                "replaces",
                "must be a price of the same product",
            ));
        }
    }
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    let now = Timestamp::now();
    Ok(Price {
        id: ids::new_id(prefix::PRICE),
        product_id: product.id,
        unit_amount: Money { minor, currency },
        recurring,
        trial_days: req.trial_days,
        active: true,
        replaces: req.replaces,
        replaced_by: None,
        metadata,
        created_at: now,
        updated_at: now,
    })
}

#[utoipa::path(
    get, path = "/api/v1/revenue/prices/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, body = PriceView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get_price(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<PriceView>> {
    let price = load_by_id("price", prefix::PRICE, id, |id| async move {
        catalog::get_price(&state.store, &id).await
    })
    .await?;
    Ok(axum::Json(PriceView::from(&price)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrice {
    /// Whether the price can be used for new sales. Its amount and schedule never change.
    pub active: bool,
}

#[utoipa::path(
    post, path = "/api/v1/revenue/prices/{id}", tag = "catalog",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = UpdatePrice,
    responses((status = 200, body = PriceView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn update_price(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<UpdatePrice>,
) -> Response {
    if !ids::is_well_formed(prefix::PRICE, &id) {
        return AppError::NotFound { kind: "price", id }.into_response();
    }
    let active = body.value.active;
    let changed = id.clone();
    let response = write::run(&state, &auth.0, &meta, &body.raw, move |tx| {
        Box::pin(async move {
            let price = catalog::set_price_active(tx, &id, active, Timestamp::now())
                .await?
                .ok_or_else(|| AppError::NotFound {
                    kind: "price",
                    id: id.clone(),
                })?;
            Ok(Written::json(
                StatusCode::OK,
                &PriceView::from(&price),
                None,
            ))
        })
    })
    .await;
    // After the commit, so a quote cannot cache the old state again until the TTL.
    state.catalog_cache.forget_where(|(p, _)| p.id == changed);
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PriceParams {
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
    pub product_id: Option<String>,
    pub active: Option<bool>,
    /// `one_time` or `recurring`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/revenue/prices", tag = "catalog", params(PriceParams),
    responses((status = 200, body = crate::openapi::Page<PriceView>)),
    security(("api_key" = ["read"]))
)]
pub async fn list_prices(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<PriceParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, starting_after) = page_params(params.limit, params.starting_after, prefix::PRICE)?;
    let kind = match params.kind.as_deref() {
        None => None,
        Some("one_time") => Some("one_time"),
        Some("recurring") => Some("recurring"),
        Some(_) => return Err(AppError::invalid("type", "must be one_time or recurring")),
    };
    if let Some(p) = &params.product_id
        && !ids::is_well_formed(prefix::PRODUCT, p)
    {
        return Err(AppError::invalid(
            "product_id",
            "must be a product id like prod_…",
        ));
    }
    let rows = catalog::list_prices(
        &state.store,
        &catalog::PriceQuery {
            limit: limit + 1,
            starting_after,
            product_id: params.product_id,
            active: params.active,
            kind,
        },
    )
    .await?;
    Ok(axum::Json(write::page_of(rows, limit, |r| {
        PriceView::from(r)
    })))
}
