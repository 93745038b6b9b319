//! The rules the server holds its input to, written into the document: id shapes, page
//! sizes, time ranges, text lengths, the values an enumeration takes, number ranges and the
//! fields that go together. They are applied by field and parameter name over every request
//! body and parameter, from the constants the handlers check against, so a new route that
//! takes a `customer_id` or a `limit` is described by the same rule it is held to; the
//! tests below fail on a request field or parameter that no rule covers.

use hephaestus_core::customer::{
    MAX_EMAIL_CHARS, MAX_METADATA_KEY_CHARS, MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS,
    MAX_NAME_CHARS,
};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{Currency, MAX_MINOR};
use hephaestus_core::payment::PaymentStatus;
use hephaestus_core::subscription::{InvoiceStatus, SubscriptionStatus};
use serde_json::{Value, json};

/// What the document needs to know of the server's settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest single payment, in major units (`HEPHAESTUS_MAX_PAYMENT`).
    pub max_payment: rust_decimal::Decimal,
}

/// Control characters (Unicode `Cc`), which no stored text may hold.
const CONTROLS: &str = "\\u0000-\\u001f\\u007f-\\u009f";
/// White space other than controls, as `str::trim` sees it.
const SPACES: &str = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// How every number that stands for an amount is marked (see [`super::exact_decimals`]).
const EXACT: &str = "An exact decimal: read and write it as a decimal, never a binary float.";

/// Text of at most `max` characters with no control characters.
fn text(max: usize) -> Value {
    json!({ "maxLength": max, "pattern": format!("^[^{CONTROLS}]*$") })
}

/// Like [`text`], and not blank.
fn words(max: usize) -> Value {
    json!({
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{CONTROLS}]*[^{CONTROLS}{SPACES}][^{CONTROLS}]*$"),
    })
}

fn id(prefix: &str) -> Value {
    json!({ "pattern": ids::pattern(prefix), "description": format!("`{prefix}_…`") })
}

/// A payment method: what the gateway takes, 1 to 100 visible ASCII characters.
fn payment_method() -> Value {
    json!({ "minLength": 1, "maxLength": 100, "pattern": "^[!-~]+$" })
}

fn one_of(values: &[&str]) -> Value {
    json!({ "enum": values })
}

fn integer(min: i64, max: i64) -> Value {
    json!({ "minimum": min, "maximum": max })
}

/// Every ISO 4217 code the server charges in, in upper and lower case (it reads either).
fn currencies() -> Vec<(String, u32)> {
    let letters = b'A'..=b'Z';
    let mut out = Vec::new();
    for a in letters.clone() {
        for b in letters.clone() {
            for c in letters.clone() {
                let code = String::from_utf8(vec![a, b, c]).unwrap_or_default();
                if let Ok(currency) = Currency::parse(&code, "currency") {
                    out.push((code, currency.exponent()));
                }
            }
        }
    }
    out
}

fn currency() -> Value {
    let codes: Vec<String> = currencies()
        .into_iter()
        .flat_map(|(code, _)| [code.to_ascii_lowercase(), code])
        .collect();
    json!({ "enum": codes, "description": "ISO 4217, upper or lower case." })
}

