//! The event log as consumers read it: in order, and on PostgreSQL never past an event
//! whose transaction has not committed yet.

use hephaestus_store::events;
use sqlx::Connection;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(
    consumers_read_in_order,
    appends_commit_together_or_not_at_all
);

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

/// A transaction of appends only (a payment's record: the payment, its event, its audit
/// entry) is sent at commit, on PostgreSQL as one statement with no `BEGIN`: all of it lands,
/// or, when one row is refused, none of it.
async fn appends_commit_together_or_not_at_all(db: Db) {
    use hephaestus_core::Timestamp;
    use hephaestus_core::event::NewEvent;
    use hephaestus_core::ids::{self, prefix};
    use hephaestus_core::money::{Currency, Money};
    use hephaestus_core::payment::{Payment, PaymentStatus};
    use hephaestus_store::audit::{self, AuditEntry};
    use hephaestus_store::{StoreError, payments};

    let s = TestServer::start(db).await;
    let customer = s.create_customer("appends@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let record = |customer_id: &str| {
        let now = Timestamp::now();
        let payment = Payment {
            id: ids::new_id(prefix::PAYMENT),
            customer_id: customer_id.to_string(),
            amount: Money {
                minor: 9700,
                currency: Currency::parse("USD", "currency").unwrap(),
            },
            amount_refunded_minor: 0,
            status: PaymentStatus::Succeeded,
            payment_method: "pm_card_visa".into(),
            description: None,
            gateway: "sandbox".into(),
            gateway_id: Some(ids::new_id("ch_sbx")),
            decline_code: None,
            failure_message: None,
            metadata: Default::default(),
            created_at: now,
            updated_at: now,
            gateway_event_at: None,
            invoice_id: None,
            quote_id: None,
        };
        let store = s.store.clone();
        async move {
            store
                .write(move |tx| {
                    Box::pin(async move {
                        payments::insert_at_commit(tx, &payment)?;
                        events::append(
                            tx,
                            NewEvent::new(
                                "payment.succeeded",
                                &payment.id,
                                Some(payment.customer_id.clone()),
                                serde_json::json!({}),
                                now,
                            ),
                        );
                        audit::record(tx, AuditEntry::new(None, "POST", "/appends", 201, None));
                        Ok::<_, StoreError>(())
                    })
                })
                .await
        }
    };
    let counts = || async {
        (
            s.count("payments").await,
            s.count("events WHERE type = 'payment.succeeded'").await,
            s.count("audit_log WHERE path = '/appends'").await,
        )
    };

    record(&customer).await.unwrap();
    assert_eq!(counts().await, (1, 1, 1));
    // The payment names no customer: the foreign key refuses it, and the event and the
    // audit entry sent with it are refused too.
    assert!(record("cus_nobody").await.is_err());
    assert_eq!(counts().await, (1, 1, 1));

    // Concurrent ones share statements on PostgreSQL (group commit)…
    let before = s.store.append_batches();
    let outcomes = futures::future::join_all((0..40).map(|_| record(&customer))).await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(counts().await, (41, 41, 41));
    if let (Some(before), Some(after)) = (before, s.store.append_batches()) {
        // (Counting the server's own background appends, if any ran meanwhile.)
        let (statements, jobs) = (
            after.statements - before.statements,
            after.jobs - before.jobs,
        );
        assert!(jobs >= 40, "{jobs} jobs");
        assert!(statements < jobs, "{statements} statements for {jobs} jobs");
    }
    // …and a refused row fails its own transaction only, on either database.
    let outcomes = futures::future::join_all(
        (0..40).map(|i| record(if i % 10 == 3 { "cus_nobody" } else { &customer })),
    )
    .await;
    let failed: Vec<usize> = (0..40).filter(|i| outcomes[*i].is_err()).collect();
    assert_eq!(failed, [3, 13, 23, 33]);
    assert_eq!(counts().await, (77, 77, 77));
}
