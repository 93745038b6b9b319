//! Products and prices: creation, validation, immutability and replacement.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(products_and_prices, prices_are_immutable_and_replaced);

const PRODUCTS: &str = "/api/v1/revenue/products";
const PRICES: &str = "/api/v1/revenue/prices";

async fn product(s: &TestServer, name: &str) -> String {
    let r = s
        .post(
            &s.admin,
            PRODUCTS,
            &json!({"name": name, "description": "For teams"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn products_and_prices(db: Db) {
    let s = TestServer::start(db).await;
    let pro = product(&s, "Pro").await;
    assert!(pro.starts_with("prod_"));
    let got = s.get(&s.admin, &format!("{PRODUCTS}/{pro}")).await;
    assert_eq!(got.body["name"], "Pro");
    assert_eq!(got.body["active"], true);
    let hidden = s
        .post(
            &s.admin,
            PRODUCTS,
            &json!({"name": "Legacy", "active": false}),
            None,
        )
        .await;
    assert_eq!(hidden.status, StatusCode::CREATED);
    let active = s.get(&s.admin, &format!("{PRODUCTS}?active=true")).await;
    assert_eq!(active.body["data"].as_array().unwrap().len(), 1);

    let monthly = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "usd", "unit_amount": 29.00,
            "recurring": {"interval": "month"}, "trial_days": 14}),
            None,
        )
        .await;
    assert_eq!(monthly.status, StatusCode::CREATED, "{}", monthly.body);
    assert_eq!(monthly.body["type"], "recurring");
    assert_eq!(monthly.body["unit_amount_minor"], 2900);
    assert_eq!(
        monthly.body["recurring"],
        json!({"interval": "month", "interval_count": 1})
    );
    assert_eq!(monthly.body["trial_days"], 14);

    let yen = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "JPY", "unit_amount": "3000"}),
            None,
        )
        .await;
    assert_eq!(yen.status, StatusCode::CREATED);
    assert_eq!(yen.body["type"], "one_time");
    assert_eq!(yen.body["unit_amount_minor"], 3000);
    assert!(yen.body["recurring"].is_null());
    let free = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "eur", "unit_amount": 0,
        "recurring": {"interval": "year"}}),
            None,
        )
        .await;
    assert_eq!(free.status, StatusCode::CREATED, "{}", free.body);

    let bad = [
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 29.001}),
            "unit_amount",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": -1}),
            "unit_amount",
        ),
        (
            json!({"product_id": pro, "currency": "usx", "unit_amount": 1}),
            "currency",
        ),
        (
            json!({"product_id": "prod_0000000000000000000000", "currency": "usd", "unit_amount": 1}),
            "product_id",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "fortnight"}}),
            "recurring.interval",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "interval_count": 13}}),
            "recurring.interval_count",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "day", "interval_count": 0}}),
            "recurring.interval_count",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "trial_days": 7}),
            "trial_days",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "week"}, "trial_days": 731}),
            "trial_days",
        ),
        (
            json!({"product_id": pro, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "week", "every": 2}}),
            "recurring.every",
        ),
    ];
    let before = s.count("prices").await;
    for (body, field) in bad {
        let r = s.post(&s.admin, PRICES, &body, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{body}: {}", r.body);
    }
    assert_eq!(s.count("prices").await, before);
    assert_eq!(
        s.post(&s.admin, PRODUCTS, &json!({"name": " "}), None)
            .await
            .field(),
        Some("name")
    );

    let recurring = s
        .get(
            &s.admin,
            &format!("{PRICES}?product_id={pro}&type=recurring"),
        )
        .await;
    assert_eq!(recurring.body["data"].as_array().unwrap().len(), 2);
    let one = s
        .get(
            &s.admin,
            &format!("{PRICES}/{}", yen.body["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(one.body["currency"], "JPY");
    assert_eq!(
        s.get(&s.admin, &format!("{PRICES}?type=weekly"))
            .await
            .field(),
        Some("type")
    );
}

async fn prices_are_immutable_and_replaced(db: Db) {
    let s = TestServer::start(db).await;
    let pro = product(&s, "Pro").await;
    let other = product(&s, "Other").await;
    let old = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "usd", "unit_amount": 29,
        "recurring": {"interval": "month"}}),
            None,
        )
        .await;
    let old_id = old.body["id"].as_str().unwrap().to_string();

    // The amount cannot be edited: only `active` can change.
    let edit = s
        .post(
            &s.admin,
            &format!("{PRICES}/{old_id}"),
            &json!({"unit_amount": 19}),
            None,
        )
        .await;
    assert_eq!(edit.status, StatusCode::BAD_REQUEST);
    assert_eq!(edit.field(), Some("unit_amount"));

    let new = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "usd", "unit_amount": 39,
        "recurring": {"interval": "month"}, "replaces": old_id}),
            Some("raise-price"),
        )
        .await;
    assert_eq!(new.status, StatusCode::CREATED, "{}", new.body);
    let new_id = new.body["id"].as_str().unwrap();
    assert_eq!(new.body["replaces"], old_id.as_str());
    let retired = s.get(&s.admin, &format!("{PRICES}/{old_id}")).await;
    assert_eq!(retired.body["active"], false);
    assert_eq!(retired.body["replaced_by"], new_id);
    assert_eq!(
        retired.body["unit_amount_minor"], 2900,
        "the old price is unchanged"
    );

    let twice = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": pro, "currency": "usd", "unit_amount": 49,
        "recurring": {"interval": "month"}, "replaces": old_id}),
            None,
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.code(), "price_already_replaced");
    let cross = s
        .post(
            &s.admin,
            PRICES,
            &json!({"product_id": other, "currency": "usd", "unit_amount": 49,
        "replaces": new_id}),
            None,
        )
        .await;
    assert_eq!(cross.field(), Some("replaces"));

    let off = s
        .post(
            &s.admin,
            &format!("{PRICES}/{new_id}"),
            &json!({"active": false}),
            None,
        )
        .await;
    assert_eq!(off.status, StatusCode::OK);
    assert_eq!(off.body["active"], false);
    let missing = s
        .post(
            &s.admin,
            &format!("{PRICES}/price_0000000000000000000000"),
            &json!({"active": true}),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let kinds: Vec<String> = hephaestus_store::with_read!(&s.store, |e| sqlx::query_scalar(
        "SELECT type FROM events ORDER BY seq"
    )
    .fetch_all(e)
    .await)
    .unwrap();
    assert_eq!(
        kinds,
        [
            "product.created",
            "product.created",
            "price.created",
            "price.created",
            "price.deactivated"
        ]
    );
}
