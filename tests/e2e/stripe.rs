//! The Stripe gateway end to end: our HTTP API, over the real async-stripe client, against
//! localstripe (PyPI 1.15.10, a Stripe-compatible server started per test by
//! `tests/run_localstripe.py` on a free loopback port, with its state in the test's temp
//! folder), and its signed webhooks received at our endpoint. Answers localstripe cannot give
//! in today's API shape (a decline naming its PaymentIntent and `decline_code`, a 5xx, a rate
//! limit, a pending refund, an expanded charge) come from a stub answering each expected
//! request with a hand-written payload shaped like Stripe's.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use hephaestus::config::GatewayArgs;
use hephaestus_api::ApiConfig;
use hephaestus_billing::gateway::{ChargeRequest, ChargeStatus};
use hephaestus_billing::{erasure, reconcile};
use hephaestus_core::money::{Currency, Money};
use hephaestus_core::secret::Secret;
use hephaestus_store::gateway_ids;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer, test_config};

both_dbs!(
    payments_and_refunds_through_localstripe,
    a_declined_card_is_a_402_naming_the_stored_payment,
    localstripe_webhooks_settle_payments,
    one_key_sent_ten_times_at_once_makes_one_payment_intent,
    reconciliation_and_off_session_charges_through_localstripe,
    stripe_shaped_answers_map_to_our_api,
    erasing_a_customer_deletes_their_stripe_customer,
    answers_that_are_not_stripe_json_are_read_by_their_status,
    a_failed_stripe_erasure_is_retried_until_stripe_has_no_such_customer
);

pub(crate) const SECRET_KEY: &str = "sk_test_hephaestus_e2e";
pub(crate) const WEBHOOK_SECRET: &str = "whsec_localstripe_e2e";
const PAYMENTS: &str = "/api/v1/revenue/payments";

/// Test cards localstripe knows.
pub(crate) const VISA: &str = "4242424242424242";
pub(crate) const DECLINED_ON_CHARGE: &str = "4000000000000341";
const THREE_D_SECURE: &str = "4000002500003155";

/// A localstripe process of this test's own; killed when dropped.
pub(crate) struct LocalStripe {
    pub(crate) base: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl LocalStripe {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = Self::launch(dir.path(), None).await;
        LocalStripe {
            base,
            http: reqwest::Client::new(),
            _child: child,
            _dir: dir,
        }
    }

    /// Runs the launcher over `dir`, on `port` if given; the child and its base URL.
    async fn launch(dir: &std::path::Path, port: Option<u16>) -> (tokio::process::Child, String) {
        let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let launcher = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/run_localstripe.py"
        );
        let log_path = dir.join("localstripe.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(launcher).arg(dir);
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        let mut child = cmd
            // Held open for the life of the process: the launcher exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} (TEST_PYTHON): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) if line.starts_with("listening on 127.0.0.1:") => {
                line["listening on ".len()..].to_string()
            }
            other => panic!(
                "localstripe did not start ({other:?}). The Stripe tests need localstripe==1.15.10 \
                 in the Python that TEST_PYTHON names (tests/run installs it into \
                 target/test-venv). Its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        };
        (child, format!("http://{addr}"))
    }

    /// Takes localstripe down, as an outage would: connections are refused until
    /// [`LocalStripe::restart`].
    pub(crate) async fn stop(&mut self) {
        self._child.start_kill().unwrap();
        self._child.wait().await.unwrap();
    }

    /// Brings localstripe back where it was, with what it held.
    pub(crate) async fn restart(&mut self) {
        let port = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();
        let (child, base) = Self::launch(self._dir.path(), Some(port)).await;
        assert_eq!(base, self.base);
        self._child = child;
    }

