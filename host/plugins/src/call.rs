//! One call: a fresh `Store` from the plugin's `InstancePre`, bounded by fuel, an epoch
//! deadline and a memory limiter, then classified into an answer or a [`Fault`].
//!
//! Nothing survives between calls: a store whose call trapped cannot be entered again,
//! and a plugin that could keep state would make decisions depend on call order. The
//! instance may have been made ahead of the call (see [`crate::warm`]); it is still used
//! once, and the fuel its start code burned is charged to the call it serves, so a call's
//! cost is the same either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capabilities::clock::{BusinessClock, WasiBusinessClock};
use crate::capabilities::config::PluginConfig;
use crate::capabilities::log::{CallLog, LogBudget, LogLevel, LogLine, LogSource};
use crate::capabilities::stdio::CapturedPipe;
use crate::manifest::EffectiveLimits;
use crate::model::{Request, Response};
use crate::v0_1_0::{TypedInstance, TypedPre};
use crate::validate;

/// Largest request, by estimated serialised size, handed to a plugin. A customer profile
/// is a few hundred bytes; a megabyte means a caller bug, not a bigger customer.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Core instances per store. A Python component holds a few dozen; this only stops a
/// component from instantiating modules in a loop.
const MAX_INSTANCES: usize = 1000;
const MAX_TABLES: usize = 1000;
const MAX_MEMORIES: usize = 100;
/// Elements per table; interpreters' function tables hold tens of thousands.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Why a plugin's answer was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The guest trapped (panic, `unreachable`, stack overflow, out-of-bounds access...).
    Trap,
    /// The epoch deadline (`limits.timeout_ms`) passed.
    Timeout,
    /// The fuel budget (`limits.fuel`) ran out.
    OutOfFuel,
    /// The guest asked for more memory than `limits.memory_mib` (or tables beyond bounds).
    Memory,
    /// The guest returned `Err(..)`.
    GuestError,
    /// The answer broke the contract documented in the WIT.
    InvalidOutput,
    /// The answer (or one log line or stdout write) was larger than `limits.output_bytes`;
    /// refused before it was copied out of the guest.
    OutputTooLarge,
    /// The plugin answers another world than the one asked for.
    WrongWorld,
    /// The request was larger than [`MAX_INPUT_BYTES`]; the caller's fault, not the plugin's.
    InputTooLarge,
    /// The host had no free instance slot; not the plugin's fault.
    HostBusy,
}

