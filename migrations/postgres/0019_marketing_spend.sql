-- Marketing spend, entered through POST /api/v1/marketing/spend: what a channel cost over a
-- period of whole UTC days (both ends included). CAC divides the spend that falls in a
-- range (pro rata by days) by the customers who first paid in it. Rows are never edited.
CREATE TABLE marketing_spend (
    id            TEXT PRIMARY KEY,
    channel       TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    currency      TEXT NOT NULL,
    -- Days since the Unix epoch.
    period_start  BIGINT NOT NULL,
    period_end    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CHECK (period_end >= period_start)
);
CREATE INDEX marketing_spend_period ON marketing_spend (period_end, period_start);
