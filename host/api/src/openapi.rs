//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Amounts travel as JSON numbers read from their text into exact decimals, never through a
//! float; their fields say `value_type = f64` only so the generator writes `type: number`.
//! [`document`] then rewrites every such number as `format: decimal` with a description a
//! client generator passes on, so no generated client is led to parse money as a double.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

mod links;
mod responses;
mod rules;

pub use rules::Limits;

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

/// One page of a list, newest first.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Page<T> {
    /// Always `list`.
    pub object: String,
    pub data: Vec<T>,
    /// Whether a next page follows the last item (ask with `starting_after` = its id).
    pub has_more: bool,
}

/// An entry of the audit log.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct AuditEntryView {
    /// `aud_…`
    pub id: String,
    /// Always `audit_entry`.
    pub object: String,
    /// The key that made the request, if it had one.
    pub api_key_id: Option<String>,
    pub method: String,
    pub path: String,
    /// The status the request was answered with.
    pub status: i64,
    pub request_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
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
        description = "Self-hosted revenue engine: customers, the product catalog, payments, subscriptions and invoices, reporting in one currency, revenue analytics, and WebAssembly plugins that decide quotes, price recommendations, segments and campaign previews. Amounts are exact decimals in major units of their currency (`format: decimal`), with the same amount as an integer in minor units beside them (`*_minor`). Which key scope each route needs: docs/api.md in the repository."
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
        crate::dashboard::overview,
        crate::dashboard::revenue_metrics,
        crate::dashboard::customer_metrics,
        crate::dashboard::marketing_metrics,
        crate::marketing::create_spend,
        crate::marketing::list_spend,
        crate::ops::audit_list,
        crate::ops::health,
        crate::ops::ready,
        crate::ops::metrics,
        crate::ops::openapi,
        crate::ops::docs,
        crate::engagement::personalize,
        crate::engagement::trigger,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::customers::CustomerView, crate::customers::CreateCustomer, crate::customers::UpdateCustomer,
        crate::payments::PaymentView, crate::payments::RefundView, crate::payments::CreatePayment, crate::payments::CreateRefund,
        crate::catalog::ProductView, crate::catalog::CreateProduct, crate::catalog::PriceView, crate::catalog::CreatePrice,
        crate::catalog::RecurringView, crate::catalog::RecurringRequest, crate::catalog::UpdatePrice, crate::sandbox::Authenticate, crate::webhooks::InboxView,
        crate::reporting::RateView, crate::reporting::SetRate, crate::marketing::CreateSpend, crate::marketing::SpendView,
        crate::engagement::PersonalizeBody, crate::engagement::PersonalizationView, crate::engagement::TriggerBody, crate::engagement::TriggerView)),
    modifiers(&BearerKey),
    tags(
        (name = "customers", description = "Customer records, export and erasure"),
        (name = "catalog", description = "Products and their immutable prices"),
        (name = "payments", description = "One-time payments and refunds, through the sandbox or Stripe"),
        (name = "subscriptions", description = "Subscriptions, their invoices and dunning"),
        (name = "decisions", description = "Quotes, price recommendations and previews decided by plugins"),
        (name = "reporting", description = "Exchange rates and totals in one reporting currency"),
        (name = "dashboard", description = "Revenue analytics: MRR and its movements, revenue, customers, cohorts, marketing spend and CAC"),
        (name = "sandbox", description = "Test controls of the built-in sandbox gateway"),
        (name = "operations", description = "Health, readiness and the audit log"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The document for a server with these limits (the largest payment is a setting).
pub fn document(limits: &Limits) -> String {
    serde_json::to_string_pretty(&document_value(limits))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn document_value(limits: &Limits) -> serde_json::Value {
    let mut doc = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(doc) => doc,
        Err(e) => return serde_json::json!({ "error": e.to_string() }),
    };
    exact_decimals(&mut doc);
    operation_ids_by_tag(&mut doc);
    rules::apply(&mut doc, limits);
    responses::add(&mut doc);
    links::add(&mut doc);
    doc
}

/// Prefixes each operation's id (its handler's name, such as `list`, which several modules
/// share) with its tag: `customers_list`, `payments_list`. OpenAPI requires them unique,
/// and client generators name their methods after them.
fn operation_ids_by_tag(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let tag = operation["tags"][0].as_str().map(str::to_string);
            if let (Some(tag), Some(id)) = (tag, operation["operationId"].as_str()) {
                let id = format!("{tag}_{id}");
                operation["operationId"] = serde_json::Value::from(id);
            }
        }
    }
}

/// The `format` utoipa gives an `f64`, which every number field here stands in for.
const FLOAT_FORMATS: [&str; 2] = ["double", "float"];

