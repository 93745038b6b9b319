//! The sandbox gateway: a payment processor in a box, for running and testing with no
//! account. It keeps its own books (`sandbox_charges`, `sandbox_refunds`) the way a remote
//! processor would — its own ids, its own idempotency, its own refund limits — and answers
//! the test payment methods the way Stripe's test mode does:
//!
//! | payment method | result |
//! |---|---|
//! | `pm_card_visa`, `pm_card_visa_debit`, `pm_card_mastercard`, `pm_card_amex` | succeeds |
//! | `pm_card_chargeDeclined` | declined, `generic_decline` |
//! | `pm_card_chargeDeclinedInsufficientFunds` | declined, `insufficient_funds` |
//! | `pm_card_chargeDeclinedLostCard` | declined, `lost_card` |
//! | `pm_card_chargeDeclinedStolenCard` | declined, `stolen_card` |
//! | `pm_card_chargeDeclinedExpiredCard` | declined, `expired_card` |
//! | `pm_card_chargeDeclinedIncorrectCvc` | declined, `incorrect_cvc` |
//! | `pm_card_chargeDeclinedProcessingError` | declined, `processing_error` |
//! | `pm_card_chargeDeclinedFraudulent` | declined, `fraudulent` |
//! | `pm_card_createDispute` | succeeds, then is disputed as fraudulent (funds withdrawn) |
//! | `pm_card_authenticationRequired` | needs the customer's action (3-D Secure); completed or failed with [`SandboxGateway::complete_action`]; off-session (renewals) declined with `authentication_required` |
//!
//! Anything else is an unknown payment method, as Stripe answers it.

use futures::future::BoxFuture;
use hephaestus_core::Timestamp;
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{Currency, Money};
use hephaestus_store::batch::{BatchStats, Batchable, Batcher};
use hephaestus_store::{Backend, Store, StoreError, Tx, with_read, with_tx};
use sqlx::PgConnection;

use crate::disputes::DisputeState;
use crate::gateway::{
    Charge, ChargeRequest, ChargeStatus, Gateway, GatewayError, GatewayRefund, RefundRequest,
};

/// What a test payment method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    Decline(&'static str),
    RequireAction,
    /// Succeeds, and the cardholder disputes it at once (`fraudulent`).
    SucceedThenDispute,
}

/// The test payment methods, and what each does.
pub const PAYMENT_METHODS: &[(&str, Behaviour)] = &[
    ("pm_card_visa", Behaviour::Succeed),
    ("pm_card_visa_debit", Behaviour::Succeed),
    ("pm_card_mastercard", Behaviour::Succeed),
    ("pm_card_amex", Behaviour::Succeed),
    (
        "pm_card_chargeDeclined",
        Behaviour::Decline("generic_decline"),
    ),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        Behaviour::Decline("insufficient_funds"),
    ),
    (
        "pm_card_chargeDeclinedLostCard",
        Behaviour::Decline("lost_card"),
    ),
    (
        "pm_card_chargeDeclinedStolenCard",
        Behaviour::Decline("stolen_card"),
    ),
    (
        "pm_card_chargeDeclinedExpiredCard",
        Behaviour::Decline("expired_card"),
    ),
    (
        "pm_card_chargeDeclinedIncorrectCvc",
        Behaviour::Decline("incorrect_cvc"),
    ),
    (
        "pm_card_chargeDeclinedProcessingError",
        Behaviour::Decline("processing_error"),
    ),
    (
        "pm_card_chargeDeclinedFraudulent",
        Behaviour::Decline("fraudulent"),
    ),
    ("pm_card_authenticationRequired", Behaviour::RequireAction),
    ("pm_card_createDispute", Behaviour::SucceedThenDispute),
];

pub fn behaviour(payment_method: &str) -> Option<Behaviour> {
    PAYMENT_METHODS
        .iter()
        .find(|(pm, _)| *pm == payment_method)
        .map(|(_, b)| *b)
}

