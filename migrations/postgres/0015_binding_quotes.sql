-- Quotes bind: a quote a pricing plugin (or the built-in default) decided is stored, and a
-- payment or subscription made from it charges exactly its amount. The quote keeps who
-- decided it (plugin name and content hash), so revenue can be attributed to a plugin.
CREATE TABLE quotes (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    customer_id        TEXT COLLATE "C" NOT NULL REFERENCES customers (id),
    product_id         TEXT NOT NULL,
    price_id           TEXT NOT NULL,
    quantity           BIGINT NOT NULL CHECK (quantity > 0),
    currency           TEXT NOT NULL,
    list_amount_minor  BIGINT NOT NULL CHECK (list_amount_minor >= 0),
    amount_minor       BIGINT NOT NULL CHECK (amount_minor >= 0),
    discount_minor     BIGINT NOT NULL CHECK (discount_minor >= 0),
    reason             TEXT NOT NULL,
    segments           TEXT NOT NULL DEFAULT '[]',
    -- 'plugin' or 'default'; plugin and plugin_version name the plugin (the fallback
    -- names the plugin that faulted, if one did, and why in default_reason).
    decided_by         TEXT NOT NULL,
    plugin             TEXT,
    plugin_version     TEXT,
    default_reason     TEXT,
    -- What deciding it cost: fuel burnt by the plugin and the decision's wall time.
    fuel_used          BIGINT NOT NULL DEFAULT 0,
    decide_us          BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    -- The request using the quote holds it from before its gateway call (its gateway
    -- idempotency key, until claimed_until in real time), so two requests cannot both
    -- charge one quote; used_by is the payment or subscription that used it.
    claim_key          TEXT,
    claimed_until      BIGINT,
    used_by            TEXT,
    used_at            BIGINT,
    CHECK (amount_minor + discount_minor = list_amount_minor)
);
CREATE INDEX quotes_customer ON quotes (customer_id, id);

ALTER TABLE payments ADD COLUMN quote_id TEXT;
ALTER TABLE subscriptions ADD COLUMN quote_id TEXT;
-- Taken off every period's invoice while the subscription keeps the quoted price and
-- quantity: the quoted recurring amount is list total minus this.
ALTER TABLE subscriptions ADD COLUMN discount_minor BIGINT NOT NULL DEFAULT 0;

-- A customer's default payment method: a payment that names none uses it.
ALTER TABLE customers ADD COLUMN default_payment_method TEXT;

-- Confirmations of a payment that waited for a method, counted: each attempt's gateway
-- idempotency key names its number, so two concurrent confirmations share one key (and the
-- gateway charges once) while a retry after a decline gets a new one.
ALTER TABLE payments ADD COLUMN confirm_attempts BIGINT NOT NULL DEFAULT 0;

