-- Subscriptions, the invoices each billing period produces, and the business clock.
--
-- On the sandbox gateway the host bills subscriptions itself, on the business clock: a
-- subscription's `next_action_at` is the next moment something is due (a trial notice, a
-- period end, a payment retry), and the billing job claims due rows. On Stripe these rows
-- mirror Stripe's objects (`gateway_id`) and change only through its answers and webhooks.

CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    customer_id          TEXT NOT NULL REFERENCES customers (id),
    price_id             TEXT NOT NULL REFERENCES prices (id),
    quantity             INTEGER NOT NULL CHECK (quantity > 0),
    currency             TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'unpaid')),
    payment_method       TEXT,
    gateway              TEXT NOT NULL,
    gateway_id           TEXT,
    billing_anchor       INTEGER NOT NULL,
    -- Periods started since the anchor (the trial is not one): the next period ends at the
    -- anchor plus (periods + 1) intervals, so month ends do not drift (Jan 31 → Feb 28 → Mar 31).
    periods              INTEGER NOT NULL DEFAULT 0,
    current_period_start INTEGER NOT NULL,
    current_period_end   INTEGER NOT NULL,
    trial_start          INTEGER,
    trial_end            INTEGER,
    trial_notice_sent    BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    canceled_at          INTEGER,
    ended_at             INTEGER,
    next_action_at       INTEGER,
    -- A billing job working on the subscription holds it until then (real time), so two
    -- hosts never bill one subscription at once and a crashed host's claim runs out.
    locked_until         INTEGER,
    metadata             TEXT NOT NULL DEFAULT '{}',
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    gateway_event_at     INTEGER
);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id, id);
CREATE INDEX subscriptions_due ON subscriptions (next_action_at) WHERE next_action_at IS NOT NULL;
CREATE UNIQUE INDEX subscriptions_gateway_object ON subscriptions (gateway, gateway_id);

CREATE TABLE invoices (
    id                TEXT PRIMARY KEY,
    customer_id       TEXT NOT NULL REFERENCES customers (id),
    subscription_id   TEXT REFERENCES subscriptions (id),
    currency          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('open', 'paid', 'uncollectible', 'void')),
    billing_reason    TEXT NOT NULL,
    subtotal_minor    INTEGER NOT NULL,
    -- What the customer owes: the subtotal, less any credit (never below zero).
    amount_due_minor  INTEGER NOT NULL CHECK (amount_due_minor >= 0),
    amount_paid_minor INTEGER NOT NULL DEFAULT 0,
    period_start      INTEGER NOT NULL,
    period_end        INTEGER NOT NULL,
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    payment_id        TEXT REFERENCES payments (id),
    gateway_id        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id, id);
CREATE INDEX invoices_subscription ON invoices (subscription_id, id);
CREATE UNIQUE INDEX invoices_gateway_object ON invoices (gateway_id);

-- Invoice lines. A proration made by a mid-period change waits with no invoice
-- (`invoice_id` NULL) and is put on the subscription's next invoice.
CREATE TABLE invoice_lines (
    id              TEXT PRIMARY KEY,
    invoice_id      TEXT REFERENCES invoices (id),
    subscription_id TEXT REFERENCES subscriptions (id),
    description     TEXT NOT NULL,
    price_id        TEXT REFERENCES prices (id),
    quantity        INTEGER NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    proration       BOOLEAN NOT NULL,
    period_start    INTEGER NOT NULL,
    period_end      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, id);
CREATE INDEX invoice_lines_pending ON invoice_lines (subscription_id) WHERE invoice_id IS NULL;

-- A payment made to settle an invoice points at it.
ALTER TABLE payments ADD COLUMN invoice_id TEXT;

-- The business clock: real time plus an offset that only the sandbox's test controls move,
-- shared by every host on the database.
CREATE TABLE business_clock (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    offset_micros INTEGER NOT NULL
);
INSERT INTO business_clock (id, offset_micros) VALUES (1, 0);
