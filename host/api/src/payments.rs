//! `/api/v1/revenue/payments`: one-time payments through the configured gateway, and refunds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hephaestus_billing::charges;
use hephaestus_billing::gateway::{
    Charge, ChargeRequest, GatewayError, GatewayRefund, RefundRequest,
};
use hephaestus_core::Timestamp;
use hephaestus_core::customer::{Metadata, validate_metadata};
use hephaestus_core::event::NewEvent;
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::money::{self, Currency, Money};
use hephaestus_core::payment::{Payment, PaymentStatus, Refund};
use hephaestus_core::validation::check_text;
use hephaestus_store::{attempts, customers, events, payments, quotes};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Map;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{ReadKey, WriteKey};
use crate::customers::page_params;
use crate::error::{ApiResult, AppError};
use crate::extract::{Json, PathId, Query, load_by_id};
use crate::write::{self, RequestMeta, Written};

/// A decimal amount in major units exactly as the client wrote it: a JSON number (`97.00`)
/// or a string (`"97.00"`). Kept as text so it is never rounded through a float.
#[derive(Debug)]
pub struct AmountText(pub String);

impl<'de> Deserialize<'de> for AmountText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(d)?;
        let text = raw.get();
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return Ok(AmountText(inner.to_string()));
        }
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            // A JSON number is the same number however it is spelt: `1e+16` is how many
            // encoders write 10000000000000000. Read exactly; the plain digits go on.
            if text.contains(['e', 'E'])
                && let Ok(exact) = rust_decimal::Decimal::from_scientific(text)
            {
                return Ok(AmountText(exact.normalize().to_string()));
            }
            return Ok(AmountText(text.to_string()));
        }
        Err(serde::de::Error::custom(
            "expected a decimal amount in major units, like 97.00",
        ))
    }
}

