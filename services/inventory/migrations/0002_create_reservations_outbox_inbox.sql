-- The inventory manager's decision per paid order (one row each): stock reserved, given back
-- after a cancellation, or refused for lack of stock (nothing held; shortages say why).
CREATE TABLE inventory.reservations (
    reservation_id uuid PRIMARY KEY,
    order_id       text NOT NULL CONSTRAINT reservations_one_per_order UNIQUE,
    user_id        text NOT NULL,
    status         text NOT NULL CHECK (status IN ('reserved', 'released', 'out_of_stock')),
    lines          jsonb NOT NULL CHECK (jsonb_typeof(lines) = 'array'),
    shortages      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(shortages) = 'array'),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    released_at    timestamptz,
    CONSTRAINT reservations_release_is_recorded
        CHECK ((status = 'released') = (released_at IS NOT NULL)),
    CONSTRAINT reservations_shortages_only_when_out_of_stock
        CHECK ((status = 'out_of_stock') = (shortages <> '[]'))
);

CREATE INDEX reservations_by_user ON inventory.reservations (user_id, created_at);

-- Orders seen cancelled. A payment event can arrive after the cancellation (another topic,
-- no order between them); this row stops it from reserving stock.
CREATE TABLE inventory.cancelled_orders (
    order_id     text PRIMARY KEY,
    reason       text NOT NULL DEFAULT '',
    cancelled_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory.outbox (
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

CREATE INDEX outbox_unpublished ON inventory.outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION inventory.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ordermesh_outbox', 'inventory');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON inventory.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION inventory.notify_outbox();

-- Event ids the inventory manager has applied (effectively-once).
CREATE TABLE inventory.inbox (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
