-- Every host process registers itself and beats while it lives: work it claimed (an
-- idempotency key, a gateway attempt) is known to be orphaned as soon as its beat stops,
-- rather than after a fixed lock time.
CREATE TABLE host_instances (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- A call to a payment gateway about to be made: written before the call, in the transaction
-- that claims the request's Idempotency-Key, and deleted in the transaction that records
-- the outcome. One left behind by a process that died is settled by recovery, which asks the
-- gateway about `gateway_key` and records what the request would have.
CREATE TABLE gateway_attempts (
    id TEXT PRIMARY KEY,
    -- payment | confirm | refund
    kind TEXT NOT NULL,
    gateway TEXT NOT NULL,
    gateway_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    -- The request's claimed Idempotency-Key, completed with the response recovery records.
    api_key_id TEXT,
    idem_key TEXT,
    claim_token TEXT,
    -- What the request knew before the call (JSON): enough to record the outcome.
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- A recovery's lease, so only one host settles an attempt at a time.
    recovering_until BIGINT
);
CREATE INDEX gateway_attempts_owner ON gateway_attempts (owner);
CREATE INDEX gateway_attempts_claim ON gateway_attempts (api_key_id, idem_key);

-- Which process holds a running claim.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT;
