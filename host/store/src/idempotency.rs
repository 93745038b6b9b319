//! `Idempotency-Key` records. A request claims its key with an insert that only one request
//! can win; the winner's transaction stores the response in the same commit as the domain
//! change, so a crash can never leave a change without its record or a record without its
//! change. Records live 24 hours.

use hephaestus_core::Timestamp;

use futures::future::BoxFuture;

use crate::{Result, Store, StoreError, Tx, with_read, with_tx};

/// How long a key is remembered.
pub const RETENTION_SECS: i64 = 24 * 60 * 60;

/// Who is asking, under which key, for what.
#[derive(Debug, Clone)]
pub struct IdemKey {
    pub api_key_id: String,
    pub key: String,
    /// SHA-256 over method, path and body: the same key for another request is a conflict.
    pub request_hash: String,
    /// Set by [`claim`]: proves this request still holds the claim when it finishes.
    pub claim_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key and must finish it with [`complete`] or [`release`].
    Acquired,
    /// The first request finished; answer with its response.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request is still running.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct Existing {
    request_hash: String,
    state: String,
    response_status: Option<i64>,
    response_body: Option<String>,
}

/// Tries to take the key; on success `k.claim_token` is this request's proof of ownership.
/// A claim whose request died is taken over as soon as its process is known dead (see
/// [`crate::instances`]) or, for a claim recorded by no process, after `lock_secs` — unless
/// the dead request left a gateway attempt: that claim is settled by recovery, which records
/// what the gateway did, and a retry is answered from that record.
pub async fn claim(store: &Store, k: &mut IdemKey, lock_secs: i64) -> Result<Claim> {
    let (claim, _) = claim_with(store, k, lock_secs, |_, _| {
        Box::pin(async { Ok::<_, StoreError>(()) })
    })
    .await?;
    Ok(claim)
}

/// [`claim`], and when the key is acquired, `prepare` in the same
/// transaction: what must exist before the request acts outside the database (its gateway
/// attempt). An `Err` from `prepare` rolls the claim back with it. `T` is `prepare`'s value,
/// `None` when the key was not acquired.
pub async fn claim_with<T, E, F>(
    store: &Store,
    k: &mut IdemKey,
    lock_secs: i64,
    prepare: F,
) -> std::result::Result<(Claim, Option<T>), E>
where
    F: for<'t> FnOnce(&'t mut Tx, &'t IdemKey) -> BoxFuture<'t, std::result::Result<T, E>>
        + Send
        + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let owner = store.instance().to_string();
    let alive_cutoff = crate::instances::alive_cutoff(store, Timestamp::now());
    let mut key = k.clone();
    let (claim, value, key) = store
        .write(move |tx| {
            Box::pin(async move {
                let claim = claim_in(tx, &owner, alive_cutoff, &mut key, lock_secs).await?;
                if claim != Claim::Acquired {
                    return Ok((claim, None, key));
                }
                let value = prepare(tx, &key).await?;
                Ok::<_, E>((Claim::Acquired, Some(value), key))
            })
        })
        .await?;
    k.claim_token = key.claim_token;
    Ok((claim, value))
}

