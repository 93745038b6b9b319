//! Group commit for PostgreSQL. Writes that are each one self-contained statement (a
//! payment's record with its event and audit rows; the sandbox's charge; a webhook delivery
//! into the inbox) are gathered from concurrent requests and sent as one multi-row
//! statement, so PostgreSQL parses, plans, executes and commits once for many of them. With
//! pgbench on the 2-core machine (see BENCHMARKS.md), PostgreSQL alone took ~3,300
//! payments/s sent one by one and 6,500–8,700/s sent eight to a statement.
//!
//! A batch forms while the statements before it are in flight: nothing waits on a timer, and
//! a lone request goes at once. Every job's caller waits for the commit of the statement
//! that carried it. The statement is atomic, so when the database refuses it (one job's row
//! breaks a constraint), nothing of it landed and each job is sent again on its own: one bad
//! row fails only its own job. Errors that are not the database's answer (a lost connection)
//! are given to every job of the batch, as they would be to a lone statement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Result, StoreError};

/// What a batch is made of: a job that can share one statement with others of its kind.
pub trait Batchable: Send + Sync + Sized + 'static {
    /// What each job learns from the statement that carried it.
    type Out: Send + 'static;

    /// Writes `jobs` as one statement (atomic on its own: no transaction is open on
    /// `conn`), with one outcome per job, in order.
    fn run<'c>(
        conn: &'c mut PgConnection,
        jobs: &'c [Self],
    ) -> BoxFuture<'c, std::result::Result<Vec<Self::Out>, sqlx::Error>>;

    /// Rows the job adds to a statement (a job may count a large row as several). A batch
    /// stops growing at [`MAX_WEIGHT`], far under PostgreSQL's 65,535 bind parameters for
    /// rows of up to 16 columns.
    fn weight(&self) -> usize;
}

/// How many statements of one kind may be in flight at once.
const WORKERS: usize = 4;

/// The most rows one statement carries; a single heavier job still goes alone.
pub const MAX_WEIGHT: usize = 512;

type Job<J> = (J, oneshot::Sender<Result<<J as Batchable>::Out>>);

/// Sends jobs of one kind to PostgreSQL in batches. Cheap to clone; the workers stop when
/// the last clone is dropped.
pub struct Batcher<J: Batchable> {
    queue: mpsc::UnboundedSender<Job<J>>,
    stats: Arc<Counters>,
}

/// What a batcher has sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Statements sent, singles after a refused batch included.
    pub statements: u64,
    /// Jobs those statements carried.
    pub jobs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    statements: AtomicU64,
    jobs: AtomicU64,
}

impl<J: Batchable> Clone for Batcher<J> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<J: Batchable> std::fmt::Debug for Batcher<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<J: Batchable> Batcher<J> {
    /// Starts the workers on the current tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Counters::default());
        for _ in 0..WORKERS {
            tokio::spawn(work(pool.clone(), rx.clone(), stats.clone()));
        }
        Batcher { queue, stats }
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            statements: self.stats.statements.load(Ordering::Relaxed),
            jobs: self.stats.jobs.load(Ordering::Relaxed),
        }
    }

    /// Writes `job` with whatever else is waiting, and returns its outcome once the
    /// statement that carried it has committed (or failed).
    pub async fn submit(&self, job: J) -> Result<J::Out> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((job, reply))
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn work<J: Batchable>(
    pool: PgPool,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job<J>>>>,
    stats: Arc<Counters>,
) {
    loop {
        // One worker at a time gathers: the first job it waits for, then whatever queued
        // up while the other workers' statements were in flight.
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut weight = first.0.weight();
            let mut batch = vec![first];
            while weight < MAX_WEIGHT {
                match rx.try_recv() {
                    Ok(job) => {
                        weight += job.0.weight();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let (jobs, replies): (Vec<J>, Vec<_>) = batch.into_iter().unzip();
        for (reply, out) in replies.into_iter().zip(send(&pool, &jobs, &stats).await) {
            // The caller may have gone away; its write stands either way.
            let _ = reply.send(out);
        }
    }
}

/// Runs `jobs` as one statement, or each alone when the database refused them together.
async fn send<J: Batchable>(pool: &PgPool, jobs: &[J], stats: &Counters) -> Vec<Result<J::Out>> {
    match run(pool, jobs, stats).await {
        Ok(outs) => outs.into_iter().map(Ok).collect(),
        // A refusal is about one job's row; a server going away is about none of them, and
        // sending each job again would only wait for it once per job.
        Err(e @ sqlx::Error::Database(_)) if jobs.len() > 1 && !crate::is_unavailable(&e) => {
            let mut outs = Vec::with_capacity(jobs.len());
            for job in jobs {
                outs.push(match run(pool, std::slice::from_ref(job), stats).await {
                    Ok(mut one) => one.pop().ok_or_else(no_outcome),
                    Err(e) => Err(e.into()),
                });
            }
            outs
        }
        Err(e) => {
            let message = e.to_string();
            let unavailable = crate::is_unavailable(&e);
            let mut outs: Vec<Result<J::Out>> = Vec::with_capacity(jobs.len());
            outs.push(Err(e.into()));
            outs.extend((1..jobs.len()).map(|_| {
                Err(if unavailable {
                    StoreError::Unavailable(message.clone())
                } else {
                    StoreError::BatchFailed(message.clone())
                })
            }));
            outs
        }
    }
}

async fn run<J: Batchable>(
    pool: &PgPool,
    jobs: &[J],
    stats: &Counters,
) -> std::result::Result<Vec<J::Out>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    stats.statements.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    let outs = J::run(&mut conn, jobs).await?;
    if outs.len() != jobs.len() {
        return Err(sqlx::Error::Protocol(format!(
            "a batch of {} gave {} outcomes",
            jobs.len(),
            outs.len()
        )));
    }
    Ok(outs)
}

fn no_outcome() -> StoreError {
    StoreError::Corrupt("a batched write gave no outcome".into())
}
