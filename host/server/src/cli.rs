//! The command line: `serve`, `migrate`, `keys create|list|revoke`, `billing reconcile`,
//! `analytics rebuild`, `plugins list|check|call`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hephaestus_api::AppState;
use hephaestus_api::rate_limit::RateLimit;
use hephaestus_billing::reconcile;
use hephaestus_core::keys::Scope;
use hephaestus_store::{Store, keys, redact_url};

use crate::config::{self, GatewayArgs, PluginLimitsArgs, ServeArgs, StorageArgs};
use crate::{server, telemetry};

#[derive(Debug, Parser)]
#[command(name = "hephaestus", version, about = "Self-hosted revenue engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StorageArgs),
    /// Billing maintenance.
    Billing {
        #[command(subcommand)]
        action: BillingCommand,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Revenue analytics maintenance.
    Analytics {
        #[command(subcommand)]
        action: AnalyticsCommand,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Inspect plugins: the folder's plugins, whether a file is a plugin, one call.
    Plugins {
        #[command(subcommand)]
        action: PluginsCommand,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Ask the gateway about payments still processing or waiting for the customer, and
    /// about the subscriptions it bills that are past due, unpaid or past their period's
    /// end, and bring them up to date (the server also does this every minute).
    Reconcile {
        /// Only payments and subscriptions unchanged (and not asked about) for at least
        /// this many seconds.
        #[arg(long, default_value_t = 600)]
        older_than_secs: i64,
        /// At most this many payments, and this many subscriptions.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Empty the dashboard's daily aggregates and count the whole event log again. The
    /// figures come out as the running server keeps them; a server running meanwhile
    /// pauses its counting and resumes where the rebuild ends.
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Load the plugin folder as the server would and list each plugin: world, version,
    /// status and load error. (A running server's call counts: `GET /api/v1/plugins`.)
    List {
        /// The plugin folder (default `<data dir>/plugins`, as `serve` uses).
        #[arg(long, env = "HEPHAESTUS_PLUGIN_DIR")]
        plugin_dir: Option<std::path::PathBuf>,
        #[arg(long, env = "HEPHAESTUS_DATA_DIR", default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: PluginLimitsArgs,
    },
    /// Say which world a component satisfies, or exactly why it is not a plugin, and the
    /// limits it would run under (its manifest's, cut to the host's ceilings, with a
    /// warning for each cut).
    Check {
        file: std::path::PathBuf,
        /// Its manifest (default: the `.toml` beside the file, if any).
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
        #[command(flatten)]
        limits: PluginLimitsArgs,
    },
    /// Call a component once and print the answer, fuel used, peak memory, duration and
    /// the guest's log lines.
    Call {
        file: std::path::PathBuf,
        /// pricing, segmentation, personalization or campaign-trigger (default: the
        /// manifest's, or what the component exports).
        #[arg(long)]
        world: Option<String>,
        /// A JSON request, e.g. `{"quote": {...}}` (see plugins/README.md).
        #[arg(long)]
        input: std::path::PathBuf,
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
        #[command(flatten)]
        limits: PluginLimitsArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once. Only its hash is stored.
    Create {
        /// A name people will recognise, e.g. `billing-service`.
        #[arg(long)]
        name: String,
        /// read, write or admin; each includes the ones before it.
        #[arg(long)]
        scope: Scope,
        /// This key's own limit instead of the server's `HEPHAESTUS_RATE_LIMIT`, in the same
        /// syntax: `20/s`, `600/m`, `1000/h`, or `off` for none.
        #[arg(long)]
        rate_limit: Option<RateLimit>,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id (`key_…`). Requests with it fail with 401.
    Revoke { id: String },
}

pub fn main() -> ExitCode {
    if let Err(e) = config::load_env() {
        eprintln!("hephaestus: configuration error: {e:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hephaestus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hephaestus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open(storage: &StorageArgs) -> anyhow::Result<Store> {
    let url = storage.resolve_url()?;
    let store = Store::connect(&url, &storage.pool_settings())
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(storage) => {
            telemetry::init("text");
            let store = open(&storage).await?;
            println!("migrations applied ({})", store.kind());
            store.close().await;
            Ok(())
        }
        Command::Billing {
            action,
            storage,
            gateway,
        } => {
            let store = open(&storage).await?;
            let BillingCommand::Reconcile {
                older_than_secs,
                limit,
            } = action;
            let gateway = gateway.gateway(&store)?;
            let passes =
                reconcile::reconcile_all(&store, gateway.as_ref(), older_than_secs, limit).await;
            store.close().await;
            for (what, pass) in passes {
                let report = pass?;
                println!(
                    "checked {} unsettled {what}: {} updated, {} could not be refetched",
                    report.checked, report.updated, report.failed
                );
            }
            Ok(())
        }
        Command::Analytics { action, storage } => {
            let store = open(&storage).await?;
            let AnalyticsCommand::Rebuild = action;
            let started = std::time::Instant::now();
            let result = hephaestus_analytics::rebuild(&store).await;
            store.close().await;
            let rebuilt = result.context("the analytics rebuild failed")?;
            println!(
                "analytics rebuilt from {} events (log position {}) in {} ms",
                rebuilt.events,
                rebuilt.position,
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Command::Plugins { action } => plugins_command(action),
        Command::Keys { action, storage } => {
            let store = open(&storage).await?;
            let result = keys_command(&store, action).await;
            store.close().await;
            result
        }
    }
}

fn manifest_for(
    file: &std::path::Path,
    explicit: Option<&std::path::Path>,
) -> anyhow::Result<hephaestus_plugins::Manifest> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(file.with_extension("toml")).filter(|p| p.exists()),
    };
    match path {
        None => Ok(hephaestus_plugins::Manifest::default()),
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            hephaestus_plugins::Manifest::parse(&text)
                .with_context(|| format!("{} is not a valid manifest", p.display()))
        }
    }
}

fn tool_host(
    dir: std::path::PathBuf,
    limits: &PluginLimitsArgs,
) -> anyhow::Result<hephaestus_plugins::PluginHost> {
    let mut config = hephaestus_plugins::HostConfig::new(dir);
    config.limits = limits.host_limits();
    Ok(hephaestus_plugins::PluginHost::new(config)?)
}

fn plugins_command(action: PluginsCommand) -> anyhow::Result<()> {
    match action {
        PluginsCommand::List {
            plugin_dir,
            data_dir,
            json,
            limits,
        } => {
            let dir = plugin_dir.unwrap_or_else(|| data_dir.join("plugins"));
            let mut config = hephaestus_plugins::HostConfig::new(&dir);
            config.cache_dir = Some(data_dir.join("plugin-cache"));
            config.limits = limits.host_limits();
            let host = hephaestus_plugins::PluginHost::new(config)?;
            host.load_all();
            let list = host.list();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("plugins in {}:", dir.display());
            for p in list {
                println!(
                    "{:<28} {:<17} {:<13} {:?}{}",
                    p.name,
                    p.world.map(|w| w.as_str()).unwrap_or("-"),
                    p.version_short.as_deref().unwrap_or("-"),
                    p.state,
                    p.last_error
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default()
                );
                for warning in &p.warnings {
                    println!("  warning: {warning}");
                }
            }
            Ok(())
        }
        PluginsCommand::Check {
            file,
            manifest,
            limits,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = manifest_for(&file, manifest.as_deref())?;
            let host = tool_host(std::env::temp_dir(), &limits)?;
            match host.check(&bytes, &manifest) {
                Ok(report) => {
                    println!(
                        "{}: a {} plugin (version {}, {} bytes)",
                        file.display(),
                        report.world.as_str(),
                        &report.version[..12],
                        report.size_bytes
                    );
                    println!("  imports: {}", report.imports.join(", "));
                    println!("  exports: {}", report.exports.join(", "));
                    let l = &report.limits;
                    println!(
                        "  limits: timeout {} ms, fuel {}, memory {} MiB, output {} bytes",
                        l.timeout.as_millis(),
                        l.fuel,
                        l.memory_bytes >> 20,
                        l.output_bytes
                    );
                    for warning in &report.warnings {
                        println!("  warning: {warning}");
                    }
                    Ok(())
                }
                Err(e) => anyhow::bail!("{} is not a usable plugin: {e}", file.display()),
            }
        }
        PluginsCommand::Call {
            file,
            world,
            input,
            manifest,
            limits,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = manifest_for(&file, manifest.as_deref())?;
            let world = world
                .map(|w| {
                    hephaestus_plugins::World::parse(&w).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--world: `{w}` is not pricing, segmentation, personalization or campaign-trigger"
                        )
                    })
                })
                .transpose()?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let input: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", input.display()))?;
            let host = tool_host(std::env::temp_dir(), &limits)?;
            let report = host.call_once(&bytes, world, input, &manifest)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(fault) = &report.fault {
                anyhow::bail!("the call faulted: {fault:?}");
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(&args.log_format);
    let store = open(&args.storage).await?;
    if let Some(created) = keys::bootstrap_admin(&store).await? {
        // stdout, once: the only time this key can be seen.
        println!("admin API key: {}", created.secret.secret);
        println!(
            "  (shown once; create more with: hephaestus keys create --name NAME --scope read|write|admin)"
        );
    }
    record_configured_rates(&store, &args.exchange_rates).await?;
    let shutdown = server::shutdown_signal().context("cannot listen for SIGTERM")?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("HEPHAESTUS_ADDR: cannot listen on {}", args.addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        database = store.kind(),
        "hephaestus listening"
    );
    let plugin_dir = args.plugin_dir();
    std::fs::create_dir_all(&plugin_dir).with_context(|| {
        format!(
            "HEPHAESTUS_PLUGIN_DIR: cannot create {}",
            plugin_dir.display()
        )
    })?;
    let gateway = args.gateway.gateway(&store)?;
    tracing::info!(gateway = gateway.name(), "payment gateway");
    let state = AppState::with_gateway(store, args.api_config(), gateway).with_context(|| {
        format!(
            "HEPHAESTUS_PLUGIN_DIR: cannot load {}",
            plugin_dir.display()
        )
    })?;
    state.refresh_clock().await?;
    tracing::info!(dir = %plugin_dir.display(), plugins = state.plugins.list().len(), "plugin folder loaded");
    server::run_with(
        listener,
        state.clone(),
        hephaestus_api::app(state),
        shutdown,
        Duration::from_secs(args.shutdown_grace_secs),
        args.connections(),
    )
    .await
}

/// Records `HEPHAESTUS_EXCHANGE_RATES` that differ from the newest rate of their pair.
async fn record_configured_rates(
    store: &Store,
    rates: &[(String, String, String)],
) -> anyhow::Result<()> {
    let latest = hephaestus_store::exchange_rates::latest(store).await?;
    for (base, quote, rate) in rates {
        let new = hephaestus_api::reporting::new_rate(base, quote, rate, "config")
            .map_err(|e| anyhow::anyhow!("HEPHAESTUS_EXCHANGE_RATES: {e}"))?;
        let unchanged = latest
            .iter()
            .any(|r| r.base == new.base && r.quote == new.quote && r.rate == new.rate);
        if !unchanged {
            store
                .write(move |tx| {
                    Box::pin(
                        async move { hephaestus_store::exchange_rates::insert(tx, &new).await },
                    )
                })
                .await?;
        }
    }
    Ok(())
}

async fn keys_command(store: &Store, action: KeysCommand) -> anyhow::Result<()> {
    match action {
        KeysCommand::Create {
            name,
            scope,
            rate_limit,
        } => {
            if name.trim().is_empty() || name.chars().count() > 100 {
                anyhow::bail!("--name must be 1 to 100 characters");
            }
            let rate = rate_limit.map(|r| keys::KeyRate {
                limit: r.limit,
                window_secs: r.window_secs,
            });
            let created = keys::create_with_rate(store, &name, scope, rate).await?;
            eprintln!(
                "created {} ({}, scope {}); the key is shown once:",
                created.key.id, created.key.name, created.key.scope
            );
            println!("{}", created.secret.secret);
        }
        KeysCommand::List { json } => {
            let all = keys::list(store).await?;
            if json {
                let rows: Vec<serde_json::Value> = all
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "name": k.name, "scope": k.scope,
                            "prefix": k.display_prefix, "rate_limit": rate_text(k),
                            "created_at": k.created_at, "last_used_at": k.last_used_at,
                            "revoked_at": k.revoked_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<30} {:<6} {:<10} {:<20} {:<28} {:<28} NAME",
                    "ID", "SCOPE", "PREFIX", "STATUS", "CREATED", "LAST USED"
                );
                for k in &all {
                    let status = match k.revoked_at {
                        Some(_) => "revoked",
                        None => "active",
                    };
                    println!(
                        "{:<30} {:<6} {:<10} {:<20} {:<28} {:<28} {}",
                        k.id,
                        k.scope,
                        k.display_prefix,
                        status,
                        k.created_at.to_rfc3339(),
                        k.last_used_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "-".into()),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => match keys::revoke(store, &id).await? {
            Some(k) => println!("revoked {} ({})", k.id, k.name),
            None => anyhow::bail!("no key with id {id}"),
        },
    }
    Ok(())
}

/// A key's own limit as it was given (`20/s`, `off`); a bare count for a key made before
/// keys stored their window (it counts in the server's window); `null` for the server's.
fn rate_text(k: &keys::ApiKey) -> serde_json::Value {
    match (k.rate_limit, k.rate_limit_window_secs) {
        (None, _) => serde_json::Value::Null,
        (Some(limit), None) => serde_json::json!(limit),
        (Some(limit), Some(window_secs)) => {
            serde_json::json!(RateLimit { limit, window_secs }.to_string())
        }
    }
}
