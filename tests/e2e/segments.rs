//! Customer segments kept current from the event log, with the real `lifecycle-segments`
//! plugin deciding: a customer's segments follow its payments and attribute changes, lists
//! filter by segment, erasure forgets them, and a changed plugin or a jump of the business
//! clock recomputes them. Also the consumer lease that keeps one host advancing the log.

use std::time::{Duration, Instant};

use hephaestus_store::consumers;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestDb, TestServer, plugin_dir, server_with};

both_dbs!(
    high_value_holds_in_any_reporting_currency,
    segments_follow_payments_and_attribute_changes,
    segments_are_recomputed_when_the_plugin_or_the_clock_changes,
    one_host_at_a_time_advances_a_consumer
);

/// Polls the customer until `done` holds (segments are computed in the background, within
/// about a second of the change); fails with the last answer after 30 s.
async fn wait_for(s: &TestServer, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s
            .get(&s.admin, &format!("/api/v1/revenue/customers/{id}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "{what}: still {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tags(customer: &Value) -> Vec<&str> {
    customer["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect()
}

async fn listed(s: &TestServer, segment: &str) -> Vec<String> {
    let r = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/customers?segment={segment}&limit=100"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut ids: Vec<String> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(tags(c).contains(&segment), "{c}");
            c["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

/// The `customer.segments_changed` events about `id`, oldest first.
async fn changes(s: &TestServer, id: &str) -> Vec<Value> {
    s.customer_events(id)
        .await
        .iter()
        .filter(|e| e["type"] == "customer.segments_changed")
        .map(|e| e["data"].clone())
        .collect()
}

fn id(customer: &Value) -> String {
    customer["id"].as_str().unwrap().to_string()
}

async fn segments_follow_payments_and_attribute_changes(db: Db) {
    let dir = plugin_dir(&["lifecycle-segments"]);
    let s = server_with(db, dir.path()).await;
    let ada = id(&s.create_customer("ada@example.com").await);
    let bob = id(&s.create_customer("bob@example.com").await);

    // A new customer is `new` as soon as the consumer has read `customer.created`.
    for c in [&ada, &bob] {
        let view = wait_for(&s, c, "new customer", |v| {
            !v["segments_computed_at"].is_null()
        })
        .await;
        assert_eq!(tags(&view), ["new"], "{view}");
    }

    // Lifetime value above 5,000 USD makes Ada `high_value`.
    let paid = s
        .post(
            &s.admin,
            "/api/v1/revenue/payments",
            &json!({"customer_id": ada, "amount": "6000.00", "currency": "usd", "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let view = wait_for(&s, &ada, "high value", |v| tags(v).contains(&"high_value")).await;
    assert_eq!(tags(&view), ["high_value", "new"]);

    // An attribute change is an event too: `plan = enterprise` makes Ada `enterprise`.
    let updated = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/customers/{ada}"),
            &json!({"metadata": {"plan": "enterprise", "team": "core"}}),
            Some("update-ada-1"),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["metadata"]["plan"], "enterprise");
    let view = wait_for(&s, &ada, "enterprise", |v| tags(v).contains(&"enterprise")).await;
    assert_eq!(tags(&view), ["enterprise", "high_value", "new"]);

    // Lists filter by segment; a segment nobody has lists nobody.
    let mut both = vec![ada.clone(), bob.clone()];
    both.sort();
    assert_eq!(listed(&s, "new").await, both);
    assert_eq!(listed(&s, "high_value").await, [ada.as_str()]);
    assert_eq!(listed(&s, "enterprise").await, [ada.as_str()]);
    assert!(listed(&s, "at_risk").await.is_empty());

    // Removing the attribute (an empty value deletes a key) takes the segment away.
    let updated = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/customers/{ada}"),
            &json!({"metadata": {"plan": ""}}),
            None,
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["metadata"], json!({"team": "core"}));
    let view = wait_for(&s, &ada, "not enterprise", |v| {
        !tags(v).contains(&"enterprise")
    })
    .await;
    assert_eq!(tags(&view), ["high_value", "new"]);

    // Every change event says what changed, and the last one matches what is stored.
    let ada_changes = changes(&s, &ada).await;
    assert!(ada_changes.len() >= 3, "{ada_changes:?}");
    for change in &ada_changes {
        let (added, removed) = (change["added"].as_array(), change["removed"].as_array());
        assert!(
            !added.unwrap().is_empty() || !removed.unwrap().is_empty(),
            "a change that changed nothing: {change}"
        );
    }
    assert_eq!(
        ada_changes.last().unwrap()["segments"],
        json!(["high_value", "new"])
    );
    assert_eq!(
        ada_changes.last().unwrap()["removed"],
        json!(["enterprise"])
    );

    // An erased customer is no longer segmented, nor listed in any segment.
    let erased = s
        .delete(&s.admin, &format!("/api/v1/revenue/customers/{bob}"))
        .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert_eq!(erased.body["segments"], json!([]));
    assert_eq!(listed(&s, "new").await, [ada.as_str()]);
    // Erasure wrote events the consumer reads; it must not segment Bob again.
    wait_for_consumer(&s).await;
    let view = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{bob}"))
        .await;
    assert_eq!(view.body["segments"], json!([]), "{}", view.body);
    assert!(view.body["segments_computed_at"].is_null(), "{}", view.body);

    // Bad updates and filters change nothing.
    for (path, body, status, code) in [
        (
            format!("/api/v1/revenue/customers/{ada}"),
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!("/api/v1/revenue/customers/{ada}"),
            json!({"email": "not an address"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!("/api/v1/revenue/customers/{ada}"),
            json!({"nickname": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!("/api/v1/revenue/customers/{bob}"),
            json!({"name": "Bob"}),
            StatusCode::CONFLICT,
            "customer_erased",
        ),
        (
            "/api/v1/revenue/customers/cus_0000000000000000000000".to_string(),
            json!({"name": "Nobody"}),
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
    ] {
        let r = s.post(&s.admin, &path, &body, None).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.code(), code, "{body}: {}", r.body);
    }
    let carl = id(&s.create_customer("carl@example.com").await);
    let taken = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/customers/{carl}"),
            &json!({"email": "ADA@example.com"}),
            None,
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.code(), "customer_exists");
    assert_eq!(
        taken.body["error"]["existing_id"],
        ada.as_str(),
        "{}",
        taken.body
    );
    let r = s
        .get(&s.admin, "/api/v1/revenue/customers?segment=High-Value!")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("segment"));
    let view = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{ada}"))
        .await;
    assert_eq!(view.body["email"], "ada@example.com");
    assert_eq!(view.body["metadata"], json!({"team": "core"}));
    assert_eq!(
        s.count("events WHERE type = 'customer.updated'").await,
        2,
        "only the two real changes wrote events"
    );
}

/// Waits until the segment consumer has read every event written so far.
async fn wait_for_consumer(s: &TestServer) {
    let head = consumers::head(&s.store).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumers::position(&s.store, "segments").await.unwrap() < head {
        assert!(Instant::now() < deadline, "the segment consumer is stuck");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn segments_are_recomputed_when_the_plugin_or_the_clock_changes(db: Db) {
    let dir = plugin_dir(&["lifecycle-segments"]);
    let s = server_with(db, dir.path()).await;
    let create = s
        .post(
            &s.admin,
            "/api/v1/revenue/customers",
            &json!({"email": "team@example.com", "metadata": {"seats": "40"}}),
            None,
        )
        .await;
    assert_eq!(create.status, StatusCode::CREATED, "{}", create.body);
    let team = id(&create.body);
    let view = wait_for(&s, &team, "computed", |v| {
        !v["segments_computed_at"].is_null()
    })
    .await;
    assert_eq!(tags(&view), ["new"], "40 seats are not enterprise at 100");

    // The operator lowers the plugin's enterprise threshold: no event concerns the customer,
    // but what decided its segments changed, so they are recomputed.
    let manifest = dir.path().join("lifecycle-segments.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("enterprise_seats = \"100\""), "{text}");
    std::fs::write(
        &manifest,
        text.replace("enterprise_seats = \"100\"", "enterprise_seats = \"25\""),
    )
    .unwrap();
    let view = wait_for(&s, &team, "enterprise at 25 seats", |v| {
        tags(v).contains(&"enterprise")
    })
    .await;
    assert_eq!(tags(&view), ["enterprise", "new"]);

    // Thirty-one days later (the sandbox clock), the customer is no longer new.
    let moved = s
        .post(
            &s.admin,
            "/api/v1/sandbox/clock/advance",
            &json!({"days": 31}),
            None,
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let view = wait_for(&s, &team, "no longer new", |v| !tags(v).contains(&"new")).await;
    assert_eq!(tags(&view), ["enterprise"]);
    let last = changes(&s, &team).await.pop().unwrap();
    assert_eq!(last["removed"], json!(["new"]), "{last}");
}

async fn one_host_at_a_time_advances_a_consumer(db: Db) {
    let db = TestDb::new(db).await;
    let store = db.store().await;
    let mut a = consumers::claim(&store, "test-consumer", "host-a", 60)
        .await
        .unwrap()
        .expect("a free consumer is claimed");
    assert_eq!(a.position, 0);
    assert!(
        consumers::claim(&store, "test-consumer", "host-b", 60)
            .await
            .unwrap()
            .is_none(),
        "a held consumer is not handed to another host"
    );
    assert!(consumers::advance(&store, &mut a, 7, 60).await.unwrap());
    assert!(
        !consumers::advance(&store, &mut a, 3, 60).await.unwrap(),
        "a consumer never moves back"
    );
    assert_eq!(a.position, 7);
    // A host whose lease ran out loses the consumer to the next, and cannot advance it.
    let mut stale = consumers::claim(&store, "test-consumer", "host-a", -1)
        .await
        .unwrap()
        .unwrap();
    let mut b = consumers::claim(&store, "test-consumer", "host-b", 60)
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(b.position, 7);
    assert!(!consumers::advance(&store, &mut stale, 9, 60).await.unwrap());
    assert!(consumers::advance(&store, &mut b, 9, 60).await.unwrap());
    consumers::release(&store, &b.name, &b.holder)
        .await
        .unwrap();
    let c = consumers::claim(&store, "test-consumer", "host-c", 60)
        .await
        .unwrap()
        .expect("a released consumer is free");
    assert_eq!(c.position, 9);
    assert_eq!(
        consumers::position(&store, "test-consumer").await.unwrap(),
        9
    );
}

/// The built-in `high_value` rule (lifetime value above 5,000.00 USD) compared in the
/// reporting currency through the stored rates, and a note when money is left out.
async fn high_value_holds_in_any_reporting_currency(db: Db) {
    let config = hephaestus_api::ApiConfig {
        reporting_currency: hephaestus_core::money::Currency::parse("EUR", "currency").unwrap(),
        ..crate::common::test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let ada = id(&s.create_customer("euro@example.com").await);
    let pay = |amount: &'static str, currency: &'static str| {
        json!({"customer_id": ada, "amount": amount, "currency": currency,
               "payment_method": "pm_card_visa"})
    };
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/payments",
            &pay("5000.00", "eur"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // No USD/EUR rate: the threshold cannot be converted, and the customer says so.
    let view = wait_for(&s, &ada, "a note on the missing rate", |v| {
        v["segments_note"]
            .as_str()
            .is_some_and(|n| n.contains("USD/EUR"))
    })
    .await;
    assert!(!tags(&view).contains(&"high_value"), "{view}");

    // 1 EUR = 1.10 USD: the threshold is 4,545.45 EUR, and 5,000 EUR passes it.
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/exchange-rates",
            &json!({"base": "EUR", "quote": "USD", "rate": "1.10"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Money in a currency with no rate is left out, and said so.
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/payments",
            &pay("10.00", "gbp"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let view = wait_for(&s, &ada, "high value in EUR", |v| {
        tags(v).contains(&"high_value")
    })
    .await;
    let note = view["segments_note"].as_str().unwrap_or_default();
    assert!(note.contains("GBP"), "{view}");
    assert!(!note.contains("USD/EUR"), "{view}");
}
