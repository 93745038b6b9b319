//! The process dies in the middle of a gateway call — after the attempt is recorded and
//! before or after the gateway acted, or at a random moment under load (`kill -9`) — and
//! comes back: every charge the gateway made has its payment, with its event and audit
//! entry; a retry with the same `Idempotency-Key` is served as soon as recovery has settled
//! the call, with what the first request would have answered; a call the gateway never got
//! leaves nothing behind, and its retry runs afresh. Against the real binary, on SQLite and
//! PostgreSQL.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{self, Server};
use crate::both_dbs;
use crate::common::{Db, Reply, TestDb};
use crate::stripe::LocalStripe;

both_dbs!(
    a_charge_made_just_before_the_host_died_is_recorded_for_its_retry,
    a_charge_made_just_before_the_host_died_is_recorded_without_a_retry,
    a_call_the_gateway_never_got_is_released_and_its_retry_charges_once,
    a_refund_made_just_before_the_host_died_is_recorded,
    a_subscription_whose_first_charge_outlived_its_host_starts_on_retry,
    kill_9_under_load_leaves_no_charge_without_a_payment,
    a_stripe_charge_made_just_before_the_host_died_is_recorded,
    stripe_down_then_back_answers_503_and_charges_once,
);

/// Recovery settles a dead host's sandbox calls within this long (its beat goes stale after
/// 5 s); a call to Stripe is asked about once it can no longer land (its 30 s timeout, and a
/// margin).
const SETTLED_WITHIN: Duration = Duration::from_secs(20);
const STRIPE_SETTLED_WITHIN: Duration = Duration::from_secs(60);

struct Drill {
    db: TestDb,
    dir: tempfile::TempDir,
    key: String,
    http: reqwest::Client,
    /// Settings every start of the binary gets (the Stripe gateway's, say).
    env: Vec<(&'static str, String)>,
    settled_within: Duration,
}

impl Drill {
    async fn new(db: Db) -> (Self, Server) {
        Self::with_env(db, Vec::new()).await
    }

