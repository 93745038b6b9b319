//! Stripe webhooks: signatures made by Stripe's own Python library, then duplicates,
//! out-of-order delivery and unknown events, processed by the background worker.

use std::time::{Duration, Instant};

use hephaestus_api::ApiConfig;
use hephaestus_core::Timestamp;
use hephaestus_core::customer::Metadata;
use hephaestus_core::money::{Currency, Money};
use hephaestus_core::payment::{Payment, PaymentStatus};
use hephaestus_core::secret::Secret;
use hephaestus_store::{inbox, payments};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer, test_config};

both_dbs!(
    signatures_are_checked_by_an_independent_signer,
    duplicates_are_acknowledged_once,
    a_burst_of_deliveries_stores_each_event_once,
    an_ingest_host_stores_events_for_the_workers_to_apply,
    late_events_never_regress_a_payment,
    a_refund_before_the_success_is_counted_once,
    unknown_types_and_objects_are_stored_and_ignored,
    an_event_about_an_unknown_payment_waits_three_days,
    disputes_in_any_order,
    an_event_nested_deeper_than_the_worker_reads_is_refused
);

const HOOK: &str = "/api/v1/revenue/webhooks/stripe";
const SECRET: &str = "whsec_test_current";
const OLD_SECRET: &str = "whsec_test_previous";

pub(crate) fn now_secs() -> i64 {
    Timestamp::now().as_micros() / 1_000_000
}

/// `Stripe-Signature` as the official `stripe` Python package makes it.
pub(crate) fn stripe_sign(payload: &str, secret: &str, timestamp: i64) -> String {
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys, stripe; print(stripe.WebhookSignature.generate_signature_header(sys.stdin.read(), sys.argv[1], timestamp=int(sys.argv[2])))",
            secret,
            &timestamp.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(payload.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "the stripe package is needed (tests/run installs it; TEST_PYTHON names the interpreter): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn server(db: Db) -> TestServer {
    let config = ApiConfig {
        stripe_webhook_secrets: vec![Secret::new(OLD_SECRET), Secret::new(SECRET)],
        ..test_config()
    };
    TestServer::start_with(db, config).await
}

pub(crate) async fn deliver(s: &TestServer, payload: &str, signature: Option<&str>) -> Reply {
    let mut req = s
        .client
        .post(s.url(HOOK))
        .header("content-type", "application/json")
        .body(payload.to_string());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    Reply::from(req.send().await.unwrap()).await
}

async fn send(s: &TestServer, event: &Value) -> Reply {
    let payload = event.to_string();
    let sig = stripe_sign(&payload, SECRET, now_secs());
    let r = deliver(s, &payload, Some(&sig)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r
}

pub(crate) fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "type": kind,
        "data": { "object": object },
    })
}

