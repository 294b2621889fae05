-- The sender counts parked deliveries every few seconds for its metrics
-- (ordermesh_webhook_parked): a partial index as small as what waits for a replay, so the
-- count never walks the 30 days of finished deliveries.
CREATE INDEX deliveries_parked ON webhook.deliveries (webhook_id) WHERE state = 'parked';
