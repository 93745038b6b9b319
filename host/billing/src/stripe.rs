//! The Stripe gateway: charges are PaymentIntents, created and confirmed in one call, for a
//! Stripe customer that mirrors ours; refunds are Refunds of a PaymentIntent; `fetch`
//! retrieves a PaymentIntent for reconciliation. Selected by `STRIPE_SECRET_KEY`;
//! `STRIPE_API_BASE` points the client at any Stripe-compatible server.
//!
//! **Customers.** Our `cus_…` is mirrored by a Stripe customer created the first time it is
//! charged, under the Idempotency-Key `hephaestus-customer-{our id}` (so two first charges
//! at once make one), and remembered in `gateway_customers`. It carries our id in its
//! metadata (`hephaestus_customer_id`) and, unless ours was erased, the email and name.
//! Erasing ours deletes it at Stripe ([`crate::erasure`]), which also ends every Stripe
//! subscription it has (Stripe's events then end our mirrors of them).
//!
//! **Idempotency.** Every call that creates something at Stripe sends an Idempotency-Key:
//! the one the caller derived for the operation ([`ChargeRequest::idempotency_key`],
//! [`RefundRequest::idempotency_key`]), so a retried request gets Stripe's first answer and
//! never charges or refunds twice.
//!
//! **Charges.** `confirm=true` with the payment method, `off_session` when the customer is
//! not there (renewals), and automatic payment methods that never redirect (the API has no
//! page to come back to, so a charge succeeds, fails or waits for 3-D Secure). The
//! PaymentIntent's status maps to [`ChargeStatus`]:
//!
//! | Stripe | here |
//! |---|---|
//! | `succeeded` | `Succeeded` |
//! | `processing`, `requires_confirmation`, `requires_capture` | `Processing` (reconciliation refetches it) |
//! | `requires_action` on-session | `RequiresAction` |
//! | `requires_action` off-session | `Declined`, `authentication_required` |
//! | `requires_payment_method`, `canceled` | `Declined`, with the reason of `last_payment_error` |
//!
//! Errors Stripe answers map to the trait's:
//!
//! | Stripe error | here |
//! |---|---|
//! | HTTP 402 or `type: card_error` (declined, `authentication_required` off-session, expired card, …) | `Ok` with a `Declined` charge: the PaymentIntent named by the error (or by its charge), Stripe's `decline_code` and message |
//! | HTTP 429 (rate limited), 409 (the same key in flight), 401/403 (key refused), 5xx, an unreadable success, network failure, timeout | [`GatewayError::Unavailable`]: retry later with the same key |
//! | any other 4xx (`invalid_request_error`, `idempotency_error`, unknown object) | [`GatewayError::InvalidRequest`], naming our field when Stripe's `param` is one of ours (`payment_method`, `amount`, `currency`) |
//!
//! An error answer whose body is not Stripe's JSON is read by its status all the same
//! ([`crate::stripe_http`] keeps it): a bare 404 is a 4xx, a proxy's 502 page a 5xx.
//!
//! A decline's reason is Stripe's `decline_code`; when Stripe gives only an error `code`, the
//! code is the reason (`expired_card`, `incorrect_cvc`, …), `card_declined` alone is
//! `generic_decline`, and a failed 3-D Secure (`payment_intent_authentication_failure`) is
//! `authentication_required`, as the sandbox names it ([`decline_reason`]).
//!
//! **Subscriptions** are billed by Stripe itself: see [`crate::stripe_subscriptions`].
//!
//! **Amounts** are sent in the currency's minor units, except ISK and UGX, which Stripe
//! counts in hundredths although they have no decimals ([`to_stripe_amount`],
//! [`from_stripe_amount`]).
//!
//! **Responses** are read into the few fields used here (ids, status, amounts, the last
//! error), not into async-stripe's full resource types: those follow the API version the
//! client pins, and a field that one Stripe-compatible server (or an older account version)
//! shapes differently must not turn a successful charge into an error. Requests, errors and
//! the client itself are async-stripe's.

