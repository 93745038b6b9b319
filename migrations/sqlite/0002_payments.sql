-- Payments and refunds as the host records them, and the sandbox gateway's own ledger.
-- The sandbox tables stand for a remote processor's books: only the sandbox gateway
-- touches them, and the host learns their state through the Gateway trait, as with Stripe.

CREATE TABLE payments (
    id                    TEXT PRIMARY KEY,
    customer_id           TEXT NOT NULL REFERENCES customers (id),
    amount_minor          INTEGER NOT NULL CHECK (amount_minor > 0),
    currency              TEXT NOT NULL,
    amount_refunded_minor INTEGER NOT NULL DEFAULT 0 CHECK (amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_minor),
    status                TEXT NOT NULL,
    payment_method        TEXT NOT NULL,
    description           TEXT,
    gateway               TEXT NOT NULL,
    gateway_id            TEXT,
    decline_code          TEXT,
    failure_message       TEXT,
    metadata              TEXT NOT NULL DEFAULT '{}',
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX payments_customer ON payments (customer_id, id);
CREATE INDEX payments_status ON payments (status, id);
CREATE INDEX payments_created ON payments (created_at);
CREATE UNIQUE INDEX payments_gateway_object ON payments (gateway, gateway_id);

CREATE TABLE refunds (
    id           TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL REFERENCES payments (id),
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    gateway_id   TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);

CREATE TABLE sandbox_charges (
    id                    TEXT PRIMARY KEY,
    idempotency_key       TEXT NOT NULL UNIQUE,
    amount_minor          INTEGER NOT NULL,
    currency              TEXT NOT NULL,
    payment_method        TEXT NOT NULL,
    status                TEXT NOT NULL,
    decline_code          TEXT,
    amount_refunded_minor INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE sandbox_refunds (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    charge_id       TEXT NOT NULL REFERENCES sandbox_charges (id),
    amount_minor    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
