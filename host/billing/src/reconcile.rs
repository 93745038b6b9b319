//! Bringing payments and gateway-billed subscriptions up to date with what their gateway
//! says: reconciliation asks the gateway about those left unsettled past a deadline (a
//! missed or delayed webhook), and the sandbox's own "customer completed 3-D Secure" lands
//! here too. The same forward-only rules as webhooks apply, and a change writes its domain
//! events in the same transaction.
//!
//! A subscription is unsettled when it is past due or unpaid, or when its period ended
//! with no renewal applied; one pass asks about at most `limit` of them, those asked least
//! recently first, and each is claimed in the database so no other host asks at the same
//! time (see [`subscriptions::claim_unsettled`]). When the gateway's answer names a latest
//! invoice we have never seen (the events of a renewal that never came), that invoice is
//! fetched too and mirrored with the subscription, in one transaction; if it cannot be
//! fetched, neither is applied, so the subscription stays unsettled and a later pass asks
//! again. Invoices we hold that stay open (a payment event that never came) are refetched
//! the same way, claimed like subscriptions ([`subscriptions::claim_open_invoices`]).

use hephaestus_core::Timestamp;
use hephaestus_core::payment::{Payment, PaymentStatus};
use hephaestus_store::{Store, StoreError, Tx, events, payments, subscriptions};

use crate::gateway::{Charge, ChargeStatus, Gateway, GatewayError, SubscriptionGateway};
use crate::gateway_subscriptions::{self, Mirrored};
use crate::stripe_events::payment_event;

/// What a reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub updated: usize,
    pub failed: usize,
}

impl Report {
    /// A pass about to ask about `checked` objects.
    fn checking(checked: usize) -> Self {
        Report {
            checked,
            ..Report::default()
        }
    }

    /// The gateway's answer about our `ours` (its `theirs`), or `None`, counted as failed,
    /// when the gateway does not know it or could not answer: a later pass asks again.
    fn refetched<T>(
        &mut self,
        answer: Result<Option<T>, GatewayError>,
        ours: &str,
        theirs: &str,
    ) -> Option<T> {
        match answer {
            Ok(Some(found)) => return Some(found),
            Ok(None) => {
                tracing::warn!(object = %ours, gateway_id = %theirs, "the gateway does not know this object");
            }
            Err(e) => {
                tracing::warn!(object = %ours, error = %e, "could not refetch from the gateway; a later pass asks again");
            }
        }
        self.failed += 1;
        None
    }
}

fn status_of(charge: &Charge) -> PaymentStatus {
    match charge.status {
        ChargeStatus::Succeeded => PaymentStatus::Succeeded,
        ChargeStatus::RequiresAction => PaymentStatus::RequiresAction,
        ChargeStatus::Processing => PaymentStatus::Processing,
        ChargeStatus::Declined => PaymentStatus::Failed,
    }
}

/// Applies the gateway's current view of a charge to the payment `payment_id`. The
/// gateway's answer is the newest news, so it applies unless it would move the payment
/// back. Returns the payment when it changed.
pub async fn apply_charge(
    tx: &mut Tx,
    payment_id: &str,
    charge: &Charge,
) -> Result<Option<Payment>, StoreError> {
    let Some(mut payment) = payments::get_for_update(tx, payment_id).await? else {
        return Ok(None);
    };
    let status = status_of(charge);
    if status == payment.status || status.progress() < payment.status.progress() {
        return Ok(None);
    }
    let now = Timestamp::now();
    payment.status = status;
    // What the gateway says now is newer than any event it sent before: a late, older
    // webhook must not undo it.
    let now_secs = now.as_micros().div_euclid(1_000_000);
    payment.gateway_event_at = Some(payment.gateway_event_at.unwrap_or(i64::MIN).max(now_secs));
    if status == PaymentStatus::Failed {
        payment.decline_code = charge.decline_code.clone();
        payment.failure_message = charge.failure_message.clone();
    }
    payments::apply_gateway_state(tx, &payment, now).await?;
    let domain_kind = status.event_kind();
    if let Some(k) = domain_kind {
        events::append(tx, payment_event(k, &payment, now));
    }
    Ok(Some(payment))
}

/// One pass: payments of `gateway` unsettled for longer than `deadline_secs`, at most
/// `limit` of them, refetched and brought up to date.
pub async fn reconcile(
    store: &Store,
    gateway: &dyn Gateway,
    deadline_secs: i64,
    limit: i64,
) -> Result<Report, StoreError> {
    let before = Timestamp::now().add_secs(-deadline_secs);
    let due = payments::unsettled(store, gateway.name(), before, limit).await?;
    let mut report = Report::checking(due.len());
    for payment in due {
        let Some(charge_id) = payment.gateway_id.clone() else {
            continue;
        };
        let answer = gateway.fetch(charge_id.clone()).await;
        let Some(charge) = report.refetched(answer, &payment.id, &charge_id) else {
            continue;
        };
        let id = payment.id.clone();
        let changed = store
            .write(move |tx| Box::pin(async move { apply_charge(tx, &id, &charge).await }))
            .await?;
        if changed.is_some() {
            report.updated += 1;
        }
    }
    Ok(report)
}

