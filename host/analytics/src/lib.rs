//! Revenue analytics: MRR and its movements, revenue, customers, cohorts, computed from the
//! domain event log and kept as daily aggregates, so a dashboard's answer costs a few sums
//! however long the history.
//!
//! - [`engine`]: what each event adds (the MRR movement rules live here); pure.
//! - [`consumer`]: the `analytics` consumer of the event log that keeps the aggregates
//!   current, counting each event exactly once, and the rebuild from the whole log.
//! - [`metrics`]: the dashboard's figures read back from the aggregates, and their
//!   definitions.
//! - [`forecast`]: the MRR forecast (Holt's linear trend), pure integer arithmetic.
//! - [`exact`]: exact decimals, so converted sums add up to the last digit.
//! - [`fx`]: conversion into the reporting currency through the stored rates.
//! - [`calendar`]: the days, weeks and months figures are cut into.
//!
//! Nothing here knows about HTTP: the API's dashboard routes call [`metrics`] and render
//! what it returns.

pub mod calendar;
pub mod consumer;
pub mod engine;
pub mod exact;
pub mod forecast;
pub mod fx;
pub mod metrics;

pub use consumer::{AnalyticsError, Follower, Freshness, Rebuilt, rebuild};
pub use exact::Exact;
