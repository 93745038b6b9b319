//! Billing: the gateways that move money, behind one [`gateway::Gateway`] trait.
//!
//! - [`gateway`]: the trait, its requests and results, and its errors.
//! - [`sandbox`]: the built-in gateway that behaves like Stripe's test mode, with a ledger
//!   of its own, so the product runs and is tested with no account.

pub mod gateway;
pub mod sandbox;
