//! Settling gateway calls whose outcome nobody recorded. A request that charges, confirms or
//! refunds records its attempt before it calls the gateway (see [`crate::write::claim_attempt`])
//! and deletes it when it records the outcome. An attempt left behind by a process that died
//! in between is found here — on start, every few seconds, and at once when a retry of the
//! interrupted request arrives — and settled: the gateway is asked about the call by the
//! idempotency key it carried, and what it did (succeeded, declined, or never received it) is
//! recorded exactly as the request would have, with the same rows, domain events, audit
//! entry, and stored response for the request's `Idempotency-Key`. A call the gateway never
//! received leaves nothing behind: the key is released, so a retry runs afresh.

use std::sync::atomic::{AtomicU64, Ordering};

use hephaestus_core::Timestamp;
use hephaestus_store::audit::{self, AuditEntry};
use hephaestus_store::idempotency::{self, IdemKey};
use hephaestus_store::{StoreError, Tx, attempts};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Principal;
use crate::error::AppError;
use crate::payments::{self, ConfirmSpec, PaymentSpec, RefundSpec};
use crate::subscriptions::{self, SubscriptionSpec};
use crate::write::{RequestMeta, Written};

/// How long one host keeps an orphaned attempt to itself while it settles it.
const LEASE_SECS: i64 = 60;
/// Attempts settled per pass.
const BATCH: i64 = 100;

/// The request an attempt belongs to, for its audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestInfo {
    pub key_id: String,
    pub method: String,
    pub path: String,
    pub request_id: Option<String>,
}

/// What the request knew before its gateway call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    Payment(PaymentSpec),
    Confirm(ConfirmSpec),
    Refund(RefundSpec),
    /// A subscription's start, charging its first period.
    Subscription(Box<SubscriptionSpec>),
}

impl Work {
    fn kind(&self) -> &'static str {
        match self {
            Work::Payment(_) => "payment",
            Work::Confirm(_) => "confirm",
            Work::Refund(_) => "refund",
            Work::Subscription(_) => "subscription",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    request: RequestInfo,
    work: Work,
}

/// The attempt a request records before calling the gateway with `gateway_key`.
fn attempt(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    gateway_key: &str,
    work: Work,
) -> Result<attempts::Attempt, AppError> {
    let kind = work.kind().to_string();
    let spec = Spec {
        request: RequestInfo {
            key_id: who.key_id.clone(),
            method: meta.method.to_string(),
            path: meta.path.clone(),
            request_id: meta.request_id.clone(),
        },
        work,
    };
    Ok(attempts::Attempt {
        id: hephaestus_core::ids::new_id("att"),
        kind,
        gateway: state.gateway.name().to_string(),
        gateway_key: gateway_key.to_string(),
        owner: state.store.instance().to_string(),
        api_key_id: None,
        idem_key: None,
        claim_token: None,
        spec: serde_json::to_string(&spec)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("attempt spec: {e}")))?,
        created_at: Timestamp::now().as_micros(),
    })
}

/// Claims a request about to call the gateway with `gateway_key` for `work`, recording its
/// attempt in the claim's transaction ([`crate::write::claim_attempt`]). The claim and the
/// attempt's id, or the answer to send instead.
pub async fn claim(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    body: &[u8],
    gateway_key: &str,
    work: Work,
) -> Result<(crate::write::Claimed, String), axum::response::Response> {
    use axum::response::IntoResponse;
    let attempt = attempt(state, who, meta, gateway_key, work).map_err(|e| e.into_response())?;
    let id = attempt.id.clone();
    let claimed = crate::write::claim_attempt(state, who, meta, body, attempt).await?;
    Ok((claimed, id))
}

/// Finishes `attempt_id` in the transaction recording its outcome. `Err` when recovery
/// settled it meanwhile (this process was taken for dead): the outcome is recorded already,
/// and a retry with the same `Idempotency-Key` is answered from that record.
pub async fn finish(tx: &mut Tx, attempt_id: &str) -> Result<(), AppError> {
    if attempts::finish(tx, attempt_id).await? {
        return Ok(());
    }
    Err(AppError::Unavailable(
        "this request's outcome was recorded by recovery; retry with the same Idempotency-Key to read it".into(),
    ))
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Recorded from what the gateway did.
    pub recorded: u64,
    /// The gateway never received the call: released.
    pub released: u64,
    /// Could not be settled now (the gateway or the database did not answer).
    pub failed: u64,
}

