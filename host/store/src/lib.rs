//! Storage for the host: one [`Store`] over SQLite (embedded default) or PostgreSQL, with the
//! same SQL text and the same behaviour on both.
//!
//! - [`analytics`]: the daily revenue and customer aggregates the analytics consumer keeps.
//! - [`keys`]: API keys (hashes only) and the first-run admin key.
//! - [`rate_limit`]: per-key request counters shared by every host using the database.
//! - [`idempotency`]: claimed `Idempotency-Key`s and the first response stored for replay.
//! - [`instances`]: the host processes alive on this database, each beating while it lives.
//! - [`attempts`]: gateway calls about to be made, recorded before the call.
//! - [`audit`]: who changed what, when, through which request.
//! - [`disputes`]: chargebacks as gateways report them.
//! - [`events`]: the append-only domain event log.
//! - [`exchange_rates`]: rates for reporting in one currency, and per-currency totals.
//! - [`gateway_ids`]: which gateway object (a Stripe customer, a Stripe plan) mirrors ours.
//! - [`inbox`]: verified gateway webhooks waiting to be applied.
//! - [`catalog`]: products and prices.
//! - [`consumers`]: positions of the event log's consumers, leased to one host at a time.
//! - [`customers`]: customer records, lookup, listing and erasure.
//! - [`marketing`]: marketing spend per channel and period.
//! - [`payments`]: payments and refunds as the host records them.
//! - [`profiles`]: a customer's activity and the sales per price, summarised for decisions.
//! - [`quotes`]: quotes as decided, and their single use by a payment or subscription.
//! - [`segments`]: customer segments as last decided.
//! - [`subscriptions`]: subscriptions, invoices and their lines, and the business clock.
//!
//! Writes go through [`Store::write`]: on SQLite a single writer thread commits concurrent
//! requests together (group commit, see `writer`); on PostgreSQL each runs in its own
//! transaction, except that transactions which only append rows share one statement with
//! concurrent ones (group commit, see [`batch`]).
//!
//! SQL is written once with `$N` placeholders, which both drivers accept; the `with_*!`
//! macros run it against whichever pool or transaction backs the store. SQLite gets one
//! writer connection (its lock admits one writer; queueing in the pool beats retrying on
//! `SQLITE_BUSY`) and a pool of readers.

pub mod analytics;
mod appends;
pub mod attempts;
pub mod audit;
pub mod batch;
pub mod catalog;
pub mod consumers;
pub mod customers;
pub mod disputes;
pub mod events;
pub mod exchange_rates;
pub mod gateway_ids;
pub mod idempotency;
pub mod inbox;
pub mod instances;
pub mod keys;
pub mod marketing;
pub mod payments;
pub mod profiles;
pub mod quotes;
pub mod rate_limit;
pub mod segments;
pub mod subscriptions;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

pub use sqlx::Error as SqlxError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
    #[error("this request's idempotency claim expired and was taken over by a retry")]
    ClaimLost,
    #[error("the write did not finish: the writer stopped or the job panicked")]
    WriterGone,
    #[error("the write batch failed to commit: {0}")]
    BatchFailed(String),
    /// The database could not be reached (a batch this write shared lost its connection).
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    #[error("cannot start the writer thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("unsupported database url `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the database was unreachable rather than the write wrong: the request may be
    /// retried as it is once the database answers again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_unavailable(e),
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// Whether `e` says the database cannot be reached right now (no connection within the
/// acquire timeout, a connection lost or refused, the server shutting down or starting up),
/// as opposed to an answer about the statement.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // Class 08: connection exceptions. 57P01/02/03: the server is shutting down
        // (`terminating connection due to administrator command`), crashed, or not yet
        // accepting connections. 53300: no connection slot left.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// How to size the pools.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections for PostgreSQL, readers for SQLite.
    pub max_connections: u32,
    /// How long a request waits for a connection (a free one, or a new one while the
    /// database is unreachable) before failing with 503. Also bounds opening a connection.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteDb {
    pub write: SqlitePool,
    pub read: SqlitePool,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// The handle every domain function takes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// SQLite's group-commit writer; `None` on PostgreSQL.
    writer: Option<writer::Writer>,
    /// PostgreSQL's group commit of append-only transactions; `None` on SQLite.
    appends: Option<batch::Batcher<appends::Appends>>,
    /// PostgreSQL's group commit of webhook deliveries into the inbox; `None` on SQLite.
    intake: Option<batch::Batcher<inbox::NewInboxEvent>>,
    /// PostgreSQL's group commit of gateway attempts recorded without a claim; `None` on
    /// SQLite.
    attempts: Option<batch::Batcher<attempts::Attempt>>,
    /// The pool's acquire timeout, which also bounds a readiness check.
    acquire_timeout: Duration,
    /// This process's id among the hosts using the database (`hst_…`): what it claims is
    /// stamped with it, so others can tell when its owner died (see [`instances`]).
    instance: std::sync::Arc<str>,
    beats: std::sync::Arc<instances::Beats>,
}

