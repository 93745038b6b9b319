//! Hostile plugins cost one decision each: the caller gets the default and the fault kind,
//! the fault is counted, and the next call (to a good plugin) works.
//!
//! Where the fault under test is not a timeout, manifests raise the deadline so a busy
//! test machine cannot turn a trap or a memory fault into a timeout.

mod common;

use std::time::Duration;

use common::*;
use hephaestus_plugins::model::{RecommendRequest, Request};
use hephaestus_plugins::{DecidedBy, DefaultReason, FaultKind, LoadResult, PluginState};

/// Asserts `decision` is the list-price default because of `kind`.
fn assert_default_for<T: std::fmt::Debug>(
    decision: &hephaestus_plugins::Decision<T>,
    kind: FaultKind,
) {
    match &decision.decided_by {
        DecidedBy::Default {
            reason: DefaultReason::Fault { kind: got, .. },
        } => assert_eq!(*got, kind, "{decision:?}"),
        other => panic!("expected a {kind} fault, got {other:?}"),
    }
}

fn status(t: &TestHost, name: &str) -> hephaestus_plugins::PluginStatus {
    t.host
        .list()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} in status"))
}

#[test]
fn each_hostile_fixture_costs_one_decision_and_is_counted() {
    let t = test_host(|_| {});
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let request = quote_request(1000, 3, &[]);

    // Loops forever: the epoch deadline (default 10 ms) stops it. The fuel budget is raised
    // far beyond what 10 ms can burn, so that on a loaded machine (where the ticker thread
    // may run late) fuel cannot be what ends it first.
    t.load(
        "hostile/spin-forever.wasm",
        "spin-forever",
        Some("name = \"spin-forever\"\n[limits]\nfuel = 1000000000000"),
    );
    let d = t.host.decide_with("spin-forever", &request);
    assert_default_for(&d, FaultKind::Timeout);
    assert_eq!(d.value.amount, usd(3000), "list price");
    assert_eq!(d.value.reason, "list price");
    assert!(d.duration < Duration::from_millis(500), "{:?}", d.duration);
    good_call_works(&t);

    // The same loop with a small fuel budget and a long deadline runs out of fuel.
    t.load(
        "hostile/spin-forever.wasm",
        "spin-fuel",
        Some("name = \"spin-fuel\"\n[limits]\nfuel = 2000000\ntimeout_ms = 5000"),
    );
    let d = t.host.decide_with("spin-fuel", &request);
    assert_default_for(&d, FaultKind::OutOfFuel);
    assert!(d.fuel_used >= 2_000_000, "{}", d.fuel_used);
    good_call_works(&t);

    // Allocates until the 16 MiB limit. The deadline is raised so that memory, not time,
    // stops it even on a busy machine (page faults are slow under load).
    t.load(
        "hostile/alloc-bomb.wasm",
        "alloc-bomb",
        Some("name = \"alloc-bomb\"\n[limits]\nmemory_mib = 16\ntimeout_ms = 5000\nfuel = 10000000000"),
    );
    let d = t.host.decide_with("alloc-bomb", &request);
    assert_default_for(&d, FaultKind::Memory);
    assert!(d.peak_memory <= 16 << 20, "{}", d.peak_memory);
    good_call_works(&t);

    // Traps, by panic and by `unreachable`.
    for mode in ["panic", "unreachable"] {
        let stem = format!("trap-{mode}");
        t.load(
            "hostile/trap.wasm",
            &stem,
            Some(&format!(
                "name = \"{stem}\"\n[limits]\ntimeout_ms = 5000\n[config]\nmode = \"{mode}\""
            )),
        );
        let d = t.host.decide_with(&stem, &request);
        assert_default_for(&d, FaultKind::Trap);
        if mode == "panic" {
            // What the guest printed on its way down is part of the fault's message.
            let DecidedBy::Default {
                reason: DefaultReason::Fault { message, .. },
            } = &d.decided_by
            else {
                unreachable!("checked above")
            };
            assert!(message.contains("deliberate panic in quote"), "{message}");
        }
        good_call_works(&t);
        // A trapped store is never reused: the next call traps the same way, freshly.
        let d = t.host.decide_with(&stem, &request);
        assert_default_for(&d, FaultKind::Trap);
    }

    // Contract-breaking answers, each mode, for quote and recommend.
    for mode in ["negative", "currency", "discount"] {
        let stem = format!("bad-{mode}");
        t.load(
            "hostile/bad-output.wasm",
            &stem,
            Some(&format!(
                "name = \"{stem}\"\n[limits]\ntimeout_ms = 5000\n[config]\nmode = \"{mode}\""
            )),
        );
        let d = t.host.decide_with(&stem, &request);
        assert_default_for(&d, FaultKind::InvalidOutput);
        assert_eq!(d.value.amount, usd(3000));
        let d = t.host.decide_with(
            &stem,
            &RecommendRequest {
                product_id: "prod_seats".into(),
                product_name: "Seats".into(),
                current_price: usd(1000),
                customer_segment: None,
                history: vec![],
            },
        );
        assert_default_for(&d, FaultKind::InvalidOutput);
        assert_eq!(d.value.recommended_price, usd(1000));
        good_call_works(&t);
    }

    // Claims to be pricing but is a segmentation component: refused at load, with the
    // reason in status; calls naming it get the default.
    t.install("hostile/wrong-world.wasm", "wrong-world", None);
    match t.host.reload("wrong-world") {
        LoadResult::Failed(error) => assert!(
            error.contains("missing export hephaestus:plugins/pricer@0.1.0"),
            "{error}"
        ),
        other => panic!("wrong-world loaded: {other:?}"),
    }
    let s = status(&t, "wrong-world");
    assert_eq!(s.state, PluginState::Failed);
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("segmenter"),
        "{s:?}"
    );
    let d = t.host.decide_with("wrong-world", &request);
    assert!(matches!(
        d.decided_by,
        DecidedBy::Default {
            reason: DefaultReason::UnknownPlugin { .. }
        }
    ));
    good_call_works(&t);

    // Floods the log and stdout, then answers correctly: the answer is used and the log
    // is capped. Limits are raised so the flood itself finishes.
    t.load(
        "hostile/log-flood.wasm",
        "log-flood",
        Some("name = \"log-flood\"\n[limits]\ntimeout_ms = 20000\nfuel = 50000000000\n[config]\nlines = \"20000\""),
    );
    let d = t.host.decide_with("log-flood", &request);
    assert!(d.by_plugin(), "{d:?}");
    assert_eq!(d.value.amount, usd(3000));
    let s = status(&t, "log-flood");
    assert!(s.log_lines_dropped >= 20_000, "{s:?}");
    good_call_works(&t);

    // Every fault was counted against its plugin.
    let count = |name: &str, kind: FaultKind| {
        status(&t, name)
            .fault_kinds
            .get(&kind)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("spin-forever", FaultKind::Timeout), 1);
    assert_eq!(count("spin-fuel", FaultKind::OutOfFuel), 1);
    assert_eq!(count("alloc-bomb", FaultKind::Memory), 1);
    assert_eq!(count("trap-panic", FaultKind::Trap), 2);
    assert_eq!(count("trap-unreachable", FaultKind::Trap), 2);
    for mode in ["negative", "currency", "discount"] {
        assert_eq!(count(&format!("bad-{mode}"), FaultKind::InvalidOutput), 2);
    }
    let good = status(&t, "volume-pricing");
    assert_eq!(good.faults, 0);
    assert!(good.calls >= 10);
    assert!(
        good.latency_p50_us.is_some() && good.fuel_avg > 0,
        "{good:?}"
    );

    let metrics = t.host.metrics();
    let timeouts = metrics
        .default_decisions
        .iter()
        .find(|c| c.reason == "timeout")
        .map_or(0, |c| c.count);
    assert_eq!(timeouts, 1);
}

