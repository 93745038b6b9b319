//! What the host grants a plugin, one small unit per capability so each is tested alone:
//!
//! - [`log`]: `hephaestus:plugins/log`, capped per call, into `tracing`.
//! - [`clock`]: `hephaestus:plugins/clock` and the WASI wall clock, both on the business clock.
//! - [`config`]: `hephaestus:plugins/config`, the manifest's `[config]` table.
//! - [`stdio`]: captured, capped stdout/stderr for the WASI context.
//!
//! Everything else a WASI guest may import is linked from `wasmtime_wasi::p2` with an empty
//! context: no folders, no sockets, no name lookup, no environment, no arguments.

pub mod clock;
pub mod config;
pub mod log;
pub mod stdio;
