//! Money: integer minor units plus an ISO 4217 currency, using that currency's own exponent
//! (JPY 0, USD 2, KWD 3). Amounts arrive from clients as decimals in major units and are
//! converted exactly, from the number's text, never through a float: `97.005` USD is an
//! error, not a rounding.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::ValidationError;

/// The largest amount in minor units any conversion accepts: exact for every currency.
pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency that has minor units defined (so not gold, SDRs or test codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The uppercase three-letter code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in major units.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }

    /// Parses a code, in either case. `field` names the request field in errors.
    pub fn parse(code: &str, field: &str) -> Result<Self, ValidationError> {
        let upper = code.trim().to_ascii_uppercase();
        let currency = iso_currency::Currency::from_code(&upper).ok_or_else(|| {
            ValidationError::new(field, format!("`{code}` is not an ISO 4217 currency code"))
        })?;
        if currency.exponent().is_none() {
            return Err(ValidationError::new(
                field,
                format!("{upper} has no minor unit and cannot be charged"),
            ));
        }
        Ok(Currency(currency))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s, "currency")
    }
}

/// Written as its code.
impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code, "currency").map_err(serde::de::Error::custom)
    }
}

/// An amount of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// The amount in major units, written with exactly the currency's decimals
    /// (`97.00`, `1000`, `1.500`).
    pub fn major_string(self) -> String {
        let mut d = Decimal::from(self.minor);
        // The exponent is at most 4 for real currencies; set_scale fails only beyond 28.
        let _ = d.set_scale(self.currency.exponent());
        d.to_string()
    }
}

/// Converts a decimal amount in major units, given as text (a JSON number's digits or a
/// string), into minor units. Rejects signs, exponents, more decimals than the currency
/// has, zero, and anything above `max_minor`.
pub fn parse_major(
    text: &str,
    currency: Currency,
    max_minor: i64,
    field: &str,
) -> Result<i64, ValidationError> {
    let minor = parse_major_or_zero(text, currency, max_minor, field)?;
    if minor == 0 {
        return Err(ValidationError::new(field, "must be greater than zero"));
    }
    Ok(minor)
}

/// Like [`parse_major`], but zero is allowed (a free price).
pub fn parse_major_or_zero(
    text: &str,
    currency: Currency,
    max_minor: i64,
    field: &str,
) -> Result<i64, ValidationError> {
    let err = |m: String| ValidationError::new(field, m);
    let text = text.trim();
    if text.starts_with('-') {
        return Err(err("must be positive".into()));
    }
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (text.contains('.') && !digits(frac)) {
        return Err(err(format!(
            "`{text}` is not a plain decimal amount like 97.00"
        )));
    }
    // Read digit by digit in integers: zeros that do not change the value (`0097.50`,
    // `1.000…0` USD) cost nothing, where a decimal type's 28 digits would refuse them.
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let exponent = currency.exponent();
    if frac.len() > exponent as usize {
        return Err(err(format!(
            "{} allows {exponent} decimal place{}; `{text}` has more",
            currency.code(),
            if exponent == 1 { "" } else { "s" }
        )));
    }
    let whole: i64 = match int {
        "" => 0,
        // Beyond i64 is beyond MAX_MINOR too.
        _ => int.parse().unwrap_or(i64::MAX),
    };
    // At most four digits (the largest exponent), so only the empty fraction fails to parse.
    let part: i64 = frac.parse().unwrap_or(0);
    let minor = whole
        .checked_mul(10_i64.pow(exponent))
        .and_then(|m| m.checked_add(part * 10_i64.pow(exponent - frac.len() as u32)))
        .filter(|m| *m <= MAX_MINOR)
        .ok_or_else(|| err(format!("`{text}` is too large")))?;
    if minor > max_minor {
        let max = Money {
            minor: max_minor,
            currency,
        };
        return Err(err(format!(
            "must be at most {} {}",
            max.major_string(),
            currency.code()
        )));
    }
    Ok(minor)
}

/// `major` major units in minor units of `currency` (for configured limits).
pub fn major_to_minor(major: Decimal, currency: Currency) -> i64 {
    major
        .checked_mul(Decimal::from(10_i64.pow(currency.exponent())))
        .map(|m| m.trunc())
        .and_then(|m| i64::try_from(m).ok())
        .unwrap_or(MAX_MINOR)
        .min(MAX_MINOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code, "currency").unwrap()
    }

    #[test]
    fn converts_exactly_per_exponent() {
        let cases: &[(&str, &str, i64)] = &[
            ("97.00", "USD", 9700),
            ("97", "USD", 9700),
            ("0.01", "usd", 1),
            ("97.5", "EUR", 9750),
            ("1000", "JPY", 1000),
            ("1.500", "KWD", 1500),
            ("0.001", "BHD", 1),
            ("10000000000", "USD", 1_000_000_000_000),
            ("1000000000000", "JPY", 1_000_000_000_000),
            ("10000000000000.00", "USD", MAX_MINOR),
            ("0.10", "CLF", 1000),
            ("0097.50", "USD", 9750),
            // Found by the fuzz target: zeros beyond a decimal type's 28 digits.
            ("1.00000000000000000000000000000000", "USD", 100),
            ("00000000000000000000000000000000001", "JPY", 1),
        ];
        for (text, code, minor) in cases {
            assert_eq!(
                parse_major(text, cur(code), MAX_MINOR, "amount"),
                Ok(*minor),
                "{text} {code}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_exact() {
        let usd = cur("USD");
        for bad in [
            "97.005",
            "-1",
            "0",
            "0.00",
            "1e3",
            "1E2",
            "",
            ".5",
            "5.",
            "1.2.3",
            "NaN",
            "+1",
            " ",
            "0x10",
            "100000000000000.00",
            "99999999999999999999999999999999",
        ] {
            assert!(
                parse_major(bad, usd, MAX_MINOR, "amount").is_err(),
                "{bad:?}"
            );
        }
        assert!(parse_major("1.5", cur("JPY"), MAX_MINOR, "amount").is_err());
        assert!(parse_major("1.0001", cur("KWD"), MAX_MINOR, "amount").is_err());
        let e = parse_major("1000000.01", usd, 100_000_000, "amount").unwrap_err();
        assert!(e.message.contains("1000000.00 USD"), "{}", e.message);
    }

    #[test]
    fn currencies() {
        assert_eq!(cur("jpy").exponent(), 0);
        assert_eq!(cur("KWD").exponent(), 3);
        assert!(Currency::parse("XAU", "c").is_err(), "no minor unit");
        assert!(Currency::parse("ABC", "c").is_err());
        assert_eq!(
            Money {
                minor: 9700,
                currency: cur("USD")
            }
            .major_string(),
            "97.00"
        );
        assert_eq!(
            Money {
                minor: 1000,
                currency: cur("JPY")
            }
            .major_string(),
            "1000"
        );
        assert_eq!(
            Money {
                minor: 1,
                currency: cur("KWD")
            }
            .major_string(),
            "0.001"
        );
        assert_eq!(
            major_to_minor(Decimal::from(1_000_000), cur("USD")),
            100_000_000
        );
    }
}
