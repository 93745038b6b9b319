//! The threads plugin calls run on.
//!
//! A call runs on one of these rather than on its caller's thread so the caller can stop
//! waiting at the deadline whatever the call does: the epoch deadline stops WebAssembly
//! code, but not a call blocked in a host function (a guest that sleeps through
//! `wasi:clocks` and `wasi:io/poll` waits in the host, where no deadline check runs).
//! Threads are reused, most recently idle first so the busy ones stay warm in cache, and
//! exit after a while without work; a thread stuck in such a call is simply not reused
//! until it returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle thread waits for another call before it exits.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Inner {
    idle: Mutex<Vec<(u64, Sender<Job>)>>,
    next_id: AtomicU64,
}

/// A pool of call threads that grows on demand.
#[derive(Default, Clone)]
pub(crate) struct Workers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("idle", &lock(&self.inner.idle).len())
            .finish()
    }
}

impl Workers {
    /// Runs `job` on an idle thread, or on a new one.
    pub fn run(&self, job: Job) -> std::io::Result<()> {
        let mut job = job;
        loop {
            let Some((_, tx)) = lock(&self.inner.idle).pop() else {
                break;
            };
            match tx.send(job) {
                Ok(()) => return Ok(()),
                // That thread exited after taking itself off the list; try another.
                Err(returned) => job = returned.0,
            }
        }
        let (tx, rx) = mpsc::channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("plugin-call".into())
            .spawn(move || work(&inner, id, &tx, &rx, job))?;
        Ok(())
    }
}

fn work(inner: &Inner, id: u64, tx: &Sender<Job>, rx: &Receiver<Job>, first: Job) {
    let mut job = first;
    loop {
        // A panic is a host bug; it must not take the thread's later calls with it. The
        // caller sees its result channel closed and answers with the default.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        lock(&inner.idle).push((id, tx.clone()));
        job = loop {
            match rx.recv_timeout(IDLE) {
                Ok(job) => break job,
                Err(RecvTimeoutError::Timeout) => {
                    let mut idle = lock(&inner.idle);
                    if let Some(at) = idle.iter().position(|(i, _)| *i == id) {
                        idle.remove(at);
                        return;
                    }
                    // Someone took this thread off the list and is sending it a call.
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The list is consistent between statements.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_idle(workers: &Workers) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&workers.inner.idle).is_empty() {
            assert!(std::time::Instant::now() < deadline, "no thread went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn reuses_idle_threads_and_survives_a_panicking_job() {
        let workers = Workers::default();
        let (tx, rx) = mpsc::channel();
        let mut seen = std::collections::HashSet::new();
        for i in 0..20 {
            let tx = tx.clone();
            workers
                .run(Box::new(move || {
                    tx.send((i, std::thread::current().id())).unwrap();
                }))
                .unwrap();
            seen.insert(rx.recv_timeout(Duration::from_secs(10)).unwrap().1);
            wait_idle(&workers);
        }
        workers.run(Box::new(|| panic!("host bug"))).unwrap();
        wait_idle(&workers);
        workers
            .run(Box::new(move || {
                tx.send((20, std::thread::current().id())).unwrap();
            }))
            .unwrap();
        seen.insert(rx.recv_timeout(Duration::from_secs(10)).unwrap().1);
        assert_eq!(seen.len(), 1, "one thread served every sequential job");
        assert_eq!(workers.inner.next_id.load(Ordering::Relaxed), 1);
    }
}
