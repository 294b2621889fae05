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

SELECT public.ordermesh_create_outbox('inventory');

-- Event ids the inventory manager has applied (effectively-once).
SELECT public.ordermesh_create_inbox('inventory');
