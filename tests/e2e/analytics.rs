//! Revenue analytics with known answers: hand-built histories (a yearly and a weekly plan,
//! an upgrade and a downgrade mid-period with proration, a cancellation at period end, a
//! reactivation, trials that convert and that lapse, refunds, a lost and a won dispute, two
//! currencies with a stored rate), every figure checked exactly; the MRR identity in every
//! period; and `hephaestus analytics rebuild` (the real binary) reproducing the figures the
//! server kept incrementally, byte for byte.
//!
//! Answers are read with their numbers kept as text, so `100.00` is checked as written and
//! sums are checked in exact decimals, never floats.

use std::process::Stdio;

use chrono::Datelike;

use hephaestus_billing::disputes::{Change, DisputeState};
use hephaestus_store::payments;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(
    subscription_mrr_movements_have_known_answers,
    revenue_in_two_currencies_with_refunds_and_disputes,
    concurrent_writes_reads_and_rebuilds_count_each_event_once,
    csv_answers_parse_back_to_the_json_figures,
    marketing_spend_gives_cac,
    the_forecast_continues_a_steady_trend,
    bad_ranges_are_refused_with_the_field_named
);

const DAY: i64 = 86_400;
const SUBS: &str = "/api/v1/revenue/subscriptions";
const PAYMENTS: &str = "/api/v1/revenue/payments";

/// JSON text with every number turned into a string of its digits, so nothing is read
/// through a float.
fn numbers_as_text(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 64);
    let mut chars = json.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '-' || c.is_ascii_digit() {
            out.push('"');
            out.push(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_digit() || matches!(n, '.' | 'e' | 'E' | '+' | '-') {
                    out.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push('"');
        } else {
            out.push(c);
        }
    }
    out
}

/// A dashboard answer: its status, its text, and its JSON with numbers as text.
async fn dash(s: &TestServer, key: &str, path: &str) -> (StatusCode, String, Value) {
    let r = s
        .client
        .get(s.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let value: Value = serde_json::from_str(&numbers_as_text(&text))
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, text, value)
}

/// A dashboard answer that counts every event committed before it. On PostgreSQL the
/// newest events wait while any older transaction on the server is open (other tests'
/// included), and an answer that had to give up waiting says `up_to_date: false`: ask again.
async fn current(s: &TestServer, path: &str) -> (String, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, text, v) = dash(s, &s.admin, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        if v["up_to_date"] == true {
            return (text, v);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never up to date: {text}"
        );
    }
}

async fn ok(s: &TestServer, path: &str) -> Value {
    current(s, path).await.1
}

