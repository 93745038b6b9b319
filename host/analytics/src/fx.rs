//! Converting a currency's figures into the reporting currency through the stored exchange
//! rates (the newest rate of each pair). Conversion is an exact multiplication by the rate:
//! nothing is rounded, so converted figures add up exactly as the originals do. Where only
//! the reverse pair is stored, the factor is its inverse rounded to 12 decimals, and the
//! factor used is what the answer shows.

use hephaestus_core::money::Currency;
use hephaestus_store::exchange_rates::ExchangeRate;

use crate::exact::Exact;

/// Decimals of an inverted rate.
const INVERSE_DECIMALS: u32 = 12;

/// The factor from one currency to the reporting currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// 1 unit of the currency = `factor` units of the reporting currency.
    pub factor: Exact,
    /// The stored rate it came from (`fx_…`); `None` for the reporting currency itself.
    pub rate_id: Option<String>,
    /// When that rate was set (µs).
    pub set_at: Option<i64>,
    /// Whether the stored rate was the reverse pair's, inverted.
    pub inverted: bool,
}

impl Rate {
    pub fn identity() -> Self {
        Rate {
            factor: Exact::ONE,
            rate_id: None,
            set_at: None,
            inverted: false,
        }
    }

    /// `minor` units of a currency with `exponent` decimals, in major units of the
    /// reporting currency; `None` if it does not fit.
    pub fn convert(&self, minor: i64, exponent: u32) -> Option<Exact> {
        Exact::minor(minor, exponent).checked_mul(self.factor)
    }
}

/// The factor from `from` to `to`: 1 if they are the same, the pair's newest rate, or the
/// inverse of the reverse pair's; `None` when no rate links them.
pub fn rate(from: Currency, to: Currency, rates: &[ExchangeRate]) -> Option<Rate> {
    if from == to {
        return Some(Rate::identity());
    }
    let find = |b: &str, q: &str| rates.iter().find(|r| r.base == b && r.quote == q);
    if let Some(r) = find(from.code(), to.code()) {
        return Some(Rate {
            factor: Exact::parse(&r.rate)?,
            rate_id: Some(r.id.clone()),
            set_at: Some(r.created_at),
            inverted: false,
        });
    }
    let r = find(to.code(), from.code())?;
    Some(Rate {
        factor: Exact::ONE.div_round(Exact::parse(&r.rate)?, INVERSE_DECIMALS)?,
        rate_id: Some(r.id.clone()),
        set_at: Some(r.created_at),
        inverted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(base: &str, quote: &str, rate: &str) -> ExchangeRate {
        ExchangeRate {
            id: format!("fx_{base}{quote}"),
            base: base.into(),
            quote: quote.into(),
            rate: rate.into(),
            source: "api".into(),
            created_at: 7,
        }
    }

    fn cur(c: &str) -> Currency {
        Currency::parse(c, "c").unwrap()
    }

    #[test]
    fn direct_inverse_and_missing() {
        let rates = vec![stored("EUR", "USD", "1.0832"), stored("USD", "JPY", "150")];
        let eur = rate(cur("EUR"), cur("USD"), &rates).unwrap();
        assert_eq!(eur.convert(1001, 2).unwrap().to_text(2), "10.842832");
        assert_eq!(eur.rate_id.as_deref(), Some("fx_EURUSD"));
        let yen = rate(cur("JPY"), cur("USD"), &rates).unwrap();
        assert!(yen.inverted);
        assert_eq!(yen.factor.to_text(0), "0.006666666667");
        assert_eq!(yen.convert(300, 0).unwrap().to_text(2), "2.0000000001");
        assert!(rate(cur("GBP"), cur("USD"), &rates).is_none());
        assert_eq!(
            rate(cur("USD"), cur("USD"), &rates).unwrap(),
            Rate::identity()
        );
        // KWD has three decimals: 1.000 KWD at 3.25.
        let kwd = rate(cur("KWD"), cur("USD"), &[stored("KWD", "USD", "3.25")]).unwrap();
        assert_eq!(kwd.convert(1000, 3).unwrap().to_text(2), "3.25");
    }
}
