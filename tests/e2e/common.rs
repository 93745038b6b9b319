use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hephaestus_api::{ApiConfig, AppState};
use hephaestus_billing::gateway::Gateway;
use hephaestus_billing::sandbox::SandboxGateway;
use hephaestus_core::keys::Scope;
use hephaestus_store::{PoolSettings, Store, keys};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Runs an `async fn(Db)` test once per database.
#[macro_export]
macro_rules! both_dbs {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Db::Postgres).await
            }
        }
    )+};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, empty database: a file in a temp folder, or a new PostgreSQL schema that is
/// dropped when the test ends.
pub struct TestDb {
    pub url: String,
    /// The PostgreSQL schema this test owns, if any.
    pub schema: Option<String>,
    /// Holds the SQLite file; the folder goes when the test ends.
    pub _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(db: Db) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut owned = None;
        let url = match db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
            Db::Postgres => {
                let base = postgres_base_url();
                let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {base} is required for these tests: {e}")
                    });
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                // Schemas of earlier runs that died before cleaning up.
                let stale: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'e2e\\_%'",
                )
                .fetch_all(&mut admin)
                .await
                .unwrap();
                for name in stale {
                    let born: u64 = name
                        .split('_')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if born + 3600 < now {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                }
                let schema = format!("e2e_{now}_{}", uuid::Uuid::now_v7().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                owned = Some(schema.clone());
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
        };
        TestDb {
            url,
            schema: owned,
            _dir: dir,
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(
            &self.url,
            &PoolSettings {
                max_connections: 8,
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop runs outside async code: a short-lived thread with its own runtime does it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_base_url()).await
                {
                    let _ = sqlx::query("SET lock_timeout = '2s'").execute(&mut c).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A running server over a fresh database, with an admin key.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub store: Store,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Defaults for tests: no rate limit unless a test asks for one.
pub fn test_config() -> ApiConfig {
    ApiConfig {
        rate_limit: "off".parse().unwrap(),
        ..ApiConfig::default()
    }
}

impl TestServer {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, test_config()).await
    }

    pub async fn start_with(db: Db, config: ApiConfig) -> Self {
        Self::start_full(TestDb::new(db).await, config, Router::new()).await
    }

    pub async fn start_full(db: TestDb, config: ApiConfig, extra: Router<AppState>) -> Self {
        let store = db.store().await;
        let admin = keys::create(&store, "test admin", Scope::Admin, None)
            .await
            .unwrap()
            .secret
            .secret;
        Self::serve(db, store, admin, config, extra).await
    }

    /// Another host on the same database.
    pub async fn serve(
        db: TestDb,
        store: Store,
        admin: String,
        config: ApiConfig,
        extra: Router<AppState>,
    ) -> Self {
        let gateway = Arc::new(SandboxGateway::new(store.clone()));
        Self::serve_with_gateway(db, store, admin, config, extra, gateway).await
    }

    /// A server over a fresh database whose payments go through the gateway `make` builds.
    pub async fn start_with_gateway(
        db: Db,
        config: ApiConfig,
        make: impl FnOnce(&Store) -> Arc<dyn Gateway>,
    ) -> Self {
        let db = TestDb::new(db).await;
        let store = db.store().await;
        let admin = keys::create(&store, "test admin", Scope::Admin, None)
            .await
            .unwrap()
            .secret
            .secret;
        let gateway = make(&store);
        Self::serve_with_gateway(db, store, admin, config, Router::new(), gateway).await
    }

    pub async fn serve_with_gateway(
        db: TestDb,
        store: Store,
        admin: String,
        config: ApiConfig,
        extra: Router<AppState>,
        gateway: Arc<dyn Gateway>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::with_gateway(store.clone(), config, gateway).unwrap();
        let router = hephaestus_api::app_with(state.clone(), extra);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(hephaestus::server::run(
            listener,
            state,
            router,
            async {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        TestServer {
            base,
            client: reqwest::Client::new(),
            admin,
            store,
            db,
            shutdown: Some(tx),
        }
    }

    pub async fn key(&self, scope: Scope) -> String {
        keys::create(&self.store, &format!("test {scope}"), scope, None)
            .await
            .unwrap()
            .secret
            .secret
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value, idem: Option<&str>) -> Reply {
        let mut req = self.client.post(self.url(path)).bearer_auth(key).json(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, key: &str, path: &str) -> Reply {
        Reply::from(
            self.client
                .get(self.url(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The domain events about `customer`, oldest first, as its export lists them.
    pub async fn customer_events(&self, customer: &str) -> Vec<serde_json::Value> {
        let r = self
            .get(
                &self.admin,
                &format!("/api/v1/revenue/customers/{customer}/export"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["events"].as_array().unwrap().clone()
    }

    /// The status of an unauthenticated GET.
    pub async fn status_of(&self, path: &str) -> StatusCode {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The body of an unauthenticated GET, as text (`/metrics`).
    /// The server's OpenAPI document.
    pub async fn openapi(&self) -> serde_json::Value {
        self.client
            .get(self.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn text_of(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn delete(&self, key: &str, path: &str) -> Reply {
        Reply::from(
            self.client
                .delete(self.url(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn create_customer(&self, email: &str) -> Value {
        let r = self
            .post(
                &self.admin,
                "/api/v1/revenue/customers",
                &serde_json::json!({ "email": email }),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// Events in the log, less `customer.segments_changed`: the segment consumer writes
    /// those in the background, so how many there are at a given moment depends on timing.
    pub async fn count_events(&self) -> i64 {
        self.count("events WHERE type <> 'customer.segments_changed'")
            .await
    }

    /// Rows in a table, read directly from the database.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        hephaestus_store::with_read!(&self.store, |e| sqlx::query_scalar::<_, i64>(
            sqlx::AssertSqlSafe(sql)
        )
        .fetch_one(e)
        .await)
        .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }
}

/// Where `plugins/build.sh` puts the plugins built from `plugins/` (tests/run builds them).
pub fn built_plugins() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    assert!(
        dir.join("volume-pricing.wasm").exists(),
        "no built plugins in {}: run plugins/build.sh (tests/run does)",
        dir.display()
    );
    dir
}

/// A plugin folder holding copies of the named built plugins (`.wasm` and `.toml`).
pub fn plugin_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                built_plugins().join(format!("{name}.{ext}")),
                dir.path().join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    dir
}

/// A server over a fresh database whose plugin folder is `dir`.
pub async fn server_with(db: Db, dir: &std::path::Path) -> TestServer {
    let config = ApiConfig {
        plugin_dir: Some(dir.to_path_buf()),
        ..test_config()
    };
    TestServer::start_with(db, config).await
}

/// A new product with one recurring USD price (`amount` in major units); its id.
pub async fn recurring_price(
    s: &TestServer,
    amount: Value,
    interval: &str,
    trial_days: Option<i64>,
) -> String {
    let product = s
        .post(
            &s.admin,
            "/api/v1/revenue/products",
            &json!({"name": "Pro"}),
            None,
        )
        .await;
    assert_eq!(product.status, StatusCode::CREATED, "{}", product.body);
    let mut body = json!({"product_id": product.body["id"], "currency": "usd",
        "unit_amount": amount, "recurring": {"interval": interval}});
    if let Some(t) = trial_days {
        body["trial_days"] = json!(t);
    }
    let p = s
        .post(&s.admin, "/api/v1/revenue/prices", &body, None)
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    p.body["id"].as_str().unwrap().to_string()
}
