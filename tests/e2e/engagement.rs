//! Personalization and campaign-trigger decisions over HTTP, with the real
//! `segment-subjects` and `lifecycle-triggers` plugins, and the defaults without them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer, plugin_dir, recurring_price, server_with};

both_dbs!(
    personalization_picks_a_subject_by_segment,
    triggers_answer_events_of_the_log,
    without_plugins_nothing_is_personalized_or_triggered
);

fn campaign() -> Value {
    json!({"id": "spring", "name": "Spring news", "template": "newsletter", "subject": "Our spring news"})
}

async fn personalize(s: &TestServer, body: &Value) -> crate::common::Reply {
    s.post(&s.admin, "/api/v1/plugins/personalize", body, None)
        .await
}

async fn trigger(s: &TestServer, body: &Value) -> crate::common::Reply {
    s.post(&s.admin, "/api/v1/plugins/trigger", body, None)
        .await
}

/// The id of the newest event of `kind` about `customer`.
async fn event_id(s: &TestServer, customer: &str, kind: &str) -> String {
    let export = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/customers/{customer}/export"),
        )
        .await;
    export.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {}", export.body))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn personalization_picks_a_subject_by_segment(db: Db) {
    let dir = plugin_dir(&["segment-subjects", "lifecycle-segments"]);
    let s = server_with(db, dir.path()).await;
    let c = s
        .post(
            &s.admin,
            "/api/v1/revenue/customers",
            &json!({"email": "grace@example.com", "name": "Grace Hopper"}),
            None,
        )
        .await;
    let id = c.body["id"].as_str().unwrap();

    let r = personalize(
        &s,
        &json!({"customer_id": id, "campaign": campaign(), "variables": {"offer": "10%", "segment": "caller's"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["subject"], "Hi Grace, welcome aboard!", "{}", r.body);
    assert_eq!(r.body["subject_personalized"], true);
    assert_eq!(r.body["segments"], json!(["new"]));
    assert_eq!(r.body["plugin_variables"]["first_name"], "Grace");
    assert_eq!(r.body["plugin_variables"]["segment"], "new");
    // The request's variables are kept; the plugin's value wins where both set one.
    assert_eq!(r.body["variables"]["offer"], "10%");
    assert_eq!(r.body["variables"]["segment"], "new");
    assert_eq!(r.body["decided_by"]["plugin"], "segment-subjects");

    for (body, field) in [
        (json!({"customer_id": id}), None),
        (
            json!({"customer_id": id, "campaign": {"id": "x", "name": "x", "template": "x", "subject": " "}}),
            Some("campaign.subject"),
        ),
        (
            json!({"customer_id": "cus_0000000000000000000000", "campaign": campaign()}),
            Some("customer_id"),
        ),
        (
            json!({"customer_id": id, "campaign": campaign(), "variables": {"": "x"}}),
            Some("variables."),
        ),
        (
            json!({"customer_id": id, "campaign": campaign(), "variables": {"k": "v".repeat(501)}}),
            Some("variables.k"),
        ),
    ] {
        let r = personalize(&s, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        if let Some(field) = field {
            assert_eq!(r.field(), Some(field), "{body}: {}", r.body);
        }
    }
}

async fn triggers_answer_events_of_the_log(db: Db) {
    let dir = plugin_dir(&["lifecycle-triggers"]);
    let s = server_with(db, dir.path()).await;
    let c = s.create_customer("linus@example.com").await;
    let id = c["id"].as_str().unwrap();
    let created = event_id(&s, id, "customer.created").await;

    let r = trigger(&s, &json!({"event_id": created})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["event_type"], "customer.created");
    assert_eq!(r.body["decided_by"]["plugin"], "lifecycle-triggers");
    let actions = r.body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{}", r.body);
    assert_eq!(actions[0]["type"], "enqueue");
    assert_eq!(actions[0]["template"], "welcome");
    assert_eq!(actions[0]["customer_id"], id);
    assert_eq!(actions[0]["delay_seconds"], 0);

    // A canceled subscription asks for a win-back a week later.
    let price = recurring_price(&s, json!(20), "month", None).await;
    let sub = s
        .post(
            &s.admin,
            "/api/v1/revenue/subscriptions",
            &json!({"customer_id": id, "price_id": price, "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let canceled = s
        .post(
            &s.admin,
            &format!(
                "/api/v1/revenue/subscriptions/{}/cancel",
                sub.body["id"].as_str().unwrap()
            ),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.body);
    let event = event_id(&s, id, "subscription.canceled").await;
    let r = trigger(&s, &json!({"event_id": event})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let actions = r.body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{}", r.body);
    assert_eq!(actions[0]["template"], "win_back");
    assert_eq!(actions[0]["delay_seconds"], 7 * 86_400);

    // Other events trigger nothing.
    let paid = event_id(&s, id, "payment.succeeded").await;
    let r = trigger(&s, &json!({"event_id": paid})).await;
    assert_eq!(r.body["actions"], json!([]), "{}", r.body);

    for body in [
        json!({"event_id": "evt_0000000000000000000000"}),
        json!({"event_id": "pay_x"}),
        json!({}),
    ] {
        let r = trigger(&s, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
    }
}

async fn without_plugins_nothing_is_personalized_or_triggered(db: Db) {
    let s = TestServer::start(db).await;
    let c = s.create_customer("plain@example.com").await;
    let id = c["id"].as_str().unwrap();
    let r = personalize(
        &s,
        &json!({"customer_id": id, "campaign": campaign(), "variables": {"offer": "10%"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["subject"], "Our spring news");
    assert_eq!(r.body["subject_personalized"], false);
    assert_eq!(r.body["variables"], json!({"offer": "10%"}));
    assert_eq!(r.body["decided_by"]["kind"], "default");
    let created = event_id(&s, id, "customer.created").await;
    let r = trigger(&s, &json!({"event_id": created})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["actions"], json!([]));
    assert_eq!(r.body["decided_by"]["reason"], "no_plugin");
}