/// An amount for responses: a JSON number with exactly the currency's decimals.
pub fn amount_json(m: Money) -> Box<RawValue> {
    RawValue::from_string(m.major_string())
        .unwrap_or_else(|_| RawValue::from_string("0".into()).unwrap_or_default())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    /// `re_…`
    pub id: String,
    pub object: &'static str,
    pub payment_id: String,
    /// Major units, with the currency's decimals.
    #[schema(value_type = f64, example = 25.00)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        RefundView {
            id: r.id.clone(),
            object: "refund",
            payment_id: r.payment_id.clone(),
            amount: amount_json(r.amount),
            amount_minor: r.amount.minor,
            currency: r.amount.currency.code().to_string(),
            status: r.status.clone(),
            reason: r.reason.clone(),
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// `pay_…`
    pub id: String,
    /// The same as `id`, under the name the documented clients read.
    pub payment_id: String,
    pub object: &'static str,
    pub customer_id: String,
    /// Major units, with the currency's decimals (`97.00`; `1000` for JPY).
    #[schema(value_type = f64, example = 97.00)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    /// ISO 4217, uppercase.
    pub currency: String,
    #[schema(value_type = f64, example = 0.00)]
    pub amount_refunded: Box<RawValue>,
    pub amount_refunded_minor: i64,
    /// requires_payment_method, succeeded, requires_action, processing, failed, refunded,
    /// partially_refunded, disputed
    pub status: String,
    /// Null while the payment waits for one (`requires_payment_method`).
    pub payment_method: Option<String>,
    /// The stored quote (`quo_…`) whose amount this payment charged.
    pub quote_id: Option<String>,
    pub description: Option<String>,
    /// `sandbox` or `stripe`.
    pub gateway: String,
    pub gateway_id: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub metadata: Metadata,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Present on reads of one payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
    /// Present on reads of one payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disputes: Option<Vec<DisputeView>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    /// `dsp_…`
    pub id: String,
    pub object: &'static str,
    /// The gateway's id (`dp_…`).
    pub gateway_id: String,
    #[schema(value_type = f64)]
    pub amount: Box<RawValue>,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: Option<String>,
    /// warning_needs_response, needs_response, under_review, won, lost, …
    pub status: String,
    pub funds_withdrawn_minor: i64,
    pub funds_reinstated_minor: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl DisputeView {
    fn of(d: &hephaestus_store::disputes::Dispute, currency: Currency) -> Self {
        DisputeView {
            id: d.id.clone(),
            object: "dispute",
            gateway_id: d.gateway_id.clone(),
            amount: amount_json(Money {
                minor: d.amount_minor,
                currency,
            }),
            amount_minor: d.amount_minor,
            currency: d.currency.clone(),
            reason: d.reason.clone(),
            status: d.status.clone(),
            funds_withdrawn_minor: d.funds_withdrawn_minor,
            funds_reinstated_minor: d.funds_reinstated_minor,
            created_at: Timestamp::from_micros(d.created_at),
            updated_at: Timestamp::from_micros(d.updated_at),
        }
    }
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id.clone(),
            payment_id: p.id.clone(),
            object: "payment",
            customer_id: p.customer_id.clone(),
            amount: amount_json(p.amount),
            amount_minor: p.amount.minor,
            currency: p.amount.currency.code().to_string(),
            amount_refunded: amount_json(Money {
                minor: p.amount_refunded_minor,
                currency: p.amount.currency,
            }),
            amount_refunded_minor: p.amount_refunded_minor,
            status: p.status.as_str().to_string(),
            payment_method: (!p.payment_method.is_empty()).then(|| p.payment_method.clone()),
            quote_id: p.quote_id.clone(),
            description: p.description.clone(),
            gateway: p.gateway.clone(),
            gateway_id: p.gateway_id.clone(),
            decline_code: p.decline_code.clone(),
            failure_message: p.failure_message.clone(),
            metadata: p.metadata.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
            refunds: None,
            disputes: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// `cus_…`
    pub customer_id: String,
    /// Decimal in major units (`97.00`); at most the currency's decimals; above zero and
    /// at most the configured maximum. Required unless `quote_id` is given (then, if
    /// given, it must be the quoted amount).
    #[schema(value_type = Option<f64>, example = 97.00)]
    pub amount: Option<AmountText>,
    /// ISO 4217 code, either case. Required with `amount`.
    #[schema(example = "usd")]
    pub currency: Option<String>,
    /// A test method on the sandbox (`pm_card_visa`, `pm_card_chargeDeclined`, …), or a
    /// Stripe PaymentMethod (`pm_…`) when Stripe is the gateway. Default: the customer's
    /// `default_payment_method`; with neither, the payment is created in
    /// `requires_payment_method` and charged by `POST …/payments/{id}/confirm`.
    #[schema(example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// A stored quote (`quo_…`) of a one-time price for this customer: the payment charges
    /// exactly the quoted amount, and uses the quote up.
    pub quote_id: Option<String>,
    /// Save `payment_method` as the customer's default once the payment succeeds.
    pub save_payment_method: Option<bool>,
    pub description: Option<String>,
    pub metadata: Option<Metadata>,
}

struct ValidPayment {
    customer_id: String,
    /// `None` when the quote decides it.
    amount: Option<Money>,
    payment_method: Option<String>,
    quote_id: Option<String>,
    save_payment_method: bool,
    description: Option<String>,
    metadata: Metadata,
}

fn validate(req: CreatePayment, state: &AppState) -> ApiResult<ValidPayment> {
    if !ids::is_well_formed(prefix::CUSTOMER, &req.customer_id) {
        return Err(AppError::invalid(
            "customer_id",
            "must be a customer id like cus_…",
        ));
    }
    let amount = match (&req.amount, &req.currency) {
        (Some(amount), Some(currency)) => {
            let currency = Currency::parse(currency, "currency")?;
            let max = money::major_to_minor(state.config.max_payment, currency);
            let minor = money::parse_major(&amount.0, currency, max, "amount")?;
            Some(Money { minor, currency })
        }
        (None, None) if req.quote_id.is_some() => None,
        (None, _) => {
            return Err(AppError::invalid(
                "amount",
                "is required (or give quote_id)",
            ));
        }
        (Some(_), None) => return Err(AppError::invalid("currency", "is required with amount")),
    };
    if let Some(pm) = &req.payment_method {
        hephaestus_core::customer::validate_payment_method("payment_method", pm)?;
    }
    if let Some(d) = &req.description {
        check_text("description", d, 1000)?;
    }
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    Ok(ValidPayment {
        customer_id: req.customer_id,
        amount,
        payment_method: req.payment_method,
        quote_id: req.quote_id,
        save_payment_method: req.save_payment_method.unwrap_or(false),
        description: req.description,
        metadata,
    })
}

/// The amount a quoted payment charges: the quote's; an amount the client also gave must
/// be that one.
fn quoted_amount(quote: &quotes::Quote, asked: Option<Money>) -> ApiResult<Money> {
    let currency = Currency::parse(&quote.currency, "currency")
        .map_err(|_| AppError::Internal(anyhow::anyhow!("quote {}: bad currency", quote.id)))?;
    let quoted = Money {
        minor: quote.amount_minor,
        currency,
    };
    if quoted.minor <= 0 {
        return Err(AppError::invalid(
            "quote_id",
            format!("quote {} is for nothing to pay", quote.id),
        ));
    }
    match asked {
        Some(a) if a != quoted => Err(AppError::invalid(
            "amount",
            format!(
                "must be the quoted {} {} (or left out)",
                quoted.major_string(),
                currency
            ),
        )),
        _ => Ok(quoted),
    }
}

pub fn gateway_error(e: GatewayError) -> AppError {
    match e {
        GatewayError::InvalidRequest { param, message } => AppError::Invalid {
            field: param.map(str::to_string),
            message,
        },
        GatewayError::Unavailable(m) => AppError::Unavailable(m),
        // Only subscription calls report a decline this way; they answer it themselves, so
        // this is the fallback of a caller that did not.
        GatewayError::Declined { message, .. } => AppError::invalid("payment_method", message),
    }
}

/// Charges a customer. Answers 201 with the payment when it succeeded or needs the
/// customer's action, and 402 `card_declined` (with `decline_code` and the stored
/// `payment_id`) when the card was declined. With no payment method given and no default
/// on the customer, nothing is charged: the payment is created in `requires_payment_method`
/// (201) and `POST …/payments/{id}/confirm` charges it.
#[utoipa::path(
    post, path = "/api/v1/revenue/payments", tag = "payments",
    request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key never charges twice")),
    responses(
        (status = 201, body = PaymentView),
        (status = 400, body = crate::openapi::ErrorBody),
        (status = 402, body = crate::openapi::ErrorBody, description = "card_declined, with decline_code and payment_id"),
        (status = 409, body = crate::openapi::ErrorBody, description = "quote_expired, quote_used, quote_in_use, or an Idempotency-Key conflict"),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreatePayment>,
) -> Response {
    match create_inner(state, auth, meta, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn create_inner(
    state: AppState,
    auth: WriteKey,
    meta: RequestMeta,
    body: Json<CreatePayment>,
) -> Result<Response, Response> {
    let p = validate(body.value, &state).map_err(IntoResponse::into_response)?;
    let customer = crate::customers::live(&state, &p.customer_id)
        .await
        .map_err(IntoResponse::into_response)?;
    // A quote's amount is fixed when it is made: read here, it is what the attempt records.
    // The quote is held (and checked usable) once the request is claimed.
    let quoted = match &p.quote_id {
        Some(id) => Some(
            crate::decisions::read_quote(&state, id, &customer.id)
                .await
                .map_err(IntoResponse::into_response)?,
        ),
        None => None,
    };
    let amount = match &quoted {
        Some(q) => quoted_amount(q, p.amount).map_err(IntoResponse::into_response)?,
        None => p.amount.ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("validated amount missing")).into_response()
        })?,
    };
    let method = p
        .payment_method
        .clone()
        .or_else(|| customer.default_payment_method.clone());
    let key = write::external_key(&auth.0, &meta, "charge");
    let spec = PaymentSpec {
        customer_id: p.customer_id,
        amount_minor: amount.minor,
        currency: amount.currency.code().to_string(),
        payment_method: method.clone().unwrap_or_default(),
        description: p.description,
        metadata: p.metadata,
        quote_id: p.quote_id,
        priced_by: quoted.as_ref().map(charges::PricedBy::of),
        save: p.save_payment_method,
    };
    let gateway = state.gateway.clone();
    let gateway_name = gateway.name().to_string();
    let Some(method) = method else {
        // Nothing to charge yet: the payment waits for a method, and no gateway is called.
        let claimed = write::claim(&state, &auth.0, &meta, &body.raw).await?;
        return Ok(claimed
            .then(async move {
                if let Some(id) = &spec.quote_id {
                    crate::decisions::hold_quote(&state, id, &spec.customer_id, &key, false)
                        .await?;
                }
                Ok(write::change(move |tx| {
                    Box::pin(async move {
                        let payment = waiting_payment(tx, &gateway_name, spec.attempt()?).await?;
                        Ok(write::created(&payment.id, &PaymentView::from(&payment)))
                    })
                }))
            })
            .await);
    };
    let work = crate::recovery::Work::Payment(spec.clone());
    let (claimed, attempt_id) =
        crate::recovery::claim(&state, &auth.0, &meta, &body.raw, &key, work).await?;
    Ok(claimed
        .then(async move {
            let fail = |state: AppState, e: AppError, quote: Option<String>, key: String| async move {
                if let Some(id) = quote
                    && let Err(e) = quotes::release(&state.store, &id, &key).await
                {
                    tracing::warn!(error = %e, quote = %id, "could not release a quote");
                }
                e
            };
            if let Some(id) = &spec.quote_id
                && let Err(e) =
                    crate::decisions::hold_quote(&state, id, &spec.customer_id, &key, false).await
            {
                forget_attempt(&state, &attempt_id).await;
                return Err(e);
            }
            let request = ChargeRequest {
                payment_method: method,
                ..spec.charge_request(&key)?
            };
            crate::recovery::fault(&state, crate::recovery::FaultPoint::BeforeGatewayCall);
            let charge = gateway.charge(request).await;
            crate::recovery::fault(&state, crate::recovery::FaultPoint::AfterGatewayCall);
            let charge = match charge {
                Ok(c) => c,
                Err(e) => {
                    gateway_failed(&state, &attempt_id, &e).await;
                    return Err(fail(state, gateway_error(e), spec.quote_id.clone(), key).await);
                }
            };
            Ok(write::change(move |tx| {
                Box::pin(async move {
                    finish_payment(tx, &gateway_name, &attempt_id, &key, spec, charge, false).await
                })
            }))
        })
        .await)
}

