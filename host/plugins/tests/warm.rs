//! Instances made ahead of calls for plugins that start slowly (JavaScript, Python): who
//! gets a pool, and that a pooled instance decides exactly as a fresh one, at the same
//! fuel, used once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hephaestus_plugins::PluginHost;
use hephaestus_plugins::model::{Attribute, CustomerProfile, SegmentRequest};

/// Waits until `stem` has `ready` instances made ahead (the refill thread works in the
/// background); false if that does not happen within 60 s.
fn wait_ready(host: &PluginHost, stem: &str, ready: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = host
            .list()
            .into_iter()
            .find(|s| s.file_stem == stem)
            .expect("plugin listed");
        if status.warm_ready == ready {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Tests here measure timing-sensitive behaviour, and one hogs the cores: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn status(host: &PluginHost, stem: &str) -> hephaestus_plugins::PluginStatus {
    host.list()
        .into_iter()
        .find(|s| s.file_stem == stem)
        .expect("plugin listed")
}

#[test]
fn slow_starting_plugins_get_a_warm_pool_and_fast_ones_do_not() {
    let _serial = serial();
    let t = test_host(|c| c.warm_instances = 3);
    t.load("volume-pricing.wasm", "volume-pricing", None);
    t.load("lifecycle-segments-py.wasm", "lifecycle-segments-py", None);

    let rust = status(&t.host, "volume-pricing");
    let python = status(&t.host, "lifecycle-segments-py");
    assert!(
        python.start_time > rust.start_time,
        "python starts in {:?}, rust in {:?}",
        python.start_time,
        rust.start_time
    );
    assert_eq!(
        rust.warm_instances, 0,
        "a Rust plugin starts fast: {rust:?}"
    );
    assert_eq!(python.warm_instances, 3, "{python:?}");
    assert!(
        wait_ready(&t.host, "lifecycle-segments-py", 3),
        "the pool never filled"
    );
    assert_eq!(status(&t.host, "volume-pricing").warm_ready, 0);

    // A call takes one; the pool is topped up again behind it.
    let decision = t.host.decide_with(
        "lifecycle-segments-py",
        &SegmentRequest {
            customer: customer(),
            high_value_threshold: None,
        },
    );
    assert!(decision.by_plugin(), "{:?}", decision.decided_by);
    assert!(
        wait_ready(&t.host, "lifecycle-segments-py", 3),
        "the pool was not refilled"
    );
}

#[test]
fn a_warm_instance_decides_like_a_fresh_one_at_the_same_fuel() {
    let _serial = serial();
    const STEM: &str = "lifecycle-segments-py";
    let pooled = test_host(|c| c.warm_instances = 2);
    let fresh = test_host(|c| c.warm_instances = 0);
    for t in [&pooled, &fresh] {
        t.load("lifecycle-segments-py.wasm", STEM, None);
    }
    assert_eq!(status(&fresh.host, STEM).warm_instances, 0);
    let s = status(&pooled.host, STEM);
    assert_eq!(s.warm_instances, 2, "{s:?}");

    let profiles = [
        customer(),
        CustomerProfile {
            created_at: NOW - 3 * DAY,
            lifetime_value: usd(0),
            attributes: vec![],
            ..customer()
        },
        CustomerProfile {
            lifetime_value: usd(900_000),
            attributes: vec![Attribute::new("plan", "enterprise")],
            ..customer()
        },
    ];
    for profile in profiles {
        assert!(wait_ready(&pooled.host, STEM, 2), "pool not full");
        let request = SegmentRequest {
            customer: profile,
            high_value_threshold: None,
        };
        let warm = pooled.host.decide_with(STEM, &request);
        let cold = fresh.host.decide_with(STEM, &request);
        assert!(warm.by_plugin() && cold.by_plugin(), "{warm:?} / {cold:?}");
        assert_eq!(warm.value, cold.value);
        // The start code's fuel is charged to the call either way: a call's cost does not
        // depend on whether its instance was made ahead.
        assert_eq!(warm.fuel_used, cold.fuel_used, "{:?}", warm.value);
    }
    // Each call has its own instance: the same request twice costs the same, which it would
    // not if an instance (and its interpreter's state) were reused.
    assert!(wait_ready(&pooled.host, STEM, 2));
    let request = SegmentRequest {
        customer: customer(),
        high_value_threshold: None,
    };
    let first = pooled.host.decide_with(STEM, &request);
    let second = pooled.host.decide_with(STEM, &request);
    assert_eq!(first.fuel_used, second.fuel_used);
    assert_eq!(status(&pooled.host, STEM).faults, 0);
}

/// Used stores are dropped in the background, but a backlog there holds instance slots:
/// with the cores busy elsewhere, back-to-back calls must still never run the host out of
/// slots. The slots are exactly enough for the pool, the most stores ever waiting to be
/// dropped, the call and one instance being made.
#[test]
fn a_busy_machine_never_runs_a_pooled_plugin_out_of_instance_slots() {
    let _serial = serial();
    const WARM: usize = 4;
    let t = test_host(|c| {
        c.warm_instances = WARM;
        c.max_instances =
            u32::try_from(WARM + hephaestus_plugins::MAX_DISPOSING + 2).expect("small");
    });
    // With the cores hogged a call may take far longer than the default deadline.
    t.load(
        "lifecycle-segments-py.wasm",
        "lifecycle-segments-py",
        Some(&relaxed("lifecycle-segments-py.wasm")),
    );
    assert!(wait_ready(&t.host, "lifecycle-segments-py", WARM));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let request = SegmentRequest {
        customer: customer(),
        high_value_threshold: None,
    };
    let decisions: Vec<_> = (0..300)
        .map(|_| t.host.decide_with("lifecycle-segments-py", &request))
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().expect("hog thread");
    }
    for (i, d) in decisions.iter().enumerate() {
        assert!(d.by_plugin(), "call {i}: {:?}", d.decided_by);
    }
}
