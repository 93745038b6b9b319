//! Group commit for SQLite's single writer.
//!
//! SQLite admits one writer at a time. Run from request tasks, every statement of a write
//! transaction waits for its task to be scheduled again among all the HTTP work, while the
//! one write connection sits idle. Instead, writes are queued to one thread with a runtime
//! of its own that runs them back to back, and commits whatever has queued up meanwhile as
//! one transaction: each job inside its own savepoint, so a job that fails is rolled back
//! alone and the others still commit. A job's result is delivered only after its batch has
//! committed, so nobody is told "done" about a change that could still be lost.
//!
//! PostgreSQL does not need this: its writers run concurrently.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, Tx, TxInner, with_tx};

/// Most jobs one transaction carries: bounds the latency one batch adds to its first job.
const MAX_BATCH: usize = 64;
/// Jobs waiting beyond this make callers wait to enqueue (backpressure, not unbounded memory).
const QUEUE_DEPTH: usize = 4096;

/// Hands a job's result to its caller once the batch's fate is known.
type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a job reports back to the writer loop once it has run.
struct Ran {
    /// Whether the job's changes are kept (its savepoint released) or undone.
    keep: bool,
    deliver: Deliver,
}

type Job = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Ran> + Send>;

#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread over the pool's write connection.
    pub fn start(pool: SqlitePool) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || runtime.block_on(run(pool, rx)))?;
        Ok(Writer { queue })
    }

    /// Runs `job` in the next batch and returns its result after the batch commits.
    pub async fn submit<T, E, F>(&self, job: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx| {
            Box::pin(async move {
                let outcome = job(tx).await;
                Ran {
                    keep: outcome.is_ok(),
                    deliver: Box::new(move |batch: Result<(), StoreError>| {
                        // If the batch did not commit, no job's answer holds: even a job's
                        // own error may rest on rows of earlier jobs that are now gone.
                        let delivered = match batch {
                            Err(e) => Err(E::from(e)),
                            Ok(()) => outcome,
                        };
                        let _ = done.send(delivered);
                    }),
                }
            })
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        result.await.map_err(|_| E::from(StoreError::WriterGone))?
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let mut delivers = Vec::with_capacity(jobs.len());
        let committed = run_batch(&pool, jobs, &mut delivers).await;
        if let Err(e) = &committed {
            tracing::error!(error = %e, jobs = delivers.len(), "write batch failed");
        }
        for deliver in delivers {
            deliver(clone_err(&committed));
        }
    }
    pool.close().await;
}

async fn run_batch(
    pool: &SqlitePool,
    jobs: Vec<Job>,
    delivers: &mut Vec<Deliver>,
) -> Result<(), StoreError> {
    let mut tx = Tx::new(TxInner::Sqlite(pool.begin().await?));
    let mut open = false;
    for job in jobs {
        // One round trip per job boundary: release the previous job's savepoint and open
        // this one's together. The last one is released by the commit.
        let boundary = if open {
            "RELEASE SAVEPOINT job; SAVEPOINT job"
        } else {
            "SAVEPOINT job"
        };
        statement(&mut tx, boundary).await?;
        open = true;
        let mark = tx.mark();
        // A panicking job must not take the writer (and every later write) down with it.
        match AssertUnwindSafe(job(&mut tx)).catch_unwind().await {
            Ok(ran) => {
                let refused = if ran.keep {
                    tx.write_payments_since(mark).await.err()
                } else {
                    None
                };
                if !ran.keep || refused.is_some() {
                    statement(&mut tx, "ROLLBACK TO SAVEPOINT job").await?;
                    tx.discard_since(mark);
                }
                match refused {
                    Some(e) => {
                        let deliver = ran.deliver;
                        delivers.push(Box::new(move |_batch| deliver(Err(e))));
                    }
                    None => delivers.push(ran.deliver),
                }
            }
            Err(_) => {
                tracing::error!("a write job panicked; its changes are rolled back");
                statement(&mut tx, "ROLLBACK TO SAVEPOINT job").await?;
                tx.discard_since(mark);
            }
        }
    }
    tx.commit().await
}

async fn statement(tx: &mut Tx, sql: &'static str) -> Result<(), StoreError> {
    with_tx!(tx, |c| sqlx::raw_sql(sql)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

fn clone_err(r: &Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(StoreError::BatchFailed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use crate::{PoolSettings, Store, StoreError, with_read, with_tx};

    async fn insert_window(tx: &mut crate::Tx, key: &str) -> Result<(), StoreError> {
        with_tx!(tx, |c| sqlx::query(
            "INSERT INTO rate_limit_windows (api_key_id, window_start, count) VALUES ($1, 0, 1)"
        )
        .bind(key)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_job_is_undone_alone() {
        let dir = std::env::temp_dir().join(format!("writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("w.db").display());
        let store = Store::connect(&url, &PoolSettings::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();

        let jobs = (0..30).map(|i| {
            let store = store.clone();
            async move {
                store
                    .write(move |tx| {
                        Box::pin(async move {
                            insert_window(tx, &format!("k{i}")).await?;
                            match i % 3 {
                                0 => Ok(()),
                                1 => Err(StoreError::Corrupt("job failed after writing".into())),
                                _ => panic!("job {i} panicked after writing"),
                            }
                        })
                    })
                    .await
            }
        });
        let results = futures::future::join_all(jobs).await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i % 3 == 0, "job {i}: {r:?}");
        }
        let kept: Vec<String> = with_read!(&store, |e| sqlx::query_scalar(
            "SELECT api_key_id FROM rate_limit_windows ORDER BY api_key_id"
        )
        .fetch_all(e)
        .await)
        .unwrap();
        let mut expected: Vec<String> = (0..30)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("k{i}"))
            .collect();
        expected.sort();
        assert_eq!(kept, expected);
        // The writer survived the panics.
        store
            .write(|tx| Box::pin(async move { insert_window(tx, "after").await }))
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