/// What a payment request knew before it called the gateway: enough to record the outcome,
/// here or by recovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSpec {
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Empty while the payment waits for one.
    pub payment_method: String,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// Held under the gateway call's key until the outcome is recorded.
    pub quote_id: Option<String>,
    pub priced_by: Option<charges::PricedBy>,
    pub save: bool,
}

impl PaymentSpec {
    fn amount(&self) -> ApiResult<Money> {
        let currency = Currency::parse(&self.currency, "currency")
            .map_err(|e| AppError::Internal(anyhow::anyhow!("payment spec: {e}")))?;
        Ok(Money {
            minor: self.amount_minor,
            currency,
        })
    }

    /// The gateway call, under `key`.
    pub fn charge_request(&self, key: &str) -> ApiResult<ChargeRequest> {
        Ok(ChargeRequest {
            customer_id: self.customer_id.clone(),
            amount: self.amount()?,
            payment_method: self.payment_method.clone(),
            description: self.description.clone(),
            idempotency_key: key.to_string(),
            off_session: false,
        })
    }

    fn attempt(&self) -> ApiResult<charges::Attempt> {
        Ok(charges::Attempt {
            customer_id: self.customer_id.clone(),
            amount: self.amount()?,
            payment_method: self.payment_method.clone(),
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            invoice_id: None,
            priced_by: self.priced_by.clone(),
        })
    }
}