-- A customer's running figures, kept by triggers on `payments` in the same transaction as
-- every change to a payment (whichever code path makes it), so a decision reads a few rows
-- instead of summing the customer's whole payment history.
--
-- Captured payments (succeeded, partially_refunded, refunded, disputed): how many, and the
-- newest one's time.
CREATE TABLE customer_activity (
    customer_id      TEXT COLLATE "C" PRIMARY KEY,
    captured         BIGINT NOT NULL DEFAULT 0,
    last_captured_at BIGINT
);
-- Net captured money per currency: payments that succeeded (even if refunded since) less
-- their refunds; a disputed payment counts nothing.
CREATE TABLE customer_net (
    customer_id TEXT COLLATE "C" NOT NULL,
    currency    TEXT NOT NULL,
    net_minor   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, currency)
);
-- Captured and failed payments per UTC day of their creation, for the 30-day counts.
CREATE TABLE customer_daily (
    customer_id TEXT COLLATE "C" NOT NULL,
    day         BIGINT NOT NULL,
    captured    BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
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

-- Statement triggers over transition tables: one upsert per customer per statement, in
-- customer order. A group-committed statement carrying many payments then writes each
-- customer's figures once, and two statements lock customers' rows in the same order, so
-- they cannot deadlock. The two functions differ only in how they find each row's change.
CREATE FUNCTION payments_figures_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH deltas AS (
        SELECT customer_id, currency, created_at / 86400000000 AS day,
               CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN 1 ELSE 0 END AS captured,
               CASE WHEN status = 'failed' THEN 1 ELSE 0 END AS failed,
               CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded') THEN amount_minor - amount_refunded_minor ELSE 0 END AS net,
               CASE WHEN status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN created_at END AS captured_at
          FROM new_rows),
     a AS (
        INSERT INTO customer_activity AS a (customer_id, captured, last_captured_at)
        SELECT customer_id, SUM(captured), MAX(captured_at) FROM deltas
         GROUP BY customer_id HAVING SUM(captured) <> 0 OR MAX(captured_at) IS NOT NULL
         ORDER BY customer_id
            ON CONFLICT (customer_id) DO UPDATE
           SET captured = a.captured + EXCLUDED.captured,
               last_captured_at = GREATEST(a.last_captured_at, EXCLUDED.last_captured_at)),
     n AS (
        INSERT INTO customer_net AS t (customer_id, currency, net_minor)
        SELECT customer_id, currency, SUM(net) FROM deltas
         GROUP BY customer_id, currency HAVING SUM(net) <> 0
         ORDER BY customer_id, currency
            ON CONFLICT (customer_id, currency) DO UPDATE SET net_minor = t.net_minor + EXCLUDED.net_minor)
    INSERT INTO customer_daily AS d (customer_id, day, captured, failed)
    SELECT customer_id, day, SUM(captured), SUM(failed) FROM deltas
     GROUP BY customer_id, day HAVING SUM(captured) <> 0 OR SUM(failed) <> 0
     ORDER BY customer_id, day
        ON CONFLICT (customer_id, day) DO UPDATE
       SET captured = d.captured + EXCLUDED.captured, failed = d.failed + EXCLUDED.failed;
    RETURN NULL;
END
$$;

CREATE FUNCTION payments_figures_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH deltas AS (
        SELECT n.customer_id, n.currency, n.created_at / 86400000000 AS day,
               (CASE WHEN n.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN 1 ELSE 0 END)
                 - (CASE WHEN o.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN 1 ELSE 0 END) AS captured,
               (CASE WHEN n.status = 'failed' THEN 1 ELSE 0 END)
                 - (CASE WHEN o.status = 'failed' THEN 1 ELSE 0 END) AS failed,
               (CASE WHEN n.status IN ('succeeded', 'partially_refunded', 'refunded') THEN n.amount_minor - n.amount_refunded_minor ELSE 0 END)
                 - (CASE WHEN o.status IN ('succeeded', 'partially_refunded', 'refunded') THEN o.amount_minor - o.amount_refunded_minor ELSE 0 END) AS net,
               CASE WHEN n.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') AND o.status NOT IN ('succeeded', 'partially_refunded', 'refunded', 'disputed') THEN n.created_at END AS captured_at
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.status <> o.status OR n.amount_refunded_minor <> o.amount_refunded_minor),
     a AS (
        INSERT INTO customer_activity AS a (customer_id, captured, last_captured_at)
        SELECT customer_id, SUM(captured), MAX(captured_at) FROM deltas
         GROUP BY customer_id HAVING SUM(captured) <> 0 OR MAX(captured_at) IS NOT NULL
         ORDER BY customer_id
            ON CONFLICT (customer_id) DO UPDATE
           SET captured = a.captured + EXCLUDED.captured,
               last_captured_at = GREATEST(a.last_captured_at, EXCLUDED.last_captured_at)),
     n AS (
        INSERT INTO customer_net AS t (customer_id, currency, net_minor)
        SELECT customer_id, currency, SUM(net) FROM deltas
         GROUP BY customer_id, currency HAVING SUM(net) <> 0
         ORDER BY customer_id, currency
            ON CONFLICT (customer_id, currency) DO UPDATE SET net_minor = t.net_minor + EXCLUDED.net_minor)
    INSERT INTO customer_daily AS d (customer_id, day, captured, failed)
    SELECT customer_id, day, SUM(captured), SUM(failed) FROM deltas
     GROUP BY customer_id, day HAVING SUM(captured) <> 0 OR SUM(failed) <> 0
     ORDER BY customer_id, day
        ON CONFLICT (customer_id, day) DO UPDATE
       SET captured = d.captured + EXCLUDED.captured, failed = d.failed + EXCLUDED.failed;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_figures_insert AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payments_figures_insert();
CREATE TRIGGER payments_figures_update AFTER UPDATE ON payments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payments_figures_update();

-- Why a segment could not be judged (a lifetime value that left out a currency with no
-- exchange rate to the reporting currency, say), shown with the customer's segments.
ALTER TABLE customer_segment_state ADD COLUMN note TEXT;
