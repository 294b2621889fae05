-- ordermesh_create_parked_outbox(schema): <schema>.outbox_parked holds the outbox rows the
-- relay moved aside: a row Kafka can never accept (too large, malformed), with the reason,
-- and the later rows of the same message key, held behind it (held_behind = the parked row
-- they wait for) so that every key's events still reach Kafka in order. `ordermesh outbox
-- replay` moves rows back to the outbox; `ordermesh outbox discard` drops a parked row and
-- releases the rows held behind it.
--
-- ordermesh_create_outbox(schema) and ordermesh_create_inbox(schema) now also create the
-- parked table and the BRIN indexes the retention purge (workers/retention.py) finds old rows
-- with; calling them again on an existing schema adds what is missing.

CREATE OR REPLACE FUNCTION public.ordermesh_create_parked_outbox(schema_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %1$I.outbox_parked ('
        '    id           bigint PRIMARY KEY,'
        '    event_id     uuid NOT NULL UNIQUE,'
        '    topic        text NOT NULL,'
        '    message_key  text NOT NULL,'
        '    event_type   text NOT NULL,'
        '    payload      bytea NOT NULL,'
        '    headers      jsonb NOT NULL DEFAULT ''{}'','
        '    occurred_at  timestamptz NOT NULL,'
        '    parked_at    timestamptz NOT NULL DEFAULT now(),'
        '    reason       text NOT NULL,'
        '    held_behind  bigint)',
        schema_name);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS outbox_parked_by_key ON %1$I.outbox_parked (message_key)',
        schema_name);
END;
$fn$;

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
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS outbox_published_at ON %1$I.outbox USING brin (published_at)',
        schema_name);
    PERFORM public.ordermesh_create_parked_outbox(schema_name);
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
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS inbox_processed_at ON %1$I.inbox USING brin (processed_at)',
        schema_name);
END;
$fn$;
