//! One typed configuration. Precedence: command-line flags, then environment variables, then
//! a `.env` file in the working directory (loaded without overriding the environment).
//! Anything unknown or malformed stops the start with a message naming the setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::HeaderValue;
use clap::{Args, CommandFactory};
use hephaestus_api::ApiConfig;
use hephaestus_api::rate_limit::RateLimit;
use hephaestus_billing::gateway::Gateway;
use hephaestus_billing::sandbox::SandboxGateway;
use hephaestus_billing::stripe::StripeGateway;
use hephaestus_billing::subscriptions::{Dunning, FinalAction};
use hephaestus_store::{PoolSettings, Store};

/// Where the data lives; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Folder for the embedded database and other local state; created if missing.
    #[arg(long, env = "HEPHAESTUS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: a SQLite file in the data folder.
    #[arg(long, env = "DATABASE_URL", value_parser = parse_database_url, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connections to PostgreSQL, or reader connections to SQLite (which has one writer).
    #[arg(long, env = "HEPHAESTUS_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,

    /// Milliseconds a request waits for a database connection (a free one, or a new one
    /// while the database is unreachable) before it is answered 503 `service_unavailable`
    /// with `Retry-After`.
    #[arg(long, env = "HEPHAESTUS_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub db_acquire_timeout_ms: u64,
}

impl StorageArgs {
    /// The database URL to use, creating the data folder for the SQLite default.
    pub fn resolve_url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!(
                        "HEPHAESTUS_DATA_DIR: cannot create {}",
                        self.data_dir.display()
                    )
                })?;
                Ok(format!(
                    "sqlite://{}",
                    self.data_dir.join("hephaestus.db").display()
                ))
            }
        }
    }

    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
        }
    }
}

/// The payment gateway: Stripe when a secret key is set, the built-in sandbox otherwise.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Stripe secret key (`sk_live_…`, `sk_test_…` or a restricted `rk_…`). When set, payments
    /// and refunds go through Stripe instead of the sandbox gateway.
    #[arg(long, env = "STRIPE_SECRET_KEY", value_parser = parse_stripe_key, hide_env_values = true)]
    pub stripe_secret_key: Option<hephaestus_core::secret::Secret>,

    /// Base URL of the Stripe API (default `https://api.stripe.com`): any Stripe-compatible
    /// server, such as a local one for tests.
    #[arg(long, env = "STRIPE_API_BASE", value_parser = parse_stripe_api_base)]
    pub stripe_api_base: Option<String>,
}

impl GatewayArgs {
    /// The configured gateway over `store`.
    pub fn gateway(&self, store: &Store) -> anyhow::Result<Arc<dyn Gateway>> {
        match &self.stripe_secret_key {
            Some(key) => {
                let stripe =
                    StripeGateway::new(store.clone(), key, self.stripe_api_base.as_deref())
                        .map_err(|e| anyhow::anyhow!("STRIPE_SECRET_KEY: {e}"))?;
                Ok(Arc::new(stripe))
            }
            None => {
                if self.stripe_api_base.is_some() {
                    tracing::warn!(
                        "STRIPE_API_BASE is set but STRIPE_SECRET_KEY is not: using the sandbox gateway"
                    );
                }
                Ok(Arc::new(SandboxGateway::new(store.clone())))
            }
        }
    }
}

/// Refuses only what is certainly not a secret key: clap prints a refused value, and a
/// publishable key is public.
fn parse_stripe_key(s: &str) -> Result<hephaestus_core::secret::Secret, String> {
    let s = s.trim();
    if s.starts_with("pk_") {
        return Err(
            "this is a publishable key (pk_…); the server needs the secret key (sk_… or rk_…)"
                .into(),
        );
    }
    s.parse()
}

fn parse_stripe_api_base(s: &str) -> Result<String, String> {
    hephaestus_billing::stripe::normalize_api_base(s)
}