use std::collections::HashMap;
use std::time::Duration;

use ::stripe::{
    ApiErrors, ApiErrorsType, IdempotencyKey, RequestStrategy, StripeError, StripeRequest,
};
use futures::future::BoxFuture;
use hephaestus_core::money::{Currency, Money};
use hephaestus_core::secret::Secret;
use hephaestus_store::gateway_ids::{self, Mirror};
use hephaestus_store::{Store, customers};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use stripe_core::charge::RetrieveCharge;
use stripe_core::customer::{CreateCustomer, DeleteCustomer};
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, CreatePaymentIntentOffSession,
    ListPaymentIntent, RetrievePaymentIntent,
};
use stripe_core::refund::{CreateRefund, ListRefund};

use crate::gateway::{
    Charge, ChargeRequest, ChargeStatus, Gateway, GatewayError, GatewayRefund, RefundRequest,
};

/// The name payments made here are stored under, and the `gateway` of its customer rows.
pub const NAME: &str = "stripe";

/// The metadata key under which Stripe objects carry our customer id.
pub const CUSTOMER_METADATA_KEY: &str = "hephaestus_customer_id";

/// The metadata key under which a PaymentIntent or refund made here carries the idempotency
/// key it was made with: recovery finds the object of a call whose answer was lost by it.
pub const ATTEMPT_METADATA_KEY: &str = "hephaestus_attempt_key";

/// How many of a customer's newest PaymentIntents (or a charge's newest refunds) recovery
/// looks through for a lost call's object: one Stripe list page. Recovery runs within
/// seconds of the call, so the object is among them unless a customer pays that often.
const RECOVERY_PAGE: i64 = 100;

/// How long one call to Stripe may take before it counts as unavailable.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a decline is called when Stripe's answer gives no reason of its own.
const GENERIC_DECLINE: &str = "generic_decline";

#[derive(Clone)]
pub struct StripeGateway {
    client: crate::stripe_http::StripeHttp,
    pub(crate) store: Store,
    /// Where the client sends requests, for logs (never the key).
    api_base: String,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// Stripe's own API, when `STRIPE_API_BASE` is not set.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

/// Checks a `STRIPE_API_BASE` and gives it the trailing slash the client appends `v1/…` to.
pub fn normalize_api_base(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || url.contains(['?', '#', ' ']) {
        return Err(format!("`{url}` is not a URL like https://api.stripe.com"));
    }
    Ok(if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    })
}

impl StripeGateway {
    /// A gateway using `secret_key`, talking to `api_base` (Stripe itself when `None`).
    pub fn new(store: Store, secret_key: &Secret, api_base: Option<&str>) -> Result<Self, String> {
        let api_base = normalize_api_base(api_base.unwrap_or(DEFAULT_API_BASE))?;
        let client =
            crate::stripe_http::StripeHttp::new(secret_key.expose(), api_base.clone(), TIMEOUT)
                .map_err(|e| format!("cannot set up the Stripe client: {e}"))?;
        Ok(Self {
            client,
            store,
            api_base,
        })
    }