/// An amount in major units, as a JSON number or a string of plain decimal digits, at
/// least `min` (or above zero when `min` is `None`) and at most `max`. Its decimals are
/// held to the currency's by [`amount_decimals`] where the currency is in the same body.
fn amount(min_zero: bool, max: rust_decimal::Decimal) -> Value {
    let max_f = max.to_string().parse::<f64>().unwrap_or(f64::MAX);
    let mut number =
        json!({ "type": "number", "format": "decimal", "description": EXACT, "maximum": max_f });
    if min_zero {
        number["minimum"] = json!(0);
    } else {
        number["exclusiveMinimum"] = json!(0);
    }
    json!({
        "anyOf": [
            number,
            { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$" },
        ],
    })
}

/// Holds `field` to the decimals of the currency named by `currency_field` in the same
/// object, for amounts sent as numbers and as strings.
fn amount_decimals(field: &str, currency_field: &str) -> Vec<Value> {
    let mut by_exponent: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for (code, exponent) in currencies() {
        let entry = by_exponent.entry(exponent).or_default();
        entry.push(code.to_ascii_lowercase());
        entry.push(code);
    }
    by_exponent
        .into_iter()
        .map(|(exponent, codes)| {
            let step = if exponent == 0 {
                json!(1)
            } else {
                json!(10f64.powi(-(exponent as i32)))
            };
            let decimals = if exponent == 0 {
                "^[0-9]+(\\.0+)?$".to_string()
            } else {
                format!("^[0-9]+(\\.[0-9]{{1,{exponent}}}0*)?$")
            };
            json!({
                "if": {
                    "properties": { currency_field: { "enum": codes } },
                    "required": [currency_field],
                },
                "then": {
                    "properties": { field: {
                        "anyOf": [
                            { "type": "number", "format": "decimal", "description": EXACT,
                              "multipleOf": step },
                            { "type": "string", "pattern": decimals },
                        ],
                    } },
                },
            })
        })
        .collect()
}

/// An exchange rate: above zero, below a billion, at most 12 decimals.
fn rate() -> Value {
    const DECIMALS: usize = crate::reporting::RATE_DECIMALS as usize;
    // Text: a whole part of 1 to 9 digits that is not zero, or a zero whole part and
    // decimals that are not all zeros (the first non-zero one after `z` zeros).
    let fractions: Vec<String> = (0..DECIMALS)
        .map(|z| format!("0{{{z}}}[1-9][0-9]{{0,{}}}", DECIMALS - 1 - z))
        .collect();
    let text = format!(
        "^(0*[1-9][0-9]{{0,8}}(\\.[0-9]{{1,{DECIMALS}}})?|0+\\.({}))$",
        fractions.join("|")
    );
    json!({
        "anyOf": [
            { "type": "number", "format": "decimal", "description": EXACT,
              "exclusiveMinimum": 0, "exclusiveMaximum": crate::reporting::MAX_RATE,
              "multipleOf": 10f64.powi(-(DECIMALS as i32)) },
            { "type": "string", "pattern": text },
        ],
    })
}

fn metadata() -> Value {
    json!({
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": MAX_METADATA_KEY_CHARS,
            "pattern": format!("^[^{CONTROLS}]*$"),
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_METADATA_VALUE_CHARS,
            "pattern": format!("^[^{CONTROLS}]*$"),
        },
    })
}

/// The rule for property `name` of request schema `schema`, or `None` when the property
/// is free (a boolean, or text the server takes as it is).
fn property_rule(schema: &str, name: &str, limits: &Limits) -> Option<Value> {
    let rule = match (schema, name) {
        (_, "customer_id") => id(prefix::CUSTOMER),
        (_, "price_id" | "replaces") => id(prefix::PRICE),
        (_, "product_id") => id(prefix::PRODUCT),
        (_, "quote_id") => id(prefix::QUOTE),
        (_, "event_id") => id(prefix::EVENT),
        (_, "currency" | "base" | "quote") => currency(),
        (_, "metadata") => metadata(),
        ("UpdateCustomer", "default_payment_method") => {
            json!({ "maxLength": 100, "pattern": "^[!-~]*$", "description": "`\"\"` removes it." })
        }
        (_, "payment_method" | "default_payment_method") => payment_method(),
        (_, "email") => json!({ "format": "email", "maxLength": MAX_EMAIL_CHARS }),
        ("CreateCustomer" | "UpdateCustomer", "name") => words(MAX_NAME_CHARS),
        ("CreateProduct", "name") => words(250),
        ("CreateProduct", "description") => text(5000),
        ("CreatePayment", "description") => text(1000),
        ("CreatePayment", "amount") => amount(false, limits.max_payment),
        ("CreateRefund", "amount") => amount(false, max_major()),
        // Above zero; how large a figure the server keeps depends on the currency's decimals.
        ("CreateSpend", "amount") => json!({
            "anyOf": [
                { "type": "number", "format": "decimal", "description": EXACT, "exclusiveMinimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$" },
            ],
        }),
        ("CreateSpend", "channel") => {
            json!({ "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_.-]+$" })
        }
        ("PeriodBody", "from" | "to") => json!({ "format": "date" }),
        ("CreatePrice", "unit_amount") => amount(true, max_major()),
        ("OptimizeBody", "current_price") => amount(false, max_major()),
        ("SetRate", "rate") => rate(),
        ("CreateRefund", "reason") => one_of(&["duplicate", "fraudulent", "requested_by_customer"]),
        ("CreatePrice" | "CreateSubscription", "trial_days") => {
            integer(0, hephaestus_core::catalog::MAX_TRIAL_DAYS)
        }
        (_, "quantity") => integer(1, 1_000_000),
        ("RecurringRequest", "interval") => one_of(&["day", "week", "month", "year"]),
        ("RecurringRequest", "interval_count") => integer(1, 365),
        ("Authenticate", "outcome") => one_of(&["succeed", "fail"]),
        ("UpdateSubscription", "proration_behavior") => one_of(&["create_prorations", "none"]),
        ("AdvanceClock", "seconds") => integer(0, crate::sandbox::MAX_ADVANCE_SECONDS),
        ("AdvanceClock", "days") => integer(0, crate::sandbox::MAX_ADVANCE_DAYS),
        ("OptimizeBody", "product_name") => text(256),
        // Passed to the pricing plugin as it is.
        ("QuoteBody", "context") => json!({}),
        ("OptimizeBody", "customer_segment") => segment(),
        ("CampaignBody", "subject") => words(crate::engagement::MAX_SUBJECT_CHARS),
        ("CampaignBody", "id" | "name" | "template") => words(crate::engagement::MAX_NAME_CHARS),
        ("PersonalizeBody", "variables") => json!({
            "maxProperties": crate::engagement::MAX_VARIABLES,
            "propertyNames": words(crate::engagement::MAX_VARIABLE_KEY_CHARS),
            "additionalProperties": {
                "type": "string",
                "maxLength": crate::engagement::MAX_VARIABLE_VALUE_CHARS,
                "pattern": format!("^[^{CONTROLS}]*$"),
            },
        }),
        _ => return None,
    };
    Some(rule)
}