/// The gateway's own subscription billing, and the moment before which what it bills has
/// been unsettled for longer than `deadline_secs`; `None` for a gateway that bills none.
fn billed_by(
    gateway: &dyn Gateway,
    deadline_secs: i64,
) -> Option<(&dyn SubscriptionGateway, Timestamp)> {
    let billing = gateway.subscriptions()?;
    Some((billing, Timestamp::now().add_secs(-deadline_secs)))
}

/// One pass over the subscriptions `gateway` bills: those unsettled for longer than
/// `deadline_secs`, at most `limit` of them, refetched and brought up to date
/// ([`gateway_subscriptions::apply_refetched`]). Nothing for a gateway that bills none.
pub async fn reconcile_subscriptions(
    store: &Store,
    gateway: &dyn Gateway,
    deadline_secs: i64,
    limit: i64,
) -> Result<Report, StoreError> {
    let Some((billing, before)) = billed_by(gateway, deadline_secs) else {
        return Ok(Report::default());
    };
    let name = gateway.name();
    let due = subscriptions::claim_unsettled(store, name, before, limit).await?;
    let mut report = Report::checking(due.len());
    for (asked, mark) in due {
        let Some(gateway_id) = asked.gateway_id.clone() else {
            continue;
        };
        let answer = billing.fetch_subscription(gateway_id.clone()).await;
        let Some(state) = report.refetched(answer, &asked.id, &gateway_id) else {
            continue;
        };
        let unseen = match &state.latest_invoice {
            Some(id) if !subscriptions::invoice_mirrored(store, id).await? => Some(id.clone()),
            _ => None,
        };
        let latest = match unseen {
            // A draft the gateway deleted since is `None`: nothing to mirror.
            Some(id) => match billing.fetch_invoice(id.clone()).await {
                Ok(found) => found.filter(|inv| inv.subscription == gateway_id),
                Err(e) => {
                    tracing::warn!(object = %asked.id, invoice = %id, error = %e, "could not refetch the latest invoice; a later pass asks again");
                    report.failed += 1;
                    continue;
                }
            },
            None => None,
        };
        let changed = store
            .write(move |tx| {
                Box::pin(async move {
                    let now = Timestamp::now();
                    let changed =
                        gateway_subscriptions::apply_refetched(tx, &asked, mark, &state, now)
                            .await?;
                    let mirrored = match &latest {
                        Some(inv) => {
                            gateway_subscriptions::apply_refetched_invoice(tx, name, inv, now)
                                .await?
                        }
                        None => Mirrored::Unchanged,
                    };
                    Ok::<_, StoreError>(changed || mirrored == Mirrored::Applied)
                })
            })
            .await?;
        if changed {
            report.updated += 1;
        }
    }
    Ok(report)
}

/// One pass over the open invoices of the subscriptions `gateway` bills that have not
/// changed for longer than `deadline_secs`, at most `limit` of them, refetched and
/// mirrored ([`gateway_subscriptions::apply_refetched_invoice`]): one paid meanwhile gets
/// its payment recorded. Nothing for a gateway that bills no subscriptions.
pub async fn reconcile_invoices(
    store: &Store,
    gateway: &dyn Gateway,
    deadline_secs: i64,
    limit: i64,
) -> Result<Report, StoreError> {
    let Some((billing, before)) = billed_by(gateway, deadline_secs) else {
        return Ok(Report::default());
    };
    let name = gateway.name();
    let due = subscriptions::claim_open_invoices(store, name, before, limit).await?;
    let mut report = Report::checking(due.len());
    for gateway_id in due {
        let answer = billing.fetch_invoice(gateway_id.clone()).await;
        let Some(inv) = report.refetched(answer, &gateway_id, &gateway_id) else {
            continue;
        };
        let mirrored = store
            .write(move |tx| {
                Box::pin(async move {
                    gateway_subscriptions::apply_refetched_invoice(tx, name, &inv, Timestamp::now())
                        .await
                })
            })
            .await?;
        if mirrored == Mirrored::Applied {
            report.updated += 1;
        }
    }
    Ok(report)
}

/// Every pass, each over at most `limit` objects unsettled for longer than `deadline_secs`,
/// named by what it reconciles: payments, subscriptions, then invoices (a subscription's
/// pass can mirror an invoice that the invoices' pass then need not ask about). One pass
/// failing does not keep the others from running.
pub async fn reconcile_all(
    store: &Store,
    gateway: &dyn Gateway,
    deadline_secs: i64,
    limit: i64,
) -> Vec<(&'static str, Result<Report, StoreError>)> {
    vec![
        (
            "payments",
            reconcile(store, gateway, deadline_secs, limit).await,
        ),
        (
            "subscriptions",
            reconcile_subscriptions(store, gateway, deadline_secs, limit).await,
        ),
        (
            "invoices",
            reconcile_invoices(store, gateway, deadline_secs, limit).await,
        ),
    ]
}