/// What the operator allows every plugin, whatever its manifest asks; read by `serve` and
/// by `plugins list|check|call`, so the tools show what the server would do. Each ceiling
/// is a number for every world, `world:number` items for some (`pricing:50,segmentation:20`;
/// the others keep the default), or both (`200,pricing:50`).
#[derive(Debug, Clone, Args)]
pub struct PluginLimitsArgs {
    /// Ceiling on a plugin call's deadline, in milliseconds, per world. A manifest asking
    /// for more runs with this, and says so in its status.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_MAX_TIMEOUT_MS", default_value = "1000",
          value_parser = parse_timeout_ceiling)]
    pub plugin_max_timeout_ms: hephaestus_plugins::PerWorld<u64>,

    /// Ceiling on a plugin call's fuel (roughly, WebAssembly instructions), per world.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_MAX_FUEL", default_value = "10000000000",
          value_parser = parse_fuel_ceiling)]
    pub plugin_max_fuel: hephaestus_plugins::PerWorld<u64>,

    /// Ceiling on a plugin call's linear memory, in MiB, per world. The largest is also the
    /// size of each pooled memory slot.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_MAX_MEMORY_MIB", default_value = "64",
          value_parser = parse_memory_ceiling)]
    pub plugin_max_memory_mib: hephaestus_plugins::PerWorld<u32>,

    /// Ceiling on what a plugin hands the host at once (its answer, one log line, one
    /// stdout write), in bytes, per world; more is refused before it is copied out of the
    /// plugin. At least 65536.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_MAX_OUTPUT_BYTES", default_value = "1048576",
          value_parser = parse_output_ceiling)]
    pub plugin_max_output_bytes: hephaestus_plugins::PerWorld<u64>,

    /// Calls one plugin may have running at once; one more gets the built-in default at
    /// once (reason `busy`), so a plugin that spins or hangs cannot take every thread.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_MAX_CONCURRENT_CALLS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub plugin_max_concurrent_calls: u32,

    /// Guest log lines (log writes and stdout/stderr lines) per second, per plugin, that
    /// reach the host's log, in bursts of up to ten seconds' worth; the rest are dropped
    /// and counted. 0 drops them all.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_LOG_LINES_PER_SEC", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub plugin_log_lines_per_sec: u32,
}

impl PluginLimitsArgs {
    pub fn host_limits(&self) -> hephaestus_plugins::HostLimits {
        hephaestus_plugins::HostLimits {
            ceilings: hephaestus_plugins::Ceilings {
                timeout_ms: self.plugin_max_timeout_ms.clone(),
                fuel: self.plugin_max_fuel.clone(),
                memory_mib: self.plugin_max_memory_mib.clone(),
                output_bytes: self.plugin_max_output_bytes.clone(),
            },
            max_concurrent_calls: self.plugin_max_concurrent_calls,
            log_lines_per_sec: self.plugin_log_lines_per_sec,
        }
    }
}

/// A per-world ceiling over `default` (for the worlds it does not name) whose every value
/// lies in `range`.
fn per_world<T>(
    s: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<hephaestus_plugins::PerWorld<T>, String>
where
    T: Copy + Ord + std::str::FromStr + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let parsed = hephaestus_plugins::PerWorld::parse_over(s, default)?;
    for value in std::iter::once(&parsed.all).chain(parsed.worlds.values()) {
        if !range.contains(value) {
            return Err(format!(
                "{value} is outside {}..={}",
                range.start(),
                range.end()
            ));
        }
    }
    Ok(parsed)
}

fn parse_timeout_ceiling(s: &str) -> Result<hephaestus_plugins::PerWorld<u64>, String> {
    per_world(s, hephaestus_plugins::DEFAULT_MAX_TIMEOUT_MS, 1..=60_000)
}

fn parse_fuel_ceiling(s: &str) -> Result<hephaestus_plugins::PerWorld<u64>, String> {
    per_world(s, hephaestus_plugins::DEFAULT_MAX_FUEL, 1..=u64::MAX)
}

fn parse_memory_ceiling(s: &str) -> Result<hephaestus_plugins::PerWorld<u32>, String> {
    per_world(s, hephaestus_plugins::DEFAULT_MEMORY_MIB, 1..=4096)
}

fn parse_output_ceiling(s: &str) -> Result<hephaestus_plugins::PerWorld<u64>, String> {
    per_world(
        s,
        hephaestus_plugins::DEFAULT_MAX_OUTPUT_BYTES,
        hephaestus_plugins::MIN_OUTPUT_BYTES..=1 << 30,
    )
}

