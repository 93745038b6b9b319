//! `hephaestus:plugins/log` and captured stdio, forwarded to `tracing` with the plugin's
//! name and version. Capped per call, and rate-limited per plugin across calls (a plugin
//! logging one line per quote would otherwise write a line per quote), so a chatty or
//! hostile plugin cannot flood the host's log: lines beyond either are dropped and
//! counted, never an error for the guest.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// Lines kept per call (log writes and stdio lines together).
pub const MAX_LINES_PER_CALL: usize = 100;
/// Bytes kept per call across all lines.
pub const MAX_BYTES_PER_CALL: usize = 16 * 1024;
/// Longer lines are cut to this many bytes (at a character boundary) and marked with `…`.
pub const MAX_LINE_BYTES: usize = 2048;

/// The guest's log level (the WIT `level` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// `log.write`.
    Log,
    Stdout,
    Stderr,
}

/// One line a plugin wrote during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

/// A plugin's allowance of lines in the host's log, shared by all its calls: a token
/// bucket refilled at `per_sec` lines a second, holding up to ten seconds' worth.
#[derive(Debug)]
pub struct LogBudget {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

/// How many seconds' worth of lines a quiet plugin may write at once.
pub const BURST_SECONDS: u32 = 10;

impl LogBudget {
    /// `per_sec` lines a second, bursts of [`BURST_SECONDS`] seconds' worth; starts full.
    pub fn new(per_sec: u32) -> Self {
        let burst = f64::from(per_sec) * f64::from(BURST_SECONDS);
        Self {
            per_sec: f64::from(per_sec),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// No limit (the author tools: the person calling wants every line).
    pub fn unlimited() -> Self {
        Self {
            per_sec: f64::INFINITY,
            burst: f64::INFINITY,
            state: Mutex::new((f64::INFINITY, Instant::now())),
        }
    }

    /// Takes one line's token if there is one.
    pub fn take(&self) -> bool {
        if self.per_sec.is_infinite() {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// The log of one call.
#[derive(Debug)]
pub struct CallLog {
    plugin: Arc<str>,
    version: Arc<str>,
    budget: Arc<LogBudget>,
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: u32,
    rate_limited: u32,
}

impl CallLog {
    pub fn new(plugin: Arc<str>, version: Arc<str>, budget: Arc<LogBudget>) -> Self {
        Self {
            plugin,
            version,
            budget,
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
            rate_limited: 0,
        }
    }

    /// Records and forwards one line, unless this call's budget is spent.
    pub fn write(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if self.lines.len() >= MAX_LINES_PER_CALL || self.bytes + message.len() > MAX_BYTES_PER_CALL
        {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        if !self.budget.take() {
            self.dropped = self.dropped.saturating_add(1);
            self.rate_limited = self.rate_limited.saturating_add(1);
            return;
        }
        self.bytes += message.len();
        emit(&self.plugin, &self.version, level, source, &message);
        self.lines.push(LogLine {
            level,
            source,
            message,
        });
    }

    /// Lines dropped because the call's cap or the plugin's rate was reached.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Of [`CallLog::dropped`], the lines dropped by the plugin's rate.
    pub fn rate_limited(&self) -> u32 {
        self.rate_limited
    }

    /// Takes the lines kept, in order, at the end of a call. Reports a summary of what was
    /// dropped to `tracing`, itself a line of the plugin's allowance: a plugin over its
    /// rate on every call must not get a summary line per call instead.
    pub fn finish(&mut self) -> (Vec<LogLine>, u32) {
        if self.dropped > 0 && self.budget.take() {
            tracing::warn!(
                target: "hephaestus_plugins::guest",
                plugin = %self.plugin,
                version = %self.version,
                dropped = self.dropped,
                "plugin log capped: {} lines dropped this call",
                self.dropped
            );
        }
        (std::mem::take(&mut self.lines), self.dropped)
    }
}

fn emit(plugin: &str, version: &str, level: LogLevel, source: LogSource, message: &str) {
    let source = match source {
        LogSource::Log => "log",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
    };
    // `tracing` levels are static per call site, hence one site per level.
    macro_rules! at {
        ($lvl:expr) => {
            tracing::event!(target: "hephaestus_plugins::guest", $lvl, plugin = %plugin, version = %version, source, "{message}")
        };
    }
    match level {
        LogLevel::Trace => at!(tracing::Level::TRACE),
        LogLevel::Debug => at!(tracing::Level::DEBUG),
        LogLevel::Info => at!(tracing::Level::INFO),
        LogLevel::Warn => at!(tracing::Level::WARN),
        LogLevel::Error => at!(tracing::Level::ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> CallLog {
        CallLog::new("p".into(), "v".into(), Arc::new(LogBudget::unlimited()))
    }

    #[test]
    fn the_rate_holds_across_calls_and_refills_with_time() {
        let budget = Arc::new(LogBudget::new(2));
        let mut allowed = 0;
        let mut dropped = 0;
        for call in 0..30 {
            let mut log = CallLog::new("p".into(), "v".into(), budget.clone());
            log.write(LogLevel::Info, LogSource::Log, format!("call {call}"));
            let (lines, d) = log.finish();
            allowed += lines.len();
            dropped += d;
            assert_eq!(log.rate_limited(), d);
        }
        // A full bucket (ten seconds' worth) and whatever refilled while the loop ran.
        assert!((20..=22).contains(&allowed), "{allowed}");
        assert_eq!(allowed + dropped as usize, 30);
        {
            let mut state = budget.state.lock().unwrap();
            state.1 -= std::time::Duration::from_secs(1);
        }
        assert!(budget.take() && budget.take(), "a second refills two lines");
        let zero = LogBudget::new(0);
        assert!(!zero.take());
    }

    #[test]
    fn caps_the_number_of_lines_and_counts_the_rest() {
        let mut log = log();
        for i in 0..MAX_LINES_PER_CALL + 25 {
            log.write(LogLevel::Info, LogSource::Log, format!("line {i}"));
        }
        let (lines, dropped) = log.finish();
        assert_eq!(lines.len(), MAX_LINES_PER_CALL);
        assert_eq!(dropped, 25);
        assert_eq!(lines[0].message, "line 0");
    }

    #[test]
    fn caps_bytes_and_truncates_long_lines_at_a_char_boundary() {
        let mut log = log();
        log.write(
            LogLevel::Warn,
            LogSource::Stderr,
            "é".repeat(MAX_LINE_BYTES),
        );
        let kept = log.lines[0].message.len();
        assert!(kept <= MAX_LINE_BYTES + '…'.len_utf8(), "{kept}");
        for _ in 0..20 {
            log.write(LogLevel::Info, LogSource::Log, "x".repeat(MAX_LINE_BYTES));
        }
        assert!(log.bytes <= MAX_BYTES_PER_CALL);
        assert!(log.dropped() > 0);
    }
}
