-- Foundation: API keys, rate-limit windows, idempotency records, audit log, event log, customers.
-- Timestamps are integer microseconds since the Unix epoch, UTC, on both databases.
-- Applied migrations are never edited; changes go in a new numbered file.

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    scope          TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    key_hash       TEXT NOT NULL UNIQUE,
    display_prefix TEXT NOT NULL,
    rate_limit     BIGINT,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    last_used_at   BIGINT
);

CREATE TABLE rate_limit_windows (
    api_key_id   TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, window_start)
);

CREATE TABLE idempotency_keys (
    api_key_id      TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    response_status BIGINT,
    response_body   TEXT,
    resource_id     TEXT,
    created_at      BIGINT NOT NULL,
    locked_until    BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_resource ON idempotency_keys (resource_id);

CREATE TABLE audit_log (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    api_key_id TEXT,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    status     BIGINT NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    customer_id TEXT,
    subject_id  TEXT NOT NULL,
    data        TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX events_customer ON events (customer_id, seq);

CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    email      TEXT,
    email_key  TEXT UNIQUE,
    name       TEXT,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    erased_at  BIGINT
);