    /// Sends `request` (once, under `idempotency_key` when given) and reads the answer into
    /// `T`, which names only the fields used here.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: &impl StripeRequest,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let mut call = request.build().customize::<miniserde::json::Value>();
        if let Some(key) = idempotency_key {
            let key = IdempotencyKey::new(key)
                .map_err(|e| StripeError::ConfigError(format!("Idempotency-Key: {e}")))?;
            call = call.request_strategy(RequestStrategy::Idempotent(key));
        }
        let value = call.send(&self.client).await?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| StripeError::JSONDeserialize(e.to_string()))
    }

    /// The Stripe customer mirroring ours, created on first use.
    pub(crate) async fn customer_for(&self, customer_id: &str) -> Result<String, GatewayError> {
        if let Some(id) =
            gateway_ids::find(&self.store, NAME, Mirror::Customer, customer_id).await?
        {
            return Ok(id);
        }
        let customer = customers::get(&self.store, customer_id)
            .await?
            .ok_or_else(|| GatewayError::InvalidRequest {
                param: Some("customer_id"),
                message: format!("no such customer: {customer_id}"),
            })?;
        let mut params = CreateCustomer::new().metadata(HashMap::from([(
            CUSTOMER_METADATA_KEY.to_string(),
            customer_id.to_string(),
        )]));
        if customer.erased_at.is_none() {
            if let Some(email) = &customer.email {
                params = params.email(email.clone());
            }
            if let Some(name) = &customer.name {
                params = params.name(name.clone());
            }
        }
        let created: Object = self
            .send(&params, Some(&format!("hephaestus-customer-{customer_id}")))
            .await
            .map_err(stripe_error)?;
        gateway_ids::remember(
            &self.store,
            NAME,
            Mirror::Customer,
            customer_id,
            &created.id,
        )
        .await?
        .ok_or_else(|| GatewayError::Unavailable("the Stripe customer was not recorded".into()))
    }

    /// Turns a card error into the declined charge it describes.
    async fn declined(&self, error: ApiErrors, amount: Money) -> Result<Charge, GatewayError> {
        let reason = decline_reason(
            error.decline_code.as_deref(),
            error.code.as_ref().map(|c| c.as_str()),
        );
        let message = error
            .message
            .clone()
            .unwrap_or_else(|| "Your card was declined.".to_string());
        let intent_id = match (&error.payment_intent, &error.charge) {
            (Some(intent), _) => Some(intent.id.to_string()),
            // Some servers name only the failed charge; the charge names its intent.
            (None, Some(charge)) => {
                let charge: ChargeObject = self
                    .send(&RetrieveCharge::new(charge.as_str()), None)
                    .await
                    .map_err(stripe_error)?;
                charge.payment_intent
            }
            (None, None) => None,
        };
        let Some(id) = intent_id else {
            // Declined before any PaymentIntent existed: nothing was attempted.
            return Err(GatewayError::InvalidRequest {
                param: Some("payment_method"),
                message,
            });
        };
        Ok(Charge {
            id,
            amount,
            status: ChargeStatus::Declined,
            decline_code: reason,
            failure_message: Some(message),
            amount_refunded_minor: 0,
            dispute: None,
        })
    }
}

/// The reason a payment was declined, named as Stripe's `decline_code`s are (see the module
/// documentation).
pub fn decline_reason(decline_code: Option<&str>, code: Option<&str>) -> Option<String> {
    let reason = match (decline_code, code) {
        (Some(d), _) if !d.is_empty() => d,
        (_, Some("card_declined")) => GENERIC_DECLINE,
        (_, Some("payment_intent_authentication_failure")) => "authentication_required",
        (_, Some(c)) if !c.is_empty() => c,
        _ => return None,
    };
    Some(reason.to_string())
}

/// Our field for a Stripe request parameter, where they are the same thing.
fn our_param(param: Option<&str>) -> Option<&'static str> {
    match param? {
        "payment_method" => Some("payment_method"),
        "amount" => Some("amount"),
        "currency" => Some("currency"),
        _ => None,
    }
}

