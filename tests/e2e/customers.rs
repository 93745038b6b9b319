use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(
    create_get_list,
    paginate_and_filter,
    duplicate_email,
    export_and_erase,
    audit_trail,
    sql_looking_text_is_data
);

const CUSTOMERS: &str = "/api/v1/revenue/customers";

async fn create_get_list(db: Db) {
    let s = TestServer::start(db).await;
    let r = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "Ada@Example.com", "name": "Ada Lovelace 🚀", "metadata": {"plan": "pro", "ünï": "çødé"}}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cus_"), "{id}");
    assert_eq!(r.body["object"], "customer");
    assert_eq!(r.body["email"], "Ada@Example.com");
    assert_eq!(r.body["name"], "Ada Lovelace 🚀");
    assert_eq!(r.body["metadata"]["ünï"], "çødé");
    assert!(r.body["created_at"].as_str().unwrap().ends_with('Z'));

    let got = s.get(&s.admin, &format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    // Segments are computed in the background after the create, so a read may already
    // carry them: everything else must be what the create returned.
    assert!(got.body["segments"].is_array(), "{}", got.body);
    let without_segments = |v: &Value| {
        let mut v = v.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("segments");
        o.remove("segments_computed_at");
        v
    };
    assert_eq!(
        without_segments(&got.body),
        without_segments(&r.body),
        "a read returns what the create returned"
    );

    let list = s.get(&s.admin, CUSTOMERS).await;
    assert_eq!(list.body["object"], "list");
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["has_more"], false);

    let missing = s
        .get(&s.admin, &format!("{CUSTOMERS}/cus_0000000000000000000000"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "resource_missing");
    assert_eq!(s.count_events().await, 1, "customer.created was logged");
}

async fn paginate_and_filter(db: Db) {
    let s = TestServer::start(db).await;
    let mut created = Vec::new();
    for i in 0..25 {
        let c = s.create_customer(&format!("user{i}@example.com")).await;
        created.push(c["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("{CUSTOMERS}?limit=10&starting_after={a}"),
            None => format!("{CUSTOMERS}?limit=10"),
        };
        let page = s.get(&s.admin, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let data = page.body["data"].as_array().unwrap();
        pages += 1;
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        if page.body["has_more"] == false {
            break;
        }
        assert_eq!(data.len(), 10);
        after = Some(data.last().unwrap()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(pages, 3);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every customer once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);

    let filtered = s
        .get(&s.admin, &format!("{CUSTOMERS}?email=USER7@example.com"))
        .await;
    let data = filtered.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], created[7].as_str());
    let none = s
        .get(&s.admin, &format!("{CUSTOMERS}?email=nobody@example.com"))
        .await;
    assert_eq!(none.body["data"].as_array().unwrap().len(), 0);
}

async fn duplicate_email(db: Db) {
    let s = TestServer::start(db).await;
    let first = s.create_customer("dup@example.com").await;
    let again = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "DUP@example.COM"}),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "customer_exists");
    assert_eq!(again.body["error"]["existing_id"], first["id"]);
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    assert_eq!(s.count("customers").await, 1);
    // (The segment consumer adds its own events about the one customer in the background.)
    assert_eq!(s.count_events().await, 1);
}

/// The kinds of an export's events, less `customer.segments_changed`: the segment consumer
/// writes those in the background, so whether one is there yet depends on timing.
fn event_kinds(export: &Value) -> Vec<Value> {
    export["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .filter(|kind| kind != "customer.segments_changed")
        .collect()
}

async fn export_and_erase(db: Db) {
    let s = TestServer::start(db).await;
    let created = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "erase.me@example.com", "name": "Eve Erased", "metadata": {"k": "v"}}),
            Some("create-eve"),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_string();

    let export = s.get(&s.admin, &format!("{CUSTOMERS}/{id}/export")).await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.body["customer"]["email"], "erase.me@example.com");
    assert_eq!(event_kinds(&export.body), vec![json!("customer.created")]);

    let erased = s.delete(&s.admin, &format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert_eq!(erased.body["id"], id.as_str());
    assert!(erased.body["email"].is_null());
    assert!(erased.body["name"].is_null());
    assert_eq!(erased.body["metadata"], json!({}));
    assert!(erased.body["erased_at"].is_string());

    // Nothing personal is left anywhere we store it.
    let got = s.get(&s.admin, &format!("{CUSTOMERS}/{id}")).await;
    assert!(got.body["email"].is_null());
    let export = s.get(&s.admin, &format!("{CUSTOMERS}/{id}/export")).await;
    let dump = export.body.to_string();
    assert!(
        !dump.contains("erase.me") && !dump.contains("Eve"),
        "{dump}"
    );
    assert_eq!(
        event_kinds(&export.body),
        vec![json!("customer.created"), json!("customer.erased")]
    );
    assert_eq!(
        s.count("idempotency_keys").await,
        0,
        "the stored replay held the email"
    );

    // Erasing again changes nothing; the address is free for a new customer.
    let again = s.delete(&s.admin, &format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["erased_at"], erased.body["erased_at"]);
    assert_eq!(s.count_events().await, 2);
    let reborn = s.create_customer("erase.me@example.com").await;
    assert_ne!(reborn["id"], id.as_str());

    let missing = s
        .delete(&s.admin, &format!("{CUSTOMERS}/cus_0000000000000000000000"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn audit_trail(db: Db) {
    let s = TestServer::start(db).await;
    let resp = s
        .client
        .post(s.url(CUSTOMERS))
        .bearer_auth(&s.admin)
        .json(&json!({"email": "audited@example.com"}))
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bad = s
        .post(&s.admin, CUSTOMERS, &json!({"email": "nope"}), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    s.get(&s.admin, CUSTOMERS).await; // reads are not audited
    // Neither are POSTs that only compute an answer, whatever it is.
    let advice = s
        .post(
            &s.admin,
            "/api/v1/revenue/optimize/pricing",
            &json!({"price_id": "price_0000000000000000000000", "current_price": 1}),
            None,
        )
        .await;
    assert_eq!(advice.status, StatusCode::BAD_REQUEST, "{}", advice.body);

    let writer = s.key(hephaestus_core::keys::Scope::Write).await;
    let forbidden = s.get(&writer, "/api/v1/audit").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let log = s.get(&s.admin, "/api/v1/audit?limit=10").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let entries = log.body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["status"], 400);
    assert_eq!(entries[1]["status"], 201);
    assert_eq!(entries[1]["method"], "POST");
    assert_eq!(entries[1]["path"], CUSTOMERS);
    assert_eq!(entries[1]["request_id"], request_id.as_str());
    assert!(
        entries[1]["api_key_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );

    let page2 = s
        .get(
            &s.admin,
            &format!(
                "/api/v1/audit?limit=1&starting_after={}",
                entries[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(page2.body["data"][0]["id"], entries[1]["id"]);
}

async fn sql_looking_text_is_data(db: Db) {
    let s = TestServer::start(db).await;
    let name = "Robert'); DROP TABLE customers;-- \" OR 1=1";
    let r = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "bobby@example.com", "name": name, "metadata": {"q": "' OR ''='"}}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let got = s
        .get(
            &s.admin,
            &format!("{CUSTOMERS}/{}", r.body["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(got.body["name"], name);
    assert_eq!(got.body["metadata"]["q"], "' OR ''='");
    let filtered = s
        .get(&s.admin, &format!("{CUSTOMERS}?email=%27%20OR%201%3D1--"))
        .await;
    assert_eq!(filtered.status, StatusCode::OK);
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 0);
    assert_eq!(s.count("customers").await, 1);
}
