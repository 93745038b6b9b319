-- Disputes (chargebacks) as the gateway reports them, one row per gateway dispute id.

CREATE TABLE disputes (
    id                      TEXT PRIMARY KEY,
    gateway_id              TEXT NOT NULL UNIQUE,
    payment_id              TEXT NOT NULL REFERENCES payments (id),
    amount_minor            BIGINT NOT NULL,
    currency                TEXT NOT NULL,
    reason                  TEXT,
    status                  TEXT NOT NULL,
    funds_withdrawn_minor   BIGINT NOT NULL DEFAULT 0,
    funds_reinstated_minor  BIGINT NOT NULL DEFAULT 0,
    gateway_event_at        BIGINT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX disputes_payment ON disputes (payment_id);
