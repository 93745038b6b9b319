//! Compile once: precompiled artifacts in `<data dir>/plugin-cache`, one file per
//! (component content, engine settings) pair.
//!
//! Compiling a 12–18 MB JavaScript or Python component takes seconds; loading its
//! precompiled artifact (mmap) takes about a millisecond. The file name is the SHA-256
//! of the component bytes plus a hash of the engine's compilation settings
//! (`Engine::precompile_compatibility_hash`), because an artifact only loads into an
//! engine configured the same way (fuel, epochs, target...).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Hit/miss counters of the artifact cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Components loaded from a precompiled artifact.
    pub hits: u64,
    /// Components compiled (no artifact, or a stale/corrupt one).
    pub compiles: u64,
    /// Artifacts that existed but could not be loaded (and were replaced).
    pub rejected: u64,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Cache,
    Compiled,
}

#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    hits: AtomicU64,
    compiles: AtomicU64,
    rejected: AtomicU64,
}

/// Feeds `Hash` output into SHA-256 so the engine key is stable across processes
/// (`DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex SHA-256 of `bytes`: a plugin version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactCache {
    /// `dir = None` compiles in memory every time (the CLI's one-shot tools).
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir,
            engine_key,
            hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// The component for `bytes` (whose SHA-256 hex is `hash`), from the cache when
    /// possible. Logs which path was taken and how long it took.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
        label: &str,
    ) -> wasmtime::Result<(Component, Origin, Duration)> {
        let started = Instant::now();
        let Some(dir) = &self.dir else {
            let component = compile_with_retry(|| Component::from_binary(engine, bytes))?;
            self.compiles.fetch_add(1, Ordering::Relaxed);
            return Ok((component, Origin::Compiled, started.elapsed()));
        };
        let path = dir.join(format!("{hash}-{}.cwasm", self.engine_key));
        if path.is_file() {
            match load_artifact(engine, &path) {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    let took = started.elapsed();
                    tracing::info!(
                        plugin = label,
                        version = &hash[..12],
                        ?took,
                        "loaded from precompiled cache"
                    );
                    return Ok((component, Origin::Cache, took));
                }
                Err(error) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin = label, path = %path.display(), %error, "precompiled artifact rejected; recompiling");
                }
            }
        }
        let artifact = compile_with_retry(|| engine.precompile_component(bytes))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compiled_in = started.elapsed();
        // Temp file + rename: a reader never sees half an artifact, two hosts writing the
        // same artifact both produce a complete file, and a host that has the old file
        // mmapped keeps its inode (rewriting a mapped file in place would SIGBUS it).
        let tmp = dir.join(format!(
            ".{hash}-{}.{}.{:?}.tmp",
            self.engine_key,
            std::process::id(),
            std::thread::current().id()
        ));
        let written = std::fs::write(&tmp, &artifact).and_then(|()| std::fs::rename(&tmp, &path));
        let component = match written {
            Ok(()) => load_artifact(engine, &path)?,
            Err(error) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(plugin = label, dir = %dir.display(), %error, "cannot write the plugin cache; compiling in memory");
                Component::from_binary(engine, bytes)?
            }
        };
        tracing::info!(plugin = label, version = &hash[..12], took = ?compiled_in, "compiled");
        Ok((component, Origin::Compiled, started.elapsed()))
    }
}

/// Compilation of a large component once failed on this kind of machine with "cannot add
/// seals to the memfd (os error 16)", and a retry passed: retry once on that error only.
fn compile_with_retry<T>(mut compile: impl FnMut() -> wasmtime::Result<T>) -> wasmtime::Result<T> {
    match compile() {
        Err(error) if format!("{error:#}").contains("os error 16") => {
            tracing::warn!(%error, "transient compile failure; retrying once");
            compile()
        }
        other => other,
    }
}

/// Loads a precompiled artifact by mmap.
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
    // `Engine::precompile_component` for a compatible engine and not modified since. This
    // file is one we wrote ourselves (temp file + rename in `ArtifactCache::load`), named
    // by the SHA-256 of its source and the engine's compatibility hash, in the plugin
    // cache folder the host owns; plugins never name or write files there. Wasmtime also
    // checks the header and engine settings and rejects a truncated file cleanly.
    unsafe { Component::deserialize_file(engine, path) }
}
