//! The `Stripe-Signature` check and the webhook intake's nesting scan. An input is
//! `SECRET\nNOW\nHEADER\nPAYLOAD`: the endpoint secret, the clock in Unix seconds, the header
//! as received and the raw body (any bytes).
//!
//! Properties, beyond "never panics":
//! - `verify` accepts a header only if it carries, as a `v1` item, exactly the signature the
//!   signer makes for the payload at its `t`, and `t` is within the tolerance of NOW;
//! - a header made by the signer at NOW verifies, also beside an old secret during a rotation
//!   and at either edge of the tolerance, and is stale one second past it;
//! - any single-byte change to that header (a position per input, several replacements), to
//!   the payload or to the secret makes it fail;
//! - a payload the nesting scan lets through never makes serde_json, as the inbox worker
//!   reads events, give up for depth.
#![no_main]

use std::hash::{DefaultHasher, Hash, Hasher};

use hephaestus_core::secret::Secret;
use hephaestus_core::webhook::{
    DEFAULT_TOLERANCE_SECS, MAX_NESTING, SignatureError, nests_deeper_than, sign, verify,
};
use libfuzzer_sys::fuzz_target;

const TOL: i64 = DEFAULT_TOLERANCE_SECS;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(secret), Some(now), Some(header)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let payload = parts.next().unwrap_or_default();
    let (Ok(secret), Ok(now), Ok(header)) = (
        std::str::from_utf8(secret),
        std::str::from_utf8(now),
        std::str::from_utf8(header),
    ) else {
        return;
    };
    let now: i64 = now.trim().parse().unwrap_or(0);
    let secrets = [Secret::new(secret)];

    assert_eq!(
        verify(payload, None, &secrets, now, TOL),
        Err(SignatureError::MissingHeader)
    );
    if verify(payload, Some(header), &secrets, now, TOL).is_ok() {
        let t = last_timestamp(header).expect("accepted without a timestamp");
        assert!(
            now.abs_diff(t) <= TOL.unsigned_abs(),
            "{t} is stale at {now}"
        );
        let made = sign(payload, secret, t);
        let want = made.split_once(",v1=").expect("signer writes v1").1;
        assert!(
            items(header).any(|(k, v)| k == "v1" && v == want),
            "{header:?} accepted, but the signer writes {made:?}"
        );
    }

    signer_round_trip(secret, now, payload, seed(data));

    if !nests_deeper_than(payload, MAX_NESTING)
        && let Err(e) = serde_json::from_slice::<serde_json::Value>(payload)
    {
        assert!(
            !e.to_string().contains("recursion limit"),
            "passed the nesting scan but serde_json gave up: {e}"
        );
    }
});

fn signer_round_trip(secret: &str, now: i64, payload: &[u8], seed: u64) {
    let secrets = [Secret::new(secret)];
    let good = sign(payload, secret, now);
    assert_eq!(verify(payload, Some(&good), &secrets, now, TOL), Ok(()));
    let rotating = [Secret::new(format!("{secret}_old")), Secret::new(secret)];
    assert_eq!(verify(payload, Some(&good), &rotating, now, TOL), Ok(()));
    for edge in [now.checked_add(TOL), now.checked_sub(TOL)]
        .into_iter()
        .flatten()
    {
        assert_eq!(verify(payload, Some(&good), &secrets, edge, TOL), Ok(()));
    }
    if let Some(late) = now.checked_add(TOL + 1) {
        assert_eq!(
            verify(payload, Some(&good), &secrets, late, TOL),
            Err(SignatureError::Stale(TOL))
        );
    }

    // One position per input, spread over the header by a hash of the input so a run covers
    // them all, with fixed replacements (case, low bit, `+` and space that a lenient reader
    // might skip) and one from the hash.
    let mut bytes = good.clone().into_bytes();
    let i = (seed % bytes.len() as u64) as usize;
    let original = bytes[i];
    let any = (seed >> 32) as u8;
    for replacement in [
        original ^ 0x20,
        original ^ 0x01,
        original ^ 0x10,
        b'+',
        b' ',
        any,
    ] {
        if replacement == original {
            continue;
        }
        bytes[i] = replacement;
        if let Ok(changed) = std::str::from_utf8(&bytes) {
            assert!(
                verify(payload, Some(changed), &secrets, now, TOL).is_err(),
                "{changed:?} verifies like {good:?}"
            );
        }
    }

    if !payload.is_empty() {
        let mut changed = payload.to_vec();
        let i = (seed % changed.len() as u64) as usize;
        changed[i] ^= 0x01;
        assert_eq!(
            verify(&changed, Some(&good), &secrets, now, TOL),
            Err(SignatureError::Mismatch)
        );
    }
    let mut longer = payload.to_vec();
    longer.push(b' ');
    assert_eq!(
        verify(&longer, Some(&good), &secrets, now, TOL),
        Err(SignatureError::Mismatch)
    );
    let other = [Secret::new(format!("{secret}x"))];
    assert_eq!(
        verify(payload, Some(&good), &other, now, TOL),
        Err(SignatureError::Mismatch)
    );
}

fn seed(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The header's `key=value` items, as the header format defines them.
fn items(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
}

/// The timestamp a reader that lets the last `t` win sees.
fn last_timestamp(header: &str) -> Option<i64> {
    items(header)
        .filter(|(k, _)| *k == "t")
        .last()
        .and_then(|(_, v)| v.parse().ok())
}
