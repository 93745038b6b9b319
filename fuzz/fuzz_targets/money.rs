//! The money parser: an input is text, `CURRENCY\nAMOUNT[\nMAX_MINOR]`, as a client sends a
//! currency code and an amount (and as a configured limit caps it).
//!
//! Properties, beyond "never panics":
//! - whatever `Currency::parse` accepts is a 3-letter code with a minor unit of at most 4
//!   digits, and reads back as itself;
//! - `parse_major_or_zero` accepts exactly the plain decimals a digit-by-digit reading accepts
//!   (no sign, no exponent, no more significant decimals than the currency has, at most the
//!   cap), with the same value: the reading here never goes through a decimal type, so it is
//!   an independent oracle, not a copy;
//! - `parse_major` is `parse_major_or_zero` without zero;
//! - parse → format → parse round trip: an accepted amount written back with
//!   `Money::major_string` has exactly the currency's decimals and parses to the same value;
//! - format → parse round trip: an AMOUNT that is a whole number of minor units in range,
//!   written as major units, parses back to itself.
#![no_main]

use hephaestus_core::money::{Currency, MAX_MINOR, Money, parse_major, parse_major_or_zero};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let code = lines.next().unwrap_or_default();
    let amount = lines.next().unwrap_or_default();
    let max = lines
        .next()
        .and_then(|m| m.trim().parse::<i64>().ok())
        .unwrap_or(MAX_MINOR);

    let Ok(currency) = Currency::parse(code, "currency") else {
        return;
    };
    check_currency(code, currency);
    let exponent = currency.exponent();

    let got = parse_major_or_zero(amount, currency, max, "amount");
    let want = oracle(amount, exponent, max);
    assert_eq!(
        got.as_ref().ok(),
        want.as_ref(),
        "{amount:?} {currency} max {max}: parser {got:?}, digit reading {want:?}"
    );
    if let Err(e) = &got {
        assert_eq!(e.field, "amount");
        assert!(!e.message.is_empty());
    }

    let strict = parse_major(amount, currency, max, "amount");
    match got {
        Ok(0) => assert!(strict.is_err(), "zero accepted by parse_major"),
        Ok(minor) => assert_eq!(strict, Ok(minor)),
        Err(_) => assert!(strict.is_err()),
    }

    if let Ok(minor) = got {
        let written = Money { minor, currency }.major_string();
        check_written(&written, exponent);
        assert_eq!(
            parse_major_or_zero(&written, currency, max, "amount"),
            Ok(minor),
            "{amount:?} → {minor} → {written:?}"
        );
    }

    if let Ok(minor) = amount.parse::<i64>()
        && (0..=MAX_MINOR).contains(&minor)
    {
        let written = Money { minor, currency }.major_string();
        check_written(&written, exponent);
        assert_eq!(
            parse_major_or_zero(&written, currency, MAX_MINOR, "amount"),
            Ok(minor),
            "{minor} {currency} → {written:?}"
        );
    }
});

fn check_currency(input: &str, currency: Currency) {
    let code = currency.code();
    assert_eq!(code.len(), 3);
    assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
    assert!(
        code.eq_ignore_ascii_case(input.trim()),
        "{input:?} → {code}"
    );
    assert!(currency.exponent() <= 4, "{code}");
    assert_eq!(Currency::parse(code, "currency"), Ok(currency));
}

/// `written` is a plain decimal with exactly `exponent` digits after the point.
fn check_written(written: &str, exponent: u32) {
    let (int, frac) = written.split_once('.').unwrap_or((written, ""));
    assert!(
        !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()),
        "{written:?}"
    );
    assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{written:?}");
    assert_eq!(frac.len(), exponent as usize, "{written:?}");
    assert!(int == "0" || !int.starts_with('0'), "{written:?}");
}

/// Minor units of `text` read digit by digit in `i128`, or `None` where the parser must refuse.
fn oracle(text: &str, exponent: u32, max: i64) -> Option<i64> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (text.contains('.') && !digits(frac)) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if frac.len() > exponent as usize || int.len() > 19 {
        return None;
    }
    let scale = 10_i128.pow(exponent);
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let part: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let minor = whole * scale + part * 10_i128.pow(exponent - frac.len() as u32);
    (minor <= i128::from(MAX_MINOR.min(max))).then_some(minor as i64)
}
