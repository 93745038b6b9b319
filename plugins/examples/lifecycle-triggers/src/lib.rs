//! Example campaign-trigger plugin: lifecycle emails from domain events.
//!
//! | event | action (config keys in brackets) |
//! |---|---|
//! | `customer.created` | enqueue template `welcome` (`welcome_template`) for the customer, no delay |
//! | `subscription.canceled` | enqueue template `win_back` (`win_back_template`) after 7 days (`win_back_delay_days`, at most 90) |
//! | anything else | nothing |
//!
//! An event without a customer (neither `customer-id` nor a profile) triggers nothing.

use hephaestus_plugin_sdk::trigger::{Action, Enqueue, Guest};
use hephaestus_plugin_sdk::{CustomerProfile, DomainEvent, config};

/// The host's limit on a delay: 90 days.
pub const MAX_DELAY_DAYS: u32 = 90;

/// Templates and delays, from the manifest's `[config]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub welcome_template: String,
    pub win_back_template: String,
    pub win_back_delay_days: u32,
}

impl Settings {
    /// Reads settings through `lookup` (the host's `config::get`, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let win_back_delay_days = config::parse_or(
            "win_back_delay_days",
            lookup("win_back_delay_days").as_deref(),
            7,
        )?;
        if win_back_delay_days > MAX_DELAY_DAYS {
            return Err(format!(
                "config `win_back_delay_days` must be at most {MAX_DELAY_DAYS}"
            ));
        }
        Ok(Settings {
            welcome_template: lookup("welcome_template").unwrap_or_else(|| "welcome".into()),
            win_back_template: lookup("win_back_template").unwrap_or_else(|| "win_back".into()),
            win_back_delay_days,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_lookup(|_| None).expect("defaults are valid")
    }
}

/// The actions for `event` (about `customer`, when it has one).
pub fn on_event(
    event: &DomainEvent,
    customer: Option<&CustomerProfile>,
    settings: &Settings,
) -> Vec<Action> {
    let Some(customer_id) = event
        .customer_id
        .clone()
        .or_else(|| customer.map(|c| c.id.clone()))
    else {
        return Vec::new();
    };
    let (template, delay_days) = match event.kind.as_str() {
        "customer.created" => (&settings.welcome_template, 0),
        "subscription.canceled" => (&settings.win_back_template, settings.win_back_delay_days),
        _ => return Vec::new(),
    };
    vec![Action::Enqueue(Enqueue {
        template: template.clone(),
        customer_id,
        delay_seconds: delay_days * 86_400,
    })]
}

/// The exported plugin.
#[derive(Debug)]
pub struct LifecycleTriggers;

impl Guest for LifecycleTriggers {
    fn on_event(
        event: DomainEvent,
        customer: Option<CustomerProfile>,
    ) -> Result<Vec<Action>, String> {
        let settings = Settings::from_lookup(config::get)?;
        Ok(on_event(&event, customer.as_ref(), &settings))
    }
}

hephaestus_plugin_sdk::export_campaign_trigger!(LifecycleTriggers);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, customer_id: Option<&str>) -> DomainEvent {
        DomainEvent {
            id: "evt_1".into(),
            kind: kind.into(),
            occurred_at: 1_750_000_000_000_000,
            customer_id: customer_id.map(str::to_owned),
            subject_id: "sub_1".into(),
            data: "{}".into(),
        }
    }

    fn enqueue(template: &str, customer_id: &str, delay_seconds: u32) -> Vec<Action> {
        vec![Action::Enqueue(Enqueue {
            template: template.into(),
            customer_id: customer_id.into(),
            delay_seconds,
        })]
    }

    #[test]
    fn lifecycle_events() {
        let s = Settings::default();
        assert_eq!(
            on_event(&event("customer.created", Some("cus_1")), None, &s),
            enqueue("welcome", "cus_1", 0)
        );
        assert_eq!(
            on_event(&event("subscription.canceled", Some("cus_1")), None, &s),
            enqueue("win_back", "cus_1", 604_800)
        );
        assert!(on_event(&event("payment.succeeded", Some("cus_1")), None, &s).is_empty());
        assert!(on_event(&event("customer.created", None), None, &s).is_empty());
    }

    #[test]
    fn delay_from_config() {
        let s =
            Settings::from_lookup(|k| (k == "win_back_delay_days").then(|| "14".into())).unwrap();
        assert_eq!(
            on_event(&event("subscription.canceled", Some("cus_2")), None, &s),
            enqueue("win_back", "cus_2", 14 * 86_400)
        );
        assert!(
            Settings::from_lookup(|k| (k == "win_back_delay_days").then(|| "91".into())).is_err()
        );
    }
}
