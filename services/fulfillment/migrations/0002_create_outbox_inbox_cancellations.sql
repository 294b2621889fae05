-- Orders seen cancelled before they shipped. OrderFulfilled can arrive after the
-- cancellation (another topic, no order between them); this row stops it from shipping.
CREATE TABLE fulfillment.cancelled_orders (
    order_id     text PRIMARY KEY,
    reason       text NOT NULL DEFAULT '',
    cancelled_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fulfillment.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    topic        text NOT NULL,
    message_key  text NOT NULL,
    event_type   text NOT NULL,
    payload      bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON fulfillment.outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION fulfillment.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ordermesh_outbox', 'fulfillment');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON fulfillment.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION fulfillment.notify_outbox();

-- Event ids the fulfillment worker has applied (effectively-once).
CREATE TABLE fulfillment.inbox (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