/// Settles every orphaned attempt old enough to ask the gateway about.
pub async fn run(state: &AppState) -> Result<Report, StoreError> {
    let mut report = Report::default();
    loop {
        let found =
            attempts::claim_orphans(&state.store, made_before(state), LEASE_SECS, BATCH).await?;
        let n = found.len();
        for attempt in found {
            match settle(state, &attempt).await {
                Ok(Settled::Recorded) => report.recorded += 1,
                Ok(Settled::Released) => report.released += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(attempt = %attempt.id, error = %e, "could not settle a gateway attempt; a later pass tries again");
                    if let Err(e) = attempts::unlease(&state.store, &attempt.id).await {
                        tracing::warn!(attempt = %attempt.id, error = %e, "could not give an attempt back; its lease runs out");
                    }
                }
            }
        }
        if n < BATCH as usize || report.failed > 0 {
            return Ok(report);
        }
    }
}

/// Settles the orphaned attempt of one claimed `Idempotency-Key`, if there is one: `true`
/// when it did, so the retry that asked can be answered from the record.
pub async fn settle_claim(state: &AppState, api_key_id: &str, idem_key: &str) -> bool {
    let found = match attempts::claim_orphan_of(
        &state.store,
        api_key_id,
        idem_key,
        made_before(state),
        LEASE_SECS,
    )
    .await
    {
        Ok(Some(a)) => a,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for an orphaned gateway attempt");
            return false;
        }
    };
    match settle(state, &found).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(attempt = %found.id, error = %e, "could not settle a gateway attempt");
            let _ = attempts::unlease(&state.store, &found.id).await;
            false
        }
    }
}

/// Attempts made before this moment are asked about: a call still on the wire from its dead
/// sender has landed by then.
fn made_before(state: &AppState) -> i64 {
    let margin = i64::try_from(state.gateway.in_flight_for().as_micros()).unwrap_or(i64::MAX);
    Timestamp::now().as_micros().saturating_sub(margin)
}

enum Settled {
    Recorded,
    Released,
}

async fn settle(state: &AppState, attempt: &attempts::Attempt) -> Result<Settled, AppError> {
    let spec: Spec = serde_json::from_str(&attempt.spec).map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "attempt {}: unreadable spec: {e}",
            attempt.id
        ))
    })?;
    let gateway = state.gateway.clone();
    let key = attempt.gateway_key.clone();
    // Ask first, outside any transaction; then record in one.
    let outcome = match &spec.work {
        Work::Payment(p) => gateway
            .find_charge(p.charge_request(&key)?)
            .await
            .map(|c| c.map(Outcome::Charge)),
        Work::Confirm(c) => {
            let payment = hephaestus_store::payments::get(&state.store, &c.payment_id)
                .await?
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("payment vanished")))?;
            gateway
                .find_charge(c.charge_request(&payment, &key))
                .await
                .map(|c| c.map(Outcome::Charge))
        }
        Work::Refund(r) => gateway
            .find_refund(r.refund_request(&key)?)
            .await
            .map(|r| r.map(Outcome::Refund)),
        Work::Subscription(s) => gateway
            .find_charge(s.charge_request(&key))
            .await
            .map(|c| c.map(Outcome::Charge)),
    }
    .map_err(payments::gateway_error)?;
    let price = match &spec.work {
        Work::Subscription(s) => Some(
            hephaestus_store::catalog::get_price(&state.store, &s.subscription.price_id)
                .await?
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("subscription price missing")))?,
        ),
        _ => None,
    };
    let attempt = attempt.clone();
    let gateway_name = gateway.name().to_string();
    let settled = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                let claim = attempt.claim_token.clone().map(|token| IdemKey {
                    api_key_id: attempt.api_key_id.clone().unwrap_or_default(),
                    key: attempt.idem_key.clone().unwrap_or_default(),
                    request_hash: String::new(),
                    claim_token: token,
                });
                let Some(outcome) = outcome else {
                    attempts::finish(tx, &attempt.id).await?;
                    if let Some(k) = &claim {
                        idempotency::release_in(tx, k).await?;
                    }
                    match &spec.work {
                        Work::Payment(p) => {
                            payments::never_charged(tx, p, &attempt.gateway_key).await?;
                        }
                        Work::Subscription(s) => {
                            subscriptions::never_charged(tx, s, &attempt.gateway_key).await?;
                        }
                        Work::Confirm(_) | Work::Refund(_) => {}
                    }
                    tracing::info!(attempt = %attempt.id, "the gateway never received this call; released");
                    return Ok::<_, AppError>(Settled::Released);
                };
                let written = match (spec.work, outcome) {
                    (Work::Payment(p), Outcome::Charge(charge)) => {
                        payments::finish_payment(
                            tx,
                            &gateway_name,
                            &attempt.id,
                            &attempt.gateway_key,
                            p,
                            charge,
                            true,
                        )
                        .await?
                    }
                    (Work::Confirm(c), Outcome::Charge(charge)) => {
                        payments::finish_confirm(tx, &attempt.id, c, charge).await?
                    }
                    (Work::Refund(r), Outcome::Refund(refund)) => {
                        payments::finish_refund(tx, &attempt.id, r, refund).await?
                    }
                    (Work::Subscription(s), Outcome::Charge(charge)) => {
                        let price = price.ok_or_else(|| {
                            AppError::Internal(anyhow::anyhow!("subscription price missing"))
                        })?;
                        subscriptions::finish_subscription(
                            tx,
                            &gateway_name,
                            Some(&attempt.id),
                            &attempt.gateway_key,
                            *s,
                            Some(charge),
                            &price,
                        )
                        .await?
                    }
                    _ => return Err(AppError::Internal(anyhow::anyhow!("mismatched outcome"))),
                };
                record_answer(tx, &spec.request, claim.as_ref(), &written).await?;
                tracing::info!(attempt = %attempt.id, status = %written.status, "recorded a gateway call its request did not live to record");
                Ok(Settled::Recorded)
            })
        })
        .await?;
    Ok(settled)
}

