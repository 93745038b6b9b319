-- Disputes (chargebacks) as the gateway reports them, one row per gateway dispute id.

CREATE TABLE disputes (
    id                      TEXT PRIMARY KEY,
    gateway_id              TEXT NOT NULL UNIQUE,
    payment_id              TEXT NOT NULL REFERENCES payments (id),
    amount_minor            INTEGER NOT NULL,
    currency                TEXT NOT NULL,
    reason                  TEXT,
    status                  TEXT NOT NULL,
    funds_withdrawn_minor   INTEGER NOT NULL DEFAULT 0,
    funds_reinstated_minor  INTEGER NOT NULL DEFAULT 0,
    gateway_event_at        INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX disputes_payment ON disputes (payment_id);
