-- Inbox for gateway webhooks: every verified event is stored once under its own id, answered
-- at once, and processed afterwards by a worker that claims due events (retrying with
-- backoff). `gateway_event_at` on payments records the newest gateway event applied, so an
-- older event arriving late never moves a payment back.

CREATE TABLE webhook_events (
    source          TEXT NOT NULL,
    id              TEXT NOT NULL,
    type            TEXT NOT NULL,
    object_id       TEXT,
    created         BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    last_error      TEXT,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT,
    PRIMARY KEY (source, id)
);
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);

ALTER TABLE payments ADD COLUMN gateway_event_at BIGINT;
