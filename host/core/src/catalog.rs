//! The catalog: products, and the prices they are sold at.

use std::fmt;
use std::str::FromStr;

use crate::Timestamp;
use crate::customer::Metadata;
use crate::money::Money;
use crate::validation::ValidationError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    /// The most of this interval one billing period may span: periods are at most a year.
    pub fn max_count(self) -> i64 {
        match self {
            Interval::Day => 365,
            Interval::Week => 52,
            Interval::Month => 12,
            Interval::Year => 1,
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Interval::Day),
            "week" => Ok(Interval::Week),
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            other => Err(format!(
                "unknown interval `{other}` (day, week, month or year)"
            )),
        }
    }
}

/// How often a recurring price bills: every `count` `interval`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recurring {
    pub interval: Interval,
    pub count: i64,
}

impl Recurring {
    pub fn new(interval: Interval, count: i64) -> Result<Self, ValidationError> {
        if !(1..=interval.max_count()).contains(&count) {
            return Err(ValidationError::new(
                "recurring.interval_count",
                format!(
                    "must be 1 to {} for `{interval}` (a period is at most a year)",
                    interval.max_count()
                ),
            ));
        }
        Ok(Recurring { interval, count })
    }
}

/// The longest free trial a price may offer.
pub const MAX_TRIAL_DAYS: i64 = 730;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub id: String,
    pub product_id: String,
    pub unit_amount: Money,
    /// `None` for a one-time price.
    pub recurring: Option<Recurring>,
    pub trial_days: Option<i64>,
    pub active: bool,
    /// The price this one replaced, and the one that replaced it.
    pub replaces: Option<String>,
    pub replaced_by: Option<String>,
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Price {
    pub fn kind(&self) -> &'static str {
        if self.recurring.is_some() {
            "recurring"
        } else {
            "one_time"
        }
    }
}