/// The largest amount any price or refund can hold, in major units of the currency with the
/// most minor units.
fn max_major() -> rust_decimal::Decimal {
    rust_decimal::Decimal::from(MAX_MINOR) / rust_decimal::Decimal::from(10_000)
}

fn segment() -> Value {
    json!({ "pattern": "^[a-z0-9_]{1,32}$" })
}

/// `field` is given, and not null (the server reads a null as absent).
fn present(field: &str) -> Value {
    json!({ "required": [field], "properties": { field: { "not": { "type": "null" } } } })
}

/// The values a field of an answer takes, where they are a fixed set.
fn answer_rule(schema: &str, name: &str) -> Option<Value> {
    let statuses = |all: &[&'static str]| Some(one_of(all));
    match (schema, name) {
        ("PaymentView", "status") => {
            let all: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
            statuses(&all)
        }
        ("SubscriptionView", "status") => statuses(&[
            SubscriptionStatus::Trialing.as_str(),
            SubscriptionStatus::Active.as_str(),
            SubscriptionStatus::PastDue.as_str(),
            SubscriptionStatus::Canceled.as_str(),
            SubscriptionStatus::Unpaid.as_str(),
        ]),
        ("InvoiceView", "status") => statuses(&[
            InvoiceStatus::Open.as_str(),
            InvoiceStatus::Paid.as_str(),
            InvoiceStatus::Uncollectible.as_str(),
            InvoiceStatus::Void.as_str(),
        ]),
        ("InboxView", "status") => statuses(&["pending", "processed", "ignored", "failed"]),
        ("QuoteView", "status") => statuses(&["open", "used", "expired"]),
        ("PriceView", "type") => statuses(&["one_time", "recurring"]),
        ("RecurringView", "interval") => statuses(&["day", "week", "month", "year"]),
        ("PaymentView" | "SubscriptionView", "gateway") => statuses(&["sandbox", "stripe"]),
        ("DecidedByView", "kind") => statuses(&["plugin", "default"]),
        _ => None,
    }
}

/// Rules on whole request objects: fields that go together.
fn object_rule(schema: &str) -> Option<Value> {
    let rule = match schema {
        // A payment's amount needs its currency, and is needed unless a quote sets it.
        "CreatePayment" => {
            let mut all = vec![
                json!({ "if": present("amount"), "then": present("currency") }),
                json!({ "if": present("currency"), "then": present("amount") }),
            ];
            all.extend(amount_decimals("amount", "currency"));
            json!({ "anyOf": [present("amount"), present("quote_id")], "allOf": all })
        }
        "CreatePrice" => json!({ "allOf": amount_decimals("unit_amount", "currency") }),
        "OptimizeBody" => json!({
            "anyOf": [present("product_name"), present("price_id")],
            "allOf": amount_decimals("current_price", "currency"),
        }),
        "CreateSubscription" => {
            json!({ "anyOf": [present("price_id"), present("quote_id")] })
        }
        "QuoteBody" => {
            json!({ "anyOf": [present("price_id"), present("product_id")] })
        }
        // One billing period is at most a year.
        "RecurringRequest" => json!({
            "allOf": [
                { "if": { "properties": { "interval": { "const": "week" } } },
                  "then": { "properties": { "interval_count": { "maximum": 52 } } } },
                { "if": { "properties": { "interval": { "const": "month" } } },
                  "then": { "properties": { "interval_count": { "maximum": 12 } } } },
                { "if": { "properties": { "interval": { "const": "year" } } },
                  "then": { "properties": { "interval_count": { "maximum": 1 } } } },
            ],
        }),
        "AdvanceClock" => json!({
            "anyOf": [
                { "required": ["seconds"], "properties": { "seconds": { "type": "integer", "minimum": 1 } } },
                { "required": ["days"], "properties": { "days": { "type": "integer", "minimum": 1 } } },
            ],
        }),
        "UpdateCustomer" => {
            let any: Vec<Value> = ["email", "name", "metadata", "default_payment_method"]
                .iter()
                .map(|f| present(f))
                .collect();
            json!({ "anyOf": any })
        }
        _ => return None,
    };
    Some(rule)
}

/// The rule for parameter `name` (in `location`) of the operation at `path`.
fn parameter_rule(path: &str, location: &str, name: &str) -> Option<Value> {
    let collection = collection_of(path);
    let rule = match (location, name) {
        ("path", "id") => match collection.and_then(prefix_of) {
            Some(p) => id(p),
            None => return None,
        },
        ("query", "limit") => json!({ "minimum": 1, "maximum": 100, "default": 10 }),
        ("query", "starting_after") => match (collection, collection.and_then(prefix_of)) {
            (_, Some(p)) => id(p),
            // Webhook events are named by the gateway: any text, found or not.
            (Some("events"), None) => json!({}),
            _ => return None,
        },
        // Checked against the body with the server's secret: any text may be sent.
        ("header", "Stripe-Signature") => json!({}),
        ("query", "created_gte" | "created_lte") => integer(0, MAX_UNIX_SECS),
        ("query", "customer_id") => id(prefix::CUSTOMER),
        ("query", "price_id") => id(prefix::PRICE),
        ("query", "product_id") => id(prefix::PRODUCT),
        ("query", "subscription_id") => id(prefix::SUBSCRIPTION),
        ("query", "currency") => currency(),
        ("query", "format") => one_of(&["json", "csv"]),
        ("query", "interval") => one_of(&["day", "week", "month"]),
        ("query", "from" | "to") => json!({ "format": "date" }),
        // Compared with stored addresses, never stored: any text finds what matches.
        ("query", "email") => json!({}),
        ("query", "segment") => segment(),
        ("query", "type") => one_of(&["one_time", "recurring"]),
        ("query", "status") => {
            let values: Vec<&str> = match collection {
                Some("payments") => PaymentStatus::ALL.iter().map(|s| s.as_str()).collect(),
                Some("subscriptions") => [
                    SubscriptionStatus::Trialing,
                    SubscriptionStatus::Active,
                    SubscriptionStatus::PastDue,
                    SubscriptionStatus::Canceled,
                    SubscriptionStatus::Unpaid,
                ]
                .iter()
                .map(|s| s.as_str())
                .collect(),
                Some("invoices") => [
                    InvoiceStatus::Open,
                    InvoiceStatus::Paid,
                    InvoiceStatus::Uncollectible,
                    InvoiceStatus::Void,
                ]
                .iter()
                .map(|s| s.as_str())
                .collect(),
                Some("events") => vec!["pending", "processed", "ignored", "failed"],
                _ => return None,
            };
            one_of(&values)
        }
        ("header", crate::openapi::responses::IDEMPOTENCY_KEY) => json!({
            "minLength": 1,
            "maxLength": 255,
            "pattern": "^[!-~]+$",
            "description": "Makes the request safe to retry: a repeat with the same key and \
                            request is answered with the first response instead of running \
                            again. 1 to 255 visible ASCII characters.",
        }),
        _ => return None,
    };
    Some(rule)
}

/// The last Unix second of the year 9999, the latest time the server reads.
pub const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// The collection an operation works on: `payments` for `/api/v1/revenue/payments/{id}/…`.
fn collection_of(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().position(|s| s.starts_with('{')) {
        Some(at) => at.checked_sub(1).map(|i| segments[i]),
        None => segments.last().copied(),
    }
}

/// The id prefix of a collection's objects; `None` for ids that are not ours (a webhook
/// event is named by the gateway).
fn prefix_of(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "customers" => prefix::CUSTOMER,
        "products" => prefix::PRODUCT,
        "prices" => prefix::PRICE,
        "payments" => prefix::PAYMENT,
        "subscriptions" => prefix::SUBSCRIPTION,
        "invoices" => prefix::INVOICE,
        "quotes" => prefix::QUOTE,
        "audit" => prefix::AUDIT,
        "spend" => prefix::MARKETING_SPEND,
        _ => return None,
    })
}

