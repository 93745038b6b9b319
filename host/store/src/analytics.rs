//! The analytics aggregates (migration 0018): the state the `analytics` consumer keeps per
//! subscription, customer and dispute, and the daily and cohort sums it adds to. The
//! consumer (host/analytics) decides what to add; this module only loads and writes rows.
//!
//! Writes happen inside the consumer's transaction, together with the move of its position
//! in the log ([`crate::consumers::advance_in`]), so a batch of events is counted once or
//! not at all.

use std::collections::BTreeMap;

use crate::{Result, Store, Tx, with_read, with_tx};

/// MRR movements, in minor units of one currency; all non-negative, the sign is the kind's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Movements {
    pub new: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub reactivation: i64,
}

impl Movements {
    /// What the movements do to MRR: new + expansion + reactivation − contraction − churn.
    pub fn net(&self) -> i64 {
        self.new + self.expansion + self.reactivation - self.contraction - self.churn
    }

    pub fn add(&mut self, o: &Movements) {
        self.new += o.new;
        self.expansion += o.expansion;
        self.contraction += o.contraction;
        self.churn += o.churn;
        self.reactivation += o.reactivation;
    }
}

/// One currency's money on one day (or summed over days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayMoney {
    pub mrr: Movements,
    /// Payments that succeeded.
    pub payments: i64,
    /// What they captured.
    pub revenue: i64,
    pub refunds: i64,
    /// Funds withdrawn by disputes less funds reinstated.
    pub disputes: i64,
}

impl DayMoney {
    pub fn add(&mut self, o: &DayMoney) {
        self.mrr.add(&o.mrr);
        self.payments += o.payments;
        self.revenue += o.revenue;
        self.refunds += o.refunds;
        self.disputes += o.disputes;
    }

    /// Revenue less refunds and disputes.
    pub fn net_revenue(&self) -> i64 {
        self.revenue - self.refunds - self.disputes
    }

    fn is_zero(&self) -> bool {
        *self == DayMoney::default()
    }
}

/// Customer counts on one day (or summed over days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCustomers {
    pub signups: i64,
    /// Became paying (had MRR) for the first time.
    pub new_customers: i64,
    /// Became paying again after having churned.
    pub reactivated: i64,
    /// Stopped paying (no MRR left).
    pub churned: i64,
    /// Got their first live subscription (trials count), or one again.
    pub active_gained: i64,
    /// Have no live subscription any more.
    pub active_lost: i64,
    /// Made their first successful payment.
    pub first_payments: i64,
    pub trials_started: i64,
    pub trials_converted: i64,
    /// Trials that ended without a paid period.
    pub trials_lapsed: i64,
}

impl DayCustomers {
    pub fn add(&mut self, o: &DayCustomers) {
        self.signups += o.signups;
        self.new_customers += o.new_customers;
        self.reactivated += o.reactivated;
        self.churned += o.churned;
        self.active_gained += o.active_gained;
        self.active_lost += o.active_lost;
        self.first_payments += o.first_payments;
        self.trials_started += o.trials_started;
        self.trials_converted += o.trials_converted;
        self.trials_lapsed += o.trials_lapsed;
    }

    /// Paying customers gained less lost.
    pub fn paying_net(&self) -> i64 {
        self.new_customers + self.reactivated - self.churned
    }

    fn is_zero(&self) -> bool {
        *self == DayCustomers::default()
    }
}

/// A subscription as the consumer last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub subscription_id: String,
    pub customer_id: String,
    pub currency: String,
    pub status: String,
    /// What it counts towards MRR now.
    pub mrr_minor: i64,
    pub has_paid: bool,
    pub in_trial: bool,
}

/// A customer as the consumer last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerState {
    pub customer_id: String,
    pub signup_day: Option<i64>,
    pub live_subscriptions: i64,
    pub paying_subscriptions: i64,
    pub first_paying_month: Option<i64>,
    pub first_payment_day: Option<i64>,
    pub activated: bool,
}

/// A dispute's running totals as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeState {
    pub dispute_id: String,
    pub currency: String,
    pub withdrawn_minor: i64,
    pub reinstated_minor: i64,
}

/// The state rows a batch of events needs.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub subscriptions: Vec<SubscriptionState>,
    pub customers: Vec<CustomerState>,
    pub disputes: Vec<DisputeState>,
}

