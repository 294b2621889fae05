-- The order service connects as ordermesh_order: its own schema only (see
-- services/platform/migrations/0003_create_role_grant_functions.sql).
SELECT public.ordermesh_grant_service('orders', 'ordermesh_order');
SELECT public.ordermesh_grant_relay('orders');
