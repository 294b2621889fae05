-- The relay's parked rows and the retention purge's indexes (see
-- services/platform/migrations/0002_upgrade_event_table_functions.sql).
SELECT public.ordermesh_create_outbox('orders');
SELECT public.ordermesh_create_inbox('orders');

-- Expired idempotency keys are purged by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON orders.idempotency_keys
    USING brin (created_at);
