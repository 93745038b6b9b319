use hephaestus_core::keys::Scope;
use reqwest::StatusCode;
use serde_json::json;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(
    replay_and_conflict,
    concurrent_requests_create_one,
    scoped_per_api_key,
    failures_replay_too
);

const CUSTOMERS: &str = "/api/v1/revenue/customers";

async fn replay_and_conflict(db: Db) {
    let s = TestServer::start(db).await;
    let body = json!({"email": "idem@example.com", "name": "Idem"});
    let first = s.post(&s.admin, CUSTOMERS, &body, Some("key-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.headers.contains_key("idempotent-replayed"));

    let again = s.post(&s.admin, CUSTOMERS, &body, Some("key-1")).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(
        again.body, first.body,
        "the stored first response, byte for byte"
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(s.count("customers").await, 1);
    assert_eq!(s.count_events().await, 1);

    let other = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "other@example.com"}),
            Some("key-1"),
        )
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "idempotency_key_reused");
    assert_eq!(s.count("customers").await, 1);

    // Without a key, the same body is a new request (and here a duplicate email).
    let fresh = s.post(&s.admin, CUSTOMERS, &body, None).await;
    assert_eq!(fresh.code(), "customer_exists");
}

async fn concurrent_requests_create_one(db: Db) {
    let s = TestServer::start(db).await;
    let body = json!({"email": "race@example.com"});
    let replies = futures::future::join_all(
        (0..20).map(|_| s.post(&s.admin, CUSTOMERS, &body, Some("race-key"))),
    )
    .await;
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    for r in &replies {
        match r.status {
            StatusCode::CREATED => {
                assert_eq!(r.body, created[0].body, "every success is the one customer")
            }
            StatusCode::CONFLICT => assert_eq!(r.code(), "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(s.count("customers").await, 1);
    assert_eq!(s.count_events().await, 1);
    // Once the first has finished, a retry replays it.
    let retry = s.post(&s.admin, CUSTOMERS, &body, Some("race-key")).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, created[0].body);
}

async fn scoped_per_api_key(db: Db) {
    let s = TestServer::start(db).await;
    let other = s.key(Scope::Write).await;
    let a = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "one@example.com"}),
            Some("shared"),
        )
        .await;
    let b = s
        .post(
            &other,
            CUSTOMERS,
            &json!({"email": "two@example.com"}),
            Some("shared"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        b.status,
        StatusCode::CREATED,
        "another API key's use of the same key is unrelated"
    );
    assert_ne!(a.body["id"], b.body["id"]);
    assert_eq!(s.count("customers").await, 2);
}

async fn failures_replay_too(db: Db) {
    let s = TestServer::start(db).await;
    s.create_customer("taken@example.com").await;
    let body = json!({"email": "taken@example.com"});
    let first = s.post(&s.admin, CUSTOMERS, &body, Some("k-fail")).await;
    assert_eq!(first.code(), "customer_exists");
    let again = s.post(&s.admin, CUSTOMERS, &body, Some("k-fail")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // Requests rejected before they ran (bad input) are not stored: fixing the body and
    // retrying with the same key works.
    let bad = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "nope"}),
            Some("k-fix"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let fixed = s
        .post(
            &s.admin,
            CUSTOMERS,
            &json!({"email": "fixed@example.com"}),
            Some("k-fix"),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::CREATED);
}

both_dbs!(an_expired_claim_belongs_to_the_retry_that_took_it);

/// A request that outlives its claim cannot complete it once a retry has taken it over:
/// its change rolls back, so the change is made once, by the retry.
async fn an_expired_claim_belongs_to_the_retry_that_took_it(db: Db) {
    use hephaestus_store::StoreError;
    use hephaestus_store::idempotency::{self, Claim, IdemKey};

    let s = TestServer::start(db).await;
    let key = || IdemKey {
        api_key_id: "key_test".into(),
        key: "slow-request".into(),
        request_hash: "h".into(),
        claim_token: String::new(),
    };
    let mut first = key();
    // A lock that has already run out, as for a request that took too long.
    assert_eq!(
        idempotency::claim(&s.store, &mut first, -1).await.unwrap(),
        Claim::Acquired
    );
    let mut retry = key();
    assert_eq!(
        idempotency::claim(&s.store, &mut retry, 60).await.unwrap(),
        Claim::Acquired
    );
    assert_ne!(first.claim_token, retry.claim_token);

    let late = {
        let first = first.clone();
        s.store
            .write(move |tx| {
                Box::pin(async move { idempotency::complete(tx, &first, 201, "{}", None).await })
            })
            .await
    };
    assert!(matches!(late, Err(StoreError::ClaimLost)), "{late:?}");
    // The first request's release does not free the retry's claim either.
    idempotency::release(&s.store, &first).await.unwrap();
    let mut third = key();
    assert_eq!(
        idempotency::claim(&s.store, &mut third, 60).await.unwrap(),
        Claim::InProgress
    );

    let done = {
        let retry = retry.clone();
        s.store
            .write(move |tx| {
                Box::pin(async move {
                    idempotency::complete(tx, &retry, 201, "{\"ok\":true}", None).await
                })
            })
            .await
    };
    assert!(done.is_ok());
    let mut fourth = key();
    assert_eq!(
        idempotency::claim(&s.store, &mut fourth, 60).await.unwrap(),
        Claim::Replay {
            status: 201,
            body: "{\"ok\":true}".into()
        }
    );
}