fn dec(v: &Value) -> Decimal {
    let text = v.as_str().unwrap_or_else(|| panic!("not a number: {v}"));
    Decimal::from_str_exact(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn int(v: &Value) -> i64 {
    v.as_str()
        .unwrap_or_else(|| panic!("not a number: {v}"))
        .parse()
        .unwrap()
}

/// `end = start + new + expansion + reactivation − contraction − churn`, and `net` is the
/// movements' sum; in minor units too when they are given.
fn assert_identity(m: &Value, context: &str) {
    for suffix in ["", "_minor"] {
        let f = |name: &str| {
            let v = &m[format!("{name}{suffix}")];
            (!v.is_null()).then(|| dec(v))
        };
        let Some(start) = f("start") else {
            assert_eq!(suffix, "_minor", "{context}: {m}");
            continue;
        };
        let moved = f("new").unwrap() + f("expansion").unwrap() + f("reactivation").unwrap()
            - f("contraction").unwrap()
            - f("churn").unwrap();
        assert_eq!(f("net").unwrap(), moved, "{context}{suffix}: {m}");
        assert_eq!(f("end").unwrap(), start + moved, "{context}{suffix}: {m}");
    }
}

/// Every period of a series holds the identity and starts where the one before ended, and
/// the periods add up to the total.
fn assert_series(v: &Value) {
    let periods = v["periods"].as_array().unwrap();
    assert!(!periods.is_empty());
    let mut sums = [Decimal::ZERO; 5];
    let names = ["new", "expansion", "contraction", "churn", "reactivation"];
    for (i, p) in periods.iter().enumerate() {
        assert_identity(&p["mrr"], &format!("period {i}"));
        for c in p["by_currency"].as_array().unwrap() {
            assert_identity(&c["mrr"], &format!("period {i} {}", c["currency"]));
        }
        if i > 0 {
            assert_eq!(
                p["mrr"]["start"],
                periods[i - 1]["mrr"]["end"],
                "period {i}"
            );
        }
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += dec(&p["mrr"][name]);
        }
    }
    let total = &v["total"]["mrr"];
    assert_identity(total, "total");
    assert_eq!(total["start"], periods[0]["mrr"]["start"]);
    assert_eq!(total["end"], periods.last().unwrap()["mrr"]["end"]);
    for (sum, name) in sums.iter().zip(names) {
        assert_eq!(*sum, dec(&total[name]), "{name}");
    }
}

async fn post_ok(s: &TestServer, path: &str, body: Value) -> Value {
    let r = s.post(&s.admin, path, &body, None).await;
    assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    r.body
}

/// A recurring price of its own product.
async fn price(
    s: &TestServer,
    amount: &str,
    currency: &str,
    interval: &str,
    trial_days: Option<i64>,
) -> String {
    let product = post_ok(s, "/api/v1/revenue/products", json!({"name": "Plan"})).await;
    let mut body = json!({"product_id": product["id"], "currency": currency,
        "unit_amount": amount, "recurring": {"interval": interval}});
    if let Some(t) = trial_days {
        body["trial_days"] = json!(t);
    }
    post_ok(s, "/api/v1/revenue/prices", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn customer(s: &TestServer, name: &str) -> String {
    s.create_customer(&format!(
        "{name}-{}@example.com",
        uuid::Uuid::now_v7().simple()
    ))
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn subscribe(s: &TestServer, customer: &str, price: &str, pm: &str) -> Value {
    post_ok(
        s,
        SUBS,
        json!({"customer_id": customer, "price_id": price, "payment_method": pm}),
    )
    .await
}

async fn pay(s: &TestServer, customer: &str, amount: &str, currency: &str, pm: &str) -> String {
    post_ok(
        s,
        PAYMENTS,
        json!({"customer_id": customer, "amount": amount, "currency": currency,
               "payment_method": pm}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn advance(s: &TestServer, seconds: i64) {
    post_ok(
        s,
        "/api/v1/sandbox/clock/advance",
        json!({"seconds": seconds}),
    )
    .await;
}

/// Today on the business clock (a day number), once it is far enough from midnight (UTC)
/// that what a test does "today" all happens on one day.
async fn today(s: &TestServer) -> i64 {
    let into_day = chrono::Utc::now().timestamp().rem_euclid(DAY);
    if into_day > DAY - 300 {
        tokio::time::sleep(std::time::Duration::from_secs((DAY - into_day + 1) as u64)).await;
    }
    let clock = s.get(&s.admin, "/api/v1/sandbox/clock").await;
    let now = chrono::DateTime::parse_from_rfc3339(clock.body["now"].as_str().unwrap()).unwrap();
    now.timestamp().div_euclid(DAY)
}

fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * DAY, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

/// The dashboard answers over a range, as text (numbers as written).
async fn all_figures(s: &TestServer, from: i64, to: i64) -> Vec<String> {
    let (from, to) = (date(from), date(to));
    let mut out = Vec::new();
    for path in [
        format!("/api/v1/dashboard/overview?from={from}&to={to}"),
        format!("/api/v1/dashboard/revenue-metrics?from={from}&to={to}&interval=day"),
        format!("/api/v1/dashboard/revenue-metrics?from={from}&to={to}&interval=week"),
        format!("/api/v1/dashboard/customer-metrics?from={from}&to={to}"),
        format!("/api/v1/dashboard/overview?from={from}&to={to}&currency=eur"),
    ] {
        // Segments are kept by a consumer of their own, in the background: not analytics'.
        let (text, mut v) = current(s, &path).await;
        if let Some(o) = v.as_object_mut() {
            o.remove("segments");
        }
        assert!(text.len() > 100);
        out.push(v.to_string());
    }
    out
}

/// Runs `hephaestus analytics rebuild` on the server's database (the server keeps running).
async fn rebuild_with_the_binary(s: &TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::binary::command(dir.path())
        .env("DATABASE_URL", &s.db.url)
        .args(["analytics", "rebuild"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("analytics rebuilt from"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The figures the server kept as events arrived are those the rebuild computes from the
/// whole log, to the byte.
async fn assert_rebuild_reproduces(s: &TestServer, from: i64, to: i64) {
    let incremental = all_figures(s, from, to).await;
    rebuild_with_the_binary(s).await;
    let rebuilt = all_figures(s, from, to).await;
    for (a, b) in incremental.iter().zip(&rebuilt) {
        assert_eq!(a, b, "the rebuild changed a figure");
    }
}

/// Sum of the succeeded payments' amounts, as the payments list gives them.
async fn captured_minor(s: &TestServer) -> i64 {
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("{PAYMENTS}?limit=100&starting_after={a}"),
            None => format!("{PAYMENTS}?limit=100"),
        };
        let r = s.get(&s.admin, &path).await;
        let data = r.body["data"].as_array().unwrap();
        for p in data {
            if p["status"] != "failed" && p["status"] != "requires_payment_method" {
                total += p["amount_minor"].as_i64().unwrap();
            }
        }
        if r.body["has_more"] != true {
            return total;
        }
        after = data.last().map(|p| p["id"].as_str().unwrap().to_string());
    }
}

async fn subscription_mrr_movements_have_known_answers(db: Db) {
    let s = TestServer::start(db).await;
    let start = today(&s).await;
    let yearly = price(&s, "1200.00", "usd", "year", None).await;
    let weekly = price(&s, "3.00", "usd", "week", None).await;
    let m10 = price(&s, "10.00", "usd", "month", None).await;
    let m25 = price(&s, "25.00", "usd", "month", None).await;
    let m30 = price(&s, "30.00", "usd", "month", None).await;
    let m12 = price(&s, "12.00", "usd", "month", None).await;
    let trial = price(&s, "20.00", "usd", "month", Some(14)).await;
    let (a, b, c, d, e, f) = (
        customer(&s, "yearly").await,
        customer(&s, "weekly").await,
        customer(&s, "upgrades").await,
        customer(&s, "downgrades").await,
        customer(&s, "converts").await,
        customer(&s, "lapses").await,
    );

    subscribe(&s, &a, &yearly, "pm_card_visa").await;
    subscribe(&s, &b, &weekly, "pm_card_visa").await;
    let sub_c = subscribe(&s, &c, &m10, "pm_card_visa").await;
    let sub_d = subscribe(&s, &d, &m30, "pm_card_visa").await;
    let sub_e = subscribe(&s, &e, &trial, "pm_card_visa").await;
    subscribe(&s, &f, &trial, "pm_card_chargeDeclinedInsufficientFunds").await;
    assert_eq!(sub_e["status"], "trialing");

    // Day 0: 1,200.00 a year is 100.00 a month; 3.00 a week is 13.00 (× 52 ÷ 12); trials 0.
    let day0 = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}",
            date(start),
            date(start)
        ),
    )
    .await;
    assert_eq!(day0["monthly_recurring_revenue"], "153.00", "{day0}");
    assert_eq!(day0["arr"], "1836.00");
    assert_eq!(day0["mrr_movements"]["new"], "153.00");
    assert_eq!(day0["mrr_movements"]["start"], "0.00");
    assert_eq!(day0["total_revenue"], "1243.00", "1200 + 3 + 10 + 30");
    assert_eq!(day0["paying_customers"], "4");
    assert_eq!(day0["active_customers"], "6", "trials are live");
    assert_eq!(day0["arpa"], "38.25");
    assert_eq!(
        day0["by_currency"][0]["monthly_recurring_revenue_minor"],
        "15300"
    );
    assert!(day0["growth_rate_30d"].is_null(), "no MRR 30 days ago");
    assert!(day0["ltv"].is_null(), "no churn: LTV is null, not 0");

    // Day 10: an upgrade (10.00 → 25.00) and a downgrade (30.00 → 12.00), both prorated;
    // the upgraded one is then cancelled at the end of its period.
    advance(&s, 10 * DAY).await;
    let c_id = sub_c["id"].as_str().unwrap();
    let d_id = sub_d["id"].as_str().unwrap();
    post_ok(&s, &format!("{SUBS}/{c_id}"), json!({"price_id": m25})).await;
    post_ok(&s, &format!("{SUBS}/{d_id}"), json!({"price_id": m12})).await;
    let canceling = post_ok(
        &s,
        &format!("{SUBS}/{c_id}/cancel"),
        json!({"at_period_end": true}),
    )
    .await;
    assert_eq!(canceling["status"], "active");
    let c_ends =
        chrono::DateTime::parse_from_rfc3339(canceling["current_period_end"].as_str().unwrap())
            .unwrap()
            .timestamp()
            .div_euclid(DAY);
    let day10 = ok(
        &s,
        &format!(
            "/api/v1/dashboard/revenue-metrics?from={}&to={}",
            date(start + 10),
            date(start + 10)
        ),
    )
    .await;
    let moved = &day10["periods"][0]["mrr"];
    assert_eq!(moved["expansion"], "15.00", "{day10}");
    assert_eq!(moved["contraction"], "18.00");
    assert_eq!(
        moved["churn"], "0.00",
        "a cancellation at period end churns later"
    );
    assert_eq!(moved["end"], "150.00");

    // Day 15: one trial converted (new 20.00), one failed its first charge (past due, but a
    // trial that never paid counts nothing). Day 35: the cancelled plan churned at its
    // period's end, the failed trial lapsed after dunning, and the churned customer came
    // back (reactivation).
    advance(&s, 5 * DAY).await;
    let day15 = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}",
            date(start),
            date(start + 15)
        ),
    )
    .await;
    assert_eq!(day15["monthly_recurring_revenue"], "170.00", "{day15}");
    assert_eq!(day15["conversion_rate"]["trial_to_paid"], "100.00");
    advance(&s, 20 * DAY).await;
    let back = subscribe(&s, &c, &m10, "pm_card_visa").await;
    assert_eq!(back["status"], "active");

    let (from, to) = (start, start + 35);
    let all = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}",
            date(from),
            date(to)
        ),
    )
    .await;
    let m = &all["mrr_movements"];
    assert_eq!(m["start"], "0.00", "{all}");
    assert_eq!(m["new"], "173.00", "100 + 13 + 10 + 30 + 20");
    assert_eq!(m["expansion"], "15.00");
    assert_eq!(m["contraction"], "18.00");
    assert_eq!(
        m["churn"], "25.00",
        "the upgraded plan, at its period's end"
    );
    assert_eq!(m["reactivation"], "10.00");
    assert_eq!(m["end"], "155.00", "100 + 13 + 12 + 20 + 10");
    assert_identity(m, "overview");
    assert_eq!(all["monthly_recurring_revenue"], "155.00");
    assert_eq!(all["paying_customers"], "5");
    assert_eq!(all["active_customers"], "5", "the lapsed trial ended");
    assert_eq!(
        all["conversion_rate"]["trial_to_paid"], "50.00",
        "one converted, one lapsed"
    );
    assert_eq!(
        all["conversion_rate"]["signup_to_paid"], "83.33",
        "5 of 6 signups paid"
    );
    // 30 days before `to` (day 5) MRR was 153.00: growth 2 ÷ 153.
    assert_eq!(all["growth_rate_30d"], "1.31");
    // ARPA 155 ÷ 5 = 31.00; monthly churn 1 of the 4 paying on day 5: LTV 124.00.
    assert_eq!(all["arpa"], "31.00");
    assert_eq!(all["ltv"], "124.00");
    assert!(
        all["customer_churn_rate"].is_null(),
        "no one paid before the range"
    );
    // Revenue is what was paid: the payments list agrees to the cent.
    let captured = captured_minor(&s).await;
    assert_eq!(
        all["by_currency"][0]["total_revenue_minor"],
        captured.to_string()
    );
    assert_eq!(
        all["revenue"]["gross_minor"],
        Value::Null,
        "no minor units for totals"
    );
    assert_eq!(
        all["by_currency"][0]["revenue"]["gross_minor"],
        captured.to_string()
    );

    // The churn landed on the day the paid period ended.
    let series = ok(
        &s,
        &format!(
            "/api/v1/dashboard/revenue-metrics?from={}&to={}&interval=day",
            date(from),
            date(to)
        ),
    )
    .await;
    assert_series(&series);
    let periods = series["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 36);
    let churned_on: Vec<&str> = periods
        .iter()
        .filter(|p| p["mrr"]["churn"] != "0.00")
        .map(|p| p["from"].as_str().unwrap())
        .collect();
    assert_eq!(churned_on, vec![date(c_ends)]);
    for interval in ["week", "month"] {
        let v = ok(
            &s,
            &format!(
                "/api/v1/dashboard/revenue-metrics?from={}&to={}&interval={interval}",
                date(from),
                date(to)
            ),
        )
        .await;
        assert_series(&v);
        assert_eq!(v["total"]["mrr"], series["total"]["mrr"], "{interval}");
    }

    // From day 1: 4 paying at the start, 5 at the end.
    let customers = ok(
        &s,
        &format!(
            "/api/v1/dashboard/customer-metrics?from={}&to={}",
            date(from + 1),
            date(to)
        ),
    )
    .await;
    assert_eq!(customers["customer_growth_rate"], "25.00", "{customers}");
    assert_eq!(customers["avg_lifetime_value"], "124.00");
    assert_eq!(customers["paying_customers_start"], "4");
    assert_eq!(customers["new_customers"], "1");
    assert_eq!(customers["churned_customers"], "1");
    assert_eq!(customers["reactivated_customers"], "1");
    assert_eq!(customers["customer_churn_rate"], "25.00");
    let rates = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}",
            date(from + 1),
            date(to)
        ),
    )
    .await;
    assert_eq!(rates["revenue_churn_rate"], "28.10", "(25 + 18) ÷ 153");
    // Cohorts hold every paying customer and all the MRR.
    let cohorts = ok(
        &s,
        &format!(
            "/api/v1/dashboard/customer-metrics?from={}&to={}",
            date(from),
            date(to)
        ),
    )
    .await;
    assert_eq!(cohorts["lifecycle"]["registered"], "6");
    assert_eq!(cohorts["lifecycle"]["activated"], "6");
    assert_eq!(cohorts["lifecycle"]["revenue"], "5");
    assert_eq!(cohorts["lifecycle"]["retained"], "5");
    let (mut paying, mut mrr) = (0, Decimal::ZERO);
    for cohort in cohorts["cohorts"].as_array().unwrap() {
        let last = cohort["months"].as_array().unwrap().last().unwrap();
        paying += int(&last["customers"]);
        mrr += dec(&last["mrr"]);
    }
    assert_eq!(paying, 5, "{cohorts}");
    assert_eq!(mrr, dec(&json!("155.00")));

    assert_rebuild_reproduces(&s, from, to).await;
}