/// Records what the gateway did with a payment's charge, and finishes its attempt: the
/// payment, its event, the quote used (or freed by a decline), the method saved. Recovery
/// (`recovering`) first makes sure the charge was not recorded already.
pub async fn finish_payment(
    tx: &mut hephaestus_store::Tx,
    gateway: &str,
    attempt_id: &str,
    key: &str,
    spec: PaymentSpec,
    charge: Charge,
    recovering: bool,
) -> ApiResult<Written> {
    let now = Timestamp::now();
    if recovering {
        crate::recovery::finish(tx, attempt_id).await?;
        // Recorded already when a retry of this request made the same call (after this
        // one's gateway failed and released its key) and recorded it first.
        if let Some(known) = payments::find_by_gateway_id(tx, gateway, &charge.id).await? {
            return Ok(charge_answer(&known));
        }
    } else {
        // With the payment's own rows: a payment's record stays one appended statement.
        attempts::finish_at_commit(tx, attempt_id);
    }
    let held = spec.quote_id.clone().map(|q| (q, key.to_string()));
    let (save, method) = (spec.save, spec.payment_method.clone());
    let payment = charges::record(tx, gateway, spec.attempt()?, &charge, now).await?;
    settle_quote(tx, held, &payment, now).await?;
    if save && payment.status == PaymentStatus::Succeeded {
        customers::set_default_payment_method(tx, &payment.customer_id, &method, now).await?;
    }
    Ok(charge_answer(&payment))
}

/// Recovery found that the gateway never received a payment's charge: the quote it held is
/// free again.
pub async fn never_charged(
    tx: &mut hephaestus_store::Tx,
    spec: &PaymentSpec,
    key: &str,
) -> ApiResult<()> {
    if let Some(q) = &spec.quote_id {
        quotes::release_in(tx, q, key).await?;
    }
    Ok(())
}

/// The gateway refused a call before acting (a bad request, a decline it keeps no record
/// of): there is nothing for recovery to find. When it could not be reached, it may have
/// acted all the same: the attempt is left for recovery, which asks it once the call can no
/// longer land, and records what it did — unless a retry records it first.
pub(crate) async fn gateway_failed(state: &AppState, attempt_id: &str, e: &GatewayError) {
    if matches!(e, GatewayError::Unavailable(_)) {
        if let Err(e) = attempts::orphan(&state.store, attempt_id).await {
            tracing::warn!(attempt = %attempt_id, error = %e, "could not hand an attempt to recovery");
        }
        return;
    }
    forget_attempt(state, attempt_id).await;
}

