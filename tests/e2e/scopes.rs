//! The scope each route needs, as `docs/api.md` documents it, checked against the server:
//! every operation of `/openapi.json` is called with a read, a write and an admin key (and
//! with none), and every key below the documented scope must get 403 `insufficient_scope`
//! while every key at or above it must get through. The table and the document must list
//! the same operations, so neither can drift from the other.

use std::collections::BTreeMap;

use hephaestus_core::keys::Scope;
use hephaestus_store::keys;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer};

both_dbs!(
    every_route_needs_the_documented_scope,
    export_and_erase_need_admin_and_are_audited
);

const API_DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"));

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// No API key: public, or authenticated otherwise (the Stripe webhook's signature).
    Nothing,
    Key(Scope),
}

/// `docs/api.md`'s table of routes: rows like ``| `GET` | `/api/v1/audit` | admin |``,
/// after the header `| method | path | scope |`.
fn documented() -> BTreeMap<(String, String), Needs> {
    let mut lines = API_DOC
        .lines()
        .skip_while(|l| !l.starts_with("| method | path | scope |"));
    assert!(
        lines.next().is_some(),
        "docs/api.md has no `| method | path | scope |` table"
    );
    let mut table = BTreeMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let (method, path, scope) = (cells[1], cells[2], cells[3]);
        let needs = match scope {
            "none" => Needs::Nothing,
            "read" => Needs::Key(Scope::Read),
            "write" => Needs::Key(Scope::Write),
            "admin" => Needs::Key(Scope::Admin),
            other => panic!("docs/api.md: `{other}` is not none, read, write or admin: {line}"),
        };
        let previous = table.insert((method.to_string(), path.to_string()), needs);
        assert!(
            previous.is_none(),
            "docs/api.md lists {method} {path} twice"
        );
    }
    assert!(
        table.len() > 20,
        "docs/api.md's table is too short: {table:?}"
    );
    table
}

/// Every operation of the OpenAPI document, as (`GET`, path).
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// A well-formed id of the kind `path` names, for an object that does not exist.
fn dummy_id(path: &str) -> String {
    let prefix = [
        ("/customers/", "cus"),
        ("/products/", "prod"),
        ("/prices/", "price"),
        ("/payments/", "pay"),
        ("/subscriptions/", "sub"),
        ("/invoices/", "in"),
        ("/quotes/", "quo"),
        ("/webhooks/events/", "evt"),
    ]
    .iter()
    .find(|(segment, _)| path.contains(&format!("{segment}{{")))
    .map(|(_, prefix)| *prefix)
    .unwrap_or_else(|| panic!("no dummy id for the parameter of {path}: add its kind here"));
    format!("{prefix}_0000000000000000000000")
}

fn concrete(path: &str) -> String {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) => {
            format!("{}{}{}", &path[..open], dummy_id(path), &path[close + 1..])
        }
        _ => path.to_string(),
    }
}

