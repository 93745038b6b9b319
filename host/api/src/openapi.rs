//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The shape of every error response.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `invalid_json`, `unauthorized`,
    /// `insufficient_scope`, `resource_missing`, `customer_exists`, `idempotency_key_reused`,
    /// `idempotency_key_in_use`, `rate_limited`, `payload_too_large`, …
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hk_…")
                    .description(Some("An API key from `hephaestus keys create`"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hephaestus API",
        description = "Self-hosted revenue engine: customers, billing, campaigns, analytics and WebAssembly decision plugins."
    ),
    paths(
        crate::customers::create,
        crate::customers::get,
        crate::customers::update,
        crate::customers::list,
        crate::customers::export,
        crate::customers::erase,
        crate::catalog::create_product,
        crate::catalog::get_product,
        crate::catalog::list_products,
        crate::catalog::create_price,
        crate::catalog::get_price,
        crate::catalog::update_price,
        crate::catalog::list_prices,
        crate::payments::create,
        crate::payments::get,
        crate::payments::list,
        crate::payments::refund,
        crate::payments::confirm,
        crate::webhooks::stripe,
        crate::webhooks::list_events,
        crate::webhooks::retry_event,
        crate::sandbox::authenticate,
        crate::sandbox::clock,
        crate::sandbox::advance_clock,
        crate::subscriptions::create,
        crate::subscriptions::get,
        crate::subscriptions::list,
        crate::subscriptions::update,
        crate::subscriptions::cancel,
        crate::subscriptions::list_invoices,
        crate::subscriptions::get_invoice,
        crate::decisions::quote,
        crate::decisions::get_quote,
        crate::decisions::optimize_pricing,
        crate::decisions::list_plugins,
        crate::reporting::set_rate,
        crate::reporting::list_rates,
        crate::reporting::totals,
        crate::ops::audit_list,
        crate::ops::health,
        crate::ops::ready,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::customers::CustomerView, crate::customers::CreateCustomer, crate::customers::UpdateCustomer,
        crate::payments::PaymentView, crate::payments::RefundView, crate::payments::CreatePayment, crate::payments::CreateRefund,
        crate::catalog::ProductView, crate::catalog::CreateProduct, crate::catalog::PriceView, crate::catalog::CreatePrice,
        crate::catalog::RecurringView, crate::catalog::RecurringRequest, crate::catalog::UpdatePrice, crate::sandbox::Authenticate, crate::webhooks::InboxView,
        crate::reporting::RateView, crate::reporting::SetRate,
        crate::engagement::PersonalizeBody, crate::engagement::PersonalizationView, crate::engagement::TriggerBody, crate::engagement::TriggerView)),
    modifiers(&BearerKey),
    tags(
        (name = "customers", description = "Customer records, export and erasure"),
        (name = "catalog", description = "Products and their immutable prices"),
        (name = "payments", description = "One-time payments and refunds, through the sandbox or Stripe"),
        (name = "reporting", description = "Exchange rates and totals in one reporting currency"),
        (name = "sandbox", description = "Test controls of the built-in sandbox gateway"),
        (name = "operations", description = "Health, readiness and the audit log"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
