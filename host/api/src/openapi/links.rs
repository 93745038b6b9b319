//! Links from each operation that creates an object to the operations that take its id: in
//! their path (`GET …/payments/{id}`) or as a field of their body (`customer_id` of a new
//! payment). Clients and tools that follow links (schemathesis's stateful phase) can chain
//! calls the way a client does. Made from the paths and request schemas, so a new route is
//! linked without anyone listing it.

use serde_json::{Map, Value, json};

/// The field that names an object of `collection` in other requests.
fn id_field(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "customers" => "customer_id",
        "products" => "product_id",
        "prices" => "price_id",
        "quotes" => "quote_id",
        "payments" => "payment_id",
        "subscriptions" => "subscription_id",
        _ => return None,
    })
}

struct Target {
    operation_id: String,
    /// Takes the object's id in its path, as `{id}`.
    path_id: bool,
    /// Its request body's fields.
    body_fields: Vec<String>,
    /// The collection its path works on.
    collection: Option<String>,
}

pub fn add(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_default();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let mut targets = Vec::new();
    for (path, item) in paths.iter() {
        for operation in item.as_object().into_iter().flat_map(|i| i.values()) {
            let Some(operation_id) = operation["operationId"].as_str() else {
                continue;
            };
            let body_fields = operation
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| schemas[name]["properties"].as_object())
                .map(|props| props.keys().cloned().collect())
                .unwrap_or_default();
            targets.push(Target {
                operation_id: operation_id.to_string(),
                path_id: path.contains("/{id}"),
                body_fields,
                collection: collection_with_id(path).map(str::to_string),
            });
        }
    }
    for (path, item) in paths.iter_mut() {
        let Some(post) = item.get_mut("post") else {
            continue;
        };
        // A create: a POST to a collection answering 201 with the new object.
        let collection = path.rsplit('/').next().unwrap_or("");
        if path.contains('{') || post.pointer("/responses/201").is_none() {
            continue;
        }
        let created = post
            .pointer("/responses/201/content/application~1json/schema/$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| schemas[name]["properties"].as_object())
            .map(|props| props.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        let mut links = Map::new();
        for target in &targets {
            let link = if target.path_id && target.collection.as_deref() == Some(collection) {
                json!({
                    "operationId": target.operation_id,
                    "parameters": { "path.id": "$response.body#/id" },
                })
            } else if let Some(field) =
                id_field(collection).filter(|f| target.body_fields.iter().any(|b| b == f))
            {
                // The new object's id, and any other id it carries that the target takes too
                // (a quote's customer goes with the quote).
                let mut body = Map::new();
                body.insert(field.into(), json!("$response.body#/id"));
                for other in &created {
                    if other.ends_with("_id")
                        && other != field
                        && target.body_fields.contains(other)
                    {
                        body.insert(other.clone(), json!(format!("$response.body#/{other}")));
                    }
                }
                json!({ "operationId": target.operation_id, "requestBody": body })
            } else {
                continue;
            };
            links.insert(target.operation_id.clone(), link);
        }
        if !links.is_empty()
            && let Some(created) = post.pointer_mut("/responses/201")
            && created.get("$ref").is_none()
        {
            created["links"] = Value::Object(links);
        }
    }
}

/// The collection whose object a path's `{id}` names: `payments` for
/// `/api/v1/sandbox/payments/{id}/authenticate`.
fn collection_with_id(path: &str) -> Option<&str> {
    let before = &path[..path.find("/{id}")?];
    before.rsplit('/').next()
}
