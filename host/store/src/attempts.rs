//! Gateway calls about to be made. A request that charges or refunds writes its attempt —
//! what it knows, and the idempotency key the gateway will see — before it calls the
//! gateway, and deletes it in the transaction that records the outcome. An attempt still
//! here whose owner died is an outcome nobody recorded: recovery asks the gateway about its
//! key and records what the request would have ([`claim_orphans`]).

use hephaestus_core::Timestamp;

use crate::{Result, Store, Tx, instances, with_tx};

/// A gateway call about to be made.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempt {
    /// `att_…`
    pub id: String,
    /// `payment`, `confirm` or `refund`: which request made it, so recovery knows how to
    /// record its outcome.
    pub kind: String,
    pub gateway: String,
    /// The key the gateway call carries: the gateway answers a repeat with its first result,
    /// and recovery finds the call by it.
    pub gateway_key: String,
    /// The process making the call (`hst_…`).
    pub owner: String,
    /// The request's claimed `Idempotency-Key`, if it sent one, and its claim.
    pub api_key_id: Option<String>,
    pub idem_key: Option<String>,
    pub claim_token: Option<String>,
    /// What the request knew before the call (JSON, shaped by `kind`).
    pub spec: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

/// An attempt this old is settled even if its owner lives: no gateway call takes this long,
/// so its request gave up on it without being able to say so (the database was away when
/// it tried).
const ABANDONED_AFTER_SECS: i64 = 10 * 60;

const COLUMNS: &str =
    "id, kind, gateway, gateway_key, owner, api_key_id, idem_key, claim_token, spec, created_at";

/// Records an attempt, in the transaction that claims the request.
pub async fn insert(tx: &mut Tx, a: &Attempt) -> Result<()> {
    with_tx!(tx, |c| {
        let mut q = sqlx::QueryBuilder::new("");
        push_insert(&mut q, std::slice::from_ref(a));
        q.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Records the attempt of a request that claims no key. On PostgreSQL concurrent requests'
/// attempts share one statement, and so one commit ([`crate::batch`]); on SQLite the insert
/// joins the writer's next group commit.
pub async fn record(store: &Store, a: Attempt) -> Result<()> {
    if let Some(batcher) = &store.attempts {
        return batcher.submit(a).await;
    }
    store
        .write_statement(move |tx| Box::pin(async move { insert(tx, &a).await }))
        .await
}

fn push_insert<'r, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    rows: impl IntoIterator<Item = &'r Attempt>,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(
        "INSERT INTO gateway_attempts (id, kind, gateway, gateway_key, owner, api_key_id, \
         idem_key, claim_token, spec, created_at) ",
    );
    q.push_values(rows, |mut b, a| {
        b.push_bind(a.id.clone())
            .push_bind(a.kind.clone())
            .push_bind(a.gateway.clone())
            .push_bind(a.gateway_key.clone())
            .push_bind(a.owner.clone())
            .push_bind(a.api_key_id.clone())
            .push_bind(a.idem_key.clone())
            .push_bind(a.claim_token.clone())
            .push_bind(a.spec.clone())
            .push_bind(a.created_at);
    });
}

impl crate::batch::Batchable for Attempt {
    type Out = ();

    fn run<'c>(
        conn: &'c mut sqlx::PgConnection,
        jobs: &'c [Self],
    ) -> futures::future::BoxFuture<'c, std::result::Result<Vec<()>, sqlx::Error>> {
        Box::pin(async move {
            let mut q = sqlx::QueryBuilder::new("");
            push_insert(&mut q, jobs);
            q.build().execute(&mut *conn).await?;
            Ok(vec![(); jobs.len()])
        })
    }

    fn weight(&self) -> usize {
        1
    }
}

