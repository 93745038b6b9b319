//! The HTTP API: [`app`] builds the whole router from an [`AppState`]; the server crate
//! binds it to a socket.
//!
//! - [`error`]: the one error type and its JSON shape.
//! - [`extract`]: strict JSON, query and path extractors that name the field at fault.
//! - [`auth`]: API keys, scopes, rate limiting and the audit trail.
//! - [`rate_limit`]: the per-key limiter whose counts are shared through the database.
//! - [`write`]: the transaction, idempotency and audit path every change takes.
//! - [`customers`], [`catalog`], [`payments`]: customers, products and prices, payments.
//! - [`subscriptions`]: subscriptions and their invoices.
//! - [`decisions`]: quotes, price recommendations and customer profiles, decided by plugins.
//! - [`segments`]: customer segments, kept current from the event log.
//! - [`engagement`]: personalization and campaign-trigger decisions, previewed over HTTP.
//! - [`reporting`]: exchange rates and totals per currency and in the reporting currency.
//! - [`dashboard`]: revenue analytics (MRR and its movements, revenue, customers, cohorts).
//! - [`csv`]: CSV answers, for the clients that ask for them.
//! - [`marketing`]: marketing spend, for CAC.
//! - [`sandbox`]: the sandbox gateway's test controls, and its business clock.
//! - [`webhooks`]: the signature-verified Stripe webhook intake.
//! - [`ops`]: health, readiness, metrics, OpenAPI and the audit log.
//! - [`metrics`], [`openapi`]: Prometheus series and the generated API description.
//! - [`jobs`]: background upkeep (rate-limit flushes, expiring idempotency records).

pub mod auth;
pub mod catalog;
pub mod csv;
pub mod customers;
pub mod dashboard;
pub mod decisions;
pub mod engagement;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod marketing;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod payments;
pub mod rate_limit;
pub mod recovery;
pub mod reporting;
pub mod sandbox;
pub mod segments;
pub mod subscriptions;
pub mod ttl_cache;
pub mod webhooks;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hephaestus_billing::gateway::Gateway;
use hephaestus_billing::sandbox::SandboxGateway;
use hephaestus_core::catalog::{Price, Product};
use hephaestus_plugins::{HostConfig, PluginHost};
use hephaestus_store::Store;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::AppError;
use rate_limit::{RateLimit, RateLimiter};

/// Settings the HTTP layer needs; the server crate fills them from its config.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The default per-key rate limit.
    pub rate_limit: RateLimit,
    /// Origins allowed to call the API from a browser; empty allows none.
    pub cors_origins: Vec<HeaderValue>,
    /// How long an authenticated key is trusted before it is looked up again.
    pub key_cache_ttl: Duration,
    /// How long a price and its product, read for a quote, are reused before being read
    /// again; bounds how long a change made by another host takes to reach this host's
    /// quotes (this host's own changes apply at once).
    pub catalog_cache_ttl: Duration,
    /// How long (business time) a stored quote can be used by a payment or subscription.
    pub quote_ttl: Duration,
    /// A request running longer than this is answered 408 and abandoned.
    pub request_timeout: Duration,
    /// How long a claimed `Idempotency-Key` blocks retries if its request died mid-way.
    pub idempotency_lock_secs: i64,
    /// The largest single payment, in major units of the payment's currency.
    pub max_payment: rust_decimal::Decimal,
    /// The currency totals are reported in.
    pub reporting_currency: hephaestus_core::money::Currency,
    /// How long a payment may wait on its gateway (processing, or the customer's action)
    /// before reconciliation asks the gateway about it.
    pub reconcile_after: Duration,
    /// Stripe webhook signing secrets; several while one is being rotated.
    pub stripe_webhook_secrets: Vec<hephaestus_core::secret::Secret>,
    /// Whether this host's worker applies stored webhook events; `false` for a host that
    /// only stores them for others to apply.
    pub apply_webhooks: bool,
    /// How failed subscription payments are retried, and what happens after the last.
    pub dunning: hephaestus_billing::subscriptions::Dunning,
    /// The folder of plugin components (`NAME.wasm` + `NAME.toml`); `None` runs every
    /// decision on its built-in default.
    pub plugin_dir: Option<std::path::PathBuf>,
    /// Where precompiled plugins are kept between starts; `None` compiles on every start.
    pub plugin_cache_dir: Option<std::path::PathBuf>,
    /// What the operator allows every plugin, whatever its manifest asks.
    pub plugin_limits: hephaestus_plugins::HostLimits,
    /// A fault drill's planned death (`HEPHAESTUS_FAULT_ABORT`); `None` in any real use.
    pub fault_abort: Option<recovery::FaultAbort>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            rate_limit: RateLimit {
                limit: 100,
                window_secs: 1,
            },
            cors_origins: Vec::new(),
            key_cache_ttl: Duration::from_secs(1),
            catalog_cache_ttl: Duration::from_secs(1),
            quote_ttl: Duration::from_secs(1800),
            request_timeout: Duration::from_secs(30),
            idempotency_lock_secs: 60,
            max_payment: rust_decimal::Decimal::from(1_000_000),
            stripe_webhook_secrets: Vec::new(),
            apply_webhooks: true,
            reconcile_after: Duration::from_secs(600),
            dunning: hephaestus_billing::subscriptions::Dunning::default(),
            plugin_dir: None,
            plugin_cache_dir: None,
            plugin_limits: hephaestus_plugins::HostLimits::default(),
            fault_abort: None,
            reporting_currency: hephaestus_core::money::Currency::parse("USD", "currency")
                .unwrap_or_else(|_| unreachable!("USD is an ISO 4217 currency")),
        }
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ApiConfig>,
    pub key_cache: Arc<auth::KeyCache>,
    /// Prices with their products, by price id, for quotes.
    pub catalog_cache: Arc<ttl_cache::TtlCache<(Price, Product)>>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: Arc<metrics::Metrics>,
    /// Rendered once: the document only changes with the binary.
    pub openapi: Arc<String>,
    /// Moves the money: the sandbox by default, Stripe when configured.
    pub gateway: Arc<dyn Gateway>,
    /// Wakes this host's webhook worker when an event arrives.
    pub webhook_worker: Arc<tokio::sync::Notify>,
    /// Wakes this host's erasure of gateway customers when a customer was erased.
    pub gateway_erasure: Arc<tokio::sync::Notify>,
    /// Wakes this host's segment sweep (the business clock moved: segments aged at once).
    pub segment_sweep: Arc<tokio::sync::Notify>,
    /// The WebAssembly plugins that make business decisions.
    pub plugins: PluginHost,
    /// Reloads plugins whose files change; dropped with the last clone of the state.
    pub plugin_watcher: Option<Arc<hephaestus_plugins::PluginWatcher>>,
    /// This host's side of the analytics consumer that keeps the dashboard's aggregates.
    pub analytics: Arc<hephaestus_analytics::Follower>,
    /// The business clock's offset from real time (µs), as last read from the database:
    /// plugins read the clock synchronously, so it is kept here and refreshed by the jobs.
    pub clock_offset: Arc<AtomicI64>,
}