/// What a batch of events changes: state rows to store as they are, sums to add to.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub subscriptions: Vec<SubscriptionState>,
    pub customers: Vec<CustomerState>,
    pub disputes: Vec<DisputeState>,
    /// By (day, currency).
    pub daily: BTreeMap<(i64, String), DayMoney>,
    pub daily_customers: BTreeMap<i64, DayCustomers>,
    /// By (cohort month, month).
    pub cohort_customers: BTreeMap<(i64, i64), i64>,
    /// By (cohort month, month, currency).
    pub cohort_mrr: BTreeMap<(i64, i64, String), i64>,
}

/// Rows per statement: well under both databases' limits on bound parameters.
const CHUNK: usize = 500;

/// Loads the state rows of the given subscriptions, customers and disputes (those that
/// have one), inside the consumer's transaction.
pub async fn load(
    tx: &mut Tx,
    subscription_ids: &[String],
    customer_ids: &[String],
    dispute_ids: &[String],
) -> Result<Loaded> {
    let mut out = Loaded::default();
    for ids in subscription_ids.chunks(CHUNK) {
        let rows: Vec<(String, String, String, String, i64, bool, bool)> = with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
            "SELECT subscription_id, customer_id, currency, status, mrr_minor, has_paid, in_trial
               FROM analytics_subscriptions WHERE subscription_id IN ",
        );
            push_list(&mut q, ids);
            q.build_query_as().fetch_all(c).await
        })?;
        out.subscriptions.extend(rows.into_iter().map(
            |(subscription_id, customer_id, currency, status, mrr_minor, has_paid, in_trial)| {
                SubscriptionState {
                    subscription_id,
                    customer_id,
                    currency,
                    status,
                    mrr_minor,
                    has_paid,
                    in_trial,
                }
            },
        ));
    }
    type Row = (
        String,
        Option<i64>,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        bool,
    );
    for ids in customer_ids.chunks(CHUNK) {
        let rows: Vec<Row> = with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT customer_id, signup_day, live_subscriptions, paying_subscriptions,
                    first_paying_month, first_payment_day, activated
               FROM analytics_customers WHERE customer_id IN ",
            );
            push_list(&mut q, ids);
            q.build_query_as().fetch_all(c).await
        })?;
        out.customers.extend(rows.into_iter().map(
            |(
                customer_id,
                signup_day,
                live_subscriptions,
                paying_subscriptions,
                first_paying_month,
                first_payment_day,
                activated,
            )| CustomerState {
                customer_id,
                signup_day,
                live_subscriptions,
                paying_subscriptions,
                first_paying_month,
                first_payment_day,
                activated,
            },
        ));
    }
    for ids in dispute_ids.chunks(CHUNK) {
        let rows: Vec<(String, String, i64, i64)> = with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT dispute_id, currency, withdrawn_minor, reinstated_minor
               FROM analytics_disputes WHERE dispute_id IN ",
            );
            push_list(&mut q, ids);
            q.build_query_as().fetch_all(c).await
        })?;
        out.disputes.extend(rows.into_iter().map(
            |(dispute_id, currency, withdrawn_minor, reinstated_minor)| DisputeState {
                dispute_id,
                currency,
                withdrawn_minor,
                reinstated_minor,
            },
        ));
    }
    Ok(out)
}

fn push_list<DB: sqlx::Database>(q: &mut sqlx::QueryBuilder<DB>, ids: &[String])
where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
    list.push_unseparated(")");
}

