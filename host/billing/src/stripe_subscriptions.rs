//! Subscriptions billed by Stripe: the [`SubscriptionGateway`] of the Stripe gateway.
//!
//! **Prices.** Each of our recurring prices is mirrored by a Stripe plan (a plan id is
//! accepted wherever Stripe takes a price id), created the first time a subscription to it
//! starts there, under the Idempotency-Key `hephaestus-price-{our id}` (so two first
//! subscriptions at once make one), and remembered in `gateway_prices`. It carries our price
//! id in its metadata (`hephaestus_price_id`); its product is created with it, named after
//! ours.
//!
//! **Payment methods.** A method given with a subscription is attached to the customer's
//! Stripe mirror and made that subscription's own `default_payment_method`, which Stripe
//! charges its invoices to ahead of the customer's default. The customer's
//! `invoice_settings` are never touched: a card given for one subscription must not move
//! the customer's others onto it, nor a card declined on a first invoice become anyone's
//! default.
//!
//! **Calls and their keys.** Every call that changes something at Stripe carries an
//! Idempotency-Key derived from the one the API derived for the request, one per step
//! (`…:attach`, `…:create`, `…:change`, `…:cancel`), so a retried request
//! replays Stripe's first answers. Subscriptions are created with
//! `payment_behavior=error_if_incomplete`: a first invoice that cannot be paid is a card
//! error and no subscription, as on the sandbox. A server that answers an `incomplete`
//! subscription instead (localstripe does) gets it cancelled, and the answer is the same
//! decline, without a `decline_code`.
//!
//! **Answers and events** are read by [`subscription_state`] into the few fields kept here,
//! from today's shape (periods on the subscription item, `items.data[].price`) or the older
//! one (periods on the subscription, `plan`).

use std::collections::HashMap;

use ::stripe::{StripeError, StripeRequest};
use futures::future::BoxFuture;
use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{Interval, Price};
use hephaestus_core::subscription::SubscriptionStatus;
use hephaestus_store::catalog;
use hephaestus_store::gateway_ids::{self, Mirror};
use serde::Serialize;
use serde_json::Value;
use stripe_billing::plan::{CreatePlan, CreatePlanInlineProductParams, CreatePlanProduct};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems,
    CreateSubscriptionPaymentBehavior, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior,
};
use stripe_client_core::{RequestBuilder, StripeMethod};

use crate::gateway::{
    GatewayError, GatewayInvoice, GatewaySubscription, SubscriptionChange, SubscriptionGateway,
    SubscriptionRequest,
};
use crate::stripe::{
    CUSTOMER_METADATA_KEY, NAME, Object, StripeGateway, decline_reason, is_card_error,
    stripe_currency, stripe_error, to_stripe_amount,
};

/// The metadata key under which Stripe objects carry our subscription id.
pub const SUBSCRIPTION_METADATA_KEY: &str = "hephaestus_subscription_id";
/// The metadata key under which Stripe plans carry our price id.
pub const PRICE_METADATA_KEY: &str = "hephaestus_price_id";

/// `POST /v1/payment_methods/{id}/attach`, which none of the resource crates in use covers.
struct AttachPaymentMethod {
    payment_method: String,
    form: AttachForm,
}

#[derive(Serialize)]
struct AttachForm {
    customer: String,
}

impl StripeRequest for AttachPaymentMethod {
    type Output = Object;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(
            StripeMethod::Post,
            format!("/payment_methods/{}/attach", self.payment_method),
        )
        .form(&self.form)
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest {
        param: Some(param),
        message: message.into(),
    }
}

pub(crate) fn seconds(v: &Value) -> Option<Timestamp> {
    v.as_i64()
        .and_then(|s| s.checked_mul(1_000_000))
        .map(Timestamp::from_micros)
}

/// Our status for Stripe's, where there is one: a subscription whose first payment never
/// went through (`incomplete_expired`) has ended; `incomplete` and `paused` have no
/// equivalent and leave ours as it is.
pub fn status_of(stripe: &str) -> Option<SubscriptionStatus> {
    match stripe {
        "incomplete_expired" => Some(SubscriptionStatus::Canceled),
        other => other.parse().ok(),
    }
}