/// Merges `rule` into `schema`. A schema with a `type` keeps it (so a nullable field stays
/// nullable); an `anyOf` rule replaces the type, which it states itself.
fn merge(schema: &mut Value, rule: Value) {
    let (Some(schema), Value::Object(rule)) = (schema.as_object_mut(), rule) else {
        return;
    };
    if rule.contains_key("anyOf") {
        let nullable = match schema.get("type") {
            Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
            _ => false,
        };
        schema.remove("type");
        schema.remove("format");
        if let Some(Value::Array(branches)) = rule.get("anyOf") {
            let mut branches = branches.clone();
            if nullable {
                branches.push(json!({ "type": "null" }));
            }
            schema.insert("anyOf".into(), Value::Array(branches));
        }
        for (k, v) in rule {
            if k != "anyOf" {
                schema.insert(k, v);
            }
        }
        return;
    }
    let nullable = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    for (k, mut v) in rule {
        if k == "description" && schema.contains_key("description") {
            continue;
        }
        // An enumeration lists every value, so a nullable field's lists null too.
        if k == "enum"
            && nullable
            && let Value::Array(values) = &mut v
        {
            values.push(Value::Null);
        }
        schema.insert(k, v);
    }
}

/// Applies every rule to `doc`.
pub fn apply(doc: &mut Value, limits: &Limits) {
    let request_schemas = request_schemas(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            if let Some(Value::Object(props)) = schema.get_mut("properties") {
                for (field, property) in props.iter_mut() {
                    if let Some(rule) = answer_rule(name, field) {
                        merge(property, rule);
                    }
                }
            }
        }
        for name in &request_schemas {
            let Some(Value::Object(schema)) = schemas.get_mut(name) else {
                continue;
            };
            if let Some(Value::Object(props)) = schema.get_mut("properties") {
                for (field, property) in props.iter_mut() {
                    if let Some(rule) = property_rule(name, field, limits) {
                        merge(property, rule);
                    }
                }
            }
            if let Some(Value::Object(rule)) = object_rule(name) {
                for (k, v) in rule {
                    schema.insert(k, v);
                }
            }
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(params) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for param in params {
                let location = param["in"].as_str().unwrap_or("").to_string();
                let name = param["name"].as_str().unwrap_or("").to_string();
                if let Some(mut rule) = parameter_rule(path, &location, &name) {
                    if let Some(description) =
                        rule.as_object_mut().and_then(|r| r.remove("description"))
                        && param.get("description").is_none()
                    {
                        param["description"] = description;
                    }
                    if let Some(schema) = param.get_mut("schema") {
                        merge(schema, rule);
                    }
                }
            }
        }
    }
}