/// Waits until the worker has finished every stored event.
pub(crate) async fn settled(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while inbox::pending_count(&s.store).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "webhook events still pending after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A payment made through Stripe, as the Stripe gateway records it.
pub(crate) async fn stripe_payment(s: &TestServer, intent: &str, status: PaymentStatus) -> String {
    let customer = s.create_customer(&format!("{intent}@example.com")).await;
    let now = Timestamp::now();
    let payment = Payment {
        id: hephaestus_core::ids::new_id("pay"),
        customer_id: customer["id"].as_str().unwrap().to_string(),
        amount: Money {
            minor: 9700,
            currency: Currency::parse("usd", "currency").unwrap(),
        },
        amount_refunded_minor: 0,
        status,
        payment_method: "pm_card_visa".into(),
        description: None,
        gateway: "stripe".into(),
        gateway_id: Some(intent.to_string()),
        decline_code: None,
        failure_message: None,
        metadata: Metadata::new(),
        created_at: now,
        updated_at: now,
        gateway_event_at: None,
        invoice_id: None,
        quote_id: None,
    };
    let id = payment.id.clone();
    s.store
        .write(move |tx| Box::pin(async move { payments::insert(tx, &payment).await }))
        .await
        .unwrap();
    id
}

async fn event_kinds(s: &TestServer, customer_of_payment: &str) -> Vec<String> {
    let p = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/payments/{customer_of_payment}"),
        )
        .await;
    let c = p.body["customer_id"].as_str().unwrap();
    let export = s
        .get(&s.admin, &format!("/api/v1/revenue/customers/{c}/export"))
        .await;
    export.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn signatures_are_checked_by_an_independent_signer(db: Db) {
    let s = server(db).await;
    let now = now_secs();
    let payload = event(
        "evt_sig_ok",
        "customer.created",
        now,
        json!({"id": "cus_x"}),
    )
    .to_string();

    let good = stripe_sign(&payload, SECRET, now);
    let r = deliver(&s, &payload, Some(&good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"received": true, "duplicate": false}));

    let rotated_payload = event(
        "evt_sig_old",
        "customer.created",
        now,
        json!({"id": "cus_y"}),
    )
    .to_string();
    let old = stripe_sign(&rotated_payload, OLD_SECRET, now);
    assert_eq!(
        deliver(&s, &rotated_payload, Some(&old)).await.status,
        StatusCode::OK,
        "the previous secret still works during rotation"
    );

    let bad_payload = event(
        "evt_sig_bad",
        "customer.created",
        now,
        json!({"id": "cus_z"}),
    )
    .to_string();
    let cases = [
        (
            "wrong secret",
            stripe_sign(&bad_payload, "whsec_attacker", now),
            bad_payload.clone(),
        ),
        (
            "stale timestamp",
            stripe_sign(&bad_payload, SECRET, now - 301),
            bad_payload.clone(),
        ),
        (
            "from the future",
            stripe_sign(&bad_payload, SECRET, now + 600),
            bad_payload.clone(),
        ),
        (
            "tampered body",
            stripe_sign(&bad_payload, SECRET, now),
            bad_payload.replace("cus_z", "cus_q"),
        ),
        (
            "garbage header",
            "nonsense".to_string(),
            bad_payload.clone(),
        ),
    ];
    for (name, sig, body) in cases {
        let r = deliver(&s, &body, Some(&sig)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.body);
        assert_eq!(r.field(), Some("Stripe-Signature"), "{name}");
    }
    let missing = deliver(&s, &bad_payload, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.count("webhook_events").await,
        2,
        "nothing stored for a rejected delivery"
    );
    settled(&s).await;
}

async fn duplicates_are_acknowledged_once(db: Db) {
    let s = server(db).await;
    let pay = stripe_payment(&s, "pi_dup", PaymentStatus::Processing).await;
    let e = event(
        "evt_dup",
        "payment_intent.succeeded",
        now_secs(),
        json!({"id": "pi_dup", "object": "payment_intent", "status": "succeeded"}),
    );
    let replies = futures::future::join_all((0..10).map(|_| send(&s, &e))).await;
    let fresh = replies
        .iter()
        .filter(|r| r.body["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "one delivery is new, nine are duplicates");
    settled(&s).await;
    assert_eq!(s.count("webhook_events").await, 1);
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay}"))
        .await;
    assert_eq!(p.body["status"], "succeeded");
    let kinds = event_kinds(&s, &pay).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "payment.succeeded").count(),
        1,
        "{kinds:?}"
    );
}

/// Forty events, each delivered twice at the same moment: on PostgreSQL the deliveries
/// share statements (the inbox's group commit), a statement can hold both deliveries of
/// one event, and still each event is stored once and answered as new once.
async fn a_burst_of_deliveries_stores_each_event_once(db: Db) {
    let s = server(db).await;
    let before = s.store.intake_batches();
    let t = now_secs();
    // Signed first, one Python run each, so that the deliveries go out together.
    let signed: Vec<(String, String)> = (0..40)
        .map(|i| {
            let e = event(
                &format!("evt_burst_{i}"),
                "charge.refund.updated",
                t,
                json!({"id": format!("re_burst_{i}"), "object": "refund", "status": "succeeded"}),
            );
            let payload = e.to_string();
            let sig = stripe_sign(&payload, SECRET, t);
            (payload, sig)
        })
        .collect();
    let replies = futures::future::join_all(
        signed
            .iter()
            .chain(signed.iter())
            .map(|(payload, sig)| deliver(&s, payload, Some(sig))),
    )
    .await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let fresh = replies
        .iter()
        .filter(|r| r.body["duplicate"] == false)
        .count();
    assert_eq!(fresh, 40, "each event answered as new exactly once");
    assert_eq!(s.count("webhook_events").await, 40);
    settled(&s).await;
    if let Some(before) = before {
        let after = s.store.intake_batches().unwrap();
        assert_eq!(after.jobs - before.jobs, 80);
        assert!(
            after.statements - before.statements < 80,
            "{before:?} → {after:?}"
        );
    }
}

