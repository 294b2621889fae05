-- The relay's parked rows and the retention purge's indexes (see
-- services/platform/migrations/0002_upgrade_event_table_functions.sql).
SELECT public.ordermesh_create_outbox('fulfillment');
SELECT public.ordermesh_create_inbox('fulfillment');
