//! Erasing a customer's copy at the gateway. Erasing a customer blanks our record and, in
//! the same transaction, marks the gateway's mirror of it due for erasure
//! ([`gateway_ids::request_erasure`]). This pass, run by the background jobs of every host
//! and once right after an erasure commits, claims due mirrors with a lease held in the
//! database, asks the gateway to delete its customer (never inside a transaction), and
//! records the outcome: erased, or the next attempt due after a delay that doubles with
//! each failure, up to an hour. It never gives up: the copy holds personal data. A customer
//! the gateway no longer knows counts as erased.
//!
//! The erasure's own `customer.erased` event says what happened; the gateway's deletion
//! adds no domain event.

use hephaestus_core::Timestamp;
use hephaestus_store::gateway_ids;
use hephaestus_store::{Store, StoreError};

use crate::gateway::Gateway;

/// How long a claimed mirror is left to its host: well over the longest gateway call.
pub const LEASE_SECS: i64 = 120;
/// The longest wait between two attempts.
const MAX_DELAY_SECS: i64 = 60 * 60;

/// What an erasure pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub claimed: usize,
    pub erased: usize,
    pub failed: usize,
}

/// Seconds before another attempt, after `attempts` failed ones: 2, 4, 8, … up to an hour.
fn retry_delay(attempts: i64) -> i64 {
    hephaestus_core::time::backoff_secs(attempts, MAX_DELAY_SECS)
}

/// The Idempotency-Key of every attempt to delete the customer's copy.
pub fn idempotency_key(customer_id: &str) -> String {
    format!("hephaestus-erase-{customer_id}")
}

/// One pass: at most `limit` due mirrors kept by `gateway`, deleted there.
pub async fn run_due(
    store: &Store,
    gateway: &dyn Gateway,
    limit: i64,
) -> Result<Report, StoreError> {
    let due = gateway_ids::claim_erasures(store, gateway.name(), LEASE_SECS, limit).await?;
    let mut report = Report {
        claimed: due.len(),
        ..Report::default()
    };
    for e in due {
        let deleted = gateway
            .delete_customer(
                e.gateway_customer_id.clone(),
                idempotency_key(&e.customer_id),
            )
            .await;
        match deleted {
            Ok(()) => {
                gateway_ids::erased(store, gateway.name(), &e.customer_id).await?;
                report.erased += 1;
            }
            Err(error) => {
                let delay = retry_delay(e.attempts);
                tracing::warn!(customer = %e.customer_id, attempt = e.attempts, error = %error, retry_in_secs = delay, "could not erase the gateway's copy of a customer; will retry");
                let retry_at = Timestamp::now().add_secs(delay);
                gateway_ids::erase_failed(
                    store,
                    gateway.name(),
                    &e.customer_id,
                    &error.to_string(),
                    retry_at,
                )
                .await?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), 2);
        assert_eq!(retry_delay(2), 4);
        assert_eq!(retry_delay(11), 2048);
        assert_eq!(retry_delay(12), 3600);
        assert_eq!(retry_delay(500), 3600);
        assert_eq!(retry_delay(0), 2);
    }
}
