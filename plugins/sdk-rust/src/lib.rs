//! Guest SDK for Hephaestus plugins.
//!
//! A Hephaestus plugin is a WebAssembly component (WASI p2) that exports one interface of
//! the WIT package `hephaestus:plugins@0.1.0` (the repository's `wit/` folder). This crate
//! generates the guest bindings for the four worlds and adds a small, documented surface:
//!
//! | module | what it is for |
//! |---|---|
//! | [`pricing`], [`segmentation`], [`personalization`], [`trigger`] | one per world: its `Guest` trait and records |
//! | [`export_pricing!`] & co. | one export macro per world: `export_pricing!(MyPricer);` |
//! | [`money`] | integer money maths: percentages with explicit rounding, currency exponents |
//! | [`clock`] | the business clock (`clock::now()`) and day arithmetic on timestamps |
//! | [`config`] | the plugin's `[config]` table, parsed into numbers and flags |
//! | [`log`] | `log::info("…")` into the host's log |
//! | [`wit_bindgen`] | the bindings generator, re-exported for advanced use |
//!
//! ```ignore
//! use hephaestus_plugin_sdk::pricing::{Guest, PriceQuote, QuoteRequest, RecommendRequest, Recommendation};
//!
//! struct ListPrice;
//!
//! impl Guest for ListPrice {
//!     fn quote(request: QuoteRequest) -> Result<PriceQuote, String> { todo!() }
//!     fn recommend(request: RecommendRequest) -> Result<Recommendation, String> { todo!() }
//! }
//!
//! hephaestus_plugin_sdk::export_pricing!(ListPrice);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the crate must be a `cdylib`.
//! Decision logic that does not call the host (everything but `clock::now`, `config::get*`
//! and `log::*`) also compiles for the host target, so it can be unit-tested with plain
//! `cargo test`; calling a host import outside WebAssembly panics.

// The generated bindings name this crate by path (`runtime_path`), so that plugins need no
// direct dependency on `wit-bindgen`; this alias makes the same path work inside the SDK.
extern crate self as hephaestus_plugin_sdk;

pub use wit_bindgen;

/// The version of the WIT package these bindings were generated from. A component built
/// with this SDK imports and exports `hephaestus:plugins/…@0.1.0`.
pub const WIT_VERSION: &str = "0.1.0";

/// The WIT package, with its version, as it appears in a component's import and export names.
pub const WIT_PACKAGE: &str = "hephaestus:plugins@0.1.0";

/// The SDK's own crate version.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Generated bindings, one module per world. Use the re-exports instead; the layout here
/// follows wit-bindgen and may change.
#[doc(hidden)]
#[allow(missing_debug_implementations, clippy::all)]
pub mod bindings {
    /// The imports every world shares (`types`, `log`, `clock`, `config`), generated once so
    /// that every world uses the same Rust types.
    pub mod host {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "hephaestus:plugins/plugin-host@0.1.0",
            runtime_path: "hephaestus_plugin_sdk::wit_bindgen::rt",
            additional_derives: [PartialEq, Eq],
            generate_unused_types: true,
            generate_all,
        });
    }

    // Each world reuses the shared imports above through `with`, and gets its own export
    // macro (`export_pricing!` …), public so that plugin crates can call it.
    macro_rules! world {
        ($module:ident, $world:tt, $macro_name:tt, $bindings_path:tt) => {
            pub mod $module {
                wit_bindgen::generate!({
                    path: "../../wit",
                    world: $world,
                    runtime_path: "hephaestus_plugin_sdk::wit_bindgen::rt",
                    additional_derives: [PartialEq, Eq],
                    with: {
                        "hephaestus:plugins/types@0.1.0": crate::bindings::host::hephaestus::plugins::types,
                        "hephaestus:plugins/log@0.1.0": crate::bindings::host::hephaestus::plugins::log,
                        "hephaestus:plugins/clock@0.1.0": crate::bindings::host::hephaestus::plugins::clock,
                        "hephaestus:plugins/config@0.1.0": crate::bindings::host::hephaestus::plugins::config,
                    },
                    export_macro_name: $macro_name,
                    pub_export_macro: true,
                    default_bindings_module: $bindings_path,
                });
            }
        };
    }

    world!(
        pricing,
        "hephaestus:plugins/pricing@0.1.0",
        "export_pricing",
        "hephaestus_plugin_sdk::bindings::pricing"
    );
    world!(
        segmentation,
        "hephaestus:plugins/segmentation@0.1.0",
        "export_segmentation",
        "hephaestus_plugin_sdk::bindings::segmentation"
    );
    world!(
        personalization,
        "hephaestus:plugins/personalization@0.1.0",
        "export_personalization",
        "hephaestus_plugin_sdk::bindings::personalization"
    );
    world!(
        campaign_trigger,
        "hephaestus:plugins/campaign-trigger@0.1.0",
        "export_campaign_trigger",
        "hephaestus_plugin_sdk::bindings::campaign_trigger"
    );
}

