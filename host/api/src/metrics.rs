//! Prometheus metrics for the HTTP layer: request counts and latency by route and status.
//! The registry belongs to the app state rather than a global, so several apps (tests) can
//! live in one process.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hephaestus");
        let requests = Family::<HttpLabels, Counter>::default();
        // 100 µs to ~6.5 s: API calls live in the low milliseconds; the tail matters.
        let latency = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 17,
            ))
        });
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    pub fn observe(&self, labels: HttpLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

/// PostgreSQL's group commits ([`hephaestus_store::batch`]): for append-only transactions
/// (a payment's record), webhook deliveries into the inbox and the sandbox gateway's
/// charges (`sandbox_charges`, when the sandbox is the gateway), the statements sent and the
/// jobs they carried, so operators can see the batch size (jobs per statement). Nothing on
/// SQLite, whose writer batches every write.
pub fn render_batches(
    store: &hephaestus_store::Store,
    sandbox_charges: Option<hephaestus_store::batch::BatchStats>,
) -> String {
    let series = [
        (
            "append_batch",
            "transactions",
            "append-only transactions",
            store.append_batches(),
        ),
        (
            "webhook_intake_batch",
            "events",
            "webhook deliveries",
            store.intake_batches(),
        ),
        (
            "sandbox_charge_batch",
            "charges",
            "sandbox charges",
            sandbox_charges,
        ),
    ];
    let mut out = String::new();
    for (name, jobs, what, stats) in series {
        let Some(stats) = stats else { continue };
        out.push_str(&format!(
            "# TYPE hephaestus_db_{name}_statements counter\n\
             # HELP hephaestus_db_{name}_statements Statements that carried {what} (PostgreSQL group commit).\n\
             hephaestus_db_{name}_statements_total {}\n\
             # TYPE hephaestus_db_{name}_{jobs} counter\n\
             # HELP hephaestus_db_{name}_{jobs} The {what} those statements carried (one resent after its batch was refused counts again).\n\
             hephaestus_db_{name}_{jobs}_total {}\n",
            stats.statements, stats.jobs
        ));
    }
    out
}

/// Plugin series, from the plugin host's counters at scrape time (they live in the
/// runtime, not in this registry), in the OpenMetrics text format.
pub fn render_plugins(snapshot: &hephaestus_plugins::MetricsSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "# HELP {name} {help}");
        let suffix = if kind == "counter" { "_total" } else { "" };
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
        }
    };
    let label = |p: &hephaestus_plugins::PluginStatus| {
        format!(
            "plugin=\"{}\",world=\"{}\"",
            esc(&p.name),
            p.world.map(|w| w.as_str()).unwrap_or("unknown")
        )
    };
    let loaded: Vec<_> = snapshot
        .plugins
        .iter()
        .filter(|p| p.world.is_some())
        .collect();
    family(
        "hephaestus_plugin_calls",
        "counter",
        "Calls made to a plugin.",
        loaded
            .iter()
            .map(|p| (label(p), p.calls.to_string()))
            .collect(),
    );
    family(
        "hephaestus_plugin_faults",
        "counter",
        "Plugin calls whose answer could not be used (the default decided instead).",
        loaded
            .iter()
            .map(|p| (label(p), p.faults.to_string()))
            .collect(),
    );
    family(
        "hephaestus_plugin_log_lines_dropped",
        "counter",
        "Guest log lines kept out of the host's log (over a call's cap or the plugin's rate).",
        loaded
            .iter()
            .map(|p| (label(p), p.log_lines_dropped.to_string()))
            .collect(),
    );
    family(
        "hephaestus_plugin_busy",
        "counter",
        "Calls answered by the default at once because the plugin had its maximum of concurrent calls running.",
        loaded
            .iter()
            .map(|p| (label(p), p.busy.to_string()))
            .collect(),
    );
    family(
        "hephaestus_plugin_latency_p50_seconds",
        "gauge",
        "Median duration of a plugin call (instantiate, call, validate).",
        loaded
            .iter()
            .filter_map(|p| Some((label(p), format!("{}", p.latency_p50_us? as f64 / 1e6))))
            .collect(),
    );
    family(
        "hephaestus_plugin_latency_p99_seconds",
        "gauge",
        "99th-percentile duration of a plugin call.",
        loaded
            .iter()
            .filter_map(|p| Some((label(p), format!("{}", p.latency_p99_us? as f64 / 1e6))))
            .collect(),
    );
    family(
        "hephaestus_plugin_default_decisions",
        "counter",
        "Decisions the built-in default made, by world and reason.",
        snapshot
            .default_decisions
            .iter()
            .map(|d| {
                (
                    format!(
                        "world=\"{}\",reason=\"{}\"",
                        d.world.as_str(),
                        esc(d.reason)
                    ),
                    d.count.to_string(),
                )
            })
            .collect(),
    );
    family(
        "hephaestus_plugin_cache_loads",
        "counter",
        "Plugin components loaded, by whether a precompiled artifact was used.",
        vec![
            ("source=\"cache\"".into(), snapshot.cache.hits.to_string()),
            (
                "source=\"compiled\"".into(),
                snapshot.cache.compiles.to_string(),
            ),
        ],
    );
    out
}

/// Route-level middleware: runs after routing, so the route template (not the raw path,
/// which would explode label cardinality with ids) labels the series.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    state.metrics.observe(
        HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        },
        started.elapsed().as_secs_f64(),
    );
    response
}