/// Reads a Stripe subscription (an answer or an event's object).
pub fn subscription_state(v: &Value) -> Option<GatewaySubscription> {
    let id = v["id"].as_str()?.to_string();
    let items = v["items"]["data"].as_array();
    // One item is all the host makes; with more the price and quantity are not ours to read.
    let item = items.filter(|i| i.len() == 1).map(|i| &i[0]);
    let price = item.and_then(|i| {
        i["price"]["id"]
            .as_str()
            .or(i["price"].as_str())
            .or(i["plan"]["id"].as_str())
            .or(i["plan"].as_str())
            .map(str::to_string)
    });
    let period = |field: &str| seconds(&v[field]).or_else(|| item.and_then(|i| seconds(&i[field])));
    Some(GatewaySubscription {
        id,
        status: v["status"].as_str().and_then(status_of),
        gateway_price_id: price,
        item_id: item.and_then(|i| i["id"].as_str()).map(str::to_string),
        quantity: item
            .and_then(|i| i["quantity"].as_i64())
            .or(v["quantity"].as_i64()),
        current_period_start: period("current_period_start"),
        current_period_end: period("current_period_end"),
        trial_start: seconds(&v["trial_start"]),
        trial_end: seconds(&v["trial_end"]),
        cancel_at_period_end: v["cancel_at_period_end"].as_bool().unwrap_or(false),
        canceled_at: seconds(&v["canceled_at"]),
        ended_at: seconds(&v["ended_at"]),
        latest_invoice: crate::stripe_invoices::id_of(&v["latest_invoice"]).map(str::to_string),
    })
}

fn read_subscription(v: Value) -> Result<GatewaySubscription, GatewayError> {
    subscription_state(&v).ok_or_else(|| {
        GatewayError::Unavailable("Stripe answered a subscription without an id".into())
    })
}

impl StripeGateway {
    /// The Stripe plan mirroring our price, created on first use.
    async fn price_for(&self, price: &Price) -> Result<String, GatewayError> {
        if let Some(id) = gateway_ids::find(&self.store, NAME, Mirror::Price, &price.id).await? {
            return Ok(id);
        }
        let every = price
            .recurring
            .ok_or_else(|| invalid("price_id", "must be a recurring price"))?;
        let interval = match every.interval {
            Interval::Day => stripe_billing::PlanInterval::Day,
            Interval::Week => stripe_billing::PlanInterval::Week,
            Interval::Month => stripe_billing::PlanInterval::Month,
            Interval::Year => stripe_billing::PlanInterval::Year,
        };
        let product_name = catalog::get_product(&self.store, &price.product_id)
            .await?
            .map(|p| p.name)
            .unwrap_or_else(|| price.product_id.clone());
        let mut product = CreatePlanInlineProductParams::new(product_name);
        product.metadata = Some(HashMap::from([(
            "hephaestus_product_id".to_string(),
            price.product_id.clone(),
        )]));
        let params = CreatePlan::new(stripe_currency(price.unit_amount), interval)
            .amount(to_stripe_amount(price.unit_amount))
            .interval_count(u64::try_from(every.count).unwrap_or(1))
            .product(CreatePlanProduct::InlineProductParams(product))
            .metadata(HashMap::from([(
                PRICE_METADATA_KEY.to_string(),
                price.id.clone(),
            )]));
        let created: Object = self
            .send(&params, Some(&format!("hephaestus-price-{}", price.id)))
            .await
            .map_err(stripe_error)?;
        gateway_ids::remember(&self.store, NAME, Mirror::Price, &price.id, &created.id)
            .await?
            .ok_or_else(|| GatewayError::Unavailable("the Stripe price was not recorded".into()))
    }

    /// Attaches `payment_method` to the Stripe customer, so a subscription of it can be
    /// charged to it.
    async fn attach_method(
        &self,
        customer: &str,
        payment_method: &str,
        key: &str,
    ) -> Result<(), GatewayError> {
        let attach = AttachPaymentMethod {
            payment_method: payment_method.to_string(),
            form: AttachForm {
                customer: customer.to_string(),
            },
        };
        match self
            .send::<Object>(&attach, Some(&format!("{key}:attach")))
            .await
        {
            Ok(_) => {}
            Err(StripeError::Stripe(error, status)) if is_card_error(&error, status) => {
                return Err(declined(&error));
            }
            Err(e) => return Err(payment_method_error(stripe_error(e))),
        }
        Ok(())
    }

