//! Shared helpers: fixture paths, hosts on temporary folders, and sample requests.
//!
//! Fixtures are the real components `plugins/build.sh` writes to `<repo>/target/plugins/`.
//! A missing fixture fails the test with instructions; it never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hephaestus_plugins::model::{Activity, Attribute, CustomerProfile, Money, QuoteRequest};
use hephaestus_plugins::{HostConfig, PerWorld, PluginHost};

/// Business time used by every test: 2025-06-15T12:00:00Z.
pub const NOW: i64 = 1_749_988_800_000_000;
pub const DAY: i64 = 86_400_000_000;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("target/plugins")
}

/// `<repo>/target/plugins/<rel>`, or a panic telling how to build it.
pub fn fixture(rel: &str) -> PathBuf {
    let path = fixtures_dir().join(rel);
    assert!(
        path.is_file(),
        "missing plugin fixture {}: run `plugins/build.sh` (it builds every example and hostile \
         fixture into target/plugins/) and re-run the tests",
        path.display()
    );
    path
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).expect("fixture is readable")
}

/// The manifest next to a fixture (`NAME.wasm` → `NAME.toml`), if any.
pub fn fixture_manifest(rel: &str) -> Option<String> {
    let toml = fixture(rel).with_extension("toml");
    std::fs::read_to_string(toml).ok()
}

/// Artifacts are shared between test runs so the 12–18 MB JS and Python components are
/// compiled once, not once per test. Tests about the cache itself use their own folder.
pub fn shared_cache_dir() -> PathBuf {
    repo_root().join("target/plugin-test-cache")
}

/// A temporary plugin folder and a host on it (cache shared, business clock at `NOW`).
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub host: PluginHost,
}

/// A host on `dir` whose ceilings let the fixtures' test manifests through uncut (those
/// raise deadlines so a busy machine cannot turn a trap into a timeout); the tests about
/// ceilings set their own.
pub fn config_for(dir: &Path) -> HostConfig {
    let mut config = HostConfig::new(dir);
    config.cache_dir = Some(shared_cache_dir());
    config.clock = Arc::new(|| NOW);
    config.limits.ceilings.timeout_ms = PerWorld::new(60_000);
    config.limits.ceilings.fuel = PerWorld::new(u64::MAX);
    config
}

pub fn test_host(adjust: impl FnOnce(&mut HostConfig)) -> TestHost {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    adjust(&mut config);
    let host = PluginHost::new(config).expect("host starts");
    TestHost { dir, host }
}

impl TestHost {
    /// Copies fixture `rel` into the plugin folder as `stem.wasm`, with `manifest` (or the
    /// fixture's own manifest when `None`) as `stem.toml`.
    pub fn install(&self, rel: &str, stem: &str, manifest: Option<&str>) {
        std::fs::copy(fixture(rel), self.dir.path().join(format!("{stem}.wasm"))).expect("copy");
        let manifest = manifest
            .map(str::to_owned)
            .or_else(|| fixture_manifest(rel));
        if let Some(text) = manifest {
            std::fs::write(self.dir.path().join(format!("{stem}.toml")), text).expect("write");
        }
    }

    /// Installs and loads, asserting the load succeeded.
    pub fn load(&self, rel: &str, stem: &str, manifest: Option<&str>) {
        self.install(rel, stem, manifest);
        let result = self.host.reload(stem);
        assert_eq!(
            result,
            hephaestus_plugins::LoadResult::Loaded,
            "loading {rel} as {stem}"
        );
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

pub fn usd(amount_minor: i64) -> Money {
    Money::new(amount_minor, "USD")
}

pub fn customer() -> CustomerProfile {
    CustomerProfile {
        id: "cus_test".into(),
        name: Some("Ada Lovelace".into()),
        email_domain: Some("example.com".into()),
        created_at: NOW - 400 * DAY,
        segments: vec![],
        lifetime_value: usd(120_000),
        monthly_recurring_revenue: usd(9_700),
        activity: Activity {
            payments: 12,
            payments_last_30_days: 1,
            failed_payments_last_30_days: 0,
            last_payment_at: Some(NOW - 10 * DAY),
            active_subscriptions: 1,
            canceled_subscriptions: 0,
            has_past_due: false,
        },
        attributes: vec![Attribute::new("plan", "pro")],
    }
}

pub fn quote_request(unit: i64, quantity: u32, segments: &[&str]) -> QuoteRequest {
    let mut customer = customer();
    customer.segments = segments.iter().map(|s| s.to_string()).collect();
    QuoteRequest {
        customer,
        product_id: "prod_seats".into(),
        product_name: "Seats".into(),
        price_id: "price_seats_monthly".into(),
        unit_price: usd(unit),
        quantity,
        interval: Some("month".into()),
        context: vec![],
    }
}

/// The volume-pricing plugin still answers a quote itself: a misbehaving neighbour did
/// not take it down.
pub fn good_call_works(t: &TestHost) {
    let d = t
        .host
        .decide_with("volume-pricing", &quote_request(1000, 10, &[]));
    assert!(d.by_plugin(), "{d:?}");
    assert_eq!(d.value.amount, usd(9000));
}

/// Polls `condition` until it holds or `timeout` passes, waking on registry changes.
pub fn wait_until(
    host: &PluginHost,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = host.generation();
        if condition() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        host.wait_for_change(seen, left.min(Duration::from_millis(50)));
    }
}

/// The fixture's manifest with a 5 s deadline: for tests about answers, swaps or
/// breakers, where a slow call on a machine busy compiling must not look like a fault.
pub fn relaxed(rel: &str) -> String {
    let mut manifest: toml::Table = fixture_manifest(rel)
        .unwrap_or_default()
        .parse()
        .expect("fixture manifest is TOML");
    let limits = manifest
        .entry("limits")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(limits) = limits {
        limits.insert("timeout_ms".into(), 5000.into());
    }
    toml::to_string(&manifest).expect("manifest serialises")
}