enum Outcome {
    Charge(hephaestus_billing::gateway::Charge),
    Refund(hephaestus_billing::gateway::GatewayRefund),
}

/// The audit entry and the stored response the request would have written. The key's claim
/// may be gone (released after a gateway error, and taken by a retry that recorded the call
/// itself): then there is no response of this request to store.
async fn record_answer(
    tx: &mut Tx,
    request: &RequestInfo,
    claim: Option<&IdemKey>,
    written: &Written,
) -> Result<(), AppError> {
    audit::record(
        tx,
        AuditEntry::new(
            Some(request.key_id.clone()),
            &request.method,
            &request.path,
            written.status.as_u16(),
            request.request_id.clone(),
        ),
    );
    if let Some(k) = claim {
        match idempotency::complete(
            tx,
            k,
            written.status.as_u16(),
            &written.body,
            written.resource_id.as_deref(),
        )
        .await
        {
            Ok(()) | Err(StoreError::ClaimLost) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where a drill may stop the process (see [`fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The attempt is recorded; the gateway call is about to go out.
    BeforeGatewayCall,
    /// The gateway answered; its outcome is not recorded yet.
    AfterGatewayCall,
}

/// A drill's planned death: at the `nth` time the process reaches `point`
/// (`HEPHAESTUS_FAULT_ABORT=after_gateway_call:1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    pub point: FaultPoint,
    pub nth: u64,
}

impl std::str::FromStr for FaultAbort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected before_gateway_call:N or after_gateway_call:N");
        let (at, n) = s.split_once(':').ok_or_else(bad)?;
        let point = match at {
            "before_gateway_call" => FaultPoint::BeforeGatewayCall,
            "after_gateway_call" => FaultPoint::AfterGatewayCall,
            _ => return Err(bad()),
        };
        match n.parse() {
            Ok(nth) if nth > 0 => Ok(FaultAbort { point, nth }),
            _ => Err(bad()),
        }
    }
}

/// Drill support: when the operator set `HEPHAESTUS_FAULT_ABORT`, the process aborts —
/// stopping as `kill -9` would — the planned time it reaches `point`. Never set in a real
/// deployment; the fault drills use it to leave exactly the state recovery exists for.
pub fn fault(state: &AppState, point: FaultPoint) {
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if let Some(plan) = state.config.fault_abort
        && plan.point == point
        && REACHED.fetch_add(1, Ordering::SeqCst) + 1 >= plan.nth
    {
        eprintln!("HEPHAESTUS_FAULT_ABORT reached ({point:?}): aborting");
        std::process::abort();
    }
}

/// A status for logs.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} recorded, {} released, {} failed",
            self.recorded, self.released, self.failed
        )
    }
}
