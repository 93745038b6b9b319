//! Decisions made by real WebAssembly plugins (built from `plugins/` by `plugins/build.sh`),
//! through the HTTP API: quotes, price recommendations, the plugin list, hot reload while
//! quotes keep flowing, and a hostile plugin held to the operator's ceilings.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use hephaestus_api::ApiConfig;
use hephaestus_plugins::{Ceilings, HostLimits, PerWorld};

use crate::both_dbs;
use crate::common::{Db, TestServer, built_plugins, plugin_dir, server_with, test_config};

both_dbs!(
    quotes_come_from_the_pricing_plugin,
    without_a_plugin_the_list_price_decides,
    pricing_recommendation_reports_evidence,
    hot_reload_under_load_never_fails_a_request,
    a_looping_plugin_costs_only_its_own_quotes
);

/// A new product with one one-time USD price of `amount`: (product id, price id).
pub(crate) async fn catalog(s: &TestServer, amount: Value) -> (String, String) {
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": format!("Seats {}", uuid::Uuid::now_v7().simple())}),
            None,
        )
        .await;
    assert_eq!(product.status, StatusCode::CREATED, "{}", product.body);
    let price = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "usd", "unit_amount": amount}),
            None,
        )
        .await;
    assert_eq!(price.status, StatusCode::CREATED, "{}", price.body);
    (
        product.body["id"].as_str().unwrap().to_string(),
        price.body["id"].as_str().unwrap().to_string(),
    )
}

async fn quote(s: &TestServer, customer: &str, price: &str, quantity: u32) -> crate::common::Reply {
    s.post(
        &s.admin,
        "/api/v1/revenue/quotes",
        &json!({"customer_id": customer, "price_id": price, "quantity": quantity}),
        None,
    )
    .await
}

async fn quotes_come_from_the_pricing_plugin(db: Db) {
    let dir = plugin_dir(&["volume-pricing"]);
    let s = server_with(db, dir.path()).await;
    let (product, price) = catalog(&s, json!(10.00)).await;
    let c = s.create_customer("volume@example.com").await;
    let c = c["id"].as_str().unwrap();

    for (qty, amount, discount) in [(1, 1000, 0), (10, 9000, 1000), (50, 40000, 10000)] {
        let r = quote(&s, c, &price, qty).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["list_amount_minor"], 1000 * i64::from(qty));
        assert_eq!(r.body["amount_minor"], amount, "{}", r.body);
        assert_eq!(r.body["discount_minor"], discount, "{}", r.body);
        assert_eq!(r.body["decided_by"]["kind"], "plugin", "{}", r.body);
        assert_eq!(r.body["decided_by"]["plugin"], "volume-pricing");
        assert_eq!(r.body["decided_by"]["version"].as_str().unwrap().len(), 64);
        assert!(r.body["decided_by"]["fuel_used"].as_u64().unwrap() > 0);
        assert!(!r.body["reason"].as_str().unwrap().is_empty());
    }
    // By product, when it has one active price.
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/quotes",
            &json!({"customer_id": c, "product_id": product, "quantity": 10}),
            None,
        )
        .await;
    assert_eq!(r.body["amount_minor"], 9000, "{}", r.body);

    let list = s.get(&s.admin, "/api/v1/plugins").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let plugins = list.body["data"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{}", list.body);
    assert_eq!(plugins[0]["name"], "volume-pricing");
    assert_eq!(plugins[0]["world"], "pricing");
    assert!(plugins[0]["calls"].as_u64().unwrap() >= 4, "{}", list.body);
    assert_eq!(plugins[0]["faults"], 0);

    for (body, field) in [
        (
            json!({"customer_id": c, "price_id": price, "quantity": 0}),
            "quantity",
        ),
        (
            json!({"customer_id": "cus_x", "price_id": price}),
            "customer_id",
        ),
        (json!({"customer_id": c}), "price_id"),
        (
            json!({"customer_id": c, "price_id": "price_0000000000000000000000"}),
            "price_id",
        ),
    ] {
        let r = s
            .post(&s.admin, "/api/v1/revenue/quotes", &body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{body}: {}", r.body);
    }
}

async fn without_a_plugin_the_list_price_decides(db: Db) {
    let s = TestServer::start(db).await;
    let (_, price) = catalog(&s, json!(10.00)).await;
    let c = s.create_customer("list@example.com").await;
    let r = quote(&s, c["id"].as_str().unwrap(), &price, 10).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount_minor"], 10000);
    assert_eq!(r.body["amount"], json!(100.00));
    assert_eq!(r.body["decided_by"]["kind"], "default");
    assert_eq!(r.body["decided_by"]["reason"], "no_plugin");

    // Quotes reuse a price they read for a while; a change made through this host applies
    // to the very next quote all the same.
    let (product, price) = catalog(&s, json!(10.00)).await;
    let customer = c["id"].as_str().unwrap();
    assert_eq!(
        quote(&s, customer, &price, 1).await.status,
        StatusCode::CREATED
    );
    let replaced = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product, "currency": "usd", "unit_amount": 12.00, "replaces": price}),
            None,
        )
        .await;
    assert_eq!(replaced.status, StatusCode::CREATED, "{}", replaced.body);
    let r = quote(&s, customer, &price, 1).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let new_price = replaced.body["id"].as_str().unwrap();
    assert_eq!(
        quote(&s, customer, new_price, 1).await.body["amount_minor"],
        1200
    );
    let off = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/prices/{new_price}"),
            &json!({"active": false}),
            None,
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let r = quote(&s, customer, new_price, 1).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

