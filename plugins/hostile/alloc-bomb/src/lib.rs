//! Hostile fixture (world `pricing`): `quote` and `recommend` allocate 1 MiB blocks, touching
//! every page, until memory runs out.
//!
//! The host's memory limit must stop it (a failed `memory.grow` traps, or the allocator
//! aborts); the host then falls back to the list price and counts the fault.

use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};

fn bomb() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let block = vec![std::hint::black_box(0xA5_u8); 1 << 20];
        blocks.push(std::hint::black_box(block));
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct AllocBomb;

impl Guest for AllocBomb {
    fn quote(_request: QuoteRequest) -> Result<PriceQuote, String> {
        bomb()
    }

    fn recommend(_request: RecommendRequest) -> Result<Recommendation, String> {
        bomb()
    }
}

hephaestus_plugin_sdk::export_pricing!(AllocBomb);
