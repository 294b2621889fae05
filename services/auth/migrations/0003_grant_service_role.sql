-- The auth service connects as ordermesh_auth: its own schema only (see
-- services/platform/migrations/0003_create_role_grant_functions.sql).
SELECT public.ordermesh_grant_service('auth', 'ordermesh_auth');