fn decline_message(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "lost_card" | "stolen_card" | "generic_decline" | "fraudulent" => "Your card was declined.",
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "Your card's security code is incorrect.",
        "processing_error" => "An error occurred while processing your card. Try again.",
        "authentication_required" => "The customer did not complete authentication.",
        _ => "Your card was declined.",
    }
}

#[derive(Debug, Clone)]
pub struct SandboxGateway {
    store: Store,
    /// On PostgreSQL, new charges from concurrent requests share one `INSERT`.
    charges: Option<Batcher<ChargeRow>>,
}

impl SandboxGateway {
    /// Needs a tokio runtime: on PostgreSQL it starts the charges' batch workers.
    pub fn new(store: Store) -> Self {
        let charges = match store.backend() {
            Backend::Postgres(pool) => Some(Batcher::start(pool.clone())),
            Backend::Sqlite(_) => None,
        };
        Self { store, charges }
    }

    /// How PostgreSQL's charges were batched so far; `None` on SQLite.
    pub fn charge_batches(&self) -> Option<BatchStats> {
        self.charges.as_ref().map(Batcher::stats)
    }

    /// Writes a new charge unless its idempotency key has one already. `true` if it is new.
    async fn insert_charge(&self, row: ChargeRow) -> Result<bool, StoreError> {
        if let Some(charges) = &self.charges {
            return charges.submit(row).await;
        }
        // SQLite: one statement in the writer's next group commit.
        self.store
            .write_statement(move |tx| {
                Box::pin(async move {
                    let rows = std::slice::from_ref(&row);
                    Ok(with_tx!(&mut *tx, |c| {
                        let mut q = sqlx::QueryBuilder::new("");
                        push_charges(&mut q, rows);
                        q.build().execute(c).await.map(|r| r.rows_affected())
                    })? == 1)
                })
            })
            .await
    }
}

/// Appends the `INSERT` of new charges to `q`; a charge whose idempotency key is taken (by
/// an earlier charge, or one before it in `rows`) is left out.
fn push_charges<DB: sqlx::Database>(q: &mut sqlx::QueryBuilder<DB>, rows: &[ChargeRow])
where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(
        "INSERT INTO sandbox_charges (id, idempotency_key, amount_minor, currency, \
         payment_method, status, decline_code, amount_refunded_minor, created_at, updated_at) ",
    );
    q.push_values(rows, |mut b, row| {
        b.push_bind(row.id.clone())
            .push_bind(row.idempotency_key.clone())
            .push_bind(row.amount_minor)
            .push_bind(row.currency.clone())
            .push_bind(row.payment_method.clone())
            .push_bind(row.status.clone())
            .push_bind(row.decline_code.clone())
            .push_bind(row.amount_refunded_minor)
            .push_bind(row.created_at)
            .push_bind(row.created_at);
    });
    q.push(" ON CONFLICT (idempotency_key) DO NOTHING");
}

/// New charges of concurrent requests, as one statement on PostgreSQL: each learns whether
/// it went in or its idempotency key was taken.
impl Batchable for ChargeRow {
    type Out = bool;

