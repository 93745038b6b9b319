//! Integer money maths. Amounts are minor units of a currency (`Money::amount_minor`);
//! nothing here uses floating point, and every division names its rounding.
//!
//! Percentages are given in basis points (1/100 of a percent: `1000` is 10%, `1250` is
//! 12.5%), like the `…-basis-points` fields of the WIT records.

use crate::Money;

/// Basis points in 100%.
pub const BASIS_POINTS_PER_UNIT: i64 = 10_000;

/// How to round the result of a division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// To the nearest; a half goes away from zero (2.5 → 3, -2.5 → -3). What people expect
    /// for prices and discounts.
    HalfUp,
    /// To the nearest; a half goes to the even neighbour (2.5 → 2, 3.5 → 4).
    HalfEven,
    /// Toward zero (2.9 → 2, -2.9 → -2).
    Down,
    /// Away from zero (2.1 → 3, -2.1 → -3).
    Up,
}

/// `numerator / denominator` rounded as asked. `None` when `denominator` is zero.
pub fn div_round(numerator: i128, denominator: i128, rounding: Rounding) -> Option<i128> {
    if denominator == 0 {
        return None;
    }
    // Work with a positive denominator; the quotient's sign follows the numerator.
    let (n, d) = if denominator < 0 {
        (-numerator, -denominator)
    } else {
        (numerator, denominator)
    };
    let negative = n < 0;
    let n_abs = n.unsigned_abs();
    let d_abs = d.unsigned_abs();
    let q = n_abs / d_abs;
    let r = n_abs % d_abs;
    let bump = match rounding {
        Rounding::Down => false,
        Rounding::Up => r != 0,
        Rounding::HalfUp => r * 2 >= d_abs && r != 0,
        Rounding::HalfEven => r * 2 > d_abs || (r * 2 == d_abs && q % 2 == 1),
    };
    let q = (q + u128::from(bump)) as i128;
    Some(if negative { -q } else { q })
}

/// `amount_minor × numerator / denominator`, rounded as asked and saturated to `i64`.
/// `None` when `denominator` is zero.
pub fn mul_div(
    amount_minor: i64,
    numerator: i64,
    denominator: i64,
    rounding: Rounding,
) -> Option<i64> {
    let q = div_round(
        i128::from(amount_minor) * i128::from(numerator),
        i128::from(denominator),
        rounding,
    )?;
    Some(saturate(q))
}

/// `basis_points` of `amount_minor` (e.g. 10% of 99.95 = `percent_of(9995, 1000, HalfUp)`
/// = 1000, i.e. 10.00 after rounding 999.5 up).
pub fn percent_of(amount_minor: i64, basis_points: i64, rounding: Rounding) -> i64 {
    mul_div(amount_minor, basis_points, BASIS_POINTS_PER_UNIT, rounding)
        .expect("non-zero denominator")
}

/// The change from `from` to `to` in basis points (`from` 100, `to` 105 → 500), rounded half
/// up and saturated to `i32`. `None` when `from` is zero.
pub fn change_basis_points(from: i64, to: i64) -> Option<i32> {
    let delta = i128::from(to) - i128::from(from);
    let bp = div_round(
        delta * i128::from(BASIS_POINTS_PER_UNIT),
        i128::from(from),
        Rounding::HalfUp,
    )?;
    Some(bp.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32)
}

/// A basis-point figure as a percentage without trailing zeros: 1000 → "10%", 1250 →
/// "12.5%", 505 → "5.05%", -250 → "-2.5%".
pub fn format_percent(basis_points: i64) -> String {
    let sign = if basis_points < 0 { "-" } else { "" };
    let abs = basis_points.unsigned_abs();
    let (whole, frac) = (abs / 100, abs % 100);
    match frac {
        0 => format!("{sign}{whole}%"),
        f if f % 10 == 0 => format!("{sign}{whole}.{}%", f / 10),
        f => format!("{sign}{whole}.{f:02}%"),
    }
}

/// The number of decimal places (ISO 4217 minor-unit exponent) of a currency: 2 for most,
/// 0 for e.g. JPY and KRW, 3 for e.g. KWD and BHD. Unknown codes are assumed to have 2.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `major` whole units of `currency` in minor units (5000 USD → 500000; 5000 JPY → 5000),
/// saturated to `i64`.
pub fn major_to_minor(major: i64, currency: &str) -> i64 {
    major.saturating_mul(10_i64.pow(currency_exponent(currency)))
}

/// `money` as text with its currency's decimals: `{9700, "USD"}` → "97.00 USD",
/// `{9700, "JPY"}` → "9700 JPY".
pub fn format(money: &Money) -> String {
    let exp = currency_exponent(&money.currency);
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    let abs = money.amount_minor.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs} {}", money.currency);
    }
    let scale = 10_u64.pow(exp);
    format!(
        "{sign}{}.{:0width$} {}",
        abs / scale,
        abs % scale,
        money.currency,
        width = exp as usize
    )
}

fn saturate(value: i128) -> i64 {
    value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use Rounding::*;

    #[test]
    fn rounding_modes() {
        assert_eq!(div_round(25, 10, HalfUp), Some(3));
        assert_eq!(div_round(-25, 10, HalfUp), Some(-3));
        assert_eq!(div_round(24, 10, HalfUp), Some(2));
        assert_eq!(div_round(25, 10, HalfEven), Some(2));
        assert_eq!(div_round(35, 10, HalfEven), Some(4));
        assert_eq!(div_round(29, 10, Down), Some(2));
        assert_eq!(div_round(-29, 10, Down), Some(-2));
        assert_eq!(div_round(21, 10, Up), Some(3));
        assert_eq!(div_round(21, -10, Up), Some(-3));
        assert_eq!(div_round(1, 0, Up), None);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_of(9995, 1000, HalfUp), 1000);
        assert_eq!(percent_of(9995, 1000, Down), 999);
        assert_eq!(percent_of(i64::MAX, 20_000, HalfUp), i64::MAX);
        assert_eq!(change_basis_points(100, 105), Some(500));
        assert_eq!(change_basis_points(3, 2), Some(-3333));
        assert_eq!(change_basis_points(0, 2), None);
        assert_eq!(format_percent(1000), "10%");
        assert_eq!(format_percent(1250), "12.5%");
        assert_eq!(format_percent(505), "5.05%");
        assert_eq!(format_percent(-250), "-2.5%");
    }

    #[test]
    fn currencies() {
        assert_eq!(major_to_minor(5000, "USD"), 500_000);
        assert_eq!(major_to_minor(5000, "JPY"), 5000);
        assert_eq!(major_to_minor(5000, "KWD"), 5_000_000);
        assert_eq!(format(&crate::money(9700, "USD")), "97.00 USD");
        assert_eq!(format(&crate::money(-5, "USD")), "-0.05 USD");
        assert_eq!(format(&crate::money(9700, "JPY")), "9700 JPY");
        assert_eq!(format(&crate::money(9700, "KWD")), "9.700 KWD");
    }
}
