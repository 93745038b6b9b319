-- Exchange rates for reporting in one currency. Rows are never updated: a new rate is a new
-- row, so every converted figure can name the exact rate it used.

CREATE TABLE exchange_rates (
    id         TEXT PRIMARY KEY,
    base       TEXT NOT NULL,
    quote      TEXT NOT NULL,
    rate       TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('api', 'config')),
    created_at INTEGER NOT NULL
);
CREATE INDEX exchange_rates_pair ON exchange_rates (base, quote, id);
