-- Quotes bind: a quote a pricing plugin (or the built-in default) decided is stored, and a
-- payment or subscription made from it charges exactly its amount. The quote keeps who
-- decided it (plugin name and content hash), so revenue can be attributed to a plugin.
CREATE TABLE quotes (
    id                 TEXT PRIMARY KEY,
    customer_id        TEXT NOT NULL REFERENCES customers (id),
    product_id         TEXT NOT NULL,
    price_id           TEXT NOT NULL,
    quantity           INTEGER NOT NULL CHECK (quantity > 0),
    currency           TEXT NOT NULL,
    list_amount_minor  INTEGER NOT NULL CHECK (list_amount_minor >= 0),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor >= 0),
    discount_minor     INTEGER NOT NULL CHECK (discount_minor >= 0),
    reason             TEXT NOT NULL,
    segments           TEXT NOT NULL DEFAULT '[]',
    -- 'plugin' or 'default'; plugin and plugin_version name the plugin (the fallback
    -- names the plugin that faulted, if one did, and why in default_reason).
    decided_by         TEXT NOT NULL,
    plugin             TEXT,
    plugin_version     TEXT,
    default_reason     TEXT,
    -- What deciding it cost: fuel burnt by the plugin and the decision's wall time.
    fuel_used          INTEGER NOT NULL DEFAULT 0,
    decide_us          INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    -- The request using the quote holds it from before its gateway call (its gateway
    -- idempotency key, until claimed_until in real time), so two requests cannot both
    -- charge one quote; used_by is the payment or subscription that used it.
    claim_key          TEXT,
    claimed_until      INTEGER,
    used_by            TEXT,
    used_at            INTEGER,
    CHECK (amount_minor + discount_minor = list_amount_minor)
);
CREATE INDEX quotes_customer ON quotes (customer_id, id);

ALTER TABLE payments ADD COLUMN quote_id TEXT;
ALTER TABLE subscriptions ADD COLUMN quote_id TEXT;
-- Taken off every period's invoice while the subscription keeps the quoted price and
-- quantity: the quoted recurring amount is list total minus this.
ALTER TABLE subscriptions ADD COLUMN discount_minor INTEGER NOT NULL DEFAULT 0;

-- A customer's default payment method: a payment that names none uses it.
ALTER TABLE customers ADD COLUMN default_payment_method TEXT;

-- Confirmations of a payment that waited for a method, counted: each attempt's gateway
-- idempotency key names its number, so two concurrent confirmations share one key (and the
-- gateway charges once) while a retry after a decline gets a new one.
ALTER TABLE payments ADD COLUMN confirm_attempts INTEGER NOT NULL DEFAULT 0;

-- A customer's running figures, kept by triggers on `payments` in the same transaction as
-- every change to a payment (whichever code path makes it), so a decision reads a few rows
-- instead of summing the customer's whole payment history.
--
-- Captured payments (succeeded, partially_refunded, refunded, disputed): how many, and the
-- newest one's time.
CREATE TABLE customer_activity (
    customer_id      TEXT PRIMARY KEY,
    captured         INTEGER NOT NULL DEFAULT 0,
    last_captured_at INTEGER
);
-- Net captured money per currency: payments that succeeded (even if refunded since) less
-- their refunds; a disputed payment counts nothing.
CREATE TABLE customer_net (
    customer_id TEXT NOT NULL,
    currency    TEXT NOT NULL,
    net_minor   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, currency)
);
-- Captured and failed payments per UTC day of their creation, for the 30-day counts.
CREATE TABLE customer_daily (
    customer_id TEXT NOT NULL,
    day         INTEGER NOT NULL,
    captured    INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, day)
);

-- What is already there.
INSERT INTO customer_activity (customer_id, captured, last_captured_at)
SELECT customer_id, SUM(CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN 1 ELSE 0 END),
       MAX(CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN created_at END)
  FROM payments GROUP BY customer_id;