#[test]
fn the_log_flood_keeps_a_capped_log_in_the_call_report() {
    let t = test_host(|_| {});
    let bytes = read_fixture("hostile/log-flood.wasm");
    let manifest = hephaestus_plugins::Manifest::parse(
        "[limits]\ntimeout_ms = 20000\nfuel = 50000000000\n[config]\nlines = \"5000\"",
    )
    .unwrap();
    let input = serde_json::to_value(Request::Quote(quote_request(500, 2, &[]))).unwrap();
    let report = t.host.call_once(&bytes, None, input, &manifest).unwrap();
    assert!(report.fault.is_none(), "{report:?}");
    assert_eq!(
        report.output.unwrap()["quote"]["amount"]["amount_minor"],
        1000
    );
    assert_eq!(report.log.len(), 100);
    assert!(
        report.log_lines_dropped >= 5000,
        "{}",
        report.log_lines_dropped
    );
    let kept: usize = report.log.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 16 * 1024);
}

#[test]
fn the_breaker_opens_after_repeated_faults_and_closes_after_the_cooldown() {
    let cooldown = Duration::from_millis(300);
    let t = test_host(|c| {
        c.breaker_threshold = 3;
        c.breaker_cooldown = cooldown;
    });
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    // volume-pricing answers Err(..) for quantity 0: a guest error, a plugin fault.
    let bad = quote_request(1000, 0, &[]);
    let good = quote_request(1000, 1, &[]);
    for _ in 0..3 {
        assert_default_for(&t.host.decide(&bad), FaultKind::GuestError);
    }
    // Open: even a good request gets the default without calling the plugin.
    let d = t.host.decide(&good);
    assert!(
        matches!(&d.decided_by, DecidedBy::Default { reason: DefaultReason::Disabled { plugin, .. } } if plugin == "volume-pricing"),
        "{d:?}"
    );
    assert_eq!(d.fuel_used, 0);
    let s = t.host.list().remove(0);
    assert!(matches!(s.state, PluginState::Disabled { .. }), "{s:?}");
    assert_eq!(s.consecutive_faults, 3);
    assert_eq!(s.calls, 3, "a disabled plugin is not called");

    // After the cool-down the next call goes through, and a success closes the breaker.
    std::thread::sleep(cooldown);
    let d = t.host.decide(&good);
    assert!(d.by_plugin(), "{d:?}");
    let s = t.host.list().remove(0);
    assert_eq!(s.state, PluginState::Active);
    assert_eq!(s.consecutive_faults, 0);

    // Re-open, then after the cool-down a single fault re-opens at once (half-open).
    for _ in 0..3 {
        t.host.decide(&bad);
    }
    assert!(!t.host.decide(&good).by_plugin());
    std::thread::sleep(cooldown);
    assert_default_for(&t.host.decide(&bad), FaultKind::GuestError);
    assert!(
        !t.host.decide(&good).by_plugin(),
        "one fault after the cool-down re-opens"
    );
    assert_eq!(t.host.list().remove(0).faults, 7);
}