async fn pricing_recommendation_reports_evidence(db: Db) {
    let dir = plugin_dir(&["volume-pricing"]);
    let s = server_with(db, dir.path()).await;
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": "Analytics Pro"}),
            None,
        )
        .await;
    let price = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "usd", "unit_amount": 97, "recurring": {"interval": "month"}}),
            None,
        )
        .await;
    // The documented call on a product with no sales yet, and on no product at all: the
    // current price is kept and no change is expected, and the basis says why.
    for name in ["Professional Plan", "Analytics Pro"] {
        let r = s
            .post(
                &s.admin,
                "/api/v1/revenue/optimize/pricing",
                &json!({"product_name": name, "current_price": 297.00}),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.body);
        assert_eq!(r.body["recommended_price"], json!(297.00), "{}", r.body);
        assert_eq!(r.body["recommended_price_minor"], 29700);
        assert_eq!(
            r.body["expected_impact"]["revenue_change_percent"],
            json!(0.00)
        );
        assert_eq!(r.body["basis"]["kind"], "no_evidence", "{}", r.body);
        assert_eq!(r.body["basis"]["purchases"], 0);
        assert!(
            r.body["basis"]["description"]
                .as_str()
                .unwrap()
                .contains("no "),
            "{}",
            r.body
        );
        assert_eq!(r.body["decided_by"]["reason"], "no_evidence");
        if name == "Professional Plan" {
            assert_eq!(r.body["product_id"], Value::Null);
        }
    }

    let c = s.create_customer("evidence@example.com").await;
    let sub = s
        .post(
            &s.admin,
            "/api/v1/revenue/subscriptions",
            &json!({"customer_id": c["id"], "price_id": price.body["id"], "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);

    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/optimize/pricing",
            &json!({"product_name": "analytics pro", "current_price": 97.00}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["decided_by"]["plugin"], "volume-pricing",
        "{}",
        r.body
    );
    assert!(r.body["recommended_price"].is_number(), "{}", r.body);
    assert!(r.body["expected_impact"]["revenue_change_percent"].is_number());
    assert_eq!(r.body["basis"]["kind"], "sales_history", "{}", r.body);
    assert_eq!(r.body["basis"]["purchases"], 1);
    assert_eq!(r.body["basis"]["customers"], 1);
    assert!(r.body["basis"]["period_start"].is_string(), "{}", r.body);
    let points = r.body["evidence"]["price_points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{}", r.body);
    assert_eq!(points[0]["purchases"], 1);
    assert_eq!(points[0]["customers"], 1);
    assert_eq!(points[0]["revenue_minor"], 9700);

    // A segment limits the evidence to its customers: none of them bought.
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/optimize/pricing",
            &json!({"product_name": "analytics pro", "current_price": 97.00, "customer_segment": "enterprise"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["basis"]["kind"], "no_evidence", "{}", r.body);
    assert_eq!(r.body["basis"]["customer_segment"], "enterprise");
    assert_eq!(r.body["recommended_price_minor"], 9700);

    for (body, field) in [
        (
            json!({"product_name": "Analytics Pro", "current_price": 97.001}),
            "current_price",
        ),
        (
            json!({"product_name": "Analytics Pro", "current_price": 97, "customer_segment": "Big Spenders"}),
            "customer_segment",
        ),
        (
            json!({"product_name": "Analytics Pro", "current_price": 0}),
            "current_price",
        ),
    ] {
        let r = s
            .post(&s.admin, "/api/v1/revenue/optimize/pricing", &body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{}", r.body);
    }
}

/// Writes `bytes` the way a slow copy does: in pieces, with pauses, so the watcher sees a
/// half-written file before the whole one.
fn write_slowly(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in bytes.chunks(bytes.len().div_ceil(4).max(1)) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// The test is about swaps, not deadlines: a generous one keeps a loaded CI machine from
/// turning a slow call into a fallback.
fn manifest(discount_bp: u32) -> String {
    format!(
        "name = \"volume-pricing\"\nworld = \"pricing\"\n[limits]\ntimeout_ms = 2000\n[config]\ntier_1_quantity = \"10\"\ntier_1_discount_bp = \"{discount_bp}\"\n"
    )
}

async fn hot_reload_under_load_never_fails_a_request(db: Db) {
    let dir = plugin_dir(&[]);
    let good = std::fs::read(built_plugins().join("volume-pricing.wasm")).unwrap();
    let wrong_world = std::fs::read(built_plugins().join("lifecycle-segments.wasm")).unwrap();
    let wasm = dir.path().join("volume-pricing.wasm");
    let toml = dir.path().join("volume-pricing.toml");
    std::fs::write(&toml, manifest(100)).unwrap();
    std::fs::write(&wasm, &good).unwrap();
    let s = Arc::new(server_with(db, dir.path()).await);
    let (_, price) = catalog(&s, json!(10.00)).await;
    let c = s.create_customer("reload@example.com").await;
    let c = c["id"].as_str().unwrap().to_string();

    // Quotes for 10 units: the amount tells which version decided (10000 less the
    // version's discount).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (s, c, price, stop, sent) = (
            s.clone(),
            c.clone(),
            price.clone(),
            stop.clone(),
            sent.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut amounts = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = quote(&s, &c, &price, 10).await;
                assert_eq!(
                    r.status,
                    StatusCode::CREATED,
                    "a quote failed during reload: {}",
                    r.body
                );
                assert_eq!(
                    r.body["decided_by"]["kind"], "plugin",
                    "a quote fell back to the default during reload: {}",
                    r.body
                );
                amounts.push(r.body["amount_minor"].as_i64().unwrap());
                sent.fetch_add(1, Ordering::Relaxed);
            }
            amounts
        }));
    }

    let current = |s: Arc<TestServer>, c: String, price: String| async move {
        quote(&s, &c, &price, 10).await.body["amount_minor"]
            .as_i64()
            .unwrap()
    };
    let wait_for = |expected: i64| {
        let (s, c, price) = (s.clone(), c.clone(), price.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = current(s.clone(), c.clone(), price.clone()).await;
                if got == expected {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "version with amount {expected} never took effect (still {got})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let failed_loads = |s: Arc<TestServer>| async move {
        let list = s.get(&s.admin, "/api/v1/plugins").await;
        list.body["data"][0]["last_error"]
            .as_str()
            .map(str::to_string)
    };

    wait_for(10000 - 100).await;
    let broken: [(&str, &Path, Vec<u8>); 5] = [
        ("garbage", &wasm, b"this is not WebAssembly".to_vec()),
        ("truncated", &wasm, good[..good.len() / 2].to_vec()),
        ("core module", &wasm, b"\0asm\x01\0\0\0".to_vec()),
        ("wrong world", &wasm, wrong_world.clone()),
        ("bad manifest", &toml, b"world = \"pricing".to_vec()),
    ];
    let mut served = vec![10000 - 100];
    let mut broken_iter = broken.iter();
    for round in 1..=20_u32 {
        if round % 4 == 0 {
            let (what, path, bytes) = broken_iter.next().unwrap();
            let before = failed_loads(s.clone()).await;
            write_slowly(path, bytes);
            // The bad file is rejected, visibly, and the last good version keeps serving.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let now = failed_loads(s.clone()).await;
                if now.is_some() && now != before {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: the failed load was never reported"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                current(s.clone(), c.clone(), price.clone()).await,
                *served.last().unwrap(),
                "{what} replaced the serving version"
            );
        } else {
            let discount = 100 * (round + 1);
            std::fs::write(&toml, manifest(discount)).unwrap();
            write_slowly(&wasm, &good);
            let expected = 10000 - i64::from(discount);
            wait_for(expected).await;
            served.push(expected);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the clients kept sending"
    );
    for amount in &seen {
        assert!(
            served.contains(amount),
            "amount {amount} came from no good version ({served:?})"
        );
    }
    assert_eq!(served.len(), 16);
}

/// A pricing plugin whose manifest asks for a minute and 10^18 fuel per call and then loops
/// serves product A; volume-pricing serves product B. Quotes for A answer with the list
/// price by the host's 200 ms ceiling, each counted as a fault at once, until the breaker
/// switches the plugin off; quotes for B keep coming from their plugin; the status says
/// what was cut.
async fn a_looping_plugin_costs_only_its_own_quotes(db: Db) {
    let dir = plugin_dir(&[]);
    let config = ApiConfig {
        plugin_dir: Some(dir.path().to_path_buf()),
        plugin_limits: HostLimits {
            ceilings: Ceilings {
                timeout_ms: PerWorld::parse_over("pricing:200", 1000).unwrap(),
                ..Ceilings::default()
            },
            ..HostLimits::default()
        },
        ..test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let (product_a, price_a) = catalog(&s, json!(10.00)).await;
    let (product_b, price_b) = catalog(&s, json!(10.00)).await;
    let c = s.create_customer("loops@example.com").await;
    let c = c["id"].as_str().unwrap();

    let hostile = built_plugins().join("hostile");
    let greedy = std::fs::read_to_string(hostile.join("greedy-spin.toml")).unwrap();
    std::fs::write(
        dir.path().join("greedy-spin.toml"),
        greedy.replace(
            "world = \"pricing\"",
            &format!("world = \"pricing\"\nproducts = [\"{product_a}\"]"),
        ),
    )
    .unwrap();
    std::fs::copy(
        hostile.join("greedy-spin.wasm"),
        dir.path().join("greedy-spin.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("volume-pricing.toml"),
        format!(
            "name = \"volume-pricing\"\nworld = \"pricing\"\nproducts = [\"{product_b}\"]\n[limits]\ntimeout_ms = 200\n[config]\ntier_1_quantity = \"10\"\ntier_1_discount_bp = \"1000\"\n"
        ),
    )
    .unwrap();
    std::fs::copy(
        built_plugins().join("volume-pricing.wasm"),
        dir.path().join("volume-pricing.wasm"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = s.get(&s.admin, "/api/v1/plugins").await;
        let active = list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"]["state"] == "active")
            .count();
        if active == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plugins never loaded: {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for call in 1..=5 {
        let started = Instant::now();
        let r = quote(&s, c, &price_a, 10).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["amount_minor"], 10000, "the list price: {}", r.body);
        assert_eq!(r.body["decided_by"]["kind"], "default", "{}", r.body);
        assert_eq!(r.body["decided_by"]["reason"], "timeout", "{}", r.body);
        assert_eq!(r.body["decided_by"]["plugin"], "greedy-spin", "{}", r.body);
        // Bounded by the host's 200 ms ceiling, not the manifest's minute (or the 30 s
        // request timeout); the slack is for a loaded machine.
        assert!(took < Duration::from_secs(5), "quote {call} took {took:?}");
        let b = quote(&s, c, &price_b, 10).await;
        assert_eq!(b.body["decided_by"]["kind"], "plugin", "{}", b.body);
        assert_eq!(b.body["amount_minor"], 9000, "{}", b.body);
    }
    // Five faults in a row: switched off, and quotes for A no longer wait at all.
    let r = quote(&s, c, &price_a, 10).await;
    assert_eq!(r.body["decided_by"]["reason"], "disabled", "{}", r.body);

    let list = s.get(&s.admin, "/api/v1/plugins").await;
    let greedy = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "greedy-spin")
        .unwrap()
        .clone();
    assert_eq!(greedy["state"]["state"], "disabled", "{greedy}");
    assert_eq!(greedy["faults"], 5, "{greedy}");
    assert_eq!(greedy["fault_kinds"]["timeout"], 5, "{greedy}");
    assert_eq!(greedy["limits"]["timeout_ms"], 200, "{greedy}");
    let warnings = greedy["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{greedy}");
    assert!(
        warnings[0].as_str().unwrap().contains("timeout_ms = 60000"),
        "{greedy}"
    );
    assert_eq!(greedy["busy"], 0, "{greedy}");

    let metrics = s.text_of("/metrics").await;
    for line in [
        "hephaestus_plugin_default_decisions_total{world=\"pricing\",reason=\"timeout\"} 5",
        "hephaestus_plugin_busy_total{plugin=\"greedy-spin\",world=\"pricing\"} 0",
        "hephaestus_plugin_log_lines_dropped_total{plugin=\"greedy-spin\",world=\"pricing\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics:\n{metrics}");
    }
}
