-- Orders seen cancelled before they shipped. OrderFulfilled can arrive after the
-- cancellation (another topic, no order between them); this row stops it from shipping.
CREATE TABLE fulfillment.cancelled_orders (
    order_id     text PRIMARY KEY,
    reason       text NOT NULL DEFAULT '',
    cancelled_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

SELECT public.ordermesh_create_outbox('fulfillment');

-- Event ids the fulfillment worker has applied (effectively-once).
SELECT public.ordermesh_create_inbox('fulfillment');
