//! Hot reload: watch the plugin folder and reload a plugin once its files settle.
//!
//! A copy in progress produces a burst of events and, in between, a partial file. Each
//! stem is reloaded only after its files have been quiet for the debounce interval *and*
//! their content hash has not changed across two looks a short while apart, so one copy
//! means one reload of the final content. Should a writer stall long enough to pass both
//! tests, the partial file fails to load and the previous version keeps serving until the
//! completed file triggers another reload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, plugin_stem};

enum Message {
    Changed(String),
    Rescan,
    Stop,
}

/// Watches the plugin folder until dropped.
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    tx: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Pending {
    last_event: Instant,
    /// Fingerprint of the files at the last look, and when that was.
    seen: Option<(Vec<u8>, Instant)>,
}

pub(crate) fn start(registry: &Arc<Registry>, debounce: Duration) -> notify::Result<PluginWatcher> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                tracing::trace!(?event, "plugin folder event");
                // Reads (ours included: fingerprinting opens the files) are not changes.
                if let notify::EventKind::Access(access) = event.kind
                    && access != notify::event::AccessKind::Close(notify::event::AccessMode::Write)
                {
                    return;
                }
                if event.need_rescan() {
                    let _ = events.send(Message::Rescan);
                }
                for path in &event.paths {
                    if let Some(stem) = plugin_stem(path) {
                        let _ = events.send(Message::Changed(stem));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "plugin folder watch error; rescanning");
                let _ = events.send(Message::Rescan);
            }
        })?;
    watcher.watch(registry.plugin_dir(), RecursiveMode::NonRecursive)?;
    let weak = Arc::downgrade(registry);
    let thread = std::thread::Builder::new()
        .name("plugin-watcher".into())
        .spawn(move || run(weak, rx, debounce))
        .map_err(|e| notify::Error::generic(&format!("cannot start the watcher thread: {e}")))?;
    tracing::info!(dir = %registry.plugin_dir().display(), "watching plugin folder");
    Ok(PluginWatcher {
        _watcher: watcher,
        tx,
        thread: Some(thread),
    })
}

fn run(registry: Weak<Registry>, rx: mpsc::Receiver<Message>, debounce: Duration) {
    let recheck = (debounce / 3).max(Duration::from_millis(10));
    let mut pending: HashMap<String, Pending> = HashMap::new();
    loop {
        let wait = if pending.is_empty() {
            Duration::from_secs(1)
        } else {
            recheck
        };
        let mut message = match rx.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Drain the burst before looking at files.
        while let Some(m) = message.take().or_else(|| rx.try_recv().ok()) {
            let now = Instant::now();
            match m {
                Message::Stop => return,
                Message::Changed(stem) => mark(&mut pending, stem, now),
                Message::Rescan => {
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    for stem in registry.known_stems() {
                        mark(&mut pending, stem, now);
                    }
                }
            }
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        for (stem, p) in pending.iter_mut() {
            if now.duration_since(p.last_event) < debounce {
                continue;
            }
            match &p.seen {
                Some((_, at)) if now.duration_since(*at) < recheck => {}
                seen => {
                    let print = fingerprint(registry.plugin_dir(), stem);
                    if seen
                        .as_ref()
                        .is_some_and(|(previous, _)| *previous == print)
                    {
                        ready.push(stem.clone());
                    } else {
                        p.seen = Some((print, now));
                    }
                }
            }
        }
        for stem in ready {
            pending.remove(&stem);
            let started = Instant::now();
            let outcome = registry.reload(&stem);
            tracing::debug!(plugin = %stem, ?outcome, took = ?started.elapsed(), "reload");
        }
    }
}

fn mark(pending: &mut HashMap<String, Pending>, stem: String, now: Instant) {
    tracing::trace!(plugin = %stem, "plugin file changed; waiting for it to settle");
    let entry = pending.entry(stem).or_insert(Pending {
        last_event: now,
        seen: None,
    });
    entry.last_event = now;
    entry.seen = None;
}

/// SHA-256 over the `.wasm` and `.toml` contents (or their absence).
fn fingerprint(dir: &Path, stem: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for ext in ["wasm", "toml"] {
        match std::fs::read(dir.join(format!("{stem}.{ext}"))) {
            Ok(bytes) => {
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
            }
            Err(error) => hasher.update(format!("{:?}", error.kind()).as_bytes()),
        }
    }
    hasher.finalize().to_vec()
}
