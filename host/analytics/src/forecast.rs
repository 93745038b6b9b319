//! The MRR forecast: Holt's linear trend method (double exponential smoothing) over the
//! month-end MRR series, with a 95 % prediction interval. Pure integer arithmetic on the
//! figures in hundredths of a minor unit, so the same history always gives the same
//! forecast, to the digit, on every machine.
//!
//! - Level `l_t = α y_t + (1 − α)(l_{t−1} + b_{t−1})`, trend `b_t = β (l_t − l_{t−1}) +
//!   (1 − β) b_{t−1}`, started from `l_0 = y_0`, `b_0 = y_1 − y_0`.
//! - `α` and `β` are the pair from {0.1, 0.2, …, 0.9} with the smallest sum of squared
//!   one-step-ahead errors over the history (ties: the smaller `α`, then `β`).
//! - The forecast `h` months ahead is `l_T + h b_T`; its interval is ± 1.96 σ_h with
//!   `σ_h² = σ² (1 + (h − 1)(α² + α β h + β² h (2h − 1) / 6))` (Hyndman et al., the
//!   additive-trend ETS(A,A,N) model), `σ²` the mean squared one-step error. A lower bound
//!   below zero is cut to zero: MRR is never negative.
//!
//! At least [`MIN_POINTS`] months of history are needed; with fewer there is no forecast.

/// Months of history the method needs.
pub const MIN_POINTS: usize = 3;
/// Steps of the smoothing parameters, in tenths.
const GRID: std::ops::RangeInclusive<i128> = 1..=9;

/// One forecast month, in the series' units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Months after the last point of the history (1, 2, 3).
    pub ahead: i64,
    pub value: i128,
    pub lower: i128,
    pub upper: i128,
}

/// What the method chose and forecast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forecast {
    /// The smoothing parameters, in tenths.
    pub alpha_tenths: i128,
    pub beta_tenths: i128,
    pub points: Vec<Point>,
}

/// `a / b` rounded half away from zero (`b > 0`).
fn div_round(a: i128, b: i128) -> i128 {
    let q = a / b;
    let r = a % b;
    if 2 * r.abs() >= b { q + a.signum() } else { q }
}

/// The smoothed level and trend after the whole history, and the sum of squared one-step
/// errors, for `alpha` and `beta` in tenths.
fn smooth(ys: &[i128], alpha: i128, beta: i128) -> Option<(i128, i128, i128)> {
    let (mut level, mut trend) = (ys[0], ys[1].checked_sub(ys[0])?);
    let mut sse: i128 = 0;
    for &y in &ys[1..] {
        let predicted = level.checked_add(trend)?;
        let error = y.checked_sub(predicted)?;
        sse = sse.checked_add(error.checked_mul(error)?)?;
        let next = div_round(
            alpha
                .checked_mul(y)?
                .checked_add((10 - alpha).checked_mul(predicted)?)?,
            10,
        );
        trend = div_round(
            beta.checked_mul(next.checked_sub(level)?)?
                .checked_add((10 - beta).checked_mul(trend)?)?,
            10,
        );
        level = next;
    }
    Some((level, trend, sse))
}

/// The integer square root (floor).
fn isqrt(n: i128) -> i128 {
    if n <= 0 {
        return 0;
    }
    let mut x = n;
    let mut y = (x + 1) / 2;
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// Forecasts `months` points after `ys` (at least [`MIN_POINTS`]); `None` with less
/// history, or if the figures are too large to square.
pub fn holt(ys: &[i128], months: i64) -> Option<Forecast> {
    if ys.len() < MIN_POINTS {
        return None;
    }
    let mut best: Option<(i128, i128, i128, i128, i128)> = None;
    for alpha in GRID {
        for beta in GRID {
            let (level, trend, sse) = smooth(ys, alpha, beta)?;
            if best.is_none_or(|b| sse < b.4) {
                best = Some((alpha, beta, level, trend, sse));
            }
        }
    }
    let (alpha, beta, level, trend, sse) = best?;
    // One-step errors: one per point after the first.
    let n = i128::try_from(ys.len() - 1).ok()?;
    let points = (1..=months)
        .map(|h| {
            let h = i128::from(h);
            let value = level.checked_add(h.checked_mul(trend)?)?;
            // With α = a/10 and β = b/10: σ_h² × 60000 = σ² (60000 + (h − 1)(600a² + 600abh
            // + 100b²h(2h − 1))).
            let (a, b) = (alpha, beta);
            let spread =
                60_000 + (h - 1) * (600 * a * a + 600 * a * b * h + 100 * b * b * h * (2 * h - 1));
            let variance = sse
                .checked_mul(spread)?
                .checked_div(n.checked_mul(60_000)?)?;
            // 1.96 σ_h
            let half = div_round(196 * isqrt(variance.checked_mul(10_000)?), 10_000);
            Some(Point {
                ahead: i64::try_from(h).ok()?,
                value,
                lower: value.checked_sub(half)?.max(0),
                upper: value.checked_add(half)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Forecast {
        alpha_tenths: alpha,
        beta_tenths: beta,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_continues_exactly_with_no_spread() {
        let ys: Vec<i128> = (0..12).map(|m| 10_000 + 500 * m).collect();
        let f = holt(&ys, 3).unwrap();
        let values: Vec<i128> = f.points.iter().map(|p| p.value).collect();
        assert_eq!(values, vec![16_000, 16_500, 17_000]);
        assert!(
            f.points
                .iter()
                .all(|p| p.lower == p.value && p.upper == p.value)
        );
    }

    #[test]
    fn a_flat_series_stays_flat() {
        let f = holt(&[7_000, 7_000, 7_000, 7_000], 3).unwrap();
        assert!(f.points.iter().all(|p| p.value == 7_000));
    }

    #[test]
    fn noise_widens_the_interval_with_the_horizon() {
        let ys = [
            10_000, 10_900, 11_800, 13_100, 13_700, 15_200, 15_800, 17_100,
        ];
        let f = holt(&ys, 3).unwrap();
        for w in f.points.windows(2) {
            assert!(w[1].upper - w[1].lower > w[0].upper - w[0].lower, "{f:?}");
            assert!(w[1].value > w[0].value, "a rising trend: {f:?}");
        }
        for p in &f.points {
            assert!(p.lower < p.value && p.value < p.upper, "{p:?}");
        }
        // Deterministic: the same history, the same forecast.
        assert_eq!(holt(&ys, 3), Some(f));
    }

    /// Checked against a hand computation: α = 0.1, β = 0.1 over 0, 10, 30.
    #[test]
    fn smoothing_by_hand() {
        // l0 = 0, b0 = 10. y1 = 10: predicted 10, error 0, l1 = 10, b1 = 10.
        // y2 = 30: predicted 20, error 10, l2 = 0.1·30 + 0.9·20 = 21, b2 = 0.1·11 + 0.9·10 = 10.1 → 10.
        assert_eq!(smooth(&[0, 10, 30], 1, 1), Some((21, 10, 100)));
    }

    #[test]
    fn too_little_history_gives_no_forecast() {
        assert!(holt(&[1, 2], 3).is_none());
        assert!(holt(&[], 3).is_none());
    }

    #[test]
    fn square_roots() {
        for (n, r) in [
            (0, 0),
            (1, 1),
            (3, 1),
            (4, 2),
            (99, 9),
            (100, 10),
            (10_i128.pow(30), 10_i128.pow(15)),
        ] {
            assert_eq!(isqrt(n), r, "{n}");
        }
    }
}