/// Closes the sandbox dispute of `payment` through the domain code a Stripe webhook runs.
async fn settle_dispute(s: &TestServer, payment_id: &str, status: &str, reinstated: i64) {
    let id = payment_id.to_string();
    let status = status.to_string();
    s.store
        .write(move |tx| {
            Box::pin(async move {
                let p = payments::get_for_update(tx, &id).await?.unwrap();
                let amount = p.amount.minor;
                // The sandbox names a charge's dispute after it (pi_sbx_X → dp_sbx_X).
                let gateway_id = format!(
                    "dp_sbx_{}",
                    &p.gateway_id.as_deref().unwrap()["pi_sbx_".len()..]
                );
                let state = |status: &str| DisputeState {
                    gateway_id: gateway_id.clone(),
                    amount_minor: amount,
                    reason: Some("fraudulent".into()),
                    status: status.into(),
                    withdrawn_minor: amount,
                    reinstated_minor: reinstated,
                };
                let created = hephaestus_core::Timestamp::now().as_micros() / 1_000_000;
                if reinstated > 0 {
                    hephaestus_billing::disputes::apply(
                        tx,
                        p.clone(),
                        &state("won"),
                        Change::FundsReinstated,
                        created,
                    )
                    .await?;
                }
                let p = payments::get_for_update(tx, &id).await?.unwrap();
                hephaestus_billing::disputes::apply(tx, p, &state(&status), Change::Closed, created)
                    .await
            })
        })
        .await
        .unwrap();
}