impl AppState {
    /// State over `store` with the sandbox gateway.
    pub fn new(store: Store, config: ApiConfig) -> anyhow::Result<Self> {
        let gateway = Arc::new(SandboxGateway::new(store.clone()));
        Self::with_gateway(store, config, gateway)
    }

    /// State over `store` with `gateway`. Loads the plugin folder (if configured) and
    /// watches it for changes.
    pub fn with_gateway(
        store: Store,
        config: ApiConfig,
        gateway: Arc<dyn Gateway>,
    ) -> anyhow::Result<Self> {
        let clock_offset = Arc::new(AtomicI64::new(0));
        let offset = clock_offset.clone();
        let clock: hephaestus_plugins::BusinessClock = Arc::new(move || {
            hephaestus_core::Timestamp::now()
                .as_micros()
                .saturating_add(offset.load(std::sync::atomic::Ordering::Relaxed))
        });
        let plugin_dir = config
            .plugin_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("hephaestus-no-plugins"));
        let mut host_config = HostConfig::new(plugin_dir);
        host_config.cache_dir = config.plugin_cache_dir.clone();
        host_config.clock = clock;
        host_config.limits = config.plugin_limits.clone();
        let plugins = PluginHost::new(host_config)?;
        if config.plugin_dir.is_some() {
            for (stem, result) in plugins.load_all() {
                match result {
                    hephaestus_plugins::LoadResult::Failed(e) => {
                        tracing::warn!(plugin = %stem, error = %e, "plugin failed to load")
                    }
                    other => tracing::info!(plugin = %stem, result = ?other, "plugin loaded"),
                }
            }
        }
        // Hot reload for as long as any clone of the state lives.
        let plugin_watcher = match config.plugin_dir {
            Some(_) => Some(Arc::new(plugins.watch()?)),
            None => None,
        };
        Ok(Self {
            plugin_watcher,
            gateway,
            webhook_worker: Arc::new(tokio::sync::Notify::new()),
            gateway_erasure: Arc::new(tokio::sync::Notify::new()),
            segment_sweep: Arc::new(tokio::sync::Notify::new()),
            analytics: Arc::new(hephaestus_analytics::Follower::default()),
            key_cache: Arc::new(auth::KeyCache::new(config.key_cache_ttl)),
            catalog_cache: Arc::new(ttl_cache::TtlCache::new(config.catalog_cache_ttl)),
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            metrics: Arc::new(metrics::Metrics::default()),
            openapi: Arc::new(openapi::document(&openapi::Limits {
                max_payment: config.max_payment,
            })),
            config: Arc::new(config),
            store,
            plugins,
            clock_offset,
        })
    }

    /// Reads the business clock's offset from the database into [`AppState::clock_offset`].
    pub async fn refresh_clock(&self) -> Result<(), hephaestus_store::StoreError> {
        let offset = hephaestus_store::subscriptions::clock_offset(&self.store).await?;
        self.clock_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The HTTP surface plus `extra` routes, which get every layer the product's routes get
/// (tests use this to prove a panicking handler is contained).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/revenue/customers",
            get(customers::list).post(customers::create),
        )
        .route(
            "/revenue/customers/{id}",
            get(customers::get)
                .post(customers::update)
                .delete(customers::erase),
        )
        .route("/revenue/customers/{id}/export", get(customers::export))
        .route(
            "/revenue/products",
            get(catalog::list_products).post(catalog::create_product),
        )
        .route("/revenue/products/{id}", get(catalog::get_product))
        .route(
            "/revenue/prices",
            get(catalog::list_prices).post(catalog::create_price),
        )
        .route(
            "/revenue/prices/{id}",
            get(catalog::get_price).post(catalog::update_price),
        )
        .route(
            "/revenue/payments",
            get(payments::list).post(payments::create),
        )
        .route("/revenue/payments/totals", get(reporting::totals))
        .route(
            "/revenue/exchange-rates",
            get(reporting::list_rates).post(reporting::set_rate),
        )
        .route("/revenue/payments/{id}", get(payments::get))
        .route("/revenue/payments/{id}/refunds", post(payments::refund))
        .route("/revenue/payments/{id}/confirm", post(payments::confirm))
        .route(
            "/revenue/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/revenue/subscriptions/{id}",
            get(subscriptions::get).post(subscriptions::update),
        )
        .route(
            "/revenue/subscriptions/{id}/cancel",
            post(subscriptions::cancel),
        )
        .route("/revenue/invoices", get(subscriptions::list_invoices))
        .route("/revenue/invoices/{id}", get(subscriptions::get_invoice))
        .route("/sandbox/clock", get(sandbox::clock))
        .route("/sandbox/clock/advance", post(sandbox::advance_clock))
        .route(
            "/sandbox/payments/{id}/authenticate",
            post(sandbox::authenticate),
        )
        .route("/revenue/webhooks/events", get(webhooks::list_events))
        .route(
            "/revenue/webhooks/events/{id}/retry",
            post(webhooks::retry_event),
        )
        .route("/revenue/quotes", post(decisions::quote))
        .route("/revenue/quotes/{id}", get(decisions::get_quote))
        .route(
            "/revenue/optimize/pricing",
            post(decisions::optimize_pricing)
                .layer(middleware::map_response(auth::changes_nothing)),
        )
        .route("/plugins", get(decisions::list_plugins))
        .route(
            "/plugins/personalize",
            post(engagement::personalize).layer(middleware::map_response(auth::changes_nothing)),
        )
        .route(
            "/plugins/trigger",
            post(engagement::trigger).layer(middleware::map_response(auth::changes_nothing)),
        )
        .route("/dashboard/overview", get(dashboard::overview))
        .route(
            "/dashboard/revenue-metrics",
            get(dashboard::revenue_metrics),
        )
        .route(
            "/dashboard/customer-metrics",
            get(dashboard::customer_metrics),
        )
        .route(
            "/dashboard/marketing-metrics",
            get(dashboard::marketing_metrics),
        )
        .route(
            "/marketing/spend",
            get(marketing::list_spend).post(marketing::create_spend),
        )
        .route("/audit", get(ops::audit_list))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));

    // Swagger UI's script and styles come embedded in the `swagger-ui-dist` crate, served
    // under /docs/assets; the page itself is ours, so it can switch off the online spec
    // validator and load nothing from anywhere but this host.
    let docs = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: "/docs/assets",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: Some("Hephaestus API"),
    });

    let cors = (!state.config.cors_origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(state.config.cors_origins.clone()))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(write::IDEMPOTENCY_HEADER),
            ])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600))
    });

    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/docs", get(ops::docs))
        .nest("/api/v1", api)
        .route("/api/v1/revenue/webhooks/stripe", post(webhooks::stripe))
        .merge(extra)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(CatchPanicLayer::custom(panic_response))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state.clone())
        .merge(docs)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                        tracing::info_span!(
                            "request",
                            method = %req.method(),
                            path = %req.uri().path(),
                            request_id = req
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or(""),
                        )
                    }),
                )
                .layer(middleware::from_fn(json_errors_only))
                .option_layer(cors)
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    state.config.request_timeout,
                )),
        )
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> AppError {
    AppError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string());
    AppError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}

/// The last line of defence for the error contract: any error response that is not JSON
/// (a layer's 408 or 413, a rejection we did not wrap) is rewritten into the standard shape,
/// so no client ever sees a plain-text error.
async fn json_errors_only(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (code, message) = fallback_error(status);
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The code and message [`json_errors_only`] gives an error response that was not JSON.
pub(crate) fn fallback_error(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request took too long and was abandoned",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported Content-Type")
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        StatusCode::NOT_FOUND => ("route_not_found", "not found"),
        StatusCode::FORBIDDEN => ("forbidden", "forbidden"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("invalid_request", "the request could not be processed"),
    }
}
