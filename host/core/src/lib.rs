//! Domain types shared by every part of the host. No I/O lives here.
//!
//! - [`ids`]: prefixed, opaque, time-ordered identifiers (`cus_…`, `evt_…`).
//! - [`time`]: the UTC timestamp every table and response uses.
//! - [`keys`]: API key secrets, their hashes and the scope ladder.
//! - [`customer`]: the customer record and the validation of what clients send for it.
//! - [`money`]: integer minor units with ISO 4217 exponents; exact decimal parsing.
//! - [`catalog`]: products and prices.
//! - [`payment`]: one-time payments and refunds.
//! - [`subscription`]: subscriptions, invoices, the billing calendar and proration.
//! - [`secret`]: configured secrets that never print.
//! - [`webhook`]: `Stripe-Signature` signing and verification, pure so it can be fuzzed alone.
//! - [`event`]: the append-only domain event that analytics, triggers and experiments read.
//! - [`validation`]: the one error a domain check returns, naming the field to blame.

pub mod catalog;
pub mod customer;
pub mod event;
pub mod ids;
pub mod keys;
pub mod money;
pub mod payment;
pub mod secret;
pub mod subscription;
pub mod time;
pub mod validation;
pub mod webhook;

pub use time::Timestamp;
pub use validation::ValidationError;
