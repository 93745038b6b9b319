//! `/api/v1/revenue/subscriptions` and `/api/v1/revenue/invoices`: recurring billing. The
//! billing engine lives in `hephaestus_billing::subscriptions`; these handlers parse,
//! authorise, charge the first invoice and map the result.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_billing::charges;
use hephaestus_billing::gateway::{
    ChargeRequest, GatewayError, GatewaySubscription, SubscriptionChange, SubscriptionGateway,
    SubscriptionRequest,
};
use hephaestus_billing::gateway_subscriptions;
use hephaestus_billing::subscriptions::{
    self as engine, NewSubscription, Planned, Update, UpdateError, business_now, check_change,
};
use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{MAX_TRIAL_DAYS, Price};
use hephaestus_core::customer::{Metadata, validate_metadata};
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::Money;
use hephaestus_core::subscription::{Invoice, InvoiceLine, Subscription, SubscriptionStatus};
use hephaestus_store::{catalog, quotes, subscriptions};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::customers::page_params;
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, PathId, Query, load_by_id};
use crate::payments::{amount_json, charge_answer, gateway_error};
use crate::write::{self, RequestMeta, Written};

/// The most units one subscription may carry.
const MAX_QUANTITY: i64 = 1_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLineView {
    /// `il_…`
    pub id: String,
    pub description: String,
    pub price_id: Option<String>,
    pub quantity: i64,
    /// Major units; negative for a credit.
    #[schema(value_type = f64)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    /// Made by a change in the middle of a period.
    pub proration: bool,
    #[schema(value_type = String, format = DateTime)]
    pub period_start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub period_end: Timestamp,
}

