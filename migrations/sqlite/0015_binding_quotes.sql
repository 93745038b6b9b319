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