INSERT INTO customer_net (customer_id, currency, net_minor)
SELECT customer_id, currency, SUM(amount_minor - amount_refunded_minor)
  FROM payments WHERE status IN ('succeeded', 'partially_refunded', 'refunded') GROUP BY customer_id, currency;
INSERT INTO customer_daily (customer_id, day, captured, failed)
SELECT customer_id, created_at / 86400000000,
       SUM(CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END)
  FROM payments WHERE status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed', 'failed')
 GROUP BY customer_id, created_at / 86400000000;

-- SQLite has one writer, so row triggers cost no contention here.
CREATE TRIGGER payments_figures_insert AFTER INSERT ON payments BEGIN
    INSERT INTO customer_activity (customer_id, captured, last_captured_at)
    SELECT NEW.customer_id, 1, NEW.created_at WHERE NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')
        ON CONFLICT (customer_id) DO UPDATE
       SET captured = captured + 1,
           last_captured_at = COALESCE(MAX(last_captured_at, excluded.last_captured_at),
                                       last_captured_at, excluded.last_captured_at);
    INSERT INTO customer_net (customer_id, currency, net_minor)
    SELECT NEW.customer_id, NEW.currency, NEW.amount_minor - NEW.amount_refunded_minor
     WHERE NEW.status IN ('succeeded', 'partially_refunded', 'refunded')
        ON CONFLICT (customer_id, currency) DO UPDATE SET net_minor = net_minor + excluded.net_minor;
    INSERT INTO customer_daily (customer_id, day, captured, failed)
    SELECT NEW.customer_id, NEW.created_at / 86400000000, NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed'), NEW.status = 'failed'
     WHERE NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed', 'failed')
        ON CONFLICT (customer_id, day) DO UPDATE
       SET captured = captured + excluded.captured, failed = failed + excluded.failed;
END;

CREATE TRIGGER payments_figures_update AFTER UPDATE OF status, amount_refunded_minor ON payments BEGIN
    INSERT INTO customer_activity (customer_id, captured, last_captured_at)
    SELECT NEW.customer_id, (NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')) - (OLD.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')),
           CASE WHEN NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN NEW.created_at END
     WHERE (NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')) <> (OLD.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed'))
        ON CONFLICT (customer_id) DO UPDATE
       SET captured = captured + excluded.captured,
           last_captured_at = COALESCE(MAX(last_captured_at, excluded.last_captured_at),
                                       last_captured_at, excluded.last_captured_at);
    INSERT INTO customer_net (customer_id, currency, net_minor)
    SELECT NEW.customer_id, NEW.currency,
           (CASE WHEN NEW.status IN ('succeeded', 'partially_refunded', 'refunded') THEN NEW.amount_minor - NEW.amount_refunded_minor ELSE 0 END)
         - (CASE WHEN OLD.status IN ('succeeded', 'partially_refunded', 'refunded') THEN OLD.amount_minor - OLD.amount_refunded_minor ELSE 0 END)
     WHERE (OLD.status IN ('succeeded', 'partially_refunded', 'refunded')) OR (NEW.status IN ('succeeded', 'partially_refunded', 'refunded'))
        ON CONFLICT (customer_id, currency) DO UPDATE SET net_minor = net_minor + excluded.net_minor;
    INSERT INTO customer_daily (customer_id, day, captured, failed)
    SELECT NEW.customer_id, NEW.created_at / 86400000000,
           (NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')) - (OLD.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')),
           (NEW.status = 'failed') - (OLD.status = 'failed')
     WHERE (NEW.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed')) <> (OLD.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed'))
        OR (NEW.status = 'failed') <> (OLD.status = 'failed')
        ON CONFLICT (customer_id, day) DO UPDATE
       SET captured = captured + excluded.captured, failed = failed + excluded.failed;
END;

-- Why a segment could not be judged (a lifetime value that left out a currency with no
-- exchange rate to the reporting currency, say), shown with the customer's segments.
ALTER TABLE customer_segment_state ADD COLUMN note TEXT;
