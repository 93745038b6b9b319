//! Example personalization plugin: a subject line chosen by the customer's segment.
//!
//! The first of these tags the customer holds picks the subject (each overridable with config
//! `subject_<tag>`, where `{first_name}` is replaced):
//!
//! | tag | default subject |
//! |---|---|
//! | `at_risk` | "Hi {first_name}, we miss you" |
//! | `high_value` | "Hi {first_name}, an exclusive thank-you for our VIP customers" |
//! | `new` | "Hi {first_name}, welcome aboard!" |
//!
//! Other customers keep the template's subject. Every message also gets the variables
//! `first_name` (the first word of the customer's name, or "there" without a name) and
//! `segment` (the tag that chose the subject, or "general").

use hephaestus_plugin_sdk::personalization::{Guest, Personalization, PersonalizeRequest};
use hephaestus_plugin_sdk::{Attribute, config, has_segment};

/// Tags that choose a subject, in priority order, with their default subjects.
pub const SUBJECTS: [(&str, &str); 3] = [
    ("at_risk", "Hi {first_name}, we miss you"),
    (
        "high_value",
        "Hi {first_name}, an exclusive thank-you for our VIP customers",
    ),
    ("new", "Hi {first_name}, welcome aboard!"),
];

/// The host's limit on a subject line, in characters.
const MAX_SUBJECT_CHARS: usize = 200;

/// The first word of `name`, or "there" when there is none ("Hi there").
pub fn first_name(name: Option<&str>) -> String {
    name.and_then(|n| n.split_whitespace().next())
        .unwrap_or("there")
        .to_owned()
}

/// Personalizes `request`; `lookup` reads the plugin config (`subject_<tag>` overrides).
pub fn personalize(
    request: &PersonalizeRequest,
    lookup: impl Fn(&str) -> Option<String>,
) -> Personalization {
    let first = first_name(request.customer.name.as_deref());
    let chosen = SUBJECTS
        .iter()
        .find(|(tag, _)| has_segment(&request.customer, tag));
    let subject = chosen.map(|(tag, default)| {
        let template = lookup(&format!("subject_{tag}")).unwrap_or_else(|| (*default).to_owned());
        template
            .replace("{first_name}", &first)
            .chars()
            .take(MAX_SUBJECT_CHARS)
            .collect()
    });
    let segment = chosen.map_or("general", |(tag, _)| tag);
    Personalization {
        subject,
        variables: vec![
            Attribute {
                key: "first_name".into(),
                value: first,
            },
            Attribute {
                key: "segment".into(),
                value: segment.to_owned(),
            },
        ],
    }
}

/// The exported plugin.
#[derive(Debug)]
pub struct SegmentSubjects;

impl Guest for SegmentSubjects {
    fn personalize(request: PersonalizeRequest) -> Result<Personalization, String> {
        Ok(personalize(&request, config::get))
    }
}

hephaestus_plugin_sdk::export_personalization!(SegmentSubjects);

#[cfg(test)]
mod tests {
    use super::*;
    use hephaestus_plugin_sdk::CustomerProfile;
    use hephaestus_plugin_sdk::personalization::Campaign;

    fn request(name: Option<&str>, segments: &[&str]) -> PersonalizeRequest {
        PersonalizeRequest {
            customer: CustomerProfile {
                id: "cus_1".into(),
                name: name.map(str::to_owned),
                email_domain: None,
                created_at: 0,
                segments: segments.iter().map(|s| s.to_string()).collect(),
                lifetime_value: hephaestus_plugin_sdk::money(0, "USD"),
                monthly_recurring_revenue: hephaestus_plugin_sdk::money(0, "USD"),
                activity: hephaestus_plugin_sdk::no_activity(),
                attributes: vec![],
            },
            campaign: Campaign {
                id: "cmp_1".into(),
                name: "Spring".into(),
                template: "newsletter".into(),
                subject: "Our spring news".into(),
            },
            variables: vec![],
        }
    }

    fn var<'a>(p: &'a Personalization, key: &str) -> &'a str {
        hephaestus_plugin_sdk::attribute(&p.variables, key).unwrap()
    }

    #[test]
    fn subject_by_segment_priority() {
        let p = personalize(&request(Some("Ada Lovelace"), &["new", "at_risk"]), |_| {
            None
        });
        assert_eq!(p.subject.as_deref(), Some("Hi Ada, we miss you"));
        assert_eq!(
            (var(&p, "first_name"), var(&p, "segment")),
            ("Ada", "at_risk")
        );

        let p = personalize(&request(None, &["high_value"]), |_| None);
        assert_eq!(
            p.subject.as_deref(),
            Some("Hi there, an exclusive thank-you for our VIP customers")
        );

        let p = personalize(&request(Some("Grace"), &["power_user"]), |_| None);
        assert_eq!(p.subject, None);
        assert_eq!(
            (var(&p, "first_name"), var(&p, "segment")),
            ("Grace", "general")
        );
    }

    #[test]
    fn config_overrides_subject() {
        let lookup = |k: &str| {
            (k == "subject_new").then(|| "Hello {first_name}, glad you're here".to_string())
        };
        let p = personalize(&request(Some("  Linus  Torvalds"), &["new"]), lookup);
        assert_eq!(p.subject.as_deref(), Some("Hello Linus, glad you're here"));
    }
}
