//! Days, weeks and months as the aggregates count them: whole UTC days since the Unix epoch,
//! weeks from Monday to Sunday (ISO 8601), calendar months numbered `year × 12 + month − 1`.

use chrono::{Datelike, Days, NaiveDate};
use hephaestus_core::Timestamp;

const DAY_MICROS: i64 = 86_400_000_000;

/// The UTC day a moment falls on.
pub fn day_of(t: Timestamp) -> i64 {
    t.as_micros().div_euclid(DAY_MICROS)
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// The date of a day number; `None` outside chrono's range.
pub fn date(day: i64) -> Option<NaiveDate> {
    let e = epoch();
    if day >= 0 {
        e.checked_add_days(Days::new(day.unsigned_abs()))
    } else {
        e.checked_sub_days(Days::new(day.unsigned_abs()))
    }
}

/// The day number of a date.
pub fn day(date: NaiveDate) -> i64 {
    (date - epoch()).num_days()
}

/// The day number of a `YYYY-MM-DD` date from 1970-01-01 to 9999-12-31.
pub fn parse_day(text: &str) -> Option<i64> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| text.len() == 10 && (1970..=9999).contains(&d.year()))
        .map(day)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_text(day: i64) -> String {
    date(day).map(|d| d.to_string()).unwrap_or_default()
}

/// The month a day falls in.
pub fn month_of(day: i64) -> i64 {
    date(day).map_or(0, |d| i64::from(d.year()) * 12 + i64::from(d.month0()))
}

/// The first day of a month.
pub fn month_start(month: i64) -> Option<i64> {
    let year = i32::try_from(month.div_euclid(12)).ok()?;
    let m = u32::try_from(month.rem_euclid(12)).ok()? + 1;
    NaiveDate::from_ymd_opt(year, m, 1).map(day)
}

/// `YYYY-MM` of a month.
pub fn month_text(month: i64) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// The Monday on or before a day (1970-01-01 was a Thursday).
pub fn week_start(day: i64) -> i64 {
    day - (day + 3).rem_euclid(7)
}

/// How a range of days is cut into periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// The first day of the period holding `day`.
    fn start_of(self, day: i64) -> i64 {
        match self {
            Interval::Day => day,
            Interval::Week => week_start(day),
            Interval::Month => month_start(month_of(day)).unwrap_or(day),
        }
    }

    /// The periods covering `from..=to`, as (first day, last day), cut to the range at
    /// both ends.
    pub fn periods(self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let next = match self {
                Interval::Day => start + 1,
                Interval::Week => self.start_of(start) + 7,
                Interval::Month => month_start(month_of(start) + 1).unwrap_or(to + 1),
            };
            out.push((start, (next - 1).min(to)));
            start = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i64 {
        day(s.parse().unwrap())
    }

    #[test]
    fn days_and_months() {
        assert_eq!(day_of(Timestamp::from_micros(0)), 0);
        assert_eq!(day_of(Timestamp::from_micros(-1)), -1);
        assert_eq!(day_text(d("2026-03-01")), "2026-03-01");
        assert_eq!(parse_day("2026-03-01"), Some(d("2026-03-01")));
        for bad in [
            "2026-3-1",
            "2026-02-30",
            "1969-12-31",
            "2026-03-01T00:00",
            "",
            "today",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(month_text(month_of(d("2026-03-31"))), "2026-03");
        assert_eq!(
            month_start(month_of(d("2024-02-29"))),
            Some(d("2024-02-01"))
        );
        assert_eq!(week_start(d("2026-01-04")), d("2025-12-29"), "a Sunday");
        assert_eq!(week_start(d("2025-12-29")), d("2025-12-29"), "a Monday");
    }

    #[test]
    fn periods_cover_the_range_once() {
        let (from, to) = (d("2026-01-30"), d("2026-03-02"));
        let months = Interval::Month.periods(from, to);
        assert_eq!(
            months,
            vec![
                (from, d("2026-01-31")),
                (d("2026-02-01"), d("2026-02-28")),
                (d("2026-03-01"), to)
            ]
        );
        let weeks = Interval::Week.periods(from, to);
        assert_eq!(weeks[0], (from, d("2026-02-01")));
        assert_eq!(weeks[1], (d("2026-02-02"), d("2026-02-08")));
        assert_eq!(weeks.last().unwrap().1, to);
        for w in weeks.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        assert_eq!(Interval::Day.periods(from, to).len(), 32);
        assert!(Interval::Day.periods(to, from).is_empty());
    }
}
