-- Reconciliation of the invoices a gateway makes for the subscriptions it bills: when it
-- last asked the gateway about each open one, as for subscriptions (0013), so that an
-- invoice whose payment event never came is asked about once per deadline, taking turns
-- with the others.
ALTER TABLE invoices ADD COLUMN gateway_checked_at INTEGER;
