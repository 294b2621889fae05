-- The inventory service connects as ordermesh_inventory: its own schema only (see
-- services/platform/migrations/0003_create_role_grant_functions.sql).
SELECT public.ordermesh_grant_service('inventory', 'ordermesh_inventory');
SELECT public.ordermesh_grant_relay('inventory');