    fn run<'c>(
        conn: &'c mut PgConnection,
        jobs: &'c [Self],
    ) -> BoxFuture<'c, Result<Vec<bool>, sqlx::Error>> {
        Box::pin(async move {
            let mut q = sqlx::QueryBuilder::new("");
            push_charges(&mut q, jobs);
            q.push(" RETURNING id");
            let inserted: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
            Ok(jobs.iter().map(|j| inserted.contains(&j.id)).collect())
        })
    }

    fn weight(&self) -> usize {
        1
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ChargeRow {
    id: String,
    idempotency_key: String,
    amount_minor: i64,
    currency: String,
    payment_method: String,
    status: String,
    decline_code: Option<String>,
    amount_refunded_minor: i64,
    created_at: i64,
}

impl ChargeRow {
    fn to_charge(&self) -> Result<Charge, GatewayError> {
        let currency = Currency::parse(&self.currency, "currency")
            .map_err(|e| GatewayError::Unavailable(format!("sandbox ledger: {e}")))?;
        let status = match self.status.as_str() {
            "succeeded" => ChargeStatus::Succeeded,
            "requires_action" => ChargeStatus::RequiresAction,
            "processing" => ChargeStatus::Processing,
            _ => ChargeStatus::Declined,
        };
        Ok(Charge {
            id: self.id.clone(),
            amount: Money {
                minor: self.amount_minor,
                currency,
            },
            status,
            failure_message: self
                .decline_code
                .as_deref()
                .map(|c| decline_message(c).to_string()),
            decline_code: self.decline_code.clone(),
            amount_refunded_minor: self.amount_refunded_minor,
            dispute: None,
        })
    }
}

/// A charge made with the dispute test method has drawn its dispute by the time it is read.
fn with_dispute(mut charge: Charge, behaviour: Behaviour) -> Result<Charge, GatewayError> {
    if behaviour == Behaviour::SucceedThenDispute {
        charge.dispute = Some(DisputeState {
            gateway_id: format!("dp_sbx_{}", &charge.id[prefix::SANDBOX_CHARGE.len() + 1..]),
            amount_minor: charge.amount.minor,
            reason: Some("fraudulent".into()),
            status: "needs_response".into(),
            withdrawn_minor: charge.amount.minor,
            reinstated_minor: 0,
        });
    }
    Ok(charge)
}

const CHARGE_COLUMNS: &str = "id, idempotency_key, amount_minor, currency, payment_method, status, \
     decline_code, amount_refunded_minor, created_at";

async fn charge_by(
    tx: &mut Tx,
    column: &str,
    value: &str,
) -> Result<Option<ChargeRow>, StoreError> {
    let sql = format!("SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE {column} = $1");
    Ok(with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_optional(c)
        .await)?)
}

fn store_err(e: StoreError) -> GatewayError {
    GatewayError::Unavailable(format!("sandbox ledger: {e}"))
}

impl Gateway for SandboxGateway {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<Charge, GatewayError>> {
        Box::pin(async move {
            let Some(behaviour) = behaviour(&req.payment_method) else {
                return Err(GatewayError::InvalidRequest {
                    param: Some("payment_method"),
                    message: format!(
                        "No such PaymentMethod: '{}'; the sandbox accepts the test methods listed in the README",
                        req.payment_method
                    ),
                });
            };
            let (status, decline) = match behaviour {
                Behaviour::Succeed | Behaviour::SucceedThenDispute => ("succeeded", None),
                Behaviour::Decline(code) => ("failed", Some(code.to_string())),
                Behaviour::RequireAction if req.off_session => {
                    ("failed", Some("authentication_required".to_string()))
                }
                Behaviour::RequireAction => ("requires_action", None),
            };
            let new = ChargeRow {
                id: ids::new_id(prefix::SANDBOX_CHARGE),
                idempotency_key: req.idempotency_key.clone(),
                amount_minor: req.amount.minor,
                currency: req.amount.currency.code().to_string(),
                payment_method: req.payment_method.clone(),
                status: status.to_string(),
                decline_code: decline,
                amount_refunded_minor: 0,
                created_at: Timestamp::now().as_micros(),
            };
            // Committed on its own (the host records the payment in its own transaction
            // next), as a remote processor's ledger would be.
            let row = if self.insert_charge(new.clone()).await.map_err(store_err)? {
                Ok(new)
            } else {
                // The same idempotency key answers with the first charge, as long as it is
                // the same request. The conflicting insert has committed: PostgreSQL's
                // ON CONFLICT waits for it, and SQLite has one writer.
                let sql = format!(
                    "SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE idempotency_key = $1"
                );
                let existing: ChargeRow =
                    with_read!(self.store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(&req.idempotency_key)
                        .fetch_optional(e)
                        .await)
                    .map_err(|e| store_err(e.into()))?
                    .ok_or_else(|| {
                        store_err(StoreError::Corrupt("sandbox charge vanished".into()))
                    })?;
                let same = existing.amount_minor == req.amount.minor
                    && existing.currency == req.amount.currency.code()
                    && existing.payment_method == req.payment_method;
                if same { Ok(existing) } else { Err(()) }
            };
            match row {
                Ok(row) => with_dispute(row.to_charge()?, behaviour),
                Err(()) => Err(GatewayError::InvalidRequest {
                    param: None,
                    message: "this idempotency key was used for a different charge".into(),
                }),
            }
        })
    }