async fn revenue_in_two_currencies_with_refunds_and_disputes(db: Db) {
    let s = TestServer::start(db).await;
    let day = today(&s).await;
    let rate = post_ok(
        &s,
        "/api/v1/revenue/exchange-rates",
        json!({"base": "EUR", "quote": "USD", "rate": "1.0832"}),
    )
    .await;
    let one_off = customer(&s, "one-off").await;

    // USD: 100.00 less a 30.00 refund; 20.00 disputed and lost; 15.00 disputed and won.
    let paid = pay(&s, &one_off, "100.00", "usd", "pm_card_visa").await;
    post_ok(
        &s,
        &format!("{PAYMENTS}/{paid}/refunds"),
        json!({"amount": "30.00"}),
    )
    .await;
    let lost = pay(&s, &one_off, "20.00", "usd", "pm_card_createDispute").await;
    let won = pay(&s, &one_off, "15.00", "usd", "pm_card_createDispute").await;
    settle_dispute(&s, &lost, "lost", 0).await;
    settle_dispute(&s, &won, "won", 1500).await;
    // EUR 50.00 one-time; GBP 5.00, for which no rate is stored.
    pay(&s, &one_off, "50.00", "eur", "pm_card_visa").await;
    pay(&s, &one_off, "5.00", "gbp", "pm_card_visa").await;

    // MRR: 100.00 USD (yearly), 40.00 EUR, and a customer paying in both currencies
    // (10.00 USD, then 5.00 EUR: an expansion of the same customer, not a new one).
    let yearly = price(&s, "1200.00", "usd", "year", None).await;
    let eur40 = price(&s, "40.00", "eur", "month", None).await;
    let usd10 = price(&s, "10.00", "usd", "month", None).await;
    let eur5 = price(&s, "5.00", "eur", "month", None).await;
    let (r, q, both) = (
        customer(&s, "usd").await,
        customer(&s, "eur").await,
        customer(&s, "both").await,
    );
    subscribe(&s, &r, &yearly, "pm_card_visa").await;
    subscribe(&s, &q, &eur40, "pm_card_visa").await;
    subscribe(&s, &both, &usd10, "pm_card_visa").await;
    subscribe(&s, &both, &eur5, "pm_card_visa").await;

    let v = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}",
            date(day),
            date(day)
        ),
    )
    .await;
    // USD: 100 + 20 + 15 + 1200 + 10 = 1345 in, 30 refunded, 20 lost to a dispute: 1295.00.
    // EUR: 50 + 40 + 5 = 95.00, at 1.0832 = 102.904 USD. GBP has no rate: left out.
    assert_eq!(v["total_revenue"], "1397.904", "{v}");
    assert_eq!(
        v["monthly_recurring_revenue"], "158.744",
        "110 + 45 × 1.0832"
    );
    assert_eq!(v["arr"], "1904.928");
    assert_eq!(v["mrr_movements"]["new"], "153.328", "110 + 40 × 1.0832");
    assert_eq!(v["mrr_movements"]["expansion"], "5.416", "5 × 1.0832");
    assert_eq!(v["paying_customers"], "3");
    assert_eq!(v["arpa"], "52.91", "158.744 ÷ 3, half to even");
    assert_eq!(v["missing_rates"], json!(["GBP"]));
    let rev = &v["revenue"];
    assert_eq!(rev["payments"], "9", "5 one-time, 4 first invoices");
    assert_eq!(rev["refunds"], "30.00");
    assert_eq!(
        rev["disputes"], "20.00",
        "the lost one; the won one came back"
    );
    let by: Vec<&Value> = v["by_currency"].as_array().unwrap().iter().collect();
    let codes: Vec<&str> = by.iter().map(|c| c["currency"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["EUR", "GBP", "USD"]);
    let (eur, gbp, usd) = (by[0], by[1], by[2]);
    assert_eq!(eur["exchange"]["rate"], "1.0832");
    assert_eq!(eur["exchange"]["rate_id"], rate["id"]);
    assert_eq!(eur["exchange"]["rate_inverted"], false);
    assert_eq!(eur["monthly_recurring_revenue"], "45.00");
    assert_eq!(eur["monthly_recurring_revenue_minor"], "4500");
    assert_eq!(eur["total_revenue_minor"], "9500");
    assert_eq!(eur["mrr_movements"]["new_minor"], "4000");
    assert_eq!(eur["mrr_movements"]["expansion_minor"], "500");
    assert!(gbp["exchange"]["rate"].is_null());
    assert_eq!(gbp["total_revenue"], "5.00");
    assert_eq!(usd["exchange"]["rate"], "1");
    assert_eq!(usd["total_revenue"], "1295.00");
    assert_eq!(usd["revenue"]["disputes_minor"], "2000");
    assert_eq!(usd["revenue"]["refunds_minor"], "3000");
    assert_eq!(usd["monthly_recurring_revenue_minor"], "11000");
    assert_identity(&v["mrr_movements"], "reporting");
    for c in &by {
        assert_identity(&c["mrr_movements"], c["currency"].as_str().unwrap());
    }

    // Reported in EUR through the inverse of the stored pair (rounded to 12 decimals).
    let in_eur = ok(
        &s,
        &format!(
            "/api/v1/dashboard/overview?from={}&to={}&currency=eur",
            date(day),
            date(day)
        ),
    )
    .await;
    assert_eq!(in_eur["reporting_currency"], "EUR");
    let usd_in_eur = &in_eur["by_currency"][2]["exchange"];
    assert_eq!(usd_in_eur["rate"], "0.923190546529");
    assert_eq!(usd_in_eur["rate_inverted"], true);
    assert_eq!(
        in_eur["monthly_recurring_revenue"], "146.55096011819",
        "45 + 110 × 0.923190546529"
    );

    let series = ok(
        &s,
        &format!(
            "/api/v1/dashboard/revenue-metrics?from={}&to={}&interval=month",
            date(day - 40),
            date(day)
        ),
    )
    .await;
    assert_series(&series);
    assert_eq!(series["total"]["revenue"]["net"], "1397.904");

    assert_rebuild_reproduces(&s, day - 1, day).await;
}

