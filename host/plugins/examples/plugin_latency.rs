//! Per-call latency of real plugins through the real host (fresh instance + call +
//! validation), for BENCHMARKS.md.
//!
//! ```sh
//! plugins/build.sh
//! cargo run --release -p hephaestus-plugins --example plugin_latency -- [CALLS] [LABEL PART]
//! ```
//!
//! For each of the Rust, JavaScript and Python plugins found in `target/plugins/` it
//! reports compile time (cold, empty cache), precompiled-cache load time, and p50/p99/max
//! of `CALLS` sequential decisions (default 5,000) after 200 warm-up calls (only of the
//! plugins whose label contains `LABEL PART`, e.g. `rust`, if given). Plugins that
//! start slowly (JavaScript, Python) are measured three ways: every instance made on the
//! request path (no warm pool), with the warm pool and calls back to back (faster than the
//! pool refills on a 2-core machine), and with the warm pool and one call every 2 ms.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hephaestus_plugins::model::{
    Activity, Attribute, CustomerProfile, Money, QuoteRequest, SegmentRequest,
};
use hephaestus_plugins::{Decide, HostConfig, LoadResult, PluginHost};

const NOW: i64 = 1_749_988_800_000_000;

fn customer() -> CustomerProfile {
    CustomerProfile {
        id: "cus_bench".into(),
        name: Some("Ada".into()),
        email_domain: Some("example.com".into()),
        created_at: NOW - 400 * 86_400_000_000,
        segments: vec!["high_value".into()],
        lifetime_value: Money::new(720_000, "USD"),
        monthly_recurring_revenue: Money::new(9_700, "USD"),
        activity: Activity {
            payments: 12,
            payments_last_30_days: 6,
            active_subscriptions: 1,
            last_payment_at: Some(NOW - 86_400_000_000),
            ..Activity::default()
        },
        attributes: vec![Attribute::new("seats", "120")],
    }
}

struct Case {
    label: &'static str,
    /// Relative to `target/plugins/`.
    file: &'static str,
}