#[test]
fn oversized_input_gets_the_default_without_blaming_the_plugin() {
    let t = test_host(|_| {});
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let mut request = quote_request(1000, 1, &[]);
    request
        .context
        .push(hephaestus_plugins::model::Attribute::new(
            "blob",
            "x".repeat(hephaestus_plugins::MAX_INPUT_BYTES + 1),
        ));
    let d = t.host.decide(&request);
    assert_default_for(&d, FaultKind::InputTooLarge);
    let s = t.host.list().remove(0);
    assert_eq!((s.calls, s.faults), (1, 0));
    good_call_works(&t);
}

/// Calls reuse pooled memory that is reset in place, not handed back to the kernel: a
/// plugin must still find nothing of an earlier call, in its data, low in its memory, or in
/// a page it grew, however calls to it and to other plugins interleave.
#[test]
fn a_plugin_cannot_carry_state_from_one_call_to_the_next() {
    let t = test_host(|_| {});
    t.load(
        "hostile/remember.wasm",
        "remember",
        Some(&relaxed("hostile/remember.wasm")),
    );
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let request = quote_request(1000, 3, &[]);
    for i in 0..50 {
        let d = t.host.decide_with("remember", &request);
        assert!(d.by_plugin(), "call {i}: {d:?}");
        assert_eq!(d.value.reason, "remembered nothing", "call {i}");
        assert_eq!(d.value.amount, usd(3000));
        if i % 3 == 0 {
            good_call_works(&t);
        }
    }
}
