//! Subscriptions billed by Stripe, end to end: created, changed and cancelled through our
//! HTTP API with the real async-stripe client against localstripe, and Stripe's events
//! received, signed, at our webhook endpoint.
//!
//! Which calls are covered how:
//! - **localstripe** (1.15.10, patched only to take today's parameter names; see
//!   `tests/run_localstripe.py`): creating the price mirror (a plan with its product),
//!   attaching the payment method and making it the subscription's default, creating a
//!   subscription (paid first invoice, declined first invoice, trial), changing its price
//!   and quantity with `proration_behavior`, cancelling at period end and now, and the events
//!   it sends for them: `customer.subscription.created` / `deleted`, `invoice.created`,
//!   `invoice.payment_succeeded`.
//! - **a stub answering Stripe-shaped payloads**, for the answers localstripe gives in an
//!   older shape or not at all: a 402 card error from creating a subscription (localstripe
//!   answers an `incomplete` one), today's subscription shape (periods and `price` on the
//!   item), and the Idempotency-Key of every step, each derived from the request's key.
//! - **hand-written payloads** shaped like Stripe's own (today's API version), signed by the
//!   official `stripe` Python package: the events localstripe never sends —
//!   `customer.subscription.updated`, `customer.subscription.trial_will_end`,
//!   `invoice.finalized`, `invoice.updated`, `invoice.paid`, `invoice.payment_failed`,
//!   `invoice.voided`, `invoice.marked_uncollectible` — and deliveries it cannot
//!   arrange: `updated` before `created`, the same change twice under new event ids, a
//!   failed attempt arriving after the payment that settled it.

use std::time::Duration;

use hephaestus_billing::stripe_subscriptions::subscription_state;
use hephaestus_billing::subscriptions::{Dunning, advance_clock, run_due};
use hephaestus_billing::{gateway_subscriptions, reconcile};
use hephaestus_core::Timestamp;
use hephaestus_core::subscription::{Subscription, SubscriptionStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer, recurring_price};
use crate::stripe::{
    DECLINED_ON_CHARGE, Expect, LocalStripe, VISA, WEBHOOK_SECRET, customer, eventually, inbox,
    no_event_failed, ok, payment, server, start_stub, stripe_at, stripe_customer, stripe_error,
    stripe_failure,
};
use crate::webhooks::{deliver, dispute_object, event, now_secs, settled, stripe_sign};

both_dbs!(
    subscriptions_are_created_changed_and_cancelled_at_localstripe,
    declined_first_invoices_trials_and_zero_decimal_prices_at_localstripe,
    stripe_subscription_events_in_any_order_are_applied_once,
    stripe_shaped_subscription_answers_and_their_keys,
    stripe_events_from_before_the_hosts_clock_still_apply_after_an_api_change,
    a_new_card_for_one_subscription_leaves_the_customers_others_alone,
    stripe_invoices_are_voided_and_marked_uncollectible,
    stripe_isk_invoice_lines_are_rounded_to_whole_kronur,
    an_answer_is_not_written_over_a_row_that_moved_on_while_it_was_in_flight,
    refunds_and_disputes_of_stripe_invoice_charges_find_their_payment,
    reconciliation_refetches_unsettled_stripe_subscriptions_from_localstripe,
    reconciliation_renews_a_stripe_subscription_whose_renewal_never_came,
    reconciliation_mirrors_stripe_invoices_whose_events_never_came
);

const SUBSCRIPTIONS: &str = "/api/v1/revenue/subscriptions";

/// The customer's domain events, as `(type, data)`.
async fn domain_events(s: &TestServer, customer: &str) -> Vec<(String, Value)> {
    s.customer_events(customer)
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect()
}

fn count(events: &[(String, Value)], kind: &str) -> usize {
    events.iter().filter(|(k, _)| k == kind).count()
}

/// Checks how many events of each kind there are.
fn assert_counts(events: &[(String, Value)], expected: &[(&str, usize)]) {
    for (kind, n) in expected {
        assert_eq!(count(events, kind), *n, "{kind}: {events:?}");
    }
}

