//! Payments and refunds through the sandbox gateway, end to end over HTTP.

use hephaestus_api::ApiConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer, test_config};

both_dbs!(
    each_test_payment_method,
    refunds_partial_full_and_over,
    concurrent_payment_with_one_key_charges_once,
    money_converts_exactly,
    list_filters_and_events,
    three_d_secure_completes_through_the_sandbox,
    reconciliation_catches_a_missed_update,
    the_sandbox_ledger_charges_once_per_key
);

const PAYMENTS: &str = "/api/v1/revenue/payments";

async fn pay(
    s: &TestServer,
    customer: &str,
    amount: Value,
    currency: &str,
    pm: &str,
    idem: Option<&str>,
) -> Reply {
    s.post(
        &s.admin,
        PAYMENTS,
        &json!({"customer_id": customer, "amount": amount, "currency": currency, "payment_method": pm, "description": "Pro plan"}),
        idem,
    )
    .await
}

async fn customer(s: &TestServer) -> String {
    let c = s
        .create_customer(&format!(
            "payer-{}@example.com",
            uuid::Uuid::now_v7().simple()
        ))
        .await;
    c["id"].as_str().unwrap().to_string()
}

async fn raw_post(s: &TestServer, body: &str) -> (StatusCode, String) {
    let r = s
        .client
        .post(s.url(PAYMENTS))
        .bearer_auth(&s.admin)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn each_test_payment_method(db: Db) {
    let s = TestServer::start(db).await;
    let c = customer(&s).await;

    for pm in [
        "pm_card_visa",
        "pm_card_visa_debit",
        "pm_card_mastercard",
        "pm_card_amex",
    ] {
        let r = pay(&s, &c, json!(97.00), "usd", pm, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{pm}: {}", r.body);
        assert_eq!(r.body["status"], "succeeded");
        assert_eq!(r.body["amount_minor"], 9700);
        assert_eq!(r.body["currency"], "USD");
        assert_eq!(r.body["payment_id"], r.body["id"]);
        assert!(
            r.body["gateway_id"]
                .as_str()
                .unwrap()
                .starts_with("pi_sbx_")
        );
    }

    let declines = [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
        ("pm_card_chargeDeclinedLostCard", "lost_card"),
        ("pm_card_chargeDeclinedStolenCard", "stolen_card"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error"),
        ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
    ];
    for (pm, code) in declines {
        let r = pay(&s, &c, json!(10), "usd", pm, None).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{pm}: {}", r.body);
        assert_eq!(r.code(), "card_declined");
        assert_eq!(r.body["error"]["decline_code"], code);
        let id = r.body["error"]["payment_id"].as_str().unwrap();
        let stored = s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await;
        assert_eq!(stored.status, StatusCode::OK);
        assert_eq!(
            stored.body["status"], "failed",
            "the declined payment is stored"
        );
        assert_eq!(stored.body["decline_code"], code);
    }

    let action = pay(
        &s,
        &c,
        json!(10),
        "usd",
        "pm_card_authenticationRequired",
        None,
    )
    .await;
    assert_eq!(action.status, StatusCode::CREATED);
    assert_eq!(action.body["status"], "requires_action");

    let before = s.count("payments").await;
    let unknown = pay(&s, &c, json!(10), "usd", "pm_card_nonsense", None).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.field(), Some("payment_method"));
    let gone = pay(
        &s,
        "cus_0000000000000000000000",
        json!(10),
        "usd",
        "pm_card_visa",
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST);
    assert_eq!(gone.field(), Some("customer_id"));
    assert_eq!(
        s.count("payments").await,
        before,
        "rejected payments store nothing"
    );
    assert_eq!(s.count("payments").await, 4 + 8 + 1);
    assert_eq!(
        s.count("sandbox_charges").await,
        4 + 8 + 1,
        "the gateway saw each charge once"
    );
}

async fn refunds_partial_full_and_over(db: Db) {
    let s = TestServer::start(db).await;
    let c = customer(&s).await;
    let p = pay(&s, &c, json!(97.00), "USD", "pm_card_visa", None).await;
    let id = p.body["id"].as_str().unwrap().to_string();
    let refunds = format!("{PAYMENTS}/{id}/refunds");

    let r1 = s
        .post(
            &s.admin,
            &refunds,
            &json!({"amount": 30.00, "reason": "requested_by_customer"}),
            Some("refund-1"),
        )
        .await;
    assert_eq!(r1.status, StatusCode::CREATED, "{}", r1.body);
    assert!(r1.body["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(r1.body["amount_minor"], 3000);
    let replay = s
        .post(
            &s.admin,
            &refunds,
            &json!({"amount": 30.00, "reason": "requested_by_customer"}),
            Some("refund-1"),
        )
        .await;
    assert_eq!(
        replay.body, r1.body,
        "a retried refund is not refunded twice"
    );
    let after1 = s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await;
    assert_eq!(after1.body["status"], "partially_refunded");
    assert_eq!(after1.body["amount_refunded_minor"], 3000);

    let over = s
        .post(&s.admin, &refunds, &json!({"amount": "67.01"}), None)
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(over.field(), Some("amount"));
    assert!(
        over.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("67.00 USD"),
        "{}",
        over.body
    );

    let rest = s.post(&s.admin, &refunds, &json!({}), None).await;
    assert_eq!(rest.status, StatusCode::CREATED, "{}", rest.body);
    assert_eq!(
        rest.body["amount_minor"], 6700,
        "no amount refunds what is left"
    );
    let done = s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await;
    assert_eq!(done.body["status"], "refunded");
    assert_eq!(done.body["amount_refunded_minor"], 9700);
    assert_eq!(done.body["refunds"].as_array().unwrap().len(), 2);

    let again = s
        .post(&s.admin, &refunds, &json!({"amount": 0.01}), None)
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.count("refunds").await, 2);
    assert_eq!(s.count("sandbox_refunds").await, 2);

    // A declined payment has nothing to refund.
    let declined = pay(&s, &c, json!(5), "usd", "pm_card_chargeDeclined", None).await;
    let did = declined.body["error"]["payment_id"].as_str().unwrap();
    let r = s
        .post(
            &s.admin,
            &format!("{PAYMENTS}/{did}/refunds"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let missing = s
        .post(
            &s.admin,
            &format!("{PAYMENTS}/pay_0000000000000000000000/refunds"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn concurrent_payment_with_one_key_charges_once(db: Db) {
    let s = TestServer::start(db).await;
    let c = customer(&s).await;
    let replies = futures::future::join_all((0..20).map(|_| {
        pay(
            &s,
            &c,
            json!(49.99),
            "eur",
            "pm_card_visa",
            Some("checkout-42"),
        )
    }))
    .await;
    let ok: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!ok.is_empty());
    for r in &replies {
        match r.status {
            StatusCode::CREATED => assert_eq!(r.body, ok[0].body),
            StatusCode::CONFLICT => assert_eq!(r.code(), "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(s.count("payments").await, 1);
    assert_eq!(
        s.count("sandbox_charges").await,
        1,
        "one charge at the gateway"
    );
}

async fn money_converts_exactly(db: Db) {
    let config = ApiConfig {
        max_payment: "10000000000000".parse().unwrap(),
        ..test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let c = customer(&s).await;
    let ok: &[(&str, &str, i64, &str)] = &[
        ("97.00", "usd", 9700, "97.00"),
        ("97", "usd", 9700, "97.00"),
        ("\"97.5\"", "eur", 9750, "97.50"),
        ("1000", "jpy", 1000, "1000"),
        ("1.500", "kwd", 1500, "1.500"),
        ("0.001", "bhd", 1, "0.001"),
        ("10000000000.00", "usd", 1_000_000_000_000, "10000000000.00"),
        ("1000000000000", "jpy", 1_000_000_000_000, "1000000000000"),
        // A JSON number however it is spelt (encoders write large ones with an exponent),
        // read exactly.
        ("1e3", "usd", 100_000, "1000.00"),
        ("2.5E+1", "usd", 2500, "25.00"),
    ];
    for (amount, currency, minor, shown) in ok {
        let body = format!(
            r#"{{"customer_id": "{c}", "amount": {amount}, "currency": "{currency}", "payment_method": "pm_card_visa"}}"#
        );
        let (status, text) = raw_post(&s, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{amount} {currency}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["amount_minor"], *minor, "{amount} {currency}");
        assert!(
            text.contains(&format!(r#""amount":{shown},"#)),
            "{amount} {currency} shown exactly: {text}"
        );
    }
    let bad: &[(&str, &str, &str)] = &[
        ("97.005", "usd", "amount"),
        ("1.5", "jpy", "amount"),
        ("1.0001", "kwd", "amount"),
        ("-5", "usd", "amount"),
        ("0", "usd", "amount"),
        ("0.00", "usd", "amount"),
        ("1e-3", "usd", "amount"),
        ("\"1e3\"", "usd", "amount"),
        ("\"ten\"", "usd", "amount"),
        ("null", "usd", "amount"),
        ("true", "usd", "amount"),
        ("10000000000000.01", "usd", "amount"),
        ("1", "xyz", "currency"),
        ("1", "xau", "currency"),
    ];
    let before = s.count("payments").await;
    for (amount, currency, field) in bad {
        let body = format!(
            r#"{{"customer_id": "{c}", "amount": {amount}, "currency": "{currency}", "payment_method": "pm_card_visa"}}"#
        );
        let (status, text) = raw_post(&s, &body).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{amount} {currency}: {text}"
        );
        assert_eq!(v["error"]["field"], *field, "{amount} {currency}: {text}");
    }
    assert_eq!(s.count("payments").await, before);

    // The default maximum is 1,000,000.00 in the payment's currency.
    let strict = TestServer::start(db).await;
    let c2 = customer(&strict).await;
    assert_eq!(
        pay(&strict, &c2, json!(1000000), "usd", "pm_card_visa", None)
            .await
            .status,
        StatusCode::CREATED
    );
    let above = pay(
        &strict,
        &c2,
        json!("1000000.01"),
        "usd",
        "pm_card_visa",
        None,
    )
    .await;
    assert_eq!(above.status, StatusCode::BAD_REQUEST);
    assert_eq!(above.field(), Some("amount"));
}

async fn list_filters_and_events(db: Db) {
    let s = TestServer::start(db).await;
    let a = customer(&s).await;
    let b = customer(&s).await;
    let first = pay(&s, &a, json!(10), "usd", "pm_card_visa", None).await;
    pay(&s, &a, json!(11), "usd", "pm_card_chargeDeclined", None).await;
    pay(&s, &b, json!(12), "gbp", "pm_card_visa", None).await;
    let refund = format!("{PAYMENTS}/{}/refunds", first.body["id"].as_str().unwrap());
    assert_eq!(
        s.post(&s.admin, &refund, &json!({"amount": 1}), None)
            .await
            .status,
        StatusCode::CREATED
    );

    let all = s.get(&s.admin, PAYMENTS).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 3);
    let of_a = s
        .get(&s.admin, &format!("{PAYMENTS}?customer_id={a}"))
        .await;
    assert_eq!(of_a.body["data"].as_array().unwrap().len(), 2);
    let failed = s.get(&s.admin, &format!("{PAYMENTS}?status=failed")).await;
    let failed = failed.body["data"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["amount_minor"], 1100);
    let partially = s
        .get(&s.admin, &format!("{PAYMENTS}?status=partially_refunded"))
        .await;
    assert_eq!(partially.body["data"].as_array().unwrap().len(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recent = s
        .get(
            &s.admin,
            &format!(
                "{PAYMENTS}?created_gte={}&created_lte={}",
                now - 60,
                now + 60
            ),
        )
        .await;
    assert_eq!(recent.body["data"].as_array().unwrap().len(), 3);
    let old = s
        .get(&s.admin, &format!("{PAYMENTS}?created_lte={}", now - 3600))
        .await;
    assert_eq!(old.body["data"].as_array().unwrap().len(), 0);
    let page = s.get(&s.admin, &format!("{PAYMENTS}?limit=2")).await;
    assert_eq!(page.body["has_more"], true);
    for (query, field) in [
        ("status=paid", "status"),
        ("customer_id=x", "customer_id"),
        ("created_gte=-1", "created_gte"),
        ("limit=0", "limit"),
    ] {
        let r = s.get(&s.admin, &format!("{PAYMENTS}?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.field(), Some(field), "{query}");
    }

    // Every change wrote its event, in the same transaction.
    let export = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{a}/export"))
        .await;
    // Segment changes are written by a consumer in the background, at no fixed place.
    let kinds: Vec<&str> = export.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| *k != "customer.segments_changed")
        .collect();
    assert_eq!(
        kinds,
        [
            "customer.created",
            "payment.succeeded",
            "payment.failed",
            "refund.created"
        ]
    );
}

async fn three_d_secure_completes_through_the_sandbox(db: Db) {
    let s = TestServer::start(db).await;
    let c = customer(&s).await;
    let waiting = pay(
        &s,
        &c,
        json!(20),
        "usd",
        "pm_card_authenticationRequired",
        None,
    )
    .await;
    assert_eq!(waiting.body["status"], "requires_action");
    let id = waiting.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/sandbox/payments/{id}/authenticate");

    let done = s.post(&s.admin, &path, &json!({}), None).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["status"], "succeeded");
    let again = s.post(&s.admin, &path, &json!({}), None).await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "only a waiting payment can be completed"
    );

    let other = pay(
        &s,
        &c,
        json!(20),
        "usd",
        "pm_card_authenticationRequired",
        None,
    )
    .await;
    let failed = s
        .post(
            &s.admin,
            &format!(
                "/api/v1/sandbox/payments/{}/authenticate",
                other.body["id"].as_str().unwrap()
            ),
            &json!({"outcome": "fail"}),
            None,
        )
        .await;
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["decline_code"], "authentication_required");
    let bad = s
        .post(&s.admin, &path, &json!({"outcome": "maybe"}), None)
        .await;
    assert_eq!(bad.field(), Some("outcome"));

    let export = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{c}/export"))
        .await;
    // Segment changes are written by a consumer in the background, at no fixed place.
    let kinds: Vec<&str> = export.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| *k != "customer.segments_changed")
        .collect();
    assert_eq!(
        kinds,
        [
            "customer.created",
            "payment.requires_action",
            "payment.succeeded",
            "payment.requires_action",
            "payment.failed"
        ]
    );
}

async fn reconciliation_catches_a_missed_update(db: Db) {
    use hephaestus_billing::gateway::Gateway;
    use hephaestus_billing::reconcile::{Report, reconcile};
    use hephaestus_billing::sandbox::SandboxGateway;

    let s = TestServer::start(db).await;
    let c = customer(&s).await;
    let waiting = pay(
        &s,
        &c,
        json!(20),
        "usd",
        "pm_card_authenticationRequired",
        None,
    )
    .await;
    let id = waiting.body["id"].as_str().unwrap().to_string();
    let charge = waiting.body["gateway_id"].as_str().unwrap().to_string();

    // The customer completes 3-D Secure at the gateway, but the host never hears of it.
    let gateway = SandboxGateway::new(s.store.clone());
    assert_eq!(gateway.name(), "sandbox");
    gateway
        .complete_action(&charge, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await.body["status"],
        "requires_action"
    );

    // Not yet past the deadline: left alone. Past it: refetched and brought up to date, once.
    let early = reconcile(&s.store, &gateway, 3600, 100).await.unwrap();
    assert_eq!(early, Report::default());
    let report = reconcile(&s.store, &gateway, 0, 100).await.unwrap();
    assert_eq!(
        report,
        Report {
            checked: 1,
            updated: 1,
            failed: 0
        }
    );
    assert_eq!(
        s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await.body["status"],
        "succeeded"
    );
    let again = reconcile(&s.store, &gateway, 0, 100).await.unwrap();
    assert_eq!(again.checked, 0);
    let succeeded: i64 = hephaestus_store::with_read!(&s.store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'payment.succeeded'"
    )
    .fetch_one(e)
    .await)
    .unwrap();
    assert_eq!(succeeded, 1);
}

/// The sandbox keeps its own idempotency, as a remote processor does: concurrent charges
/// under one key make one charge (on PostgreSQL they may share one `INSERT`), a different
/// request under a used key is refused, and distinct keys charge separately.
async fn the_sandbox_ledger_charges_once_per_key(db: Db) {
    use hephaestus_billing::gateway::{ChargeRequest, Gateway, GatewayError};
    use hephaestus_billing::sandbox::SandboxGateway;
    use hephaestus_core::money::{Currency, Money};

    let s = TestServer::start(db).await;
    let gateway = SandboxGateway::new(s.store.clone());
    let usd = Currency::parse("USD", "currency").unwrap();
    let request = |key: &str, minor: i64| ChargeRequest {
        customer_id: "cus_ledger".into(),
        amount: Money {
            minor,
            currency: usd,
        },
        payment_method: "pm_card_visa".into(),
        description: None,
        idempotency_key: key.into(),
        off_session: false,
    };
    let charges =
        futures::future::join_all((0..10).map(|_| gateway.charge(request("k-once", 4200)))).await;
    let ids: Vec<String> = charges.into_iter().map(|c| c.unwrap().id).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(s.count("sandbox_charges").await, 1);

    match gateway.charge(request("k-once", 4300)).await {
        Err(GatewayError::InvalidRequest { message, .. }) => {
            assert!(message.contains("different charge"), "{message}")
        }
        other => panic!("a used key took another amount: {other:?}"),
    }
    assert_eq!(s.count("sandbox_charges").await, 1);

    let keys: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    let charges =
        futures::future::join_all(keys.iter().map(|k| gateway.charge(request(k, 100)))).await;
    let mut ids: Vec<String> = charges.into_iter().map(|c| c.unwrap().id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(s.count("sandbox_charges").await, 21);
}
