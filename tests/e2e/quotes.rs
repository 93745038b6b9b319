//! Quotes that bind: a stored quote turned into a payment charges exactly the quoted
//! amount, once, before it expires, whatever the plugins do meanwhile; and the documented
//! payment call (no `payment_method`) with and without a customer's default method.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer, plugin_dir, recurring_price, server_with};
use crate::stripe::{LocalStripe, VISA, stripe_config};

both_dbs!(
    a_quote_is_what_the_payment_charges,
    quotes_are_refused_when_expired_foreign_or_used,
    the_documented_payment_call_without_a_payment_method,
    a_quoted_subscription_is_charged_the_quote_every_period,
    quotes_and_the_documented_call_through_localstripe,
);

const PAYMENTS: &str = "/api/v1/revenue/payments";
const QUOTES: &str = "/api/v1/revenue/quotes";

/// A product with one one-time USD price of `amount`; the price's id.
async fn one_time_price(s: &TestServer, amount: Value) -> String {
    crate::plugins::catalog(s, amount).await.1
}

async fn quote(s: &TestServer, customer: &str, price: &str, quantity: u32) -> Value {
    let r = s
        .post(
            &s.admin,
            QUOTES,
            &json!({"customer_id": customer, "price_id": price, "quantity": quantity}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// Sends `body` to `path` `n` times at once; exactly one must be answered `won`. Returns
/// the others' answers.
async fn one_wins(
    s: &TestServer,
    path: &str,
    body: &Value,
    n: usize,
    won: StatusCode,
) -> Vec<Reply> {
    let replies =
        futures::future::join_all((0..n).map(|_| s.post(&s.admin, path, body, None))).await;
    let (winners, losers): (Vec<Reply>, Vec<Reply>) =
        replies.into_iter().partition(|r| r.status == won);
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        losers.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    losers
}

async fn customer(s: &TestServer, email: &str) -> String {
    s.create_customer(email).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn a_quote_is_what_the_payment_charges(db: Db) {
    let dir = plugin_dir(&["volume-pricing"]);
    let s = server_with(db, dir.path()).await;
    let price = one_time_price(&s, json!(10.00)).await;
    let c = customer(&s, "quoted@example.com").await;

    let q = quote(&s, &c, &price, 10).await;
    let id = q["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("quo_"), "{q}");
    assert_eq!(q["amount_minor"], 9000, "{q}");
    assert_eq!(q["discount_minor"], 1000, "{q}");
    assert_eq!(q["status"], "open");
    assert_eq!(q["decided_by"]["plugin"], "volume-pricing");
    let version = q["decided_by"]["version"].as_str().unwrap().to_string();
    assert_eq!(version.len(), 64, "{q}");

    // Read back: everything that decided it.
    let read = s.get(&s.admin, &format!("{QUOTES}/{id}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    for field in [
        "customer_id",
        "price_id",
        "quantity",
        "amount_minor",
        "list_amount_minor",
        "expires_at",
    ] {
        assert_eq!(read.body[field], q[field], "{field}: {}", read.body);
    }
    assert_eq!(read.body["decided_by"]["version"], version.as_str());

    // The plugin goes away before the charge: the quote still decides the amount.
    std::fs::remove_file(dir.path().join("volume-pricing.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = s.get(&s.admin, "/api/v1/plugins").await;
        if list.body["data"].as_array().is_some_and(|d| d.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plugin never unloaded: {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = quote(&s, &c, &price, 10).await;
    assert_eq!(
        fresh["amount_minor"], 10000,
        "the default decides now: {fresh}"
    );

    let paid = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": id, "payment_method": "pm_card_visa"}),
            Some("pay-the-quote"),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    assert_eq!(paid.body["amount_minor"], 9000, "{}", paid.body);
    assert_eq!(paid.body["amount"], json!(90.00));
    assert_eq!(paid.body["quote_id"], id.as_str());
    assert_eq!(paid.body["status"], "succeeded");
    let payment = paid.body["id"].as_str().unwrap().to_string();

    // A retry of the same request replays it; the quote is used by that payment.
    let again = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": id, "payment_method": "pm_card_visa"}),
            Some("pay-the-quote"),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body["id"], payment.as_str());
    let read = s.get(&s.admin, &format!("{QUOTES}/{id}")).await;
    assert_eq!(read.body["status"], "used", "{}", read.body);
    assert_eq!(read.body["used_by"], payment.as_str());

    // The payment's event says which quote and plugin version priced it.
    let events = s.customer_events(&c).await;
    let succeeded: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "payment.succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "{events:?}");
    let priced = &succeeded[0]["data"]["priced_by"];
    assert_eq!(priced["quote_id"], id.as_str(), "{priced}");
    assert_eq!(priced["plugin"], "volume-pricing");
    assert_eq!(priced["plugin_version"], version.as_str());

    // An amount given with the quote must be the quoted one.
    let other = quote(&s, &c, &price, 1).await;
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": other["id"], "amount": 5.00,
                    "currency": "usd", "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("amount"));
    // A declined card uses nothing up: the same quote pays with another card.
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": other["id"],
                    "payment_method": "pm_card_chargeDeclined"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": other["id"], "amount": 10.00,
                    "currency": "USD", "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount_minor"], 1000);
}

async fn quotes_are_refused_when_expired_foreign_or_used(db: Db) {
    let s = TestServer::start(db).await;
    let price = one_time_price(&s, json!(25.00)).await;
    let ann = customer(&s, "ann@example.com").await;
    let bob = customer(&s, "bob@example.com").await;
    let pay = |customer: &str, quote: &Value| json!({"customer_id": customer, "quote_id": quote["id"], "payment_method": "pm_card_visa"});
    let payments_before = s.count("payments").await;

    // Another customer's quote.
    let q = quote(&s, &ann, &price, 2).await;
    let r = s.post(&s.admin, PAYMENTS, &pay(&bob, &q), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("quote_id"));

    // Unknown and malformed ids.
    for id in ["quo_0000000000000000000000", "price_x", ""] {
        let r = s
            .post(&s.admin, PAYMENTS, &pay(&ann, &json!({"id": id})), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}: {}", r.body);
        assert_eq!(r.field(), Some("quote_id"), "{id}: {}", r.body);
    }
    assert_eq!(s.count("payments").await, payments_before);

    // Used once, refused after.
    let r = s.post(&s.admin, PAYMENTS, &pay(&ann, &q), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount_minor"], 5000);
    let r = s.post(&s.admin, PAYMENTS, &pay(&ann, &q), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "quote_used");
    assert!(
        r.body["error"]["used_by"]
            .as_str()
            .unwrap()
            .starts_with("pay_")
    );

    // Expired: the business clock moves past the default 30 minutes.
    let q = quote(&s, &ann, &price, 1).await;
    let r = s
        .post(
            &s.admin,
            "/api/v1/sandbox/clock/advance",
            &json!({"seconds": 1801}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.post(&s.admin, PAYMENTS, &pay(&ann, &q), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "quote_expired");
    let read = s
        .get(&s.admin, &format!("{QUOTES}/{}", q["id"].as_str().unwrap()))
        .await;
    assert_eq!(read.body["status"], "expired", "{}", read.body);
    assert_eq!(s.count("payments").await, payments_before + 1);

    // Ten requests race for one quote: one payment.
    let q = quote(&s, &ann, &price, 1).await;
    let losers = one_wins(&s, PAYMENTS, &pay(&ann, &q), 10, StatusCode::CREATED).await;
    for r in &losers {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(
            matches!(r.code(), "quote_used" | "quote_in_use"),
            "{}",
            r.body
        );
    }
    assert_eq!(s.count("payments").await, payments_before + 2);
    assert_eq!(s.count("sandbox_charges").await, payments_before + 2);
}

async fn the_documented_payment_call_without_a_payment_method(db: Db) {
    let s = TestServer::start(db).await;
    let c = customer(&s, "docs@example.com").await;
    // As the product documentation writes it.
    let documented = json!({"customer_id": c, "amount": 97.00, "currency": "USD",
                            "description": "Professional Plan"});
    let r = s.post(&s.admin, PAYMENTS, &documented, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "requires_payment_method", "{}", r.body);
    assert_eq!(r.body["payment_method"], Value::Null);
    assert_eq!(r.body["amount_minor"], 9700);
    assert!(r.body["payment_id"].as_str().unwrap().starts_with("pay_"));
    let waiting = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.count("sandbox_charges").await, 0, "nothing charged yet");
    let confirm = format!("{PAYMENTS}/{waiting}/confirm");

    // Confirming with no method and no default says what is missing.
    let r = s.post(&s.admin, &confirm, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("payment_method"));
    // A declined card leaves it waiting, as Stripe does.
    let r = s
        .post(
            &s.admin,
            &confirm,
            &json!({"payment_method": "pm_card_chargeDeclined"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.body["error"]["payment_id"], waiting.as_str());
    let read = s.get(&s.admin, &format!("{PAYMENTS}/{waiting}")).await;
    assert_eq!(
        read.body["status"], "requires_payment_method",
        "{}",
        read.body
    );
    // Then a good card charges it, and is saved as the customer's default when asked.
    let r = s
        .post(
            &s.admin,
            &confirm,
            &json!({"payment_method": "pm_card_visa", "save_payment_method": true}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["payment_method"], "pm_card_visa");
    let r = s.post(&s.admin, &confirm, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "payment_not_confirmable");
    let cust = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{c}"))
        .await;
    assert_eq!(cust.body["default_payment_method"], "pm_card_visa");

    // With a default method, the documented call charges it at once.
    let r = s.post(&s.admin, PAYMENTS, &documented, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["payment_method"], "pm_card_visa");

    // A default set at creation; removed with "".
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/customers",
            &json!({"email": "dflt@example.com", "default_payment_method": "pm_card_mastercard"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["default_payment_method"], "pm_card_mastercard");
    let d = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/customers/{d}"),
            &json!({"default_payment_method": ""}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["default_payment_method"], Value::Null);
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/customers",
            &json!({"email": "bad@example.com", "default_payment_method": "pm card"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("default_payment_method"));

    // Two concurrent confirmations of one waiting payment charge once.
    let r = s.post(&s.admin, PAYMENTS, &documented, None).await;
    let _ = r; // charged at once: the customer has a default now
    let fresh = customer(&s, "race@example.com").await;
    let waiting = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": fresh, "amount": 5.00, "currency": "usd"}),
            None,
        )
        .await;
    assert_eq!(waiting.body["status"], "requires_payment_method");
    let confirm = format!(
        "{PAYMENTS}/{}/confirm",
        waiting.body["id"].as_str().unwrap()
    );
    let charges_before = s.count("sandbox_charges").await;
    let visa = json!({"payment_method": "pm_card_visa"});
    let losers = one_wins(&s, &confirm, &visa, 8, StatusCode::OK).await;
    for r in &losers {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    }
    assert_eq!(s.count("sandbox_charges").await, charges_before + 1);
}

async fn a_quoted_subscription_is_charged_the_quote_every_period(db: Db) {
    let dir = plugin_dir(&["volume-pricing"]);
    let s = server_with(db, dir.path()).await;
    let price = recurring_price(&s, json!(10.00), "month", None).await;
    let c = customer(&s, "subscriber@example.com").await;
    let q = quote(&s, &c, &price, 10).await;
    assert_eq!(q["amount_minor"], 9000, "{q}");

    // Another customer cannot start it; a different quantity is refused.
    let other = customer(&s, "other@example.com").await;
    for (body, field) in [
        (
            json!({"customer_id": other, "quote_id": q["id"], "payment_method": "pm_card_visa"}),
            "quote_id",
        ),
        (
            json!({"customer_id": c, "quote_id": q["id"], "quantity": 3, "payment_method": "pm_card_visa"}),
            "quantity",
        ),
    ] {
        let r = s
            .post(&s.admin, "/api/v1/revenue/subscriptions", &body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{}", r.body);
    }
    // A one-time payment cannot use a recurring quote.
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": q["id"], "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.field(), Some("quote_id"));

    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/subscriptions",
            &json!({"customer_id": c, "quote_id": q["id"], "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["quote_id"], q["id"]);
    assert_eq!(r.body["quantity"], 10);
    assert_eq!(r.body["discount_minor"], 1000);
    assert_eq!(
        r.body["latest_invoice"]["amount_due_minor"], 9000,
        "{}",
        r.body
    );
    let sub = r.body["id"].as_str().unwrap().to_string();
    let first_payment = r.body["latest_invoice"]["payment_id"].as_str().unwrap();
    let paid = s
        .get(&s.admin, &format!("{PAYMENTS}/{first_payment}"))
        .await;
    assert_eq!(paid.body["amount_minor"], 9000, "{}", paid.body);
    assert_eq!(paid.body["quote_id"], q["id"]);
    let read = s
        .get(&s.admin, &format!("{QUOTES}/{}", q["id"].as_str().unwrap()))
        .await;
    assert_eq!(read.body["used_by"], sub.as_str(), "{}", read.body);

    // The renewal is charged the quoted amount too, and MRR counts it.
    let r = s
        .post(
            &s.admin,
            "/api/v1/sandbox/clock/advance",
            &json!({"days": 32}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    let invoices = loop {
        let list = s
            .get(
                &s.admin,
                &format!("/api/v1/revenue/invoices?subscription_id={sub}"),
            )
            .await;
        let data = list.body["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= 2 && data[0]["status"] == "paid" {
            break data;
        }
        assert!(Instant::now() < deadline, "no paid renewal: {}", list.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(invoices[0]["amount_due_minor"], 9000, "{:?}", invoices[0]);
    let events = s.customer_events(&c).await;
    let created = events
        .iter()
        .find(|e| e["type"] == "subscription.created")
        .unwrap();
    assert_eq!(created["data"]["mrr_minor"], 9000, "{created}");
    let payments: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "payment.succeeded")
        .collect();
    assert_eq!(payments.len(), 2, "{events:?}");
    assert_eq!(payments[0]["data"]["priced_by"]["quote_id"], q["id"]);

    // A quote is used once.
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/subscriptions",
            &json!({"customer_id": c, "quote_id": q["id"], "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "quote_used");
}

async fn quotes_and_the_documented_call_through_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    let dir = plugin_dir(&["volume-pricing"]);
    let config = hephaestus_api::ApiConfig {
        plugin_dir: Some(dir.path().to_path_buf()),
        ..stripe_config()
    };
    let args = ls.gateway_args();
    let s = TestServer::start_with_gateway(db, config, |store| {
        args.gateway(store).expect("the Stripe gateway")
    })
    .await;
    let price = one_time_price(&s, json!(10.00)).await;
    let c = customer(&s, "stripe-quote@example.com").await;
    let visa = ls.card(VISA).await;

    let q = quote(&s, &c, &price, 10).await;
    let r = s
        .post(
            &s.admin,
            PAYMENTS,
            &json!({"customer_id": c, "quote_id": q["id"], "payment_method": visa}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["gateway"], "stripe");
    assert_eq!(r.body["amount_minor"], 9000);
    let intent = ls
        .get(&format!(
            "/v1/payment_intents/{}",
            r.body["gateway_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(intent["amount"], 9000, "what Stripe charged: {intent}");

    // The documented call: no method yet, then confirmed with one.
    let documented = json!({"customer_id": c, "amount": 97.00, "currency": "USD",
                            "description": "Professional Plan"});
    let r = s.post(&s.admin, PAYMENTS, &documented, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "requires_payment_method");
    let confirm = format!("{PAYMENTS}/{}/confirm", r.body["id"].as_str().unwrap());
    let r = s
        .post(
            &s.admin,
            &confirm,
            &json!({"payment_method": visa, "save_payment_method": true}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded");
    let intent = ls
        .get(&format!(
            "/v1/payment_intents/{}",
            r.body["gateway_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(intent["amount"], 9700, "{intent}");
    // Saved as the default: the documented call now charges at once.
    let r = s.post(&s.admin, PAYMENTS, &documented, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["payment_method"], visa.as_str());
}
