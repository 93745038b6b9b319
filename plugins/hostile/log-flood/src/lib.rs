//! Hostile fixture (world `pricing`): every call writes 100,000 log lines through the host's
//! `log` interface and 100,000 lines to stdout, then answers correctly: `quote` returns the
//! list price (no discount), `recommend` keeps the current price.
//!
//! The host must cap what it keeps (dropping and counting the excess) without failing the
//! call, so the answer is still used. Config `lines` changes the count.

use std::io::Write;

use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};
use hephaestus_plugin_sdk::{Money, config, log};

/// Lines written per call unless config `lines` says otherwise.
pub const DEFAULT_LINES: u64 = 100_000;

fn flood(function: &str) -> Result<(), String> {
    let lines = config::get_u64_or("lines", DEFAULT_LINES)?;
    let mut stdout = std::io::stdout().lock();
    for i in 0..lines {
        log::info(&format!("log-flood {function}: log line {i} of {lines}"));
        // Output errors are ignored: a closed stdout must not change the answer.
        let _ = writeln!(stdout, "log-flood {function}: stdout line {i} of {lines}");
    }
    let _ = stdout.flush();
    Ok(())
}

/// The exported plugin.
#[derive(Debug)]
pub struct LogFlood;

impl Guest for LogFlood {
    fn quote(request: QuoteRequest) -> Result<PriceQuote, String> {
        flood("quote")?;
        let unit = &request.unit_price;
        let total = unit
            .amount_minor
            .checked_mul(i64::from(request.quantity))
            .ok_or("list total does not fit in 64 bits")?;
        Ok(PriceQuote {
            amount: Money {
                amount_minor: total,
                currency: unit.currency.clone(),
            },
            discount: Money {
                amount_minor: 0,
                currency: unit.currency.clone(),
            },
            reason: "list price".to_owned(),
        })
    }

    fn recommend(request: RecommendRequest) -> Result<Recommendation, String> {
        flood("recommend")?;
        Ok(Recommendation {
            recommended_price: request.current_price,
            revenue_change_basis_points: 0,
            conversion_change_basis_points: 0,
            reason: "log-flood keeps the current price".to_owned(),
        })
    }
}

hephaestus_plugin_sdk::export_pricing!(LogFlood);
