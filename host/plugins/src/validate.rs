//! The host's side of the contract: every rule the WIT documents for a plugin's answer,
//! checked before the answer is used, plus the input-size estimate behind the input cap.

use std::collections::HashSet;

use crate::model::{
    Action, Attribute, CustomerProfile, Money, Personalization, Quote, Recommendation, Request,
    Response,
};

pub const MAX_REASON_CHARS: usize = 200;
pub const MAX_RECOMMENDATION_REASON_CHARS: usize = 500;
pub const MAX_SEGMENTS: usize = 16;
pub const MAX_SEGMENT_CHARS: usize = 32;
pub const MAX_SUBJECT_CHARS: usize = 200;
pub const MAX_VARIABLES: usize = 64;
pub const MAX_ACTIONS: usize = 16;
/// 90 days.
pub const MAX_DELAY_SECONDS: u32 = 7_776_000;
/// Keys and values of personalization variables, and trigger template/customer ids.
/// Not in the WIT, but a template variable of a megabyte is a broken plugin.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Checks (and normalises: segments are de-duplicated) a plugin's answer to `request`.
/// The error is a one-line explanation meant for the plugin's author.
pub fn response(request: &Request, response: Response) -> Result<Response, String> {
    match (request, response) {
        (Request::Quote(r), Response::Quote(q)) => {
            quote(&r.unit_price, r.quantity, &q)?;
            Ok(Response::Quote(q))
        }
        (Request::Recommend(r), Response::Recommend(rec)) => {
            recommendation(&r.current_price, &rec)?;
            Ok(Response::Recommend(rec))
        }
        (Request::Segment(_), Response::Segment(tags)) => segments(tags).map(Response::Segment),
        (Request::Personalize(_), Response::Personalize(p)) => {
            personalization(&p)?;
            Ok(Response::Personalize(p))
        }
        (Request::OnEvent(_), Response::OnEvent(actions)) => {
            self::actions(&actions)?;
            Ok(Response::OnEvent(actions))
        }
        (request, _) => Err(format!(
            "answered a different function than `{}`",
            request.function()
        )),
    }
}

fn currency(money: &Money, field: &str) -> Result<(), String> {
    if iso_currency::Currency::from_code(&money.currency).is_none() {
        return Err(format!(
            "{field}: {:?} is not an ISO 4217 currency code",
            truncated(&money.currency)
        ));
    }
    Ok(())
}

fn same_currency(money: &Money, expected: &Money, field: &str) -> Result<(), String> {
    currency(money, field)?;
    if money.currency != expected.currency {
        return Err(format!(
            "{field} is in {}, the request is in {}",
            money.currency, expected.currency
        ));
    }
    Ok(())
}

fn chars_at_most(text: &str, max: usize, field: &str) -> Result<(), String> {
    let n = text.chars().count();
    if n > max {
        return Err(format!("{field} is {n} characters, at most {max} allowed"));
    }
    Ok(())
}

fn quote(unit_price: &Money, quantity: u32, q: &Quote) -> Result<(), String> {
    same_currency(&q.amount, unit_price, "amount")?;
    same_currency(&q.discount, unit_price, "discount")?;
    let list_total = i128::from(unit_price.amount_minor) * i128::from(quantity);
    let amount = i128::from(q.amount.amount_minor);
    let discount = i128::from(q.discount.amount_minor);
    if amount < 0 {
        return Err(format!("amount {} is negative", q.amount.amount_minor));
    }
    if discount < 0 {
        return Err(format!("discount {} is negative", q.discount.amount_minor));
    }
    if discount > list_total {
        return Err(format!(
            "discount {discount} is larger than the list total {list_total}"
        ));
    }
    // The WIT defines `discount` as how much below the list total `amount` is. Holding
    // plugins to exactly that means a stored quote always shows the customer a discount
    // that adds up, and a plugin cannot charge above the list price by omitting one.
    if amount + discount != list_total {
        return Err(format!(
            "amount {amount} + discount {discount} is not the list total {list_total}"
        ));
    }
    chars_at_most(&q.reason, MAX_REASON_CHARS, "reason")
}