impl FaultKind {
    /// Whether this fault counts against the plugin (circuit breaker, fault counters).
    pub fn is_plugin_fault(self) -> bool {
        !matches!(self, FaultKind::InputTooLarge | FaultKind::HostBusy)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::OutOfFuel => "out_of_fuel",
            FaultKind::Memory => "memory",
            FaultKind::GuestError => "guest_error",
            FaultKind::InvalidOutput => "invalid_output",
            FaultKind::OutputTooLarge => "output_too_large",
            FaultKind::WrongWorld => "wrong_world",
            FaultKind::InputTooLarge => "input_too_large",
            FaultKind::HostBusy => "host_busy",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: its kind and a one-line explanation for the status page and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl Fault {
    pub(crate) fn new(kind: FaultKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The store's data for one call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    pub(crate) log: CallLog,
    pub(crate) clock: BusinessClock,
    pub(crate) config: PluginConfig,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Bounds linear memory across all of a call's memories and records the peak.
/// `StoreLimits` limits each memory separately and reports nothing; we need the total
/// (what the manifest's `memory_mib` means to an author) and whether a refusal happened,
/// to tell a memory fault from any other trap.
struct CallLimiter {
    memory_limit: usize,
    memory_total: usize,
    refused: Option<String>,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_total - current.min(self.memory_total) + desired;
        if total > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            let message = format!(
                "memory limit reached: growing to {} KiB would exceed {} KiB",
                total / 1024,
                self.memory_limit / 1024
            );
            self.refused = Some(message.clone());
            // Trapping (rather than returning false) stops allocators that would
            // otherwise retry or limp on with a half-built answer.
            return Err(wasmtime::format_err!(message));
        }
        self.memory_total = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = Some(format!("memory growth failed: {error}"));
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            let message = format!("table limit reached: {desired} elements");
            self.refused = Some(message.clone());
            return Err(wasmtime::format_err!(message));
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = Some(format!("table growth failed: {error}"));
        Err(error)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Who is being called, for the log.
#[derive(Debug, Clone)]
pub(crate) struct CallTarget<'a> {
    pub name: &'a Arc<str>,
    pub version: &'a Arc<str>,
    pub pre: &'a TypedPre,
    pub limits: EffectiveLimits,
    pub config: &'a PluginConfig,
    /// The plugin's allowance of lines in the host's log, shared by its calls.
    pub log_budget: &'a Arc<LogBudget>,
}

/// What one call produced.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    pub result: Result<Response, Fault>,
    pub fuel_used: u64,
    pub duration: Duration,
    pub peak_memory: u64,
    pub log: Vec<LogLine>,
    pub log_dropped: u32,
    /// Of `log_dropped`, the lines dropped by the plugin's rate across calls.
    pub log_rate_limited: u32,
    /// The used store. Dropping it frees the instance (for a large interpreter, a
    /// noticeable unmapping), so the caller decides where that happens.
    pub spent: Option<Spent>,
}

impl CallOutcome {
    /// A call that produced nothing but `fault` (its caller gave up, or it never ran).
    pub fn failed(fault: Fault, duration: Duration) -> Self {
        Self {
            result: Err(fault),
            fuel_used: 0,
            duration,
            peak_memory: 0,
            log: Vec::new(),
            log_dropped: 0,
            log_rate_limited: 0,
            spent: None,
        }
    }
}

/// A store whose call is over; only good for dropping.
pub(crate) struct Spent(#[allow(dead_code)] Store<CallState>);

impl std::fmt::Debug for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spent")
    }
}

/// A store holding a fresh instance that has not been called, or the error that
/// stopped its start code.
pub(crate) struct Prepared {
    store: Store<CallState>,
    stdout: CapturedPipe,
    stderr: CapturedPipe,
    instance: wasmtime::Result<TypedInstance>,
}

impl Prepared {
    pub fn is_ok(&self) -> bool {
        self.instance.is_ok()
    }
}

/// Instantiates `target` in a new store under its limits: fuel set, deadline armed.
pub(crate) fn prepare(engine: &Engine, clock: &BusinessClock, target: &CallTarget<'_>) -> Prepared {
    let (mut store, stdout, stderr) = new_store(engine, clock, target);
    let instance = store.set_fuel(target.limits.fuel).and_then(|()| {
        arm_deadline(&mut store, target);
        target.pre.instantiate(&mut store)
    });
    Prepared {
        store,
        stdout,
        stderr,
        instance,
    }
}

/// Runs one call and validates the answer, on `warm` if given (an instance made ahead of
/// the call), else on an instance made now. Never panics on anything the plugin controls.
pub(crate) fn execute(
    engine: &Engine,
    clock: &BusinessClock,
    target: CallTarget<'_>,
    request: &Request,
    warm: Option<Prepared>,
) -> CallOutcome {
    let started = Instant::now();
    let size = validate::input_size(request);
    if size > MAX_INPUT_BYTES {
        return CallOutcome {
            result: Err(Fault::new(
                FaultKind::InputTooLarge,
                format!("request is ~{size} bytes, above the {MAX_INPUT_BYTES}-byte cap"),
            )),
            fuel_used: 0,
            duration: started.elapsed(),
            peak_memory: 0,
            log: Vec::new(),
            log_dropped: 0,
            log_rate_limited: 0,
            spent: None,
        };
    }
    if target.pre.world() != request.world() {
        return CallOutcome {
            result: Err(Fault::new(
                FaultKind::WrongWorld,
                format!(
                    "plugin is a {} plugin; `{}` needs a {} plugin",
                    target.pre.world(),
                    request.function(),
                    request.world()
                ),
            )),
            fuel_used: 0,
            duration: started.elapsed(),
            peak_memory: 0,
            log: Vec::new(),
            log_dropped: 0,
            log_rate_limited: 0,
            spent: None,
        };
    }

    let was_warm = warm.is_some();
    let Prepared {
        mut store,
        stdout,
        stderr,
        instance,
    } = warm.unwrap_or_else(|| prepare(engine, clock, &target));
    let fuel = target.limits.fuel;
    let mut result = match instance {
        Ok(instance) => {
            if was_warm {
                // The deadline armed when the instance was made has been running since;
                // the call gets its whole timeout from now.
                arm_deadline(&mut store, &target);
            }
            match instance.call(&mut store, request) {
                Ok(Ok(response)) => validate::response(request, response)
                    .map_err(|message| Fault::new(FaultKind::InvalidOutput, message)),
                Ok(Err(guest)) => Err(Fault::new(
                    FaultKind::GuestError,
                    format!("plugin returned an error: {}", truncate(&guest, 500)),
                )),
                Err(error) => Err(classify(&error, store.data().limiter.refused.as_deref())),
            }
        }
        Err(error) => Err(classify(&error, store.data().limiter.refused.as_deref())),
    };
    if let Err(fault) = &mut result
        && fault.kind == FaultKind::OutputTooLarge
    {
        fault.message = format!(
            "the plugin handed the host more than {} bytes (limits.output_bytes) at once; refused before copying",
            target.limits.output_bytes
        );
    }
    let duration = started.elapsed();
    // After the epoch deadline stops a call this is the fuel burnt up to the guest's last
    // call or return, not up to where it stopped: wasmtime 48 keeps the running function's
    // count in a register and writes it back at calls, returns and out-of-fuel checks but
    // not at epoch checks, so what a loop without calls burnt is lost with its frame
    // (bytecodealliance/wasmtime#13802). No setting of the synchronous API changes that.
    let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    if let Err(fault) = &mut result
        && fault.kind == FaultKind::Trap
        && fuel_used >= fuel
    {
        // Some guests catch the out-of-fuel trap's effects and trap again differently.
        fault.kind = FaultKind::OutOfFuel;
    }
    let state = store.data_mut();
    for (pipe, source, level) in [
        (&stdout, LogSource::Stdout, LogLevel::Info),
        (&stderr, LogSource::Stderr, LogLevel::Warn),
    ] {
        let (lines, discarded) = pipe.take_lines();
        // A trap's own message ("unreachable executed") rarely says why; what the guest
        // printed on its way down (a Rust panic message, a Python traceback's last line)
        // usually does.
        if source == LogSource::Stderr
            && let Err(fault) = &mut result
            && fault.kind == FaultKind::Trap
            && !lines.is_empty()
        {
            let tail: Vec<&str> = lines
                .iter()
                .map(String::as_str)
                .filter(|l| !l.starts_with("note: run with"))
                .rev()
                .take(2)
                .collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            fault.message = truncate(
                &format!("{} (stderr: {})", fault.message, tail.join(" / ")),
                500,
            );
        }
        for line in lines {
            state.log.write(level, source, line);
        }
        if discarded > 0 {
            state.log.write(
                LogLevel::Warn,
                source,
                format!("[{discarded} bytes of {source:?} output discarded]"),
            );
        }
    }
    let peak_memory = state.limiter.memory_total as u64;
    let (log, log_dropped) = state.log.finish();
    let log_rate_limited = state.log.rate_limited();
    CallOutcome {
        result,
        fuel_used,
        duration,
        peak_memory,
        log,
        log_dropped,
        log_rate_limited,
        spent: Some(Spent(store)),
    }
}

/// A fresh store for one call of `target`, with its captured stdout and stderr.
pub(crate) fn new_store(
    engine: &Engine,
    clock: &BusinessClock,
    target: &CallTarget<'_>,
) -> (Store<CallState>, CapturedPipe, CapturedPipe) {
    let stdout = CapturedPipe::new();
    let stderr = CapturedPipe::new();
    // An empty context: no preopened folders, no environment, no arguments, no sockets,
    // no name lookup.
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(WasiBusinessClock(clock.clone()))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        limiter: CallLimiter {
            memory_limit: target.limits.memory_bytes,
            memory_total: 0,
            refused: None,
        },
        log: CallLog::new(
            target.name.clone(),
            target.version.clone(),
            target.log_budget.clone(),
        ),
        clock: clock.clone(),
        config: target.config.clone(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Every string and list the guest hands the host (the answer, a log line, a stdout
    // write) is charged against this before wasmtime copies it out of the guest's memory:
    // an oversized answer is refused where it lies, never duplicated into the host's heap.
    store.set_hostcall_fuel(target.limits.output_bytes);
    (store, stdout, stderr)
}

/// Sets the epoch deadline of `target`'s timeout; the ticker advances the epoch every
/// millisecond.
fn arm_deadline(store: &mut Store<CallState>, target: &CallTarget<'_>) {
    let ticks = u64::try_from(target.limits.timeout.as_millis()).unwrap_or(u64::MAX);
    store.set_epoch_deadline(ticks.max(1));
    store.epoch_deadline_trap();
}

/// Instantiates `target` once, under its limits, without calling it, and says how long
/// that took. `Err` carries the fault and whether it was a trap (as opposed to a type
/// mismatch found while looking up the exports).
pub(crate) fn instantiate_once(
    engine: &Engine,
    clock: &BusinessClock,
    target: &CallTarget<'_>,
) -> Result<Duration, (Fault, bool)> {
    let started = Instant::now();
    let prepared = prepare(engine, clock, target);
    let took = started.elapsed();
    match &prepared.instance {
        Ok(_) => Ok(took),
        Err(error) => {
            let refused = prepared.store.data().limiter.refused.as_deref();
            let trapped = refused.is_some() || error.downcast_ref::<Trap>().is_some();
            Err((classify(error, refused), trapped))
        }
    }
}

/// What wasmtime 48 says when a string or list from the guest exceeds the store's hostcall
/// fuel (its error type is private, so its message is what can be matched; a test with a
/// real oversized answer pins it).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

fn classify(error: &wasmtime::Error, refused: Option<&str>) -> Fault {
    if let Some(refused) = refused {
        return Fault::new(FaultKind::Memory, refused);
    }
    if error
        .chain()
        .any(|cause| cause.to_string().contains(HOSTCALL_FUEL_EXHAUSTED))
    {
        return Fault::new(
            FaultKind::OutputTooLarge,
            "the plugin handed the host more bytes than limits.output_bytes allows (refused before copying)",
        );
    }
    if error.is::<wasmtime::PoolConcurrencyLimitError>() {
        return Fault::new(FaultKind::HostBusy, error.to_string());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            Fault::new(FaultKind::Timeout, "time limit reached (epoch deadline)")
        }
        Some(Trap::OutOfFuel) => Fault::new(FaultKind::OutOfFuel, "fuel budget used up"),
        Some(trap) => Fault::new(FaultKind::Trap, trap.to_string()),
        None => Fault::new(FaultKind::Trap, truncate(&format!("{error:#}"), 500)),
    }
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_all_memories_and_remembers_a_refusal() {
        let mut limiter = CallLimiter {
            memory_limit: 1 << 20,
            memory_total: 0,
            refused: None,
        };
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        assert!(limiter.memory_growing(0, 256 << 10, None).unwrap());
        assert_eq!(limiter.memory_total, 768 << 10);
        assert!(limiter.memory_growing(256 << 10, 600 << 10, None).is_err());
        assert!(limiter.refused.is_some());
        let fault = classify(
            &wasmtime::format_err!("anything"),
            limiter.refused.as_deref(),
        );
        assert_eq!(fault.kind, FaultKind::Memory);
    }

    #[test]
    fn traps_are_classified_by_kind() {
        let timeout = wasmtime::Error::from(Trap::Interrupt);
        assert_eq!(classify(&timeout, None).kind, FaultKind::Timeout);
        let fuel = wasmtime::Error::from(Trap::OutOfFuel);
        assert_eq!(classify(&fuel, None).kind, FaultKind::OutOfFuel);
        let other = wasmtime::Error::from(Trap::UnreachableCodeReached);
        assert_eq!(classify(&other, None).kind, FaultKind::Trap);
        assert!(!FaultKind::HostBusy.is_plugin_fault());
        assert!(FaultKind::InvalidOutput.is_plugin_fault());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
