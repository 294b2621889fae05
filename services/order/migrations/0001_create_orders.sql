CREATE SCHEMA IF NOT EXISTS orders;

CREATE TABLE orders.orders (
    order_id         uuid PRIMARY KEY,
    user_id          text NOT NULL,
    status           text NOT NULL CHECK (status IN ('PENDING', 'VALIDATED', 'PAID', 'FULFILLED',
                                                     'SHIPPED', 'DELIVERED', 'FAILED', 'CANCELLED')),
    status_reason    text NOT NULL DEFAULT '',
    total_minor      bigint NOT NULL CHECK (total_minor >= 0),
    currency         char(3) NOT NULL,
    shipping_address jsonb NOT NULL,
    payment_method   text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    carrier          text NOT NULL DEFAULT '',
    tracking_number  text NOT NULL DEFAULT '',
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE INDEX orders_by_user ON orders.orders (user_id, created_at DESC, order_id);
CREATE INDEX orders_by_status ON orders.orders (status, created_at DESC);

CREATE TABLE orders.order_items (
    order_id         uuid NOT NULL REFERENCES orders.orders ON DELETE CASCADE,
    line_no          integer NOT NULL,
    product_id       text NOT NULL,
    name             text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE orders.status_history (
    order_id    uuid NOT NULL REFERENCES orders.orders ON DELETE CASCADE,
    version     bigint NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, version)
);

-- One key names one order per user for ORDERMESH_IDEMPOTENCY_TTL_SECONDS (default 24 h).
CREATE TABLE orders.idempotency_keys (
    user_id     text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    order_id    uuid NOT NULL REFERENCES orders.orders ON DELETE CASCADE
                DEFERRABLE INITIALLY DEFERRED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

SELECT public.ordermesh_create_outbox('orders');
