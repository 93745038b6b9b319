//! The `hephaestus` binary's library: configuration, the command line, logging and the
//! server loop. `main` only calls [`cli::main`]; tests call [`server::run`] with a listener
//! on port 0 and their own shutdown signal.
//!
//! - [`config`]: every setting, from flags, environment and `.env`, validated at start.
//! - [`cli`]: `serve`, `migrate` and `keys`.
//! - [`server`]: binds, serves, drains on SIGTERM.
//! - [`telemetry`]: structured logs with tracing.

pub mod cli;
pub mod config;
pub mod server;
pub mod telemetry;
