//! The event log as consumers read it: in order, and on PostgreSQL never past an event
//! whose transaction has not committed yet.

use hephaestus_store::events;
use sqlx::Connection;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(consumers_read_in_order);

async fn consumers_read_in_order(db: Db) {
    let s = TestServer::start(db).await;
    for i in 0..5 {
        s.create_customer(&format!("log{i}@example.com")).await;
    }
    // On PostgreSQL readers wait for every older transaction in the cluster (other tests'
    // too) to finish before an event shows: poll until all five have.
    // (The segment consumer writes events of its own meanwhile; only ours are counted.)
    let created = |list: &[hephaestus_core::event::Event]| {
        list.iter().filter(|e| e.kind == "customer.created").count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while created(&events::after(&s.store, 0, 100).await.unwrap()) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "events never became visible"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let all = events::after(&s.store, 0, 100).await.unwrap();
    let first = events::after(&s.store, 0, 3).await.unwrap();
    assert_eq!(first, all[..3]);
    let rest = events::after(&s.store, first[2].seq, 100).await.unwrap();
    assert!(rest.len() >= all.len() - 3);
    assert_eq!(rest[..all.len() - 3], all[3..]);
    let seqs: Vec<i64> = first.iter().chain(&rest).map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(created(&first) + created(&rest), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_commit_with_a_lower_seq_is_not_skipped_on_postgres() {
    let s = TestServer::start(Db::Postgres).await;
    // A transaction takes the next seq and stays open…
    let mut slow = sqlx::PgConnection::connect(&s.db.url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, type, customer_id, subject_id, data, occurred_at)
         VALUES ('evt_slow', 'test.slow', NULL, 'x', '{}', 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    // …while a later one commits with a higher seq.
    s.create_customer("fast@example.com").await;
    let seen = events::after(&s.store, 0, 100).await.unwrap();
    assert!(
        seen.is_empty(),
        "read past an uncommitted lower seq: {seen:?}"
    );
    tx.commit().await.unwrap();
    // Both show once every older transaction in the cluster (other tests' too) has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seen = loop {
        let seen = events::after(&s.store, 0, 100).await.unwrap();
        if seen.len() >= 2 || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // (The segment consumer's own events come after these.)
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "customer.segments_changed")
        .collect();
    assert_eq!(kinds, ["test.slow", "customer.created"]);
}