fn recommendation(current: &Money, r: &Recommendation) -> Result<(), String> {
    same_currency(&r.recommended_price, current, "recommended_price")?;
    let price = i128::from(r.recommended_price.amount_minor);
    let current_amount = i128::from(current.amount_minor);
    if price <= 0 {
        return Err(format!("recommended price {price} is not positive"));
    }
    // "Within a factor of ten": current/10 <= price <= current*10.
    if price > current_amount * 10 || price * 10 < current_amount {
        return Err(format!(
            "recommended price {price} is not within a factor of ten of the current {current_amount}"
        ));
    }
    chars_at_most(&r.reason, MAX_RECOMMENDATION_REASON_CHARS, "reason")
}

/// A valid segment tag: 1–32 of `a-z`, `0-9`, `_`.
pub fn is_segment_tag(tag: &str) -> bool {
    (1..=MAX_SEGMENT_CHARS).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn segments(tags: Vec<String>) -> Result<Vec<String>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(tags.len().min(MAX_SEGMENTS));
    for tag in tags {
        if !is_segment_tag(&tag) {
            return Err(format!(
                "segment {:?} is not 1–32 characters of a-z, 0-9 or _",
                truncated(&tag)
            ));
        }
        if seen.insert(tag.clone()) {
            out.push(tag);
        }
    }
    if out.len() > MAX_SEGMENTS {
        return Err(format!(
            "{} distinct segments, at most {MAX_SEGMENTS} allowed",
            out.len()
        ));
    }
    Ok(out)
}

fn text(value: &str, field: &str) -> Result<(), String> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "{field} is {} bytes, at most {MAX_TEXT_BYTES} allowed",
            value.len()
        ));
    }
    Ok(())
}

fn personalization(p: &Personalization) -> Result<(), String> {
    if let Some(subject) = &p.subject {
        chars_at_most(subject, MAX_SUBJECT_CHARS, "subject")?;
    }
    if p.variables.len() > MAX_VARIABLES {
        return Err(format!(
            "{} variables, at most {MAX_VARIABLES} allowed",
            p.variables.len()
        ));
    }
    for Attribute { key, value } in &p.variables {
        if key.is_empty() {
            return Err("a variable has an empty key".into());
        }
        text(key, "variable key")?;
        text(value, "variable value")?;
    }
    Ok(())
}

fn actions(actions: &[Action]) -> Result<(), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!(
            "{} actions, at most {MAX_ACTIONS} allowed",
            actions.len()
        ));
    }
    for Action::Enqueue(e) in actions {
        if e.delay_seconds > MAX_DELAY_SECONDS {
            return Err(format!(
                "delay of {} s is longer than 90 days ({MAX_DELAY_SECONDS} s)",
                e.delay_seconds
            ));
        }
        if e.template.is_empty() || e.customer_id.is_empty() {
            return Err("enqueue needs a template and a customer id".into());
        }
        text(&e.template, "template")?;
        text(&e.customer_id, "customer_id")?;
    }
    Ok(())
}

fn truncated(text: &str) -> String {
    crate::call::truncate(text, 40)
}