/// A host whose worker is off (`HEPHAESTUS_WEBHOOK_WORKER=off`) verifies and stores a
/// delivery and never applies it; a worker elsewhere does.
async fn an_ingest_host_stores_events_for_the_workers_to_apply(db: Db) {
    let config = ApiConfig {
        stripe_webhook_secrets: vec![Secret::new(SECRET)],
        apply_webhooks: false,
        ..test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let pay = stripe_payment(&s, "pi_ingest", PaymentStatus::Processing).await;
    let e = event(
        "evt_ingest",
        "payment_intent.succeeded",
        now_secs(),
        json!({"id": "pi_ingest", "object": "payment_intent", "status": "succeeded"}),
    );
    assert_eq!(send(&s, &e).await.body["duplicate"], false);
    // Longer than the worker's poll (500 ms) and its wake-up on arrival: never claimed here.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = inbox::status(&s.store, "stripe", "evt_ingest")
        .await
        .unwrap();
    assert_eq!(stored, Some(("pending".to_string(), 0, None)));
    // Another host's worker takes it.
    let applied = hephaestus_billing::stripe_events::process_due(&s.store, 10)
        .await
        .unwrap();
    assert_eq!(applied, 1);
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay}"))
        .await;
    assert_eq!(p.body["status"], "succeeded");
}

async fn late_events_never_regress_a_payment(db: Db) {
    let s = server(db).await;
    let pay = stripe_payment(&s, "pi_order", PaymentStatus::RequiresAction).await;
    let t = now_secs();
    let intent = |status: &str| {
        json!({"id": "pi_order", "object": "payment_intent", "status": status,
        "last_payment_error": {"decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}})
    };
    // The success is delivered first; the failure that happened before it arrives later.
    send(
        &s,
        &event(
            "evt_o2",
            "payment_intent.succeeded",
            t + 10,
            intent("succeeded"),
        ),
    )
    .await;
    settled(&s).await;
    send(
        &s,
        &event(
            "evt_o1",
            "payment_intent.payment_failed",
            t + 5,
            intent("requires_payment_method"),
        ),
    )
    .await;
    settled(&s).await;
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay}"))
        .await;
    assert_eq!(p.body["status"], "succeeded");
    assert!(p.body["decline_code"].is_null());
    let (status, _, note) = inbox::status(&s.store, "stripe", "evt_o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, "ignored");
    assert!(note.unwrap().contains("older"));

    // A newer event of the same rank does apply: a failure, then a newer retry that needs action.
    let pay2 = stripe_payment(&s, "pi_side", PaymentStatus::Processing).await;
    let side = |status: &str| {
        json!({"id": "pi_side", "object": "payment_intent", "status": status,
        "last_payment_error": {"decline_code": "card_declined", "message": "declined"}})
    };
    send(
        &s,
        &event(
            "evt_s1",
            "payment_intent.payment_failed",
            t + 1,
            side("requires_payment_method"),
        ),
    )
    .await;
    send(
        &s,
        &event(
            "evt_s2",
            "payment_intent.requires_action",
            t + 2,
            side("requires_action"),
        ),
    )
    .await;
    settled(&s).await;
    let p2 = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay2}"))
        .await;
    assert_eq!(p2.body["status"], "requires_action");
}

async fn a_refund_before_the_success_is_counted_once(db: Db) {
    let s = server(db).await;
    let pay = stripe_payment(&s, "pi_ref", PaymentStatus::Processing).await;
    let t = now_secs();
    let charge = json!({
        "id": "ch_ref", "object": "charge", "payment_intent": "pi_ref",
        "amount": 9700, "amount_refunded": 3000, "currency": "usd", "refunded": false,
        "refunds": {"object": "list", "data": [
            {"id": "re_ref_1", "object": "refund", "amount": 3000, "currency": "usd", "status": "succeeded", "reason": "requested_by_customer"}
        ]}
    });
    for _ in 0..3 {
        // Redelivered with new event ids, as a retried endpoint may see.
        let id = format!("evt_r_{}", uuid::Uuid::now_v7().simple());
        send(&s, &event(&id, "charge.refunded", t + 20, charge.clone())).await;
    }
    send(
        &s,
        &event(
            "evt_r_success",
            "payment_intent.succeeded",
            t + 10,
            json!({"id": "pi_ref", "status": "succeeded"}),
        ),
    )
    .await;
    settled(&s).await;

    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay}"))
        .await;
    assert_eq!(p.body["status"], "partially_refunded");
    assert_eq!(p.body["amount_refunded_minor"], 3000);
    assert_eq!(p.body["refunds"].as_array().unwrap().len(), 1);
    let kinds = event_kinds(&s, &pay).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "payment.succeeded").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "refund.created").count(),
        1,
        "{kinds:?}"
    );

    // A later refund status change reaches the recorded refund.
    send(
        &s,
        &event(
            "evt_r_upd",
            "charge.refund.updated",
            t + 30,
            json!({"id": "re_ref_1", "object": "refund", "status": "failed"}),
        ),
    )
    .await;
    settled(&s).await;
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{pay}"))
        .await;
    assert_eq!(p.body["refunds"][0]["status"], "failed");
}