/// Runs `$body` with `$e` bound to a read executor of the store's database.
#[macro_export]
macro_rules! with_read {
    ($store:expr, |$e:ident| $body:expr) => {
        match $store.backend() {
            $crate::Backend::Sqlite(db) => {
                let $e = &db.read;
                $body
            }
            $crate::Backend::Postgres(pool) => {
                let $e = pool;
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection (on PostgreSQL, sending the
/// `BEGIN` the transaction put off, if this is its first statement). `$body` is a
/// `Result<_, sqlx::Error>`.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx.open().await {
            Err(e) => Err(e),
            Ok($crate::TxInner::Sqlite(t)) => {
                let $c: &mut sqlx::SqliteConnection = &mut *t;
                $body
            }
            Ok($crate::TxInner::Postgres(t)) => {
                let $c: &mut sqlx::PgConnection = &mut *t;
                $body
            }
            Ok($crate::TxInner::PgAutocommit(t)) => {
                let $c: &mut sqlx::PgConnection = &mut *t;
                $body
            }
        }
    };
}

/// An open transaction on either database. Dropped without [`Tx::commit`], it rolls back.
///
/// Rows that are only appended and that nothing reads back or points at inside the
/// transaction (event-log and audit rows; a payment that [`payments::insert_at_commit`]
/// was given) are held here and written at commit, inside the transaction, as one multi-row
/// insert per table: with SQLite's group commit, one statement per batch for events and
/// audit entries instead of one per request (payments, which can be refused, go in at the
/// end of their own job).
///
/// On PostgreSQL, [`Store::write`] puts off `BEGIN` until the first statement. A transaction
/// that had nothing but appends to write sends them at commit as one statement (a
/// data-modifying `WITH`, atomic on its own) with no `BEGIN` or `COMMIT`, and shares that
/// statement with other such transactions committing at the same time ([`batch`]).
#[derive(Debug)]
pub struct Tx {
    /// `None` while PostgreSQL's `BEGIN` is put off.
    inner: Option<TxInner>,
    /// Where the put-off transaction will run.
    deferred: Option<Deferred>,
    appends: appends::Appends,
}

/// Where a PostgreSQL transaction whose `BEGIN` is put off runs, or commits its appends.
#[derive(Debug)]
struct Deferred {
    pool: PgPool,
    appends: batch::Batcher<appends::Appends>,
}

#[derive(Debug)]
pub enum TxInner {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
    /// A PostgreSQL connection with no transaction open: each statement commits on its own.
    /// Only [`Store::write_statement`] makes one.
    PgAutocommit(sqlx::pool::PoolConnection<Postgres>),
}

impl Tx {
    pub(crate) fn new(inner: TxInner) -> Self {
        Tx {
            inner: Some(inner),
            deferred: None,
            appends: appends::Appends::default(),
        }
    }

    /// A PostgreSQL transaction that sends `BEGIN` with its first statement, if it has one.
    fn deferred(deferred: Deferred) -> Self {
        Tx {
            inner: None,
            deferred: Some(deferred),
            appends: appends::Appends::default(),
        }
    }

    /// The transaction's connection, begun if it was put off.
    pub async fn open(&mut self) -> std::result::Result<&mut TxInner, sqlx::Error> {
        let inner = match self.inner.take() {
            Some(inner) => inner,
            None => {
                let deferred = self.deferred.as_ref().ok_or(sqlx::Error::PoolClosed)?;
                TxInner::Postgres(deferred.pool.begin().await?)
            }
        };
        Ok(self.inner.insert(inner))
    }

    /// Whether this runs on PostgreSQL (whose row locks the SQL must ask for).
    pub fn is_postgres(&self) -> bool {
        !matches!(self.inner, Some(TxInner::Sqlite(_)))
    }

    pub(crate) fn mark(&self) -> appends::Mark {
        self.appends.mark()
    }

    /// Forgets what was buffered after `mark` (the job that buffered it was rolled back).
    pub(crate) fn discard_since(&mut self, mark: appends::Mark) {
        self.appends.discard_since(mark);
    }

    /// Writes the payments buffered since `mark` now, in the open transaction. SQLite's
    /// writer does so inside the job's savepoint: unlike event and audit rows (fresh ids, no
    /// foreign keys), a payment row can be refused (its customer, its gateway id), and a
    /// refusal at the batch's commit would fail every job of the batch.
    pub(crate) async fn write_payments_since(&mut self, mark: appends::Mark) -> Result<()> {
        let rows = self.appends.take_payments_since(mark);
        payments::insert_all(self, &rows).await
    }

    /// Writes the buffered rows and commits.
    pub async fn commit(mut self) -> Result<()> {
        let Some(deferred) = self.deferred.take().filter(|_| self.inner.is_none()) else {
            self.write_appends().await?;
            match self.inner {
                Some(TxInner::Sqlite(t)) => t.commit().await?,
                Some(TxInner::Postgres(t)) => t.commit().await?,
                Some(TxInner::PgAutocommit(_)) | None => {}
            }
            return Ok(());
        };
        // Nothing was sent: the appends, if any, are the whole transaction, and one
        // statement is atomic without BEGIN and COMMIT, even one shared with others.
        if self.appends.rows() > 0 {
            deferred.appends.submit(self.appends).await?;
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            Some(TxInner::Sqlite(t)) => t.rollback().await?,
            Some(TxInner::Postgres(t)) => t.rollback().await?,
            // Each statement already stood on its own, or none was sent.
            Some(TxInner::PgAutocommit(_)) | None => {}
        }
        Ok(())
    }

    /// Writes the buffered appends inside the open transaction.
    async fn write_appends(&mut self) -> Result<()> {
        let appends = std::mem::take(&mut self.appends);
        match &mut self.inner {
            Some(TxInner::PgAutocommit(_)) if appends.rows() > 0 => {
                // Outside a transaction they could outlive a change that failed, or be lost
                // with one that stood.
                Err(StoreError::Corrupt(
                    "a single-statement write tried to buffer rows for its commit".into(),
                ))
            }
            Some(TxInner::Postgres(t)) => {
                if let Some(mut q) = appends::Appends::pg_statement(std::slice::from_ref(&appends))
                {
                    q.build().execute(&mut **t).await?;
                }
                Ok(())
            }
            _ => {
                payments::insert_all(self, &appends.payments).await?;
                events::insert_all(self, &appends.events).await?;
                attempts::delete_all(self, &appends.attempts_done).await?;
                audit::insert_all(self, &appends.audit).await
            }
        }
    }
}

impl Store {
    /// Opens the database named by `url` (`sqlite://…` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL + NORMAL survives process crashes; only an OS crash can lose the last
                // commits, never corrupt the file. The documented trade for SQLite servers.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await?;
            Backend::Sqlite(SqliteDb { write, read })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            // A connection is tested when taken from the pool (and when returned), and a
            // broken one is dropped rather than handed out: after PostgreSQL restarts, no
            // request runs on a connection the old server closed. While the server is away,
            // opening a new one is retried until the acquire timeout, then the request fails
            // with 503; once it is back the next attempt (at most a fifth of the timeout
            // later) connects.
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .test_before_acquire(true)
                .connect_with(options)
                .await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let (writer, appends, intake, attempts) = match &backend {
            Backend::Sqlite(db) => (
                Some(writer::Writer::start(db.write.clone())?),
                None,
                None,
                None,
            ),
            Backend::Postgres(pool) => (
                None,
                Some(batch::Batcher::start(pool.clone())),
                Some(batch::Batcher::start(pool.clone())),
                Some(batch::Batcher::start(pool.clone())),
            ),
        };
        Ok(Self {
            backend,
            writer,
            appends,
            intake,
            attempts,
            acquire_timeout: settings.acquire_timeout,
            instance: hephaestus_core::ids::new_id("hst").into(),
            beats: Default::default(),
        })
    }

    /// This process's id among the hosts using the database.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub(crate) fn beats(&self) -> &instances::Beats {
        &self.beats
    }

    /// Runs `job` in a transaction and commits it. Its changes and everything it records
    /// (events, audit, idempotency) commit together or not at all; an `Err` from the job
    /// rolls its changes back. The result is returned only once the commit has happened.
    /// The job runs to completion even if the caller stops waiting. It must touch the
    /// database only through its `Tx`: on SQLite it holds the one write connection.
    pub async fn write<T, E, F>(&self, job: F) -> std::result::Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> futures::future::BoxFuture<'t, std::result::Result<T, E>>
            + Send
            + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.submit(job).await,
            None => match (&self.backend, &self.appends) {
                (Backend::Postgres(pool), Some(appends)) => {
                    let deferred = Deferred {
                        pool: pool.clone(),
                        appends: appends.clone(),
                    };
                    run_to_end(Run::Deferred(deferred), job).await
                }
                _ => Err(E::from(StoreError::WriterGone)),
            },
        }
    }

    /// Runs a job whose statements each stand on their own (one `INSERT … ON CONFLICT`, a
    /// lookup after it): on PostgreSQL they run on a pooled connection without `BEGIN` and
    /// `COMMIT`, a third of the round trips of [`Store::write`] for a one-statement write;
    /// on SQLite the job joins the writer's next group commit as usual. The job must not
    /// buffer events or audit entries (that fails): what it records is not atomic.
    pub async fn write_statement<T, E, F>(&self, job: F) -> std::result::Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> futures::future::BoxFuture<'t, std::result::Result<T, E>>
            + Send
            + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::Postgres(pool) => run_to_end(Run::Autocommit(pool.clone()), job).await,
            Backend::Sqlite(_) => self.write(job).await,
        }
    }

    /// How PostgreSQL's append-only transactions were batched so far; `None` on SQLite.
    pub fn append_batches(&self) -> Option<batch::BatchStats> {
        self.appends.as_ref().map(batch::Batcher::stats)
    }

    /// How PostgreSQL's webhook intake was batched so far; `None` on SQLite.
    pub fn intake_batches(&self) -> Option<batch::BatchStats> {
        self.intake.as_ref().map(batch::Batcher::stats)
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `sqlite` or `postgres`, for logs and `/ready`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies every embedded migration not yet applied. Safe to run from several hosts:
    /// sqlx takes a database lock while migrating.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => SQLITE_MIGRATIONS.run(&db.write).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx> {
        let inner = match &self.backend {
            Backend::Sqlite(db) => TxInner::Sqlite(db.write.begin().await?),
            Backend::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        };
        Ok(Tx::new(inner))
    }

    /// A cheap round trip, for readiness checks. On PostgreSQL it never waits for the pool:
    /// an idle pooled connection is pinged if there is one, otherwise (or if that one is
    /// broken) a fresh connection is opened, so an unreachable server is reported at once
    /// (a refused connection fails immediately) rather than after the acquire timeout, and
    /// a server that is back is reported at once too.
    pub async fn ping(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => {
                sqlx::query("SELECT 1").execute(&db.read).await?;
            }
            Backend::Postgres(pool) => {
                use sqlx::Connection;
                if let Some(mut conn) = pool.try_acquire() {
                    match tokio::time::timeout(self.acquire_timeout, conn.ping()).await {
                        Ok(Ok(())) => return Ok(()),
                        _ => conn.close_on_drop(),
                    }
                }
                let options = pool.connect_options();
                let check = async {
                    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
                    conn.ping().await?;
                    conn.close().await
                };
                tokio::time::timeout(self.acquire_timeout, check)
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.read.close().await;
                db.write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// How a PostgreSQL write runs.
enum Run {
    /// In a transaction begun with its first statement ([`Store::write`]).
    Deferred(Deferred),
    /// Each statement on its own ([`Store::write_statement`]).
    Autocommit(PgPool),
}

/// Runs a PostgreSQL write in a task of its own, so that it runs to its end even if the
/// caller goes away (a client hanging up must not cut a write off between its statements and
/// its commit).
async fn run_to_end<T, E, F>(run: Run, job: F) -> std::result::Result<T, E>
where
    F: for<'t> FnOnce(&'t mut Tx) -> futures::future::BoxFuture<'t, std::result::Result<T, E>>
        + Send
        + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut tx = match run {
            Run::Autocommit(pool) => {
                let conn = pool.acquire().await.map_err(StoreError::from)?;
                Tx::new(TxInner::PgAutocommit(conn))
            }
            Run::Deferred(deferred) => Tx::deferred(deferred),
        };
        let value = job(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    });
    task.await.map_err(|_| E::from(StoreError::WriterGone))?
}

/// A database URL fit for logs and error messages: the password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Metadata as stored: a JSON object in a text column, the same on both databases.
pub(crate) fn metadata_json(m: &hephaestus_core::customer::Metadata) -> Result<String> {
    serde_json::to_string(m).map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))
}

/// Reads stored metadata back; `id` names the row in the error.
pub(crate) fn metadata_of(text: &str, id: &str) -> Result<hephaestus_core::customer::Metadata> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{id} metadata: {e}")))
}

/// Reads a stored currency code back; `id` names the row in the error.
pub(crate) fn currency_of(code: &str, id: &str) -> Result<hephaestus_core::money::Currency> {
    hephaestus_core::money::Currency::parse(code, "currency")
        .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
}

/// What a claiming `SELECT … FOR UPDATE` ends with: on PostgreSQL `SKIP LOCKED`, so hosts
/// claiming at once take different rows instead of queueing behind each other; nothing on
/// SQLite, whose single writer claims one batch at a time.
pub(crate) fn skip_locked(store: &Store) -> &'static str {
    match store.backend() {
        Backend::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite(_) => "",
    }
}

/// Whether an error is a unique-constraint violation, on either database.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://data/h.db"), "sqlite://data/h.db");
    }
}