/// Rewrites every floating-point number schema in `doc` as an exact decimal, and says in
/// each one's description what it holds: money in major units (with its `*_minor` twin when
/// it has one), a percentage, or a rate.
fn exact_decimals(doc: &mut serde_json::Value) {
    use serde_json::Value;
    fn note(name: Option<&str>, has_minor: bool) -> String {
        let name = name.unwrap_or("");
        if name.ends_with("_percent") || crate::dashboard::PERCENT_FIELDS.contains(&name) {
            return "An exact decimal percentage: read it as a decimal, never a binary float."
                .into();
        }
        if name == "alpha" || name == "beta" {
            return "An exact decimal (a smoothing parameter from 0.1 to 0.9): read it as a \
                    decimal, never a binary float."
                .into();
        }
        if name == "rate" {
            return "An exact decimal: read it as a decimal, never a binary float (sent as a \
                    JSON number or string)."
                .into();
        }
        if !has_minor && crate::dashboard::CONVERTED_FIELDS.contains(&name) {
            return "An exact decimal in major units of the reporting currency: a sum of \
                    figures converted at stored rates, never rounded, so it may have more \
                    decimals than the currency; read it as a decimal, never a binary float."
                .into();
        }
        if has_minor {
            return format!(
                "An exact decimal in major units of the currency, written with the \
                 currency's decimals (`97.00` USD); read it as a decimal, never a binary \
                 float. `{name}_minor` holds the same amount as an integer in minor units."
            );
        }
        "An exact decimal in major units of the currency (`97.00` USD), as a JSON number or \
         string; more decimals than the currency has is refused, never rounded."
            .into()
    }
    fn is_float(schema: &serde_json::Map<String, Value>) -> bool {
        schema
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| FLOAT_FORMATS.contains(&f))
    }
    fn fix(schema: &mut serde_json::Map<String, Value>, text: String) {
        schema.insert("format".into(), Value::from("decimal"));
        let description = match schema.get("description").and_then(Value::as_str) {
            Some(own) if !own.is_empty() => format!("{own}\n\n{text}"),
            _ => text,
        };
        schema.insert("description".into(), Value::from(description));
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get_mut("properties") {
                    let names: Vec<String> = props.keys().cloned().collect();
                    for name in &names {
                        let has_minor = props.contains_key(&format!("{name}_minor"));
                        if let Some(Value::Object(field)) = props.get_mut(name)
                            && is_float(field)
                        {
                            fix(field, note(Some(name), has_minor));
                        }
                        if name.ends_with("_minor")
                            && let Some(Value::Object(field)) = props.get_mut(name)
                            && field.get("description").is_none()
                        {
                            field.insert(
                                "description".into(),
                                Value::from(
                                    "The same amount as an integer in the currency's minor \
                                     units (cents for USD, yen for JPY).",
                                ),
                            );
                        }
                    }
                }
                if is_float(map) {
                    fix(map, note(None, false));
                }
                for child in map.values_mut() {
                    walk(child);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(doc);
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        super::document_value(&super::Limits {
            max_payment: rust_decimal::Decimal::from(1_000_000),
        })
    }

    /// Every number schema in `v`, with the property name it sits under.
    fn numbers<'a>(v: &'a Value, name: &str, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(map) => {
                let is_number = match map.get("type") {
                    Some(Value::String(t)) => t == "number",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "number"),
                    _ => false,
                };
                if is_number {
                    out.push((name.to_string(), v));
                }
                for (k, child) in map {
                    numbers(child, k, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| numbers(i, name, out)),
            _ => {}
        }
    }

    #[test]
    fn money_is_documented_as_exact_decimals() {
        let doc = doc();
        let mut found = Vec::new();
        numbers(&doc, "", &mut found);
        assert!(found.len() >= 10, "{found:?}");
        for (name, schema) in &found {
            assert_eq!(schema["format"], "decimal", "{name}: {schema}");
            let description = schema["description"].as_str().unwrap_or("");
            assert!(description.contains("exact decimal"), "{name}: {schema}");
        }
        let payment = &doc["components"]["schemas"]["PaymentView"]["properties"];
        assert_eq!(payment["amount"]["format"], "decimal");
        assert!(
            payment["amount"]["description"]
                .as_str()
                .unwrap()
                .contains("`amount_minor`")
        );
        assert_eq!(payment["amount_minor"]["type"], "integer");
        let text = doc.to_string();
        assert!(!text.contains("\"double\"") && !text.contains("\"float\""));
    }

    /// Every route the router serves is in the document (the scope table in docs/api.md is
    /// checked against the document, so a route missing here would escape it).
    #[test]
    fn every_route_is_documented() {
        let doc = doc();
        let router = include_str!("lib.rs")
            .split_whitespace()
            .collect::<String>();
        let mut routes = 0;
        for (at, _) in router.match_indices(".route(\"") {
            let rest = &router[at + ".route(\"".len()..];
            let path = &rest[..rest.find('"').unwrap()];
            routes += 1;
            let documented = doc["paths"].get(path).is_some()
                || doc["paths"].get(format!("/api/v1{path}")).is_some();
            assert!(
                documented,
                "{path} is served but not in the OpenAPI document"
            );
        }
        assert!(routes > 30, "{routes}");
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = doc();
        let mut seen = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}"));
                assert!(
                    seen.insert(id.to_string()),
                    "{id} ({method} {path}) is not unique"
                );
            }
        }
        assert!(
            seen.contains("customers_list") && seen.contains("payments_list"),
            "{seen:?}"
        );
    }

    /// Every request field and parameter is held to a rule of the server's (or is a boolean
    /// or an object with rules of its own): a new one without a rule fails here.
    #[test]
    fn every_input_has_its_rule() {
        let doc = doc();
        let coverage = super::rules::coverage(&doc);
        assert!(coverage.len() > 80, "{coverage:?}");
        // Ids the gateway makes, not ours: any text names an event, or nothing.
        let free = ["post /api/v1/revenue/webhooks/events/{id}/retry path id"];
        let missing: Vec<_> = coverage
            .iter()
            .filter(|(what, covered)| !covered && !free.contains(&what.as_str()))
            .collect();
        assert!(missing.is_empty(), "no rule for {missing:?}");
        let customers = &doc["paths"]["/api/v1/revenue/customers/{id}"]["get"]["parameters"][0];
        assert_eq!(customers["schema"]["pattern"], "^cus_[0-9A-Za-z]{22}$");
        let list = &doc["paths"]["/api/v1/revenue/payments"]["get"]["parameters"];
        let limit = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&1.into(), &100.into())
        );
    }

    /// The shared answers are on every operation they can come from.
    #[test]
    fn every_operation_documents_what_the_layers_answer() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let has = |status: &str| responses.contains_key(status);
                let what = format!("{method} {path}");
                if path.starts_with("/api/v1/") {
                    assert!(has("503") && has("408"), "{what}");
                }
                if op.get("security").is_some() {
                    assert!(has("401") && has("429"), "{what}");
                }
                if op.get("requestBody").is_some() {
                    assert!(has("400") && has("413") && has("415"), "{what}");
                }
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                if params.iter().any(|p| p["name"] == "Idempotency-Key") {
                    assert!(has("409"), "{what}");
                }
                if params.iter().any(|p| p["in"] == "query") {
                    assert!(has("400"), "{what}");
                }
            }
        }
        let unavailable = &doc["components"]["responses"]["ServiceUnavailable"];
        assert_eq!(unavailable["headers"]["Retry-After"]["required"], true);
    }

    /// The scope each operation's security names is the one docs/api.md gives it (the e2e
    /// `scopes` test holds the server to that table), and a 403 is documented where a key
    /// can have too little.
    #[test]
    fn scopes_are_the_documented_ones() {
        let doc = doc();
        let table = include_str!("../../../docs/api.md");
        let mut checked = 0;
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            let (method, path, scope) = (cells[1].to_ascii_lowercase(), cells[2], cells[3]);
            let op = &doc["paths"][path][&method];
            assert!(op.is_object(), "{method} {path} is not in the document");
            let scopes: Vec<&str> = op["security"][0]["api_key"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            match scope {
                "none" => assert!(op.get("security").is_none(), "{method} {path}"),
                scope => {
                    assert_eq!(scopes, [scope], "{method} {path}");
                    let forbids = op["responses"].get("403").is_some();
                    assert_eq!(forbids, scope != "read", "{method} {path}");
                }
            }
            checked += 1;
        }
        assert!(checked > 40, "{checked}");
    }

    #[test]
    fn the_clock_may_have_billed_nothing() {
        let doc = doc();
        let billed = &doc["components"]["schemas"]["ClockView"]["properties"]["billed"];
        assert!(billed.to_string().contains("null"), "{billed}");
    }

    #[test]
    fn minor_units_are_integers() {
        fn walk(v: &Value, out: &mut usize) {
            if let Value::Object(map) = v {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, field) in props {
                        if name.ends_with("_minor") {
                            *out += 1;
                            let t = &field["type"];
                            assert!(
                                t == "integer"
                                    || t.as_array()
                                        .is_some_and(|ts| ts.iter().any(|t| t == "integer")),
                                "{name}: {field}"
                            );
                        }
                    }
                }
                map.values().for_each(|c| walk(c, out));
            } else if let Value::Array(items) = v {
                items.iter().for_each(|c| walk(c, out));
            }
        }
        let mut seen = 0;
        walk(&doc(), &mut seen);
        assert!(seen >= 10, "{seen}");
    }
}
