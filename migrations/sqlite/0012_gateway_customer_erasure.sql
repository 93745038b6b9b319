-- Erasing a customer erases the gateway's copy too: a Stripe customer holds the email and
-- name it was created with. The erasure marks the mirror in its own transaction; a
-- background pass on any host then claims the due rows (one host per row, for the lease),
-- deletes the gateway's customer outside any transaction, and records it erased, or when
-- the next attempt is due if the gateway could not be reached.

-- When our customer was erased, and so the gateway's copy became due for erasure.
ALTER TABLE gateway_customers ADD COLUMN erase_requested_at INTEGER;
-- When the gateway confirmed the copy gone (or already gone).
ALTER TABLE gateway_customers ADD COLUMN erased_at INTEGER;
-- Attempts so far: the delay before the next one grows with them.
ALTER TABLE gateway_customers ADD COLUMN erase_attempts INTEGER NOT NULL DEFAULT 0;
-- When the next attempt is due.
ALTER TABLE gateway_customers ADD COLUMN erase_next_attempt_at INTEGER;
-- The lease of the host working the row: no other host claims it before then.
ALTER TABLE gateway_customers ADD COLUMN erase_locked_until INTEGER;
-- Why the last attempt failed, for operators.
ALTER TABLE gateway_customers ADD COLUMN erase_last_error TEXT;
CREATE INDEX gateway_customers_erase_due ON gateway_customers (erase_next_attempt_at)
    WHERE erase_requested_at IS NOT NULL AND erased_at IS NULL;