/// Estimated serialised size of a request: string and list contents plus a few bytes per
/// field. Cheap enough for every call, close enough for a cap.
pub fn input_size(request: &Request) -> usize {
    fn money(m: &Money) -> usize {
        8 + m.currency.len()
    }
    fn attrs(list: &[Attribute]) -> usize {
        list.iter().map(|a| a.key.len() + a.value.len() + 8).sum()
    }
    fn opt(s: &Option<String>) -> usize {
        s.as_ref().map_or(1, |s| s.len() + 1)
    }
    fn profile(c: &CustomerProfile) -> usize {
        c.id.len()
            + opt(&c.name)
            + opt(&c.email_domain)
            + c.segments.iter().map(|s| s.len() + 4).sum::<usize>()
            + money(&c.lifetime_value)
            + money(&c.monthly_recurring_revenue)
            + attrs(&c.attributes)
            + 64
    }
    match request {
        Request::Quote(r) => {
            profile(&r.customer)
                + r.product_id.len()
                + r.product_name.len()
                + r.price_id.len()
                + money(&r.unit_price)
                + opt(&r.interval)
                + attrs(&r.context)
                + 8
        }
        Request::Recommend(r) => {
            r.product_id.len()
                + r.product_name.len()
                + money(&r.current_price)
                + opt(&r.customer_segment)
                + r.history
                    .iter()
                    .map(|p| money(&p.unit_price) + money(&p.revenue) + 12)
                    .sum::<usize>()
        }
        Request::Segment(r) => profile(&r.customer),
        Request::Personalize(r) => {
            profile(&r.customer)
                + r.campaign.id.len()
                + r.campaign.name.len()
                + r.campaign.template.len()
                + r.campaign.subject.len()
                + attrs(&r.variables)
        }
        Request::OnEvent(r) => {
            r.event.id.len()
                + r.event.kind.len()
                + opt(&r.event.customer_id)
                + r.event.subject_id.len()
                + r.event.data.len()
                + 8
                + r.customer.as_ref().map_or(1, profile)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Enqueue;

    fn usd(n: i64) -> Money {
        Money::new(n, "USD")
    }

    fn q(amount: Money, discount: Money, reason: &str) -> Quote {
        Quote {
            amount,
            discount,
            reason: reason.into(),
        }
    }

    #[test]
    fn quotes_follow_the_documented_rules() {
        let unit = usd(1000);
        assert!(quote(&unit, 3, &q(usd(2700), usd(300), "ok")).is_ok());
        assert!(quote(&unit, 3, &q(usd(0), usd(3000), "free")).is_ok());
        let cases = [
            (q(Money::new(2700, "EUR"), usd(300), "x"), "EUR"),
            (q(Money::new(2700, "XXQ"), usd(300), "x"), "ISO 4217"),
            (q(usd(-1), usd(0), "x"), "negative"),
            (q(usd(1), usd(-1), "x"), "negative"),
            (q(usd(0), usd(3001), "x"), "larger than the list total"),
            (q(usd(30_001), usd(0), "x"), "not the list total"),
            (q(usd(2700), usd(200), "x"), "not the list total"),
            (q(usd(2700), usd(0), "x"), "not the list total"),
            (q(usd(3000), usd(0), &"é".repeat(201)), "201 characters"),
        ];
        for (answer, expected) in cases {
            let err = quote(&unit, 3, &answer).unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        assert!(quote(&unit, 3, &q(usd(3000), usd(0), &"é".repeat(200))).is_ok());
    }

    #[test]
    fn recommendations_stay_positive_and_within_ten_times() {
        let current = usd(1000);
        let rec = |n: i64, cur: &str| Recommendation {
            recommended_price: Money::new(n, cur),
            revenue_change_basis_points: 0,
            conversion_change_basis_points: 0,
            reason: String::new(),
        };
        assert!(recommendation(&current, &rec(100, "USD")).is_ok());
        assert!(recommendation(&current, &rec(10_000, "USD")).is_ok());
        assert!(recommendation(&current, &rec(99, "USD")).is_err());
        assert!(recommendation(&current, &rec(10_001, "USD")).is_err());
        assert!(recommendation(&current, &rec(0, "USD")).is_err());
        assert!(recommendation(&current, &rec(1000, "JPY")).is_err());
    }

    #[test]
    fn segments_are_checked_and_deduplicated() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            segments(tags(&["new", "vip_2", "new"])).unwrap(),
            tags(&["new", "vip_2"])
        );
        assert!(segments(tags(&["New"])).is_err());
        assert!(segments(tags(&[""])).is_err());
        assert!(segments(tags(&[&"a".repeat(33)])).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        assert!(segments(many).is_err());
        let dup: Vec<String> = (0..40).map(|i| format!("t{}", i % 16)).collect();
        assert_eq!(segments(dup).unwrap().len(), 16);
    }

    #[test]
    fn personalization_and_actions_are_bounded() {
        let ok = Personalization {
            subject: Some("Hi".into()),
            variables: vec![Attribute::new("k", "v")],
        };
        assert!(personalization(&ok).is_ok());
        let long = Personalization {
            subject: Some("x".repeat(201)),
            variables: vec![],
        };
        assert!(personalization(&long).is_err());
        let many = Personalization {
            subject: None,
            variables: (0..65)
                .map(|i| Attribute::new(format!("k{i}"), "v"))
                .collect(),
        };
        assert!(personalization(&many).is_err());

        let enqueue = |delay| {
            Action::Enqueue(Enqueue {
                template: "t".into(),
                customer_id: "c".into(),
                delay_seconds: delay,
            })
        };
        assert!(actions(&[enqueue(MAX_DELAY_SECONDS)]).is_ok());
        assert!(actions(&[enqueue(MAX_DELAY_SECONDS + 1)]).is_err());
        assert!(actions(&vec![enqueue(1); 17]).is_err());
    }
}
