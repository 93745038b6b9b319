-- Customer segments, as the segmentation slot (a plugin, or the built-in rules) last decided
-- them, and the positions of the event log's consumers.
--
-- Segments are derived data: a consumer of the event log recomputes a customer's segments
-- when an event about the customer arrives, and a sweep recomputes those whose segments
-- have grown stale (rules like "new" and "at risk" depend on time) or were decided by a
-- plugin version that no longer serves.

-- One row per customer whose segments were computed, holding who decided them and when.
CREATE TABLE customer_segment_state (
    customer_id  TEXT PRIMARY KEY REFERENCES customers (id),
    -- The plugin that served the segmentation slot (its content hash), or 'default': a new
    -- plugin version makes every row stale.
    decided_by   TEXT NOT NULL,
    -- Business-clock time of the computation.
    computed_at  BIGINT NOT NULL
);
CREATE INDEX customer_segment_state_age ON customer_segment_state (computed_at);

-- The tags themselves, one row each, so a list can filter by segment.
CREATE TABLE customer_segments (
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    segment      TEXT NOT NULL,
    PRIMARY KEY (customer_id, segment)
);
CREATE INDEX customer_segments_by_segment ON customer_segments (segment, customer_id);

-- Where each consumer of the event log has read up to (events.seq), and which host holds it:
-- one host at a time advances a consumer, and a crashed host's lease runs out.
CREATE TABLE event_consumers (
    name          TEXT PRIMARY KEY,
    position      BIGINT NOT NULL DEFAULT 0,
    holder        TEXT,
    locked_until  BIGINT,
    updated_at    BIGINT NOT NULL
);
