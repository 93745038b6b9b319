//! Hostile fixture (world `pricing`): tries to carry state from one call to the next, in
//! each kind of memory the host resets differently between calls:
//!
//! - a static counter (the module's data, restored from its copy-on-write image);
//! - a marker written far below the stack pointer (low memory, which the host restores in
//!   place, page by page, rather than handing back to the kernel);
//! - a marker in a page the call adds with `memory.grow` (beyond the initial memory,
//!   handed back to the kernel at teardown).
//!
//! Each call reports what it found from earlier calls in the quote's reason and answers
//! the list price; the host must make every call find nothing.

use std::sync::atomic::{AtomicU32, Ordering};

use hephaestus_plugin_sdk::Money;
use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};

static CALLS: AtomicU32 = AtomicU32::new(0);
const MARKER: u32 = 0x5EED_CAFE;
/// How far below the current stack pointer the low-memory marker goes: inside the stack
/// region, below anything this call uses.
#[cfg(target_arch = "wasm32")]
const BELOW_STACK: usize = 256 * 1024;

/// Reads what an earlier call left at `addr` and leaves the marker there.
///
/// # Safety
/// `addr` must be inside linear memory and not used by anything live in this call.
#[cfg(target_arch = "wasm32")]
unsafe fn swap_marker(addr: usize) -> u32 {
    let p = addr as *mut u32;
    // Volatile: the point is the memory itself, which the compiler must not reason away.
    unsafe {
        let before = p.read_volatile();
        p.write_volatile(MARKER);
        before
    }
}

#[cfg(target_arch = "wasm32")]
fn low_memory_marker() -> u32 {
    let local = 0u32;
    let sp = std::ptr::addr_of!(local) as usize;
    let addr = sp.saturating_sub(BELOW_STACK) & !3;
    if addr < 1024 {
        return 0;
    }
    // SAFETY: the stack grows down from here through unused memory; nothing lives there.
    unsafe { swap_marker(addr) }
}

#[cfg(not(target_arch = "wasm32"))]
fn low_memory_marker() -> u32 {
    0
}

#[cfg(target_arch = "wasm32")]
fn grown_page_marker() -> u32 {
    let page = core::arch::wasm32::memory_grow(0, 1);
    if page == usize::MAX {
        return 0;
    }
    // SAFETY: the page was just added and is used by nothing else.
    unsafe { swap_marker(page * 65536 + 128) }
}

#[cfg(not(target_arch = "wasm32"))]
fn grown_page_marker() -> u32 {
    0
}

fn remembered() -> String {
    let mut found = Vec::new();
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    if calls > 0 {
        found.push(format!("{calls} earlier calls"));
    }
    if low_memory_marker() == MARKER {
        found.push("a marker in low memory".to_string());
    }
    if grown_page_marker() == MARKER {
        found.push("a marker in a grown page".to_string());
    }
    if found.is_empty() {
        "remembered nothing".to_string()
    } else {
        format!("remembered {}", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    /// Within one instance the fixture does see its own past: it can tell.
    #[test]
    fn a_second_call_in_the_same_instance_remembers_the_first() {
        assert_eq!(super::remembered(), "remembered nothing");
        assert_eq!(super::remembered(), "remembered 1 earlier calls");
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct Remember;

impl Guest for Remember {
    fn quote(request: QuoteRequest) -> Result<PriceQuote, String> {
        let total = request.unit_price.amount_minor * i64::from(request.quantity);
        Ok(PriceQuote {
            amount: Money {
                amount_minor: total,
                currency: request.unit_price.currency.clone(),
            },
            discount: Money {
                amount_minor: 0,
                currency: request.unit_price.currency,
            },
            reason: remembered(),
        })
    }

    fn recommend(_request: RecommendRequest) -> Result<Recommendation, String> {
        Err("remember only quotes".to_string())
    }
}

hephaestus_plugin_sdk::export_pricing!(Remember);
