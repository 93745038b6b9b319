//! Disputes (chargebacks): recorded from gateway events, whatever order they arrive in.
//! A dispute's status follows the newest event; money withdrawn or reinstated only grows;
//! while a dispute is open its payment is `disputed`, and a dispute closed as won returns
//! the payment to what its refunds make it.

use hephaestus_core::Timestamp;
use hephaestus_core::event::{NewEvent, kind};
use hephaestus_core::payment::{Payment, PaymentStatus};
use hephaestus_store::{StoreError, Tx, disputes, events, payments};
use serde_json::json;

/// A dispute as the gateway describes it in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeState {
    pub gateway_id: String,
    pub amount_minor: i64,
    pub reason: Option<String>,
    pub status: String,
    /// Totals so far, from the dispute's balance transactions.
    pub withdrawn_minor: i64,
    pub reinstated_minor: i64,
}

/// Which dispute event this is: it decides the domain event written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    FundsWithdrawn,
    FundsReinstated,
    Closed,
}

fn is_closed(status: &str) -> bool {
    matches!(
        status,
        "won" | "lost" | "warning_closed" | "charge_refunded" | "prevented"
    )
}

/// Applies one dispute event, created at `created` (Unix seconds) at the gateway, to the
/// payment it concerns (already locked by the caller).
pub async fn apply(
    tx: &mut Tx,
    mut payment: Payment,
    state: &DisputeState,
    change: Change,
    created: i64,
) -> Result<(), StoreError> {
    let existing = disputes::by_gateway_id(tx, &state.gateway_id).await?;
    let is_new = existing.is_none();
    let mut d = existing.unwrap_or_else(|| {
        disputes::new(
            &state.gateway_id,
            &payment.id,
            payment.amount.currency.code(),
        )
    });
    let newer = created >= d.gateway_event_at.unwrap_or(i64::MIN);
    let before = d.clone();
    if newer {
        d.status = state.status.clone();
        d.amount_minor = state.amount_minor;
        d.reason = state.reason.clone().or(d.reason);
        d.gateway_event_at = Some(created);
    }
    d.funds_withdrawn_minor = d.funds_withdrawn_minor.max(state.withdrawn_minor);
    d.funds_reinstated_minor = d.funds_reinstated_minor.max(state.reinstated_minor);
    let now = Timestamp::now();
    d.updated_at = now.as_micros();
    disputes::save(tx, &d).await?;

    // The payment: disputed while the dispute is open; back to its refund state when won.
    let target = if !is_closed(&d.status) {
        Some(PaymentStatus::Disputed)
    } else if d.status == "won" || d.status == "warning_closed" || d.status == "prevented" {
        Some(if payment.amount_refunded_minor == 0 {
            PaymentStatus::Succeeded
        } else if payment.amount_refunded_minor < payment.amount.minor {
            PaymentStatus::PartiallyRefunded
        } else {
            PaymentStatus::Refunded
        })
    } else {
        None
    };
    if let Some(status) = target.filter(|s| *s != payment.status) {
        payment.status = status;
        payment.gateway_event_at = Some(payment.gateway_event_at.unwrap_or(i64::MIN).max(created));
        payments::apply_gateway_state(tx, &payment, now).await?;
    }

    let data = json!({
        "dispute_id": d.id,
        "payment_id": payment.id,
        "amount_minor": d.amount_minor,
        "currency": d.currency,
        "status": d.status,
        "reason": d.reason,
        "funds_withdrawn_minor": d.funds_withdrawn_minor,
        "funds_reinstated_minor": d.funds_reinstated_minor,
    });
    let mut emit = |k: &'static str| {
        events::append(
            tx,
            NewEvent::new(
                k,
                &d.id,
                Some(payment.customer_id.clone()),
                data.clone(),
                now,
            ),
        );
    };
    if is_new {
        emit(kind::DISPUTE_CREATED);
    }
    match change {
        Change::Created => {}
        Change::Updated if !is_new && before.status != d.status => emit(kind::DISPUTE_UPDATED),
        Change::Updated => {}
        Change::FundsWithdrawn
            if d.funds_withdrawn_minor > before.funds_withdrawn_minor || is_new =>
        {
            emit(kind::DISPUTE_FUNDS_WITHDRAWN)
        }
        Change::FundsReinstated
            if d.funds_reinstated_minor > before.funds_reinstated_minor || is_new =>
        {
            emit(kind::DISPUTE_FUNDS_REINSTATED)
        }
        Change::Closed if is_closed(&d.status) && !is_closed(&before.status) => {
            emit(kind::DISPUTE_CLOSED)
        }
        _ => {}
    }
    Ok(())
}