    async fn retrieve(
        &self,
        gateway_id: &str,
    ) -> Result<Option<GatewaySubscription>, GatewayError> {
        match self
            .send::<Value>(&RetrieveSubscription::new(gateway_id), None)
            .await
        {
            Ok(v) => read_subscription(v).map(Some),
            Err(StripeError::Stripe(_, 404)) => Ok(None),
            Err(e) => Err(stripe_error(e)),
        }
    }
}

/// A refused payment method is the caller's `payment_method`, whatever Stripe names.
fn payment_method_error(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::InvalidRequest { message, .. } => invalid("payment_method", message),
        other => other,
    }
}

fn declined(error: &::stripe::ApiErrors) -> GatewayError {
    GatewayError::Declined {
        decline_code: decline_reason(
            error.decline_code.as_deref(),
            error.code.as_ref().map(|c| c.as_str()),
        ),
        message: error
            .message
            .clone()
            .unwrap_or_else(|| "Your card was declined.".to_string()),
    }
}

fn quantity(q: i64) -> Result<u64, GatewayError> {
    u64::try_from(q).map_err(|_| invalid("quantity", "must be positive"))
}

impl SubscriptionGateway for StripeGateway {
    fn create_subscription(
        &self,
        req: SubscriptionRequest,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>> {
        Box::pin(async move {
            let customer = self.customer_for(&req.customer_id).await?;
            if let Some(pm) = &req.payment_method {
                self.attach_method(&customer, pm, &req.idempotency_key)
                    .await?;
            }
            let plan = self.price_for(&req.price).await?;
            let mut item = CreateSubscriptionItems::new();
            item.price = Some(plan);
            item.quantity = Some(quantity(req.quantity)?);
            let mut params = CreateSubscription::new()
                .customer(customer)
                .items(vec![item])
                .payment_behavior(CreateSubscriptionPaymentBehavior::ErrorIfIncomplete)
                .metadata(
                    // The client's own keys first: ours, which name the objects, win.
                    req.metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .chain([
                            (
                                SUBSCRIPTION_METADATA_KEY.to_string(),
                                req.subscription_id.clone(),
                            ),
                            (CUSTOMER_METADATA_KEY.to_string(), req.customer_id.clone()),
                        ])
                        .collect::<HashMap<_, _>>(),
                );
            if let Some(pm) = &req.payment_method {
                params = params.default_payment_method(pm);
            }
            if req.trial_days > 0 {
                params = params.trial_period_days(
                    u32::try_from(req.trial_days)
                        .map_err(|_| invalid("trial_days", "is too long"))?,
                );
            }
            let key = format!("{}:create", req.idempotency_key);
            let answer = match self.send::<Value>(&params, Some(&key)).await {
                Ok(v) => v,
                Err(StripeError::Stripe(error, status)) if is_card_error(&error, status) => {
                    return Err(declined(&error));
                }
                Err(e) => return Err(stripe_error(e)),
            };
            if answer["status"] == "incomplete" {
                // The first invoice was not paid although it had to be (a server that does
                // not honour `error_if_incomplete` answers this rather than a 402): nothing
                // is started, so the subscription is ended at Stripe rather than left to
                // expire.
                let sub = read_subscription(answer)?;
                let end = CancelSubscription::new(sub.id.as_str());
                self.send::<Object>(&end, Some(&format!("{}:abandon", req.idempotency_key)))
                    .await
                    .map_err(stripe_error)?;
                return Err(GatewayError::Declined {
                    decline_code: None,
                    message:
                        "The first invoice could not be paid; the subscription was not started."
                            .into(),
                });
            }
            read_subscription(answer)
        })
    }

    fn change_subscription(
        &self,
        req: SubscriptionChange,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>> {
        Box::pin(async move {
            if let Some(pm) = &req.payment_method {
                let customer = self.customer_for(&req.customer_id).await?;
                self.attach_method(&customer, pm, &req.idempotency_key)
                    .await?;
            }
            let mut params = UpdateSubscription::new(req.gateway_id.as_str());
            let mut changed = false;
            if req.price.is_some() || req.quantity.is_some() {
                // The item to change is named by its id, or Stripe adds a second one.
                let current = self.retrieve(&req.gateway_id).await?.ok_or_else(|| {
                    GatewayError::InvalidRequest {
                        param: None,
                        message: format!("Stripe has no subscription {}", req.gateway_id),
                    }
                })?;
                let mut item = UpdateSubscriptionItems::new();
                item.id = current.item_id;
                if let Some(price) = &req.price {
                    item.price = Some(self.price_for(price).await?);
                }
                // Stripe resets the quantity to 1 when only the price is given.
                item.quantity = Some(quantity(req.quantity.or(current.quantity).unwrap_or(1))?);
                params = params.items(vec![item]).proration_behavior(if req.prorate {
                    UpdateSubscriptionProrationBehavior::CreateProrations
                } else {
                    UpdateSubscriptionProrationBehavior::None
                });
                changed = true;
            }
            if let Some(cancel) = req.cancel_at_period_end {
                params = params.cancel_at_period_end(cancel);
                changed = true;
            }
            if let Some(pm) = &req.payment_method {
                params = params.default_payment_method(pm);
                changed = true;
            }
            if !changed {
                return self.retrieve(&req.gateway_id).await?.ok_or_else(|| {
                    GatewayError::InvalidRequest {
                        param: None,
                        message: format!("Stripe has no subscription {}", req.gateway_id),
                    }
                });
            }
            let key = format!("{}:change", req.idempotency_key);
            match self.send::<Value>(&params, Some(&key)).await {
                Ok(v) => read_subscription(v),
                Err(StripeError::Stripe(error, status)) if is_card_error(&error, status) => {
                    Err(declined(&error))
                }
                Err(e) => Err(stripe_error(e)),
            }
        })
    }

    fn cancel_subscription(
        &self,
        gateway_id: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<GatewaySubscription, GatewayError>> {
        Box::pin(async move {
            let key = format!("{idempotency_key}:cancel");
            let v: Value = self
                .send(&CancelSubscription::new(gateway_id.as_str()), Some(&key))
                .await
                .map_err(stripe_error)?;
            read_subscription(v)
        })
    }

    fn fetch_subscription(
        &self,
        gateway_id: String,
    ) -> BoxFuture<'_, Result<Option<GatewaySubscription>, GatewayError>> {
        Box::pin(async move { self.retrieve(&gateway_id).await })
    }

    fn fetch_invoice(
        &self,
        gateway_id: String,
    ) -> BoxFuture<'_, Result<Option<GatewayInvoice>, GatewayError>> {
        Box::pin(async move { self.retrieve_invoice(&gateway_id).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_todays_and_older_subscription_shapes() {
        let today = subscription_state(&json!({
            "id": "sub_1", "object": "subscription", "status": "trialing",
            "cancel_at_period_end": false, "canceled_at": null, "ended_at": null,
            "trial_start": 1_767_225_600, "trial_end": 1_768_435_200,
            "items": {"object": "list", "data": [{
                "id": "si_1", "quantity": 3,
                "current_period_start": 1_767_225_600, "current_period_end": 1_768_435_200,
                "price": {"id": "plan_A", "object": "price"},
            }]},
        }))
        .unwrap();
        assert_eq!(today.status, Some(SubscriptionStatus::Trialing));
        assert_eq!(today.gateway_price_id.as_deref(), Some("plan_A"));
        assert_eq!(today.item_id.as_deref(), Some("si_1"));
        assert_eq!(today.quantity, Some(3));
        assert_eq!(
            today.current_period_end,
            Some(Timestamp::from_micros(1_768_435_200_000_000))
        );
        let older = subscription_state(&json!({
            "id": "sub_2", "status": "incomplete_expired", "quantity": 2,
            "current_period_start": 1_767_225_600, "current_period_end": 1_769_904_000,
            "cancel_at_period_end": true,
            "items": {"data": [{"id": "si_2", "plan": {"id": "plan_B"}, "quantity": 2}]},
        }))
        .unwrap();
        assert_eq!(older.status, Some(SubscriptionStatus::Canceled));
        assert_eq!(older.gateway_price_id.as_deref(), Some("plan_B"));
        assert!(older.cancel_at_period_end);
        assert_eq!(
            older.current_period_start,
            Some(Timestamp::from_micros(1_767_225_600_000_000))
        );
        assert_eq!(status_of("incomplete"), None);
        assert_eq!(status_of("paused"), None);
        assert_eq!(status_of("unpaid"), Some(SubscriptionStatus::Unpaid));
        assert!(subscription_state(&json!({"status": "active"})).is_none());
    }
}