/// Maps an error Stripe answered (other than a card error) to the trait's.
pub(crate) fn stripe_error(e: StripeError) -> GatewayError {
    match e {
        StripeError::Stripe(error, status) => {
            let message = error
                .message
                .clone()
                .unwrap_or_else(|| format!("Stripe answered {status}"));
            match status {
                429 => GatewayError::Unavailable(format!("Stripe is rate limiting: {message}")),
                409 => GatewayError::Unavailable(format!(
                    "Stripe is still processing a request with this key: {message}"
                )),
                401 | 403 => GatewayError::Unavailable(format!(
                    "Stripe refused the API key ({status}): {message}"
                )),
                s if s >= 500 => {
                    GatewayError::Unavailable(format!("Stripe failed ({s}): {message}"))
                }
                _ => {
                    let param = our_param(error.param.as_deref());
                    let message = match (&error.param, param) {
                        (Some(p), None) => format!("{message} (Stripe parameter `{p}`)"),
                        _ => message,
                    };
                    GatewayError::InvalidRequest { param, message }
                }
            }
        }
        StripeError::JSONDeserialize(m) => {
            GatewayError::Unavailable(format!("Stripe's answer could not be read: {m}"))
        }
        StripeError::ClientError(m) => {
            GatewayError::Unavailable(format!("cannot reach Stripe: {m}"))
        }
        StripeError::Timeout => GatewayError::Unavailable("Stripe did not answer in time".into()),
        StripeError::ConfigError(m) => GatewayError::Unavailable(format!("Stripe client: {m}")),
    }
}

/// Whether an error is a card's answer (a decline) rather than a failed request.
pub(crate) fn is_card_error(error: &ApiErrors, status: u16) -> bool {
    status == 402 || matches!(error.type_, ApiErrorsType::CardError)
}

/// Any object: only its id is read.
#[derive(Debug, Deserialize)]
pub(crate) struct Object {
    pub(crate) id: String,
}

/// A field that is an id, or the object when expanded.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expandable<T> {
    Id(#[allow(dead_code)] String),
    Object(T),
}

#[derive(Debug, Deserialize)]
struct ChargeObject {
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    payment_intent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LastError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// One page of a Stripe list.
#[derive(Debug, Deserialize)]
struct Page<T> {
    data: Vec<T>,
}

/// Whether a listed object carries `key` as the idempotency key it was made with.
fn made_with(metadata: &HashMap<String, String>, key: &str) -> bool {
    metadata.get(ATTEMPT_METADATA_KEY).map(String::as_str) == Some(key)
}

#[derive(Debug, Deserialize)]
struct Intent {
    id: String,
    status: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    amount: i64,
    currency: String,
    #[serde(default)]
    last_payment_error: Option<LastError>,
    #[serde(default)]
    latest_charge: Option<Expandable<ChargeObject>>,
}

impl Intent {
    fn into_charge(self, off_session: bool) -> Result<Charge, GatewayError> {
        let currency = Currency::parse(&self.currency, "currency").map_err(|e| {
            GatewayError::Unavailable(format!("Stripe answered an unknown currency: {e}"))
        })?;
        let amount_refunded_minor = match &self.latest_charge {
            Some(Expandable::Object(c)) => from_stripe_amount(c.amount_refunded, currency),
            _ => 0,
        };
        let (status, decline_code, failure_message) = match self.status.as_str() {
            "succeeded" => (ChargeStatus::Succeeded, None, None),
            "processing" | "requires_confirmation" | "requires_capture" => {
                (ChargeStatus::Processing, None, None)
            }
            "requires_action" if off_session => (
                ChargeStatus::Declined,
                Some("authentication_required".to_string()),
                Some("The payment needs the customer's authentication, and the customer is not present.".to_string()),
            ),
            "requires_action" => (ChargeStatus::RequiresAction, None, None),
            _ => {
                let error = self.last_payment_error.as_ref();
                (
                    ChargeStatus::Declined,
                    decline_reason(
                        error.and_then(|e| e.decline_code.as_deref()),
                        error.and_then(|e| e.code.as_deref()),
                    ),
                    error.and_then(|e| e.message.clone()),
                )
            }
        };
        Ok(Charge {
            id: self.id,
            amount: Money {
                minor: from_stripe_amount(self.amount, currency),
                currency,
            },
            status,
            decline_code,
            failure_message,
            amount_refunded_minor,
            dispute: None,
        })
    }
}

#[derive(Debug, Deserialize)]
struct RefundObject {
    id: String,
    amount: i64,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    status: Option<String>,
}

/// Currencies without decimals in ISO 4217 that Stripe nevertheless counts in hundredths:
/// their amounts are sent and answered ×100 (Stripe's "special cases" for ISK and UGX).
const HUNDREDFOLD_CURRENCIES: [&str; 2] = ["ISK", "UGX"];

fn hundredfold(currency: Currency) -> bool {
    HUNDREDFOLD_CURRENCIES.contains(&currency.code())
}

/// An amount as Stripe counts it.
pub fn to_stripe_amount(amount: Money) -> i64 {
    if hundredfold(amount.currency) {
        amount.minor.saturating_mul(100)
    } else {
        amount.minor
    }
}

/// Minor units (ISO 4217) of an amount Stripe gives in `currency`, rounded half away from
/// zero: Stripe's charges in ISK and UGX are whole units, but the lines of its invoices
/// (prorations above all) are not, and truncating them would lose up to a unit on every
/// line, always towards zero.
pub fn from_stripe_amount(amount: i64, currency: Currency) -> i64 {
    if !hundredfold(currency) {
        return amount;
    }
    let (whole, rest) = (amount / 100, amount % 100);
    if rest.abs() >= 50 {
        whole + amount.signum()
    } else {
        whole
    }
}

pub(crate) fn stripe_currency(amount: Money) -> stripe_types::Currency {
    amount
        .currency
        .code()
        .to_ascii_lowercase()
        .parse()
        .unwrap_or_else(|never| match never {})
}

impl Gateway for StripeGateway {
    fn name(&self) -> &'static str {
        NAME
    }