/// Settings of `hephaestus serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Address to listen on.
    #[arg(long, env = "HEPHAESTUS_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// Folder of plugin components (`NAME.wasm` + optional `NAME.toml`), watched for
    /// changes. Default: `plugins` in the data folder. `plugins/build.sh FOLDER` builds the
    /// examples into it.
    #[arg(long, env = "HEPHAESTUS_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    #[command(flatten)]
    pub plugin_limits: PluginLimitsArgs,

    /// Default per-key rate limit: `N/s`, `N/m`, `N/h`, or `off`. A key's own limit wins.
    #[arg(long, env = "HEPHAESTUS_RATE_LIMIT", default_value = "100/s")]
    pub rate_limit: RateLimit,

    /// Browser origins allowed to call the API (comma-separated, e.g.
    /// `https://admin.example.com`). Empty: no cross-origin access.
    #[arg(long, env = "HEPHAESTUS_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<HeaderValue>,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "HEPHAESTUS_MAX_BODY_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Seconds before a request is abandoned with 408.
    #[arg(long, env = "HEPHAESTUS_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Seconds a client has to send a request's headers, counted from when the connection
    /// opens or its previous response was sent: a client trickling its headers, or holding
    /// a connection open without sending a request, is disconnected after this long.
    #[arg(long, env = "HEPHAESTUS_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a connection may go with no request being handled and nothing received or
    /// sent (a client that stops reading its response) before it is closed.
    #[arg(long, env = "HEPHAESTUS_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Open client connections at most; further ones wait to be accepted until one closes.
    #[arg(long, env = "HEPHAESTUS_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Milliseconds an authenticated key is trusted before it is looked up again; bounds how
    /// long a revocation made by another process takes to apply. 0 looks up every request.
    #[arg(long, env = "HEPHAESTUS_KEY_CACHE_TTL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub key_cache_ttl_ms: u64,

    /// Milliseconds a price and its product, read for a quote, are reused; bounds how long a
    /// price change made by another host takes to reach this host's quotes (changes made
    /// through this host apply at once). 0 reads them for every quote.
    #[arg(long, env = "HEPHAESTUS_CATALOG_CACHE_TTL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub catalog_cache_ttl_ms: u64,

    /// Seconds a stored quote can be turned into a payment or subscription (business time:
    /// the sandbox clock moves it too).
    #[arg(long, env = "HEPHAESTUS_QUOTE_TTL_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub quote_ttl_secs: u64,

    /// Fault drills only: abort the process the Nth time it reaches a point of the payment
    /// path (`before_gateway_call:N` or `after_gateway_call:N`), as `kill -9` would.
    #[arg(long, env = "HEPHAESTUS_FAULT_ABORT", hide = true)]
    pub fault_abort: Option<hephaestus_api::recovery::FaultAbort>,

    /// Seconds in-flight requests get to finish after SIGTERM before the process exits anyway.
    #[arg(long, env = "HEPHAESTUS_SHUTDOWN_GRACE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// The largest single payment, in major units of its currency (e.g. `1000000.00`).
    #[arg(long, env = "HEPHAESTUS_MAX_PAYMENT", default_value = "1000000.00", value_parser = parse_max_payment)]
    pub max_payment: rust_decimal::Decimal,

    /// Stripe webhook signing secrets (`whsec_…`), comma-separated: list the old and the new
    /// one while rotating. Without one the webhook endpoint refuses every event.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secret: Vec<hephaestus_core::secret::Secret>,

    /// `off` makes this host only verify and store webhook deliveries, leaving them to be
    /// applied by the hosts whose worker is `on`: an ingest host does the least work per
    /// delivery and keeps answering Stripe fast through a burst.
    #[arg(long, env = "HEPHAESTUS_WEBHOOK_WORKER", default_value = "on",
          value_parser = ["on", "off"])]
    pub webhook_worker: String,

    /// Seconds a payment may wait on its gateway before reconciliation refetches it.
    #[arg(long, env = "HEPHAESTUS_RECONCILE_AFTER_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(0..=86_400 * 30))]
    pub reconcile_after_secs: u64,

    /// Days between attempts to collect a failed subscription invoice, comma-separated and
    /// counted from the attempt before (`3,5,7`: four attempts over fifteen days).
    #[arg(long, env = "HEPHAESTUS_DUNNING_RETRY_DAYS", value_delimiter = ',',
          default_value = "3,5,7", value_parser = clap::value_parser!(i64).range(1..=60))]
    pub dunning_retry_days: Vec<i64>,

    /// What happens to a subscription when its invoice's last attempt fails: `cancel` it, or
    /// keep it `unpaid` (not billed again until it is cancelled).
    #[arg(long, env = "HEPHAESTUS_DUNNING_FINAL_ACTION", default_value = "cancel",
          value_parser = ["cancel", "unpaid"])]
    pub dunning_final_action: String,

    /// The currency payment totals are reported in (ISO 4217).
    #[arg(long, env = "HEPHAESTUS_REPORTING_CURRENCY", default_value = "USD", value_parser = parse_currency)]
    pub reporting_currency: hephaestus_core::money::Currency,

    /// Exchange rates to record at start, comma-separated `BASE/QUOTE=RATE`
    /// (`EUR/USD=1.0832,GBP/USD=1.27`). Recorded only when they differ from the newest rate
    /// of the pair, which may also be set through the API.
    #[arg(long, env = "HEPHAESTUS_EXCHANGE_RATES", value_delimiter = ',', value_parser = parse_rate_setting)]
    pub exchange_rates: Vec<(String, String, String)>,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "HEPHAESTUS_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
}

