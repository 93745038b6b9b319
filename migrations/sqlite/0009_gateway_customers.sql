-- The customer a gateway keeps for each of ours (Stripe's `cus_…` for our `cus_…`), created
-- the first time the customer is charged there. One per gateway and customer, and a gateway
-- customer belongs to one of ours.

CREATE TABLE gateway_customers (
    gateway              TEXT NOT NULL,
    customer_id          TEXT NOT NULL REFERENCES customers (id),
    gateway_customer_id  TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (gateway, customer_id),
    UNIQUE (gateway, gateway_customer_id)
);
