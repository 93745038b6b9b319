-- Subscriptions billed by a gateway that runs subscriptions itself (Stripe).
--
-- The gateway's price for each of ours (a Stripe plan for our `price_…`), created the first
-- time a subscription to it starts there. One per gateway and price.
CREATE TABLE gateway_prices (
    gateway           TEXT NOT NULL,
    price_id          TEXT NOT NULL REFERENCES prices (id),
    gateway_price_id  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (gateway, price_id),
    UNIQUE (gateway, gateway_price_id)
);

-- The `created` time (seconds) of the newest gateway event applied to an invoice mirrored
-- from the gateway, so an older event delivered late never overwrites a newer state.
ALTER TABLE invoices ADD COLUMN gateway_event_at BIGINT;
