-- Reconciliation of subscriptions a gateway bills: when it last asked the gateway about
-- each. A claim sets it, so no other host (and no later pass) asks again before the
-- reconciliation deadline has passed, and subscriptions that stay unsettled for long take
-- turns with the others instead of filling every pass.
ALTER TABLE subscriptions ADD COLUMN gateway_checked_at BIGINT;
