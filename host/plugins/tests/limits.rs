//! The operator owns the limits: a manifest is cut to the host's ceilings, a decision
//! answers by its deadline whatever the call does, a plugin has a bounded number of calls
//! running, its log lines are rate-limited across calls, and an oversized answer is refused
//! before it is copied out of the plugin. All with the real hostile components.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hephaestus_plugins::{
    DecidedBy, Decision, DefaultReason, FaultKind, Manifest, PerWorld, PluginState, PluginStatus,
};

fn status(t: &TestHost, name: &str) -> PluginStatus {
    t.host
        .list()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} in status"))
}

fn fault_of<T: std::fmt::Debug>(d: &Decision<T>) -> (FaultKind, String) {
    match &d.decided_by {
        DecidedBy::Default {
            reason: DefaultReason::Fault { kind, message, .. },
        } => (*kind, message.clone()),
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// A deadline a loaded test machine cannot miss by accident, and the most a decision may
/// take past it here: the point is "bounded by the ceiling", not "fast".
const CEILING_MS: u64 = 100;
const SLACK: Duration = Duration::from_secs(3);

fn capped(threshold: u32) -> TestHost {
    test_host(|c| {
        c.limits.ceilings.timeout_ms =
            PerWorld::parse_over(&format!("5000,pricing:{CEILING_MS}"), 1000).unwrap();
        c.limits.ceilings.fuel = PerWorld::new(1_000_000_000_000);
        c.breaker_threshold = threshold;
        c.breaker_cooldown = Duration::from_secs(600);
    })
}

#[test]
fn a_greedy_manifest_is_cut_to_the_ceilings_with_a_warning() {
    let t = capped(5);
    t.load("hostile/greedy-spin.wasm", "greedy-spin", None);
    let s = status(&t, "greedy-spin");
    let limits = s.limits.expect("limits of a loaded plugin");
    assert_eq!(limits.timeout, Duration::from_millis(CEILING_MS));
    assert_eq!(limits.fuel, 1_000_000_000_000);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(
        s.warnings[0].contains("limits.timeout_ms = 60000")
            && s.warnings[0].contains(&format!("{CEILING_MS} applies")),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings[1].contains("limits.fuel = 1000000000000000000"),
        "{:?}",
        s.warnings
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["limits"]["timeout_ms"], CEILING_MS);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2);

    // `check` (the CLI's `plugins check`) reports the same cut.
    let manifest = Manifest::parse(&fixture_manifest("hostile/greedy-spin.wasm").unwrap()).unwrap();
    let report = t
        .host
        .check(&read_fixture("hostile/greedy-spin.wasm"), &manifest)
        .unwrap();
    assert_eq!(report.limits, limits);
    assert_eq!(report.warnings, s.warnings);

    // A manifest within the ceilings loads without a warning.
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&fixture_manifest("volume-pricing.wasm").unwrap()),
    );
    assert!(status(&t, "volume-pricing").warnings.is_empty());
}