async fn concurrent_writes_reads_and_rebuilds_count_each_event_once(db: Db) {
    let s = std::sync::Arc::new(TestServer::start(db).await);
    let day = today(&s).await;
    let customers: Vec<String> = futures::future::join_all((0..4).map(|i| {
        let s = s.clone();
        async move { customer(&s, &format!("busy{i}")).await }
    }))
    .await;
    let path = format!(
        "/api/v1/dashboard/overview?from={}&to={}",
        date(day),
        date(day)
    );
    // Payments, dashboard reads (each of which counts what is new) and rebuilds that take
    // the consumer over, all at once.
    let writes = futures::future::join_all((0..60).map(|i| {
        let (s, c) = (s.clone(), customers[i % 4].clone());
        async move {
            pay(
                &s,
                &c,
                &format!("{}.{:02}", 1 + i, i),
                "usd",
                "pm_card_visa",
            )
            .await;
        }
    }));
    let reads = futures::future::join_all((0..20).map(|_| {
        let (s, path) = (s.clone(), path.clone());
        async move {
            let (status, text, _) = dash(&s, &s.admin, &path).await;
            assert_eq!(status, StatusCode::OK, "{text}");
        }
    }));
    let rebuilds = async {
        for _ in 0..2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            hephaestus_analytics::rebuild(&s.store).await.unwrap();
        }
    };
    tokio::join!(writes, reads, rebuilds);
    let expected: i64 = (0..60).map(|i| (1 + i) * 100 + i).sum();
    let v = ok(&s, &path).await;
    assert_eq!(
        v["by_currency"][0]["total_revenue_minor"],
        expected.to_string(),
        "{v}"
    );
    assert_eq!(v["revenue"]["payments"], "60");
    assert_rebuild_reproduces(&s, day, day).await;
}