/// The names of the component schemas request bodies use, with those they refer to.
fn request_schemas(doc: &Value) -> Vec<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref")
                    && let Some(name) = r.strip_prefix("#/components/schemas/")
                {
                    out.push(name.to_string());
                }
                map.values().for_each(|c| refs(c, out));
            }
            Value::Array(items) => items.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for item in paths.values().filter_map(Value::as_object) {
            for operation in item.values() {
                if let Some(body) = operation.get("requestBody") {
                    refs(body, &mut found);
                }
            }
        }
    }
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<String> = Vec::new();
    while let Some(name) = found.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            refs(schema, &mut found);
        }
        seen.push(name);
    }
    seen
}

/// For the tests: every request property and parameter, with whether a rule covers it.
#[cfg(test)]
pub(crate) fn coverage(doc: &Value) -> Vec<(String, bool)> {
    let limits = Limits {
        max_payment: rust_decimal::Decimal::from(1),
    };
    let mut out = Vec::new();
    for name in request_schemas(doc) {
        let props = doc
            .pointer(&format!("/components/schemas/{name}/properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (field, schema) in props {
            let free = is_boolean(&schema) || schema.to_string().contains("$ref");
            let covered = free || property_rule(&name, &field, &limits).is_some();
            out.push((format!("{name}.{field}"), covered));
        }
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                for param in operation["parameters"].as_array().into_iter().flatten() {
                    let (location, name) = (
                        param["in"].as_str().unwrap_or(""),
                        param["name"].as_str().unwrap_or(""),
                    );
                    let free = is_boolean(&param["schema"]);
                    let covered = free || parameter_rule(path, location, name).is_some();
                    out.push((format!("{method} {path} {location} {name}"), covered));
                }
            }
        }
    }
    out
}

#[cfg(test)]
fn is_boolean(schema: &Value) -> bool {
    match &schema["type"] {
        Value::String(t) => t == "boolean",
        Value::Array(ts) => ts.iter().any(|t| t == "boolean"),
        _ => false,
    }
}