#[test]
fn a_looping_plugin_answers_by_the_ceiling_and_its_breaker_opens() {
    let t = capped(3);
    t.load("hostile/greedy-spin.wasm", "greedy-spin", None);
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let request = quote_request(1000, 3, &[]);
    for call in 0..3 {
        let started = Instant::now();
        let d = t.host.decide_with("greedy-spin", &request);
        let took = started.elapsed();
        let (kind, message) = fault_of(&d);
        assert_eq!(kind, FaultKind::Timeout, "call {call}: {message}");
        assert_eq!(d.value.amount, usd(3000), "the list price");
        // An epoch tick is a millisecond of wall time, counted from the ticker's start, so the
        // deadline may fall up to a tick early.
        assert!(
            took >= Duration::from_millis(CEILING_MS - 2)
                && took < Duration::from_millis(CEILING_MS) + SLACK,
            "call {call} took {took:?} under a {CEILING_MS} ms ceiling (manifest: 60000 ms)"
        );
        // Counted at once, not when (if ever) the call returns.
        assert_eq!(status(&t, "greedy-spin").faults, call + 1);
        good_call_works(&t);
    }
    // Every call has ended (the epoch deadline stopped each loop) and its fuel is counted,
    // including any whose caller stopped waiting first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&t, "greedy-spin").in_flight > 0 {
        assert!(
            Instant::now() < deadline,
            "a looping call was never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = status(&t, "greedy-spin");
    assert!(s.fuel_last > 0 && s.fuel_avg > 0, "{s:?}");
    assert!(matches!(s.state, PluginState::Disabled { .. }), "{s:?}");
    assert_eq!(s.fault_kinds.get(&FaultKind::Timeout), Some(&3));
    // Switched off: the next quote is the default without calling the plugin.
    let started = Instant::now();
    let d = t.host.decide_with("greedy-spin", &request);
    assert!(
        matches!(
            &d.decided_by,
            DecidedBy::Default {
                reason: DefaultReason::Disabled { .. }
            }
        ),
        "{d:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(CEILING_MS));
    assert_eq!(status(&t, "greedy-spin").calls, 3);
}

#[test]
fn a_call_stuck_in_a_host_call_is_abandoned_at_the_deadline_and_its_place_stays_taken() {
    let t = test_host(|c| {
        c.limits.ceilings.timeout_ms = PerWorld::parse_over("pricing:100", 1000).unwrap();
        c.limits.max_concurrent_calls = 2;
        c.breaker_threshold = 10;
    });
    t.load(
        "hostile/greedy-spin.wasm",
        "greedy-sleep",
        Some("name = \"greedy-sleep\"\nworld = \"pricing\"\n[limits]\ntimeout_ms = 60000\n[config]\nmode = \"sleep\""),
    );
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let request = quote_request(1000, 2, &[]);
    for call in 1..=2_u32 {
        let started = Instant::now();
        let d = t.host.decide_with("greedy-sleep", &request);
        let took = started.elapsed();
        let (kind, message) = fault_of(&d);
        assert_eq!(kind, FaultKind::Timeout, "{message}");
        assert!(message.contains("stopped waiting"), "{message}");
        assert_eq!(d.value.amount, usd(2000));
        assert!(took < Duration::from_millis(100) + SLACK, "{took:?}");
        let s = status(&t, "greedy-sleep");
        assert_eq!((s.faults, s.in_flight), (u64::from(call), call), "{s:?}");
    }
    // Both places are held by calls asleep in the host: the next call is answered at once,
    // without waiting for a deadline, and counted as busy (not as the plugin's fault).
    let started = Instant::now();
    let d = t.host.decide_with("greedy-sleep", &request);
    assert!(
        matches!(&d.decided_by, DecidedBy::Default { reason: DefaultReason::Busy { plugin } } if plugin == "greedy-sleep"),
        "{d:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    let s = status(&t, "greedy-sleep");
    assert_eq!((s.busy, s.faults, s.calls), (1, 2, 2), "{s:?}");
    let busy = t
        .host
        .metrics()
        .default_decisions
        .into_iter()
        .find(|c| c.reason == "busy")
        .map_or(0, |c| c.count);
    assert_eq!(busy, 1);
    // Other plugins are not affected.
    for _ in 0..5 {
        good_call_works(&t);
    }
}

#[test]
fn guest_log_lines_are_rate_limited_across_calls_and_counted() {
    let t = test_host(|c| c.limits.log_lines_per_sec = 1);
    t.load(
        "hostile/log-flood.wasm",
        "log-flood",
        Some("name = \"log-flood\"\n[limits]\ntimeout_ms = 5000\n[config]\nlines = \"1\""),
    );
    let started = Instant::now();
    let calls = 40;
    for _ in 0..calls {
        let d = t.host.decide_with("log-flood", &quote_request(500, 2, &[]));
        assert!(d.by_plugin(), "{d:?}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Each call writes one log line and one stdout line, each within the call's cap; what
    // reaches the host's log is a burst of ten seconds' worth plus what the rate refilled.
    let written = 2 * calls;
    let allowed = 10 + elapsed.ceil() as u64 + 1;
    let s = status(&t, "log-flood");
    assert!(
        s.log_lines_rate_limited + allowed >= written,
        "{} of {written} lines dropped in {elapsed:.1} s: {s:?}",
        s.log_lines_rate_limited
    );
    assert!(s.log_lines_rate_limited > 0 && s.log_lines_dropped >= s.log_lines_rate_limited);
}

#[test]
fn an_oversized_answer_is_refused_before_it_is_copied_out() {
    let t = test_host(|_| {});
    let manifest = |bytes: usize, output: Option<u64>| {
        format!(
            "name = \"oversized\"\n[limits]\ntimeout_ms = 5000\nfuel = 10000000000\n{}[config]\nmode = \"oversized\"\nbytes = \"{bytes}\"",
            output
                .map(|o| format!("output_bytes = {o}\n"))
                .unwrap_or_default()
        )
    };
    let request = quote_request(700, 1, &[]);
    // 4 MiB against the default 1 MiB ceiling.
    t.load(
        "hostile/bad-output.wasm",
        "oversized",
        Some(&manifest(4 << 20, None)),
    );
    let d = t.host.decide_with("oversized", &request);
    let (kind, message) = fault_of(&d);
    assert_eq!(kind, FaultKind::OutputTooLarge, "{message}");
    assert!(message.contains("1048576"), "{message}");
    assert_eq!(d.value.amount, usd(700));
    assert!(
        d.peak_memory >= 4 << 20,
        "the guest did build it: {}",
        d.peak_memory
    );

    // The manifest may lower the ceiling: 100 KB is refused under 64 KiB...
    t.load(
        "hostile/bad-output.wasm",
        "oversized",
        Some(&manifest(100_000, Some(65_536))),
    );
    let (kind, _) = fault_of(&t.host.decide_with("oversized", &request));
    assert_eq!(kind, FaultKind::OutputTooLarge);
    // ... while a small answer under the same limit passes the size check and reaches
    // validation (100 characters of reason is a valid quote).
    t.load(
        "hostile/bad-output.wasm",
        "oversized",
        Some(&manifest(100, Some(65_536))),
    );
    let d = t.host.decide_with("oversized", &request);
    assert!(d.by_plugin(), "{d:?}");
    assert_eq!(d.value.reason.len(), 100);
    let s = status(&t, "oversized");
    assert_eq!(s.fault_kinds.get(&FaultKind::OutputTooLarge), Some(&2));
}

/// The async form waits for the worker without a thread of its own, and is held to the
/// same deadline: a call asleep in a host call is abandoned by it too.
#[test]
fn decide_async_answers_by_the_deadline_too() {
    let t = test_host(|c| {
        c.limits.ceilings.timeout_ms = PerWorld::parse_over("pricing:100", 1000).unwrap();
    });
    t.load(
        "hostile/greedy-spin.wasm",
        "greedy-spin",
        Some("name = \"greedy-spin\"\nworld = \"pricing\"\nproducts = [\"prod_sleepy\"]\n[config]\nmode = \"sleep\""),
    );
    t.load(
        "volume-pricing.wasm",
        "volume-pricing",
        Some(&relaxed("volume-pricing.wasm")),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let mut sleepy = quote_request(1000, 2, &[]);
    sleepy.product_id = "prod_sleepy".into();
    let ten = quote_request(1000, 10, &[]);
    let started = Instant::now();
    let (stuck, good) = runtime
        .block_on(async { tokio::join!(t.host.decide_async(&sleepy), t.host.decide_async(&ten)) });
    assert!(started.elapsed() < Duration::from_millis(100) + SLACK);
    let (kind, message) = fault_of(&stuck);
    assert_eq!(kind, FaultKind::Timeout, "{message}");
    assert!(message.contains("stopped waiting"), "{message}");
    assert!(good.by_plugin(), "{good:?}");
    assert_eq!(good.value.amount, usd(9000));
    assert_eq!(status(&t, "greedy-spin").faults, 1);
}