async fn unknown_types_and_objects_are_stored_and_ignored(db: Db) {
    let s = server(db).await;
    let t = now_secs();
    send(
        &s,
        &event(
            "evt_u1",
            "customer.discount.created",
            t,
            json!({"id": "di_1"}),
        ),
    )
    .await;
    send(
        &s,
        &event(
            "evt_u2",
            "payment_intent.succeeded",
            t,
            json!({"id": "pi_late"}),
        ),
    )
    .await;

    // A type we do not handle is finished as ignored at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, attempts, note) = inbox::status(&s.store, "stripe", "evt_u1")
            .await
            .unwrap()
            .unwrap();
        if status == "ignored" {
            assert_eq!(attempts, 1);
            assert!(note.unwrap().contains("not handled"));
            break;
        }
        assert!(Instant::now() < deadline, "evt_u1 still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An event about a payment not recorded yet waits for it (it can beat the API's own
    // commit), and applies once the payment exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, attempts, note) = inbox::status(&s.store, "stripe", "evt_u2")
            .await
            .unwrap()
            .unwrap();
        if let (true, Some(note)) = (attempts >= 1, note) {
            assert_eq!(status, "pending");
            assert!(note.contains("no payment for pi_late"));
            break;
        }
        assert!(Instant::now() < deadline, "evt_u2 never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = stripe_payment(&s, "pi_late", PaymentStatus::Processing).await;
    settled(&s).await;
    assert_eq!(
        s.get(&s.admin, &format!("/api/v1/revenue/payments/{late}"))
            .await
            .body["status"],
        "succeeded"
    );
    let (status, attempts, _) = inbox::status(&s.store, "stripe", "evt_u2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("processed", 2));

    // A body that verifies but is not an event is refused and not stored.
    let payload = r#"{"hello": "world"}"#;
    let r = deliver(&s, payload, Some(&stripe_sign(payload, SECRET, t))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.count("webhook_events").await, 2);

    // Operators see what happened to each event, and can put one back in the queue.
    let events = "/api/v1/revenue/webhooks/events";
    let ignored = s.get(&s.admin, &format!("{events}?status=ignored")).await;
    assert_eq!(ignored.status, StatusCode::OK, "{}", ignored.body);
    let data = ignored.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "evt_u1");
    assert_eq!(data[0]["type"], "customer.discount.created");
    let page = s.get(&s.admin, &format!("{events}?limit=1")).await;
    assert_eq!(page.body["has_more"], true);
    let next = page.body["data"][0]["id"].as_str().unwrap().to_string();
    let rest = s
        .get(&s.admin, &format!("{events}?limit=1&starting_after={next}"))
        .await;
    assert_ne!(rest.body["data"][0]["id"].as_str().unwrap(), next);
    assert_eq!(
        s.get(&s.admin, &format!("{events}?status=lost"))
            .await
            .field(),
        Some("status")
    );
    let writer = s.key(hephaestus_core::keys::Scope::Write).await;
    assert_eq!(s.get(&writer, events).await.status, StatusCode::FORBIDDEN);

    let retry = s
        .post(
            &s.admin,
            &format!("{events}/evt_u1/retry"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.body["status"], "pending");
    settled(&s).await;
    let (status, attempts, _) = inbox::status(&s.store, "stripe", "evt_u1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_str(), attempts),
        ("ignored", 1),
        "run again with a fresh budget"
    );
    let processed = s
        .post(
            &s.admin,
            &format!("{events}/evt_u2/retry"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(
        processed.status,
        StatusCode::NOT_FOUND,
        "a processed event is not requeued"
    );
}

/// A refund of a payment not recorded here waits for it as long as Stripe may still deliver
/// the payment's own event (three days of retries), then is ignored: not after a few
/// seconds, and not parked as a failure.
async fn an_event_about_an_unknown_payment_waits_three_days(db: Db) {
    use hephaestus_billing::stripe_events::UNKNOWN_OBJECT_ATTEMPTS;

    let s = server(db).await;
    let refund = json!({"id": "ch_gone", "object": "charge", "payment_intent": "pi_gone",
        "amount": 9700, "amount_refunded": 9700, "currency": "usd", "refunds": {"data": []}});
    send(
        &s,
        &event("evt_wait", "charge.refunded", now_secs(), refund),
    )
    .await;
    // Puts the event's next try now, as if it had been tried `attempts` times already, and
    // waits for that try.
    let try_after = |attempts: i64| {
        let store = s.store.clone();
        async move {
            store
                .write(move |tx| {
                    Box::pin(async move {
                        let n = hephaestus_store::with_tx!(tx, |c| sqlx::query(
                            "UPDATE webhook_events SET attempts = $1, next_attempt_at = 0 WHERE id = 'evt_wait'"
                        )
                        .bind(attempts)
                        .execute(c)
                        .await
                        .map(|r| r.rows_affected()))?;
                        Ok::<_, hephaestus_store::StoreError>(n)
                    })
                })
                .await
                .map(|n| assert_eq!(n, 1))
                .unwrap();
        }
    };
    // Waits for the try after the `attempts`-th to be done: the event given up, or put off
    // again (to how many seconds from now?).
    let tried = |attempts: i64| {
        let store = s.store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, tries, note) = inbox::status(&store, "stripe", "evt_wait")
                    .await
                    .unwrap()
                    .unwrap();
                let next: i64 = hephaestus_store::with_read!(&store, |e| sqlx::query_scalar(
                    "SELECT next_attempt_at FROM webhook_events WHERE id = 'evt_wait'"
                )
                .fetch_one(e)
                .await)
                .unwrap();
                let next_in = next - Timestamp::now().as_micros();
                if tries > attempts && (status != "pending" || next_in > 0) {
                    return (status, tries, note.unwrap_or_default(), next_in / 1_000_000);
                }
                assert!(
                    Instant::now() < deadline,
                    "evt_wait not tried after {attempts}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let (status, tries, note, next_in) = tried(0).await;
    assert_eq!((status.as_str(), tries), ("pending", 1));
    assert!(note.contains("no payment for pi_gone"), "{note}");
    assert!((0..=2).contains(&next_in), "{next_in}");

    // Past the attempts any failing event gets: still waiting, an hour between tries.
    try_after(20).await;
    let (status, tries, _, next_in) = tried(20).await;
    assert_eq!((status.as_str(), tries), ("pending", 21));
    assert!((3590..=3600).contains(&next_in), "{next_in}");

    // The last try, three days on: given up, with the reason kept.
    try_after(UNKNOWN_OBJECT_ATTEMPTS - 1).await;
    let (status, tries, note, _) = tried(UNKNOWN_OBJECT_ATTEMPTS - 1).await;
    assert_eq!(
        (status.as_str(), tries),
        ("ignored", UNKNOWN_OBJECT_ATTEMPTS)
    );
    assert!(note.contains("no payment for pi_gone"), "{note}");
}

pub(crate) fn dispute_object(status: &str, moves: &[i64]) -> Value {
    json!({
        "id": "dp_1", "object": "dispute", "charge": "ch_dsp", "payment_intent": "pi_dsp",
        "amount": 9700, "currency": "usd", "reason": "fraudulent", "status": status,
        "balance_transactions": moves.iter().map(|m| json!({"object": "balance_transaction", "amount": m})).collect::<Vec<_>>(),
    })
}

async fn disputes_in_any_order(db: Db) {
    let s = server(db).await;
    let t = now_secs();

    // Lost, delivered in order: the payment is disputed from the start and stays so.
    let lost = stripe_payment(&s, "pi_dsp", PaymentStatus::Succeeded).await;
    send(
        &s,
        &event(
            "evt_d1",
            "charge.dispute.created",
            t + 1,
            dispute_object("needs_response", &[]),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(
        s.get(&s.admin, &format!("/api/v1/revenue/payments/{lost}"))
            .await
            .body["status"],
        "disputed"
    );
    send(
        &s,
        &event(
            "evt_d2",
            "charge.dispute.funds_withdrawn",
            t + 2,
            dispute_object("needs_response", &[-9700]),
        ),
    )
    .await;
    send(
        &s,
        &event(
            "evt_d3",
            "charge.dispute.updated",
            t + 3,
            dispute_object("under_review", &[-9700]),
        ),
    )
    .await;
    send(
        &s,
        &event(
            "evt_d4",
            "charge.dispute.closed",
            t + 4,
            dispute_object("lost", &[-9700]),
        ),
    )
    .await;
    settled(&s).await;
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{lost}"))
        .await;
    assert_eq!(p.body["status"], "disputed");
    assert_eq!(p.body["disputes"][0]["status"], "lost");
    assert_eq!(p.body["disputes"][0]["funds_withdrawn_minor"], 9700);
    let kinds = event_kinds(&s, &lost).await;
    let disputes: Vec<&str> = kinds
        .iter()
        .filter(|k| k.starts_with("dispute."))
        .map(String::as_str)
        .collect();
    assert_eq!(
        disputes,
        [
            "dispute.created",
            "dispute.funds_withdrawn",
            "dispute.updated",
            "dispute.closed"
        ]
    );

    // Won, delivered backwards: the close first, the older events after it change nothing.
    let won = stripe_payment(&s, "pi_dsp2", PaymentStatus::Succeeded).await;
    let obj = |status: &str, moves: &[i64]| {
        let mut o = dispute_object(status, moves);
        o["id"] = json!("dp_2");
        o["payment_intent"] = json!("pi_dsp2");
        o
    };
    send(
        &s,
        &event(
            "evt_w3",
            "charge.dispute.closed",
            t + 30,
            obj("won", &[-9700, 9700]),
        ),
    )
    .await;
    settled(&s).await;
    send(
        &s,
        &event(
            "evt_w1",
            "charge.dispute.created",
            t + 10,
            obj("needs_response", &[]),
        ),
    )
    .await;
    send(
        &s,
        &event(
            "evt_w2",
            "charge.dispute.funds_withdrawn",
            t + 11,
            obj("needs_response", &[-9700]),
        ),
    )
    .await;
    settled(&s).await;
    let p = s
        .get(&s.admin, &format!("/api/v1/revenue/payments/{won}"))
        .await;
    assert_eq!(
        p.body["status"], "succeeded",
        "a won dispute gives the payment back"
    );
    assert_eq!(p.body["disputes"].as_array().unwrap().len(), 1);
    assert_eq!(p.body["disputes"][0]["status"], "won");
    assert_eq!(p.body["disputes"][0]["funds_reinstated_minor"], 9700);
    let kinds = event_kinds(&s, &won).await;
    let disputes: Vec<&str> = kinds
        .iter()
        .filter(|k| k.starts_with("dispute."))
        .map(String::as_str)
        .collect();
    assert_eq!(
        disputes,
        ["dispute.created", "dispute.closed"],
        "each fact once"
    );
}

/// An event whose unknown field nests 130,000 levels deep is signed correctly, but the
/// worker could never read it back: it is refused at intake, and nothing is stored. One
/// nested a few dozen levels is taken and applied as usual.
async fn an_event_nested_deeper_than_the_worker_reads_is_refused(db: Db) {
    let s = server(db).await;
    let now = now_secs();
    let with_field = |id: &str, depth: usize| {
        let base = event(id, "customer.created", now, json!({"id": "cus_deep"})).to_string();
        format!(
            "{},\"unknown\":{}{}}}",
            &base[..base.len() - 1],
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let deep = with_field("evt_too_deep", 130_000);
    let r = deliver(&s, &deep, Some(&stripe_sign(&deep, SECRET, now))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.code(), "invalid_json");
    assert_eq!(s.count("webhook_events").await, 0, "nothing stored");

    let fine = with_field("evt_deep_enough", 40);
    let r = deliver(&s, &fine, Some(&stripe_sign(&fine, SECRET, now))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    settled(&s).await;
    let stored = s
        .count("webhook_events WHERE id = 'evt_deep_enough' AND status <> 'failed'")
        .await;
    assert_eq!(stored, 1);
}
