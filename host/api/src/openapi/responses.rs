//! The answers an operation can get from the layers around its handler rather than from the
//! handler itself: authentication, scopes, the rate limiter, the strict JSON extractor, the
//! `Idempotency-Key` claim, an unreachable database, the request timeout. They are added here
//! to every operation the layer applies to, judged from the operation itself (its security,
//! body and parameters), so a new route gets them without anyone listing them.

use serde_json::{Map, Value, json};

/// The header whose claim can answer 409, as operations name it.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A response every operation shares, kept once under `components/responses`.
struct Shared {
    name: &'static str,
    status: &'static str,
    description: &'static str,
    /// Whether the response carries `Retry-After`.
    retry_after: bool,
}

const BAD_REQUEST: Shared = Shared {
    name: "BadRequest",
    status: "400",
    description: "`invalid_request`: a parameter, header or body field breaks the rules the \
                  schema states (`field` names it), or `invalid_json`: the body is not one \
                  JSON value of the documented shape.",
    retry_after: false,
};
const UNAUTHORIZED: Shared = Shared {
    name: "Unauthorized",
    status: "401",
    description: "`unauthorized`: no API key, or one that is malformed, unknown or revoked.",
    retry_after: false,
};
const FORBIDDEN: Shared = Shared {
    name: "Forbidden",
    status: "403",
    description: "`insufficient_scope`: the key's scope is below the one this operation \
                  needs (the `api_key` security requirement names it).",
    retry_after: false,
};
const NOT_FOUND: Shared = Shared {
    name: "NotFound",
    status: "404",
    description: "`resource_missing`: no object has this id (an id of the wrong shape \
                  names nothing either).",
    retry_after: false,
};
const REQUEST_TIMEOUT: Shared = Shared {
    name: "RequestTimeout",
    status: "408",
    description: "`request_timeout`: the request ran longer than the server allows and was \
                  abandoned.",
    retry_after: false,
};
const CONFLICT: Shared = Shared {
    name: "IdempotencyConflict",
    status: "409",
    description: "`idempotency_key_reused`: this `Idempotency-Key` came with a different \
                  request; `idempotency_key_in_use`: a request with it is still running.",
    retry_after: false,
};
const PAYLOAD_TOO_LARGE: Shared = Shared {
    name: "PayloadTooLarge",
    status: "413",
    description: "`payload_too_large`: the body is larger than the server accepts.",
    retry_after: false,
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    name: "UnsupportedMediaType",
    status: "415",
    description: "`unsupported_media_type`: the body is not sent as `application/json`.",
    retry_after: false,
};
const RATE_LIMITED: Shared = Shared {
    name: "RateLimited",
    status: "429",
    description: "`rate_limited`: the key's rate limit is used up; `Retry-After` says when \
                  to try again.",
    retry_after: true,
};
const UNAVAILABLE: Shared = Shared {
    name: "ServiceUnavailable",
    status: "503",
    description: "`service_unavailable`: the database (or the payment gateway) cannot be \
                  reached; nothing was changed. Retry after `Retry-After` seconds.",
    retry_after: true,
};

const ALL: [Shared; 10] = [
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    REQUEST_TIMEOUT,
    CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    RATE_LIMITED,
    UNAVAILABLE,
];

/// Adds the shared responses to `components` and to each operation they apply to. An
/// operation's own response for a status stays (its description says more); only a 409 of
/// its own is told about the `Idempotency-Key` conflicts as well.
pub fn add(doc: &mut Value) {
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(Value::Object(components)) = components {
        let responses = components
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(responses) = responses {
            for shared in &ALL {
                responses.insert(shared.name.into(), component(shared));
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
            if let Some(operation) = operation.as_object_mut() {
                for shared in applying(path, operation) {
                    attach(operation, shared);
                }
            }
        }
    }
}

fn component(shared: &Shared) -> Value {
    let mut response = json!({
        "description": shared.description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if shared.retry_after {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "required": true,
                "schema": {"type": "integer", "minimum": 0},
            }
        });
    }
    response
}

/// The shared responses `operation` (served at `path`) can answer with.
fn applying(path: &str, operation: &Map<String, Value>) -> Vec<&'static Shared> {
    let mut out = Vec::new();
    let api = path.starts_with("/api/v1/");
    let scopes = key_scopes(operation);
    let params = operation
        .get("parameters")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let takes = |location: &str| params.iter().any(|p| p["in"] == location);
    let has_body = operation.contains_key("requestBody");
    if let Some(scopes) = &scopes {
        out.push(&UNAUTHORIZED);
        out.push(&RATE_LIMITED);
        // Every key can read; a route needing more refuses a key with less.
        if scopes.iter().any(|s| s != "read") {
            out.push(&FORBIDDEN);
        }
    }
    if has_body || takes("query") || params.iter().any(is_idempotency_key) {
        out.push(&BAD_REQUEST);
    }
    if takes("path") {
        out.push(&NOT_FOUND);
    }
    if has_body {
        out.push(&PAYLOAD_TOO_LARGE);
        out.push(&UNSUPPORTED_MEDIA_TYPE);
    }
    if params.iter().any(is_idempotency_key) {
        out.push(&CONFLICT);
    }
    if api {
        // Every API route reads the database (the key, if nothing else) and runs under the
        // request timeout.
        out.push(&REQUEST_TIMEOUT);
        out.push(&UNAVAILABLE);
    }
    out
}

/// The scopes the operation's `api_key` requirement names, or `None` when it needs no key.
pub fn key_scopes(operation: &Map<String, Value>) -> Option<Vec<String>> {
    let requirements = operation.get("security")?.as_array()?;
    requirements.iter().find_map(|r| {
        r.get("api_key").and_then(Value::as_array).map(|scopes| {
            scopes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    })
}

fn is_idempotency_key(param: &Value) -> bool {
    param["in"] == "header" && param["name"] == IDEMPOTENCY_KEY
}

fn attach(operation: &mut Map<String, Value>, shared: &Shared) {
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    match responses.get_mut(shared.status) {
        None => {
            responses.insert(
                shared.status.into(),
                json!({"$ref": format!("#/components/responses/{}", shared.name)}),
            );
        }
        Some(own) if shared.status == CONFLICT.status => {
            let description = own["description"].as_str().unwrap_or("").to_string();
            if !description.contains(IDEMPOTENCY_KEY) {
                own["description"] = Value::from(format!(
                    "{}{}{}",
                    description,
                    if description.is_empty() { "" } else { " " },
                    CONFLICT.description
                ));
            }
        }
        Some(_) => {}
    }
}
