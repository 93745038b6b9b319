-- Each idempotency claim carries a token, so only the request holding the claim can finish
-- or release it (a retry that took over an expired claim owns it from then on). A gateway
-- refund is recorded at most once.

ALTER TABLE idempotency_keys ADD COLUMN claim_token TEXT;
CREATE UNIQUE INDEX refunds_gateway_id ON refunds (gateway_id);

-- Ids sort by creation time in byte order; lists and "newest rate" depend on it. A cluster
-- whose default collation is not bytewise (en_US.UTF-8, say) would order them otherwise.
ALTER TABLE customers ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE payments ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE payments ALTER COLUMN customer_id TYPE TEXT COLLATE "C";
ALTER TABLE refunds ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE refunds ALTER COLUMN payment_id TYPE TEXT COLLATE "C";
ALTER TABLE disputes ALTER COLUMN payment_id TYPE TEXT COLLATE "C";
ALTER TABLE products ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE prices ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE prices ALTER COLUMN product_id TYPE TEXT COLLATE "C";
ALTER TABLE prices ALTER COLUMN replaces TYPE TEXT COLLATE "C";
ALTER TABLE prices ALTER COLUMN replaced_by TYPE TEXT COLLATE "C";
ALTER TABLE exchange_rates ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE api_keys ALTER COLUMN id TYPE TEXT COLLATE "C";

-- The transaction that wrote each event. `seq` is assigned at insert, but transactions
-- commit in their own order, so a reader that has passed seq 11 could miss a seq 10 that
-- commits later; readers only take events whose transaction is older than every one still
-- running (see events::after).
ALTER TABLE events ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id();