    fn refund(&self, req: RefundRequest) -> BoxFuture<'_, Result<GatewayRefund, GatewayError>> {
        Box::pin(async move {
            self.store
                .write(move |tx| {
                    Box::pin(async move {
                        let existing: Option<(String, String, i64)> = with_tx!(&mut *tx, |c| sqlx::query_as(
                            "SELECT id, charge_id, amount_minor FROM sandbox_refunds WHERE idempotency_key = $1"
                        )
                        .bind(&req.idempotency_key)
                        .fetch_optional(c)
                        .await)
                        .map_err(|e| store_err(e.into()))?;
                        if let Some((id, charge_id, amount_minor)) = existing {
                            if charge_id != req.charge_id || amount_minor != req.amount_minor {
                                return Err(GatewayError::InvalidRequest {
                                    param: None,
                                    message: "this idempotency key was used for a different refund".into(),
                                });
                            }
                            return Ok(GatewayRefund { id, charge_id, amount_minor, status: "succeeded".into() });
                        }
                        let charge = charge_by(tx, "id", &req.charge_id)
                            .await
                            .map_err(store_err)?
                            .ok_or_else(|| GatewayError::InvalidRequest {
                                param: None,
                                message: format!("No such charge: '{}'", req.charge_id),
                            })?;
                        if charge.status != "succeeded" {
                            return Err(GatewayError::InvalidRequest {
                                param: None,
                                message: format!("charge {} has not succeeded and cannot be refunded", charge.id),
                            });
                        }
                        let left = charge.amount_minor - charge.amount_refunded_minor;
                        let too_much = || GatewayError::InvalidRequest {
                            param: Some("amount"),
                            message: format!(
                                "Refund amount ({}) is greater than the unrefunded amount on the charge ({left})",
                                req.amount_minor
                            ),
                        };
                        if req.amount_minor <= 0 || req.amount_minor > left {
                            return Err(too_much());
                        }
                        let id = ids::new_id(prefix::SANDBOX_REFUND);
                        let now = Timestamp::now().as_micros();
                        // The check and the change in one statement: concurrent refunds (on
                        // PostgreSQL, in parallel transactions) cannot together exceed the charge.
                        let updated = with_tx!(&mut *tx, |c| sqlx::query(
                            "UPDATE sandbox_charges SET amount_refunded_minor = amount_refunded_minor + $2,
                                 updated_at = $3
                              WHERE id = $1 AND status = 'succeeded'
                                AND amount_refunded_minor + $2 <= amount_minor"
                        )
                        .bind(&charge.id)
                        .bind(req.amount_minor)
                        .bind(now)
                        .execute(c)
                        .await
                        .map(|r| r.rows_affected()))
                        .map_err(|e| store_err(e.into()))?;
                        if updated != 1 {
                            return Err(too_much());
                        }
                        with_tx!(&mut *tx, |c| sqlx::query(
                            "INSERT INTO sandbox_refunds (id, idempotency_key, charge_id, amount_minor, created_at)
                             VALUES ($1, $2, $3, $4, $5)"
                        )
                        .bind(&id)
                        .bind(&req.idempotency_key)
                        .bind(&charge.id)
                        .bind(req.amount_minor)
                        .bind(now)
                        .execute(c)
                        .await
                        .map(|r| r.rows_affected()))
                        .map_err(|e| store_err(e.into()))?;
                        Ok(GatewayRefund {
                            id,
                            charge_id: charge.id,
                            amount_minor: req.amount_minor,
                            status: "succeeded".into(),
                        })
                    })
                })
                .await
        })
    }

    fn as_sandbox(&self) -> Option<&SandboxGateway> {
        Some(self)
    }

    fn find_charge(
        &self,
        req: ChargeRequest,
    ) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>> {
        Box::pin(async move {
            let sql =
                format!("SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE idempotency_key = $1");
            let row: Option<ChargeRow> =
                with_read!(&self.store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(&req.idempotency_key)
                    .fetch_optional(e)
                    .await)
                .map_err(|e| store_err(e.into()))?;
            let Some(row) = row else { return Ok(None) };
            let behaviour = behaviour(&row.payment_method).unwrap_or(Behaviour::Succeed);
            with_dispute(row.to_charge()?, behaviour).map(Some)
        })
    }

    fn find_refund(
        &self,
        req: RefundRequest,
    ) -> BoxFuture<'_, Result<Option<GatewayRefund>, GatewayError>> {
        Box::pin(async move {
            let row: Option<(String, String, i64)> = with_read!(&self.store, |e| {
                sqlx::query_as(
                "SELECT id, charge_id, amount_minor FROM sandbox_refunds WHERE idempotency_key = $1"
            )
            .bind(&req.idempotency_key)
            .fetch_optional(e)
            .await
            })
            .map_err(|e| store_err(e.into()))?;
            Ok(row.map(|(id, charge_id, amount_minor)| GatewayRefund {
                id,
                charge_id,
                amount_minor,
                status: "succeeded".into(),
            }))
        })
    }

    /// The sandbox's ledger is written by the process calling it, before the call returns:
    /// once that process is dead, nothing of its calls is still on the way. The margin covers
    /// a write queued for a group commit when its owner was taken for dead.
    fn in_flight_for(&self) -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    fn fetch(&self, charge_id: String) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>> {
        Box::pin(async move {
            let sql = format!("SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE id = $1");
            let row: Option<ChargeRow> =
                with_read!(&self.store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(&charge_id)
                    .fetch_optional(e)
                    .await)
                .map_err(|e| store_err(e.into()))?;
            row.map(|r| r.to_charge()).transpose()
        })
    }
}