/// Writes a batch's changes: state rows replace what was there, sums are added.
pub async fn write(tx: &mut Tx, changes: &Changes) -> Result<()> {
    for rows in changes.subscriptions.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_subscriptions
               (subscription_id, customer_id, currency, status, mrr_minor, has_paid, in_trial) ",
            );
            q.push_values(rows, |mut b, s| {
                b.push_bind(s.subscription_id.clone())
                    .push_bind(s.customer_id.clone())
                    .push_bind(s.currency.clone())
                    .push_bind(s.status.clone())
                    .push_bind(s.mrr_minor)
                    .push_bind(s.has_paid)
                    .push_bind(s.in_trial);
            });
            q.push(
                " ON CONFLICT (subscription_id) DO UPDATE SET status = excluded.status,
                   mrr_minor = excluded.mrr_minor, has_paid = excluded.has_paid,
                   in_trial = excluded.in_trial",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    for rows in changes.customers.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_customers
               (customer_id, signup_day, live_subscriptions, paying_subscriptions,
                first_paying_month, first_payment_day, activated) ",
            );
            q.push_values(rows, |mut b, s| {
                b.push_bind(s.customer_id.clone())
                    .push_bind(s.signup_day)
                    .push_bind(s.live_subscriptions)
                    .push_bind(s.paying_subscriptions)
                    .push_bind(s.first_paying_month)
                    .push_bind(s.first_payment_day)
                    .push_bind(s.activated);
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET signup_day = excluded.signup_day,
                   live_subscriptions = excluded.live_subscriptions,
                   paying_subscriptions = excluded.paying_subscriptions,
                   first_paying_month = excluded.first_paying_month,
                   first_payment_day = excluded.first_payment_day,
                   activated = excluded.activated",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    for rows in changes.disputes.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_disputes
               (dispute_id, currency, withdrawn_minor, reinstated_minor) ",
            );
            q.push_values(rows, |mut b, s| {
                b.push_bind(s.dispute_id.clone())
                    .push_bind(s.currency.clone())
                    .push_bind(s.withdrawn_minor)
                    .push_bind(s.reinstated_minor);
            });
            q.push(
                " ON CONFLICT (dispute_id) DO UPDATE SET withdrawn_minor = excluded.withdrawn_minor,
                   reinstated_minor = excluded.reinstated_minor",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let daily: Vec<_> = changes.daily.iter().filter(|(_, m)| !m.is_zero()).collect();
    for rows in daily.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_daily
               (day, currency, new_mrr_minor, expansion_mrr_minor, contraction_mrr_minor,
                churned_mrr_minor, reactivation_mrr_minor, payments, revenue_minor,
                refunds_minor, disputes_minor) ",
            );
            q.push_values(rows, |mut b, ((day, currency), m)| {
                b.push_bind(*day)
                    .push_bind(currency.clone())
                    .push_bind(m.mrr.new)
                    .push_bind(m.mrr.expansion)
                    .push_bind(m.mrr.contraction)
                    .push_bind(m.mrr.churn)
                    .push_bind(m.mrr.reactivation)
                    .push_bind(m.payments)
                    .push_bind(m.revenue)
                    .push_bind(m.refunds)
                    .push_bind(m.disputes);
            });
            q.push(
                " ON CONFLICT (day, currency) DO UPDATE SET
                   new_mrr_minor = analytics_daily.new_mrr_minor + excluded.new_mrr_minor,
                   expansion_mrr_minor = analytics_daily.expansion_mrr_minor + excluded.expansion_mrr_minor,
                   contraction_mrr_minor = analytics_daily.contraction_mrr_minor + excluded.contraction_mrr_minor,
                   churned_mrr_minor = analytics_daily.churned_mrr_minor + excluded.churned_mrr_minor,
                   reactivation_mrr_minor = analytics_daily.reactivation_mrr_minor + excluded.reactivation_mrr_minor,
                   payments = analytics_daily.payments + excluded.payments,
                   revenue_minor = analytics_daily.revenue_minor + excluded.revenue_minor,
                   refunds_minor = analytics_daily.refunds_minor + excluded.refunds_minor,
                   disputes_minor = analytics_daily.disputes_minor + excluded.disputes_minor",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let customers: Vec<_> = changes
        .daily_customers
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .collect();
    for rows in customers.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_daily_customers
               (day, signups, new_customers, reactivated_customers, churned_customers,
                active_gained, active_lost, first_payments, trials_started, trials_converted,
                trials_lapsed) ",
            );
            q.push_values(rows, |mut b, (day, d)| {
                b.push_bind(**day)
                    .push_bind(d.signups)
                    .push_bind(d.new_customers)
                    .push_bind(d.reactivated)
                    .push_bind(d.churned)
                    .push_bind(d.active_gained)
                    .push_bind(d.active_lost)
                    .push_bind(d.first_payments)
                    .push_bind(d.trials_started)
                    .push_bind(d.trials_converted)
                    .push_bind(d.trials_lapsed);
            });
            q.push(
                " ON CONFLICT (day) DO UPDATE SET
                   signups = analytics_daily_customers.signups + excluded.signups,
                   new_customers = analytics_daily_customers.new_customers + excluded.new_customers,
                   reactivated_customers = analytics_daily_customers.reactivated_customers + excluded.reactivated_customers,
                   churned_customers = analytics_daily_customers.churned_customers + excluded.churned_customers,
                   active_gained = analytics_daily_customers.active_gained + excluded.active_gained,
                   active_lost = analytics_daily_customers.active_lost + excluded.active_lost,
                   first_payments = analytics_daily_customers.first_payments + excluded.first_payments,
                   trials_started = analytics_daily_customers.trials_started + excluded.trials_started,
                   trials_converted = analytics_daily_customers.trials_converted + excluded.trials_converted,
                   trials_lapsed = analytics_daily_customers.trials_lapsed + excluded.trials_lapsed",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let cohorts: Vec<_> = changes
        .cohort_customers
        .iter()
        .filter(|(_, n)| **n != 0)
        .collect();
    for rows in cohorts.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_cohort_customers (cohort_month, month, customers) ",
            );
            q.push_values(rows, |mut b, ((cohort, month), n)| {
                b.push_bind(*cohort).push_bind(*month).push_bind(**n);
            });
            q.push(
                " ON CONFLICT (cohort_month, month) DO UPDATE SET
                   customers = analytics_cohort_customers.customers + excluded.customers",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let cohort_mrr: Vec<_> = changes
        .cohort_mrr
        .iter()
        .filter(|(_, n)| **n != 0)
        .collect();
    for rows in cohort_mrr.chunks(CHUNK) {
        with_tx!(tx, |c| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO analytics_cohort_mrr (cohort_month, month, currency, mrr_minor) ",
            );
            q.push_values(rows, |mut b, ((cohort, month, currency), n)| {
                b.push_bind(*cohort)
                    .push_bind(*month)
                    .push_bind(currency.clone())
                    .push_bind(**n);
            });
            q.push(
                " ON CONFLICT (cohort_month, month, currency) DO UPDATE SET
                   mrr_minor = analytics_cohort_mrr.mrr_minor + excluded.mrr_minor",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// Empties every analytics table, for a rebuild from the log.
pub async fn clear(tx: &mut Tx) -> Result<()> {
    for table in [
        "analytics_daily",
        "analytics_daily_customers",
        "analytics_subscriptions",
        "analytics_customers",
        "analytics_disputes",
        "analytics_cohort_customers",
        "analytics_cohort_mrr",
    ] {
        let sql = format!("DELETE FROM {table}");
        with_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

const MONEY_SUMS: &str = "CAST(COALESCE(SUM(new_mrr_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(expansion_mrr_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(contraction_mrr_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(churned_mrr_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(reactivation_mrr_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(payments), 0) AS BIGINT),
        CAST(COALESCE(SUM(revenue_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(refunds_minor), 0) AS BIGINT),
        CAST(COALESCE(SUM(disputes_minor), 0) AS BIGINT)";

type MoneyRow = (i64, String, i64, i64, i64, i64, i64, i64, i64, i64, i64);

fn money_of(r: &MoneyRow) -> DayMoney {
    DayMoney {
        mrr: Movements {
            new: r.2,
            expansion: r.3,
            contraction: r.4,
            churn: r.5,
            reactivation: r.6,
        },
        payments: r.7,
        revenue: r.8,
        refunds: r.9,
        disputes: r.10,
    }
}

/// Money per currency summed over the days `from..=to` (`from` `None`: since the start).
pub async fn money_between(
    store: &Store,
    from: Option<i64>,
    to: i64,
) -> Result<BTreeMap<String, DayMoney>> {
    let sql = format!(
        "SELECT CAST(0 AS BIGINT), currency, {MONEY_SUMS} FROM analytics_daily
          WHERE day >= $1 AND day <= $2 GROUP BY currency"
    );
    let rows: Vec<MoneyRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from.unwrap_or(i64::MIN))
        .bind(to)
        .fetch_all(e)
        .await)?;
    Ok(rows.iter().map(|r| (r.1.clone(), money_of(r))).collect())
}

/// Money per day and currency for the days `from..=to`, in day order (days with nothing
/// are absent).
pub async fn money_by_day(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, DayMoney)>> {
    let rows: Vec<MoneyRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT day, currency, new_mrr_minor, expansion_mrr_minor, contraction_mrr_minor,
                churned_mrr_minor, reactivation_mrr_minor, payments, revenue_minor,
                refunds_minor, disputes_minor
           FROM analytics_daily WHERE day >= $1 AND day <= $2 ORDER BY day, currency"
    )
    .bind(from)
    .bind(to)
    .fetch_all(e)
    .await)?;
    Ok(rows
        .iter()
        .map(|r| (r.0, r.1.clone(), money_of(r)))
        .collect())
}

const CUSTOMER_SUMS: &str = "CAST(COALESCE(SUM(signups), 0) AS BIGINT),
        CAST(COALESCE(SUM(new_customers), 0) AS BIGINT),
        CAST(COALESCE(SUM(reactivated_customers), 0) AS BIGINT),
        CAST(COALESCE(SUM(churned_customers), 0) AS BIGINT),
        CAST(COALESCE(SUM(active_gained), 0) AS BIGINT),
        CAST(COALESCE(SUM(active_lost), 0) AS BIGINT),
        CAST(COALESCE(SUM(first_payments), 0) AS BIGINT),
        CAST(COALESCE(SUM(trials_started), 0) AS BIGINT),
        CAST(COALESCE(SUM(trials_converted), 0) AS BIGINT),
        CAST(COALESCE(SUM(trials_lapsed), 0) AS BIGINT)";

type CustomerRow = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

fn customers_of(r: &CustomerRow) -> DayCustomers {
    DayCustomers {
        signups: r.1,
        new_customers: r.2,
        reactivated: r.3,
        churned: r.4,
        active_gained: r.5,
        active_lost: r.6,
        first_payments: r.7,
        trials_started: r.8,
        trials_converted: r.9,
        trials_lapsed: r.10,
    }
}

/// Customer counts summed over the days `from..=to` (`from` `None`: since the start).
pub async fn customers_between(store: &Store, from: Option<i64>, to: i64) -> Result<DayCustomers> {
    let sql = format!(
        "SELECT CAST(0 AS BIGINT), {CUSTOMER_SUMS} FROM analytics_daily_customers WHERE day >= $1 AND day <= $2"
    );
    let row: CustomerRow = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from.unwrap_or(i64::MIN))
        .bind(to)
        .fetch_one(e)
        .await)?;
    Ok(customers_of(&row))
}

/// Customer counts per day for the days `from..=to`, in day order (days with nothing are
/// absent).
pub async fn customers_by_day(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, DayCustomers)>> {
    let rows: Vec<CustomerRow> = with_read!(store, |e| sqlx::query_as(
        "SELECT day, signups, new_customers, reactivated_customers, churned_customers,
                active_gained, active_lost, first_payments, trials_started, trials_converted,
                trials_lapsed
           FROM analytics_daily_customers WHERE day >= $1 AND day <= $2 ORDER BY day"
    )
    .bind(from)
    .bind(to)
    .fetch_all(e)
    .await)?;
    Ok(rows.iter().map(|r| (r.0, customers_of(r))).collect())
}

/// How the customers who signed up on the days `from..=to` have fared since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funnel {
    pub registered: i64,
    /// Started a subscription (trial or paid).
    pub activated: i64,
    /// Made a successful payment.
    pub paid: i64,
    /// Pay now (have MRR).
    pub retained: i64,
}

