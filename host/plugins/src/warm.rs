//! Instances made ahead of calls, for plugins whose instantiation is slow.
//!
//! A Python (componentize-py) component spends ~0.6 ms starting, before its first
//! instruction of the call. A small pool of prepared, never-called instances takes that off
//! the request path: a call takes one, uses it once and drops it, and a background thread
//! makes the next after the call (not during it: mapping a new instance's memory would make
//! the call's page faults wait on the same process-wide lock). No state passes between
//! calls, exactly as with an instance made on the spot. When the pool is empty (calls
//! arriving faster than instances can be made) a call makes its own, as it would without a
//! pool. Plugins measured below [`SLOW_START`] at load (Rust, and JavaScript, whose cost is
//! in the call itself) get no pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

use crate::call::{self, Prepared, Spent};
use crate::capabilities::clock::BusinessClock;
use crate::registry::LoadedPlugin;

/// A plugin whose load-time instantiation took at least this long gets a pool. Rust
/// components start in tens of microseconds, less than the hand-off to a pool would save.
pub const SLOW_START: Duration = Duration::from_micros(250);

/// Prepared instances of one plugin version, at most `capacity`.
pub(crate) struct WarmPool {
    capacity: usize,
    ready: Mutex<Vec<Prepared>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("capacity", &self.capacity)
            .field("ready", &self.ready())
            .finish()
    }
}

impl WarmPool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ready: Mutex::new(Vec::with_capacity(capacity)),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn ready(&self) -> usize {
        lock(&self.ready).len()
    }

    pub fn take(&self) -> Option<Prepared> {
        if self.capacity == 0 {
            return None;
        }
        lock(&self.ready).pop()
    }

    fn wants_more(&self) -> bool {
        self.ready() < self.capacity
    }

    /// Adds `prepared` unless the pool filled up meanwhile (then it is dropped here).
    fn put(&self, prepared: Prepared) {
        let overflow = {
            let mut ready = lock(&self.ready);
            if ready.len() < self.capacity {
                ready.push(prepared);
                None
            } else {
                Some(prepared)
            }
        };
        // Dropping a store frees its instance slot; not under the lock.
        drop(overflow);
    }
}

/// Work for the background thread.
enum Job {
    /// Top up this plugin's pool (a weak reference, so a version replaced meanwhile is not
    /// kept alive, or filled, for nothing).
    Refill(Weak<LoadedPlugin>),
    /// Drop a used store off the request path.
    Dispose(Spent),
}

/// The thread that tops pools up and drops pooled plugins' used stores. Asked with
/// [`Refiller::request`] after a call and when a version is published; stopped and
/// joined on drop.
pub(crate) struct Refiller {
    requests: Option<Sender<Job>>,
    /// Used stores handed to the thread and not yet dropped.
    disposing: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// Used stores waiting for the background thread at most. Each holds an instance slot
/// until dropped: when the thread falls behind (cores busy with calls), a call drops its
/// own store rather than let the backlog take the slots calls need.
pub const MAX_DISPOSING: usize = 4;

impl std::fmt::Debug for Refiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refiller").finish_non_exhaustive()
    }
}

impl Refiller {
    pub fn start(engine: Engine, clock: BusinessClock) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let disposing = Arc::new(AtomicUsize::new(0));
        let done = disposing.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-warm".into())
            .spawn(move || refill(&engine, &clock, &rx, &done))?;
        Ok(Self {
            requests: Some(tx),
            disposing,
            thread: Some(thread),
        })
    }

    /// Asks for `plugin`'s pool to be topped up.
    pub fn request(&self, plugin: &Arc<LoadedPlugin>) {
        if plugin.warm.capacity() > 0 {
            self.send(Job::Refill(Arc::downgrade(plugin)));
        }
    }

    /// A pooled plugin's used store is dropped in the background, where unmapping a large
    /// interpreter's memory costs the request nothing; any other is dropped here, at once
    /// (a small instance frees faster than the hand-off).
    pub fn dispose(&self, plugin: &LoadedPlugin, spent: Spent) {
        let queued = plugin.warm.capacity() > 0
            && self
                .disposing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_DISPOSING).then_some(n + 1)
                })
                .is_ok();
        if queued {
            self.send(Job::Dispose(spent));
        } else {
            drop(spent);
        }
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.requests {
            // The receiver lives as long as `self`; a send can only fail during drop.
            let _ = tx.send(job);
        }
    }
}

impl Drop for Refiller {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn refill(engine: &Engine, clock: &BusinessClock, jobs: &Receiver<Job>, disposing: &AtomicUsize) {
    while let Ok(job) = jobs.recv() {
        let plugin = match job {
            Job::Refill(plugin) => plugin,
            Job::Dispose(spent) => {
                drop(spent);
                disposing.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
        };
        let Some(plugin) = plugin.upgrade() else {
            continue;
        };
        while plugin.warm.wants_more() {
            let prepared = call::prepare(engine, clock, &plugin.target());
            if !prepared.is_ok() {
                // The next call makes its own instance and reports the fault as its own;
                // retrying here would only burn the core the calls need.
                break;
            }
            plugin.warm.put(prepared);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded vector is consistent between statements.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
