//! Hostile fixture (world `pricing`): every call traps.
//!
//! Config `mode`: `panic` (default; a Rust panic, which prints its message to stderr and
//! then aborts with `unreachable`) or `unreachable` (a bare `unreachable` instruction, no
//! message). The host must discard the store, fall back and count a trap.

use hephaestus_plugin_sdk::config;
use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};

fn trap(function: &str) -> ! {
    match config::get("mode").as_deref() {
        Some("unreachable") => unreachable_instruction(),
        _ => panic!("trap fixture: deliberate panic in {function}"),
    }
}

#[cfg(target_arch = "wasm32")]
fn unreachable_instruction() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn unreachable_instruction() -> ! {
    std::process::abort()
}

/// The exported plugin.
#[derive(Debug)]
pub struct Trap;

impl Guest for Trap {
    fn quote(_request: QuoteRequest) -> Result<PriceQuote, String> {
        trap("quote")
    }

    fn recommend(_request: RecommendRequest) -> Result<Recommendation, String> {
        trap("recommend")
    }
}

hephaestus_plugin_sdk::export_pricing!(Trap);