    fn subscriptions(&self) -> Option<&dyn crate::gateway::SubscriptionGateway> {
        Some(self)
    }

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<Charge, GatewayError>> {
        Box::pin(async move {
            let customer = self.customer_for(&req.customer_id).await?;
            let mut automatic = CreatePaymentIntentAutomaticPaymentMethods::new(true);
            automatic.allow_redirects =
                Some(CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never);
            let mut params =
                CreatePaymentIntent::new(to_stripe_amount(req.amount), stripe_currency(req.amount))
                    .customer(customer)
                    .payment_method(req.payment_method.clone())
                    .confirm(true)
                    .automatic_payment_methods(automatic)
                    .metadata(HashMap::from([
                        (CUSTOMER_METADATA_KEY.to_string(), req.customer_id.clone()),
                        (
                            ATTEMPT_METADATA_KEY.to_string(),
                            req.idempotency_key.clone(),
                        ),
                    ]));
            if let Some(description) = &req.description {
                params = params.description(description.clone());
            }
            if req.off_session {
                params = params.off_session(CreatePaymentIntentOffSession::Bool(true));
            }
            match self
                .send::<Intent>(&params, Some(&req.idempotency_key))
                .await
            {
                Ok(intent) => intent.into_charge(req.off_session),
                Err(StripeError::Stripe(error, status)) if is_card_error(&error, status) => {
                    self.declined(*error, req.amount).await
                }
                Err(e) => Err(stripe_error(e)),
            }
        })
    }