pub(crate) async fn forget_attempt(state: &AppState, attempt_id: &str) {
    if let Err(e) = attempts::forget(&state.store, attempt_id).await {
        tracing::warn!(attempt = %attempt_id, error = %e, "could not remove a gateway attempt; recovery settles it");
    }
}

/// Stores a payment that waits for a payment method, with its event: nothing was charged.
async fn waiting_payment(
    tx: &mut hephaestus_store::Tx,
    gateway: &str,
    attempt: charges::Attempt,
) -> Result<Payment, AppError> {
    let now = Timestamp::now();
    let payment = Payment {
        id: ids::new_id(prefix::PAYMENT),
        customer_id: attempt.customer_id,
        amount: attempt.amount,
        amount_refunded_minor: 0,
        status: PaymentStatus::RequiresPaymentMethod,
        payment_method: String::new(),
        description: attempt.description,
        gateway: gateway.to_string(),
        gateway_id: None,
        decline_code: None,
        failure_message: None,
        metadata: attempt.metadata,
        created_at: now,
        updated_at: now,
        gateway_event_at: None,
        invoice_id: None,
        quote_id: attempt.priced_by.as_ref().map(|q| q.quote_id.clone()),
    };
    payments::insert(tx, &payment).await?;
    if let Some(q) = &payment.quote_id {
        // The payment holds the quoted amount from now on.
        quotes::mark_used(tx, q, &payment.id, now).await?;
    }
    if let Some(event) = charges::payment_event(&payment, attempt.priced_by.as_ref(), now) {
        events::append(tx, event);
    }
    Ok(payment)
}

