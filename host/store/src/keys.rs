use hephaestus_core::Timestamp;
use hephaestus_core::ids;
use hephaestus_core::keys::{self as keygen, Scope};

use crate::{Backend, Result, Store, StoreError, with_read, with_tx};

/// An API key as stored: everything but the secret, which is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub display_prefix: String,
    /// Requests per rate-limit window for this key; `None` uses the server's setting, `0`
    /// turns limiting off for the key.
    pub rate_limit: Option<i64>,
    /// The window `rate_limit` counts in, in seconds; `None` (keys made before windows
    /// were stored with them) counts in the server's window.
    pub rate_limit_window_secs: Option<i64>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    scope: String,
    display_prefix: String,
    rate_limit: Option<i64>,
    rate_limit_window_secs: Option<i64>,
    created_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(row: KeyRow) -> Result<Self> {
        Ok(ApiKey {
            scope: row.scope.parse().map_err(StoreError::Corrupt)?,
            id: row.id,
            name: row.name,
            display_prefix: row.display_prefix,
            rate_limit: row.rate_limit,
            rate_limit_window_secs: row.rate_limit_window_secs,
            created_at: Timestamp::from_micros(row.created_at),
            revoked_at: row.revoked_at.map(Timestamp::from_micros),
            last_used_at: row.last_used_at.map(Timestamp::from_micros),
        })
    }
}

const COLUMNS: &str = "id, name, scope, display_prefix, rate_limit, rate_limit_window_secs, \
     created_at, revoked_at, last_used_at";

/// A key just made, with its secret: shown once, then only the hash remains.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: keygen::NewKeySecret,
}

/// A key's own rate limit: `limit` requests per `window_secs` (`limit` 0: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRate {
    pub limit: i64,
    pub window_secs: i64,
}

fn new_key(
    name: &str,
    scope: Scope,
    rate_limit: Option<i64>,
    rate_limit_window_secs: Option<i64>,
) -> CreatedKey {
    let secret = keygen::generate();
    CreatedKey {
        key: ApiKey {
            id: ids::new_id(ids::prefix::API_KEY),
            name: name.to_string(),
            scope,
            display_prefix: secret.display_prefix.clone(),
            rate_limit,
            rate_limit_window_secs,
            created_at: Timestamp::now(),
            revoked_at: None,
            last_used_at: None,
        },
        secret,
    }
}

const INSERT: &str = "INSERT INTO api_keys
     (id, name, scope, key_hash, display_prefix, rate_limit, created_at, rate_limit_window_secs)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Creates a key whose own limit, if any, counts in the server's window.
pub async fn create(
    store: &Store,
    name: &str,
    scope: Scope,
    rate_limit: Option<i64>,
) -> Result<CreatedKey> {
    let created = new_key(name, scope, rate_limit, None);
    let mut tx = store.begin().await?;
    insert(&mut tx, &created, INSERT).await?;
    tx.commit().await?;
    Ok(created)
}

/// Creates a key with a rate of its own (`20/s`, `600/m`, or unlimited), or the server's.
pub async fn create_with_rate(
    store: &Store,
    name: &str,
    scope: Scope,
    rate: Option<KeyRate>,
) -> Result<CreatedKey> {
    let created = new_key(
        name,
        scope,
        rate.map(|r| r.limit),
        rate.map(|r| r.window_secs),
    );
    let mut tx = store.begin().await?;
    insert(&mut tx, &created, INSERT).await?;
    tx.commit().await?;
    Ok(created)
}

async fn insert(tx: &mut crate::Tx, created: &CreatedKey, sql: &str) -> Result<u64> {
    let k = &created.key;
    let done = with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&k.id)
        .bind(&k.name)
        .bind(k.scope.as_str())
        .bind(&created.secret.hash)
        .bind(&k.display_prefix)
        .bind(k.rate_limit)
        .bind(k.created_at.as_micros())
        .bind(k.rate_limit_window_secs)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Creates an admin key if and only if no key exists at all, atomically across hosts that
/// start together on one database. Returns the key when this call made it.
pub async fn bootstrap_admin(store: &Store) -> Result<Option<CreatedKey>> {
    let created = new_key("bootstrap admin", Scope::Admin, None, None);
    let mut tx = store.begin().await?;
    if matches!(store.backend(), Backend::Postgres(_)) {
        // READ COMMITTED would let two hosts both see an empty table; serialise them.
        with_tx!(&mut tx, |c| sqlx::query(
            "SELECT pg_advisory_xact_lock(7245001)"
        )
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    let sql = "INSERT INTO api_keys
         (id, name, scope, key_hash, display_prefix, rate_limit, created_at, rate_limit_window_secs)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM api_keys)";
    let inserted = insert(&mut tx, &created, sql).await?;
    tx.commit().await?;
    Ok((inserted == 1).then_some(created))
}

pub async fn find_by_hash(store: &Store, hash: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
    let row: Option<KeyRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(hash)
        .fetch_optional(e)
        .await)?;
    row.map(ApiKey::try_from).transpose()
}

pub async fn list(store: &Store) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY id");
    let rows: Vec<KeyRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

/// Revokes a key. Returns the key, or `None` if there is no such key. Revoking twice keeps
/// the first revocation time.
pub async fn revoke(store: &Store, id: &str) -> Result<Option<ApiKey>> {
    let mut tx = store.begin().await?;
    with_tx!(&mut tx, |c| sqlx::query(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
    )
    .bind(id)
    .bind(Timestamp::now().as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
    let row: Option<KeyRow> = with_tx!(&mut tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    tx.commit().await?;
    row.map(ApiKey::try_from).transpose()
}

/// Records that keys were used. Called in batches by the rate limiter's flush, never per request.
pub async fn touch(tx: &mut crate::Tx, ids: &[String], at: Timestamp) -> Result<()> {
    for id in ids {
        with_tx!(&mut *tx, |c| sqlx::query(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(at.as_micros())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}
