//! Hostile fixture (world `pricing`): its manifest asks for a one-minute deadline and 10^18
//! fuel per call, and `quote` and `recommend` never return.
//!
//! Config `mode`:
//!
//! - `spin` (default): a loop with no calls in it, so nothing but the epoch deadline (or
//!   fuel) can stop it;
//! - `sleep`: sleeps for an hour, which a `wasm32-wasip2` guest does by blocking on a
//!   `wasi:clocks` pollable: the thread waits inside the host, where no epoch check runs.
//!
//! The host must cut the manifest's limits to its ceilings, answer by the deadline with the
//! list price whatever the call is doing, count the fault at once and open the breaker.

use hephaestus_plugin_sdk::config;
use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};

fn never_return() -> ! {
    match config::get("mode").as_deref() {
        Some("sleep") => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        _ => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct GreedySpin;

impl Guest for GreedySpin {
    fn quote(_request: QuoteRequest) -> Result<PriceQuote, String> {
        never_return()
    }

    fn recommend(_request: RecommendRequest) -> Result<Recommendation, String> {
        never_return()
    }
}

hephaestus_plugin_sdk::export_pricing!(GreedySpin);
