-- Orders the payment service saw cancelled. OrderValidated can arrive after the
-- cancellation (late, duplicated, or replayed from the dead-letter topic); this row stops it
-- from taking money for an order nobody wants any more.
CREATE TABLE payment.cancelled_orders (
    order_id     text PRIMARY KEY,
    reason       text NOT NULL DEFAULT '',
    cancelled_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