async fn invoices(s: &TestServer, sub: &str) -> Vec<Value> {
    let r = s
        .get(
            &s.admin,
            &format!("/api/v1/revenue/invoices?subscription_id={sub}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

/// A subscription started through our API at localstripe, charged to a new card: our id,
/// Stripe's, and the Stripe plan that mirrors `price`.
async fn start_at_localstripe(
    s: &TestServer,
    ls: &LocalStripe,
    customer: &str,
    price: &str,
) -> (String, String, String) {
    let card = ls.card(VISA).await;
    let body = json!({"customer_id": customer, "price_id": price, "payment_method": card});
    start_at_localstripe_with(s, ls, &body).await
}

/// A subscription started through our API at localstripe as `body` asks: our id, Stripe's,
/// and the Stripe plan that mirrors its price.
async fn start_at_localstripe_with(
    s: &TestServer,
    ls: &LocalStripe,
    body: &Value,
) -> (String, String, String) {
    let r = s.post(&s.admin, SUBSCRIPTIONS, body, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let gid = r.body["gateway_id"].as_str().unwrap().to_string();
    let plan = ls.get(&format!("/v1/subscriptions/{gid}")).await["plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (id, gid, plan)
}

async fn subscription(s: &TestServer, id: &str) -> Value {
    let r = s.get(&s.admin, &format!("{SUBSCRIPTIONS}/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn subscriptions_are_created_changed_and_cancelled_at_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    ls.send_webhooks_to(&s).await;
    let c = customer(&s, "subscriber@example.com").await;
    let basic = recurring_price(&s, json!("20.00"), "month", None).await;
    let pro = recurring_price(&s, json!("30.00"), "month", None).await;
    let pm = ls.card(VISA).await;

    let body = json!({"customer_id": c, "price_id": basic, "quantity": 2, "payment_method": pm,
                      "metadata": {"order": "A-17"}});
    let r = s.post(&s.admin, SUBSCRIPTIONS, &body, Some("sub-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["gateway"], "stripe");
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["quantity"], 2);
    let id = r.body["id"].as_str().unwrap().to_string();
    let gid = r.body["gateway_id"].as_str().unwrap().to_string();
    assert!(gid.starts_with("sub_"), "{gid}");

    // What Stripe holds: the subscription, on a plan mirroring our price, charged to the
    // method made its own default; the customer's default is left alone.
    let at_stripe = ls.get(&format!("/v1/subscriptions/{gid}")).await;
    assert_eq!(at_stripe["status"], "active");
    assert_eq!(at_stripe["default_payment_method"], pm.as_str());
    assert_eq!(at_stripe["quantity"], 2);
    assert_eq!(
        at_stripe["metadata"]["hephaestus_subscription_id"],
        id.as_str()
    );
    assert_eq!(
        at_stripe["metadata"]["order"], "A-17",
        "the subscription's metadata reaches Stripe"
    );
    let plan = at_stripe["plan"]["id"].as_str().unwrap().to_string();
    assert_eq!(at_stripe["plan"]["amount"], 2000);
    assert_eq!(at_stripe["plan"]["currency"], "usd");
    assert_eq!(at_stripe["plan"]["interval"], "month");
    assert_eq!(
        at_stripe["plan"]["metadata"]["hephaestus_price_id"],
        basic.as_str()
    );
    let mirror = ls
        .get(&format!(
            "/v1/customers/{}",
            at_stripe["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        mirror["invoice_settings"]["default_payment_method"],
        Value::Null
    );
    assert_eq!(s.count("gateway_prices").await, 1);

    // The same request again is answered from our records: no second subscription.
    let again = s.post(&s.admin, SUBSCRIPTIONS, &body, Some("sub-1")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["id"], id.as_str());
    let all = ls.get("/v1/subscriptions?status=all").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1, "{all}");

    // Stripe's first invoice arrives by webhook, with its line on our price.
    eventually(20, "Stripe's first invoice was never mirrored", || async {
        invoices(&s, &id)
            .await
            .first()
            .is_some_and(|i| i["status"] == "paid")
    })
    .await;
    let first = invoices(&s, &id).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["amount_paid_minor"], 4000);
    assert_eq!(first[0]["amount_due_minor"], 4000);
    let lines = first[0]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["price_id"], basic.as_str());
    assert_eq!(lines[0]["amount_minor"], 4000);
    assert_eq!(lines[0]["quantity"], 2);

    // Stripe's charge for its invoice is a payment of ours, for the invoice, recorded once
    // whichever of the invoice's and the PaymentIntent's events comes first.
    let stripe_invoice =
        ls.get(&format!("/v1/invoices?subscription={gid}")).await["data"][0].clone();
    let intent = stripe_invoice["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        20,
        "the invoice's PaymentIntent event never came",
        || async {
            inbox(&s).await.iter().any(|(k, o, st)| {
                k == "payment_intent.succeeded" && o == &intent && st != "pending"
            })
        },
    )
    .await;
    let paid = invoice_payment_of(&s, stripe_invoice["id"].as_str().unwrap()).await;
    assert_eq!(paid.gateway_id.as_deref(), Some(intent.as_str()));
    assert_eq!(
        (paid.amount.minor, paid.amount.currency.code()),
        (4000, "USD")
    );
    assert_eq!(
        paid.status,
        hephaestus_core::payment::PaymentStatus::Succeeded
    );
    assert_eq!(s.count("payments").await, 1);

    // The host's own engine never bills it, however far its clock moves: not even with work
    // marked due on the row (which nothing here writes for a Stripe-billed subscription), so
    // it is the engine's claim that leaves it to Stripe.
    let mut row = hephaestus_store::subscriptions::get(&s.store, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.next_action_at, None);
    row.next_action_at = Some(row.current_period_end);
    s.store
        .write(move |tx| {
            Box::pin(async move { hephaestus_store::subscriptions::update(tx, &row).await })
        })
        .await
        .unwrap();
    advance_clock(&s.store, Duration::from_secs(40 * 24 * 60 * 60))
        .await
        .unwrap();
    let gateway = ls.gateway_args().gateway(&s.store).unwrap();
    let summary = run_due(&s.store, gateway.as_ref(), &Dunning::default(), 100)
        .await
        .unwrap();
    assert_eq!(summary.subscriptions, 0, "{summary:?}");
    assert_eq!(summary.invoices, 0, "{summary:?}");
    assert_eq!(invoices(&s, &id).await.len(), 1);
    assert_eq!(s.count("invoices").await, 1);
    assert_eq!(s.count("payments").await, 1);
    assert_eq!(subscription(&s, &id).await["status"], "active");

    // A new price and quantity, without proration: both reach Stripe.
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"price_id": pro, "quantity": 3, "proration_behavior": "none"}),
            Some("change-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["price_id"], pro.as_str());
    assert_eq!(r.body["quantity"], 3);
    let at_stripe = ls.get(&format!("/v1/subscriptions/{gid}")).await;
    assert_eq!(at_stripe["quantity"], 3);
    assert_ne!(at_stripe["plan"]["id"], plan.as_str());
    assert_eq!(
        at_stripe["plan"]["metadata"]["hephaestus_price_id"],
        pro.as_str()
    );
    // The quantity alone: the price stays.
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"quantity": 1}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["price_id"].as_str(), r.body["quantity"].as_i64()),
        (Some(pro.as_str()), Some(1))
    );
    assert_eq!(
        ls.get(&format!("/v1/subscriptions/{gid}")).await["quantity"],
        1
    );
    assert_eq!(s.count("gateway_prices").await, 2);

    // A new card becomes the one Stripe charges this subscription's invoices to.
    let new_card = ls.card(VISA).await;
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"payment_method": new_card}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["payment_method"], new_card.as_str());
    assert_eq!(
        ls.get(&format!("/v1/subscriptions/{gid}")).await["default_payment_method"],
        new_card.as_str()
    );

    // Cancelled at period end, then now.
    let cancel = format!("{SUBSCRIPTIONS}/{id}/cancel");
    let r = s
        .post(&s.admin, &cancel, &json!({"at_period_end": true}), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["cancel_at_period_end"], true);
    assert_eq!(
        ls.get(&format!("/v1/subscriptions/{gid}")).await["cancel_at_period_end"],
        true
    );
    let r = s
        .post(&s.admin, &cancel, &json!({}), Some("cancel-now"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "canceled");
    assert!(r.body["ended_at"].is_string(), "{}", r.body);
    assert_eq!(
        ls.get(&format!("/v1/subscriptions/{gid}")).await["status"],
        "canceled"
    );
    // Reconciliation's view of it, fetched from Stripe.
    let at_gateway = gateway.subscriptions().expect("Stripe bills subscriptions");
    let fetched = at_gateway
        .fetch_subscription(gid.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.status, Some(SubscriptionStatus::Canceled));
    assert_eq!(fetched.quantity, Some(1));
    assert!(fetched.ended_at.is_some());
    assert!(
        at_gateway
            .fetch_subscription("sub_NotAtStripe".into())
            .await
            .unwrap()
            .is_none()
    );
    // An ended subscription is not changed again, here or at Stripe.
    let r = s.post(&s.admin, &cancel, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    eventually(20, "Stripe's deletion event was not applied", || async {
        inbox(&s)
            .await
            .iter()
            .any(|(k, o, st)| k == "customer.subscription.deleted" && o == &gid && st != "pending")
    })
    .await;
    assert_eq!(subscription(&s, &id).await["status"], "canceled");
    let events = domain_events(&s, &c).await;
    assert_eq!(count(&events, "subscription.created"), 1, "{events:?}");
    // Two plan changes, the new card, the cancellation at period end.
    assert_eq!(count(&events, "subscription.updated"), 4, "{events:?}");
    assert_eq!(count(&events, "subscription.canceled"), 1, "{events:?}");
    assert_eq!(count(&events, "invoice.finalized"), 1, "{events:?}");
    assert_eq!(count(&events, "invoice.paid"), 1, "{events:?}");
    assert_eq!(count(&events, "payment.succeeded"), 1, "{events:?}");
    no_event_failed(&s).await;
}

async fn declined_first_invoices_trials_and_zero_decimal_prices_at_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "trial@example.com").await;
    let price = recurring_price(&s, json!("12.00"), "month", None).await;

    // The first invoice is declined: 402, and no subscription here or at Stripe.
    let card = ls.card(DECLINED_ON_CHARGE).await;
    let r = s
        .post(
            &s.admin,
            SUBSCRIPTIONS,
            &json!({"customer_id": c, "price_id": price, "payment_method": card}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "card_declined");
    assert_eq!(r.field(), Some("payment_method"));
    assert_eq!(s.count("subscriptions").await, 0);
    // localstripe answers the decline with an `incomplete` subscription (Stripe answers a
    // 402): it was ended there, so nothing is left to bill.
    let all = ls.get("/v1/subscriptions?status=all").await;
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|sub| sub["status"] == "canceled"),
        "{all}"
    );
    // The declined card became nobody's default.
    let mirror = ls
        .get(&format!(
            "/v1/customers/{}",
            all["data"][0]["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        mirror["invoice_settings"]["default_payment_method"],
        Value::Null
    );

    // A trial needs no payment method, and Stripe charges nothing until it ends.
    let r = s
        .post(
            &s.admin,
            SUBSCRIPTIONS,
            &json!({"customer_id": c, "price_id": price, "trial_days": 14}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "trialing");
    assert!(r.body["trial_end"].is_string(), "{}", r.body);
    let gid = r.body["gateway_id"].as_str().unwrap();
    let at_stripe = ls.get(&format!("/v1/subscriptions/{gid}")).await;
    assert_eq!(at_stripe["status"], "trialing");
    let days = (at_stripe["trial_end"].as_i64().unwrap()
        - at_stripe["trial_start"].as_i64().unwrap())
        / 86_400;
    assert_eq!(days, 14);

    // Stripe counts ISK in hundredths though it has no decimals: 1,500 ISK is 150000.
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": "Reykjavik"}),
            None,
        )
        .await;
    let isk = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "isk", "unit_amount": "1500",
                    "recurring": {"interval": "month"}}),
            None,
        )
        .await;
    assert_eq!(isk.status, StatusCode::CREATED, "{}", isk.body);
    let r = s
        .post(
            &s.admin,
            SUBSCRIPTIONS,
            &json!({"customer_id": c, "price_id": isk.body["id"], "trial_days": 7}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let at_stripe = ls
        .get(&format!(
            "/v1/subscriptions/{}",
            r.body["gateway_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(at_stripe["plan"]["currency"], "isk");
    assert_eq!(at_stripe["plan"]["amount"], 150_000);
}

/// The stub's card, as Stripe answers its attachment to the customer's mirror.
fn attached_card() -> Value {
    json!({"id": "pm_1StubCard", "object": "payment_method", "type": "card",
        "customer": "cus_StubMirror01", "livemode": false, "metadata": {}})
}

/// A Stripe subscription in today's shape.
fn stripe_subscription(gid: &str, plan: &str, status: &str, quantity: i64, now: i64) -> Value {
    json!({
        "id": gid, "object": "subscription", "status": status,
        "cancel_at_period_end": false, "canceled_at": null, "ended_at": null,
        "collection_method": "charge_automatically", "currency": "usd",
        "customer": "cus_HandWritten", "livemode": false, "metadata": {},
        "start_date": now, "created": now, "trial_start": null, "trial_end": null,
        "items": {"object": "list", "has_more": false, "data": [{
            "id": "si_HandWritten1", "object": "subscription_item", "quantity": quantity,
            "current_period_start": now, "current_period_end": now + 30 * 86_400,
            "price": {"id": plan, "object": "price", "currency": "usd",
                      "unit_amount": 2000, "recurring": {"interval": "month", "interval_count": 1}},
        }]},
    })
}

/// A Stripe invoice of the subscription in today's shape.
fn stripe_invoice(gid: &str, plan: &str, status: &str, attempts: i64, now: i64) -> Value {
    let paid = if status == "paid" { 2000 } else { 0 };
    json!({
        "id": "in_HandWritten1", "object": "invoice", "status": status,
        "billing_reason": "subscription_cycle", "currency": "usd", "customer": "cus_HandWritten",
        "subtotal": 2000, "total": 2000, "amount_due": 2000, "amount_paid": paid,
        "amount_remaining": 2000 - paid, "attempt_count": attempts, "attempted": attempts > 0,
        "next_payment_attempt": if status == "open" { json!(now + 3 * 86_400) } else { Value::Null },
        "period_start": now - 30 * 86_400, "period_end": now, "created": now, "livemode": false,
        "parent": {"type": "subscription_details", "quote_details": null,
                   "subscription_details": {"metadata": {}, "subscription": gid}},
        "lines": {"object": "list", "has_more": false, "data": [{
            "id": "il_HandWritten1", "object": "line_item", "amount": 2000, "currency": "usd",
            "description": "1 × Pro (at $20.00 / month)", "quantity": 1,
            "period": {"start": now, "end": now + 30 * 86_400},
            "parent": {"type": "subscription_item_details",
                       "subscription_item_details": {"proration": false,
                           "subscription": gid, "subscription_item": "si_HandWritten1"}},
            "pricing": {"type": "price_details",
                        "price_details": {"price": plan, "product": "prod_HandWritten"}},
        }]},
    })
}

async fn post_signed(s: &TestServer, event: &Value) {
    let payload = event.to_string();
    let sig = stripe_sign(&payload, WEBHOOK_SECRET, now_secs());
    let r = deliver(s, &payload, Some(&sig)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn inbox_status(s: &TestServer, id: &str) -> String {
    hephaestus_store::inbox::status(&s.store, "stripe", id)
        .await
        .unwrap()
        .map(|(status, _, _)| status)
        .unwrap_or_default()
}

async fn stripe_subscription_events_in_any_order_are_applied_once(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: every event here is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "events@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let (id, gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let t = now_secs() + 1;

    // `updated` (past due) before `created` (active): the older one is ignored.
    let updated = event(
        "evt_sub_updated_1",
        "customer.subscription.updated",
        t + 2,
        stripe_subscription(&gid, &plan, "past_due", 1, t),
    );
    post_signed(&s, &updated).await;
    post_signed(&s, &updated).await;
    settled(&s).await;
    assert_eq!(subscription(&s, &id).await["status"], "past_due");
    post_signed(
        &s,
        &event(
            "evt_sub_created_1",
            "customer.subscription.created",
            t + 1,
            stripe_subscription(&gid, &plan, "active", 1, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_sub_created_1").await, "ignored");
    assert_eq!(subscription(&s, &id).await["status"], "past_due");

    // The failed renewal, reported twice under two event ids: one failed attempt.
    for evt in ["evt_inv_failed_1", "evt_inv_failed_2"] {
        post_signed(
            &s,
            &event(
                evt,
                "invoice.payment_failed",
                t + 2,
                stripe_invoice(&gid, &plan, "open", 1, t),
            ),
        )
        .await;
    }
    // The trial notice, twice: one notice.
    for evt in ["evt_trial_1", "evt_trial_2"] {
        post_signed(
            &s,
            &event(
                evt,
                "customer.subscription.trial_will_end",
                t + 2,
                stripe_subscription(&gid, &plan, "past_due", 1, t),
            ),
        )
        .await;
    }
    settled(&s).await;
    let renewal = invoices(&s, &id).await;
    assert_eq!(renewal.len(), 1, "{renewal:?}");
    assert_eq!(renewal[0]["status"], "open");
    assert_eq!(renewal[0]["attempt_count"], 1);
    assert_eq!(renewal[0]["billing_reason"], "subscription_cycle");
    assert_eq!(renewal[0]["lines"][0]["price_id"], price.as_str());
    assert_eq!(renewal[0]["lines"][0]["amount_minor"], 2000);

    // The retry succeeds: finalized (a repeat of what is known), paid, and active again; then
    // the first failure arrives once more, late, under a new id, and changes nothing.
    for (evt, kind, at, status, attempts) in [
        ("evt_inv_finalized", "invoice.finalized", t + 1, "open", 0),
        ("evt_inv_paid", "invoice.paid", t + 4, "paid", 2),
    ] {
        post_signed(
            &s,
            &event(
                evt,
                kind,
                at,
                stripe_invoice(&gid, &plan, status, attempts, t),
            ),
        )
        .await;
    }
    post_signed(
        &s,
        &event(
            "evt_sub_updated_2",
            "customer.subscription.updated",
            t + 4,
            stripe_subscription(&gid, &plan, "active", 1, t),
        ),
    )
    .await;
    settled(&s).await;
    post_signed(
        &s,
        &event(
            "evt_inv_failed_late",
            "invoice.payment_failed",
            t + 3,
            stripe_invoice(&gid, &plan, "open", 1, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_inv_failed_late").await, "ignored");

    let sub = subscription(&s, &id).await;
    assert_eq!(sub["status"], "active");
    let renewal = invoices(&s, &id).await;
    assert_eq!(renewal.len(), 1, "{renewal:?}");
    assert_eq!(renewal[0]["status"], "paid");
    assert_eq!(renewal[0]["attempt_count"], 2);
    assert_eq!(renewal[0]["amount_paid_minor"], 2000);

    let events = domain_events(&s, &c).await;
    assert_eq!(count(&events, "subscription.created"), 1, "{events:?}");
    // active → past_due → active.
    assert_eq!(count(&events, "subscription.updated"), 2, "{events:?}");
    assert_eq!(
        count(&events, "subscription.trial_will_end"),
        1,
        "{events:?}"
    );
    assert_eq!(count(&events, "invoice.finalized"), 1, "{events:?}");
    assert_eq!(count(&events, "invoice.payment_failed"), 1, "{events:?}");
    assert_eq!(count(&events, "invoice.paid"), 1, "{events:?}");

    // Events about a subscription that is not ours wait for it, then are ignored: never a
    // failure.
    post_signed(
        &s,
        &event(
            "evt_sub_unknown",
            "customer.subscription.updated",
            t + 5,
            stripe_subscription("sub_NotOurs", &plan, "active", 1, t),
        ),
    )
    .await;
    eventually(
        10,
        "the unknown subscription's event was never tried",
        || async {
            hephaestus_store::inbox::status(&s.store, "stripe", "evt_sub_unknown")
                .await
                .unwrap()
                .is_some_and(|(st, attempts, note)| {
                    attempts >= 1
                        && st != "failed"
                        && note.is_some_and(|n| n.contains("no subscription for sub_NotOurs"))
                })
        },
    )
    .await;
}

async fn stripe_shaped_subscription_answers_and_their_keys(db: Db) {
    let t = now_secs();
    let answer = |status: &str, quantity: i64, ended: bool| {
        let mut sub = stripe_subscription("sub_1Stub", "plan_1Stub", status, quantity, t);
        sub["customer"] = json!("cus_StubMirror01");
        if ended {
            sub["ended_at"] = json!(t + 60);
            sub["canceled_at"] = json!(t + 60);
        }
        sub
    };
    let attached = attached_card();
    let (base, stub) = start_stub(vec![
        // First subscription of this customer and price: the mirrors, then a decline.
        ok("POST", "/v1/customers", stripe_customer()),
        ok(
            "POST",
            "/v1/payment_methods/pm_1StubCard/attach",
            attached.clone(),
        ),
        ok(
            "POST",
            "/v1/plans",
            json!({"id": "plan_1Stub", "object": "plan", "amount": 2500, "currency": "usd",
                   "interval": "month", "interval_count": 1, "active": true}),
        ),
        Expect {
            method: "POST",
            path: "/v1/subscriptions",
            status: 402,
            body: stripe_error(
                "card_error",
                Some("card_declined"),
                "Your card has insufficient funds.",
                json!({"decline_code": "insufficient_funds"}),
            ),
        },
        // Another request: the mirrors are known, only the method is attached again.
        ok("POST", "/v1/payment_methods/pm_1StubCard/attach", attached),
        ok("POST", "/v1/subscriptions", answer("active", 1, false)),
        // A quantity change names the subscription's item.
        ok(
            "GET",
            "/v1/subscriptions/sub_1Stub",
            answer("active", 1, false),
        ),
        ok(
            "POST",
            "/v1/subscriptions/sub_1Stub",
            answer("active", 4, false),
        ),
        ok(
            "DELETE",
            "/v1/subscriptions/sub_1Stub",
            answer("canceled", 4, true),
        ),
    ])
    .await;
    let args = stripe_at(base);
    let s = server(db, args).await;
    let c = customer(&s, "stub@example.com").await;
    let price = recurring_price(&s, json!("25.00"), "month", None).await;
    let body = json!({"customer_id": c, "price_id": price, "payment_method": "pm_1StubCard"});

    let r = s
        .post(&s.admin, SUBSCRIPTIONS, &body, Some("stub-declined"))
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "card_declined");
    assert_eq!(r.body["error"]["decline_code"], "insufficient_funds");
    assert_eq!(s.count("subscriptions").await, 0);
    // The decline is the answer to that key from now on, without asking Stripe again.
    let again = s
        .post(&s.admin, SUBSCRIPTIONS, &body, Some("stub-declined"))
        .await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED, "{}", again.body);

    let r = s
        .post(&s.admin, SUBSCRIPTIONS, &body, Some("stub-ok"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["gateway_id"], "sub_1Stub");
    assert_eq!(r.body["status"], "active");
    // The period is Stripe's, read from the item as today's API puts it.
    let start = hephaestus_core::Timestamp::from_micros(t * 1_000_000);
    assert_eq!(r.body["current_period_start"], json!(start));
    let id = r.body["id"].as_str().unwrap().to_string();

    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"quantity": 4}),
            Some("stub-change"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quantity"], 4);
    assert_eq!(r.body["price_id"], price.as_str());
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}/cancel"),
            &json!({}),
            Some("stub-cancel"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "canceled");

    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
    let seen = &script.seen;
    let key = |i: usize| seen[i].idempotency_key.clone().unwrap_or_default();
    let form = |i: usize, k: &str| seen[i].form.get(k).cloned().unwrap_or_default();
    assert_eq!(form(1, "customer"), "cus_StubMirror01");
    // The method is the subscription's own default; the customer is never updated.
    assert!(
        seen.iter()
            .all(|r| r.path != "/v1/customers/cus_StubMirror01"),
        "the customer's invoice settings were changed"
    );
    assert_eq!(key(2), format!("hephaestus-price-{price}"));
    assert_eq!(form(2, "amount"), "2500");
    assert_eq!(form(2, "metadata[hephaestus_price_id]"), price);
    assert_eq!(form(3, "items[0][price]"), "plan_1Stub");
    assert_eq!(form(3, "items[0][quantity]"), "1");
    assert_eq!(form(3, "payment_behavior"), "error_if_incomplete");
    assert_eq!(form(3, "default_payment_method"), "pm_1StubCard");
    assert_eq!(form(5, "metadata[hephaestus_customer_id]"), c);
    assert_eq!(form(5, "default_payment_method"), "pm_1StubCard");
    assert_eq!(form(7, "items[0][id]"), "si_HandWritten1");
    assert_eq!(form(7, "items[0][quantity]"), "4");
    assert_eq!(form(7, "proration_behavior"), "create_prorations");
    // One key per step, each derived from the request's own: a retried request sends the
    // same ones and gets Stripe's first answers.
    let declined = key(3).trim_end_matches(":create").to_string();
    assert!(declined.starts_with("hk-"), "{declined}");
    assert_eq!(key(1), format!("{declined}:attach"));
    let created = key(5).trim_end_matches(":create").to_string();
    assert_ne!(created, declined);
    assert_eq!(key(4), format!("{created}:attach"));
    assert_eq!(seen[6].idempotency_key, None);
    assert!(key(7).ends_with(":change"), "{}", key(7));
    assert!(key(8).ends_with(":cancel"), "{}", key(8));
    assert_ne!(
        key(7).trim_end_matches(":change"),
        key(8).trim_end_matches(":cancel")
    );
}

async fn stripe_events_from_before_the_hosts_clock_still_apply_after_an_api_change(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: every event here is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "clocks@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let (id, gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"quantity": 2}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quantity"], 2);

    // Stripe's clock runs behind ours: its event for a renewal that failed just after our
    // change is stamped earlier than the host's time of the answer, and still is the news.
    let t = now_secs() - 30;
    post_signed(
        &s,
        &event(
            "evt_behind_1",
            "customer.subscription.updated",
            t,
            stripe_subscription(&gid, &plan, "past_due", 2, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_behind_1").await, "processed");
    assert_eq!(subscription(&s, &id).await["status"], "past_due");
    // Stripe's own order still holds between its events.
    post_signed(
        &s,
        &event(
            "evt_behind_0",
            "customer.subscription.updated",
            t - 1,
            stripe_subscription(&gid, &plan, "active", 2, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_behind_0").await, "ignored");
    assert_eq!(subscription(&s, &id).await["status"], "past_due");
}

async fn a_new_card_for_one_subscription_leaves_the_customers_others_alone(db: Db) {
    let ls = LocalStripe::start().await;
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "two-subs@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let first_card = ls.card(VISA).await;
    let mut gids = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s
            .post(
                &s.admin,
                SUBSCRIPTIONS,
                &json!({"customer_id": c, "price_id": price, "payment_method": first_card}),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
        gids.push(r.body["gateway_id"].as_str().unwrap().to_string());
    }

    let new_card = ls.card(VISA).await;
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{}", ids[0]),
            &json!({"payment_method": new_card}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let changed = ls.get(&format!("/v1/subscriptions/{}", gids[0])).await;
    assert_eq!(changed["default_payment_method"], new_card.as_str());
    let other = ls.get(&format!("/v1/subscriptions/{}", gids[1])).await;
    assert_eq!(other["default_payment_method"], first_card.as_str());
    let mirror = ls
        .get(&format!(
            "/v1/customers/{}",
            other["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        mirror["invoice_settings"]["default_payment_method"],
        Value::Null
    );
    assert_eq!(
        subscription(&s, &ids[1]).await["payment_method"],
        first_card.as_str()
    );
}

async fn stripe_invoices_are_voided_and_marked_uncollectible(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: every event here is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "void@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let (id, gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let t = now_secs() + 1;
    let second = |status: &str| {
        let mut inv = stripe_invoice(&gid, &plan, status, 1, t);
        inv["id"] = json!("in_HandWritten2");
        inv["billing_reason"] = json!("manual");
        inv
    };
    // Ours are told apart by Stripe's billing reason: the first is the renewal's.
    let status_of = |list: &[Value], billing_reason: &str| {
        list.iter()
            .find(|i| i["billing_reason"] == billing_reason)
            .map(|i| i["status"].clone())
            .unwrap_or(Value::Null)
    };

    // One invoice is voided; a failed attempt reported after it does not reopen it.
    post_signed(
        &s,
        &event(
            "evt_void_finalized",
            "invoice.finalized",
            t,
            stripe_invoice(&gid, &plan, "open", 0, t),
        ),
    )
    .await;
    settled(&s).await;
    post_signed(
        &s,
        &event(
            "evt_voided",
            "invoice.voided",
            t + 1,
            stripe_invoice(&gid, &plan, "void", 0, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(
        status_of(&invoices(&s, &id).await, "subscription_cycle"),
        "void"
    );
    post_signed(
        &s,
        &event(
            "evt_void_failed_late",
            "invoice.payment_failed",
            t + 2,
            stripe_invoice(&gid, &plan, "open", 1, t),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(
        status_of(&invoices(&s, &id).await, "subscription_cycle"),
        "void"
    );

    // Another is given up on, then paid out of band: `invoice.updated` carries that.
    post_signed(
        &s,
        &event(
            "evt_uncollectible",
            "invoice.marked_uncollectible",
            t + 3,
            second("uncollectible"),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(
        status_of(&invoices(&s, &id).await, "manual"),
        "uncollectible"
    );
    post_signed(
        &s,
        &event("evt_updated_paid", "invoice.updated", t + 4, second("paid")),
    )
    .await;
    settled(&s).await;
    assert_eq!(status_of(&invoices(&s, &id).await, "manual"), "paid");

    let events = domain_events(&s, &c).await;
    assert_eq!(count(&events, "invoice.voided"), 1, "{events:?}");
    assert_eq!(
        count(&events, "invoice.marked_uncollectible"),
        1,
        "{events:?}"
    );
    no_event_failed(&s).await;
}

async fn stripe_isk_invoice_lines_are_rounded_to_whole_kronur(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: the invoice event is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "krona@example.com").await;
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": "Akureyri"}),
            None,
        )
        .await;
    let isk = s
        .post(
            &s.admin,
            "/api/v1/revenue/prices",
            &json!({"product_id": product.body["id"], "currency": "isk", "unit_amount": "1000",
                    "recurring": {"interval": "month"}}),
            None,
        )
        .await;
    assert_eq!(isk.status, StatusCode::CREATED, "{}", isk.body);
    let trial = json!({"customer_id": c, "price_id": isk.body["id"], "trial_days": 7});
    let (id, gid, plan) = start_at_localstripe_with(&s, &ls, &trial).await;

    // Stripe counts ISK in hundredths and prorates to the hundredth: 999.50 kr for the rest
    // of the period on the new plan, less 499.50 kr unused on the old one; 500 kr in all.
    let t = now_secs() + 1;
    let line = |n: u32, amount: i64, proration: bool, description: &str| {
        json!({
            "id": format!("il_Krona{n}"), "object": "line_item", "amount": amount,
            "currency": "isk", "description": description, "quantity": 1,
            "period": {"start": t, "end": t + 30 * 86_400},
            "parent": {"type": "subscription_item_details",
                       "subscription_item_details": {"proration": proration,
                           "subscription": gid, "subscription_item": "si_Krona"}},
            "pricing": {"type": "price_details",
                        "price_details": {"price": plan, "product": "prod_Krona"}},
        })
    };
    let invoice = json!({
        "id": "in_Krona1", "object": "invoice", "status": "paid",
        "billing_reason": "subscription_update", "currency": "isk", "customer": "cus_Krona",
        "subtotal": 50_000, "total": 50_000, "amount_due": 50_000, "amount_paid": 50_000,
        "payment_intent": "pi_Krona1",
        "amount_remaining": 0, "attempt_count": 1, "attempted": true,
        "next_payment_attempt": null, "period_start": t, "period_end": t, "created": t,
        "livemode": false,
        "parent": {"type": "subscription_details", "quote_details": null,
                   "subscription_details": {"metadata": {}, "subscription": gid}},
        "lines": {"object": "list", "has_more": false, "data": [
            line(1, 99_950, true, "Remaining time on Akureyri"),
            line(2, -49_950, true, "Unused time on Akureyri"),
        ]},
    });
    post_signed(&s, &event("evt_krona_paid", "invoice.paid", t, invoice)).await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_krona_paid").await, "processed");

    let mirrored = invoices(&s, &id).await;
    assert_eq!(mirrored.len(), 1, "{mirrored:?}");
    let inv = &mirrored[0];
    assert_eq!(inv["currency"], "ISK");
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["subtotal_minor"], 500);
    assert_eq!(inv["amount_due_minor"], 500);
    assert_eq!(inv["amount_paid_minor"], 500);
    let mut amounts: Vec<i64> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount_minor"].as_i64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(amounts, [-500, 1000], "{inv}");
    assert_eq!(amounts.iter().sum::<i64>(), 500);
    // Its payment is counted in whole krónur too.
    let paid = invoice_payment_of(&s, "in_Krona1").await;
    assert_eq!(
        (paid.amount.minor, paid.amount.currency.code()),
        (500, "ISK")
    );
}

/// Applies `answer` as the answer to a change asked of the row as `asked` held it.
async fn apply_late_answer(s: &TestServer, asked: &Subscription, answer: Value) -> Subscription {
    let answer = subscription_state(&answer).unwrap();
    let asked = asked.clone();
    s.store
        .write(move |tx| {
            Box::pin(async move {
                let current = hephaestus_store::subscriptions::get_for_update(tx, &asked.id)
                    .await?
                    .unwrap();
                gateway_subscriptions::apply_answer(
                    tx,
                    &asked,
                    current,
                    &answer,
                    |_| {},
                    Timestamp::now(),
                )
                .await
            })
        })
        .await
        .unwrap()
}

async fn an_answer_is_not_written_over_a_row_that_moved_on_while_it_was_in_flight(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: every event here is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "in-flight@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let (id, gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let t = now_secs();
    let row = || async {
        hephaestus_store::subscriptions::get(&s.store, &id)
            .await
            .unwrap()
            .unwrap()
    };

    // Two changes at once, committed in the reverse of Stripe's order: the one Stripe made
    // last (quantity 3) commits first, and the other's answer (quantity 2) comes too late.
    let asked = row().await;
    let r = s
        .post(
            &s.admin,
            &format!("{SUBSCRIPTIONS}/{id}"),
            &json!({"quantity": 3}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let late =
        apply_late_answer(&s, &asked, stripe_subscription(&gid, &plan, "active", 2, t)).await;
    assert_eq!(late.quantity, 3);
    assert_eq!(subscription(&s, &id).await["quantity"], 3);

    // Stripe ends it while a change is in flight: the change's answer does not revive it,
    // whether the row was read before the deletion or after.
    let asked = row().await;
    let mut deleted = stripe_subscription(&gid, &plan, "canceled", 3, t);
    deleted["ended_at"] = json!(t);
    deleted["canceled_at"] = json!(t);
    post_signed(
        &s,
        &event(
            "evt_flight_deleted",
            "customer.subscription.deleted",
            t,
            deleted,
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(subscription(&s, &id).await["status"], "canceled");
    let late =
        apply_late_answer(&s, &asked, stripe_subscription(&gid, &plan, "active", 4, t)).await;
    assert_eq!(late.status, SubscriptionStatus::Canceled);
    let ended = row().await;
    let late = apply_late_answer(
        &s,
        &ended,
        stripe_subscription(&gid, &plan, "past_due", 4, t),
    )
    .await;
    assert_eq!(late.status, SubscriptionStatus::Canceled);
    assert_eq!(late.quantity, 3);
    assert_eq!(subscription(&s, &id).await["status"], "canceled");
}

/// The charge of a 20.00 USD Stripe invoice paid by `intent`, as `charge.refunded` carries
/// it, with `refunds` (id, amount) made of it so far.
fn invoice_charge(intent: &str, refunds: &[(&str, i64)]) -> Value {
    let refunded: i64 = refunds.iter().map(|(_, amount)| amount).sum();
    json!({
        "id": intent.replace("pi_", "ch_"), "object": "charge", "payment_intent": intent,
        "amount": 2000, "amount_refunded": refunded, "currency": "usd",
        "refunded": refunded == 2000, "status": "succeeded",
        "refunds": {"object": "list", "has_more": false, "data": refunds.iter().map(|(id, amount)| json!({
            "id": id, "object": "refund", "amount": amount, "currency": "usd",
            "payment_intent": intent, "status": "succeeded", "reason": "requested_by_customer",
        })).collect::<Vec<_>>()},
    })
}

/// A dispute of the 20.00 USD charge paid by `intent`.
fn invoice_dispute(intent: &str, status: &str, moves: &[i64]) -> Value {
    let mut d = dispute_object(status, moves);
    d["id"] = json!(intent.replace("pi_", "dp_"));
    d["charge"] = json!(intent.replace("pi_", "ch_"));
    d["payment_intent"] = json!(intent);
    d["amount"] = json!(2000);
    d
}

/// The payment recorded for our invoice `gateway_invoice` mirrors, read from the store: the
/// API's payment view does not show the invoice it pays.
async fn invoice_payment_of(
    s: &TestServer,
    gateway_invoice: &str,
) -> hephaestus_core::payment::Payment {
    let invoice = hephaestus_store::subscriptions::list_invoices(
        &s.store,
        &hephaestus_store::subscriptions::InvoiceQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .find(|i| i.gateway_id.as_deref() == Some(gateway_invoice))
    .unwrap_or_else(|| panic!("{gateway_invoice} is not mirrored"));
    let id = invoice
        .payment_id
        .unwrap_or_else(|| panic!("{gateway_invoice} has no payment"));
    let p = hephaestus_store::payments::get(&s.store, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.invoice_id.as_deref(), Some(invoice.id.as_str()));
    p
}

async fn refunds_and_disputes_of_stripe_invoice_charges_find_their_payment(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: every event here is hand-written.
    let s = server(db, ls.gateway_args()).await;
    let c = customer(&s, "invoice-charges@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let (_, gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let t = now_secs() + 1;
    let invoice = |id: &str, intent: Option<&str>| {
        let mut inv = stripe_invoice(&gid, &plan, "paid", 1, t);
        inv["id"] = json!(id);
        if let Some(intent) = intent {
            inv["payment_intent"] = json!(intent);
        }
        inv
    };

    // A paid invoice in the shape that names its PaymentIntent, reported paid three times
    // under both names: one payment of ours, for the invoice.
    let a = invoice("in_ChargesA", Some("pi_ChargesA"));
    for (evt, kind) in [
        ("evt_a_paid", "invoice.paid"),
        ("evt_a_succeeded", "invoice.payment_succeeded"),
        ("evt_a_paid_again", "invoice.paid"),
    ] {
        post_signed(&s, &event(evt, kind, t, a.clone())).await;
    }
    settled(&s).await;
    let paid_a = invoice_payment_of(&s, "in_ChargesA").await;
    assert_eq!(paid_a.gateway, "stripe");
    assert_eq!(paid_a.gateway_id.as_deref(), Some("pi_ChargesA"));
    assert_eq!(paid_a.customer_id, c);
    assert_eq!(
        (paid_a.amount.minor, paid_a.amount.currency.code()),
        (2000, "USD")
    );
    assert_eq!(s.count("payments").await, 1);

    // Its charge is partly refunded, then disputed and the dispute won: the payment follows.
    post_signed(
        &s,
        &event(
            "evt_a_refunded",
            "charge.refunded",
            t + 1,
            invoice_charge("pi_ChargesA", &[("re_ChargesA1", 500)]),
        ),
    )
    .await;
    settled(&s).await;
    let p = payment(&s, &paid_a.id).await;
    assert_eq!(p["status"], "partially_refunded");
    assert_eq!(p["amount_refunded_minor"], 500);
    assert_eq!(p["refunds"][0]["amount_minor"], 500);
    assert_eq!(p["refunds"][0]["reason"], "requested_by_customer");
    post_signed(
        &s,
        &event(
            "evt_a_disputed",
            "charge.dispute.created",
            t + 2,
            invoice_dispute("pi_ChargesA", "needs_response", &[]),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(payment(&s, &paid_a.id).await["status"], "disputed");
    post_signed(
        &s,
        &event(
            "evt_a_won",
            "charge.dispute.closed",
            t + 3,
            invoice_dispute("pi_ChargesA", "won", &[-2000, 2000]),
        ),
    )
    .await;
    settled(&s).await;
    let p = payment(&s, &paid_a.id).await;
    assert_eq!(p["status"], "partially_refunded");
    assert_eq!(p["disputes"][0]["status"], "won");

    // The refund arrives before the invoice it pays: it waits for the payment, which the
    // invoice's event records, and then finds it.
    post_signed(
        &s,
        &event(
            "evt_b_refunded",
            "charge.refunded",
            t + 5,
            invoice_charge("pi_ChargesB", &[("re_ChargesB1", 2000)]),
        ),
    )
    .await;
    eventually(10, "the early refund was never tried", || async {
        hephaestus_store::inbox::status(&s.store, "stripe", "evt_b_refunded")
            .await
            .unwrap()
            .is_some_and(|(st, attempts, note)| {
                st == "pending"
                    && attempts >= 1
                    && note.is_some_and(|n| n.contains("no payment for pi_ChargesB"))
            })
    })
    .await;
    post_signed(
        &s,
        &event(
            "evt_b_paid",
            "invoice.paid",
            t + 4,
            invoice("in_ChargesB", Some("pi_ChargesB")),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_b_refunded").await, "processed");
    let paid_b = invoice_payment_of(&s, "in_ChargesB").await;
    let p = payment(&s, &paid_b.id).await;
    assert_eq!(p["status"], "refunded");
    assert_eq!(p["amount_refunded_minor"], 2000);

    // Today's shape: the invoice names no PaymentIntent, `invoice_payment.paid` does, and
    // may come first; reported twice, it is one payment, whose dispute then finds it.
    let inpay = json!({
        "id": "inpay_ChargesC", "object": "invoice_payment", "amount_paid": 2000,
        "amount_requested": 2000, "currency": "usd", "invoice": "in_ChargesC",
        "is_default": true, "livemode": false, "created": t + 6,
        "payment": {"type": "payment_intent", "payment_intent": "pi_ChargesC"},
        "status": "paid", "status_transitions": {"canceled_at": null, "paid_at": t + 6},
    });
    post_signed(
        &s,
        &event("evt_c_inpay", "invoice_payment.paid", t + 6, inpay.clone()),
    )
    .await;
    post_signed(
        &s,
        &event(
            "evt_c_paid",
            "invoice.paid",
            t + 6,
            invoice("in_ChargesC", None),
        ),
    )
    .await;
    settled(&s).await;
    post_signed(
        &s,
        &event("evt_c_inpay_again", "invoice_payment.paid", t + 6, inpay),
    )
    .await;
    post_signed(
        &s,
        &event(
            "evt_c_disputed",
            "charge.dispute.created",
            t + 7,
            invoice_dispute("pi_ChargesC", "needs_response", &[-2000]),
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_c_inpay").await, "processed");
    assert_eq!(inbox_status(&s, "evt_c_inpay_again").await, "ignored");
    let paid_c = invoice_payment_of(&s, "in_ChargesC").await;
    assert_eq!(paid_c.gateway_id.as_deref(), Some("pi_ChargesC"));
    assert_eq!(payment(&s, &paid_c.id).await["status"], "disputed");
    assert_eq!(s.count("payments").await, 3);

    let events = domain_events(&s, &c).await;
    assert_counts(&events, &[("payment.succeeded", 3)]);
    for p in [&paid_a, &paid_b, &paid_c] {
        let once = events
            .iter()
            .filter(|(k, d)| k == "payment.succeeded" && d["payment_id"] == p.id.as_str())
            .count();
        assert_eq!(once, 1, "{events:?}");
    }
    assert_counts(
        &events,
        &[
            ("invoice.paid", 3),
            ("refund.created", 2),
            ("dispute.created", 2),
            ("dispute.closed", 1),
        ],
    );
    no_event_failed(&s).await;
}

async fn reconciliation_refetches_unsettled_stripe_subscriptions_from_localstripe(db: Db) {
    let ls = LocalStripe::start().await;
    // No webhooks from localstripe: what changes there is learnt by reconciliation, or from
    // the hand-written events here.
    let s = server(db, ls.gateway_args()).await;
    let gateway = ls.gateway_args().gateway(&s.store).unwrap();
    let reconcile = |deadline: i64, limit: i64| {
        reconcile::reconcile_subscriptions(&s.store, gateway.as_ref(), deadline, limit)
    };
    let c = customer(&s, "reconciled@example.com").await;
    let price = recurring_price(&s, json!("20.00"), "month", None).await;
    let t0 = now_secs();
    let (one, one_gid, plan) = start_at_localstripe(&s, &ls, &c, &price).await;
    let (two, two_gid, _) = start_at_localstripe(&s, &ls, &c, &price).await;

    // Live and within their period: nothing to ask Stripe.
    assert_eq!(
        reconcile(0, 10).await.unwrap(),
        reconcile::Report::default()
    );

    // Stripe reported failed renewals, and never the retries that settled them.
    let failed_at = t0 - 100;
    for (evt, gid) in [("evt_rec_one", &one_gid), ("evt_rec_two", &two_gid)] {
        let sub = stripe_subscription(gid, &plan, "past_due", 1, failed_at);
        post_signed(
            &s,
            &event(evt, "customer.subscription.updated", failed_at, sub),
        )
        .await;
    }
    settled(&s).await;
    assert_eq!(subscription(&s, &one).await["status"], "past_due");
    // Not for long yet.
    assert_eq!(reconcile(3600, 10).await.unwrap().checked, 0);

    // One per pass when bounded so; the next pass takes the other, then none is left.
    let first = reconcile(0, 1).await.unwrap();
    assert_eq!((first.checked, first.updated, first.failed), (1, 1, 0));
    let second = reconcile(0, 10).await.unwrap();
    assert_eq!((second.checked, second.updated, second.failed), (1, 1, 0));
    assert_eq!(reconcile(0, 10).await.unwrap().checked, 0);
    for (id, gid) in [(&one, &one_gid), (&two, &two_gid)] {
        let sub = subscription(&s, id).await;
        assert_eq!(sub["status"], "active");
        assert_eq!(sub["gateway"], "stripe");
        // Its first invoice was never reported: the subscription's latest, fetched from
        // localstripe with it, and its payment recorded.
        let listed = invoices(&s, id).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["status"], "paid");
        assert_eq!(listed[0]["amount_paid_minor"], 2000);
        assert_eq!(listed[0]["lines"][0]["price_id"], price.as_str());
        let latest = ls.get(&format!("/v1/subscriptions/{gid}")).await["latest_invoice"].clone();
        let paid = invoice_payment_of(&s, latest.as_str().unwrap()).await;
        assert!(
            paid.gateway_id
                .as_deref()
                .is_some_and(|g| g.starts_with("pi_")),
            "{paid:?}"
        );
    }

    // A late event from before the state Stripe answered (it started after the failure) is
    // older than that state: ignored. A newer one applies.
    let late = stripe_subscription(&one_gid, &plan, "past_due", 1, failed_at);
    post_signed(
        &s,
        &event(
            "evt_rec_late",
            "customer.subscription.updated",
            failed_at + 50,
            late,
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_rec_late").await, "ignored");
    assert_eq!(subscription(&s, &one).await["status"], "active");
    let newer = now_secs() + 1;
    let two_fails = stripe_subscription(&two_gid, &plan, "past_due", 1, newer);
    post_signed(
        &s,
        &event(
            "evt_rec_newer",
            "customer.subscription.updated",
            newer,
            two_fails,
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(subscription(&s, &two).await["status"], "past_due");

    // Ended at Stripe directly, and no event came: reconciliation ends it here, once.
    ls.delete(&format!("/v1/subscriptions/{two_gid}")).await;
    let ended = reconcile(0, 10).await.unwrap();
    assert_eq!((ended.checked, ended.updated), (1, 1));
    let sub = subscription(&s, &two).await;
    assert_eq!(sub["status"], "canceled");
    assert!(sub["ended_at"].is_string(), "{sub}");
    assert_eq!(reconcile(0, 10).await.unwrap().checked, 0);

    // Past due and active again for each, past due again for the second.
    let events = domain_events(&s, &c).await;
    assert_counts(
        &events,
        &[
            ("subscription.updated", 5),
            ("subscription.canceled", 1),
            ("invoice.paid", 2),
            ("payment.succeeded", 2),
        ],
    );
}

/// What the stub answers while a subscription starts through our API: the customer's
/// mirror, the card attached, the plan mirroring the price, then `created`.
fn stub_start(created: Value) -> Vec<Expect> {
    vec![
        ok("POST", "/v1/customers", stripe_customer()),
        ok(
            "POST",
            "/v1/payment_methods/pm_1StubCard/attach",
            attached_card(),
        ),
        ok(
            "POST",
            "/v1/plans",
            json!({"id": "plan_1Stub", "object": "plan", "amount": 2000, "currency": "usd",
                   "interval": "month", "interval_count": 1, "active": true}),
        ),
        ok("POST", "/v1/subscriptions", created),
    ]
}

/// A 20.00 USD monthly subscription started through our API against the stub
/// ([`stub_start`]): the customer, the price and the subscription as answered.
async fn start_at_stub(s: &TestServer) -> (String, String, Value) {
    let c = customer(s, "stub@example.com").await;
    let price = recurring_price(s, json!("20.00"), "month", None).await;
    let r = s
        .post(
            &s.admin,
            SUBSCRIPTIONS,
            &json!({"customer_id": c, "price_id": price, "payment_method": "pm_1StubCard"}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (c, price, r.body)
}

async fn reconciliation_renews_a_stripe_subscription_whose_renewal_never_came(db: Db) {
    let t = now_secs();
    let month = 30 * 86_400;
    // Today's shape, with the period on the item: one that ended an hour ago, then renewed.
    let answer = |start: i64| {
        let mut sub = stripe_subscription("sub_1StubRenew", "plan_1Stub", "active", 1, start);
        sub["customer"] = json!("cus_StubMirror01");
        sub
    };
    let mut script = stub_start(answer(t - month - 3600));
    script.extend([
        // Reconciliation asks; Stripe fails, then answers the renewed subscription.
        Expect {
            method: "GET",
            path: "/v1/subscriptions/sub_1StubRenew",
            status: 500,
            body: stripe_failure(),
        },
        ok("GET", "/v1/subscriptions/sub_1StubRenew", answer(t - 3600)),
    ]);
    let (base, stub) = start_stub(script).await;
    let args = stripe_at(base);
    let s = server(db, args.clone()).await;
    let gateway = args.gateway(&s.store).unwrap();
    let (c, _, r) = start_at_stub(&s).await;
    let id = r["id"].as_str().unwrap().to_string();
    let ended = hephaestus_core::Timestamp::from_micros((t - 3600) * 1_000_000);
    assert_eq!(r["current_period_end"], json!(ended));

    // The period ended an hour ago and no renewal was applied: asked about, and when Stripe
    // fails, asked again by a later pass.
    let failed = reconcile::reconcile_subscriptions(&s.store, gateway.as_ref(), 0, 10)
        .await
        .unwrap();
    assert_eq!((failed.checked, failed.updated, failed.failed), (1, 0, 1));
    let renewed = reconcile::reconcile_subscriptions(&s.store, gateway.as_ref(), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        (renewed.checked, renewed.updated, renewed.failed),
        (1, 1, 0)
    );
    let sub = subscription(&s, &id).await;
    assert_eq!(sub["status"], "active");
    let next_end = hephaestus_core::Timestamp::from_micros((t - 3600 + month) * 1_000_000);
    assert_eq!(sub["current_period_end"], json!(next_end));
    // Within its period now: not asked again.
    let idle = reconcile::reconcile_subscriptions(&s.store, gateway.as_ref(), 0, 10)
        .await
        .unwrap();
    assert_eq!(idle.checked, 0);
    // A renewal alone is no news of its own: its invoice carries it.
    let events = domain_events(&s, &c).await;
    assert_eq!(count(&events, "subscription.updated"), 0, "{events:?}");

    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
    assert!(script.seen[4..].iter().all(|r| r.idempotency_key.is_none()));
}

async fn reconciliation_mirrors_stripe_invoices_whose_events_never_came(db: Db) {
    let t = now_secs();
    let month = 30 * 86_400;
    let sub_answer = |start: i64, latest: Option<&str>| {
        let mut sub = stripe_subscription("sub_1StubRenew", "plan_1Stub", "active", 1, start);
        sub["customer"] = json!("cus_StubMirror01");
        sub["latest_invoice"] = json!(latest);
        sub
    };
    // The renewal's invoice in today's shape, which names its payments only when they are
    // included: they are listed on their own, and were made by a charge with no
    // PaymentIntent.
    let mut renewal = stripe_invoice("sub_1StubRenew", "plan_1Stub", "paid", 1, t - 3600);
    renewal["id"] = json!("in_1StubRenewal");
    renewal["status_transitions"] = json!({"finalized_at": t - 3600, "paid_at": t - 3590,
        "voided_at": null, "marked_uncollectible_at": null});
    let renewal_payments = json!({"object": "list", "has_more": false, "data": [{
        "id": "inpay_1StubRenewal", "object": "invoice_payment", "amount_paid": 2000,
        "amount_requested": 2000, "currency": "usd", "invoice": "in_1StubRenewal",
        "is_default": true, "livemode": false, "created": t - 3590,
        "payment": {"type": "charge", "charge": "ch_1StubRenewal"}, "status": "paid",
        "status_transitions": {"canceled_at": null, "paid_at": t - 3590}}]});
    // A later invoice whose failed attempt was reported, and nothing after: Stripe says it
    // failed again, then that it was paid, in the older shape that names the charge.
    let open = |status: &str, attempts: i64| {
        let mut inv = stripe_invoice("sub_1StubRenew", "plan_1Stub", status, attempts, t);
        inv["id"] = json!("in_1StubOpen");
        if status == "paid" {
            inv["payment_intent"] = Value::Null;
            inv["charge"] = json!("ch_1StubOpen");
        }
        inv
    };
    let mut script = stub_start(sub_answer(t - month - 3600, None));
    script.extend([
        // The renewal: Stripe fails on its invoice, then answers it.
        ok(
            "GET",
            "/v1/subscriptions/sub_1StubRenew",
            sub_answer(t - 3600, Some("in_1StubRenewal")),
        ),
        Expect {
            method: "GET",
            path: "/v1/invoices/in_1StubRenewal",
            status: 500,
            body: stripe_failure(),
        },
        ok(
            "GET",
            "/v1/subscriptions/sub_1StubRenew",
            sub_answer(t - 3600, Some("in_1StubRenewal")),
        ),
        ok("GET", "/v1/invoices/in_1StubRenewal", renewal),
        ok("GET", "/v1/invoice_payments", renewal_payments),
        // The open invoice, asked about twice.
        ok("GET", "/v1/invoices/in_1StubOpen", open("open", 2)),
        ok("GET", "/v1/invoices/in_1StubOpen", open("paid", 2)),
        // A refund of the renewal, through our API.
        ok(
            "POST",
            "/v1/refunds",
            json!({"id": "re_1StubRenewal", "object": "refund", "amount": 500,
                "balance_transaction": null, "charge": "ch_1StubRenewal", "created": t,
                "currency": "usd", "destination_details": null, "metadata": {},
                "payment_intent": null, "reason": null, "receipt_number": null,
                "source_transfer_reversal": null, "status": "succeeded",
                "transfer_reversal": null}),
        ),
    ]);
    let (base, stub) = start_stub(script).await;
    let args = stripe_at(base);
    let s = server(db, args.clone()).await;
    let gateway = args.gateway(&s.store).unwrap();
    let subscriptions = || reconcile::reconcile_subscriptions(&s.store, gateway.as_ref(), 0, 10);
    let invoices_pass = || reconcile::reconcile_invoices(&s.store, gateway.as_ref(), 0, 10);
    let (c, price, r) = start_at_stub(&s).await;
    let id = r["id"].as_str().unwrap().to_string();
    let ended = r["current_period_end"].clone();

    // The renewal whose invoice cannot be fetched is not applied without it: the next pass
    // asks about both again, and applies both.
    let failed = subscriptions().await.unwrap();
    assert_eq!((failed.checked, failed.updated, failed.failed), (1, 0, 1));
    assert_eq!(subscription(&s, &id).await["current_period_end"], ended);
    assert!(invoices(&s, &id).await.is_empty());
    let renewed = subscriptions().await.unwrap();
    assert_eq!(
        (renewed.checked, renewed.updated, renewed.failed),
        (1, 1, 0)
    );
    assert_ne!(subscription(&s, &id).await["current_period_end"], ended);
    let listed = invoices(&s, &id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "paid");
    assert_eq!(listed[0]["amount_paid_minor"], 2000);
    assert_eq!(listed[0]["lines"][0]["price_id"], json!(price));
    let renewal_paid = invoice_payment_of(&s, "in_1StubRenewal").await;
    assert_eq!(renewal_paid.gateway_id.as_deref(), Some("ch_1StubRenewal"));
    assert_eq!(renewal_paid.amount.minor, 2000);
    // Paid: nothing for the invoices' pass.
    assert_eq!(invoices_pass().await.unwrap(), reconcile::Report::default());

    // The next invoice's failed attempt is reported; no event comes after it.
    post_signed(
        &s,
        &event(
            "evt_open_failed",
            "invoice.payment_failed",
            t,
            open("open", 1),
        ),
    )
    .await;
    settled(&s).await;
    let again = invoices_pass().await.unwrap();
    assert_eq!((again.checked, again.updated, again.failed), (1, 1, 0));
    let paid = invoices_pass().await.unwrap();
    assert_eq!((paid.checked, paid.updated, paid.failed), (1, 1, 0));
    assert_eq!(invoices_pass().await.unwrap().checked, 0);
    let open_paid = invoice_payment_of(&s, "in_1StubOpen").await;
    assert_eq!(open_paid.gateway_id.as_deref(), Some("ch_1StubOpen"));

    // The bare charges are refunded and disputed under their own ids: a refund through our
    // API names the charge, and the gateway's events about them find their payments.
    let r = s
        .post(
            &s.admin,
            &format!("/api/v1/revenue/payments/{}/refunds", renewal_paid.id),
            &json!({"amount": "5.00"}),
            Some("bare-charge-refund"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut refunded = invoice_charge("pi_1StubRenewal", &[("re_1StubRenewal", 500)]);
    refunded["payment_intent"] = Value::Null;
    let mut disputed = invoice_dispute("pi_1StubOpen", "needs_response", &[-2000]);
    disputed["payment_intent"] = Value::Null;
    post_signed(
        &s,
        &event("evt_bare_refunded", "charge.refunded", t + 1, refunded),
    )
    .await;
    post_signed(
        &s,
        &event(
            "evt_bare_disputed",
            "charge.dispute.created",
            t + 1,
            disputed,
        ),
    )
    .await;
    settled(&s).await;
    assert_eq!(inbox_status(&s, "evt_bare_disputed").await, "processed");
    let p = payment(&s, &renewal_paid.id).await;
    assert_eq!(p["status"], "partially_refunded");
    assert_eq!(p["refunds"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(payment(&s, &open_paid.id).await["status"], "disputed");

    let events = domain_events(&s, &c).await;
    assert_counts(
        &events,
        &[
            ("invoice.finalized", 2),
            ("invoice.paid", 2),
            ("invoice.payment_failed", 2),
            ("payment.succeeded", 2),
            ("refund.created", 1),
            ("dispute.created", 1),
        ],
    );
    no_event_failed(&s).await;

    let script = stub.lock().unwrap();
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    assert!(script.expected.is_empty(), "answers never asked for");
    let listing = &script.seen[8];
    assert_eq!(
        listing.query,
        "invoice=in_1StubRenewal&status=paid&limit=100"
    );
    let refund = &script.seen[11].form;
    assert_eq!(
        refund.get("charge").map(String::as_str),
        Some("ch_1StubRenewal")
    );
    assert!(!refund.contains_key("payment_intent"), "{refund:?}");
}
