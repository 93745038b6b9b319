//! Billing: the gateways that move money, behind one [`gateway::Gateway`] trait.
//!
//! - [`charges`]: a gateway's answer to a charge, recorded as the host's payment.
//! - [`disputes`]: chargebacks, applied in any order.
//! - [`erasure`]: deleting an erased customer's copy at the gateway, retried until it is gone.
//! - [`gateway`]: the trait, its requests and results, and its errors.
//! - [`sandbox`]: the built-in gateway that behaves like Stripe's test mode, with a ledger
//!   of its own, so the product runs and is tested with no account.
//! - [`stripe`]: the Stripe gateway (async-stripe), selected by `STRIPE_SECRET_KEY`.
//! - `stripe_http`: the HTTP client it sends async-stripe's requests with, which reads an
//!   error answer by its status even when its body is not Stripe's JSON.
//! - [`stripe_subscriptions`]: subscriptions billed by Stripe itself, and its price mirror.
//! - [`stripe_invoices`]: Stripe's invoices, read from its events and refetched.
//! - [`gateway_subscriptions`]: applying a gateway's view of a subscription or invoice to
//!   ours, never going back to an older state, with its domain events.
//! - [`reconcile`]: refetching unsettled payments, subscriptions and invoices from their
//!   gateway.
//! - [`subscriptions`]: the billing engine that renews, invoices and dunns subscriptions on
//!   the business clock for gateways that only move money (the sandbox).
//! - [`stripe_events`]: applying verified gateway events from the inbox to payments,
//!   subscriptions and invoices.

pub mod charges;
pub mod disputes;
pub mod erasure;
pub mod gateway;
pub mod gateway_subscriptions;
pub mod reconcile;
pub mod sandbox;
pub mod stripe;
pub mod stripe_events;
mod stripe_http;
pub mod stripe_invoices;
pub mod stripe_subscriptions;
pub mod subscriptions;
