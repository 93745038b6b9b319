//! What each domain event adds to the aggregates: pure, no I/O. The consumer loads the state
//! rows a batch of events needs, runs them through [`Engine::apply`] in log order, and
//! writes [`Engine::finish`]'s changes in the same transaction as its new position.
//!
//! MRR follows the subscription-analytics convention. Every `subscription.*` event carries
//! the subscription's monthly-normalised amount after discounts (`mrr_minor`, computed by
//! billing: yearly ÷ 12, weekly × 52 ÷ 12, interval counts honoured, zero while trialing or
//! ended). A subscription counts that amount while `active`, and while `past_due` once it
//! has been active (a trial whose first charge fails never counted); the difference from
//! what it counted before is one movement, classified by its customer:
//!
//! - the customer had no MRR and now has some: **new** the first time, **reactivation**
//!   after that;
//! - the customer had MRR and now has none: **churn** (a cancellation at period end is
//!   logged when the period ends, so it churns then);
//! - otherwise **expansion** or **contraction** by the sign of the difference.
//!
//! A customer with subscriptions in two currencies moves in each separately, but is new,
//! churned or reactivated as one customer. Each movement lands on the UTC day the event
//! occurred and in the subscription's currency, so `end = start + new + expansion +
//! reactivation − contraction − churn` holds for any run of days by construction.
//!
//! Revenue is every successful payment's amount (one-time and subscription alike), less
//! refunds when they are created and disputes as their funds are withdrawn (and back when
//! reinstated: a won dispute nets to nothing, a lost one to its amount).

use std::collections::{BTreeSet, HashMap};

use hephaestus_core::event::{Event, kind};
use hephaestus_core::money::Currency;
use hephaestus_store::analytics::{
    Changes, CustomerState, DisputeState, Loaded, SubscriptionState,
};

use crate::calendar::{day_of, month_of};

/// An event the engine cannot read. The consumer stops at it rather than skip it: a
/// figure that silently leaves an event out is worse than a figure that is late.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} ({kind}) cannot be counted: {reason}")]
pub struct Malformed {
    pub seq: i64,
    pub kind: String,
    pub reason: String,
}

/// The state rows (by id) a batch of events touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub subscriptions: Vec<String>,
    pub customers: Vec<String>,
    pub disputes: Vec<String>,
}

fn is_subscription(kind: &str) -> bool {
    matches!(
        kind,
        kind::SUBSCRIPTION_CREATED
            | kind::SUBSCRIPTION_UPDATED
            | kind::SUBSCRIPTION_TRIAL_WILL_END
            | kind::SUBSCRIPTION_CANCELED
    )
}

fn is_dispute(kind: &str) -> bool {
    matches!(
        kind,
        kind::DISPUTE_CREATED
            | kind::DISPUTE_UPDATED
            | kind::DISPUTE_FUNDS_WITHDRAWN
            | kind::DISPUTE_FUNDS_REINSTATED
            | kind::DISPUTE_CLOSED
    )
}

/// Which state rows `events` need loaded.
pub fn needs(events: &[Event]) -> Needs {
    let mut subs = BTreeSet::new();
    let mut customers = BTreeSet::new();
    let mut disputes = BTreeSet::new();
    for e in events {
        let text = |field: &str| e.data[field].as_str().map(str::to_string);
        match e.kind.as_str() {
            k if is_subscription(k) => {
                subs.extend(text("subscription_id"));
                customers.extend(text("customer_id"));
            }
            kind::PAYMENT_SUCCEEDED => customers.extend(text("customer_id")),
            kind::CUSTOMER_CREATED => {
                customers.extend(text("customer_id").or_else(|| e.customer_id.clone()))
            }
            k if is_dispute(k) => disputes.extend(text("dispute_id")),
            _ => {}
        }
    }
    Needs {
        subscriptions: subs.into_iter().collect(),
        customers: customers.into_iter().collect(),
        disputes: disputes.into_iter().collect(),
    }
}

fn is_live(status: &str) -> bool {
    matches!(status, "trialing" | "active" | "past_due")
}

/// Applies events to the state they need and gathers what they add.
#[derive(Debug, Default)]
pub struct Engine {
    subscriptions: HashMap<String, SubscriptionState>,
    customers: HashMap<String, CustomerState>,
    disputes: HashMap<String, DisputeState>,
    touched_subscriptions: BTreeSet<String>,
    touched_customers: BTreeSet<String>,
    touched_disputes: BTreeSet<String>,
    changes: Changes,
}