pub async fn signup_funnel(store: &Store, from: i64, to: i64) -> Result<Funnel> {
    let row: (i64, i64, i64, i64) = with_read!(store, |e| {
        sqlx::query_as(
        "SELECT COUNT(*),
                CAST(COALESCE(SUM(CASE WHEN activated THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN first_payment_day IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN paying_subscriptions > 0 THEN 1 ELSE 0 END), 0) AS BIGINT)
           FROM analytics_customers WHERE signup_day >= $1 AND signup_day <= $2"
    )
    .bind(from)
    .bind(to)
    .fetch_one(e)
    .await
    })?;
    Ok(Funnel {
        registered: row.0,
        activated: row.1,
        paid: row.2,
        retained: row.3,
    })
}

/// The changes of cohorts `from..=to` (months), per (cohort, month): paying customers, and
/// MRR per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CohortChanges {
    pub customers: BTreeMap<(i64, i64), i64>,
    pub mrr: BTreeMap<(i64, i64, String), i64>,
}

pub async fn cohorts(store: &Store, from: i64, to: i64) -> Result<CohortChanges> {
    let customers: Vec<(i64, i64, i64)> = with_read!(store, |e| sqlx::query_as(
        "SELECT cohort_month, month, customers FROM analytics_cohort_customers
          WHERE cohort_month >= $1 AND cohort_month <= $2"
    )
    .bind(from)
    .bind(to)
    .fetch_all(e)
    .await)?;
    let mrr: Vec<(i64, i64, String, i64)> = with_read!(store, |e| sqlx::query_as(
        "SELECT cohort_month, month, currency, mrr_minor FROM analytics_cohort_mrr
          WHERE cohort_month >= $1 AND cohort_month <= $2"
    )
    .bind(from)
    .bind(to)
    .fetch_all(e)
    .await)?;
    Ok(CohortChanges {
        customers: customers.into_iter().map(|(c, m, n)| ((c, m), n)).collect(),
        mrr: mrr
            .into_iter()
            .map(|(c, m, cur, n)| ((c, m, cur), n))
            .collect(),
    })
}

/// Customers per segment tag, as last computed.
pub async fn segment_counts(store: &Store) -> Result<Vec<(String, i64)>> {
    Ok(with_read!(store, |e| sqlx::query_as(
        "SELECT segment, COUNT(*) FROM customer_segments GROUP BY segment ORDER BY segment"
    )
    .fetch_all(e)
    .await)?)
}
