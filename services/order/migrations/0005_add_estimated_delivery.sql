-- When the carrier expects to deliver a shipped order (from OrderShipped); the live feed and
-- GetOrder show it beside the carrier and tracking number.
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS estimated_delivery timestamptz;
