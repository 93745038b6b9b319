-- The catalog: products and their prices. A price's amount, currency and schedule never
-- change; a new price replaces an old one (`replaces` / `replaced_by`), so everything sold at
-- the old price keeps pointing at what was sold.

CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    active      BOOLEAN NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE prices (
    id                TEXT PRIMARY KEY,
    product_id        TEXT NOT NULL REFERENCES products (id),
    currency          TEXT NOT NULL,
    unit_amount_minor INTEGER NOT NULL CHECK (unit_amount_minor >= 0),
    type              TEXT NOT NULL CHECK (type IN ('one_time', 'recurring')),
    interval          TEXT CHECK (interval IN ('day', 'week', 'month', 'year')),
    interval_count    INTEGER,
    trial_days        INTEGER,
    active            BOOLEAN NOT NULL,
    replaces          TEXT REFERENCES prices (id),
    replaced_by       TEXT REFERENCES prices (id),
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CHECK ((type = 'recurring') = (interval IS NOT NULL AND interval_count IS NOT NULL))
);
CREATE INDEX prices_product ON prices (product_id, id);