impl ServeArgs {
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("plugins"))
    }

    pub fn connections(&self) -> crate::server::Connections {
        crate::server::Connections {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        }
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            rate_limit: self.rate_limit,
            cors_origins: self.cors_origins.clone(),
            key_cache_ttl: Duration::from_millis(self.key_cache_ttl_ms),
            catalog_cache_ttl: Duration::from_millis(self.catalog_cache_ttl_ms),
            quote_ttl: Duration::from_secs(self.quote_ttl_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            // A claim must outlive any request that can still be running under it.
            idempotency_lock_secs: i64::try_from(self.request_timeout_secs).unwrap_or(3600) + 60,
            max_payment: self.max_payment,
            stripe_webhook_secrets: self.stripe_webhook_secret.clone(),
            apply_webhooks: self.webhook_worker == "on",
            reconcile_after: Duration::from_secs(self.reconcile_after_secs),
            reporting_currency: self.reporting_currency,
            plugin_dir: Some(self.plugin_dir()),
            plugin_cache_dir: Some(self.storage.data_dir.join("plugin-cache")),
            plugin_limits: self.plugin_limits.host_limits(),
            fault_abort: self.fault_abort,
            dunning: Dunning {
                retry_days: self.dunning_retry_days.clone(),
                final_action: if self.dunning_final_action == "unpaid" {
                    FinalAction::MarkUnpaid
                } else {
                    FinalAction::Cancel
                },
            },
        }
    }
}

fn parse_database_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(s.to_string())
    } else {
        Err("must start with sqlite:, postgres:// or postgresql://".to_string())
    }
}

fn parse_currency(s: &str) -> Result<hephaestus_core::money::Currency, String> {
    hephaestus_core::money::Currency::parse(s, "currency").map_err(|e| e.message)
}

fn parse_rate_setting(s: &str) -> Result<(String, String, String), String> {
    let err = || format!("`{s}` is not BASE/QUOTE=RATE, like EUR/USD=1.0832");
    let (pair, rate) = s.trim().split_once('=').ok_or_else(err)?;
    let (base, quote) = pair.split_once('/').ok_or_else(err)?;
    hephaestus_api::reporting::new_rate(base, quote, rate, "config")
        .map_err(|e| format!("`{s}`: {e}"))?;
    Ok((base.to_string(), quote.to_string(), rate.to_string()))
}

