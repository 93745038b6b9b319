use std::collections::BTreeMap;

use crate::validation::{ValidationError, check_text};
use crate::{Timestamp, ids};

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

/// Free-form string pairs a client keeps on an object. Ordered, so exports and
/// responses are stable byte for byte (idempotent replays compare equal).
pub type Metadata = BTreeMap<String, String>;

/// A customer as stored. After erasure the personal fields are gone and `erased_at` says
/// when; the id stays so anonymous records (payments, events) keep pointing somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: Metadata,
    /// The payment method a payment that names none is charged to (as Stripe's
    /// `invoice_settings.default_payment_method`).
    pub default_payment_method: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub erased_at: Option<Timestamp>,
}

/// A validated request to create a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    pub id: String,
    pub email: String,
    /// The form uniqueness is checked on: two addresses differing only in case are one inbox
    /// for every provider that matters, so they are one customer.
    pub email_key: String,
    pub name: Option<String>,
    pub metadata: Metadata,
    pub default_payment_method: Option<String>,
}

impl NewCustomer {
    pub fn validate(
        email: String,
        name: Option<String>,
        metadata: Option<Metadata>,
        default_payment_method: Option<String>,
    ) -> Result<Self, ValidationError> {
        let email = validate_email(email.trim())?;
        validate_name(name.as_deref())?;
        let metadata = metadata.unwrap_or_default();
        validate_metadata(&metadata)?;
        if let Some(pm) = &default_payment_method {
            validate_payment_method("default_payment_method", pm)?;
        }
        Ok(Self {
            id: ids::new_id(ids::prefix::CUSTOMER),
            email_key: email.to_lowercase(),
            email,
            name,
            metadata,
            default_payment_method,
        })
    }
}

/// A validated change to a customer's details. Absent fields stay as they are; metadata
/// keys are merged into what is there, and a key given an empty value is removed (as
/// Stripe does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerChanges {
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<Metadata>,
    /// `Some("")` removes the default.
    pub default_payment_method: Option<String>,
}

impl CustomerChanges {
    pub fn validate(
        email: Option<String>,
        name: Option<String>,
        metadata: Option<Metadata>,
        default_payment_method: Option<String>,
    ) -> Result<Self, ValidationError> {
        let email = email.map(|e| validate_email(e.trim())).transpose()?;
        validate_name(name.as_deref())?;
        // The key count is checked on the merged result, in `apply`.
        if let Some(metadata) = &metadata {
            validate_metadata_entries(metadata)?;
        }
        if let Some(pm) = &default_payment_method
            && !pm.is_empty()
        {
            validate_payment_method("default_payment_method", pm)?;
        }
        if email.is_none()
            && name.is_none()
            && metadata.is_none()
            && default_payment_method.is_none()
        {
            return Err(ValidationError::new(
                "body",
                "give at least one of email, name, metadata, default_payment_method",
            ));
        }
        Ok(Self {
            email,
            name,
            metadata,
            default_payment_method,
        })
    }

    /// `customer` with the changes applied, and the names of the fields that changed.
    pub fn apply(
        &self,
        customer: &Customer,
    ) -> Result<(Customer, Vec<&'static str>), ValidationError> {
        let mut next = customer.clone();
        let mut changed = Vec::new();
        if let Some(email) = &self.email
            && next.email.as_deref() != Some(email.as_str())
        {
            next.email = Some(email.clone());
            changed.push("email");
        }
        if let Some(name) = &self.name
            && next.name.as_deref() != Some(name.as_str())
        {
            next.name = Some(name.clone());
            changed.push("name");
        }
        if let Some(pm) = &self.default_payment_method {
            let pm = (!pm.is_empty()).then(|| pm.clone());
            if next.default_payment_method != pm {
                next.default_payment_method = pm;
                changed.push("default_payment_method");
            }
        }
        if let Some(metadata) = &self.metadata {
            for (key, value) in metadata {
                if value.is_empty() {
                    next.metadata.remove(key);
                } else {
                    next.metadata.insert(key.clone(), value.clone());
                }
            }
            validate_metadata(&next.metadata)?;
            if next.metadata != customer.metadata {
                changed.push("metadata");
            }
        }
        Ok((next, changed))
    }
}