/// One new 10.00 monthly customer in each of five months: month-end MRR 10, 20, 30, 40, 50,
/// a straight line that Holt's method continues exactly, with no spread.
async fn the_forecast_continues_a_steady_trend(db: Db) {
    let s = TestServer::start(db).await;
    let plan = price(&s, "10.00", "usd", "month", None).await;
    let mut days = Vec::new();
    for i in 0..5 {
        if i > 0 {
            // To the 15th of the next month.
            let day = today(&s).await;
            let date = chrono::DateTime::from_timestamp(day * DAY, 0)
                .unwrap()
                .date_naive();
            let next = date
                .with_day(1)
                .unwrap()
                .checked_add_months(chrono::Months::new(1))
                .unwrap()
                .with_day(15)
                .unwrap();
            advance(&s, (next - date).num_days() * DAY).await;
        }
        let c = customer(&s, &format!("month{i}")).await;
        subscribe(&s, &c, &plan, "pm_card_visa").await;
        days.push(today(&s).await);
    }
    let to = *days.last().unwrap();
    let v = ok(
        &s,
        &format!(
            "/api/v1/dashboard/revenue-metrics?from={}&to={}&interval=month",
            date(days[0]),
            date(to)
        ),
    )
    .await;
    assert_series(&v);
    let f = &v["forecast"];
    assert_eq!(f["method"], "holt_linear", "{v}");
    let history: Vec<&str> = f["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mrr"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["10.00", "20.00", "30.00", "40.00", "50.00"]);
    let months = f["months"].as_array().unwrap();
    assert_eq!(months.len(), 3);
    for (m, expected) in months.iter().zip(["60.00", "70.00", "80.00"]) {
        assert_eq!(m["mrr"], expected, "{f}");
        assert_eq!(
            m["mrr_lower"], expected,
            "a straight line has no spread: {f}"
        );
        assert_eq!(m["mrr_upper"], expected);
    }
    assert_eq!(
        months[0]["month"].as_str().unwrap(),
        chrono::DateTime::from_timestamp(to * DAY, 0)
            .unwrap()
            .date_naive()
            .checked_add_months(chrono::Months::new(1))
            .unwrap()
            .format("%Y-%m")
            .to_string()
    );
    // Less than three months of MRR: no forecast.
    let early = ok(
        &s,
        &format!(
            "/api/v1/dashboard/revenue-metrics?from={}&to={}",
            date(days[0]),
            date(days[1])
        ),
    )
    .await;
    assert!(early["forecast"].is_null(), "{early}");
}

/// RFC 4180 rows (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "the last line has no CRLF"
    );
    rows
}

/// The CSV answer as maps from its header's names to each row's fields.
async fn csv_rows(
    s: &TestServer,
    path: &str,
    accept: bool,
) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut req = s.client.get(s.url(path)).bearer_auth(&s.admin);
    if accept {
        req = req.header("accept", "text/csv");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=")
    );
    let rows = parse_csv(&r.text().await.unwrap());
    let header = rows[0].clone();
    rows[1..]
        .iter()
        .map(|row| {
            assert_eq!(row.len(), header.len(), "{row:?}");
            header.iter().cloned().zip(row.iter().cloned()).collect()
        })
        .collect()
}

/// The JSON value at a dotted path, as the CSV writes it (`null` as an empty field).
fn at(v: &Value, path: &str) -> String {
    let mut v = v;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => panic!("{path} is {other}"),
    }
}