impl From<&InvoiceLine> for InvoiceLineView {
    fn from(l: &InvoiceLine) -> Self {
        InvoiceLineView {
            id: l.id.clone(),
            description: l.description.clone(),
            price_id: l.price_id.clone(),
            quantity: l.quantity,
            amount: amount_json(l.amount),
            amount_minor: l.amount.minor,
            proration: l.proration,
            period_start: l.period_start,
            period_end: l.period_end,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    /// `in_…`
    pub id: String,
    pub object: &'static str,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    /// open, paid, uncollectible or void
    pub status: String,
    /// subscription_create, subscription_trial_end, subscription_cycle
    pub billing_reason: String,
    pub currency: String,
    #[schema(value_type = f64)]
    pub subtotal: Box<RawValue>,
    pub subtotal_minor: i64,
    #[schema(value_type = f64)]
    pub amount_due: Box<RawValue>,
    pub amount_due_minor: i64,
    #[schema(value_type = f64)]
    pub amount_paid: Box<RawValue>,
    pub amount_paid_minor: i64,
    #[schema(value_type = String, format = DateTime)]
    pub period_start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub period_end: Timestamp,
    pub attempt_count: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_payment_attempt: Option<Timestamp>,
    /// The latest payment attempted for it.
    pub payment_id: Option<String>,
    pub lines: Vec<InvoiceLineView>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<&Invoice> for InvoiceView {
    fn from(i: &Invoice) -> Self {
        let money = |minor| {
            amount_json(Money {
                minor,
                currency: i.currency,
            })
        };
        InvoiceView {
            id: i.id.clone(),
            object: "invoice",
            customer_id: i.customer_id.clone(),
            subscription_id: i.subscription_id.clone(),
            status: i.status.as_str().to_string(),
            billing_reason: i.billing_reason.clone(),
            currency: i.currency.code().to_string(),
            subtotal: money(i.subtotal_minor),
            subtotal_minor: i.subtotal_minor,
            amount_due: money(i.amount_due_minor),
            amount_due_minor: i.amount_due_minor,
            amount_paid: money(i.amount_paid_minor),
            amount_paid_minor: i.amount_paid_minor,
            period_start: i.period_start,
            period_end: i.period_end,
            attempt_count: i.attempt_count,
            next_payment_attempt: i.next_attempt_at,
            payment_id: i.payment_id.clone(),
            lines: i.lines.iter().map(InvoiceLineView::from).collect(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// `sub_…`
    pub id: String,
    pub object: &'static str,
    pub customer_id: String,
    pub price_id: String,
    pub quantity: i64,
    pub currency: String,
    /// The stored quote it was started from, if any.
    pub quote_id: Option<String>,
    /// Taken off each period's list total while price and quantity stay those quoted.
    pub discount_minor: i64,
    /// trialing, active, past_due, canceled or unpaid
    pub status: String,
    pub payment_method: Option<String>,
    /// `sandbox` or `stripe`.
    pub gateway: String,
    /// The gateway's id for it (`sub_…` at Stripe) when the gateway bills it.
    pub gateway_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub current_period_start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub current_period_end: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub trial_start: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub trial_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub canceled_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    pub metadata: Metadata,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The newest invoice, on reads of one subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_invoice: Option<InvoiceView>,
    /// Prorations waiting for the next invoice, on reads of one subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_invoice_lines: Option<Vec<InvoiceLineView>>,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        SubscriptionView {
            id: s.id.clone(),
            object: "subscription",
            customer_id: s.customer_id.clone(),
            price_id: s.price_id.clone(),
            quantity: s.quantity,
            currency: s.currency.code().to_string(),
            quote_id: s.quote_id.clone(),
            discount_minor: s.discount_minor,
            status: s.status.as_str().to_string(),
            payment_method: s.payment_method.clone(),
            gateway: s.gateway.clone(),
            gateway_id: s.gateway_id.clone(),
            current_period_start: s.current_period_start,
            current_period_end: s.current_period_end,
            trial_start: s.trial_start,
            trial_end: s.trial_end,
            cancel_at_period_end: s.cancel_at_period_end,
            canceled_at: s.canceled_at,
            ended_at: s.ended_at,
            metadata: s.metadata.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            latest_invoice: None,
            pending_invoice_lines: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// `cus_…`
    pub customer_id: String,
    /// A recurring, active `price_…`. Required unless `quote_id` is given.
    pub price_id: Option<String>,
    /// A stored quote (`quo_…`) of a recurring price for this customer: every period is
    /// charged the quoted amount while the price and quantity stay those quoted (a change
    /// of plan bills the new plan at its list price). The quote is used up.
    pub quote_id: Option<String>,
    /// Default 1 (with `quote_id`, the quoted quantity).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub quantity: Option<i64>,
    /// Overrides the price's trial; 0 for none.
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub trial_days: Option<i64>,
    /// Charged for every invoice (sandbox test methods). Required unless there is a trial.
    #[schema(example = "pm_card_visa")]
    pub payment_method: Option<String>,
    pub metadata: Option<Metadata>,
}

fn check_quantity(q: Option<i64>) -> ApiResult<Option<i64>> {
    match q {
        Some(q) if !(1..=MAX_QUANTITY).contains(&q) => Err(AppError::invalid(
            "quantity",
            format!("must be 1 to {MAX_QUANTITY}"),
        )),
        other => Ok(other),
    }
}

/// The same rule a payment's method is held to: it goes to the same gateway.
fn check_payment_method(pm: &Option<String>) -> ApiResult<()> {
    if let Some(pm) = pm {
        hephaestus_core::customer::validate_payment_method("payment_method", pm)?;
    }
    Ok(())
}

async fn load_price(state: &AppState, id: &str) -> ApiResult<Price> {
    if !ids::is_well_formed(prefix::PRICE, id) {
        return Err(AppError::invalid(
            "price_id",
            "must be a price id like price_…",
        ));
    }
    let price = catalog::get_price(&state.store, id)
        .await?
        .ok_or_else(|| AppError::invalid("price_id", format!("no such price: {id}")))?;
    if price.recurring.is_none() {
        return Err(AppError::invalid(
            "price_id",
            "must be a recurring price; one-time prices are paid with a payment",
        ));
    }
    if !price.active {
        return Err(AppError::invalid(
            "price_id",
            format!("price {id} is inactive and cannot be used for new sales"),
        ));
    }
    Ok(price)
}

/// Starts a subscription. With a trial nothing is charged until it ends; without one the
/// first period is charged now, and a declined card answers 402 `card_declined` (the failed
/// payment is stored; no subscription is created).
#[utoipa::path(
    post, path = "/api/v1/revenue/subscriptions", tag = "subscriptions",
    request_body = CreateSubscription,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key never charges twice")),
    responses(
        (status = 201, body = SubscriptionView),
        (status = 400, body = crate::openapi::ErrorBody),
        (status = 402, body = crate::openapi::ErrorBody, description = "card_declined, with decline_code and payment_id"),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreateSubscription>,
) -> Response {
    let planned = match validate_create(&state, body.value).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (planned, price) = planned;
    if state.gateway.subscriptions().is_some() {
        let claimed = match write::claim(&state, &auth.0, &meta, &body.raw).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        return create_at_gateway(&state, claimed, planned.subscription, price).await;
    }
    let gateway = state.gateway.clone();
    let key = write::external_key(&auth.0, &meta, "subscription-charge");
    let quote_id = planned.subscription.quote_id.clone();
    let priced_by = match &quote_id {
        Some(id) => match quotes::get(&state.store, id).await {
            Ok(q) => q.as_ref().map(charges::PricedBy::of),
            Err(e) => return AppError::from(e).into_response(),
        },
        None => None,
    };
    let spec = SubscriptionSpec {
        subscription: planned.subscription,
        invoice: planned.invoice,
        priced_by,
    };
    // With a trial nothing is charged now: no gateway call, no attempt.
    let charged = spec.invoice.amount_due_minor > 0;
    let claimed = if charged {
        let work = crate::recovery::Work::Subscription(Box::new(spec.clone()));
        match crate::recovery::claim(&state, &auth.0, &meta, &body.raw, &key, work).await {
            Ok((c, id)) => (c, Some(id)),
            Err(answer) => return answer,
        }
    } else {
        match write::claim(&state, &auth.0, &meta, &body.raw).await {
            Ok(c) => (c, None),
            Err(answer) => return answer,
        }
    };
    let (claimed, attempt_id) = claimed;
    claimed
        .then(async move {
            let forget = |state: AppState, id: Option<String>| async move {
                if let Some(id) = id {
                    crate::payments::forget_attempt(&state, &id).await;
                }
            };
            if let Some(id) = &quote_id
                && let Err(e) = crate::decisions::hold_quote(
                    &state,
                    id,
                    &spec.subscription.customer_id,
                    &key,
                    true,
                )
                .await
            {
                forget(state.clone(), attempt_id).await;
                return Err(e);
            }
            let charge = match &attempt_id {
                None => None,
                Some(attempt_id) => {
                    crate::recovery::fault(&state, crate::recovery::FaultPoint::BeforeGatewayCall);
                    let charge = gateway.charge(spec.charge_request(&key)).await;
                    crate::recovery::fault(&state, crate::recovery::FaultPoint::AfterGatewayCall);
                    match charge {
                        Ok(c) => Some(c),
                        Err(e) => {
                            crate::payments::gateway_failed(&state, attempt_id, &e).await;
                            if let Some(q) = &quote_id {
                                let _ = quotes::release(&state.store, q, &key).await;
                            }
                            return Err(gateway_error(e));
                        }
                    }
                }
            };
            let gateway = gateway.name().to_string();
            Ok(write::change(move |tx| {
                Box::pin(async move {
                    finish_subscription(
                        tx,
                        &gateway,
                        attempt_id.as_deref(),
                        &key,
                        spec,
                        charge,
                        &price,
                    )
                    .await
                })
            }))
        })
        .await
}

/// What a subscription's start knew before it charged the first period: the subscription
/// and invoice planned, recorded as planned once the charge went through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    pub subscription: Subscription,
    pub invoice: Invoice,
    pub priced_by: Option<charges::PricedBy>,
}

impl SubscriptionSpec {
    /// The first period's charge, under `key`.
    pub fn charge_request(&self, key: &str) -> ChargeRequest {
        let sub = &self.subscription;
        ChargeRequest {
            customer_id: sub.customer_id.clone(),
            amount: Money {
                minor: self.invoice.amount_due_minor,
                currency: self.invoice.currency,
            },
            payment_method: sub.payment_method.clone().unwrap_or_default(),
            description: Some(self.description()),
            idempotency_key: key.to_string(),
            off_session: true,
        }
    }

    fn description(&self) -> String {
        format!("Invoice {} for {}", self.invoice.id, self.subscription.id)
    }
}

/// Records a subscription's start: the first period's payment when one was charged (a
/// declined one is recorded and starts nothing), the quote used, the subscription and its
/// first invoice; and finishes the charge's attempt.
pub async fn finish_subscription(
    tx: &mut hephaestus_store::Tx,
    gateway: &str,
    attempt_id: Option<&str>,
    key: &str,
    spec: SubscriptionSpec,
    charge: Option<hephaestus_billing::gateway::Charge>,
    price: &Price,
) -> ApiResult<Written> {
    if let Some(id) = attempt_id {
        crate::recovery::finish(tx, id).await?;
    }
    let now = spec.subscription.created_at;
    let quote_id = spec.subscription.quote_id.clone();
    let mut payment_id = None;
    if let Some(charge) = &charge {
        let sub = &spec.subscription;
        let paid = charges::status_of(charge) == hephaestus_core::payment::PaymentStatus::Succeeded;
        let attempt = charges::Attempt {
            customer_id: sub.customer_id.clone(),
            amount: Money {
                minor: spec.invoice.amount_due_minor,
                currency: spec.invoice.currency,
            },
            payment_method: sub.payment_method.clone().unwrap_or_default(),
            description: Some(spec.description()),
            metadata: Metadata::new(),
            // A payment that did not go through settles no invoice.
            invoice_id: paid.then(|| spec.invoice.id.clone()),
            priced_by: spec.priced_by.clone(),
        };
        let payment = charges::record(tx, gateway, attempt, charge, now).await?;
        if !paid {
            // Nothing is started; the declined payment is kept and named, and the quote may
            // be used with another card.
            if let Some(q) = &quote_id {
                quotes::release_in(tx, q, key).await?;
            }
            return Ok(declined(&payment));
        }
        payment_id = Some(payment.id);
    }
    if let Some(q) = &quote_id
        && !quotes::mark_used(tx, q, &spec.subscription.id, now).await?
    {
        tracing::error!(quote = %q, "a quote was used twice");
    }
    let planned = Planned {
        subscription: spec.subscription,
        invoice: spec.invoice,
    };
    let (sub, invoice) = engine::start(tx, planned, price, payment_id, now).await?;
    let mut view = SubscriptionView::from(&sub);
    view.latest_invoice = Some(InvoiceView::from(&invoice));
    view.pending_invoice_lines = Some(Vec::new());
    Ok(write::created(&sub.id, &view))
}

/// Recovery found that the gateway never received a subscription's first charge: the quote
/// it held is free again.
pub async fn never_charged(
    tx: &mut hephaestus_store::Tx,
    spec: &SubscriptionSpec,
    key: &str,
) -> ApiResult<()> {
    if let Some(q) = &spec.subscription.quote_id {
        quotes::release_in(tx, q, key).await?;
    }
    Ok(())
}

/// Starts a subscription at a gateway that bills it (Stripe): it charges the first invoice
/// (unless there is a trial) and its answer is stored as ours, with the gateway's id.
async fn create_at_gateway(
    state: &AppState,
    claimed: write::Claimed,
    planned: Subscription,
    price: Price,
) -> Response {
    let gateway = state.gateway.clone();
    let trial_days = planned
        .trial_end
        .map(|end| (end.as_micros() - planned.created_at.as_micros()) / (86_400 * 1_000_000))
        .unwrap_or(0);
    let request = SubscriptionRequest {
        subscription_id: planned.id.clone(),
        customer_id: planned.customer_id.clone(),
        price: price.clone(),
        quantity: planned.quantity,
        trial_days,
        payment_method: planned.payment_method.clone(),
        metadata: planned.metadata.clone(),
        idempotency_key: claimed.external_key("subscription"),
    };
    let quote_key = request.idempotency_key.clone();
    let state = state.clone();
    claimed
        .then(async move {
            let subs = gateway_subscriptions_of(&gateway)?;
            let quote = match &planned.quote_id {
                Some(id) => {
                    let q = crate::decisions::hold_quote(
                        &state,
                        id,
                        &planned.customer_id,
                        &quote_key,
                        true,
                    )
                    .await?;
                    if q.discount_minor != 0 {
                        // The gateway bills every period itself, at its copy of our price.
                        quotes::release(&state.store, &q.id, &quote_key).await?;
                        return Err(AppError::invalid(
                            "quote_id",
                            format!(
                                "quote {} prices below the list price, and subscriptions billed \
                                 by {} are charged the list price; quote it again at list price \
                                 or bill it with the sandbox gateway",
                                q.id,
                                gateway.name()
                            ),
                        ));
                    }
                    Some(q)
                }
                None => None,
            };
            let answer = match subs.create_subscription(request).await {
                Ok(a) => Ok(a),
                Err(GatewayError::Declined {
                    decline_code,
                    message,
                }) => Err((decline_code, message)),
                Err(e) => {
                    if let Some(q) = &quote {
                        let _ = quotes::release(&state.store, &q.id, &quote_key).await;
                    }
                    return Err(gateway_error(e));
                }
            };
            Ok(write::change(move |tx| {
                Box::pin(async move {
                    let answer = match answer {
                        Ok(a) => a,
                        // Nothing was started at the gateway, and nothing is stored here.
                        Err((decline_code, message)) => {
                            if let Some(q) = &quote {
                                quotes::release_in(tx, &q.id, &quote_key).await?;
                            }
                            let body = serde_json::json!({"error": {
                                "code": "card_declined",
                                "message": message,
                                "decline_code": decline_code,
                                "field": "payment_method",
                            }});
                            return Ok(Written::json(StatusCode::PAYMENT_REQUIRED, &body, None));
                        }
                    };
                    let now = Timestamp::now();
                    if let Some(q) = &quote {
                        quotes::mark_used(tx, &q.id, &planned.id, now).await?;
                    }
                    let sub =
                        gateway_subscriptions::start(tx, planned, &price, &answer, now).await?;
                    let mut view = SubscriptionView::from(&sub);
                    view.pending_invoice_lines = Some(Vec::new());
                    Ok(write::created(&sub.id, &view))
                })
            }))
        })
        .await
}

fn gateway_subscriptions_of(
    gateway: &std::sync::Arc<dyn hephaestus_billing::gateway::Gateway>,
) -> ApiResult<&dyn SubscriptionGateway> {
    gateway.subscriptions().ok_or_else(|| {
        AppError::Unavailable(format!(
            "this subscription is billed by a gateway other than the configured one ({})",
            gateway.name()
        ))
    })
}

/// Stores the gateway's answer to a change asked through the API, and answers with it.
async fn apply_answer(
    tx: &mut hephaestus_store::Tx,
    asked: &Subscription,
    answer: &GatewaySubscription,
    local: impl FnOnce(&mut Subscription),
) -> ApiResult<Written> {
    let current = locked(tx, &asked.id).await?;
    let next =
        gateway_subscriptions::apply_answer(tx, asked, current, answer, local, Timestamp::now())
            .await?;
    Ok(Written::json(
        StatusCode::OK,
        &SubscriptionView::from(&next),
        Some(&next.id),
    ))
}

/// A first charge that did not succeed: the documented 402 for a decline; a charge still
/// waiting on the customer or the gateway cannot start a subscription either.
fn declined(payment: &hephaestus_core::payment::Payment) -> Written {
    if payment.status == hephaestus_core::payment::PaymentStatus::Failed {
        return charge_answer(payment);
    }
    let body = serde_json::json!({
        "error": {
            "code": "payment_incomplete",
            "message": format!(
                "the first payment is {}; the subscription was not started",
                payment.status
            ),
            "payment_id": payment.id,
        }
    });
    Written::json(StatusCode::PAYMENT_REQUIRED, &body, Some(&payment.id))
}

async fn validate_create(
    state: &AppState,
    req: CreateSubscription,
) -> ApiResult<(engine::Planned, Price)> {
    if !ids::is_well_formed(prefix::CUSTOMER, &req.customer_id) {
        return Err(AppError::invalid(
            "customer_id",
            "must be a customer id like cus_…",
        ));
    }
    let mut quantity = check_quantity(req.quantity)?;
    if let Some(t) = req.trial_days
        && !(0..=MAX_TRIAL_DAYS).contains(&t)
    {
        return Err(AppError::invalid(
            "trial_days",
            format!("must be 0 to {MAX_TRIAL_DAYS}"),
        ));
    }
    check_payment_method(&req.payment_method)?;
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    let quote = match &req.quote_id {
        None => None,
        Some(id) => {
            if !ids::is_well_formed(prefix::QUOTE, id) {
                return Err(AppError::invalid(
                    "quote_id",
                    "must be a quote id like quo_…",
                ));
            }
            let q = quotes::get(&state.store, id)
                .await?
                .ok_or_else(|| AppError::invalid("quote_id", format!("no such quote: {id}")))?;
            if q.customer_id != req.customer_id {
                return Err(AppError::invalid(
                    "quote_id",
                    format!("quote {id} was made for another customer"),
                ));
            }
            if req.price_id.as_ref().is_some_and(|p| *p != q.price_id) {
                return Err(AppError::invalid(
                    "price_id",
                    format!("must be the quoted {} (or left out)", q.price_id),
                ));
            }
            if quantity.is_some_and(|n| n != q.quantity) {
                return Err(AppError::invalid(
                    "quantity",
                    format!("must be the quoted {} (or left out)", q.quantity),
                ));
            }
            quantity = Some(q.quantity);
            Some(q)
        }
    };
    let quantity = quantity.unwrap_or(1);
    let price_id = match (&req.price_id, &quote) {
        (_, Some(q)) => q.price_id.clone(),
        (Some(p), None) => p.clone(),
        (None, None) => {
            return Err(AppError::invalid(
                "price_id",
                "is required (or give quote_id)",
            ));
        }
    };
    let price = load_price(state, &price_id).await?;
    let Some(total) = engine::total_of(&price, quantity) else {
        return Err(AppError::invalid(
            "quantity",
            "makes the subscription's total too large",
        ));
    };
    if let Some(q) = &quote
        && total != q.list_amount_minor
    {
        return Err(AppError::invalid(
            "quote_id",
            format!(
                "the list price of quote {} no longer holds; ask for a new quote",
                q.id
            ),
        ));
    }
    let trial = req.trial_days.or(price.trial_days).unwrap_or(0) > 0;
    if !trial && req.payment_method.is_none() {
        return Err(AppError::invalid(
            "payment_method",
            "is required when the subscription starts without a trial",
        ));
    }
    crate::customers::live(state, &req.customer_id).await?;
    let now = business_now(&state.store).await?;
    let planned = engine::plan(
        NewSubscription {
            customer_id: req.customer_id,
            price: price.clone(),
            quantity,
            trial_days: req.trial_days,
            payment_method: req.payment_method,
            metadata,
            gateway: state.gateway.name().to_string(),
            quote: quote.map(|q| (q.id, q.discount_minor)),
        },
        now,
    )?;
    Ok((planned, price))
}

async fn load(state: &AppState, id: String) -> ApiResult<Subscription> {
    load_by_id("subscription", prefix::SUBSCRIPTION, id, |id| async move {
        subscriptions::get(&state.store, &id).await
    })
    .await
}

async fn detailed(state: &AppState, sub: &Subscription) -> ApiResult<SubscriptionView> {
    let mut view = SubscriptionView::from(sub);
    let latest = subscriptions::list_invoices(
        &state.store,
        &subscriptions::InvoiceQuery {
            limit: 1,
            subscription_id: Some(sub.id.clone()),
            ..Default::default()
        },
    )
    .await?;
    view.latest_invoice = latest.first().map(InvoiceView::from);
    let pending = subscriptions::pending_lines_of(&state.store, &sub.id).await?;
    view.pending_invoice_lines = Some(pending.iter().map(InvoiceLineView::from).collect());
    Ok(view)
}

/// One subscription, with its latest invoice and any prorations waiting for the next.
#[utoipa::path(
    get, path = "/api/v1/revenue/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "`sub_…`")),
    responses((status = 200, body = SubscriptionView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<SubscriptionView>> {
    let sub = load(&state, id).await?;
    Ok(axum::Json(detailed(&state, &sub).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    /// trialing, active, past_due, canceled or unpaid
    pub status: Option<String>,
    pub price_id: Option<String>,
}

fn check_id(field: &str, prefix: &str, id: &Option<String>) -> ApiResult<()> {
    match id {
        Some(v) if !ids::is_well_formed(prefix, v) => Err(AppError::invalid(
            field,
            format!("must be an id like {prefix}_…"),
        )),
        _ => Ok(()),
    }
}

#[utoipa::path(
    get, path = "/api/v1/revenue/subscriptions", tag = "subscriptions",
    params(ListParams),
    responses((status = 200, body = crate::openapi::Page<SubscriptionView>), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, starting_after) =
        page_params(params.limit, params.starting_after, prefix::SUBSCRIPTION)?;
    check_id("customer_id", prefix::CUSTOMER, &params.customer_id)?;
    check_id("price_id", prefix::PRICE, &params.price_id)?;
    if let Some(s) = &params.status {
        s.parse::<SubscriptionStatus>()
            .map_err(|m| AppError::invalid("status", m))?;
    }
    let rows = subscriptions::list(
        &state.store,
        &subscriptions::ListQuery {
            limit: limit + 1,
            starting_after,
            customer_id: params.customer_id,
            status: params.status,
            price_id: params.price_id,
        },
    )
    .await?;
    Ok(axum::Json(write::page_of(rows, limit, |s| {
        SubscriptionView::from(s)
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    /// A new recurring price in the same currency and interval.
    pub price_id: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub quantity: Option<i64>,
    pub payment_method: Option<String>,
    /// Cancel when the current period ends (true), or take that back (false).
    pub cancel_at_period_end: Option<bool>,
    /// `create_prorations` (default): credit unused time and charge the new plan's
    /// remaining time on the next invoice. `none`: the new plan starts with the next period.
    pub proration_behavior: Option<String>,
    pub metadata: Option<Metadata>,
}

fn update_error(e: UpdateError) -> AppError {
    match e {
        UpdateError::Ended(id) => AppError::Invalid {
            field: None,
            message: format!("subscription {id} has ended and cannot be changed"),
        },
        UpdateError::Invalid(field, message) => AppError::invalid(field, message),
        UpdateError::Store(e) => e.into(),
    }
}

/// Changes the price, quantity, payment method or cancellation of a subscription. A new
/// price or quantity mid-period is prorated by the time left, on the next invoice.
#[utoipa::path(
    post, path = "/api/v1/revenue/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = UpdateSubscription,
    responses((status = 200, body = SubscriptionView), (status = 400, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<UpdateSubscription>,
) -> Response {
    let prepared = async {
        let sub = load(&state, id).await?;
        let req = body.value;
        let prorate = match req.proration_behavior.as_deref() {
            None | Some("create_prorations") => true,
            Some("none") => false,
            Some(_) => {
                return Err(AppError::invalid(
                    "proration_behavior",
                    "must be create_prorations or none",
                ));
            }
        };
        let quantity = check_quantity(req.quantity)?;
        check_payment_method(&req.payment_method)?;
        if let Some(m) = &req.metadata {
            validate_metadata(m)?;
        }
        let price = match &req.price_id {
            Some(p) => Some(load_price(&state, p).await?),
            None => None,
        };
        let current = catalog::get_price(&state.store, &sub.price_id)
            .await?
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("price {} missing", sub.price_id)))?;
        let change = Update {
            price,
            quantity,
            payment_method: req.payment_method,
            cancel_at_period_end: req.cancel_at_period_end,
            metadata: req.metadata,
            prorate,
        };
        Ok::<_, AppError>((sub, current, change, business_now(&state.store).await?))
    }
    .await;
    let (sub, current, change, now) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(gateway_id) = sub.gateway_id.clone() {
        return update_at_gateway(
            &state, &auth, &meta, &body.raw, sub, gateway_id, &current, change,
        )
        .await;
    }
    let id = sub.id;
    write::run(
        &state,
        &auth.0,
        &meta,
        &body.raw,
        write::change(move |tx| {
            Box::pin(async move {
                let sub = locked(tx, &id).await?;
                if current.id != sub.price_id {
                    return Err(price_moved(&sub.price_id));
                }
                let sub = engine::update(tx, sub, &current, change, now)
                    .await
                    .map_err(update_error)?;
                Ok(Written::json(
                    StatusCode::OK,
                    &SubscriptionView::from(&sub),
                    Some(&sub.id),
                ))
            })
        }),
    )
    .await
}

/// Sends a change of a subscription the gateway bills, and stores its answer.
#[allow(clippy::too_many_arguments)]
async fn update_at_gateway(
    state: &AppState,
    auth: &WriteKey,
    meta: &RequestMeta,
    raw: &[u8],
    sub: Subscription,
    gateway_id: String,
    current: &Price,
    change: Update,
) -> Response {
    if let Err(e) = check_change(&sub, current, &change).map_err(update_error) {
        return e.into_response();
    }
    let claimed = match write::claim(state, &auth.0, meta, raw).await {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let gateway = state.gateway.clone();
    let request = SubscriptionChange {
        gateway_id,
        customer_id: sub.customer_id.clone(),
        price: change.price.clone(),
        quantity: change.quantity,
        prorate: change.prorate,
        cancel_at_period_end: change.cancel_at_period_end,
        payment_method: change.payment_method.clone(),
        idempotency_key: claimed.external_key("subscription-change"),
    };
    let asked = sub;
    claimed
        .then(async move {
            let subs = gateway_subscriptions_of(&gateway)?;
            let answer = subs
                .change_subscription(request)
                .await
                .map_err(gateway_error)?;
            Ok(write::change(move |tx| {
                Box::pin(async move {
                    apply_answer(tx, &asked, &answer, |next| {
                        if let Some(pm) = change.payment_method {
                            next.payment_method = Some(pm);
                        }
                        if let Some(m) = change.metadata {
                            next.metadata = m;
                        }
                    })
                    .await
                })
            }))
        })
        .await
}

/// The subscription's price changed between reading it and locking the row.
fn price_moved(id: &str) -> AppError {
    AppError::Conflict {
        code: "subscription_changed",
        message: format!(
            "the subscription moved to price {id} while this request was prepared; read it and retry"
        ),
        details: serde_json::Map::new(),
    }
}

async fn locked(tx: &mut hephaestus_store::Tx, id: &str) -> ApiResult<Subscription> {
    subscriptions::get_for_update(tx, id)
        .await?
        .ok_or_else(|| AppError::NotFound {
            kind: "subscription",
            id: id.to_string(),
        })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    /// `true`: keep it until the current period ends. Default `false`: end it now.
    pub at_period_end: Option<bool>,
}

/// Cancels now (nothing more is billed; an invoice being collected is voided) or at the end
/// of the current period.
#[utoipa::path(
    post, path = "/api/v1/revenue/subscriptions/{id}/cancel", tag = "subscriptions",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CancelSubscription,
    responses((status = 200, body = SubscriptionView), (status = 400, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["write"]))
)]
pub async fn cancel(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<CancelSubscription>,
) -> Response {
    let prepared = async {
        let sub = load(&state, id).await?;
        let price = catalog::get_price(&state.store, &sub.price_id)
            .await?
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("price {} missing", sub.price_id)))?;
        Ok::<_, AppError>((sub, price, business_now(&state.store).await?))
    }
    .await;
    let (sub, price, now) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let at_period_end = body.value.at_period_end.unwrap_or(false);
    if let Some(gateway_id) = sub.gateway_id.clone() {
        return cancel_at_gateway(
            &state,
            &auth,
            &meta,
            &body.raw,
            sub,
            gateway_id,
            at_period_end,
        )
        .await;
    }
    let id = sub.id;
    write::run(
        &state,
        &auth.0,
        &meta,
        &body.raw,
        write::change(move |tx| {
            Box::pin(async move {
                let sub = locked(tx, &id).await?;
                if sub.price_id != price.id {
                    return Err(price_moved(&sub.price_id));
                }
                let sub = if at_period_end {
                    let change = Update {
                        cancel_at_period_end: Some(true),
                        ..Default::default()
                    };
                    engine::update(tx, sub, &price, change, now).await
                } else {
                    engine::cancel_now(tx, sub, &price, now).await
                }
                .map_err(update_error)?;
                Ok(Written::json(
                    StatusCode::OK,
                    &SubscriptionView::from(&sub),
                    Some(&sub.id),
                ))
            })
        }),
    )
    .await
}

/// Cancels, now or at period end, a subscription the gateway bills, and stores its answer.
async fn cancel_at_gateway(
    state: &AppState,
    auth: &WriteKey,
    meta: &RequestMeta,
    raw: &[u8],
    sub: Subscription,
    gateway_id: String,
    at_period_end: bool,
) -> Response {
    if !sub.status.is_live() && sub.status != SubscriptionStatus::Unpaid {
        return update_error(UpdateError::Ended(sub.id)).into_response();
    }
    let claimed = match write::claim(state, &auth.0, meta, raw).await {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let gateway = state.gateway.clone();
    let key = claimed.external_key("subscription-cancel");
    let customer_id = sub.customer_id.clone();
    let asked = sub;
    claimed
        .then(async move {
            let subs = gateway_subscriptions_of(&gateway)?;
            let answer = if at_period_end {
                subs.change_subscription(SubscriptionChange {
                    gateway_id,
                    customer_id,
                    price: None,
                    quantity: None,
                    prorate: false,
                    cancel_at_period_end: Some(true),
                    payment_method: None,
                    idempotency_key: key,
                })
                .await
            } else {
                subs.cancel_subscription(gateway_id, key).await
            }
            .map_err(gateway_error)?;
            Ok(write::change(move |tx| {
                Box::pin(async move { apply_answer(tx, &asked, &answer, |_| {}).await })
            }))
        })
        .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceParams {
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    /// open, paid, uncollectible or void
    pub status: Option<String>,
}

/// Invoices, newest first, each with its lines.
#[utoipa::path(
    get, path = "/api/v1/revenue/invoices", tag = "subscriptions",
    params(InvoiceParams),
    responses((status = 200, body = crate::openapi::Page<InvoiceView>), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn list_invoices(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<InvoiceParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, starting_after) =
        page_params(params.limit, params.starting_after, prefix::INVOICE)?;
    check_id("customer_id", prefix::CUSTOMER, &params.customer_id)?;
    check_id(
        "subscription_id",
        prefix::SUBSCRIPTION,
        &params.subscription_id,
    )?;
    if let Some(s) = &params.status {
        s.parse::<hephaestus_core::subscription::InvoiceStatus>()
            .map_err(|m| AppError::invalid("status", m))?;
    }
    let rows = subscriptions::list_invoices(
        &state.store,
        &subscriptions::InvoiceQuery {
            limit: limit + 1,
            starting_after,
            customer_id: params.customer_id,
            subscription_id: params.subscription_id,
            status: params.status,
        },
    )
    .await?;
    Ok(axum::Json(write::page_of(rows, limit, |i| {
        InvoiceView::from(i)
    })))
}

#[utoipa::path(
    get, path = "/api/v1/revenue/invoices/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "`in_…`")),
    responses((status = 200, body = InvoiceView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get_invoice(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<InvoiceView>> {
    let inv = load_by_id("invoice", prefix::INVOICE, id, |id| async move {
        subscriptions::get_invoice(&state.store, &id).await
    })
    .await?;
    Ok(axum::Json(InvoiceView::from(&inv)))
}
