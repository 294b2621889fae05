-- Event ids each consumer group of the order service has applied (effectively-once).
CREATE TABLE orders.inbox (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
