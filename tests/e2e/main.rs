//! End-to-end tests: every test starts the real router on a real socket (or the real
//! binary) over a fresh database, and talks HTTP to it. Tests named in `both_dbs!` run once
//! on SQLite and once on PostgreSQL (`TEST_DATABASE_URL`, default the local `test` database),
//! each in a schema of its own.

mod common;

mod analytics;
mod auth;
mod bad_requests;
mod binary;
mod catalog;
mod connections;
mod crash;
mod customers;
mod db_outage;
mod engagement;
mod event_log;
mod figures;
mod fuzz;
mod idempotency;
mod limits;
mod openapi;
mod ops;
mod payments;
mod plugins;
mod quotes;
mod reporting;
mod scopes;
mod segments;
mod stripe;
mod stripe_subscriptions;
mod subscriptions;
mod two_hosts;
mod webhooks;