fn parse_max_payment(s: &str) -> Result<rust_decimal::Decimal, String> {
    let d: rust_decimal::Decimal = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a decimal amount like 1000000.00"))?;
    if d <= rust_decimal::Decimal::ZERO {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_origin(s: &str) -> Result<HeaderValue, String> {
    let s = s.trim();
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && !s.ends_with('/')
        && s.split("://")
            .nth(1)
            .is_some_and(|host| !host.is_empty() && !host.contains('/'));
    if !ok {
        return Err(format!(
            "`{s}` is not an origin like https://app.example.com (scheme and host, no path)"
        ));
    }
    HeaderValue::from_str(s).map_err(|e| format!("`{s}`: {e}"))
}

/// Every environment variable this program reads under its own prefix: the `env` of every
/// argument of every command, read off the CLI's own definition (a list kept by hand once
/// missed `HEPHAESTUS_CATALOG_CACHE_TTL_MS`, refusing to start with a documented setting),
/// and the log filter, which telemetry reads. Anything else with the prefix is a typo that
/// would otherwise be silently ignored.
pub fn known_settings() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str())
                && env.starts_with("HEPHAESTUS_")
            {
                out.insert(env.to_string());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::from([LOG_SETTING.to_string()]);
    walk(&crate::cli::Cli::command(), &mut out);
    out.into_iter().collect()
}

/// The tracing filter, read by [`crate::telemetry`] rather than by an argument.
pub(crate) const LOG_SETTING: &str = "HEPHAESTUS_LOG";

/// Variables with our prefix that clients read (the quick-start script, curl examples), not
/// the server. Accepted so a shell set up for both can start the server.
pub const CLIENT_SETTINGS: &[&str] = &["HEPHAESTUS_URL", "HEPHAESTUS_KEY"];

/// Loads `.env` (never overriding the real environment) and rejects unknown
/// `HEPHAESTUS_*` settings.
pub fn load_env() -> anyhow::Result<()> {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => bail!(".env: {e}"),
    }
    let known = known_settings();
    let unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("HEPHAESTUS_")
                && !known.contains(k)
                && !CLIENT_SETTINGS.contains(&k.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown setting(s) {}; known settings are {}",
            unknown.join(", "),
            known.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_setting_is_known() {
        let known = known_settings();
        let readme = include_str!("../../../README.md");
        let documented: BTreeSet<&str> = readme
            .split('`')
            .filter(|w| {
                w.starts_with("HEPHAESTUS_")
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .filter(|w| !CLIENT_SETTINGS.contains(w))
            .collect();
        assert!(documented.contains("HEPHAESTUS_CATALOG_CACHE_TTL_MS"));
        for setting in documented {
            assert!(known.iter().any(|k| k == setting), "{setting} in {known:?}");
        }
        assert!(known.iter().any(|k| k == LOG_SETTING));
    }

    /// Every variable the program reads, whatever its prefix (`DATABASE_URL`, `STRIPE_…`
    /// too): the `env` of every argument of every command, and the log filter.
    fn every_setting() -> BTreeSet<String> {
        fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    out.insert(env.to_string());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut out = BTreeSet::from([LOG_SETTING.to_string()]);
        walk(&crate::cli::Cli::command(), &mut out);
        out
    }

    #[test]
    fn the_readme_documents_every_setting() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<String> = every_setting()
            .into_iter()
            .filter(|s| !readme.contains(&format!("| `{s}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in a README settings table: {missing:?}"
        );
    }

    /// `.env.sample` is where an operator learns what can be set: it lists every setting
    /// (commented out, with its default or an example) and nothing the program does not read.
    #[test]
    fn env_sample_lists_every_setting_and_no_other() {
        let sample = include_str!("../../../.env.sample");
        let listed: BTreeSet<String> = sample
            .lines()
            .map(|l| l.trim_start_matches('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(name, _)| name)
            .filter(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_string)
            .collect();
        let known = every_setting();
        let missing: Vec<_> = known.difference(&listed).collect();
        let unknown: Vec<_> = listed.difference(&known).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            ".env.sample lacks {missing:?} and lists settings nothing reads: {unknown:?}"
        );
        assert!(listed.contains("DATABASE_URL") && listed.contains(LOG_SETTING));
    }

    #[test]
    fn plugin_ceilings_take_a_value_per_world() {
        let t = parse_timeout_ceiling("200,pricing:50").unwrap();
        assert_eq!(t.get(hephaestus_plugins::World::Pricing), 50);
        assert_eq!(t.get(hephaestus_plugins::World::Segmentation), 200);
        let t = parse_timeout_ceiling("segmentation:20").unwrap();
        assert_eq!(t.get(hephaestus_plugins::World::Pricing), 1000);
        assert!(parse_timeout_ceiling("0").is_err());
        assert!(parse_timeout_ceiling("pricing:70000").is_err());
        assert!(parse_output_ceiling("1000").is_err());
        assert!(parse_memory_ceiling("pricer:5").is_err());
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "hephaestus",
            "serve",
            "--plugin-max-timeout-ms",
            "pricing:50",
        ])
        .unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let limits = args.plugin_limits.host_limits();
        assert_eq!(
            limits
                .ceilings
                .timeout_ms
                .get(hephaestus_plugins::World::Pricing),
            50
        );
        assert_eq!(limits.max_concurrent_calls, 16);
    }

    #[test]
    fn origins_are_checked() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:5173").is_ok());
        for bad in [
            "app.example.com",
            "https://",
            "https://a.com/",
            "https://a.com/x",
            "ftp://a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stripe_settings_are_checked() {
        assert!(parse_stripe_key("sk_test_abc").is_ok());
        assert!(parse_stripe_key("rk_live_abc").is_ok());
        assert!(parse_stripe_key("pk_test_abc").is_err());
        assert!(parse_stripe_key(" ").is_err());
        assert_eq!(
            parse_stripe_api_base("http://127.0.0.1:8420").as_deref(),
            Ok("http://127.0.0.1:8420/")
        );
        assert!(parse_stripe_api_base("127.0.0.1:8420").is_err());
        let key: hephaestus_core::secret::Secret = parse_stripe_key("sk_test_hidden").unwrap();
        assert!(!format!("{key:?}").contains("hidden"));
    }

    #[test]
    fn database_urls_are_checked() {
        assert!(parse_database_url("sqlite://x.db").is_ok());
        assert!(parse_database_url("postgres://u@h/db").is_ok());
        assert!(parse_database_url("mysql://u@h/db").is_err());
    }
}