    fn refund(&self, req: RefundRequest) -> BoxFuture<'_, Result<GatewayRefund, GatewayError>> {
        Box::pin(async move {
            // A payment of ours is a PaymentIntent, or a charge made without one (a Stripe
            // invoice paid by a legacy source): each is refunded under its own name.
            let refund = if req.charge_id.starts_with("pi_") {
                CreateRefund::new().payment_intent(req.charge_id.clone())
            } else {
                CreateRefund::new().charge(req.charge_id.clone())
            };
            let mut params = refund
                .amount(to_stripe_amount(Money {
                    minor: req.amount_minor,
                    currency: req.currency,
                }))
                .metadata(HashMap::from([(
                    ATTEMPT_METADATA_KEY.to_string(),
                    req.idempotency_key.clone(),
                )]));
            if let Some(reason) = &req.reason {
                let reason: stripe_core::refund::CreateRefundReason = reason
                    .parse()
                    .unwrap_or_else(|e: std::convert::Infallible| match e {});
                params = params.reason(reason);
            }
            let refund: RefundObject = self
                .send(&params, Some(&req.idempotency_key))
                .await
                .map_err(stripe_error)?;
            Ok(GatewayRefund {
                id: refund.id,
                charge_id: req.charge_id,
                amount_minor: from_stripe_amount(refund.amount, req.currency),
                status: refund.status.unwrap_or_else(|| "succeeded".to_string()),
            })
        })
    }

    fn delete_customer(
        &self,
        gateway_customer_id: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            let params = DeleteCustomer::new(gateway_customer_id.as_str());
            match self.send::<Object>(&params, Some(&idempotency_key)).await {
                Ok(_) => Ok(()),
                // Gone already: an earlier attempt whose answer was lost, or deleted by hand.
                Err(StripeError::Stripe(_, 404)) => Ok(()),
                Err(e) => Err(stripe_error(e)),
            }
        })
    }

    fn fetch(&self, charge_id: String) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>> {
        Box::pin(async move {
            let params = RetrievePaymentIntent::new(charge_id.as_str())
                .expand(vec!["latest_charge".to_string()]);
            match self.send::<Intent>(&params, None).await {
                Ok(intent) => intent.into_charge(false).map(Some),
                Err(StripeError::Stripe(_, 404)) => Ok(None),
                Err(e) => Err(stripe_error(e)),
            }
        })
    }

    fn find_charge(
        &self,
        req: ChargeRequest,
    ) -> BoxFuture<'_, Result<Option<Charge>, GatewayError>> {
        Box::pin(async move {
            // No Stripe customer yet: no PaymentIntent can have been made for ours.
            let Some(customer) =
                gateway_ids::find(&self.store, NAME, Mirror::Customer, &req.customer_id).await?
            else {
                return Ok(None);
            };
            let params = ListPaymentIntent::new()
                .customer(customer)
                .limit(RECOVERY_PAGE);
            let page: Page<Intent> = self.send(&params, None).await.map_err(stripe_error)?;
            page.data
                .into_iter()
                .find(|intent| made_with(&intent.metadata, &req.idempotency_key))
                .map(|intent| intent.into_charge(req.off_session))
                .transpose()
        })
    }

    fn find_refund(
        &self,
        req: RefundRequest,
    ) -> BoxFuture<'_, Result<Option<GatewayRefund>, GatewayError>> {
        Box::pin(async move {
            let params = if req.charge_id.starts_with("pi_") {
                ListRefund::new().payment_intent(req.charge_id.clone())
            } else {
                ListRefund::new().charge(req.charge_id.clone())
            };
            let page: Page<RefundObject> = self
                .send(&params.limit(RECOVERY_PAGE), None)
                .await
                .map_err(stripe_error)?;
            Ok(page
                .data
                .into_iter()
                .find(|r| made_with(&r.metadata, &req.idempotency_key))
                .map(|refund| GatewayRefund {
                    id: refund.id,
                    charge_id: req.charge_id.clone(),
                    amount_minor: from_stripe_amount(refund.amount, req.currency),
                    status: refund.status.unwrap_or_else(|| "succeeded".to_string()),
                }))
        })
    }

    /// A call to Stripe is given up after [`TIMEOUT`]; one sent just before its sender died
    /// has landed (or never will) a little after that.
    fn in_flight_for(&self) -> Duration {
        TIMEOUT + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decline_reasons_follow_stripe() {
        assert_eq!(
            decline_reason(Some("insufficient_funds"), Some("card_declined")).as_deref(),
            Some("insufficient_funds")
        );
        assert_eq!(
            decline_reason(None, Some("card_declined")).as_deref(),
            Some("generic_decline")
        );
        assert_eq!(
            decline_reason(None, Some("expired_card")).as_deref(),
            Some("expired_card")
        );
        assert_eq!(
            decline_reason(None, Some("payment_intent_authentication_failure")).as_deref(),
            Some("authentication_required")
        );
        assert_eq!(decline_reason(None, None), None);
    }

    #[test]
    fn isk_and_ugx_are_counted_in_hundredths_at_stripe() {
        let money = |code: &str, minor| Money {
            minor,
            currency: Currency::parse(code, "currency").unwrap(),
        };
        assert_eq!(to_stripe_amount(money("ISK", 1500)), 150_000);
        assert_eq!(to_stripe_amount(money("UGX", 7)), 700);
        assert_eq!(to_stripe_amount(money("JPY", 1500)), 1500);
        assert_eq!(to_stripe_amount(money("USD", 1999)), 1999);
        assert_eq!(to_stripe_amount(money("KWD", 1234)), 1234);
        let isk = Currency::parse("isk", "currency").unwrap();
        assert_eq!(from_stripe_amount(150_000, isk), 1500);
        assert_eq!(from_stripe_amount(99_950, isk), 1000);
        assert_eq!(from_stripe_amount(99_949, isk), 999);
        assert_eq!(from_stripe_amount(-49_950, isk), -500);
        assert_eq!(from_stripe_amount(-49_949, isk), -499);
        assert_eq!(from_stripe_amount(-10, isk), 0);
        let usd = Currency::parse("usd", "currency").unwrap();
        assert_eq!(from_stripe_amount(1999, usd), 1999);
    }

    #[test]
    fn api_bases_are_checked_and_end_in_a_slash() {
        assert_eq!(
            normalize_api_base("http://127.0.0.1:12111").unwrap(),
            "http://127.0.0.1:12111/"
        );
        assert_eq!(
            normalize_api_base("https://api.stripe.com/").unwrap(),
            "https://api.stripe.com/"
        );
        for bad in [
            "api.stripe.com",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(normalize_api_base(bad).is_err(), "{bad}");
        }
    }

    fn intent(status: &str, error: Option<serde_json::Value>) -> Intent {
        serde_json::from_value(serde_json::json!({
            "id": "pi_1", "object": "payment_intent", "status": status, "amount": 1250,
            "currency": "eur", "last_payment_error": error,
            "latest_charge": {"id": "ch_1", "amount_refunded": 250, "payment_intent": "pi_1"},
        }))
        .unwrap()
    }

    #[test]
    fn intent_statuses_map_to_charge_statuses() {
        let ok = intent("succeeded", None).into_charge(false).unwrap();
        assert_eq!(ok.status, ChargeStatus::Succeeded);
        assert_eq!((ok.amount.minor, ok.amount.currency.code()), (1250, "EUR"));
        assert_eq!(ok.amount_refunded_minor, 250);
        assert_eq!(
            intent("requires_action", None)
                .into_charge(false)
                .unwrap()
                .status,
            ChargeStatus::RequiresAction
        );
        let away = intent("requires_action", None).into_charge(true).unwrap();
        assert_eq!(away.status, ChargeStatus::Declined);
        assert_eq!(
            away.decline_code.as_deref(),
            Some("authentication_required")
        );
        assert_eq!(
            intent("processing", None)
                .into_charge(false)
                .unwrap()
                .status,
            ChargeStatus::Processing
        );
        let failed = intent(
            "requires_payment_method",
            Some(serde_json::json!({"type": "card_error", "code": "card_declined",
                "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."})),
        )
        .into_charge(false)
        .unwrap();
        assert_eq!(failed.status, ChargeStatus::Declined);
        assert_eq!(failed.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            failed.failure_message.as_deref(),
            Some("Your card has insufficient funds.")
        );
    }
}
