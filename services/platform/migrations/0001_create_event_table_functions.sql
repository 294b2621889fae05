-- The transactional outbox and the consumer inbox, defined once for every service.
--
-- ordermesh_create_outbox(schema): <schema>.outbox holds events written in the same
-- transaction as the state change they report; the outbox relay publishes them in id order
-- and marks them published once Kafka acknowledged them. A statement trigger wakes the relay
-- (LISTEN ordermesh_outbox, payload = schema).
--
-- Both are idempotent: creating what exists is a no-op.
--
-- ordermesh_create_inbox(schema): <schema>.inbox records, per consumer group, the ids of the
-- events whose effects committed, which makes at-least-once delivery effectively-once.

CREATE OR REPLACE FUNCTION public.ordermesh_create_outbox(schema_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %1$I.outbox ('
        '    id           bigserial PRIMARY KEY,'
        '    event_id     uuid NOT NULL UNIQUE,'
        '    topic        text NOT NULL,'
        '    message_key  text NOT NULL,'
        '    event_type   text NOT NULL,'
        '    payload      bytea NOT NULL,'
        '    headers      jsonb NOT NULL DEFAULT ''{}'','
        '    occurred_at  timestamptz NOT NULL DEFAULT now(),'
        '    published_at timestamptz)',
        schema_name);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS outbox_unpublished ON %1$I.outbox (id)'
        ' WHERE published_at IS NULL',
        schema_name);
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION %1$I.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS'
        ' $body$'
        ' BEGIN PERFORM pg_notify(''ordermesh_outbox'', %2$L); RETURN NULL; END; $body$',
        schema_name, schema_name);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON %1$I.outbox'
        ' FOR EACH STATEMENT EXECUTE FUNCTION %1$I.notify_outbox()',
        schema_name);
END;
$fn$;

CREATE OR REPLACE FUNCTION public.ordermesh_create_inbox(schema_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %1$I.inbox ('
        '    consumer_group text NOT NULL,'
        '    event_id       uuid NOT NULL,'
        '    processed_at   timestamptz NOT NULL DEFAULT now(),'
        '    PRIMARY KEY (consumer_group, event_id))',
        schema_name);
END;
$fn$;
