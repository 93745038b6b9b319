//! Hostile fixture (world `pricing`): `quote` and `recommend` never return.
//!
//! The host must stop the call with its epoch deadline or fuel budget, fall back to the
//! list price and count a timeout. The loop has a side effect the optimiser cannot remove.

use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct SpinForever;

impl Guest for SpinForever {
    fn quote(_request: QuoteRequest) -> Result<PriceQuote, String> {
        spin()
    }

    fn recommend(_request: RecommendRequest) -> Result<Recommendation, String> {
        spin()
    }
}

hephaestus_plugin_sdk::export_pricing!(SpinForever);
