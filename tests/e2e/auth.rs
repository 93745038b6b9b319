use std::time::{Duration, Instant};

use axum::Router;
use hephaestus_api::ApiConfig;
use hephaestus_core::keys::{Scope, hash};
use hephaestus_store::keys;
use reqwest::StatusCode;
use serde_json::json;

use crate::both_dbs;
use crate::common::{Db, Reply, TestDb, TestServer, test_config};

both_dbs!(
    missing_and_bad_keys,
    revoked_key,
    scopes,
    rate_limit,
    rate_limit_shared_across_hosts,
    keys_are_stored_hashed
);

const CUSTOMERS: &str = "/api/v1/revenue/customers";

async fn missing_and_bad_keys(db: Db) {
    let s = TestServer::start(db).await;
    let none = Reply::from(s.client.get(s.url(CUSTOMERS)).send().await.unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.code(), "unauthorized");
    assert!(none.headers.contains_key("x-request-id"));

    for bad in [
        "Bearer hk_notarealkeynotarealkeynotarealkey",
        "Bearer hk_short",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "hk_nobearerprefix",
    ] {
        let r = Reply::from(
            s.client
                .get(s.url(CUSTOMERS))
                .header("authorization", bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.code(), "unauthorized");
    }
    // A bad key cannot write either, and nothing is written for it.
    let r = s
        .post(
            "hk_notarealkeynotarealkeynotarealkey",
            CUSTOMERS,
            &json!({"email": "x@example.com"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.count("customers").await, 0);
    assert_eq!(s.count("audit_log").await, 0);
}

async fn revoked_key(db: Db) {
    let s = TestServer::start(db).await;
    let created = keys::create(&s.store, "soon revoked", Scope::Write, None)
        .await
        .unwrap();
    let key = created.secret.secret.clone();
    assert_eq!(s.get(&key, CUSTOMERS).await.status, StatusCode::OK);

    // Revoked from outside this host (as the CLI does): takes effect within the key cache
    // TTL (1 s by default). Poll with a deadline rather than sleeping a guess.
    keys::revoke(&s.store, &created.key.id)
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        let r = s.get(&key, CUSTOMERS).await;
        if r.status == StatusCode::UNAUTHORIZED || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rejected.status, StatusCode::UNAUTHORIZED);
    assert_eq!(rejected.code(), "unauthorized");
    assert!(
        rejected.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let write = s
        .post(&key, CUSTOMERS, &json!({"email": "r@example.com"}), None)
        .await;
    assert_eq!(write.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.count("customers").await, 0);
}

async fn scopes(db: Db) {
    let s = TestServer::start(db).await;
    let read = s.key(Scope::Read).await;
    let write = s.key(Scope::Write).await;

    assert_eq!(s.get(&read, CUSTOMERS).await.status, StatusCode::OK);
    let denied = s
        .post(&read, CUSTOMERS, &json!({"email": "r@example.com"}), None)
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.code(), "insufficient_scope");
    assert_eq!(s.count("customers").await, 0);

    let ok = s
        .post(&write, CUSTOMERS, &json!({"email": "w@example.com"}), None)
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let id = ok.body["id"].as_str().unwrap();
    let denied = s.delete(&read, &format!("{CUSTOMERS}/{id}")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        s.get(&write, "/api/v1/audit").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get(&s.admin, "/api/v1/audit").await.status,
        StatusCode::OK
    );
}

fn limited(limit: i64) -> ApiConfig {
    ApiConfig {
        rate_limit: hephaestus_api::rate_limit::RateLimit {
            limit,
            window_secs: 3600,
        },
        ..test_config()
    }
}

async fn rate_limit(db: Db) {
    let s = TestServer::start_with(db, limited(5)).await;
    for i in 0..5 {
        assert_eq!(
            s.get(&s.admin, CUSTOMERS).await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    let limited = s.get(&s.admin, CUSTOMERS).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Writes are refused too, and write nothing.
    let w = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "l@example.com"}),
            None,
        )
        .await;
    assert_eq!(w.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.count("customers").await, 0);

    // Another key has its own budget, and a key's own limit overrides the default.
    let other = s.key(Scope::Read).await;
    assert_eq!(s.get(&other, CUSTOMERS).await.status, StatusCode::OK);
    let roomy = keys::create(&s.store, "roomy", Scope::Read, Some(8))
        .await
        .unwrap()
        .secret
        .secret;
    let admitted = futures::future::join_all((0..10).map(|_| s.get(&roomy, CUSTOMERS))).await;
    let ok = admitted
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 8);
}

async fn rate_limit_shared_across_hosts(db: Db) {
    let a = TestServer::start_with(db, limited(10)).await;
    for _ in 0..6 {
        assert_eq!(a.get(&a.admin, CUSTOMERS).await.status, StatusCode::OK);
    }
    // Host A took what it admitted from the shared count before admitting it: nothing is
    // left to publish later.
    assert_eq!(window_total(&a).await, 6);
    // Host B shares the database: it may admit only what is left of the key's budget.
    let store_b = a.db.store().await;
    let b_db = TestDb {
        url: a.db.url.clone(),
        schema: None,
        _dir: tempfile::tempdir().unwrap(),
    };
    let b = TestServer::serve(b_db, store_b, a.admin.clone(), limited(10), Router::new()).await;
    let mut ok = 0;
    for _ in 0..10 {
        if b.get(&b.admin, CUSTOMERS).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "host B admitted {ok} of a budget with 4 left");
}

async fn window_total(s: &TestServer) -> i64 {
    hephaestus_store::with_read!(&s.store, |e| sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM rate_limit_windows"
    )
    .fetch_one(e)
    .await)
    .unwrap()
}

async fn keys_are_stored_hashed(db: Db) {
    let s = TestServer::start(db).await;
    let created = keys::create(&s.store, "hash check", Scope::Read, None)
        .await
        .unwrap();
    let secret = created.secret.secret.clone();
    let rows: Vec<(String, String, String, String)> =
        hephaestus_store::with_read!(&s.store, |e| sqlx::query_as(
            "SELECT id, name, key_hash, display_prefix FROM api_keys"
        )
        .fetch_all(e)
        .await)
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (id, name, key_hash, display_prefix) in &rows {
        for column in [id, name, key_hash, display_prefix] {
            assert!(
                !column.contains(&secret[3..]),
                "a column holds the key in clear: {column}"
            );
        }
        assert_eq!(key_hash.len(), 64);
    }
    assert!(rows.iter().any(|r| r.2 == hash(&secret)));
    // And the hash alone does not authenticate.
    let by_hash = s.get(&hash(&secret), CUSTOMERS).await;
    assert_eq!(by_hash.status, StatusCode::UNAUTHORIZED);
}
