//! Verifying `Stripe-Signature`: HMAC-SHA256 of `{t}.{raw body}` under the endpoint secret,
//! compared in constant time against every `v1` signature in the header, with any of the
//! configured secrets (two during a rotation), and a timestamp within the tolerance.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// More `v1` signatures than anyone rotating secrets needs: a longer list is refused.
const MAX_SIGNATURES: usize = 8;

/// Stripe's default: events older (or newer) than this are refused as replays.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature in the Stripe-Signature header")]
    NoSignature,
    #[error("the signature timestamp is outside the {0} s tolerance")]
    Stale(i64),
    #[error("no signature matches the payload with any configured secret")]
    Mismatch,
}

/// Checks `header` against `payload` (the raw body, byte for byte as received).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[Secret],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(value);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    // abs_diff: `t` is the client's, and `t=-9223372036854775808` must not overflow.
    if now_secs.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale(tolerance_secs));
    }
    // One MAC per secret, compared against every candidate in constant time; the number of
    // candidates is capped so a header stuffed with signatures costs nothing extra.
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        // Compared as the lowercase hex Stripe writes, as its own libraries compare it: a
        // decoded comparison would also accept `B849…` for `b849…`, a header that differs from
        // the signed one yet verifies.
        let expected = hex::encode(mac.finalize().into_bytes());
        if signatures
            .iter()
            .any(|sig| bool::from(expected.as_bytes().ct_eq(sig.as_bytes())))
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The deepest nesting of arrays and objects an event may have. The worker reads events
/// with serde_json, which refuses more than 127 levels; Stripe's events nest a handful. An
/// event the worker could not read back is refused at intake rather than stored to fail.
pub const MAX_NESTING: usize = 64;

/// Whether the JSON text `payload` nests arrays and objects more than `limit` deep. A scan
/// of the bytes, no allocation: it runs before anything is parsed or stored.
pub fn nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in payload {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Makes a header the way Stripe does: used by tests and by the sandbox's own events.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn accepts_any_matching_secret_and_signature() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, "whsec_new", NOW);
        let secrets = vec![Secret::new("whsec_old"), Secret::new("whsec_new")];
        assert_eq!(verify(body, Some(&header), &secrets, NOW, 300), Ok(()));
        let two = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(
            verify(body, Some(&two), &secrets[1..], NOW + 299, 300),
            Ok(())
        );
    }

    #[test]
    fn measures_nesting_outside_strings() {
        assert!(!nests_deeper_than(br#"{"a":[{"b":1}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[{"b":[]}]}"#, 3));
        assert!(!nests_deeper_than(br#"{"a":"[[[[{{{{\"[[[["}"#, 1));
        let deep = format!("{}{}", "[".repeat(130_000), "]".repeat(130_000));
        assert!(nests_deeper_than(deep.as_bytes(), MAX_NESTING));
        let fine = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(!nests_deeper_than(fine.as_bytes(), MAX_NESTING));
        // What passes can be read back as serde_json reads it.
        assert!(serde_json::from_str::<serde_json::Value>(&fine).is_ok());
    }

    #[test]
    fn rejects_what_is_not_signed_now_by_us() {
        let body = br#"{"id":"evt_1"}"#;
        let s = vec![Secret::new("whsec_a")];
        let good = sign(body, "whsec_a", NOW);
        assert_eq!(
            verify(body, None, &s, NOW, 300),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify(body, Some("garbage"), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(body, Some("t=1"), &s, NOW, 300),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(body, Some(&good), &s, NOW + 301, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"{\"id\":\"evt_2\"}", Some(&good), &s, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let other = vec![Secret::new("whsec_b")];
        assert_eq!(
            verify(body, Some(&good), &other, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let stuffed = format!("{good}{}", ",v1=00".repeat(8));
        assert_eq!(
            verify(body, Some(&stuffed), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        // Found by the fuzz target: a header that differs from the signed one must not verify
        // (Stripe writes lowercase hex), and no timestamp overflows the tolerance check.
        let upper = format!(
            "t={NOW},v1={}",
            good[good.len() - 64..].to_ascii_uppercase()
        );
        assert_eq!(
            verify(body, Some(&upper), &s, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let far = format!("t={},v1={}", i64::MIN, "00".repeat(32));
        assert_eq!(
            verify(body, Some(&far), &s, i64::MAX, 300),
            Err(SignatureError::Stale(300))
        );
        let v0 = good.replace("v1=", "v0=");
        assert_eq!(
            verify(body, Some(&v0), &s, NOW, 300),
            Err(SignatureError::NoSignature)
        );
    }
}
