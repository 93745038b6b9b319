-- Revenue analytics: daily aggregates of MRR movements, revenue and customers, derived from
-- the domain event log by the `analytics` consumer (host/analytics). Nothing here is written
-- by anything else, and all of it is rebuilt from the log by `hephaestus analytics rebuild`.
--
-- Days are whole UTC days since the Unix epoch; months are year * 12 + (month - 1). Money is
-- in integer minor units of its own currency: conversion happens when figures are read.

-- Money per day and currency. A day's MRR change is new + expansion + reactivation
-- - contraction - churned, so MRR at the end of a day is the sum of every day up to it.
CREATE TABLE analytics_daily (
    day                     BIGINT NOT NULL,
    currency                TEXT NOT NULL,
    new_mrr_minor           BIGINT NOT NULL DEFAULT 0,
    expansion_mrr_minor     BIGINT NOT NULL DEFAULT 0,
    contraction_mrr_minor   BIGINT NOT NULL DEFAULT 0,
    churned_mrr_minor       BIGINT NOT NULL DEFAULT 0,
    reactivation_mrr_minor  BIGINT NOT NULL DEFAULT 0,
    -- Payments that succeeded, and what they captured (one-time and subscription alike).
    payments                BIGINT NOT NULL DEFAULT 0,
    revenue_minor           BIGINT NOT NULL DEFAULT 0,
    refunds_minor           BIGINT NOT NULL DEFAULT 0,
    -- Money disputes took (funds withdrawn less funds reinstated).
    disputes_minor          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);

-- Customer counts per day. Paying customers at the end of a day are the sum of new +
-- reactivated - churned up to it; active ones (a live subscription, trials included) of
-- active_gained - active_lost.
CREATE TABLE analytics_daily_customers (
    day                     BIGINT PRIMARY KEY,
    signups                 BIGINT NOT NULL DEFAULT 0,
    new_customers           BIGINT NOT NULL DEFAULT 0,
    reactivated_customers   BIGINT NOT NULL DEFAULT 0,
    churned_customers       BIGINT NOT NULL DEFAULT 0,
    active_gained           BIGINT NOT NULL DEFAULT 0,
    active_lost             BIGINT NOT NULL DEFAULT 0,
    first_payments          BIGINT NOT NULL DEFAULT 0,
    trials_started          BIGINT NOT NULL DEFAULT 0,
    trials_converted        BIGINT NOT NULL DEFAULT 0,
    trials_lapsed           BIGINT NOT NULL DEFAULT 0
);

-- Each subscription as the consumer last saw it: what it counts towards MRR, so the next
-- change is a movement of the difference.
CREATE TABLE analytics_subscriptions (
    subscription_id  TEXT PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL,
    mrr_minor        BIGINT NOT NULL,
    -- Has been active (paid) at least once: only then does past_due keep counting.
    has_paid         BOOLEAN NOT NULL,
    -- Started as a trial that has neither converted nor lapsed yet.
    in_trial         BOOLEAN NOT NULL
);

-- Each customer as the consumer last saw them: whether a movement is new business, a
-- reactivation or a churn depends on their other subscriptions and their history.
CREATE TABLE analytics_customers (
    customer_id            TEXT PRIMARY KEY,
    signup_day             BIGINT,
    live_subscriptions     BIGINT NOT NULL DEFAULT 0,
    paying_subscriptions   BIGINT NOT NULL DEFAULT 0,
    -- The month the customer first had MRR: their cohort.
    first_paying_month     BIGINT,
    first_payment_day      BIGINT,
    -- Started a subscription (trial or paid) at least once.
    activated              BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX analytics_customers_signup ON analytics_customers (signup_day);

-- Each dispute's money as last reported: dispute events carry running totals.
CREATE TABLE analytics_disputes (
    dispute_id        TEXT PRIMARY KEY,
    currency          TEXT NOT NULL,
    withdrawn_minor   BIGINT NOT NULL,
    reinstated_minor  BIGINT NOT NULL
);

-- Cohort retention: changes, per month, of a cohort's paying customers and of its MRR. A
-- cohort's figure in a month is the sum of its changes up to that month.
CREATE TABLE analytics_cohort_customers (
    cohort_month  BIGINT NOT NULL,
    month         BIGINT NOT NULL,
    customers     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (cohort_month, month)
);
CREATE TABLE analytics_cohort_mrr (
    cohort_month  BIGINT NOT NULL,
    month         BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    mrr_minor     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (cohort_month, month, currency)
);
