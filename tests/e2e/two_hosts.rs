//! Two hosts on one PostgreSQL: requests with one `Idempotency-Key` split across them make
//! one payment, and one Stripe event delivered to both is stored and applied once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hephaestus_api::ApiConfig;
use hephaestus_core::payment::PaymentStatus;
use hephaestus_core::secret::Secret;
use hephaestus_store::inbox;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Db, TestDb, TestServer, test_config};
use crate::webhooks::{deliver, event, now_secs, settled, stripe_payment, stripe_sign};

const SECRET: &str = "whsec_two_hosts";

fn config() -> ApiConfig {
    ApiConfig {
        stripe_webhook_secrets: vec![Secret::new(SECRET)],
        ..test_config()
    }
}

/// Host A over a fresh schema, and host B over the same one.
async fn hosts() -> (Arc<TestServer>, Arc<TestServer>) {
    let a = TestServer::start_with(Db::Postgres, config()).await;
    let store_b = a.db.store().await;
    let b_db = TestDb {
        url: a.db.url.clone(),
        schema: None,
        _dir: tempfile::tempdir().unwrap(),
    };
    let b = TestServer::serve(b_db, store_b, a.admin.clone(), config(), Router::new()).await;
    (Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_split_over_two_hosts_pays_once() {
    let (a, b) = hosts().await;
    let customer = a.create_customer("split@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for round in 0..10 {
        let key = format!("split-{round}");
        let body = json!({ "customer_id": customer, "amount": 25, "currency": "usd",
                           "payment_method": "pm_card_visa", "description": key });
        let replies = futures::future::join_all((0..20).map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (body, key) = (body.clone(), key.clone());
            async move {
                host.post(&host.admin, "/api/v1/revenue/payments", &body, Some(&key))
                    .await
            }
        }))
        .await;
        let mut ids: Vec<String> = Vec::new();
        for r in &replies {
            match r.status {
                StatusCode::CREATED => ids.push(r.body["id"].as_str().unwrap().to_string()),
                StatusCode::CONFLICT => assert_eq!(r.code(), "idempotency_key_in_use"),
                other => panic!("round {round}: {other} {}", r.body),
            }
        }
        // Whatever was still in flight has finished: a retry through either host replays.
        let deadline = Instant::now() + Duration::from_secs(10);
        for host in [&a, &b] {
            loop {
                let r = host
                    .post(&host.admin, "/api/v1/revenue/payments", &body, Some(&key))
                    .await;
                if r.status == StatusCode::CREATED {
                    ids.push(r.body["id"].as_str().unwrap().to_string());
                    break;
                }
                assert_eq!(r.code(), "idempotency_key_in_use", "{}", r.body);
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {key} never settled"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        let stored = a
            .count(&format!("payments WHERE description = '{key}'"))
            .await;
        assert_eq!(stored, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_delivered_to_two_hosts_applies_once() {
    let (a, b) = hosts().await;
    let payment = stripe_payment(&a, "pi_two_hosts", PaymentStatus::Processing).await;
    let now = now_secs();
    let payload = event(
        "evt_two_hosts",
        "payment_intent.succeeded",
        now,
        json!({"id": "pi_two_hosts", "object": "payment_intent", "status": "succeeded"}),
    )
    .to_string();
    let signature = stripe_sign(&payload, SECRET, now);
    let replies = futures::future::join_all((0..20).map(|i| {
        let host = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (payload, signature) = (payload.clone(), signature.clone());
        async move { deliver(&host, &payload, Some(&signature)).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let fresh = replies
        .iter()
        .filter(|r| r.body["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "answered as new exactly once");
    settled(&a).await;
    assert_eq!(a.count("webhook_events").await, 1);
    let (status, attempts, _) = inbox::status(&a.store, "stripe", "evt_two_hosts")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("processed", 1));
    let p = b
        .get(&b.admin, &format!("/api/v1/revenue/payments/{payment}"))
        .await;
    assert_eq!(p.body["status"], "succeeded");
    let succeeded = a
        .count(&format!(
            "events WHERE type = 'payment.succeeded' AND subject_id = '{payment}'"
        ))
        .await;
    assert_eq!(
        succeeded, 1,
        "one domain event for one delivery applied once"
    );
}
