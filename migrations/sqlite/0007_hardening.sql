-- Each idempotency claim carries a token, so only the request holding the claim can finish
-- or release it (a retry that took over an expired claim owns it from then on). A gateway
-- refund is recorded at most once.

ALTER TABLE idempotency_keys ADD COLUMN claim_token TEXT;
CREATE UNIQUE INDEX refunds_gateway_id ON refunds (gateway_id);