/// A payment method reference: a sandbox test method (`pm_card_visa`) or a gateway's id
/// (`pm_…`), 1 to 100 visible characters.
pub fn validate_payment_method(field: &'static str, pm: &str) -> Result<(), ValidationError> {
    if pm.is_empty() || pm.len() > 100 || !pm.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new(
            field,
            "must be a payment method like pm_card_visa: 1 to 100 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Accepts the addresses people actually use (`local@domain.tld`) and rejects display-name
/// forms, IP literals, dotless domains and anything with spaces or controls.
pub fn validate_email(email: &str) -> Result<String, ValidationError> {
    let invalid = || {
        ValidationError::new(
            "email",
            "must be a valid email address like name@example.com",
        )
    };
    if email.is_empty() {
        return Err(ValidationError::new("email", "must not be empty"));
    }
    check_text("email", email, MAX_EMAIL_CHARS)?;
    // Whitespace, and the invisible characters used to make one address look like another
    // (zero-width and bidirectional controls), have no place in an address anyone types.
    let invisible = |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
    if email.chars().any(|c| c.is_whitespace() || invisible(c)) {
        return Err(invalid());
    }
    let parsed = email_address::EmailAddress::parse_with_options(
        email,
        email_address::Options::default().without_display_text(),
    )
    .map_err(|_| invalid())?;
    let domain = parsed.domain();
    let domain_ok = !domain.starts_with('[')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if !domain_ok {
        return Err(invalid());
    }
    Ok(email.to_string())
}

pub fn validate_metadata(metadata: &Metadata) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ValidationError::new(
            "metadata",
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    validate_metadata_entries(metadata)
}

/// Each key and value, without the key count.
fn validate_metadata_entries(metadata: &Metadata) -> Result<(), ValidationError> {
    for (key, value) in metadata {
        if key.is_empty() {
            return Err(ValidationError::new("metadata", "keys must not be empty"));
        }
        check_text(&format!("metadata.{key}"), key, MAX_METADATA_KEY_CHARS)?;
        check_text(&format!("metadata.{key}"), value, MAX_METADATA_VALUE_CHARS)?;
    }
    Ok(())
}

/// A name, when one is given, is non-blank text.
fn validate_name(name: Option<&str>) -> Result<(), ValidationError> {
    if let Some(name) = name {
        if name.trim().is_empty() {
            return Err(ValidationError::new("name", "must not be empty when given"));
        }
        check_text("name", name, MAX_NAME_CHARS)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> Customer {
        Customer {
            id: "cus_1".into(),
            email: Some("a@example.com".into()),
            name: Some("Ada".into()),
            metadata: Metadata::from([("plan".into(), "pro".into()), ("seats".into(), "3".into())]),
            default_payment_method: None,
            created_at: Timestamp::from_micros(0),
            updated_at: Timestamp::from_micros(0),
            erased_at: None,
        }
    }

    #[test]
    fn changes_merge_metadata_and_name_what_changed() {
        let changes = CustomerChanges::validate(
            None,
            Some("Ada".into()),
            Some(Metadata::from([
                ("plan".into(), "enterprise".into()),
                ("seats".into(), String::new()),
            ])),
            None,
        )
        .unwrap();
        let (next, changed) = changes.apply(&customer()).unwrap();
        assert_eq!(changed, ["metadata"]);
        assert_eq!(
            next.metadata,
            Metadata::from([("plan".into(), "enterprise".into())])
        );
        let same =
            CustomerChanges::validate(Some(" a@example.com ".into()), None, None, None).unwrap();
        assert_eq!(same.apply(&customer()).unwrap().1, Vec::<&str>::new());
        assert_eq!(
            CustomerChanges::validate(None, None, None, None)
                .unwrap_err()
                .field,
            "body"
        );
        assert_eq!(
            CustomerChanges::validate(Some("nope".into()), None, None, None)
                .unwrap_err()
                .field,
            "email"
        );
        let many: Metadata = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let changes = CustomerChanges::validate(None, None, Some(many), None).unwrap();
        assert_eq!(changes.apply(&customer()).unwrap_err().field, "metadata");
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@example.com",
            "first.last+tag@sub.example.co.uk",
            "Ünïcødé@例え.jp",
        ] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "plain",
            "a@b",
            "a@@b.com",
            "Name <a@b.com>",
            "a b@c.com",
            "a@[127.0.0.1]",
            "a@-x.com",
            "a@x..com",
            "a@example.com\n",
            "a\u{0}@example.com",
            "a\u{202e}@example.com",
            "a\u{200b}b@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(validate_email(&long).is_err());
    }

    #[test]
    fn case_variants_share_one_key() {
        let a = NewCustomer::validate("Ann@Example.com".into(), None, None, None).unwrap();
        let b = NewCustomer::validate("ann@example.COM".into(), None, None, None).unwrap();
        assert_eq!(a.email_key, b.email_key);
        assert_eq!(a.email, "Ann@Example.com");
    }

    #[test]
    fn metadata_limits() {
        let mut m = Metadata::new();
        for i in 0..=MAX_METADATA_KEYS {
            m.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(validate_metadata(&m).unwrap_err().field, "metadata");
        let m = Metadata::from([("k".to_string(), "v".repeat(501))]);
        assert_eq!(validate_metadata(&m).unwrap_err().field, "metadata.k");
    }
}
