-- Events the payment service publishes, written in the transaction of the payment they
-- report; the outbox relay publishes them (woken by the notify trigger).
CREATE TABLE payment.outbox (
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

CREATE INDEX outbox_unpublished ON payment.outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION payment.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ordermesh_outbox', 'payment');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON payment.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION payment.notify_outbox();

-- Event ids each consumer group of the payment service has applied (effectively-once).
CREATE TABLE payment.inbox (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
