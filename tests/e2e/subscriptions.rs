//! Subscriptions on the sandbox, driven through the business clock: trials, renewals,
//! failed renewals and dunning, prorated changes and cancellation, end to end over HTTP.

use hephaestus_api::ApiConfig;
use hephaestus_billing::subscriptions::{Dunning, FinalAction};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer, recurring_price, test_config};

both_dbs!(
    trial_renewal_failed_renewal_past_due_canceled,
    prorated_upgrade_shows_on_next_invoice_then_cancel_at_period_end,
    final_failure_can_leave_the_subscription_unpaid,
    bad_requests_change_nothing,
    declined_first_charge_starts_nothing_and_retries_charge_once
);

const SUBS: &str = "/api/v1/revenue/subscriptions";
const DAY: i64 = 86_400;

async fn customer(s: &TestServer) -> String {
    let c = s
        .create_customer(&format!(
            "sub-{}@example.com",
            uuid::Uuid::now_v7().simple()
        ))
        .await;
    c["id"].as_str().unwrap().to_string()
}

/// Moves the business clock; everything due is billed when it answers.
async fn advance(s: &TestServer, seconds: i64) {
    let r = s
        .post(
            &s.admin,
            "/api/v1/sandbox/clock/advance",
            &json!({"seconds": seconds}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn sub(s: &TestServer, id: &str) -> Value {
    let r = s.get(&s.admin, &format!("{SUBS}/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn invoices(s: &TestServer, sub_id: &str) -> Vec<Value> {
    let r = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/invoices?subscription_id={sub_id}&limit=100"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut list = r.body["data"].as_array().unwrap().clone();
    list.reverse();
    list
}

/// Kinds of the domain events about `subject`, oldest first.
async fn event_kinds(s: &TestServer, customer: &str) -> Vec<String> {
    s.customer_events(customer)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

async fn trial_renewal_failed_renewal_past_due_canceled(db: Db) {
    let s = TestServer::start(db).await;
    let price = recurring_price(&s, json!(29.00), "month", Some(14)).await;
    let c = customer(&s).await;

    let created = s
        .post(
            &s.admin,
            SUBS,
            &json!({"customer_id": c, "price_id": price, "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["status"], "trialing");
    assert_eq!(created.body["latest_invoice"]["amount_due_minor"], 0);
    assert_eq!(created.body["latest_invoice"]["status"], "paid");
    assert_eq!(
        created.body["latest_invoice"]["billing_reason"],
        "subscription_create"
    );
    assert_eq!(s.count("payments").await, 0, "a trial charges nothing");

    // Three days before the trial ends, the customer is told.
    advance(&s, 11 * DAY + 60).await;
    let kinds = event_kinds(&s, &c).await;
    assert_eq!(count(&kinds, "subscription.trial_will_end"), 1, "{kinds:?}");
    assert_eq!(sub(&s, &id).await["status"], "trialing");

    // The trial ends: the first period is invoiced and paid.
    advance(&s, 3 * DAY).await;
    let after_trial = sub(&s, &id).await;
    assert_eq!(after_trial["status"], "active");
    let inv = &after_trial["latest_invoice"];
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["billing_reason"], "subscription_trial_end");
    assert_eq!(inv["amount_due_minor"], 2900);
    assert_eq!(inv["amount_paid"], json!(29.00));
    assert_eq!(inv["lines"].as_array().unwrap().len(), 1);
    let payment = s
        .get(
            &s.admin,
            &format!(
                "/api/v1/revenue/payments/{}",
                inv["payment_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(payment.body["status"], "succeeded");
    assert_eq!(payment.body["amount_minor"], 2900);

    // A month later it renews.
    advance(&s, 31 * DAY).await;
    let renewed = sub(&s, &id).await;
    assert_eq!(renewed["status"], "active");
    assert_eq!(
        renewed["latest_invoice"]["billing_reason"],
        "subscription_cycle"
    );
    assert_ne!(
        renewed["current_period_start"], after_trial["current_period_start"],
        "a new period started"
    );
    assert_eq!(invoices(&s, &id).await.len(), 3);

    // The card stops working: the next renewal fails and the subscription is past due.
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"payment_method": "pm_card_chargeDeclinedInsufficientFunds"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    advance(&s, 31 * DAY).await;
    let past_due = sub(&s, &id).await;
    assert_eq!(past_due["status"], "past_due");
    let open = &past_due["latest_invoice"];
    assert_eq!(open["status"], "open");
    assert_eq!(open["attempt_count"], 1);
    assert!(open["next_payment_attempt"].is_string());
    let failed = s
        .get(
            &s.admin,
            &format!(
                "/api/v1/revenue/payments/{}",
                open["payment_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["decline_code"], "insufficient_funds");

    // First retry three days later fails too; still past due.
    advance(&s, 3 * DAY).await;
    let retried = sub(&s, &id).await;
    assert_eq!(retried["status"], "past_due");
    assert_eq!(retried["latest_invoice"]["attempt_count"], 2);

    // The remaining retries (5 and 7 days apart) fail in one jump: the subscription ends.
    advance(&s, 12 * DAY + 60).await;
    let ended = sub(&s, &id).await;
    assert_eq!(ended["status"], "canceled");
    assert!(ended["ended_at"].is_string());
    let last = invoices(&s, &id).await;
    assert_eq!(last.len(), 4);
    assert_eq!(last[3]["status"], "uncollectible");
    assert_eq!(last[3]["attempt_count"], 4);

    // Nothing more happens once it has ended.
    advance(&s, 62 * DAY).await;
    assert_eq!(invoices(&s, &id).await.len(), 4);

    let kinds = event_kinds(&s, &c).await;
    assert_eq!(count(&kinds, "subscription.created"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "subscription.trial_will_end"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "subscription.canceled"), 1, "{kinds:?}");
    // trialing → active, active → past_due
    assert_eq!(count(&kinds, "subscription.updated"), 3, "{kinds:?}");
    assert_eq!(count(&kinds, "invoice.paid"), 3, "{kinds:?}");
    assert_eq!(count(&kinds, "invoice.payment_failed"), 4, "{kinds:?}");
    assert_eq!(
        count(&kinds, "invoice.marked_uncollectible"),
        1,
        "{kinds:?}"
    );
    assert_eq!(count(&kinds, "payment.succeeded"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "payment.failed"), 4, "{kinds:?}");
    let list = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/invoices?customer_id={c}"),
        )
        .await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 4);
}

/// `amount × part / whole`, rounded half away from zero (amounts here are positive).
fn pro_rata(amount: i64, part: i64, whole: i64) -> i64 {
    let num = i128::from(amount) * i128::from(part);
    let whole = i128::from(whole);
    i64::try_from((2 * num + whole) / (2 * whole)).unwrap()
}

fn micros(ts: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

async fn prorated_upgrade_shows_on_next_invoice_then_cancel_at_period_end(db: Db) {
    let s = TestServer::start(db).await;
    let price = recurring_price(&s, json!(10.00), "month", None).await;
    let c = customer(&s).await;
    let created = s
        .post(
            &s.admin,
            SUBS,
            &json!({"customer_id": c, "price_id": price, "payment_method": "pm_card_visa", "quantity": 1}),
            None,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["latest_invoice"]["amount_paid_minor"], 1000);
    let id = created.body["id"].as_str().unwrap().to_string();

    advance(&s, 10 * DAY).await;
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"quantity": 3}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quantity"], 3);
    let now = sub(&s, &id).await;
    let pending = now["pending_invoice_lines"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 2, "{now}");
    let (start, end) = (
        micros(&now["current_period_start"]),
        micros(&now["current_period_end"]),
    );
    let at = micros(&pending[0]["period_start"]);
    let (left, whole) = (end - at, end - start);
    assert_eq!(pending[0]["amount_minor"], -pro_rata(1000, left, whole));
    assert_eq!(pending[1]["amount_minor"], pro_rata(3000, left, whole));
    assert!(pending.iter().all(|l| l["proration"] == true));

    // The next invoice carries the prorations and the new quantity.
    advance(&s, 25 * DAY).await;
    let renewed = sub(&s, &id).await;
    let inv = &renewed["latest_invoice"];
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{inv}");
    let expected = 3000 - pro_rata(1000, left, whole) + pro_rata(3000, left, whole);
    assert_eq!(inv["amount_due_minor"], expected);
    assert_eq!(inv["amount_paid_minor"], expected);
    assert!(
        renewed["pending_invoice_lines"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Cancel at the period's end: it stays active until then, and is not billed again.
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}/cancel"),
            &json!({"at_period_end": true}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["cancel_at_period_end"], true);
    advance(&s, 32 * DAY).await;
    let ended = sub(&s, &id).await;
    assert_eq!(ended["status"], "canceled");
    assert_eq!(ended["ended_at"], renewed["current_period_end"]);
    assert_eq!(invoices(&s, &id).await.len(), 2);
}

async fn final_failure_can_leave_the_subscription_unpaid(db: Db) {
    let config = ApiConfig {
        dunning: Dunning {
            retry_days: vec![1],
            final_action: FinalAction::MarkUnpaid,
        },
        ..test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let price = recurring_price(&s, json!(5), "week", None).await;
    let c = customer(&s).await;
    let created = s
        .post(
            &s.admin,
            SUBS,
            &json!({"customer_id": c, "price_id": price, "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"payment_method": "pm_card_authenticationRequired"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Renewal off-session with a card that needs authentication fails, then its one retry.
    advance(&s, 7 * DAY + 2 * DAY).await;
    let unpaid = sub(&s, &id).await;
    assert_eq!(unpaid["status"], "unpaid");
    assert_eq!(unpaid["latest_invoice"]["attempt_count"], 2);
    assert_eq!(unpaid["latest_invoice"]["status"], "uncollectible");
    // An unpaid subscription is not billed again, and can still be cancelled.
    advance(&s, 30 * DAY).await;
    assert_eq!(invoices(&s, &id).await.len(), 2);
    let r = s
        .post(&s.admin, &format!("{SUBS}/{id}/cancel"), &json!({}), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "canceled");
}

async fn bad_requests_change_nothing(db: Db) {
    let s = TestServer::start(db).await;
    let monthly = recurring_price(&s, json!(10.00), "month", None).await;
    let yearly = recurring_price(&s, json!(100.00), "year", None).await;
    let c = customer(&s).await;
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": "Once"}),
            None,
        )
        .await;
    let one_time = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "usd", "unit_amount": 5}),
            None,
        )
        .await;
    let one_time = one_time.body["id"].as_str().unwrap().to_string();

    let cases = [
        (
            json!({"customer_id": c, "price_id": one_time, "payment_method": "pm_card_visa"}),
            "price_id",
        ),
        (
            json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_visa", "quantity": 0}),
            "quantity",
        ),
        (
            json!({"customer_id": c, "price_id": monthly}),
            "payment_method",
        ),
        (
            json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_visa", "trial_days": -1}),
            "trial_days",
        ),
        (
            json!({"customer_id": "cus_nope", "price_id": monthly, "payment_method": "pm_card_visa"}),
            "customer_id",
        ),
        (
            json!({"customer_id": c, "price_id": "price_0000000000000000000000", "payment_method": "pm_card_visa"}),
            "price_id",
        ),
        (
            json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_visa", "color": "red"}),
            "color",
        ),
    ];
    for (body, field) in cases {
        let r = s.post(&s.admin, SUBS, &body, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{body}: {}", r.body);
    }
    assert_eq!(s.count("subscriptions").await, 0);
    assert_eq!(s.count("invoices").await, 0);
    assert_eq!(s.count("payments").await, 0);

    let created = s
        .post(
            &s.admin,
            SUBS,
            &json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_string();
    // Another interval cannot be swapped in mid-subscription.
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"price_id": yearly}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("price_id"));
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"proration_behavior": "sometimes"}),
            None,
        )
        .await;
    assert_eq!(r.field(), Some("proration_behavior"));
    let r = s
        .post(&s.admin, &format!("{SUBS}/{id}/cancel"), &json!({}), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post(&s.admin, &format!("{SUBS}/{id}/cancel"), &json!({}), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "cancelling twice: {}",
        r.body
    );
    let r = s
        .post(
            &s.admin,
            &format!("{SUBS}/{id}"),
            &json!({"quantity": 2}),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "changing an ended one: {}",
        r.body
    );
    for body in [
        json!({"seconds": 0}),
        json!({"days": -1}),
        json!({"hours": 1}),
    ] {
        let r = s
            .post(&s.admin, "/api/v1/sandbox/clock/advance", &body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
    }
    let r = s
        .get(&s.admin, &format!("{SUBS}/sub_0000000000000000000000"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.get(&s.admin, &format!("{SUBS}?status=paused")).await;
    assert_eq!(r.field(), Some("status"));
}

async fn declined_first_charge_starts_nothing_and_retries_charge_once(db: Db) {
    let s = TestServer::start(db).await;
    let monthly = recurring_price(&s, json!(10.00), "month", None).await;
    let c = customer(&s).await;
    let r = s
        .post(
            &s.admin,
            SUBS,
            &json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_chargeDeclined"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "card_declined");
    assert_eq!(r.body["error"]["decline_code"], "generic_decline");
    assert!(r.body["error"]["payment_id"].is_string());
    assert_eq!(s.count("subscriptions").await, 0);
    assert_eq!(s.count("payments").await, 1, "the declined payment is kept");

    // The same Idempotency-Key sent concurrently starts one subscription with one charge.
    let body = json!({"customer_id": c, "price_id": monthly, "payment_method": "pm_card_visa"});
    let replies =
        futures::future::join_all((0..10).map(|_| s.post(&s.admin, SUBS, &body, Some("sub-once"))))
            .await;
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::CREATED || r.code() == "idempotency_key_in_use"),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert!(
        created
            .iter()
            .all(|r| r.body["id"] == created[0].body["id"])
    );
    assert_eq!(s.count("subscriptions").await, 1);
    assert_eq!(s.count("payments").await, 2);
}
