//! Every world through the real host with the Rust examples, and the JavaScript and
//! Python twins giving the same answers as their Rust originals.

mod common;

use std::sync::OnceLock;

use common::*;
use hephaestus_plugins::model::{
    Action, Attribute, Campaign, CustomerProfile, DomainEvent, Enqueue, EventRequest,
    PersonalizeRequest, PricePoint, RecommendRequest, SegmentRequest,
};
use hephaestus_plugins::{DecidedBy, Decision, LoadResult, default_segments};

const PLUGINS: [&str; 6] = [
    "volume-pricing",
    "volume-pricing-js",
    "lifecycle-segments",
    "lifecycle-segments-py",
    "segment-subjects",
    "lifecycle-triggers",
];

/// One host with every example loaded, shared by the tests of this file (loading the
/// JS and Python components is the slow part).
fn host() -> &'static TestHost {
    static HOST: OnceLock<TestHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let t = test_host(|_| {});
        for name in PLUGINS {
            // These tests compare answers, not speed: give the guests (the interpreted
            // ones especially) room on a busy test machine.
            let manifest = relaxed(&format!("{name}.wasm"));
            t.install(&format!("{name}.wasm"), name, Some(&manifest));
        }
        let loaded = t.host.load_all();
        assert!(
            loaded.iter().all(|(_, r)| *r == LoadResult::Loaded),
            "{loaded:?}"
        );
        t
    })
}

fn plugin_of<T>(d: &Decision<T>) -> &str {
    match &d.decided_by {
        DecidedBy::Plugin { name, .. } => name,
        other => panic!("expected a plugin decision, got {other:?}"),
    }
}

#[test]
fn pricing_quotes_match_between_rust_and_javascript() {
    let t = host();
    let cases = [
        (quote_request(9700, 1, &[]), 9700, 0, "list price"),
        (
            quote_request(9700, 10, &[]),
            87_300,
            9_700,
            "10% volume discount for 10+ units",
        ),
        (
            quote_request(9700, 50, &["high_value"]),
            363_750,
            121_250,
            "20% volume discount for 50+ units; 5% loyalty discount for high_value customers",
        ),
        (quote_request(333, 10, &["high_value"]), 2_830, 500, ""),
    ];
    for (request, amount, discount, reason) in cases {
        let rust = t.host.decide_with("volume-pricing", &request);
        let js = t.host.decide_with("volume-pricing-js", &request);
        assert_eq!(plugin_of(&rust), "volume-pricing");
        assert_eq!(plugin_of(&js), "volume-pricing-js");
        assert_eq!(rust.value.amount, usd(amount));
        assert_eq!(rust.value.discount, usd(discount));
        if !reason.is_empty() {
            assert_eq!(rust.value.reason, reason);
        }
        assert_eq!(js.value, rust.value, "JS and Rust disagree on {request:?}");
        assert!(rust.fuel_used > 0 && js.fuel_used > rust.fuel_used);
        assert!(rust.peak_memory > 0);
    }
    // The slot without a name: the first pricing plugin by name.
    let d = t.host.decide(&quote_request(9700, 10, &[]));
    assert_eq!(plugin_of(&d), "volume-pricing");
}

#[test]
fn recommendations_match_between_rust_and_javascript() {
    let t = host();
    let point = |price, customers, failed, revenue| PricePoint {
        unit_price: usd(price),
        customers,
        purchases: customers,
        failed,
        revenue: usd(revenue),
    };
    let request = |history| RecommendRequest {
        product_id: "prod_seats".into(),
        product_name: "Seats".into(),
        current_price: usd(9700),
        customer_segment: None,
        history,
    };
    let empty = request(vec![]);
    let evidence = request(vec![
        point(12_900, 80, 40, 1_032_000),
        point(9_700, 100, 50, 970_000),
    ]);
    // No evidence: both keep the current price and expect no change, as the host does.
    let rust = t.host.decide_with("volume-pricing", &empty);
    assert_eq!(plugin_of(&rust), "volume-pricing");
    assert_eq!(rust.value.recommended_price, usd(9_700));
    assert_eq!(rust.value.revenue_change_basis_points, 0);
    assert_eq!(rust.value.conversion_change_basis_points, 0);
    assert_eq!(
        t.host.decide_with("volume-pricing-js", &empty).value,
        rust.value
    );

    let rust = t.host.decide_with("volume-pricing", &evidence);
    assert_eq!(plugin_of(&rust), "volume-pricing");
    assert_eq!(rust.value.recommended_price, usd(12_900));
    assert_eq!(rust.value.revenue_change_basis_points, 3_299);
    let js = t.host.decide_with("volume-pricing-js", &evidence);
    assert_eq!(plugin_of(&js), "volume-pricing-js");
    assert_eq!(js.value, rust.value);
}

fn customers() -> Vec<CustomerProfile> {
    let base = customer();
    let mut list = vec![base.clone()];
    let mut c = base.clone();
    c.created_at = NOW - 10 * DAY; // new, by the business clock
    list.push(c);
    let mut c = base.clone();
    c.activity.payments_last_30_days = 6;
    list.push(c);
    let mut c = base.clone();
    c.activity.active_subscriptions = 2;
    c.activity.has_past_due = true;
    list.push(c);
    let mut c = base.clone();
    c.activity.last_payment_at = Some(NOW - 61 * DAY);
    list.push(c);
    let mut c = base.clone();
    c.activity.failed_payments_last_30_days = 2;
    list.push(c);
    let mut c = base.clone();
    c.lifetime_value = usd(500_001);
    list.push(c);
    let mut c = base.clone();
    c.attributes = vec![Attribute::new("plan", "enterprise")];
    list.push(c);
    let mut c = base.clone();
    c.attributes = vec![Attribute::new("seats", "150")];
    c.created_at = NOW - 2 * DAY;
    c.lifetime_value = usd(900_000);
    list.push(c);
    list
}