impl SandboxGateway {
    /// Plays the customer finishing (or failing) the action a charge waits for, such as 3-D
    /// Secure. `None` if no charge with that id is waiting for one.
    pub async fn complete_action(
        &self,
        charge_id: &str,
        succeed: bool,
    ) -> Result<Option<Charge>, GatewayError> {
        let id = charge_id.to_string();
        let changed = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let (status, decline) = if succeed {
                        ("succeeded", None)
                    } else {
                        ("failed", Some("authentication_required"))
                    };
                    let n = with_tx!(tx, |c| {
                        sqlx::query(
                        "UPDATE sandbox_charges SET status = $2, decline_code = $3, updated_at = $4
                          WHERE id = $1 AND status = 'requires_action'"
                    )
                    .bind(&id)
                    .bind(status)
                    .bind(decline)
                    .bind(Timestamp::now().as_micros())
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
                    })?;
                    Ok::<_, StoreError>(n == 1)
                })
            })
            .await?;
        if !changed {
            return Ok(None);
        }
        self.fetch(charge_id.to_string()).await
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        store_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_method_is_distinct() {
        let mut names: Vec<_> = PAYMENT_METHODS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PAYMENT_METHODS.len());
        assert_eq!(
            behaviour("pm_card_chargeDeclinedInsufficientFunds"),
            Some(Behaviour::Decline("insufficient_funds"))
        );
        assert_eq!(behaviour("pm_card_nope"), None);
    }
}