async fn call(s: &TestServer, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.client.request(method.clone(), s.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if method == Method::POST {
        req = req
            .header("Content-Type", "application/json")
            .body(json!({}).to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = if is_json {
        Reply::from(resp).await.body
    } else {
        Value::Null
    };
    (status, body)
}

/// The answer of a caller the route lets in: never refused for its key, never a route the
/// server does not have, and never a server error for an ordinary (if empty) request.
fn assert_let_in(what: &str, status: StatusCode, body: &Value) {
    assert!(
        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
        "{what}: {status} {body}"
    );
    let code = body["error"]["code"].as_str().unwrap_or("");
    assert!(
        code != "route_not_found" && code != "method_not_allowed",
        "{what}: the documented operation is not served: {status} {body}"
    );
    assert!(!status.is_server_error(), "{what}: {status} {body}");
}

async fn every_route_needs_the_documented_scope(db: Db) {
    let s = TestServer::start(db).await;
    let doc = s.openapi().await;
    let table = documented();
    let ops = operations(&doc);
    let in_doc: std::collections::BTreeSet<_> = ops.iter().cloned().collect();
    let undocumented: Vec<_> = ops.iter().filter(|op| !table.contains_key(*op)).collect();
    let not_served: Vec<_> = table.keys().filter(|op| !in_doc.contains(*op)).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "operations missing from docs/api.md's table: {undocumented:?}; \
         rows of the table that /openapi.json does not have: {not_served:?}"
    );

    let keys = [
        (Scope::Read, s.key(Scope::Read).await),
        (Scope::Write, s.key(Scope::Write).await),
        (Scope::Admin, s.key(Scope::Admin).await),
    ];
    let mut checked = 0;
    for (method, path) in &ops {
        let url = concrete(path);
        match table[&(method.clone(), path.clone())] {
            Needs::Nothing => {
                let (status, body) = call(&s, method, &url, None).await;
                assert_let_in(&format!("{method} {url} without a key"), status, &body);
                checked += 1;
            }
            Needs::Key(needed) => {
                let (status, body) = call(&s, method, &url, None).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {url} without a key: {body}"
                );
                for (scope, key) in &keys {
                    let what = format!("{method} {url} with a {scope} key (needs {needed})");
                    let (status, body) = call(&s, method, &url, Some(key)).await;
                    if scope.allows(needed) {
                        assert_let_in(&what, status, &body);
                    } else {
                        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                        assert_eq!(
                            body["error"]["code"], "insufficient_scope",
                            "{what}: {body}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 60, "{checked}");
    // Admin-only routes exist, and so do routes any key may call.
    assert!(table.values().any(|n| *n == Needs::Key(Scope::Admin)));
    assert!(table.values().any(|n| *n == Needs::Key(Scope::Read)));
}

/// An admin key with a known id: the audit log names keys by id.
async fn admin_key(s: &TestServer) -> (String, String) {
    let created = keys::create(&s.store, "privacy officer", Scope::Admin, None)
        .await
        .unwrap();
    (created.key.id, created.secret.secret)
}

/// The newest audit entry for `method path`.
async fn audited(s: &TestServer, method: &str, path: &str) -> Option<Value> {
    let log = s.get(&s.admin, "/api/v1/audit?limit=100").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["path"] == path)
        .cloned()
}

async fn export_and_erase_need_admin_and_are_audited(db: Db) {
    let s = TestServer::start(db).await;
    let writer = s.key(Scope::Write).await;
    let customer = s.create_customer("private@example.com").await;
    let id = customer["id"].as_str().unwrap();
    let export = format!("/api/v1/revenue/customers/{id}/export");
    let one = format!("/api/v1/revenue/customers/{id}");

    let denied = s.get(&writer, &export).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "insufficient_scope");
    assert!(!denied.body.to_string().contains("private@"));
    let denied = s.delete(&writer, &one).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "insufficient_scope");
    assert_eq!(
        s.get(&writer, &one).await.body["email"],
        "private@example.com",
        "a refused erasure erased nothing"
    );
    assert!(audited(&s, "GET", &export).await.is_none());

    let (officer_id, officer) = admin_key(&s).await;
    let dump = s.get(&officer, &export).await;
    assert_eq!(dump.status, StatusCode::OK, "{}", dump.body);
    assert_eq!(dump.body["customer"]["email"], "private@example.com");
    let entry = audited(&s, "GET", &export)
        .await
        .expect("the export is in the audit log");
    assert_eq!(entry["api_key_id"], officer_id.as_str(), "{entry}");
    assert_eq!(entry["status"], 200);
    assert!(
        entry["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{entry}"
    );

    // An export of nobody is recorded too: the attempt is what an auditor looks for.
    let nobody = "/api/v1/revenue/customers/cus_0000000000000000000000/export";
    assert_eq!(s.get(&officer, nobody).await.status, StatusCode::NOT_FOUND);
    assert_eq!(audited(&s, "GET", nobody).await.unwrap()["status"], 404);

    let erased = s.delete(&officer, &one).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert!(erased.body["email"].is_null());
    let entry = audited(&s, "DELETE", &one)
        .await
        .expect("the erasure is in the audit log");
    assert_eq!(entry["api_key_id"], officer_id.as_str(), "{entry}");
    assert_eq!(entry["status"], 200);
}
