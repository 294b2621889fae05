-- The payment service connects as ordermesh_payment: its own schema only (see
-- services/platform/migrations/0003_create_role_grant_functions.sql).
SELECT public.ordermesh_grant_service('payment', 'ordermesh_payment');
SELECT public.ordermesh_grant_relay('payment');