pub use bindings::host::hephaestus::plugins::types::{
    Activity, Attribute, CustomerProfile, DomainEvent, Money, Timestamp,
};

pub mod clock;
pub mod config;
pub mod log;
pub mod money;

/// World `pricing`: quotes per customer and list-price recommendations.
///
/// Implement [`pricing::Guest`] and export it with [`export_pricing!`].
pub mod pricing {
    pub use crate::bindings::pricing::exports::hephaestus::plugins::pricer::{
        Guest, PricePoint, PriceQuote, QuoteRequest, RecommendRequest, Recommendation,
    };
}

/// World `segmentation`: segment tags for a customer.
///
/// Implement [`segmentation::Guest`] and export it with [`export_segmentation!`].
pub mod segmentation {
    pub use crate::bindings::segmentation::exports::hephaestus::plugins::segmenter::Guest;

    /// The segment tags used across the product. Plugins may return others too.
    pub mod tags {
        /// A customer created recently.
        pub const NEW: &str = "new";
        /// A frequent payer, or one with several subscriptions.
        pub const POWER_USER: &str = "power_user";
        /// A customer showing signs of churn.
        pub const AT_RISK: &str = "at_risk";
        /// A customer with a high lifetime value.
        pub const HIGH_VALUE: &str = "high_value";
        /// A large or enterprise-plan account.
        pub const ENTERPRISE: &str = "enterprise";
    }
}

/// World `personalization`: subject line and template variables for one recipient.
///
/// Implement [`personalization::Guest`] and export it with [`export_personalization!`].
pub mod personalization {
    pub use crate::bindings::personalization::exports::hephaestus::plugins::personalizer::{
        Campaign, Guest, Personalization, PersonalizeRequest,
    };
}

/// World `campaign-trigger`: a domain event in, messages to schedule out.
///
/// Implement [`trigger::Guest`] and export it with [`export_campaign_trigger!`].
pub mod trigger {
    pub use crate::bindings::campaign_trigger::exports::hephaestus::plugins::trigger::{
        Action, Enqueue, Guest,
    };
}

/// Exports a [`pricing::Guest`] implementation as the component's `pricer` interface.
/// Use once per plugin crate: `hephaestus_plugin_sdk::export_pricing!(MyPricer);`
pub use bindings::pricing::export_pricing;

/// Exports a [`segmentation::Guest`] implementation as the component's `segmenter`
/// interface: `hephaestus_plugin_sdk::export_segmentation!(MySegmenter);`
pub use bindings::segmentation::export_segmentation;

/// Exports a [`personalization::Guest`] implementation as the component's `personalizer`
/// interface: `hephaestus_plugin_sdk::export_personalization!(MyPersonalizer);`
pub use bindings::personalization::export_personalization;

/// Exports a [`trigger::Guest`] implementation as the component's `trigger` interface:
/// `hephaestus_plugin_sdk::export_campaign_trigger!(MyTrigger);`
pub use bindings::campaign_trigger::export_campaign_trigger;

/// Builds a [`Money`] value.
pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: currency.to_owned(),
    }
}

/// The value of customer attribute `key` (metadata given through the API), if set.
pub fn attribute<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_str())
}

/// Whether `customer` currently holds segment tag `tag`.
pub fn has_segment(customer: &CustomerProfile, tag: &str) -> bool {
    customer.segments.iter().any(|s| s == tag)
}

/// An [`Activity`] with nothing in it: a customer who has never paid or subscribed. A
/// starting point for tests (`Activity { payments: 3, ..no_activity() }`).
pub fn no_activity() -> Activity {
    Activity {
        payments: 0,
        payments_last_30_days: 0,
        failed_payments_last_30_days: 0,
        last_payment_at: None,
        active_subscriptions: 0,
        canceled_subscriptions: 0,
        has_past_due: false,
    }
}