async fn claim_in(
    tx: &mut Tx,
    owner: &str,
    alive_cutoff: Option<i64>,
    k: &mut IdemKey,
    lock_secs: i64,
) -> Result<Claim> {
    let now = Timestamp::now();
    k.claim_token = hephaestus_core::ids::new_id("clm");
    let inserted = with_tx!(tx, |c| sqlx::query(
        "INSERT INTO idempotency_keys
             (api_key_id, idem_key, request_hash, state, created_at, locked_until, claim_token,
              owner)
         VALUES ($1, $2, $3, 'running', $4, $5, $6, $7)
         ON CONFLICT (api_key_id, idem_key) DO NOTHING"
    )
    .bind(&k.api_key_id)
    .bind(&k.key)
    .bind(&k.request_hash)
    .bind(now.as_micros())
    .bind(now.add_secs(lock_secs).as_micros())
    .bind(&k.claim_token)
    .bind(owner)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    if inserted == 1 {
        return Ok(Claim::Acquired);
    }
    // Take over an expired record, or a claim abandoned by a request that died, unless that
    // request left a gateway attempt for recovery to settle.
    let sql = format!(
        "UPDATE idempotency_keys
            SET request_hash = $3, state = 'running', response_status = NULL,
                response_body = NULL, resource_id = NULL, created_at = $4, locked_until = $5,
                claim_token = $7, owner = $8
          WHERE api_key_id = $1 AND idem_key = $2
            AND (created_at < $6
                 OR (state = 'running'
                     AND (locked_until < $4 OR (owner IS NOT NULL AND {dead}))
                     AND NOT EXISTS (SELECT 1 FROM gateway_attempts a
                                      WHERE a.api_key_id = $1 AND a.idem_key = $2)))",
        dead = crate::instances::dead_sql("idempotency_keys.owner", "$9"),
    );
    let taken = with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(&k.api_key_id)
        .bind(&k.key)
        .bind(&k.request_hash)
        .bind(now.as_micros())
        .bind(now.add_secs(lock_secs).as_micros())
        .bind(now.add_secs(-RETENTION_SECS).as_micros())
        .bind(&k.claim_token)
        .bind(owner)
        .bind(alive_cutoff)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    if taken == 1 {
        return Ok(Claim::Acquired);
    }
    let existing: Option<Existing> = with_tx!(tx, |c| sqlx::query_as(
        "SELECT request_hash, state, response_status, response_body
           FROM idempotency_keys WHERE api_key_id = $1 AND idem_key = $2"
    )
    .bind(&k.api_key_id)
    .bind(&k.key)
    .fetch_optional(c)
    .await)?;
    Ok(match existing {
        // Purged between our insert and select: the caller may simply retry.
        None => Claim::InProgress,
        Some(e) if e.request_hash != k.request_hash => Claim::Mismatch,
        Some(e) if e.state == "running" => Claim::InProgress,
        Some(e) => Claim::Replay {
            status: e
                .response_status
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            body: e.response_body.unwrap_or_default(),
        },
    })
}

/// Stores the response for replay, inside the transaction that made the change. Fails with
/// [`StoreError::ClaimLost`] if this request no longer holds the claim (it expired and a
/// retry took it over), so the change rolls back instead of committing twice.
pub async fn complete(
    tx: &mut Tx,
    k: &IdemKey,
    status: u16,
    body: &str,
    resource_id: Option<&str>,
) -> Result<()> {
    let n = with_tx!(tx, |c| sqlx::query(
        "UPDATE idempotency_keys
            SET state = 'done', response_status = $3, response_body = $4, resource_id = $5
          WHERE api_key_id = $1 AND idem_key = $2 AND state = 'running' AND claim_token = $6"
    )
    .bind(&k.api_key_id)
    .bind(&k.key)
    .bind(i64::from(status))
    .bind(body)
    .bind(resource_id)
    .bind(&k.claim_token)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if n != 1 {
        return Err(StoreError::ClaimLost);
    }
    Ok(())
}

/// Gives the key back after a failure that should not be replayed (a server error), so the
/// client's retry runs the request again.
pub async fn release(store: &Store, k: &IdemKey) -> Result<()> {
    let mut tx = store.begin().await?;
    release_in(&mut tx, k).await?;
    tx.commit().await
}

/// [`release`], inside a transaction.
pub async fn release_in(tx: &mut Tx, k: &IdemKey) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "DELETE FROM idempotency_keys
          WHERE api_key_id = $1 AND idem_key = $2 AND state = 'running' AND claim_token = $3"
    )
    .bind(&k.api_key_id)
    .bind(&k.key)
    .bind(&k.claim_token)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Forgets stored responses that name a resource, so an erased customer's data does not
/// survive in a replay cache.
pub async fn forget_resource(tx: &mut Tx, resource_id: &str) -> Result<()> {
    with_tx!(tx, |c| sqlx::query(
        "DELETE FROM idempotency_keys WHERE resource_id = $1"
    )
    .bind(resource_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes records older than the retention period.
pub async fn purge_expired(store: &Store) -> Result<u64> {
    let cutoff = Timestamp::now().add_secs(-RETENTION_SECS).as_micros();
    let mut tx = store.begin().await?;
    let n = with_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < $1"
    )
    .bind(cutoff)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// How many records exist; for tests and diagnostics.
pub async fn count(store: &Store) -> Result<i64> {
    Ok(with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM idempotency_keys"
    )
    .fetch_one(e)
    .await)?)
}