#[test]
fn segmentation_matches_between_rust_python_and_the_builtin_rules() {
    let t = host();
    let mut seen_tags = std::collections::BTreeSet::new();
    for customer in customers() {
        let request = SegmentRequest {
            customer: customer.clone(),
            high_value_threshold: None,
        };
        let rust = t.host.decide_with("lifecycle-segments", &request);
        let python = t.host.decide_with("lifecycle-segments-py", &request);
        assert_eq!(plugin_of(&rust), "lifecycle-segments");
        assert_eq!(plugin_of(&python), "lifecycle-segments-py");
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let builtin = sorted(default_segments(&customer, NOW, None));
        assert_eq!(
            sorted(rust.value.clone()),
            builtin,
            "Rust vs built-in for {customer:?}"
        );
        assert_eq!(
            sorted(python.value.clone()),
            builtin,
            "Python vs built-in for {customer:?}"
        );
        seen_tags.extend(builtin);
    }
    // The cases above exercise every tag, including `new` through the business clock.
    assert_eq!(
        seen_tags.into_iter().collect::<Vec<_>>(),
        ["at_risk", "enterprise", "high_value", "new", "power_user"]
    );
}

#[test]
fn personalization_picks_a_subject_by_segment() {
    let t = host();
    let mut customer = customer();
    customer.segments = vec!["at_risk".into()];
    let request = PersonalizeRequest {
        customer,
        campaign: Campaign {
            id: "cmp_1".into(),
            name: "Win back".into(),
            template: "win_back".into(),
            subject: "We have news".into(),
        },
        variables: vec![],
    };
    let d = t.host.decide(&request);
    assert_eq!(plugin_of(&d), "segment-subjects");
    assert_eq!(d.value.subject.as_deref(), Some("Hi Ada, we miss you"));
    let vars: Vec<(&str, &str)> = d
        .value
        .variables
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_str()))
        .collect();
    assert!(vars.contains(&("first_name", "Ada")), "{vars:?}");
    assert!(vars.contains(&("segment", "at_risk")), "{vars:?}");
}

#[test]
fn triggers_schedule_lifecycle_mail() {
    let t = host();
    let event = |kind: &str| EventRequest {
        event: DomainEvent {
            id: format!("evt_{kind}"),
            kind: kind.into(),
            occurred_at: NOW,
            customer_id: Some("cus_test".into()),
            subject_id: "sub_1".into(),
            data: "{}".into(),
        },
        customer: Some(customer()),
    };
    let d = t.host.decide(&event("customer.created"));
    assert_eq!(plugin_of(&d), "lifecycle-triggers");
    assert_eq!(
        d.value,
        vec![Action::Enqueue(Enqueue {
            template: "welcome".into(),
            customer_id: "cus_test".into(),
            delay_seconds: 0,
        })]
    );
    let d = t.host.decide(&event("subscription.canceled"));
    assert_eq!(
        d.value,
        vec![Action::Enqueue(Enqueue {
            template: "win_back".into(),
            customer_id: "cus_test".into(),
            delay_seconds: 7 * 86_400,
        })]
    );
    assert_eq!(t.host.decide(&event("payment.succeeded")).value, vec![]);
}

#[test]
fn status_lists_every_plugin_with_its_world_and_counters() {
    let t = host();
    t.host.decide(&quote_request(100, 1, &[]));
    let list = t.host.list();
    assert_eq!(list.len(), PLUGINS.len());
    for status in &list {
        assert_eq!(
            status.state,
            hephaestus_plugins::PluginState::Active,
            "{status:?}"
        );
        assert_eq!(status.version.as_ref().map(String::len), Some(64));
        assert!(status.world.is_some() && status.loaded_at.is_some());
    }
    let pricing = list.iter().find(|s| s.name == "volume-pricing").unwrap();
    assert!(pricing.calls >= 1 && pricing.latency_p99_us.is_some());
    let json = serde_json::to_value(t.host.metrics()).unwrap();
    assert!(
        json["plugins"]
            .as_array()
            .is_some_and(|p| p.len() == PLUGINS.len())
    );
}

#[test]
fn a_pricing_plugin_limited_to_products_serves_only_those() {
    let t = test_host(|_| {});
    t.load(
        "volume-pricing.wasm",
        "everything",
        Some("[config]\ntier_1_discount_bp = \"100\""),
    );
    t.load(
        "volume-pricing.wasm",
        "special",
        Some("products = [\"prod_special\"]\n[config]\ntier_1_discount_bp = \"300\""),
    );
    let mut special = quote_request(1000, 10, &[]);
    special.product_id = "prod_special".into();
    let d = t.host.decide(&special);
    assert_eq!(plugin_of(&d), "special");
    assert_eq!(d.value.reason, "3% volume discount for 10+ units");
    let d = t.host.decide(&quote_request(1000, 10, &[]));
    assert_eq!(plugin_of(&d), "everything");
    // A named call to a plugin of another world gets the default, not an error.
    t.load(
        "lifecycle-segments.wasm",
        "segments",
        Some("world = \"segmentation\""),
    );
    let d = t
        .host
        .decide_with("segments", &quote_request(1000, 10, &[]));
    assert!(matches!(
        d.decided_by,
        DecidedBy::Default {
            reason: hephaestus_plugins::DefaultReason::WrongWorld { .. }
        }
    ));
    assert_eq!(d.value.reason, "list price");
}