    async fn with_env(db: Db, env: Vec<(&'static str, String)>) -> (Self, Server) {
        let db = TestDb::new(db).await;
        let dir = tempfile::tempdir().unwrap();
        let settled_within = if env.is_empty() {
            SETTLED_WITHIN
        } else {
            STRIPE_SETTLED_WITHIN
        };
        let mut drill = Drill {
            db,
            dir,
            key: String::new(),
            http: reqwest::Client::new(),
            env,
            settled_within,
        };
        let mut server = drill.start(None).await;
        drill.key = binary::first_run_key(&mut server).await;
        (drill, server)
    }

    /// The binary over the drill's database, aborting at `fault` if given.
    async fn start(&self, fault: Option<&str>) -> Server {
        let mut cmd = binary::command(self.dir.path());
        cmd.env("DATABASE_URL", &self.db.url)
            .env("HEPHAESTUS_RATE_LIMIT", "off");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        match fault {
            Some(f) => cmd.env("HEPHAESTUS_FAULT_ABORT", f),
            None => cmd.env_remove("HEPHAESTUS_FAULT_ABORT"),
        };
        binary::start_command(cmd).await
    }

    async fn post(&self, server: &Server, path: &str, body: &Value, idem: Option<&str>) -> Reply {
        self.try_post(server, path, body, idem)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn try_post(
        &self,
        server: &Server,
        path: &str,
        body: &Value,
        idem: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{}{path}", server.base))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        Ok(Reply::from(req.send().await?).await)
    }

    async fn customer(&self, server: &Server) -> String {
        let r = self
            .post(
                server,
                "/api/v1/revenue/customers",
                &json!({"email": "drill@example.com"}),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn count(&self, table: &str) -> i64 {
        let store = self.db.store().await;
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n = hephaestus_store::with_read!(&store, |e| sqlx::query_scalar::<_, i64>(
            sqlx::AssertSqlSafe(sql)
        )
        .fetch_one(e)
        .await)
        .unwrap();
        store.close().await;
        n
    }

    /// Retries `body` under `key` until it is answered with something other than
    /// `idempotency_key_in_use`, and says how long that took.
    async fn retry(
        &self,
        server: &Server,
        path: &str,
        body: &Value,
        key: &str,
    ) -> (Reply, Duration) {
        let start = Instant::now();
        loop {
            let r = self.post(server, path, body, Some(key)).await;
            if r.code() != "idempotency_key_in_use" {
                return (r, start.elapsed());
            }
            assert!(
                start.elapsed() < self.settled_within,
                "the interrupted request was not settled within {:?}",
                self.settled_within
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let start = Instant::now();
        while !done().await {
            assert!(
                start.elapsed() < SETTLED_WITHIN,
                "{what}: not within {SETTLED_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits for a process that aborts itself (a drill's fault) to be gone.
async fn died(mut server: Server) {
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("the host did not die at its fault")
        .unwrap();
    assert!(!status.success(), "the host exited cleanly: {status}");
}

async fn kill_9(mut server: Server) {
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
}

fn payment_body(customer: &str, amount: &str) -> Value {
    json!({"customer_id": customer, "amount": amount, "currency": "usd",
           "payment_method": "pm_card_visa", "description": "drill"})
}

/// Starts a drill whose host aborts at `fault`, makes a customer on a host without one, and
/// sends `body` to the faulty host, which dies without answering.
async fn interrupted(db: Db, fault: &str, key: &str) -> (Drill, String, Value) {
    let (drill, first) = Drill::new(db).await;
    let customer = drill.customer(&first).await;
    kill_9(first).await;
    let faulty = drill.start(Some(fault)).await;
    let body = payment_body(&customer, "42.00");
    let r = drill
        .try_post(&faulty, "/api/v1/revenue/payments", &body, Some(key))
        .await;
    assert!(
        r.is_err(),
        "the host answered instead of dying: {:?}",
        r.ok()
    );
    died(faulty).await;
    (drill, customer, body)
}

async fn a_charge_made_just_before_the_host_died_is_recorded_for_its_retry(db: Db) {
    let (drill, customer, body) = interrupted(db, "after_gateway_call:1", "crash-after").await;
    // The gateway charged; nothing of ours says so yet, but the attempt.
    assert_eq!(drill.count("sandbox_charges").await, 1);
    assert_eq!(drill.count("payments").await, 0);
    assert_eq!(drill.count("gateway_attempts").await, 1);

    let server = drill.start(None).await;
    let (r, waited) = drill
        .retry(&server, "/api/v1/revenue/payments", &body, "crash-after")
        .await;
    eprintln!("{db:?}: the retry was served {waited:?} after the restart");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["amount"], json!(42.00));
    assert_eq!(r.body["customer_id"], customer.as_str());
    let id = r.body["id"].as_str().unwrap().to_string();

    // Recorded once, as the request would have: the payment, its event, its audit entry.
    assert_eq!(drill.count("payments").await, 1);
    assert_eq!(drill.count("sandbox_charges").await, 1);
    assert_eq!(drill.count("gateway_attempts").await, 0);
    assert_eq!(
        drill.count("events WHERE type = 'payment.succeeded'").await,
        1
    );
    // Audited twice: the interrupted request (by recovery) and the retry that read it.
    assert_eq!(
        drill
            .count("audit_log WHERE path = '/api/v1/revenue/payments' AND status = 201")
            .await,
        2
    );
    // The gateway's charge is the one recorded.
    let charge_id: String = {
        let store = drill.db.store().await;
        let id = hephaestus_store::with_read!(&store, |e| sqlx::query_scalar(
            "SELECT id FROM sandbox_charges"
        )
        .fetch_one(e)
        .await)
        .unwrap();
        store.close().await;
        id
    };
    assert_eq!(r.body["gateway_id"], charge_id.as_str());
    // And every later retry replays it.
    let again = drill
        .post(
            &server,
            "/api/v1/revenue/payments",
            &body,
            Some("crash-after"),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.headers["idempotent-replayed"], "true");
}

async fn a_charge_made_just_before_the_host_died_is_recorded_without_a_retry(db: Db) {
    let (drill, _customer, body) = interrupted(db, "after_gateway_call:1", "never-retried").await;
    let server = drill.start(None).await;
    // Nobody asks: recovery finds the call on its own.
    drill
        .wait_until("the orphaned charge recorded", async || {
            drill.count("payments").await == 1
        })
        .await;
    assert_eq!(drill.count("gateway_attempts").await, 0);
    assert_eq!(
        drill.count("events WHERE type = 'payment.succeeded'").await,
        1
    );
    // A retry after all is answered from the record recovery stored for the key.
    let r = drill
        .post(
            &server,
            "/api/v1/revenue/payments",
            &body,
            Some("never-retried"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(drill.count("payments").await, 1);
    assert_eq!(drill.count("sandbox_charges").await, 1);
}

async fn a_call_the_gateway_never_got_is_released_and_its_retry_charges_once(db: Db) {
    let (drill, _customer, body) = interrupted(db, "before_gateway_call:1", "crash-before").await;
    assert_eq!(drill.count("sandbox_charges").await, 0);
    assert_eq!(drill.count("gateway_attempts").await, 1);

    let server = drill.start(None).await;
    let (r, waited) = drill
        .retry(&server, "/api/v1/revenue/payments", &body, "crash-before")
        .await;
    eprintln!("{db:?}: the retry ran afresh {waited:?} after the restart");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(drill.count("sandbox_charges").await, 1);
    assert_eq!(drill.count("payments").await, 1);
    assert_eq!(drill.count("gateway_attempts").await, 0);
}

async fn a_refund_made_just_before_the_host_died_is_recorded(db: Db) {
    let (drill, first) = Drill::new(db).await;
    let customer = drill.customer(&first).await;
    let paid = drill
        .post(
            &first,
            "/api/v1/revenue/payments",
            &payment_body(&customer, "30.00"),
            None,
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let path = format!(
        "/api/v1/revenue/payments/{}/refunds",
        paid.body["id"].as_str().unwrap()
    );
    kill_9(first).await;

    let faulty = drill.start(Some("after_gateway_call:1")).await;
    let body = json!({"amount": "12.50", "reason": "requested_by_customer"});
    let r = drill
        .try_post(&faulty, &path, &body, Some("refund-crash"))
        .await;
    assert!(r.is_err(), "the host answered instead of dying");
    died(faulty).await;
    assert_eq!(drill.count("sandbox_refunds").await, 1);
    assert_eq!(drill.count("refunds").await, 0);

    let server = drill.start(None).await;
    let (r, _) = drill.retry(&server, &path, &body, "refund-crash").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount"], json!(12.50));
    assert_eq!(drill.count("refunds").await, 1);
    assert_eq!(drill.count("sandbox_refunds").await, 1);
    assert_eq!(drill.count("events WHERE type = 'refund.created'").await, 1);
    let payment = server_get(&drill, &server, paid.body["id"].as_str().unwrap()).await;
    assert_eq!(payment["amount_refunded"], json!(12.50));
    assert_eq!(payment["status"], "partially_refunded");
}

async fn a_subscription_whose_first_charge_outlived_its_host_starts_on_retry(db: Db) {
    let (drill, first) = Drill::new(db).await;
    let customer = drill.customer(&first).await;
    let product = drill
        .post(
            &first,
            "/api/v1/revenue/products",
            &json!({"name": "Pro"}),
            None,
        )
        .await;
    assert_eq!(product.status, StatusCode::CREATED, "{}", product.body);
    let price = drill
        .post(
            &first,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "usd",
                    "unit_amount": 29, "recurring": {"interval": "month"}}),
            None,
        )
        .await;
    assert_eq!(price.status, StatusCode::CREATED, "{}", price.body);
    kill_9(first).await;

    let faulty = drill.start(Some("after_gateway_call:1")).await;
    let body = json!({"customer_id": customer, "price_id": price.body["id"],
                      "payment_method": "pm_card_visa"});
    let r = drill
        .try_post(
            &faulty,
            "/api/v1/revenue/subscriptions",
            &body,
            Some("sub-crash"),
        )
        .await;
    assert!(r.is_err(), "the host answered instead of dying");
    died(faulty).await;
    assert_eq!(drill.count("sandbox_charges").await, 1);
    assert_eq!(drill.count("subscriptions").await, 0);

    let server = drill.start(None).await;
    let (r, _) = drill
        .retry(&server, "/api/v1/revenue/subscriptions", &body, "sub-crash")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["latest_invoice"]["status"], "paid");
    assert_eq!(drill.count("subscriptions").await, 1);
    assert_eq!(drill.count("payments").await, 1);
    assert_eq!(drill.count("sandbox_charges").await, 1);
    assert_eq!(
        drill
            .count("events WHERE type = 'subscription.created'")
            .await,
        1
    );
    assert_eq!(drill.count("gateway_attempts").await, 0);
}

async fn server_get(drill: &Drill, server: &Server, payment: &str) -> Value {
    let resp = drill
        .http
        .get(format!("{}/api/v1/revenue/payments/{payment}", server.base))
        .bearer_auth(&drill.key)
        .send()
        .await
        .unwrap();
    Reply::from(resp).await.body
}

/// Payments from several clients at once, each under its own key, until the host stops
/// answering. Returns every key sent and the payment acknowledged for it, if one was.
async fn load_until_killed(
    drill: &Drill,
    server: &Server,
    customer: &str,
) -> Vec<(String, Value, Option<String>)> {
    let clients = (0..8).map(|c| async move {
        let mut sent = Vec::new();
        for i in 0.. {
            let key = format!("load-{c}-{i}");
            let body = payment_body(customer, &format!("{}.{:02}", 1 + i % 50, c));
            let answer = drill
                .try_post(server, "/api/v1/revenue/payments", &body, Some(&key))
                .await;
            match answer {
                Ok(r) if r.status == StatusCode::CREATED => {
                    sent.push((key, body, Some(r.body["id"].as_str().unwrap().to_string())));
                }
                Ok(r) => panic!("{key}: {} {}", r.status, r.body),
                // The host is gone: this request may or may not have reached it.
                Err(_) => {
                    sent.push((key, body, None));
                    break;
                }
            }
        }
        sent
    });
    futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn kill_9_under_load_leaves_no_charge_without_a_payment(db: Db) {
    let (drill, server) = Drill::new(db).await;
    let customer = drill.customer(&server).await;
    let pid = server.child.id().unwrap().to_string();
    let (sent, ()) = tokio::join!(load_until_killed(&drill, &server, &customer), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed = tokio::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
    });
    drop(server);
    let acked = sent.iter().filter(|(_, _, a)| a.is_some()).count();
    assert!(acked > 0, "no payment was acknowledged before the kill");

    let server = drill.start(None).await;
    // Every key sent, retried: an acknowledged one replays its payment; an interrupted one
    // is answered once recovery settled it, with the charge the gateway made or afresh.
    for (key, body, acked) in &sent {
        let (r, _) = drill
            .retry(&server, "/api/v1/revenue/payments", body, key)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{key}: {}", r.body);
        if let Some(id) = acked {
            assert_eq!(r.body["id"], id.as_str(), "{key}: another payment");
        }
    }
    drill
        .wait_until("every attempt settled", async || {
            drill.count("gateway_attempts").await == 0
        })
        .await;
    let charges = drill.count("sandbox_charges").await;
    let payments = drill.count("payments").await;
    eprintln!(
        "{db:?}: {} keys sent, {acked} acknowledged before the kill, {charges} charges, {payments} payments",
        sent.len(),
    );
    assert_eq!(payments, sent.len() as i64, "one payment per key");
    assert_eq!(
        charges, payments,
        "a charge without a payment, or the reverse"
    );
    assert_eq!(
        drill
            .count("payments p WHERE NOT EXISTS (SELECT 1 FROM sandbox_charges c WHERE c.id = p.gateway_id)")
            .await,
        0,
        "a payment recording no charge of the gateway"
    );
}

async fn a_stripe_charge_made_just_before_the_host_died_is_recorded(db: Db) {
    let stripe = LocalStripe::start().await;
    let env = vec![
        ("STRIPE_SECRET_KEY", crate::stripe::SECRET_KEY.to_string()),
        ("STRIPE_API_BASE", stripe.base.clone()),
    ];
    let (drill, first) = Drill::with_env(db, env).await;
    let customer = drill.customer(&first).await;
    kill_9(first).await;
    let card = stripe.card("4242424242424242").await;
    let body = json!({"customer_id": customer, "amount": "42.00", "currency": "usd",
                      "payment_method": card});

    let faulty = drill.start(Some("after_gateway_call:1")).await;
    let r = drill
        .try_post(
            &faulty,
            "/api/v1/revenue/payments",
            &body,
            Some("stripe-crash"),
        )
        .await;
    assert!(r.is_err(), "the host answered instead of dying");
    died(faulty).await;
    let intents = stripe.intents().await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(drill.count("payments").await, 0);

    let server = drill.start(None).await;
    let (r, waited) = drill
        .retry(&server, "/api/v1/revenue/payments", &body, "stripe-crash")
        .await;
    eprintln!("{db:?}: the Stripe charge was recorded for its retry {waited:?} after the restart");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["gateway"], "stripe");
    assert_eq!(r.body["gateway_id"], intents[0]["id"]);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(stripe.intents().await.len(), 1, "charged again");
    assert_eq!(drill.count("payments").await, 1);
    assert_eq!(drill.count("gateway_attempts").await, 0);
}

async fn stripe_down_then_back_answers_503_and_charges_once(db: Db) {
    let mut stripe = LocalStripe::start().await;
    let s = crate::stripe::server(db, stripe.gateway_args()).await;
    let customer = crate::stripe::customer(&s, "outage@example.com").await;
    let card = stripe.card("4242424242424242").await;
    let body = json!({"customer_id": customer, "amount": "19.99", "currency": "usd",
                      "payment_method": card});

    stripe.stop().await;
    let started = Instant::now();
    let r = s
        .post(
            &s.admin,
            "/api/v1/revenue/payments",
            &body,
            Some("outage-1"),
        )
        .await;
    let answered_in = started.elapsed();
    eprintln!(
        "{db:?}: with Stripe down a payment was answered {} in {answered_in:?}",
        r.status
    );
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.code(), "service_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(answered_in < Duration::from_secs(5), "{answered_in:?}");
    assert_eq!(s.count("payments").await, 0);

    stripe.restart().await;
    // The retry runs (the key is released as the 503 is answered) and charges once.
    let r = loop {
        let r = s
            .post(
                &s.admin,
                "/api/v1/revenue/payments",
                &body,
                Some("outage-1"),
            )
            .await;
        if r.code() != "idempotency_key_in_use" || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(stripe.intents().await.len(), 1);
    // The first call's attempt is settled once it can no longer land: the gateway's charge
    // under its key is the retry's, recorded once.
    let deadline = Instant::now() + STRIPE_SETTLED_WITHIN;
    while s.count("gateway_attempts").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the first attempt was never settled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(s.count("payments").await, 1);
    assert_eq!(stripe.intents().await.len(), 1);
}