/// Marks the held quote used by `payment`, or frees it when the card was declined (nothing
/// was charged, so the customer may pay the quote with another card).
async fn settle_quote(
    tx: &mut hephaestus_store::Tx,
    held: Option<(String, String)>,
    payment: &Payment,
    now: Timestamp,
) -> Result<(), AppError> {
    let Some((id, key)) = held else {
        return Ok(());
    };
    if payment.status == PaymentStatus::Failed {
        quotes::release_in(tx, &id, &key).await?;
    } else if !quotes::mark_used(tx, &id, &payment.id, now).await? {
        // Only when this request outlived its hold on the quote and another used it: the
        // money moved all the same, so the payment stands.
        tracing::error!(quote = %id, payment = %payment.id, "a quote was used twice");
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayment {
    /// Default: the customer's `default_payment_method`.
    #[schema(example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// Save `payment_method` as the customer's default once the payment succeeds.
    pub save_payment_method: Option<bool>,
}

/// Charges a payment created in `requires_payment_method`. A declined card answers 402
/// and leaves the payment waiting for another method (as Stripe does); any other status
/// is a 409 `payment_not_confirmable`.
#[utoipa::path(
    post, path = "/api/v1/revenue/payments/{id}/confirm", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ConfirmPayment,
    responses(
        (status = 200, body = PaymentView),
        (status = 400, body = crate::openapi::ErrorBody),
        (status = 402, body = crate::openapi::ErrorBody, description = "card_declined, with decline_code and payment_id"),
        (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn confirm(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<ConfirmPayment>,
) -> Response {
    let payment = match load(&state, id).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let req = body.value;
    if let Some(pm) = &req.payment_method
        && let Err(e) = hephaestus_core::customer::validate_payment_method("payment_method", pm)
    {
        return AppError::from(e).into_response();
    }
    let attempt = match payments::confirm_state(&state.store, &payment.id).await {
        Ok(Some((true, n))) => n,
        Ok(_) => return not_confirmable(&payment).into_response(),
        Err(e) => return AppError::from(e).into_response(),
    };
    let customer = match crate::customers::live(&state, &payment.customer_id).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(method) = req
        .payment_method
        .or_else(|| customer.default_payment_method.clone())
    else {
        return AppError::invalid(
            "payment_method",
            "is required: the customer has no default_payment_method",
        )
        .into_response();
    };
    let spec = ConfirmSpec {
        payment_id: payment.id.clone(),
        attempt,
        method,
        save: req.save_payment_method.unwrap_or(false),
    };
    let request = spec.charge_request(&payment, &spec.gateway_key());
    let work = crate::recovery::Work::Confirm(spec.clone());
    let key = request.idempotency_key.clone();
    let (claimed, attempt_id) =
        match crate::recovery::claim(&state, &auth.0, &meta, &body.raw, &key, work).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
    let gateway = state.gateway.clone();
    claimed
        .then(async move {
            crate::recovery::fault(&state, crate::recovery::FaultPoint::BeforeGatewayCall);
            let charge = gateway.charge(request).await;
            crate::recovery::fault(&state, crate::recovery::FaultPoint::AfterGatewayCall);
            let charge = match charge {
                Ok(c) => c,
                Err(e) => {
                    gateway_failed(&state, &attempt_id, &e).await;
                    return Err(gateway_error(e));
                }
            };
            Ok(write::change(move |tx| {
                Box::pin(async move { finish_confirm(tx, &attempt_id, spec, charge).await })
            }))
        })
        .await
}

/// What a confirmation knew before it called the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmSpec {
    pub payment_id: String,
    /// The payment's confirmation attempt this is (its `confirm_attempts` then).
    pub attempt: i64,
    pub method: String,
    pub save: bool,
}

impl ConfirmSpec {
    /// Named by the payment and the attempt, not the request: two concurrent confirmations
    /// make one charge (a different method under the same key is refused by the gateway).
    fn gateway_key(&self) -> String {
        format!("confirm-{}-{}", self.payment_id, self.attempt)
    }

    pub fn charge_request(&self, payment: &Payment, key: &str) -> ChargeRequest {
        ChargeRequest {
            customer_id: payment.customer_id.clone(),
            amount: payment.amount,
            payment_method: self.method.clone(),
            description: payment.description.clone(),
            idempotency_key: key.to_string(),
            off_session: false,
        }
    }
}

/// Records what the gateway did with a confirmation's charge, and finishes its attempt.
pub async fn finish_confirm(
    tx: &mut hephaestus_store::Tx,
    attempt_id: &str,
    spec: ConfirmSpec,
    charge: Charge,
) -> ApiResult<Written> {
    crate::recovery::finish(tx, attempt_id).await?;
    let payment = payments::get_for_update(tx, &spec.payment_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("payment vanished")))?;
    let (method, save, attempt) = (spec.method, spec.save, spec.attempt);
    let now = Timestamp::now();
    let status = charges::status_of(&charge);
    let next = Payment {
        status: if status == PaymentStatus::Failed {
            PaymentStatus::RequiresPaymentMethod
        } else {
            status
        },
        payment_method: method.clone(),
        gateway_id: Some(charge.id.clone()),
        decline_code: charge.decline_code.clone(),
        failure_message: charge.failure_message.clone(),
        updated_at: now,
        ..payment
    };
    if !payments::confirm(tx, &next, attempt, now).await? {
        let current = payments::get_for_update(tx, &next.id).await?;
        return Err(match current {
            Some(p) => not_confirmable(&p),
            None => AppError::Internal(anyhow::anyhow!("payment vanished")),
        });
    }
    let quote = match &next.quote_id {
        Some(q) => quotes::get_in(tx, q).await?,
        None => None,
    };
    let priced_by = quote.as_ref().map(charges::PricedBy::of);
    // The event names what happened: a decline, though the payment waits on.
    let announced = Payment {
        status,
        ..next.clone()
    };
    if let Some(e) = charges::payment_event(&announced, priced_by.as_ref(), now) {
        events::append(tx, e);
    }
    if save && status == PaymentStatus::Succeeded {
        customers::set_default_payment_method(tx, &next.customer_id, &method, now).await?;
    }
    if status == PaymentStatus::Failed {
        return Ok(charge_answer(&announced));
    }
    Ok(Written::json(
        StatusCode::OK,
        &PaymentView::from(&next),
        Some(&next.id),
    ))
}

fn not_confirmable(p: &Payment) -> AppError {
    AppError::Conflict {
        code: "payment_not_confirmable",
        message: format!(
            "payment {} is {}; only a payment in requires_payment_method can be confirmed",
            p.id, p.status
        ),
        details: Map::new(),
    }
}

/// 201 with the payment, or the documented 402 for a declined card (the declined payment
/// is stored, and named in the answer).
pub fn charge_answer(payment: &Payment) -> Written {
    let view = PaymentView::from(payment);
    if payment.status == PaymentStatus::Failed {
        let body = Declined {
            error: DeclinedError {
                code: "card_declined",
                message: payment
                    .failure_message
                    .as_deref()
                    .unwrap_or("Your card was declined."),
                decline_code: payment.decline_code.as_deref(),
                payment_id: &payment.id,
                payment: &view,
            },
        };
        return Written::json(StatusCode::PAYMENT_REQUIRED, &body, Some(&payment.id));
    }
    write::created(&payment.id, &view)
}

/// The 402 answer to a declined card: the standard error shape plus the stored payment.
#[derive(Serialize)]
struct Declined<'a> {
    error: DeclinedError<'a>,
}

#[derive(Serialize)]
struct DeclinedError<'a> {
    code: &'static str,
    message: &'a str,
    decline_code: Option<&'a str>,
    payment_id: &'a str,
    payment: &'a PaymentView,
}

