//! Hot reload under load: while a thread quotes continuously, the pricing plugin is
//! replaced 20 times, 5 of them with broken files. No call fails, every good version
//! takes effect, and no broken version ever serves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hephaestus_plugins::{DecidedBy, PluginState};

/// The manifest of good version `n`: its tier-1 discount is `100 + n` basis points, so
/// each version's reason text is unique ("1.05% volume discount for 10+ units"). The
/// deadline is generous: this test is about swaps, and a 10 ms deadline on a machine
/// busy compiling would make a slow call look like a failed swap.
fn manifest(n: usize) -> String {
    format!(
        "name = \"pricing\"\nworld = \"pricing\"\n[limits]\ntimeout_ms = 5000\n[config]\ntier_1_quantity = \"10\"\ntier_1_discount_bp = \"{}\"\n",
        100 + n
    )
}

fn reason(n: usize) -> String {
    let bp = 100 + n;
    let percent = format!("{}.{:02}", bp / 100, bp % 100);
    let percent = percent.trim_end_matches('0').trim_end_matches('.');
    format!("{percent}% volume discount for 10+ units")
}

enum Broken {
    Garbage,
    CoreModule,
    WrongWorld,
    Truncated,
    ExportsNothing,
}

#[test]
fn twenty_replacements_under_load_never_fail_a_call() {
    let t = test_host(|c| c.debounce = Duration::from_millis(150));
    let good = read_fixture("volume-pricing.wasm");
    let segmenter = read_fixture("lifecycle-segments.wasm");
    let wasm = t.dir.path().join("pricing.wasm");
    let toml = t.dir.path().join("pricing.toml");
    std::fs::write(&wasm, &good).unwrap();
    std::fs::write(&toml, manifest(0)).unwrap();
    t.host.load_all();
    let _watcher = t.host.watch().unwrap();
    let request = quote_request(1000, 10, &[]);
    assert_eq!(t.host.decide(&request).value.reason, reason(0));

    // The caller: records every decision's reason (or the default) in order.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let caller = {
        let host = t.host.clone();
        let stop = stop.clone();
        let calls = calls.clone();
        let request = request.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<Result<String, String>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let d = host.decide(&request);
                seen.push(match d.decided_by {
                    DecidedBy::Plugin { .. } => Ok(d.value.reason),
                    other => Err(format!("{other:?}")),
                });
                calls.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };

    let plan: Vec<Option<Broken>> = (0..20)
        .map(|i| match i {
            3 => Some(Broken::Garbage),
            6 => Some(Broken::CoreModule),
            9 => Some(Broken::WrongWorld),
            12 => Some(Broken::Truncated),
            15 => Some(Broken::ExportsNothing),
            _ => None,
        })
        .collect();
    let mut good_version = 0;
    let mut swap_latencies = Vec::new();
    for step in plan {
        match step {
            None => {
                good_version += 1;
                let written = Instant::now();
                // Copy the wasm back in chunks (like a slow copy), then the manifest.
                write_in_chunks(&wasm, &good);
                std::fs::write(&toml, manifest(good_version)).unwrap();
                let expected = reason(good_version);
                let took_effect = wait_until(&t.host, Duration::from_secs(20), || {
                    t.host.decide(&request).value.reason == expected
                });
                assert!(took_effect, "version {good_version} never took effect");
                swap_latencies.push(written.elapsed());
                let status = t.host.list().remove(0);
                assert_eq!(status.state, PluginState::Active, "{status:?}");
            }
            Some(broken) => {
                let (bytes, expected_error): (Vec<u8>, &str) = match broken {
                    Broken::Garbage => (
                        b"this is not a plugin at all".repeat(100),
                        "not WebAssembly",
                    ),
                    Broken::CoreModule => (
                        wat::parse_str("(module)").unwrap(),
                        "core WebAssembly module",
                    ),
                    Broken::WrongWorld => (
                        segmenter.clone(),
                        "missing export hephaestus:plugins/pricer@0.1.0",
                    ),
                    Broken::Truncated => (
                        good[..good.len() / 2].to_vec(),
                        "not a valid WebAssembly component",
                    ),
                    Broken::ExportsNothing => {
                        (wat::parse_str("(component)").unwrap(), "missing export")
                    }
                };
                let before = t.host.generation();
                write_in_chunks(&wasm, &bytes);
                let reported = wait_until(&t.host, Duration::from_secs(20), || {
                    t.host.generation() > before
                        && t.host.list().first().is_some_and(|s| {
                            s.state == PluginState::FailedKeepingPrevious
                                && s.last_error
                                    .as_deref()
                                    .is_some_and(|e| e.contains(expected_error))
                        })
                });
                let status = t.host.list().remove(0);
                assert!(
                    reported,
                    "broken file not reported as expected ({expected_error}): {status:?}"
                );
                // The previous good version keeps serving.
                let d = t.host.decide(&request);
                assert_eq!(d.value.reason, reason(good_version), "{d:?}");
            }
        }
    }
    // Let the caller start (and finish) at least one call after the last swap.
    let after_last_swap = calls.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::Relaxed) < after_last_swap + 2 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = caller.join().unwrap();

    let failures: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} calls fell back: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // Versions only move forward, and only good versions ever answered.
    let good_reasons: Vec<String> = (0..=good_version).map(reason).collect();
    let mut last = 0;
    for r in seen.iter().flatten() {
        let index = good_reasons
            .iter()
            .position(|g| g == r)
            .unwrap_or_else(|| panic!("unexpected answer {r:?}"));
        assert!(index >= last, "went back from version {last} to {index}");
        last = index;
    }
    assert_eq!(last, good_version);
    assert_eq!(good_version, 15);
    swap_latencies.sort();
    eprintln!(
        "hot reload: {} calls during 20 swaps; swap latency (write → first decision on the new version) min {:?} median {:?} max {:?}",
        seen.len(),
        swap_latencies[0],
        swap_latencies[swap_latencies.len() / 2],
        swap_latencies[swap_latencies.len() - 1]
    );
}

#[test]
fn removing_the_file_unloads_the_plugin() {
    let t = test_host(|c| c.debounce = std::time::Duration::from_millis(100));
    t.install("volume-pricing.wasm", "volume-pricing", None);
    t.host.load_all();
    let _watcher = t.host.watch().unwrap();
    assert!(t.host.decide(&quote_request(1000, 10, &[])).by_plugin());
    std::fs::remove_file(t.dir.path().join("volume-pricing.wasm")).unwrap();
    let gone = wait_until(&t.host, Duration::from_secs(20), || {
        t.host.list().is_empty()
    });
    assert!(gone, "{:?}", t.host.list());
    let d = t.host.decide(&quote_request(1000, 10, &[]));
    assert!(matches!(
        d.decided_by,
        DecidedBy::Default {
            reason: hephaestus_plugins::DefaultReason::NoPlugin
        }
    ));
    assert_eq!(d.value.reason, "list price");
}

/// Writes `bytes` in a few chunks with pauses, the way a copy over a slow link lands.
fn write_in_chunks(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = bytes.len().div_ceil(4).max(1);
    for part in bytes.chunks(chunk) {
        file.write_all(part).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}
