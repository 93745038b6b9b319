//! Logging into the host's log, tagged by the host with the plugin's name and version.
//!
//! The host caps lines per call; extra lines are dropped and counted, never an error, so
//! logging cannot make a call fail. Anything printed to stdout/stderr is captured too.

pub use crate::bindings::host::hephaestus::plugins::log::Level;

/// Writes one line at `level`.
pub fn write(level: Level, message: &str) {
    crate::bindings::host::hephaestus::plugins::log::write(level, message);
}

/// Writes one line at level `trace`.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Writes one line at level `debug`.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes one line at level `info`.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes one line at level `warn`.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes one line at level `error`.
pub fn error(message: &str) {
    write(Level::Error, message);
}