/// Reads one event's payload, naming the event in errors.
struct Payload<'a> {
    event: &'a Event,
}

impl Payload<'_> {
    fn fail(&self, reason: String) -> Malformed {
        Malformed {
            seq: self.event.seq,
            kind: self.event.kind.clone(),
            reason,
        }
    }

    fn text(&self, field: &str) -> Result<String, Malformed> {
        self.event.data[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.fail(format!("`{field}` is missing or not text")))
    }

    fn int(&self, field: &str) -> Result<i64, Malformed> {
        self.event.data[field]
            .as_i64()
            .ok_or_else(|| self.fail(format!("`{field}` is missing or not an integer")))
    }

    fn currency(&self) -> Result<String, Malformed> {
        let code = self.text("currency")?;
        Currency::parse(&code, "currency")
            .map(|c| c.code().to_string())
            .map_err(|e| self.fail(e.message))
    }
}

impl Engine {
    pub fn new(loaded: Loaded) -> Self {
        Engine {
            subscriptions: loaded
                .subscriptions
                .into_iter()
                .map(|s| (s.subscription_id.clone(), s))
                .collect(),
            customers: loaded
                .customers
                .into_iter()
                .map(|c| (c.customer_id.clone(), c))
                .collect(),
            disputes: loaded
                .disputes
                .into_iter()
                .map(|d| (d.dispute_id.clone(), d))
                .collect(),
            ..Engine::default()
        }
    }

