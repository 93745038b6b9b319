//! Totals per currency and in the reporting currency, with the exchange rate each
//! converted figure used.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(totals_per_currency_and_converted);

const RATES: &str = "/api/v1/revenue/exchange-rates";
const TOTALS: &str = "/api/v1/revenue/payments/totals";

async fn totals_per_currency_and_converted(db: Db) {
    let s = TestServer::start(db).await;
    let c = s.create_customer("multi@example.com").await;
    let c = c["id"].as_str().unwrap();
    let pay = |amount: serde_json::Value, currency: &'static str, pm: &'static str| {
        let body =
            json!({"customer_id": c, "amount": amount, "currency": currency, "payment_method": pm});
        let s = &s;
        async move {
            s.post(&s.admin, "/api/v1/revenue/payments", &body, None)
                .await
        }
    };
    pay(json!(100.00), "usd", "pm_card_visa").await;
    let eur = pay(json!(10.01), "eur", "pm_card_visa").await;
    pay(json!(50), "eur", "pm_card_chargeDeclined").await; // declined: not captured
    pay(json!(3000), "jpy", "pm_card_visa").await;
    let refund = format!(
        "/api/v1/revenue/payments/{}/refunds",
        eur.body["id"].as_str().unwrap()
    );
    assert_eq!(
        s.post(&s.admin, &refund, &json!({"amount": 0.01}), None)
            .await
            .status,
        StatusCode::CREATED
    );

    let set = s
        .post(
            &s.admin,
            RATES,
            &json!({"base": "eur", "quote": "USD", "rate": "1.5"}),
            None,
        )
        .await;
    assert_eq!(set.status, StatusCode::CREATED, "{}", set.body);
    let eur_rate = set.body["id"].as_str().unwrap().to_string();

    let t = s.get(&s.admin, TOTALS).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(t.body["reporting_currency"], "USD");
    let by = t.body["by_currency"].as_array().unwrap();
    let row = |code: &str| by.iter().find(|r| r["currency"] == code).unwrap().clone();
    assert_eq!(row("EUR")["payments"], 1);
    assert_eq!(row("EUR")["gross_minor"], 1001);
    assert_eq!(row("EUR")["refunded_minor"], 1);
    assert_eq!(row("EUR")["net_minor"], 1000);
    assert_eq!(row("EUR")["converted"]["amount_minor"], 1500);
    assert_eq!(row("EUR")["converted"]["rate_id"], eur_rate.as_str());
    assert_eq!(row("EUR")["converted"]["rate"], "1.5");
    assert_eq!(row("JPY")["net_minor"], 3000);
    assert!(row("JPY")["converted"].is_null());
    assert_eq!(t.body["missing_rates"], json!(["JPY"]));
    assert_eq!(
        t.body["total_minor"],
        10000 + 1500,
        "JPY is left out, not guessed"
    );

    // Only the reverse pair is known: its inverse is used, and named.
    let yen = s
        .post(
            &s.admin,
            RATES,
            &json!({"base": "USD", "quote": "JPY", "rate": 150}),
            None,
        )
        .await;
    assert_eq!(yen.status, StatusCode::CREATED);
    let t = s.get(&s.admin, TOTALS).await;
    assert_eq!(t.body["missing_rates"], json!([]));
    assert_eq!(t.body["total_minor"], 10000 + 1500 + 2000);
    let jpy = t.body["by_currency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["currency"] == "JPY")
        .unwrap()
        .clone();
    assert_eq!(jpy["converted"]["rate_id"], yen.body["id"]);

    // A new rate is a new record; figures name the newest; the list shows one per pair.
    let newer = s
        .post(
            &s.admin,
            RATES,
            &json!({"base": "EUR", "quote": "USD", "rate": "1.25"}),
            None,
        )
        .await;
    let t = s.get(&s.admin, TOTALS).await;
    let eur_row = t.body["by_currency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["currency"] == "EUR")
        .unwrap()
        .clone();
    assert_eq!(eur_row["converted"]["rate_id"], newer.body["id"]);
    assert_eq!(eur_row["converted"]["amount_minor"], 1250);
    assert_eq!(
        s.get(&s.admin, RATES).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.count("exchange_rates").await, 3);

    let in_eur = s.get(&s.admin, &format!("{TOTALS}?currency=eur")).await;
    assert_eq!(in_eur.body["reporting_currency"], "EUR");
    assert_eq!(
        in_eur.body["missing_rates"],
        json!(["JPY"]),
        "no EUR/JPY rate"
    );

    for (body, field) in [
        (json!({"base": "EUR", "quote": "USD", "rate": 0}), "rate"),
        (json!({"base": "EUR", "quote": "EUR", "rate": 1}), "quote"),
        (json!({"base": "EUR", "quote": "XYZ", "rate": 1}), "quote"),
        (
            json!({"base": "EUR", "quote": "USD", "rate": "1e2"}),
            "rate",
        ),
    ] {
        let r = s.post(&s.admin, RATES, &body, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.field(), Some(field), "{body}");
    }
    assert_eq!(
        s.get(&s.admin, &format!("{TOTALS}?currency=zzz"))
            .await
            .field(),
        Some("currency")
    );
}