async fn csv_answers_parse_back_to_the_json_figures(db: Db) {
    let s = TestServer::start(db).await;
    let day = today(&s).await;
    post_ok(
        &s,
        "/api/v1/revenue/exchange-rates",
        json!({"base": "EUR", "quote": "USD", "rate": "1.0832"}),
    )
    .await;
    let c = customer(&s, "csv").await;
    pay(&s, &c, "12.34", "eur", "pm_card_visa").await;
    let paid = pay(&s, &c, "100.00", "usd", "pm_card_visa").await;
    post_ok(
        &s,
        &format!("{PAYMENTS}/{paid}/refunds"),
        json!({"amount": "0.01"}),
    )
    .await;
    subscribe(
        &s,
        &c,
        &price(&s, "9.99", "eur", "month", None).await,
        "pm_card_visa",
    )
    .await;
    subscribe(
        &s,
        &c,
        &price(&s, "1200.00", "usd", "year", None).await,
        "pm_card_visa",
    )
    .await;
    let range = format!("from={}&to={}", date(day - 3), date(day));

    let path = format!("/api/v1/dashboard/overview?{range}");
    let json = ok(&s, &path).await;
    let rows = csv_rows(&s, &format!("{path}&format=csv"), false).await;
    assert!(rows.len() > 30, "{rows:?}");
    for row in &rows {
        let figure = &row["figure"];
        if row["scope"] == "total" {
            assert_eq!(row["currency"], "USD");
            assert_eq!(row["value"], at(&json, figure), "{figure}");
            assert_eq!(row["value_minor"], "");
        } else {
            let c = json["by_currency"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["currency"] == row["currency"].as_str())
                .unwrap();
            assert_eq!(row["value"], at(c, figure), "{figure}");
            let minor = &c.pointer(&format!("/{}_minor", figure.replace('.', "/")));
            assert_eq!(
                row["value_minor"],
                minor
                    .map(|m| m.as_str().unwrap().to_string())
                    .unwrap_or_default(),
                "{figure}"
            );
        }
    }
    assert!(
        rows.iter()
            .any(|r| r["figure"] == "monthly_recurring_revenue"
                && r["scope"] == "total"
                && r["value"] == "110.821168"),
        "100 + 9.99 × 1.0832: {rows:?}"
    );

    let path = format!("/api/v1/dashboard/revenue-metrics?{range}&interval=day");
    let json = ok(&s, &path).await;
    let rows = csv_rows(&s, &path, true).await;
    let periods = json["periods"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        (periods.len() + 1) * 3,
        "a total and two currencies each"
    );
    let columns = [
        ("mrr_start", "mrr.start"),
        ("new", "mrr.new"),
        ("expansion", "mrr.expansion"),
        ("contraction", "mrr.contraction"),
        ("churn", "mrr.churn"),
        ("reactivation", "mrr.reactivation"),
        ("net", "mrr.net"),
        ("mrr_end", "mrr.end"),
        ("payments", "revenue.payments"),
        ("revenue_gross", "revenue.gross"),
        ("refunds", "revenue.refunds"),
        ("disputes", "revenue.disputes"),
        ("revenue_net", "revenue.net"),
    ];
    for row in &rows {
        let period = if row["scope"].starts_with("range") {
            &json["total"]
        } else {
            periods
                .iter()
                .find(|p| p["from"] == row["from"].as_str())
                .unwrap()
        };
        let source = if row["scope"].ends_with("currency") {
            period["by_currency"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["currency"] == row["currency"].as_str())
                .unwrap()
        } else {
            for rate in [
                "gross_mrr_churn_rate",
                "net_mrr_churn_rate",
                "net_revenue_retention",
            ] {
                assert_eq!(row[rate], at(period, rate), "{rate}");
            }
            period
        };
        for (column, path) in columns {
            assert_eq!(row[column], at(source, path), "{column} of {row:?}");
        }
    }

    let path = format!("/api/v1/dashboard/customer-metrics?{range}");
    let json = ok(&s, &path).await;
    let rows = csv_rows(&s, &format!("{path}&format=csv"), false).await;
    for row in &rows {
        let figure = &row["figure"];
        if let Some(name) = figure.strip_prefix("cohorts.") {
            let cohort = json["cohorts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["cohort"] == row["cohort"].as_str())
                .unwrap();
            let expected = match name.strip_prefix("months.") {
                None => at(cohort, name),
                Some(field) => {
                    let month = cohort["months"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["month"] == row["month"].as_str())
                        .unwrap();
                    at(month, field)
                }
            };
            assert_eq!(row["value"], expected, "{row:?}");
        } else if figure.starts_with("segments.") {
            // Segments are recomputed in the background by their own consumer: they may
            // move between the two answers.
        } else {
            assert_eq!(row["value"], at(&json, figure), "{figure}");
        }
    }
    assert!(rows.iter().any(|r| r["figure"] == "cohorts.months.mrr"));

    let r = s
        .get(
            &s.admin,
            &format!("/api/v1/dashboard/overview?{range}&format=xml"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.field(), Some("format"));
}

async fn marketing_spend_gives_cac(db: Db) {
    let s = TestServer::start(db).await;
    let day = today(&s).await;
    post_ok(
        &s,
        "/api/v1/revenue/exchange-rates",
        json!({"base": "EUR", "quote": "USD", "rate": "1.0832"}),
    )
    .await;
    // 310.00 USD over 31 days (10.00 a day), 100.00 EUR over the last 10 days.
    let ads = json!({"amount": "310.00", "currency": "usd", "channel": "ads",
        "period": {"from": date(day - 30), "to": date(day)}});
    let first = s
        .post(&s.admin, "/api/v1/marketing/spend", &ads, Some("spend-1"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["amount"], json!(310.0));
    assert_eq!(first.body["amount_minor"], 31000);
    assert_eq!(first.body["period"]["from"], date(day - 30));
    let replay = s
        .post(&s.admin, "/api/v1/marketing/spend", &ads, Some("spend-1"))
        .await;
    assert_eq!(
        replay.body["id"], first.body["id"],
        "replayed, not recorded twice"
    );
    post_ok(
        &s,
        "/api/v1/marketing/spend",
        json!({"amount": 100, "currency": "EUR", "channel": "newsletter",
            "period": {"from": date(day - 9), "to": date(day)}}),
    )
    .await;
    let list = s.get(&s.admin, "/api/v1/marketing/spend").await;
    let channels: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(
        channels,
        vec!["newsletter", "ads"],
        "newest first, once each"
    );

    // Three customers pay for the first time; one of them twice.
    for name in ["p1", "p2", "p3"] {
        let c = customer(&s, name).await;
        pay(&s, &c, "5.00", "usd", "pm_card_visa").await;
        if name == "p3" {
            pay(&s, &c, "5.00", "usd", "pm_card_visa").await;
        }
    }
    let range = format!("from={}&to={}", date(day - 9), date(day));
    let m = ok(&s, &format!("/api/v1/dashboard/marketing-metrics?{range}")).await;
    // 10 days of ads (100.00) + 100.00 EUR at 1.0832 = 208.32; ÷ 3 new paying customers.
    assert_eq!(m["spend"], "208.32", "{m}");
    assert_eq!(m["new_paying_customers"], "3");
    assert_eq!(m["cac"], "69.44");
    assert_eq!(m["channels"][0]["channel"], "ads");
    assert_eq!(m["channels"][0]["spend"], "100.00");
    assert_eq!(m["channels"][1]["spend"], "108.32");
    assert_eq!(m["channels"][1]["by_currency"][0]["spend_minor"], "10000");
    assert_eq!(m["campaigns"], json!([]));
    let o = ok(&s, &format!("/api/v1/dashboard/overview?{range}")).await;
    assert_eq!(o["cac"], "69.44");
    let rows = csv_rows(
        &s,
        &format!("/api/v1/dashboard/marketing-metrics?{range}&format=csv"),
        false,
    )
    .await;
    for row in &rows {
        let expected = match row["figure"].as_str() {
            "channels.spend" => m["channels"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["channel"] == row["channel"].as_str())
                .map(|c| at(c, "spend"))
                .unwrap(),
            "channels.by_currency.spend" => continue,
            figure => at(&m, figure),
        };
        assert_eq!(row["value"], expected, "{row:?}");
    }
    // No spend recorded for a range: no CAC (not 0).
    let before = ok(
        &s,
        &format!(
            "/api/v1/dashboard/marketing-metrics?from={}&to={}",
            date(day - 60),
            date(day - 31)
        ),
    )
    .await;
    assert!(
        before["spend"].is_null() && before["cac"].is_null(),
        "{before}"
    );

    for (body, field) in [
        (
            json!({"amount": "-1.00", "currency": "usd", "channel": "ads",
            "period": {"from": date(day), "to": date(day)}}),
            "amount",
        ),
        (
            json!({"amount": "1.001", "currency": "usd", "channel": "ads",
            "period": {"from": date(day), "to": date(day)}}),
            "amount",
        ),
        (
            json!({"amount": "1.00", "currency": "usd", "channel": "Ads!",
            "period": {"from": date(day), "to": date(day)}}),
            "channel",
        ),
        (
            json!({"amount": "1.00", "currency": "usd", "channel": "ads",
            "period": {"from": date(day), "to": date(day - 1)}}),
            "period.from",
        ),
        (
            json!({"amount": "1.00", "currency": "usd", "channel": "ads",
            "period": {"from": date(day - 400), "to": date(day)}}),
            "period.to",
        ),
        (
            json!({"amount": "1.00", "currency": "usd", "channel": "ads",
            "period": {"from": "soon", "to": date(day)}}),
            "period.from",
        ),
    ] {
        let r = s
            .post(&s.admin, "/api/v1/marketing/spend", &body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.field(), Some(field), "{body}: {}", r.body);
    }
    let read = s.key(hephaestus_core::keys::Scope::Read).await;
    let r = s.post(&read, "/api/v1/marketing/spend", &ads, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn bad_ranges_are_refused_with_the_field_named(db: Db) {
    let s = TestServer::start(db).await;
    for (path, field) in [
        ("/api/v1/dashboard/overview?from=2026-02-30", "from"),
        ("/api/v1/dashboard/overview?to=yesterday", "to"),
        (
            "/api/v1/dashboard/overview?from=1969-12-31&to=1970-01-05",
            "from",
        ),
        (
            "/api/v1/dashboard/overview?from=2026-03-02&to=2026-03-01",
            "from",
        ),
        (
            "/api/v1/dashboard/overview?from=2000-01-01&to=2026-01-01",
            "from",
        ),
        ("/api/v1/dashboard/overview?currency=xyz", "currency"),
        (
            "/api/v1/dashboard/revenue-metrics?interval=hour",
            "interval",
        ),
        ("/api/v1/dashboard/customer-metrics?from=2026-1-1", "from"),
        ("/api/v1/dashboard/overview?limit=5", "limit"),
    ] {
        let r = s.get(&s.admin, path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_eq!(r.code(), "invalid_request", "{path}");
        assert_eq!(r.field(), Some(field), "{path}: {}", r.body);
    }
    // A read key is enough; an empty database answers zeros and nulls, not errors.
    let read = s.key(hephaestus_core::keys::Scope::Read).await;
    let (status, text, v) = dash(&s, &read, "/api/v1/dashboard/overview").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["total_revenue"], "0.00");
    assert_eq!(v["monthly_recurring_revenue"], "0.00");
    assert!(v["growth_rate_30d"].is_null() && v["ltv"].is_null() && v["arpa"].is_null());
    let (status, text, v) =
        dash(&s, &read, "/api/v1/dashboard/revenue-metrics?interval=week").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_series(&v);
}
