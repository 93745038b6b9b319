//! Identifiers are `prefix_` + 22 base62 characters of a UUIDv7. The prefix says what an id
//! names at a glance (as Stripe's do); the UUIDv7 makes ids sort by creation time, so
//! `starting_after` pagination can order by id alone, and keeps them unguessable.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ENCODED_LEN: usize = 22;

/// The prefixes in use. Keeping them in one place stops two kinds of object sharing one.
pub mod prefix {
    pub const CUSTOMER: &str = "cus";
    pub const EVENT: &str = "evt";
    pub const API_KEY: &str = "key";
    pub const AUDIT: &str = "aud";
    pub const PAYMENT: &str = "pay";
    pub const PRODUCT: &str = "prod";
    pub const DISPUTE: &str = "dsp";
    pub const PRICE: &str = "price";
    pub const REFUND: &str = "re";
    pub const SUBSCRIPTION: &str = "sub";
    pub const INVOICE: &str = "in";
    pub const INVOICE_LINE: &str = "il";
    pub const QUOTE: &str = "quo";
    pub const MARKETING_SPEND: &str = "msp";
    /// The sandbox gateway's own objects, as a remote processor would name them.
    pub const SANDBOX_CHARGE: &str = "pi_sbx";
    pub const SANDBOX_REFUND: &str = "re_sbx";
}

/// A new id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    let mut value = uuid::Uuid::now_v7().as_u128();
    let mut out = [b'0'; ENCODED_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    let mut id = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    id.push_str(prefix);
    id.push('_');
    // The alphabet is ASCII, so this never fails.
    id.push_str(std::str::from_utf8(&out).unwrap_or_default());
    id
}

/// Whether `id` has the shape of an id with this prefix. Used to answer a malformed id
/// with 404 without touching the database, and to keep junk out of cursors.
pub fn is_well_formed(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == ENCODED_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The regular expression (ECMA 262 and Python alike) that [`is_well_formed`] accepts for
/// this prefix, for the API's description.
pub fn pattern(prefix: &str) -> String {
    format!("^{prefix}_[0-9A-Za-z]{{{ENCODED_LEN}}}$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_well_formed_and_ordered() {
        let a = new_id(prefix::CUSTOMER);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id(prefix::CUSTOMER);
        assert!(a.starts_with("cus_"));
        assert!(is_well_formed("cus", &a));
        assert!(!is_well_formed("evt", &a));
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn the_pattern_is_the_rule() {
        assert_eq!(pattern("cus"), "^cus_[0-9A-Za-z]{22}$");
        let id = new_id("cus");
        let body = &id["cus_".len()..];
        assert_eq!(body.len(), 22);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "cus_",
            "cus_short",
            "cus_0000000000000000000000x",
            "cus_00000000000000000000'-",
            "xcus_0000000000000000000000",
        ] {
            assert!(!is_well_formed("cus", bad), "{bad}");
        }
    }
}
