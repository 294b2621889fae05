-- The fulfillment service connects as ordermesh_fulfillment: its own schema only (see
-- services/platform/migrations/0003_create_role_grant_functions.sql).
SELECT public.ordermesh_grant_service('fulfillment', 'ordermesh_fulfillment');
SELECT public.ordermesh_grant_relay('fulfillment');