async fn load(state: &AppState, id: String) -> ApiResult<Payment> {
    load_by_id("payment", prefix::PAYMENT, id, |id| async move {
        payments::get(&state.store, &id).await
    })
    .await
}

/// One payment, with its refunds.
#[utoipa::path(
    get, path = "/api/v1/revenue/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`")),
    responses((status = 200, body = PaymentView), (status = 404, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: ReadKey,
    PathId(id): PathId,
) -> ApiResult<axum::Json<PaymentView>> {
    let payment = load(&state, id).await?;
    let refunds = payments::refunds_of(&state.store, &payment.id).await?;
    let mut view = PaymentView::from(&payment);
    view.refunds = Some(refunds.iter().map(RefundView::from).collect());
    let disputes = hephaestus_store::disputes::of_payment(&state.store, &payment.id).await?;
    view.disputes = Some(
        disputes
            .iter()
            .map(|d| DisputeView::of(d, payment.amount.currency))
            .collect(),
    );
    Ok(axum::Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100, default 10.
    pub limit: Option<i64>,
    /// A payment id from the previous page (lists run newest first).
    pub starting_after: Option<String>,
    pub customer_id: Option<String>,
    /// succeeded, requires_action, processing, failed, refunded, partially_refunded, disputed
    pub status: Option<String>,
    /// Created at or after this Unix time (seconds).
    pub created_gte: Option<i64>,
    /// Created at or before this Unix time (seconds).
    pub created_lte: Option<i64>,
}

fn unix_secs(field: &str, secs: Option<i64>) -> ApiResult<Option<Timestamp>> {
    match secs {
        None => Ok(None),
        Some(s) if (0..=253_402_300_799).contains(&s) => {
            Ok(Some(Timestamp::from_micros(s * 1_000_000)))
        }
        Some(_) => Err(AppError::invalid(field, "must be a Unix time in seconds")),
    }
}

#[utoipa::path(
    get, path = "/api/v1/revenue/payments", tag = "payments",
    params(ListParams),
    responses((status = 200, body = crate::openapi::Page<PaymentView>), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadKey,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (limit, starting_after) =
        page_params(params.limit, params.starting_after, prefix::PAYMENT)?;
    let status = params
        .status
        .map(|s| s.parse::<PaymentStatus>())
        .transpose()
        .map_err(|m| AppError::invalid("status", m))?;
    if let Some(c) = &params.customer_id
        && !ids::is_well_formed(prefix::CUSTOMER, c)
    {
        return Err(AppError::invalid(
            "customer_id",
            "must be a customer id like cus_…",
        ));
    }
    let rows = payments::list(
        &state.store,
        &payments::ListQuery {
            limit: limit + 1,
            starting_after,
            customer_id: params.customer_id,
            status,
            created_gte: unix_secs("created_gte", params.created_gte)?,
            created_lte: unix_secs("created_lte", params.created_lte)?,
        },
    )
    .await?;
    Ok(axum::Json(write::page_of(rows, limit, |r| {
        PaymentView::from(r)
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Decimal in major units; default: everything not yet refunded.
    #[schema(value_type = Option<f64>, example = 25.00)]
    pub amount: Option<AmountText>,
    /// duplicate, fraudulent or requested_by_customer.
    pub reason: Option<String>,
}

/// Refunds all or part of a payment. Never more than what is left.
#[utoipa::path(
    post, path = "/api/v1/revenue/payments/{id}/refunds", tag = "payments",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateRefund,
    responses(
        (status = 201, body = RefundView),
        (status = 400, body = crate::openapi::ErrorBody, description = "amount above what is left, or payment not refundable"),
        (status = 404, body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = ["write"]))
)]
pub async fn refund(
    State(state): State<AppState>,
    auth: WriteKey,
    meta: RequestMeta,
    PathId(id): PathId,
    body: Json<CreateRefund>,
) -> Response {
    let payment = match load(&state, id).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let req = body.value;
    if let Some(r) = &req.reason
        && !matches!(
            r.as_str(),
            "duplicate" | "fraudulent" | "requested_by_customer"
        )
    {
        return AppError::invalid(
            "reason",
            "must be duplicate, fraudulent or requested_by_customer",
        )
        .into_response();
    }
    if !payment.status.is_refundable() {
        return AppError::Invalid {
            field: None,
            message: format!(
                "payment {} is {} and cannot be refunded",
                payment.id, payment.status
            ),
        }
        .into_response();
    }
    let left = payment.refundable_minor();
    let currency = payment.amount.currency;
    let amount_minor = match &req.amount {
        None => left,
        Some(text) => match money::parse_major(&text.0, currency, money::MAX_MINOR, "amount") {
            Ok(m) => m,
            Err(e) => return AppError::from(e).into_response(),
        },
    };
    if amount_minor > left {
        let left = Money {
            minor: left,
            currency,
        };
        return AppError::invalid(
            "amount",
            format!(
                "is more than the {} {} left to refund",
                left.major_string(),
                currency
            ),
        )
        .into_response();
    }
    let Some(charge_id) = payment.gateway_id.clone() else {
        return AppError::Internal(anyhow::anyhow!("payment {} has no gateway id", payment.id))
            .into_response();
    };
    let spec = RefundSpec {
        payment_id: payment.id.clone(),
        charge_id,
        amount_minor,
        currency: currency.code().to_string(),
        reason: req.reason.clone(),
    };
    let key = write::external_key(&auth.0, &meta, "refund");
    let request = match spec.refund_request(&key) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let work = crate::recovery::Work::Refund(spec.clone());
    let (claimed, attempt_id) =
        match crate::recovery::claim(&state, &auth.0, &meta, &body.raw, &key, work).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
    let gateway = state.gateway.clone();
    claimed
        .then(async move {
            crate::recovery::fault(&state, crate::recovery::FaultPoint::BeforeGatewayCall);
            let refunded = gateway.refund(request).await;
            crate::recovery::fault(&state, crate::recovery::FaultPoint::AfterGatewayCall);
            let refunded = match refunded {
                Ok(r) => r,
                Err(e) => {
                    gateway_failed(&state, &attempt_id, &e).await;
                    return Err(gateway_error(e));
                }
            };
            Ok(write::change(move |tx| {
                Box::pin(async move { finish_refund(tx, &attempt_id, spec, refunded).await })
            }))
        })
        .await
}

/// What a refund request knew before it called the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundSpec {
    pub payment_id: String,
    /// The gateway's id of the payment's charge.
    pub charge_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: Option<String>,
}

impl RefundSpec {
    fn currency(&self) -> ApiResult<Currency> {
        Currency::parse(&self.currency, "currency")
            .map_err(|e| AppError::Internal(anyhow::anyhow!("refund spec: {e}")))
    }

    /// The gateway call, under `key`.
    pub fn refund_request(&self, key: &str) -> ApiResult<RefundRequest> {
        Ok(RefundRequest {
            charge_id: self.charge_id.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency()?,
            reason: self.reason.clone(),
            idempotency_key: key.to_string(),
        })
    }
}

/// Records a refund the gateway made, and finishes its attempt.
pub async fn finish_refund(
    tx: &mut hephaestus_store::Tx,
    attempt_id: &str,
    spec: RefundSpec,
    refunded: GatewayRefund,
) -> ApiResult<Written> {
    crate::recovery::finish(tx, attempt_id).await?;
    let now = Timestamp::now();
    let currency = spec.currency()?;
    // Lock the payment, then see whether the gateway's report of this refund (a
    // `charge.refunded` webhook) got here first: then it is recorded.
    payments::get_for_update(tx, &spec.payment_id).await?;
    if let Some(known) = payments::refund_by_gateway_id(tx, &refunded.id).await? {
        return Ok(write::created(&known.id, &RefundView::from(&known)));
    }
    let updated = payments::add_refunded(tx, &spec.payment_id, spec.amount_minor, now)
        .await?
        .ok_or_else(|| AppError::Conflict {
            code: "refund_conflict",
            message: "the payment changed while it was being refunded; read it and retry".into(),
            details: Map::new(),
        })?;
    let refund = Refund {
        id: ids::new_id(prefix::REFUND),
        payment_id: spec.payment_id,
        amount: Money {
            minor: spec.amount_minor,
            currency,
        },
        status: refunded.status,
        reason: spec.reason,
        gateway_id: Some(refunded.id),
        created_at: now,
    };
    payments::insert_refund(tx, &refund).await?;
    events::append(
        tx,
        NewEvent::refund_created(&refund, &updated.customer_id, now),
    );
    Ok(write::created(&refund.id, &RefundView::from(&refund)))
}
