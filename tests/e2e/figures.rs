//! A customer's running figures (captured payments, the last one's time, 30-day counts, net
//! money per currency), which the database keeps beside every change to a payment, always
//! equal what the customer's payments add up to, whichever path changed them.

use hephaestus_core::Timestamp;
use hephaestus_store::profiles;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(running_figures_equal_the_payments_they_sum);

const PAYMENTS: &str = "/api/v1/revenue/payments";

async fn pay(s: &TestServer, customer: &str, amount: &str, currency: &str, pm: &str) -> Value {
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": customer, "amount": amount, "currency": currency,
                    "payment_method": pm}),
            None,
        )
        .await;
    assert!(
        matches!(r.status, StatusCode::CREATED | StatusCode::PAYMENT_REQUIRED),
        "{}",
        r.body
    );
    if r.status == StatusCode::PAYMENT_REQUIRED {
        r.body["error"]["payment"].clone()
    } else {
        r.body
    }
}

/// What the figures must be, summed from the payments as the API lists them.
async fn expected(s: &TestServer, customer: &str) -> (i64, Option<i64>, i64, Vec<(String, i64)>) {
    let list = s
        .get(
            &s.admin,
            &format!("{PAYMENTS}?customer_id={customer}&limit=100"),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let (mut captured, mut last, mut failed) = (0, None::<i64>, 0);
    let mut net = std::collections::BTreeMap::<String, i64>::new();
    for p in list.body["data"].as_array().unwrap() {
        let status = p["status"].as_str().unwrap();
        let created = chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        if matches!(
            status,
            "succeeded" | "partially_refunded" | "refunded" | "disputed"
        ) {
            captured += 1;
            last = last.max(Some(created));
        }
        if status == "failed" {
            failed += 1;
        }
        if matches!(status, "succeeded" | "partially_refunded" | "refunded") {
            *net.entry(p["currency"].as_str().unwrap().to_string())
                .or_default() +=
                p["amount_minor"].as_i64().unwrap() - p["amount_refunded_minor"].as_i64().unwrap();
        }
    }
    (captured, last, failed, net.into_iter().collect())
}

async fn check(s: &TestServer, customer: &str) {
    let (captured, last, failed, mut net) = expected(s, customer).await;
    let snap = profiles::snapshot(&s.store, customer, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let f = &snap.facts;
    assert_eq!(f.payments, captured, "captured payments");
    assert_eq!(f.payments_last_30_days, captured, "all were made today");
    assert_eq!(f.failed_payments_last_30_days, failed);
    assert_eq!(f.last_payment_at.map(Timestamp::as_micros), last);
    let mut got: Vec<(String, i64)> = f
        .net_by_currency
        .iter()
        .filter(|(_, n)| *n != 0)
        .cloned()
        .collect();
    got.sort();
    net.retain(|(_, n)| *n != 0);
    assert_eq!(got, net, "net per currency");
}

async fn running_figures_equal_the_payments_they_sum(db: Db) {
    let s = TestServer::start(db).await;
    let c = s.create_customer("figures@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    check(&s, &c).await;

    let a = pay(&s, &c, "10.00", "usd", "pm_card_visa").await;
    pay(&s, &c, "7.50", "eur", "pm_card_mastercard").await;
    pay(&s, &c, "3.00", "usd", "pm_card_chargeDeclined").await;
    check(&s, &c).await;

    // Refunds, partial then full.
    let refunds = format!("{PAYMENTS}/{}/refunds", a["id"].as_str().unwrap());
    let r = s
        .post(&s.admin, &refunds, &json!({"amount": "4.00"}), None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    check(&s, &c).await;
    let r = s.post(&s.admin, &refunds, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    check(&s, &c).await;

    // A dispute takes the payment out of the net; 3-D Secure completes later.
    pay(&s, &c, "20.00", "usd", "pm_card_createDispute").await;
    check(&s, &c).await;
    let waiting = pay(&s, &c, "5.00", "usd", "pm_card_authenticationRequired").await;
    assert_eq!(waiting["status"], "requires_action");
    check(&s, &c).await;
    let r = s
        .post(
            &s.admin,
            &format!(
                "/api/v1/sandbox/payments/{}/authenticate",
                waiting["id"].as_str().unwrap()
            ),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    check(&s, &c).await;

    // A payment that waited for a method, then confirmed.
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "amount": "2.00", "currency": "usd"}),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "requires_payment_method");
    check(&s, &c).await;
    let r = s
        .post(
            &s.admin,
            &format!("{PAYMENTS}/{}/confirm", r.body["id"].as_str().unwrap()),
            &json!({"payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    check(&s, &c).await;

    // Concurrent payments of one customer all count.
    let replies = futures::future::join_all((0..20).map(|i| {
        pay(
            &s,
            &c,
            if i % 2 == 0 { "1.00" } else { "1.01" },
            "usd",
            "pm_card_visa",
        )
    }))
    .await;
    assert_eq!(replies.len(), 20);
    check(&s, &c).await;
    let (captured, ..) = expected(&s, &c).await;
    assert_eq!(captured, 25, "2 + dispute + 3-D Secure + confirmed + 20");
}