const CASES: &[Case] = &[
    Case {
        label: "rust volume-pricing (quote)",
        file: "volume-pricing.wasm",
    },
    Case {
        label: "js volume-pricing (quote)",
        file: "volume-pricing-js.wasm",
    },
    Case {
        label: "rust lifecycle-segments (segment)",
        file: "lifecycle-segments.wasm",
    },
    Case {
        label: "python lifecycle-segments (segment)",
        file: "lifecycle-segments-py.wasm",
    },
];

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Sorted latencies, plus the last call's fuel and peak memory. With `pace`, one call
/// starts every `pace` (the next is skipped ahead if a call overruns).
fn run<R: Decide>(
    host: &PluginHost,
    name: &str,
    request: &R,
    calls: usize,
    pace: Option<Duration>,
) -> (Vec<Duration>, u64, u64) {
    for _ in 0..200 {
        let d = host.decide_with(name, request);
        assert!(d.by_plugin(), "{name} did not decide: {:?}", d.decided_by);
    }
    let mut samples = Vec::with_capacity(calls);
    let (mut fuel, mut memory) = (0, 0);
    let mut next = Instant::now();
    for _ in 0..calls {
        if let Some(pace) = pace {
            next += pace;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        let started = Instant::now();
        let d = host.decide_with(name, request);
        samples.push(started.elapsed());
        assert!(d.by_plugin(), "{name} did not decide: {:?}", d.decided_by);
        (fuel, memory) = (d.fuel_used, d.peak_memory);
    }
    samples.sort();
    (samples, fuel, memory)
}

fn host(plugins: &Path, cache: &Path, warm_instances: usize) -> PluginHost {
    let mut config = HostConfig::new(plugins);
    config.warm_instances = warm_instances;
    config.cache_dir = Some(cache.to_owned());
    config.clock = Arc::new(|| NOW);
    PluginHost::new(config).expect("host starts")
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let only = std::env::args().nth(2).unwrap_or_default();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    let work = std::env::temp_dir().join(format!("plugin-latency-{}", std::process::id()));
    let (plugins, cache) = (work.join("plugins"), work.join("cache"));
    std::fs::create_dir_all(&plugins).expect("temp dir");

    println!(
        "| plugin | size | compile (cold) | cache load | start | instances | p50 | p99 | max | calls | fuel/call | peak memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in CASES.iter().filter(|c| c.label.contains(only.as_str())) {
        let source = fixtures.join(case.file);
        if !source.is_file() {
            println!(
                "| {} | missing {} (run plugins/build.sh) | | | | | | |",
                case.label,
                source.display()
            );
            continue;
        }
        let stem = case.file.trim_end_matches(".wasm");
        let size = std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
        std::fs::copy(&source, plugins.join(case.file)).expect("copy");
        // Manifests carry the config, but benchmark limits are generous so a slow first
        // call on a busy machine is measured rather than cut off.
        let mut manifest: toml::Table = std::fs::read_to_string(source.with_extension("toml"))
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_default();
        manifest.insert("name".into(), stem.into());
        let mut limits = toml::Table::new();
        limits.insert("timeout_ms".into(), 1000.into());
        limits.insert("fuel".into(), 10_000_000_000i64.into());
        manifest.insert("limits".into(), limits.into());
        let manifest = toml::to_string(&manifest).expect("manifest serialises");
        std::fs::write(plugins.join(format!("{stem}.toml")), manifest).expect("manifest");

        let cold = host(&plugins, &cache, 0);
        let started = Instant::now();
        let loaded = cold.reload(stem);
        let compile = started.elapsed();
        assert_eq!(loaded, LoadResult::Loaded, "{}", case.label);
        drop(cold);
        let pace = Duration::from_millis(2);
        let modes: [(&str, usize, Option<Duration>); 3] = [
            ("made per call", 0, None),
            ("warm pool, back to back", 4, None),
            ("warm pool, 1 call / 2 ms", 4, Some(pace)),
        ];
        for (mode, warm_instances, pace) in modes {
            let host = host(&plugins, &cache, warm_instances);
            let started = Instant::now();
            assert_eq!(host.reload(stem), LoadResult::Loaded);
            let cache_load = started.elapsed();
            assert_eq!(
                host.cache_stats().compiles,
                0,
                "a cached host must not compile"
            );
            let status = host.list().into_iter().next().expect("one plugin");
            if warm_instances > 0 && status.warm_instances == 0 {
                // Starts fast: no pool, so nothing more to measure.
                break;
            }
            let calls = if pace.is_some() {
                calls.min(2_000)
            } else {
                calls
            };
            let (samples, fuel, memory) = if case.file.contains("segments") {
                let request = SegmentRequest {
                    customer: customer(),
                    high_value_threshold: None,
                };
                run(&host, stem, &request, calls, pace)
            } else {
                let request = QuoteRequest {
                    customer: customer(),
                    product_id: "prod_seats".into(),
                    product_name: "Seats".into(),
                    price_id: "price_seats".into(),
                    unit_price: Money::new(9_700, "USD"),
                    quantity: 12,
                    interval: Some("month".into()),
                    context: vec![],
                };
                run(&host, stem, &request, calls, pace)
            };
            println!(
                "| {} | {} KB | {:.1?} | {:.1?} | {:.1?} | {mode} | {:.1?} | {:.1?} | {:.1?} | {} | {} | {} KiB |",
                case.label,
                size / 1024,
                compile,
                cache_load,
                status.start_time,
                percentile(&samples, 0.5),
                percentile(&samples, 0.99),
                samples[samples.len() - 1],
                samples.len(),
                fuel,
                memory / 1024
            );
        }
        let _ = std::fs::remove_file(plugins.join(case.file));
    }
    let _ = std::fs::remove_dir_all(&work);
}