    pub(crate) fn gateway_args(&self) -> GatewayArgs {
        stripe_at(self.base.clone())
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req.bearer_auth(SECRET_KEY).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "localstripe answered {status}: {body}");
        body
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// The status localstripe answers a GET of `path` with.
    pub(crate) async fn status(&self, path: &str) -> StatusCode {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Deletes `path` at localstripe directly, as someone using Stripe's dashboard would.
    pub(crate) async fn delete(&self, path: &str) -> Value {
        self.call(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        self.call(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    /// A card PaymentMethod made through localstripe's API, as a browser would.
    pub(crate) async fn card(&self, number: &str) -> String {
        let pm = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        pm["id"].as_str().unwrap().to_string()
    }

    /// Completes 3-D Secure for an intent, as the customer would in the browser.
    async fn authenticate(&self, intent: &str) {
        let pi = self.get(&format!("/v1/payment_intents/{intent}")).await;
        assert_eq!(pi["status"], "requires_action", "{pi}");
        let secret = pi["client_secret"].as_str().unwrap();
        self.post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("client_secret", secret), ("success", "true")],
        )
        .await;
    }

    pub(crate) async fn intents(&self) -> Vec<Value> {
        let list = self.get("/v1/payment_intents?limit=100").await;
        list["data"].as_array().unwrap().clone()
    }

    /// Has localstripe sign and send its events to our webhook endpoint.
    pub(crate) async fn send_webhooks_to(&self, s: &TestServer) {
        let resp = self
            .http
            .post(format!("{}/_config/webhooks/hephaestus", self.base))
            .form(&[
                ("url", s.url("/api/v1/revenue/webhooks/stripe")),
                ("secret", WEBHOOK_SECRET.to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
}

pub(crate) fn stripe_config() -> ApiConfig {
    ApiConfig {
        stripe_webhook_secrets: vec![Secret::new(WEBHOOK_SECRET)],
        ..test_config()
    }
}

/// Our server with the Stripe gateway chosen the way `serve` chooses it.
pub(crate) async fn server(db: Db, args: GatewayArgs) -> TestServer {
    TestServer::start_with_gateway(db, stripe_config(), |store| {
        args.gateway(store).expect("the Stripe gateway")
    })
    .await
}

async fn pay(s: &TestServer, customer: &str, amount: &str, pm: &str, idem: Option<&str>) -> Reply {
    s.post(
        &s.admin,
        PAYMENTS,
        &json!({"customer_id": customer, "amount": amount, "currency": "usd",
                "payment_method": pm, "description": "Pro plan"}),
        idem,
    )
    .await
}

pub(crate) async fn customer(s: &TestServer, email: &str) -> String {
    s.create_customer(email).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) async fn payment(s: &TestServer, id: &str) -> Value {
    let r = s.get(&s.admin, &format!("{PAYMENTS}/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// Polls `check` until it holds, failing with `what` after `secs`.
pub(crate) async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {secs} s)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn payments_and_refunds_through_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "ada@example.com").await;
    let visa = ls.card(VISA).await;

    let r = pay(&s, &c, "97.00", &visa, Some("order-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["gateway"], "stripe");
    assert_eq!(r.body["amount_minor"], 9700);
    let pay_id = r.body["payment_id"].as_str().unwrap().to_string();
    let intent_id = r.body["gateway_id"].as_str().unwrap().to_string();
    assert!(intent_id.starts_with("pi_"), "{intent_id}");

    // What reached Stripe: one confirmed intent, for the customer's mirror.
    let pi = ls.get(&format!("/v1/payment_intents/{intent_id}")).await;
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 9700);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["payment_method"], visa.as_str());
    assert_eq!(pi["description"], "Pro plan");
    assert_eq!(pi["metadata"]["hephaestus_customer_id"], c.as_str());
    assert_eq!(pi["automatic_payment_methods"]["allow_redirects"], "never");
    let mirror = pi["customer"].as_str().unwrap().to_string();
    let stripe_customer = ls.get(&format!("/v1/customers/{mirror}")).await;
    assert_eq!(stripe_customer["email"], "ada@example.com");
    assert_eq!(
        stripe_customer["metadata"]["hephaestus_customer_id"],
        c.as_str()
    );

    // A second payment uses the same mirror; a second customer gets their own.
    let r = pay(&s, &c, "3.50", &ls.card(VISA).await, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let second = ls
        .get(&format!(
            "/v1/payment_intents/{}",
            r.body["gateway_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(second["customer"], mirror.as_str());
    let other = customer(&s, "grace@example.com").await;
    let r = pay(&s, &other, "1.00", &ls.card(VISA).await, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let customers = ls.get("/v1/customers?limit=100").await;
    let mirrors: Vec<&Value> = customers["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["metadata"]["hephaestus_customer_id"].is_string())
        .collect();
    assert_eq!(mirrors.len(), 2, "{customers}");
    assert_eq!(s.count("gateway_customers").await, 2);

    // Partial, then full refunds: each one a Refund at Stripe, for what is left.
    let refunds = format!("{PAYMENTS}/{pay_id}/refunds");
    let r = s
        .post(
            &s.admin,
            &refunds,
            &json!({"amount": "25.00"}),
            Some("refund-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount_minor"], 2500);
    assert_eq!(r.body["status"], "succeeded");
    let at_stripe = ls
        .get(&format!("/v1/refunds?payment_intent={intent_id}"))
        .await;
    assert_eq!(
        at_stripe["data"].as_array().unwrap().len(),
        1,
        "{at_stripe}"
    );
    assert_eq!(at_stripe["data"][0]["amount"], 2500);
    assert_eq!(payment(&s, &pay_id).await["status"], "partially_refunded");

    let r = s.post(&s.admin, &refunds, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["amount_minor"], 7200);
    let p = payment(&s, &pay_id).await;
    assert_eq!(p["status"], "refunded");
    assert_eq!(p["amount_refunded_minor"], 9700);
    assert_eq!(p["refunds"].as_array().unwrap().len(), 2);
    let at_stripe = ls
        .get(&format!("/v1/refunds?payment_intent={intent_id}"))
        .await;
    let total: i64 = at_stripe["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 9700);

    // Nothing is left: refused here, before Stripe is asked.
    let r = s
        .post(&s.admin, &refunds, &json!({"amount": "0.01"}), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        ls.get("/v1/refunds?limit=100").await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The gateway reads the refunded amount back from the intent's charge.
    let gateway = ls.gateway_args().gateway(&s.store).unwrap();
    let charge = gateway.fetch(intent_id.clone()).await.unwrap().unwrap();
    assert_eq!(charge.status, ChargeStatus::Succeeded);
    assert_eq!(charge.amount_refunded_minor, 9700);
    assert_eq!(charge.id, intent_id);
}

async fn a_declined_card_is_a_402_naming_the_stored_payment(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "declined@example.com").await;

    let card = ls.card(DECLINED_ON_CHARGE).await;
    let r = pay(&s, &c, "20.00", &card, Some("declined-1")).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "card_declined");
    assert_eq!(r.body["error"]["decline_code"], "generic_decline");
    assert_eq!(r.body["error"]["message"], "Your card was declined.");
    let id = r.body["error"]["payment_id"].as_str().unwrap().to_string();
    let p = payment(&s, &id).await;
    assert_eq!(p["status"], "failed");
    assert_eq!(p["gateway"], "stripe");
    assert_eq!(p["decline_code"], "generic_decline");
    let intent = p["gateway_id"].as_str().unwrap();
    let pi = ls.get(&format!("/v1/payment_intents/{intent}")).await;
    assert_eq!(pi["status"], "requires_payment_method");
    assert_eq!(pi["last_payment_error"]["code"], "card_declined");
    assert_eq!(pi["metadata"]["hephaestus_customer_id"], c.as_str());

    // The same request again is the same answer, replayed: Stripe is not asked twice.
    let again = pay(&s, &c, "20.00", &card, Some("declined-1")).await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED, "{}", again.body);
    assert_eq!(again.body["error"]["payment_id"], id.as_str());
    assert_eq!(ls.intents().await.len(), 1);

    // A payment method Stripe does not know is the caller's mistake, and stores nothing.
    let r = pay(&s, &c, "20.00", "pm_nonexistent", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(s.count("payments").await, 1);

    // The sandbox's test controls are not there while Stripe is the gateway.
    let r = s
        .post(
            &s.admin,
            &format!("/api/v1/sandbox/payments/{id}/authenticate"),
            &json!({"outcome": "succeed"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

/// The events the webhook worker finished, as `(type, object id, status)`.
pub(crate) async fn inbox(s: &TestServer) -> Vec<(String, String, String)> {
    let r = s
        .get(&s.admin, "/api/v1/revenue/webhooks/events?limit=100")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object_id"].as_str().unwrap_or("").to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn domain_events(s: &TestServer, customer: &str) -> Vec<(String, String)> {
    s.customer_events(customer)
        .await
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["payment_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn localstripe_webhooks_settle_payments(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    ls.send_webhooks_to(&s).await;
    let c = customer(&s, "hooks@example.com").await;

    let ok = pay(&s, &c, "10.00", &ls.card(VISA).await, None).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let declined = pay(&s, &c, "11.00", &ls.card(DECLINED_ON_CHARGE).await, None).await;
    assert_eq!(
        declined.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        declined.body
    );
    let secure = pay(&s, &c, "12.00", &ls.card(THREE_D_SECURE).await, None).await;
    assert_eq!(secure.status, StatusCode::CREATED, "{}", secure.body);
    assert_eq!(secure.body["status"], "requires_action");

    let ok_id = ok.body["payment_id"].as_str().unwrap().to_string();
    let declined_id = declined.body["error"]["payment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secure_id = secure.body["payment_id"].as_str().unwrap().to_string();
    let ok_pi = ok.body["gateway_id"].as_str().unwrap().to_string();
    let declined_pi = payment(&s, &declined_id).await["gateway_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secure_pi = secure.body["gateway_id"].as_str().unwrap().to_string();

    // The customer completes 3-D Secure at Stripe; only Stripe's signed webhook tells us.
    ls.authenticate(&secure_pi).await;
    eventually(
        20,
        "the 3-D Secure payment never became succeeded",
        || async { payment(&s, &secure_id).await["status"] == "succeeded" },
    )
    .await;

    let expected = [
        ("payment_intent.succeeded", ok_pi.as_str()),
        ("payment_intent.payment_failed", declined_pi.as_str()),
        ("payment_intent.succeeded", secure_pi.as_str()),
    ];
    eventually(
        20,
        "localstripe's events were not all processed",
        || async {
            let seen = inbox(&s).await;
            expected.iter().all(|(kind, object)| {
                seen.iter()
                    .any(|(k, o, st)| k == kind && o == object && st == "processed")
            })
        },
    )
    .await;
    // localstripe also reports the customer mirror's creation: stored, and not acted on.
    let seen = inbox(&s).await;
    assert!(
        seen.iter()
            .any(|(k, _, st)| k == "customer.created" && st == "ignored"),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(_, _, st)| st != "failed"), "{seen:?}");

    // Final states: each payment where its events put it, nothing counted twice.
    assert_eq!(payment(&s, &ok_id).await["status"], "succeeded");
    let failed = payment(&s, &declined_id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["decline_code"], "generic_decline");
    assert_eq!(failed["failure_message"], "Your card was declined.");
    let events = domain_events(&s, &c).await;
    let count = |kind: &str, id: &str| events.iter().filter(|(k, p)| k == kind && p == id).count();
    assert_eq!(count("payment.succeeded", &ok_id), 1, "{events:?}");
    assert_eq!(count("payment.failed", &declined_id), 1, "{events:?}");
    assert_eq!(
        count("payment.requires_action", &secure_id),
        1,
        "{events:?}"
    );
    assert_eq!(count("payment.succeeded", &secure_id), 1, "{events:?}");
}

async fn one_key_sent_ten_times_at_once_makes_one_payment_intent(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "once@example.com").await;
    let pm = ls.card(VISA).await;

    let replies =
        futures::future::join_all((0..10).map(|_| pay(&s, &c, "42.00", &pm, Some("checkout-42"))))
            .await;
    let mut ids = Vec::new();
    for r in &replies {
        match r.status {
            StatusCode::CREATED => ids.push(r.body["payment_id"].as_str().unwrap().to_string()),
            StatusCode::CONFLICT => assert_eq!(r.code(), "idempotency_key_in_use", "{}", r.body),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(!ids.is_empty());
    // Once it is done, the key answers with the first response.
    let last = pay(&s, &c, "42.00", &pm, Some("checkout-42")).await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.body);
    assert_eq!(
        last.headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    ids.push(last.body["payment_id"].as_str().unwrap().to_string());
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let intents = ls.intents().await;
    assert_eq!(intents.len(), 1, "one PaymentIntent at Stripe: {intents:?}");
    assert_eq!(intents[0]["amount"], 4200);
    assert_eq!(s.count("payments").await, 1);
}

async fn reconciliation_and_off_session_charges_through_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks: only reconciliation can learn what happened at Stripe.
    let s = server(db, ls.gateway_args()).await;
    let gateway = ls.gateway_args().gateway(&s.store).unwrap();
    assert_eq!(gateway.name(), "stripe");
    let c = customer(&s, "reconcile@example.com").await;

    let r = pay(&s, &c, "30.00", &ls.card(THREE_D_SECURE).await, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "requires_action");
    let id = r.body["payment_id"].as_str().unwrap().to_string();
    ls.authenticate(r.body["gateway_id"].as_str().unwrap())
        .await;
    assert_eq!(payment(&s, &id).await["status"], "requires_action");

    let report = reconcile::reconcile(&s.store, gateway.as_ref(), 0, 100)
        .await
        .unwrap();
    assert_eq!((report.checked, report.updated, report.failed), (1, 1, 0));
    assert_eq!(payment(&s, &id).await["status"], "succeeded");
    let events = domain_events(&s, &c).await;
    assert_eq!(
        events
            .iter()
            .filter(|(k, p)| k == "payment.succeeded" && p == &id)
            .count(),
        1
    );
    assert!(
        gateway
            .fetch("pi_unknown00000".into())
            .await
            .unwrap()
            .is_none()
    );

    // Off-session (a renewal): a card that needs the customer is declined, not left waiting.
    let usd = Currency::parse("usd", "currency").unwrap();
    let charge = |pm: String, off_session: bool, key: &str| ChargeRequest {
        customer_id: c.clone(),
        amount: Money {
            minor: 1500,
            currency: usd,
        },
        payment_method: pm,
        description: None,
        idempotency_key: key.to_string(),
        off_session,
    };
    let away = gateway
        .charge(charge(ls.card(THREE_D_SECURE).await, true, "renewal-1"))
        .await
        .unwrap();
    assert_eq!(away.status, ChargeStatus::Declined);
    assert_eq!(
        away.decline_code.as_deref(),
        Some("authentication_required")
    );
    assert!(away.id.starts_with("pi_"));
    let declined = gateway
        .charge(charge(ls.card(DECLINED_ON_CHARGE).await, true, "renewal-2"))
        .await
        .unwrap();
    assert_eq!(declined.status, ChargeStatus::Declined);
    assert_eq!(declined.decline_code.as_deref(), Some("generic_decline"));
    let intent = ls
        .get(&format!("/v1/payment_intents/{}", declined.id))
        .await;
    assert_eq!(intent["amount"], 1500);
}

/// Settings that point the Stripe gateway at the Stripe-compatible server at `base`.
pub(crate) fn stripe_at(base: String) -> GatewayArgs {
    GatewayArgs {
        stripe_secret_key: Some(Secret::new(SECRET_KEY)),
        stripe_api_base: Some(base),
    }
}

/// Checks that no event the webhook worker took failed.
pub(crate) async fn no_event_failed(s: &TestServer) {
    let seen = inbox(s).await;
    assert!(seen.iter().all(|(_, _, st)| st != "failed"), "{seen:?}");
}

/// One request the stub expects, and its answer.
pub(crate) struct Expect {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// A request the stub answers with a 200 and `body`.
pub(crate) fn ok(method: &'static str, path: &'static str, body: Value) -> Expect {
    Expect {
        method,
        path,
        status: 200,
        body,
    }
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) form: HashMap<String, String>,
}

#[derive(Default)]
pub(crate) struct Script {
    pub(crate) expected: VecDeque<Expect>,
    pub(crate) seen: Vec<Seen>,
    pub(crate) mismatches: Vec<String>,
}

pub(crate) type Stub = Arc<Mutex<Script>>;

/// Answers each request with the next expected answer, in order, recording what came.
async fn stub_handler(State(stub): State<Stub>, req: Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        idempotency_key: parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        form: form_urlencoded::parse(&body).into_owned().collect(),
    };
    let mut script = stub.lock().unwrap();
    script.seen.push(seen.clone());
    let Some(next) = script.expected.pop_front() else {
        script
            .mismatches
            .push(format!("unexpected {} {}", seen.method, seen.path));
        return (AxumStatus::IM_A_TEAPOT, "no more answers").into_response();
    };
    if next.method != seen.method || next.path != seen.path {
        script.mismatches.push(format!(
            "expected {} {}, got {} {}",
            next.method, next.path, seen.method, seen.path
        ));
    }
    let status = AxumStatus::from_u16(next.status).unwrap();
    match next.body {
        // A body that is not Stripe's JSON: a proxy's page, say.
        Value::String(text) => (status, text).into_response(),
        body => (status, axum::Json(body)).into_response(),
    }
}

pub(crate) async fn start_stub(expected: Vec<Expect>) -> (String, Stub) {
    let stub: Stub = Arc::new(Mutex::new(Script {
        expected: expected.into(),
        ..Script::default()
    }));
    let app = axum::Router::new()
        .fallback(stub_handler)
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, stub)
}

/// A PaymentIntent as Stripe's current API version shapes it (every field async-stripe's
/// own type requires is there, so an error embedding it parses).
fn stripe_intent(id: &str, status: &str, amount: i64, extra: Value) -> Value {
    let mut pi = json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": if status == "succeeded" { amount } else { 0 },
        "application": null, "application_fee_amount": null,
        "automatic_payment_methods": {"allow_redirects": "never", "enabled": true},
        "canceled_at": null, "cancellation_reason": null, "capture_method": "automatic_async",
        "client_secret": format!("{id}_secret_x1y2"), "confirmation_method": "automatic",
        "created": 1_767_225_600, "currency": "usd", "customer": "cus_StubMirror01",
        "description": "Pro plan", "last_payment_error": null, "latest_charge": null,
        "livemode": false, "metadata": {"hephaestus_customer_id": "cus_ours"},
        "next_action": null, "on_behalf_of": null, "payment_method": "pm_1StubCard",
        "payment_method_options": {}, "payment_method_types": ["card"], "processing": null,
        "receipt_email": null, "review": null, "setup_future_usage": null, "shipping": null,
        "statement_descriptor": null, "statement_descriptor_suffix": null, "status": status,
        "transfer_data": null, "transfer_group": null,
    });
    if let (Some(pi), Some(extra)) = (pi.as_object_mut(), extra.as_object()) {
        pi.extend(extra.clone());
    }
    pi
}

pub(crate) fn stripe_customer() -> Value {
    json!({
        "id": "cus_StubMirror01", "object": "customer", "address": null, "balance": 0,
        "created": 1_767_225_600, "currency": null, "default_source": null,
        "delinquent": false, "description": null, "discount": null,
        "email": "stub@example.com", "invoice_prefix": "A1B2C3D4",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null,
                             "footer": null, "rendering_options": null},
        "livemode": false, "metadata": {"hephaestus_customer_id": "cus_ours"},
        "name": null, "next_invoice_sequence": 1, "phone": null,
        "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": null,
    })
}

/// What Stripe answers when it fails on its side (with a 500).
pub(crate) fn stripe_failure() -> Value {
    stripe_error("api_error", None, "An unknown error occurred", json!({}))
}

pub(crate) fn stripe_error(kind: &str, code: Option<&str>, message: &str, extra: Value) -> Value {
    let mut error = json!({"type": kind, "message": message, "code": code,
        "doc_url": code.map(|c| format!("https://docs.stripe.com/error-codes/{c}")),
        "request_log_url": "https://dashboard.stripe.com/test/logs/req_StubLog01"});
    if let (Some(e), Some(extra)) = (error.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    json!({ "error": error })
}

async fn stripe_shaped_answers_map_to_our_api(db: Db) {
    let declined_intent = stripe_intent(
        "pi_3StubDeclined",
        "requires_payment_method",
        1999,
        json!({"last_payment_error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds.",
            "charge": "ch_3StubDeclined"}, "latest_charge": "ch_3StubDeclined"}),
    );
    let (base, stub) = start_stub(vec![
        // First charge of this customer: the mirror, then a decline in today's shape.
        Expect {
            method: "POST",
            path: "/v1/customers",
            status: 200,
            body: stripe_customer(),
        },
        Expect {
            method: "POST",
            path: "/v1/payment_intents",
            status: 402,
            body: stripe_error(
                "card_error",
                Some("card_declined"),
                "Your card has insufficient funds.",
                json!({"decline_code": "insufficient_funds", "charge": "ch_3StubDeclined",
                       "payment_intent": declined_intent}),
            ),
        },
        // Stripe fails, then answers the retry of the same request.
        Expect {
            method: "POST",
            path: "/v1/payment_intents",
            status: 500,
            body: stripe_failure(),
        },
        Expect {
            method: "POST",
            path: "/v1/payment_intents",
            status: 200,
            body: stripe_intent(
                "pi_3StubPaid",
                "succeeded",
                5000,
                json!({"latest_charge": "ch_3StubPaid"}),
            ),
        },
        Expect {
            method: "POST",
            path: "/v1/payment_intents",
            status: 429,
            body: stripe_error(
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
                json!({}),
            ),
        },
        Expect {
            method: "POST",
            path: "/v1/payment_intents",
            status: 400,
            body: stripe_error(
                "invalid_request_error",
                Some("resource_missing"),
                "No such PaymentMethod: 'pm_gone'",
                json!({"param": "payment_method"}),
            ),
        },
        Expect {
            method: "POST",
            path: "/v1/refunds",
            status: 200,
            body: json!({"id": "re_3StubPending", "object": "refund", "amount": 500,
                "balance_transaction": null, "charge": "ch_3StubPaid", "created": 1_767_225_700,
                "currency": "usd", "destination_details": null, "metadata": {},
                "payment_intent": "pi_3StubPaid", "reason": null, "receipt_number": null,
                "source_transfer_reversal": null, "status": "pending",
                "transfer_reversal": null}),
        },
        // Reconciliation's view: the intent with its charge expanded.
        Expect {
            method: "GET",
            path: "/v1/payment_intents/pi_3StubPaid",
            status: 200,
            body: stripe_intent(
                "pi_3StubPaid",
                "succeeded",
                5000,
                json!({"latest_charge": {
                "id": "ch_3StubPaid", "object": "charge", "amount": 5000,
                "amount_captured": 5000, "amount_refunded": 500, "captured": true,
                "currency": "usd", "paid": true, "payment_intent": "pi_3StubPaid",
                "refunded": false, "status": "succeeded"}}),
            ),
        },
        Expect {
            method: "GET",
            path: "/v1/payment_intents/pi_3StubMissing",
            status: 404,
            body: stripe_error(
                "invalid_request_error",
                Some("resource_missing"),
                "No such payment_intent: 'pi_3StubMissing'",
                json!({"param": "intent"}),
            ),
        },
    ])
    .await;
    let args = stripe_at(base);
    let s = server(db, args.clone()).await;
    let c = customer(&s, "stub@example.com").await;

    let r = pay(&s, &c, "19.99", "pm_1StubCard", Some("stub-declined")).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "card_declined");
    assert_eq!(r.body["error"]["decline_code"], "insufficient_funds");
    assert_eq!(
        r.body["error"]["message"],
        "Your card has insufficient funds."
    );
    let failed = payment(&s, r.body["error"]["payment_id"].as_str().unwrap()).await;
    assert_eq!(failed["gateway_id"], "pi_3StubDeclined");
    assert_eq!(failed["status"], "failed");

    let r = pay(&s, &c, "50.00", "pm_1StubCard", Some("stub-paid")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.code(), "service_unavailable");
    let r = pay(&s, &c, "50.00", "pm_1StubCard", Some("stub-paid")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["gateway_id"], "pi_3StubPaid");
    let paid_id = r.body["payment_id"].as_str().unwrap().to_string();

    let r = pay(&s, &c, "1.00", "pm_1StubCard", None).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "rate limited: {}",
        r.body
    );
    let r = pay(&s, &c, "1.00", "pm_gone", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(r.field(), Some("payment_method"));
    assert_eq!(
        r.body["error"]["message"],
        "No such PaymentMethod: 'pm_gone'"
    );

    let r = s
        .post(
            &s.admin,
            &format!("{PAYMENTS}/{paid_id}/refunds"),
            &json!({"amount": "5.00", "reason": "requested_by_customer"}),
            Some("stub-refund"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["amount_minor"], 500);

    let gateway = args.gateway(&s.store).unwrap();
    let charge = gateway.fetch("pi_3StubPaid".into()).await.unwrap().unwrap();
    assert_eq!(charge.status, ChargeStatus::Succeeded);
    assert_eq!(charge.amount_refunded_minor, 500);
    assert_eq!(charge.amount.minor, 5000);
    assert!(
        gateway
            .fetch("pi_3StubMissing".into())
            .await
            .unwrap()
            .is_none()
    );

    // What Stripe was sent.
    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
    let seen = &script.seen;
    assert_eq!(seen.len(), 9, "{seen:?}");
    let customer_key = format!("hephaestus-customer-{c}");
    assert_eq!(
        seen[0].idempotency_key.as_deref(),
        Some(customer_key.as_str())
    );
    assert_eq!(
        seen[0].form.get("email").map(String::as_str),
        Some("stub@example.com")
    );
    assert_eq!(
        seen[0].form.get("metadata[hephaestus_customer_id]"),
        Some(&c)
    );
    let create = &seen[1].form;
    assert_eq!(create.get("amount").map(String::as_str), Some("1999"));
    assert_eq!(create.get("currency").map(String::as_str), Some("usd"));
    assert_eq!(
        create.get("customer").map(String::as_str),
        Some("cus_StubMirror01")
    );
    assert_eq!(
        create.get("payment_method").map(String::as_str),
        Some("pm_1StubCard")
    );
    assert_eq!(create.get("confirm").map(String::as_str), Some("true"));
    assert_eq!(
        create.get("description").map(String::as_str),
        Some("Pro plan")
    );
    assert_eq!(
        create
            .get("automatic_payment_methods[allow_redirects]")
            .map(String::as_str),
        Some("never")
    );
    assert!(!create.contains_key("off_session"), "{create:?}");
    // Every charge and refund carried a key derived from the request's own; the retried
    // request carried the same one, so Stripe answers it with its first result.
    let keys: Vec<&str> = seen[1..7]
        .iter()
        .map(|r| r.idempotency_key.as_deref().expect("an Idempotency-Key"))
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("hk-") || k.starts_with("hk_")),
        "{keys:?}"
    );
    assert_eq!(keys[1], keys[2], "a retry sends the same key");
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[2], keys[3]);
    assert_ne!(keys[3], keys[4]);
    assert_eq!(seen[6].path, "/v1/refunds");
    assert_eq!(
        seen[6].form.get("payment_intent").map(String::as_str),
        Some("pi_3StubPaid")
    );
    assert_eq!(seen[6].form.get("amount").map(String::as_str), Some("500"));
    assert_eq!(
        seen[6].form.get("reason").map(String::as_str),
        Some("requested_by_customer"),
        "the refund's reason reaches Stripe"
    );
    assert!(seen[7].query.contains("latest_charge"), "{:?}", seen[7]);
    assert_eq!(seen[7].idempotency_key, None);
    // The mirror was created once and remembered.
    assert_eq!(seen.iter().filter(|r| r.path == "/v1/customers").count(), 1);
}

/// `serve` picks Stripe when `STRIPE_SECRET_KEY` is set, talks to `STRIPE_API_BASE`, and
/// refuses malformed Stripe settings by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_charges_through_stripe_when_a_key_is_set() {
    let ls = LocalStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, value, named) in [
        (
            "STRIPE_SECRET_KEY",
            "pk_test_publishable",
            "--stripe-secret-key",
        ),
        ("STRIPE_API_BASE", "localhost:12111", "--stripe-api-base"),
    ] {
        let out = crate::binary::command(dir.path())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("STRIPE_SECRET_KEY", SECRET_KEY)
            .env(name, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} started");
        assert!(stderr.contains(named), "{name}={value}: {stderr}");
        assert!(
            !stderr.contains(SECRET_KEY),
            "the secret key is never printed"
        );
    }

    let mut cmd = crate::binary::command(dir.path());
    cmd.env("STRIPE_SECRET_KEY", SECRET_KEY)
        .env("STRIPE_API_BASE", &ls.base);
    let mut server = crate::binary::start_command(cmd).await;
    let key = crate::binary::first_run_key(&mut server).await;
    let http = reqwest::Client::new();
    let c: Value = http
        .post(format!("{}/api/v1/revenue/customers", server.base))
        .bearer_auth(&key)
        .json(&json!({"email": "binary@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .post(format!("{}{PAYMENTS}", server.base))
        .bearer_auth(&key)
        .json(
            &json!({"customer_id": c["id"], "amount": "8.00", "currency": "eur",
                      "payment_method": ls.card(VISA).await}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["gateway"], "stripe");
    let intents = ls.intents().await;
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["id"], p["gateway_id"]);
    assert_eq!(intents[0]["currency"], "eur");
    assert_eq!(intents[0]["amount"], 800);
}

/// Where the erasure of the customer's Stripe mirror stands.
async fn erasure_of(s: &TestServer, customer: &str) -> gateway_ids::ErasureState {
    gateway_ids::erasure_state(&s.store, "stripe", customer)
        .await
        .unwrap()
        .expect("the customer has a Stripe mirror")
}

async fn erasing_a_customer_deletes_their_stripe_customer(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "forget-me@example.com").await;
    let r = pay(&s, &c, "5.00", &ls.card(VISA).await, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let pi = ls
        .get(&format!(
            "/v1/payment_intents/{}",
            r.body["gateway_id"].as_str().unwrap()
        ))
        .await;
    let mirror = format!("/v1/customers/{}", pi["customer"].as_str().unwrap());
    assert_eq!(ls.get(&mirror).await["email"], "forget-me@example.com");
    // Never charged through Stripe: no copy there, nothing to delete.
    let never = customer(&s, "never-charged@example.com").await;

    for id in [&c, &never] {
        let r = s
            .delete(&s.admin, &format!("/api/v1/revenue/customers/{id}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body["erased_at"].is_string(), "{}", r.body);
    }
    eventually(20, "the Stripe customer was never deleted", || async {
        ls.status(&mirror).await == StatusCode::NOT_FOUND
    })
    .await;
    eventually(10, "the deletion was never recorded", || async {
        erasure_of(&s, &c).await.erased_at.is_some()
    })
    .await;
    let state = erasure_of(&s, &c).await;
    assert!(state.erase_requested_at.is_some());
    assert_eq!(state.erase_attempts, 1);
    assert_eq!(state.erase_last_error, None);
    assert_eq!(s.count("gateway_customers").await, 1);

    // Erasing again asks Stripe nothing more.
    let r = s
        .delete(&s.admin, &format!("/api/v1/revenue/customers/{c}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let gateway = ls.gateway_args().gateway(&s.store).unwrap();
    let pass = erasure::run_due(&s.store, gateway.as_ref(), 10)
        .await
        .unwrap();
    assert_eq!(pass, erasure::Report::default());
    assert_eq!(erasure_of(&s, &c).await.erase_attempts, 1);
}

async fn a_failed_stripe_erasure_is_retried_until_stripe_has_no_such_customer(db: Db) {
    let delete = |status, body| Expect {
        method: "DELETE",
        path: "/v1/customers/cus_StubMirror01",
        status,
        body,
    };
    let (base, stub) = start_stub(vec![
        ok("POST", "/v1/customers", stripe_customer()),
        ok(
            "POST",
            "/v1/payment_intents",
            stripe_intent("pi_3StubErased", "succeeded", 500, json!({})),
        ),
        // Stripe fails, then answers the retry that the customer is gone (an earlier
        // deletion whose answer was lost).
        delete(500, stripe_failure()),
        delete(
            404,
            stripe_error(
                "invalid_request_error",
                Some("resource_missing"),
                "No such customer: 'cus_StubMirror01'",
                json!({"param": "id"}),
            ),
        ),
    ])
    .await;
    let args = stripe_at(base);
    let s = server(db, args.clone()).await;
    let c = customer(&s, "stub@example.com").await;
    let r = pay(&s, &c, "5.00", "pm_1StubCard", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .delete(&s.admin, &format!("/api/v1/revenue/customers/{c}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The first attempt, right after the erasure, fails and is recorded.
    eventually(10, "the first attempt was never made", || async {
        let state = erasure_of(&s, &c).await;
        state.erase_attempts == 1 && state.erase_last_error.is_some()
    })
    .await;
    assert_eq!(erasure_of(&s, &c).await.erased_at, None);
    // The next is due after its delay; whichever host's pass makes it, it is made once.
    let gateway = args.gateway(&s.store).unwrap();
    eventually(20, "the erasure was never retried", || async {
        erasure::run_due(&s.store, gateway.as_ref(), 10)
            .await
            .unwrap();
        erasure_of(&s, &c).await.erased_at.is_some()
    })
    .await;
    let state = erasure_of(&s, &c).await;
    assert_eq!(state.erase_attempts, 2);
    assert_eq!(state.erase_last_error, None);

    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
    let key = erasure::idempotency_key(&c);
    for attempt in &script.seen[2..] {
        assert_eq!(attempt.idempotency_key.as_deref(), Some(key.as_str()));
    }
}

/// An error answer whose body is not Stripe's JSON (a proxy's bare 404, a load balancer's
/// 502 page) is read by its HTTP status, like Stripe's own answer of that status.
async fn answers_that_are_not_stripe_json_are_read_by_their_status(db: Db) {
    let text = |status: u16, method, path, body: &str| Expect {
        method,
        path,
        status,
        body: Value::String(body.to_string()),
    };
    let (base, stub) = start_stub(vec![
        ok("POST", "/v1/customers", stripe_customer()),
        text(404, "POST", "/v1/payment_intents", "Not Found"),
        text(
            502,
            "POST",
            "/v1/payment_intents",
            "<html>502 Bad Gateway</html>",
        ),
        text(404, "GET", "/v1/payment_intents/pi_3Gone", "Not Found"),
    ])
    .await;
    let args = stripe_at(base);
    let s = server(db, args.clone()).await;
    let c = customer(&s, "proxy@example.com").await;

    let r = pay(&s, &c, "5.00", "pm_1StubCard", None).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a 404 is not an outage: {}",
        r.body
    );
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("404"),
        "{}",
        r.body
    );
    let r = pay(&s, &c, "5.00", "pm_1StubCard", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.code(), "service_unavailable");
    let gateway = args.gateway(&s.store).unwrap();
    assert!(
        gateway.fetch("pi_3Gone".into()).await.unwrap().is_none(),
        "a bare 404 for an intent means there is no such intent"
    );
    assert_eq!(s.count("payments").await, 0);
    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
}
