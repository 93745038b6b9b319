//! Hostile fixture (world `pricing`): well-formed calls, contract-breaking answers.
//!
//! Config `mode` chooses the breach (default `negative`):
//!
//! | mode | `quote` returns | `recommend` returns |
//! |---|---|---|
//! | `negative` | amount = −(list total) | recommended price = −(current price) |
//! | `currency` | amount and discount in `ZZZ` (no such ISO 4217 currency) | price in `ZZZ` |
//! | `discount` | discount = list total + 1 (more than the list total), amount = list total | price = 100 × current (beyond the factor-ten bound) |
//! | `oversized` | the list price, with a reason of config `bytes` bytes (default 40 MiB) | the current price, same reason |
//!
//! The host must reject each answer, fall back to the list price and count bad output; an
//! oversized answer must be refused before the host copies it out of the plugin.

use hephaestus_plugin_sdk::pricing::{
    Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
};
use hephaestus_plugin_sdk::{Money, config};

/// How the answers break the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Negative,
    Currency,
    Discount,
    /// A valid answer but for the size of its reason, in bytes.
    Oversized(usize),
}

/// The oversized reason's length unless config `bytes` says otherwise: 40 MiB.
pub const DEFAULT_OVERSIZED_BYTES: usize = 40 << 20;

impl Mode {
    pub fn parse(value: Option<&str>) -> Result<Mode, String> {
        match value.map(str::trim) {
            None | Some("negative") => Ok(Mode::Negative),
            Some("currency") => Ok(Mode::Currency),
            Some("discount") => Ok(Mode::Discount),
            Some("oversized") => {
                let bytes = config::get_u64_or("bytes", DEFAULT_OVERSIZED_BYTES as u64)?;
                Ok(Mode::Oversized(
                    usize::try_from(bytes).map_err(|e| e.to_string())?,
                ))
            }
            Some(other) => Err(format!(
                "config `mode` = {other:?}: expected negative, currency, discount or oversized"
            )),
        }
    }
}

/// The breaching quote for `request`.
pub fn quote(request: &QuoteRequest, mode: Mode) -> PriceQuote {
    let list_total = request
        .unit_price
        .amount_minor
        .saturating_mul(i64::from(request.quantity));
    let currency = request.unit_price.currency.clone();
    let (amount, discount, currency) = match mode {
        Mode::Negative => (-list_total, 0, currency),
        Mode::Currency => (list_total, 0, "ZZZ".to_owned()),
        Mode::Discount => (list_total, list_total.saturating_add(1), currency),
        Mode::Oversized(_) => (list_total, 0, currency),
    };
    PriceQuote {
        amount: Money {
            amount_minor: amount,
            currency: currency.clone(),
        },
        discount: Money {
            amount_minor: discount,
            currency,
        },
        reason: reason(mode),
    }
}

/// The answer's reason: short, or exactly `bytes` bytes for `Oversized` (allocated once, so
/// the plugin's memory holds it and little else).
fn reason(mode: Mode) -> String {
    match mode {
        Mode::Oversized(bytes) => {
            let mut reason = String::with_capacity(bytes);
            reason.extend(std::iter::repeat_n('x', bytes));
            reason
        }
        _ => format!("bad-output fixture, mode {mode:?}"),
    }
}

/// The breaching recommendation for `request`.
pub fn recommend(request: &RecommendRequest, mode: Mode) -> Recommendation {
    let current = &request.current_price;
    let price = match mode {
        Mode::Negative => Money {
            amount_minor: -current.amount_minor,
            currency: current.currency.clone(),
        },
        Mode::Currency => Money {
            amount_minor: current.amount_minor,
            currency: "ZZZ".to_owned(),
        },
        Mode::Discount => Money {
            amount_minor: current.amount_minor.saturating_mul(100),
            currency: current.currency.clone(),
        },
        Mode::Oversized(_) => current.clone(),
    };
    Recommendation {
        recommended_price: price,
        revenue_change_basis_points: 0,
        conversion_change_basis_points: 0,
        reason: reason(mode),
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct BadOutput;

impl Guest for BadOutput {
    fn quote(request: QuoteRequest) -> Result<PriceQuote, String> {
        Ok(quote(
            &request,
            Mode::parse(config::get("mode").as_deref())?,
        ))
    }

    fn recommend(request: RecommendRequest) -> Result<Recommendation, String> {
        Ok(recommend(
            &request,
            Mode::parse(config::get("mode").as_deref())?,
        ))
    }
}

hephaestus_plugin_sdk::export_pricing!(BadOutput);
