CREATE SCHEMA IF NOT EXISTS fulfillment;

CREATE TABLE fulfillment.shipments (
    shipment_id        uuid PRIMARY KEY,
    order_id           text NOT NULL CONSTRAINT shipments_one_per_order UNIQUE,
    user_id            text NOT NULL,
    carrier            text NOT NULL CHECK (length(carrier) BETWEEN 1 AND 100),
    tracking_number    text NOT NULL CHECK (length(tracking_number) BETWEEN 1 AND 100),
    shipped_at         timestamptz NOT NULL,
    estimated_delivery timestamptz NOT NULL CHECK (estimated_delivery >= shipped_at),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shipments_tracking_unique UNIQUE (carrier, tracking_number)
);

CREATE INDEX shipments_by_user ON fulfillment.shipments (user_id, shipped_at);
