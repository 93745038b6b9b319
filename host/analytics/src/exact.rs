//! Exact decimal numbers for converted money: `units × 10^-scale` in an `i128`. A sum of
//! amounts converted at stored rates stays exact (a rate has at most 12 decimals, an amount
//! at most 15 digits), so `end = start + movements` holds in the reporting currency too, to
//! the last digit. Only ratios (percentages, ARPA, LTV) are rounded, half to even, to a
//! stated number of decimals. Every operation is checked: `None` means the figure does not
//! fit, never a wrong one.

use std::cmp::Ordering;
use std::fmt;

/// The largest scale kept; a product beyond it is refused rather than rounded.
const MAX_SCALE: u32 = 30;

#[derive(Debug, Clone, Copy)]
pub struct Exact {
    units: i128,
    scale: u32,
}

impl Exact {
    pub const ZERO: Exact = Exact { units: 0, scale: 0 };
    pub const ONE: Exact = Exact { units: 1, scale: 0 };

    pub fn new(units: i128, scale: u32) -> Self {
        Exact { units, scale }
    }

    /// An amount in minor units of a currency with `exponent` decimals, in major units.
    pub fn minor(minor: i64, exponent: u32) -> Self {
        Exact {
            units: i128::from(minor),
            scale: exponent,
        }
    }

    pub fn int(n: i64) -> Self {
        Exact::minor(n, 0)
    }

    /// Reads a plain decimal (`1.0832`, `-3`, `0.5`): no exponent, no sign but `-`.
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
            return None;
        }
        let scale = u32::try_from(frac.len()).ok().filter(|s| *s <= MAX_SCALE)?;
        let mut units: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            units = units.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        Some(Exact {
            units: if negative { -units } else { units },
            scale,
        })
    }

    fn rescaled(self, scale: u32) -> Option<i128> {
        let up = scale.checked_sub(self.scale)?;
        self.units.checked_mul(10_i128.checked_pow(up)?)
    }

    pub fn checked_add(self, o: Exact) -> Option<Exact> {
        let scale = self.scale.max(o.scale);
        Some(Exact {
            units: self.rescaled(scale)?.checked_add(o.rescaled(scale)?)?,
            scale,
        })
    }

    pub fn checked_sub(self, o: Exact) -> Option<Exact> {
        self.checked_add(o.checked_neg()?)
    }

    pub fn checked_mul(self, o: Exact) -> Option<Exact> {
        let scale = self.scale + o.scale;
        if scale > MAX_SCALE {
            return None;
        }
        Some(Exact {
            units: self.units.checked_mul(o.units)?,
            scale,
        })
    }

    pub fn checked_neg(self) -> Option<Exact> {
        Some(Exact {
            units: self.units.checked_neg()?,
            scale: self.scale,
        })
    }

    pub fn is_zero(self) -> bool {
        self.units == 0
    }

    pub fn signum(self) -> i32 {
        match self.units.cmp(&0) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    /// `self / by`, rounded half to even to `decimals` places; `None` when `by` is zero or
    /// the figure does not fit.
    pub fn div_round(self, by: Exact, decimals: u32) -> Option<Exact> {
        if by.units == 0 {
            return None;
        }
        // self / by × 10^d = (a / 10^sa) / (b / 10^sb) × 10^d = a × 10^(sb + d) / (b × 10^sa)
        let num = self
            .units
            .checked_mul(10_i128.checked_pow(by.scale.checked_add(decimals)?)?)?;
        let den = by.units.checked_mul(10_i128.checked_pow(self.scale)?)?;
        Some(Exact {
            units: div_half_even(num, den)?,
            scale: decimals,
        })
    }

    /// `part / whole` as a percentage rounded half to even to two decimals; `None` when
    /// `whole` is zero.
    pub fn percent(part: Exact, whole: Exact) -> Option<Exact> {
        part.checked_mul(Exact::int(100))?.div_round(whole, 2)
    }

    /// Rounded half to even to `decimals` places (never more precise than it is).
    pub fn round(self, decimals: u32) -> Option<Exact> {
        if decimals >= self.scale {
            return Some(self);
        }
        self.div_round(Exact::ONE, decimals)
    }

    /// The decimal text with at least `min_decimals` places, and more only where the value
    /// needs them: `100.00`, `15.015`, `-0.50`. A JSON number as it stands.
    pub fn to_text(self, min_decimals: u32) -> String {
        // Drop trailing zeros beyond `min_decimals`, pad up to it.
        let mut units = self.units;
        let mut scale = self.scale;
        while scale > min_decimals && units % 10 == 0 {
            units /= 10;
            scale -= 1;
        }
        let negative = units < 0;
        let mut digits = units.unsigned_abs().to_string();
        let mut scale = scale as usize;
        let pad = min_decimals as usize;
        while scale < pad {
            digits.push('0');
            scale += 1;
        }
        if digits.len() <= scale {
            digits = format!("{}{digits}", "0".repeat(scale + 1 - digits.len()));
        }
        let (int, frac) = digits.split_at(digits.len() - scale);
        let sign = if negative { "-" } else { "" };
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// The value rounded half to even to `decimals` places, as an integer count of
    /// `10^-decimals`.
    pub fn scaled(self, decimals: u32) -> Option<i128> {
        self.round(decimals)?.rescaled(decimals)
    }

    /// In minor units of a currency with `exponent` decimals, if it is a whole number of them.
    pub fn to_minor(self, exponent: u32) -> Option<i64> {
        let r = self.round(exponent)?;
        if r.checked_sub(self)?.is_zero() {
            i64::try_from(r.rescaled(exponent)?).ok()
        } else {
            None
        }
    }
}

impl PartialEq for Exact {
    fn eq(&self, o: &Exact) -> bool {
        self.checked_sub(*o).is_some_and(Exact::is_zero)
    }
}

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(0))
    }
}