/// Removes a settled attempt, in the transaction that records its outcome. `false` when it
/// was no longer there: recovery settled it meanwhile (its owner was taken for dead).
pub async fn finish(tx: &mut Tx, id: &str) -> Result<bool> {
    let n = with_tx!(tx, |c| sqlx::query(
        "DELETE FROM gateway_attempts WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Removes a settled attempt with the rows its transaction only appends (a one-time payment,
/// its event and audit entry): on PostgreSQL they remain one statement, shared with other
/// transactions'. Unlike [`finish`] it cannot say whether recovery settled the attempt
/// meanwhile; a payment recorded twice for one charge is refused by the unique gateway id.
pub fn finish_at_commit(tx: &mut Tx, id: &str) {
    tx.appends.attempts_done.push(id.to_string());
}

/// Appends the `DELETE` of settled attempts to `q`.
pub(crate) fn push_delete<'r, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    ids: impl IntoIterator<Item = &'r String>,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("DELETE FROM gateway_attempts WHERE id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
    list.push_unseparated(")");
}

/// Deletes settled attempts buffered by [`finish_at_commit`], inside the open transaction.
pub(crate) async fn delete_all(tx: &mut Tx, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    with_tx!(tx, |c| {
        let mut q = sqlx::QueryBuilder::new("");
        push_delete(&mut q, ids);
        q.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Removes an attempt whose call failed before the gateway acted (it refused the request,
/// or could not be reached, and said so): nothing is left to recover.
pub async fn forget(store: &Store, id: &str) -> Result<()> {
    let id = id.to_string();
    store
        .write_statement(move |tx| Box::pin(async move { finish(tx, &id).await.map(|_| ()) }))
        .await
}

/// Hands an attempt to recovery now: its call failed in a way that leaves unknown whether
/// the gateway acted (it could not be reached, or did not answer in time), and its request
/// has given up on it.
pub async fn orphan(store: &Store, id: &str) -> Result<()> {
    update_one(
        store,
        id,
        "UPDATE gateway_attempts SET owner = '' WHERE id = $1",
    )
    .await
}

async fn update_one(store: &Store, id: &str, sql: &'static str) -> Result<()> {
    let id = id.to_string();
    store
        .write_statement(move |tx| {
            Box::pin(async move {
                with_tx!(tx, |c| sqlx::query(sql)
                    .bind(&id)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
}

/// Leases up to `limit` attempts whose owner is dead and that no other recovery holds, for
/// `lease_secs`: this process settles them now. `made_before` limits them further to
/// those made before that moment (microseconds), so that a call the dead owner may still have
/// had on the wire has landed before anyone asks the gateway about it.
pub async fn claim_orphans(
    store: &Store,
    made_before: i64,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Attempt>> {
    lease(store, None, made_before, lease_secs, limit).await
}

/// [`claim_orphans`] for the attempt of one claimed `Idempotency-Key`, if it has one and it
/// is orphaned: a retry of the interrupted request settles it at once.
pub async fn claim_orphan_of(
    store: &Store,
    api_key_id: &str,
    idem_key: &str,
    made_before: i64,
    lease_secs: i64,
) -> Result<Option<Attempt>> {
    Ok(lease(
        store,
        Some((api_key_id.to_string(), idem_key.to_string())),
        made_before,
        lease_secs,
        1,
    )
    .await?
    .pop())
}

async fn lease(
    store: &Store,
    of_claim: Option<(String, String)>,
    made_before: i64,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Attempt>> {
    let now = Timestamp::now();
    let alive_cutoff = instances::alive_cutoff(store, now);
    store
        .write_statement(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "UPDATE gateway_attempts SET recovering_until = $1
                      WHERE id IN (
                        SELECT id FROM gateway_attempts
                         WHERE (recovering_until IS NULL OR recovering_until < $2)
                           AND created_at < $3 AND ({dead} OR created_at < $8)
                           AND ($5 = '' OR (api_key_id = $5 AND idem_key = $6))
                         ORDER BY created_at LIMIT $7)
                      RETURNING {COLUMNS}",
                    dead = instances::dead_sql("gateway_attempts.owner", "$4"),
                );
                let (k, i) = of_claim.unwrap_or_default();
                let rows: Vec<Attempt> =
                    with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(now.add_secs(lease_secs).as_micros())
                        .bind(now.as_micros())
                        .bind(made_before)
                        .bind(alive_cutoff)
                        .bind(&k)
                        .bind(&i)
                        .bind(limit)
                        .bind(now.add_secs(-ABANDONED_AFTER_SECS).as_micros())
                        .fetch_all(c)
                        .await)?;
                Ok(rows)
            })
        })
        .await
}

/// Gives a leased attempt back unsettled (the gateway could not be asked): a later pass
/// tries again.
pub async fn unlease(store: &Store, id: &str) -> Result<()> {
    update_one(
        store,
        id,
        "UPDATE gateway_attempts SET recovering_until = NULL WHERE id = $1",
    )
    .await
}

/// How many attempts are waiting, in flight or orphaned; for tests and `/metrics`.
pub async fn count(store: &Store) -> Result<i64> {
    Ok(crate::with_read!(store, |e| sqlx::query_scalar(
        "SELECT COUNT(*) FROM gateway_attempts"
    )
    .fetch_one(e)
    .await)?)
}
