use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds to wait after the `attempts`-th failed try of something retried in the
/// background: 2, 4, 8, … doubling, never more than `cap_secs`.
pub const fn backoff_secs(attempts: i64, cap_secs: i64) -> i64 {
    let exp = if attempts < 1 {
        1
    } else if attempts > 12 {
        12
    } else {
        attempts
    };
    let delay = 1_i64 << exp;
    if delay > cap_secs { cap_secs } else { delay }
}

/// A UTC instant with microsecond precision. Stored as integer microseconds since the Unix
/// epoch on both databases, so ordering and range filters behave the same on SQLite (which
/// has no timestamp type) and PostgreSQL; shown to clients as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn add_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// RFC 3339, as it is shown: what is written is read back to the microsecond.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(Timestamp::from_micros(
            at.with_timezone(&Utc).timestamp_micros(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn renders_utc_with_micros() {
        assert_eq!(
            Timestamp::from_micros(1_700_000_000_123_456).to_rfc3339(),
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