    /// Counts one event. Events that say nothing about revenue or customers are passed by.
    pub fn apply(&mut self, e: &Event) -> Result<(), Malformed> {
        let p = Payload { event: e };
        let day = day_of(e.occurred_at);
        match e.kind.as_str() {
            k if is_subscription(k) => self.subscription(&p, day),
            kind::PAYMENT_SUCCEEDED => {
                let currency = p.currency()?;
                let amount = p.int("amount_minor")?;
                let customer = p.text("customer_id")?;
                let money = self.changes.daily.entry((day, currency)).or_default();
                money.payments += 1;
                money.revenue += amount;
                let c = self.customer(&customer);
                if c.first_payment_day.is_none() {
                    c.first_payment_day = Some(day);
                    self.changes
                        .daily_customers
                        .entry(day)
                        .or_default()
                        .first_payments += 1;
                }
                Ok(())
            }
            kind::REFUND_CREATED => {
                let currency = p.currency()?;
                let amount = p.int("amount_minor")?;
                self.changes
                    .daily
                    .entry((day, currency))
                    .or_default()
                    .refunds += amount;
                Ok(())
            }
            kind::CUSTOMER_CREATED => {
                let Some(id) = p.text("customer_id").ok().or_else(|| e.customer_id.clone()) else {
                    return Err(p.fail("no customer id".into()));
                };
                let c = self.customer(&id);
                if c.signup_day.is_none() {
                    c.signup_day = Some(day);
                    self.changes.daily_customers.entry(day).or_default().signups += 1;
                }
                Ok(())
            }
            k if is_dispute(k) => {
                let id = p.text("dispute_id")?;
                let currency = p.currency()?;
                let withdrawn = p.int("funds_withdrawn_minor")?;
                let reinstated = p.int("funds_reinstated_minor")?;
                let d = self
                    .disputes
                    .entry(id.clone())
                    .or_insert_with(|| DisputeState {
                        dispute_id: id.clone(),
                        currency: currency.clone(),
                        withdrawn_minor: 0,
                        reinstated_minor: 0,
                    });
                // Events carry running totals: what changed since the last one is counted.
                let taken = (withdrawn - d.withdrawn_minor) - (reinstated - d.reinstated_minor);
                d.withdrawn_minor = withdrawn;
                d.reinstated_minor = reinstated;
                let currency = d.currency.clone();
                self.touched_disputes.insert(id);
                self.changes
                    .daily
                    .entry((day, currency))
                    .or_default()
                    .disputes += taken;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn customer(&mut self, id: &str) -> &mut CustomerState {
        self.touched_customers.insert(id.to_string());
        self.customers
            .entry(id.to_string())
            .or_insert_with(|| CustomerState {
                customer_id: id.to_string(),
                ..CustomerState::default()
            })
    }

    fn subscription(&mut self, p: &Payload<'_>, day: i64) -> Result<(), Malformed> {
        let id = p.text("subscription_id")?;
        let customer_id = p.text("customer_id")?;
        let status = p.text("status")?;
        let amount = p.int("mrr_minor")?.max(0);
        let currency = p.currency()?;
        let old = self.subscriptions.get(&id).cloned();
        let is_new = old.is_none();
        let mut s = old.unwrap_or_else(|| SubscriptionState {
            subscription_id: id.clone(),
            customer_id: customer_id.clone(),
            currency,
            status: String::new(),
            mrr_minor: 0,
            has_paid: false,
            in_trial: false,
        });
        let was_live = is_live(&s.status);
        let now_live = is_live(&status);
        if status == "active" {
            s.has_paid = true;
        }
        let counted = match status.as_str() {
            "active" => amount,
            "past_due" if s.has_paid => amount,
            _ => 0,
        };

        let days = &mut self.changes.daily_customers;
        if is_new && status == "trialing" {
            s.in_trial = true;
            days.entry(day).or_default().trials_started += 1;
        }
        if s.in_trial && status == "active" {
            s.in_trial = false;
            days.entry(day).or_default().trials_converted += 1;
        } else if s.in_trial && !is_live(&status) {
            s.in_trial = false;
            days.entry(day).or_default().trials_lapsed += 1;
        }

        let (old_amount, currency) = (s.mrr_minor, s.currency.clone());
        s.status = status;
        s.mrr_minor = counted;
        let customer_id = s.customer_id.clone();
        self.touched_subscriptions.insert(id.clone());
        self.subscriptions.insert(id, s);

        let c = self.customer(&customer_id);
        if is_new {
            c.activated = true;
        }
        if was_live != now_live {
            let before = c.live_subscriptions > 0;
            c.live_subscriptions += if now_live { 1 } else { -1 };
            let after = c.live_subscriptions > 0;
            let counts = self.changes.daily_customers.entry(day).or_default();
            match (before, after) {
                (false, true) => counts.active_gained += 1,
                (true, false) => counts.active_lost += 1,
                _ => {}
            }
        }
        if counted != old_amount {
            self.movement(&customer_id, &currency, day, old_amount, counted);
        }
        Ok(())
    }

    /// One subscription's MRR going from `old` to `new`, classified by its customer.
    fn movement(&mut self, customer_id: &str, currency: &str, day: i64, old: i64, new: i64) {
        let month = month_of(day);
        let c = self.customer(customer_id);
        let before = c.paying_subscriptions > 0;
        c.paying_subscriptions += i64::from(new > 0) - i64::from(old > 0);
        let after = c.paying_subscriptions > 0;
        let first_time = c.first_paying_month.is_none();
        let cohort = *c.first_paying_month.get_or_insert(month);
        let money = &mut self
            .changes
            .daily
            .entry((day, currency.to_string()))
            .or_default()
            .mrr;
        let counts = self.changes.daily_customers.entry(day).or_default();
        let delta = new - old;
        match (before, after) {
            (false, true) if first_time => {
                money.new += delta;
                counts.new_customers += 1;
            }
            (false, true) => {
                money.reactivation += delta;
                counts.reactivated += 1;
            }
            (true, false) => {
                money.churn -= delta;
                counts.churned += 1;
            }
            _ if delta > 0 => money.expansion += delta,
            _ => money.contraction -= delta,
        }
        let paying = i64::from(after) - i64::from(before);
        if paying != 0 {
            *self
                .changes
                .cohort_customers
                .entry((cohort, month))
                .or_default() += paying;
        }
        *self
            .changes
            .cohort_mrr
            .entry((cohort, month, currency.to_string()))
            .or_default() += delta;
    }

    /// The state rows to store and the sums to add.
    pub fn finish(mut self) -> Changes {
        self.changes.subscriptions = pick(&self.touched_subscriptions, &mut self.subscriptions);
        self.changes.customers = pick(&self.touched_customers, &mut self.customers);
        self.changes.disputes = pick(&self.touched_disputes, &mut self.disputes);
        self.changes
    }
}

/// The rows of `ids`, taken out of `rows`.
fn pick<T>(ids: &BTreeSet<String>, rows: &mut HashMap<String, T>) -> Vec<T> {
    ids.iter().filter_map(|id| rows.remove(id)).collect()
}