/// `num / den` rounded half to even.
fn div_half_even(num: i128, den: i128) -> Option<i128> {
    let (num, den) = if den < 0 {
        (num.checked_neg()?, den.checked_neg()?)
    } else {
        (num, den)
    };
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    // q is the floor; compare the remainder with half of den.
    let twice = r.checked_mul(2)?;
    Some(match twice.cmp(&den) {
        Ordering::Less => q,
        Ordering::Greater => q + 1,
        Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Exact {
        Exact::parse(s).unwrap()
    }

    #[test]
    fn parses_and_writes_back() {
        for (text, min, out) in [
            ("1.0832", 0, "1.0832"),
            ("100", 2, "100.00"),
            ("15.0150", 2, "15.015"),
            ("-0.5", 2, "-0.50"),
            ("0.001", 2, "0.001"),
            ("0", 2, "0.00"),
            ("-3", 0, "-3"),
        ] {
            assert_eq!(d(text).to_text(min), out, "{text}");
        }
        for bad in ["", "-", "1.", ".5", "1e3", "+1", "1.2.3", "abc", " 1"] {
            assert!(Exact::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn converted_sums_stay_exact() {
        // 10.01 EUR at 1.0832 is 10.842832 USD, and so is the sum of its parts.
        let rate = d("1.0832");
        let whole = Exact::minor(1001, 2).checked_mul(rate).unwrap();
        let parts = Exact::minor(1000, 2)
            .checked_mul(rate)
            .unwrap()
            .checked_add(Exact::minor(1, 2).checked_mul(rate).unwrap())
            .unwrap();
        assert_eq!(whole.to_text(2), "10.842832");
        assert_eq!(whole, parts);
        assert_eq!(
            Exact::minor(-250, 2)
                .checked_add(Exact::minor(1, 3))
                .unwrap()
                .to_text(2),
            "-2.499"
        );
    }

    #[test]
    fn ratios_round_half_to_even() {
        assert_eq!(Exact::percent(d("1"), d("8")).unwrap().to_text(2), "12.50");
        assert_eq!(Exact::percent(d("1"), d("3")).unwrap().to_text(2), "33.33");
        assert_eq!(Exact::percent(d("2"), d("3")).unwrap().to_text(2), "66.67");
        assert_eq!(
            Exact::percent(d("-1"), d("3")).unwrap().to_text(2),
            "-33.33"
        );
        assert!(Exact::percent(d("1"), Exact::ZERO).is_none());
        assert_eq!(d("0.125").round(2).unwrap().to_text(2), "0.12");
        assert_eq!(d("0.135").round(2).unwrap().to_text(2), "0.14");
        assert_eq!(d("-0.125").round(2).unwrap().to_text(2), "-0.12");
        assert_eq!(
            Exact::ONE.div_round(d("1.0832"), 12).unwrap().to_text(0),
            "0.923190546529"
        );
        assert_eq!(
            d("100.00").div_round(d("3"), 2).unwrap().to_text(2),
            "33.33"
        );
    }

    #[test]
    fn whole_minor_units_only() {
        assert_eq!(d("12.34").to_minor(2), Some(1234));
        assert_eq!(d("12.345").to_minor(2), None);
        assert_eq!(d("7").to_minor(0), Some(7));
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        let big = Exact::new(i128::MAX / 2, 0);
        assert!(big.checked_mul(Exact::int(3)).is_none());
        assert!(
            big.checked_add(big)
                .and_then(|b| b.checked_add(big))
                .is_none()
        );
        assert!(Exact::new(1, 20).checked_mul(Exact::new(1, 20)).is_none());
    }
}
