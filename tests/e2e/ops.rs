use axum::Router;
use axum::routing::get;
use hephaestus_api::{ApiConfig, AppState};
use reqwest::StatusCode;

use crate::common::{Db, Reply, TestDb, TestServer, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_request_ids() {
    let s = TestServer::start(Db::Sqlite).await;
    let health = Reply::from(s.client.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = Reply::from(s.client.get(s.url("/ready")).send().await.unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["database"], "sqlite");

    // Every response carries a request id, and a client's own id is kept.
    for path in ["/health", "/nope", "/api/v1/revenue/customers"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert!(r.headers().contains_key("x-request-id"), "{path}");
    }
    let r = s
        .client
        .get(s.url("/health"))
        .header("x-request-id", "client-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen-1");

    s.create_customer("metrics@example.com").await;
    let text = s.text_of("/metrics").await;
    assert!(
        text.contains(r#"hephaestus_http_requests_total{method="POST",route="/api/v1/revenue/customers",status="201"} 1"#),
        "{text}"
    );
    assert!(text.contains("hephaestus_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"route="/health""#));
    // SQLite's writer batches every write; the PostgreSQL group commit series are absent.
    assert!(!text.contains("hephaestus_db_append_batch"), "{text}");
    assert!(
        !text.contains("hephaestus_db_sandbox_charge_batch"),
        "{text}"
    );
    assert!(
        !text.contains("hephaestus_db_webhook_intake_batch"),
        "{text}"
    );

    // The store going away makes the host unready, not unhealthy.
    s.store.close().await;
    let ready = Reply::from(s.client.get(s.url("/ready")).send().await.unwrap()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.code(), "not_ready");
    assert_eq!(s.status_of("/health").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_offline_docs() {
    let s = TestServer::start(Db::Sqlite).await;
    let doc = s.openapi().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/revenue/customers",
        "/api/v1/revenue/customers/{id}",
        "/api/v1/revenue/customers/{id}/export",
        "/api/v1/audit",
        "/api/v1/revenue/payments",
        "/api/v1/revenue/payments/{id}",
        "/api/v1/revenue/payments/{id}/refunds",
        "/api/v1/revenue/products",
        "/api/v1/revenue/prices/{id}",
        "/api/v1/revenue/webhooks/stripe",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    let page = s.client.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("/openapi.json"));
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "the docs page loads nothing from elsewhere:\n{html}"
    );
    assert!(
        html.contains("validatorUrl: null"),
        "no call to the online validator"
    );
    for asset in [
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ] {
        let r = s.client.get(s.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(
            r.bytes().await.unwrap().len() > 10_000,
            "{asset} is served by the host itself"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_becomes_a_json_500_and_the_server_keeps_serving() {
    let extra: Router<AppState> = Router::new().route(
        "/test/panic",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            "unreachable"
        }),
    );
    let s = TestServer::start_full(TestDb::new(Db::Sqlite).await, test_config(), extra).await;
    let r = Reply::from(s.client.get(s.url("/test/panic")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.code(), "internal_error");
    assert!(
        !r.body.to_string().contains("boom"),
        "internals are not sent to clients"
    );
    assert!(r.headers.contains_key("x-request-id"));
    for _ in 0..3 {
        assert_eq!(s.status_of("/health").await, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let config = ApiConfig {
        cors_origins: vec!["https://admin.example.com".parse().unwrap()],
        ..test_config()
    };
    let s = TestServer::start_with(Db::Sqlite, config).await;
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/api/v1/revenue/customers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://admin.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));

    let get = s
        .client
        .get(s.url("/api/v1/revenue/customers"))
        .bearer_auth(&s.admin)
        .header("origin", "https://admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"));
}

/// On PostgreSQL, `/metrics` shows the group commits: a payment's record is an append-only
/// transaction carried by a statement, and its sandbox charge is counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_postgres_group_commit() {
    let s = TestServer::start(Db::Postgres).await;
    let customer = s.create_customer("batches@example.com").await;
    let scrape = || async {
        let text = s.text_of("/metrics").await;
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
                .parse()
                .unwrap()
        };
        (
            value("hephaestus_db_append_batch_statements_total"),
            value("hephaestus_db_append_batch_transactions_total"),
            value("hephaestus_db_sandbox_charge_batch_charges_total"),
        )
    };
    let (statements, transactions, charges) = scrape().await;
    let paid = s
        .post(
            &s.admin,
            "/api/v1/revenue/payments",
            &serde_json::json!({"customer_id": customer["id"], "amount": 5, "currency": "usd", "payment_method": "pm_card_visa"}),
            None,
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let (statements_after, transactions_after, charges_after) = scrape().await;
    assert_eq!(charges_after, charges + 1, "the sandbox's charge, batched");
    assert!(transactions_after > transactions);
    assert!(statements_after > statements);
    assert!(statements_after <= transactions_after);
    // The inbox's group commit has its own pair, at zero here: no webhook came.
    let text = s.text_of("/metrics").await;
    for series in [
        "hephaestus_db_webhook_intake_batch_statements_total 0",
        "hephaestus_db_webhook_intake_batch_events_total 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series}:\n{text}");
    }
}
