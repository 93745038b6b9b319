//! The values exchanged with plugins, independent of any one WIT version.
//!
//! These mirror the records of `hephaestus:plugins` (see `wit/`) field for field, in
//! snake_case, so the HTTP layer, the CLI (`call_once` takes JSON) and every WIT version's
//! bindings share one vocabulary. Field documentation lives in the WIT files; only what
//! differs from them is noted here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Microseconds since 1970-01-01T00:00:00Z (UTC).
pub type Timestamp = i64;

/// An amount of money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    /// Upper-case ISO 4217 alphabetic code, e.g. "USD".
    pub currency: String,
}

impl Money {
    /// `amount_minor` of `currency`.
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Self {
            amount_minor,
            currency: currency.into(),
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.amount_minor, self.currency)
    }
}

/// A free-form key/value pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// What the customer has done, summarised by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Activity {
    pub payments: u32,
    pub payments_last_30_days: u32,
    pub failed_payments_last_30_days: u32,
    pub last_payment_at: Option<Timestamp>,
    pub active_subscriptions: u32,
    pub canceled_subscriptions: u32,
    pub has_past_due: bool,
}

/// A customer as plugins see it (no full email address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email_domain: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub segments: Vec<String>,
    pub lifetime_value: Money,
    pub monthly_recurring_revenue: Money,
    #[serde(default)]
    pub activity: Activity,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
}

/// One entry of the domain event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub id: String,
    pub kind: String,
    pub occurred_at: Timestamp,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub subject_id: String,
    /// The payload as JSON text.
    pub data: String,
}

/// `pricer.quote` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub customer: CustomerProfile,
    pub product_id: String,
    pub product_name: String,
    pub price_id: String,
    pub unit_price: Money,
    pub quantity: u32,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub context: Vec<Attribute>,
}

/// `pricer.quote` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub amount: Money,
    pub discount: Money,
    pub reason: String,
}

/// Observed sales at one list price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricePoint {
    pub unit_price: Money,
    pub customers: u32,
    pub purchases: u32,
    pub failed: u32,
    pub revenue: Money,
}

/// `pricer.recommend` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommendRequest {
    pub product_id: String,
    pub product_name: String,
    pub current_price: Money,
    #[serde(default)]
    pub customer_segment: Option<String>,
    #[serde(default)]
    pub history: Vec<PricePoint>,
}

/// `pricer.recommend` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub recommended_price: Money,
    pub revenue_change_basis_points: i32,
    pub conversion_change_basis_points: i32,
    pub reason: String,
}

/// `segmenter.segment` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRequest {
    pub customer: CustomerProfile,
    /// The built-in rules' `high_value` threshold (5,000.00 USD) in the currency of the
    /// customer's lifetime value, converted by the host through its stored rates; `None`
    /// when no rate converts it. Only the built-in rules read it: plugins get the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value_threshold: Option<Money>,
}

/// The campaign a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub template: String,
    pub subject: String,
}

/// `personalizer.personalize` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalizeRequest {
    pub customer: CustomerProfile,
    pub campaign: Campaign,
    #[serde(default)]
    pub variables: Vec<Attribute>,
}

/// `personalizer.personalize` output. The default (no plugin, or a fault) changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personalization {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub variables: Vec<Attribute>,
}

/// `trigger.on-event` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRequest {
    pub event: DomainEvent,
    #[serde(default)]
    pub customer: Option<CustomerProfile>,
}

/// Schedule `template` for `customer_id`, `delay_seconds` after the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueue {
    pub template: String,
    pub customer_id: String,
    pub delay_seconds: u32,
}

/// One thing a trigger asks the host to do. JSON: `{"enqueue": {...}}`, like the WIT variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Enqueue(Enqueue),
}

/// The four kinds of plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Pricing,
    Segmentation,
    Personalization,
    CampaignTrigger,
}

impl World {
    /// Every world, in a fixed order.
    pub const ALL: [World; 4] = [
        World::Pricing,
        World::Segmentation,
        World::Personalization,
        World::CampaignTrigger,
    ];

    /// The world's name in WIT (and in manifests).
    pub fn as_str(self) -> &'static str {
        match self {
            World::Pricing => "pricing",
            World::Segmentation => "segmentation",
            World::Personalization => "personalization",
            World::CampaignTrigger => "campaign-trigger",
        }
    }

    /// The interface a component of this world exports, without package or version.
    pub fn export_interface(self) -> &'static str {
        match self {
            World::Pricing => "pricer",
            World::Segmentation => "segmenter",
            World::Personalization => "personalizer",
            World::CampaignTrigger => "trigger",
        }
    }

    /// The functions that interface must export.
    pub fn export_functions(self) -> &'static [&'static str] {
        match self {
            World::Pricing => &["quote", "recommend"],
            World::Segmentation => &["segment"],
            World::Personalization => &["personalize"],
            World::CampaignTrigger => &["on-event"],
        }
    }

    /// Parses a world name as written in a manifest.
    pub fn parse(name: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| w.as_str() == name)
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any one call a plugin can answer. JSON is tagged by function name, e.g.
/// `{"quote": {...}}` or `{"on_event": {"event": {...}, "customer": null}}`; this is the
/// input format of [`crate::PluginHost::call_once`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Quote(QuoteRequest),
    Recommend(RecommendRequest),
    Segment(SegmentRequest),
    Personalize(PersonalizeRequest),
    OnEvent(EventRequest),
}

impl Request {
    /// The world whose plugins answer this request.
    pub fn world(&self) -> World {
        match self {
            Request::Quote(_) | Request::Recommend(_) => World::Pricing,
            Request::Segment(_) => World::Segmentation,
            Request::Personalize(_) => World::Personalization,
            Request::OnEvent(_) => World::CampaignTrigger,
        }
    }

    /// The WIT function this request calls.
    pub fn function(&self) -> &'static str {
        match self {
            Request::Quote(_) => "quote",
            Request::Recommend(_) => "recommend",
            Request::Segment(_) => "segment",
            Request::Personalize(_) => "personalize",
            Request::OnEvent(_) => "on-event",
        }
    }

    /// The product a pricing request is about, used to pick the plugin serving it.
    pub fn product_id(&self) -> Option<&str> {
        match self {
            Request::Quote(r) => Some(&r.product_id),
            Request::Recommend(r) => Some(&r.product_id),
            _ => None,
        }
    }
}

/// A plugin's answer to a [`Request`], same tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Quote(Quote),
    Recommend(Recommendation),
    Segment(Vec<String>),
    Personalize(Personalization),
    OnEvent(Vec<Action>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_actions_use_the_documented_json_shape() {
        let json = serde_json::to_value(Money::new(9700, "USD")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount_minor": 9700, "currency": "USD"})
        );
        let action = Action::Enqueue(Enqueue {
            template: "welcome".into(),
            customer_id: "cus_1".into(),
            delay_seconds: 60,
        });
        assert_eq!(
            serde_json::to_value(action).unwrap(),
            serde_json::json!({"enqueue": {"template": "welcome", "customer_id": "cus_1", "delay_seconds": 60}})
        );
    }

    #[test]
    fn worlds_round_trip_through_their_wit_names() {
        for world in World::ALL {
            assert_eq!(World::parse(world.as_str()), Some(world));
        }
        assert_eq!(World::parse("pricer"), None);
    }
}
