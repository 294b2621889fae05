-- Each component connects as a login role of its own (services/platform/db.py:
-- ordermesh_<component>), created by the deployment before it migrates (the local stack in
-- devstack/postgres.py, compose in compose/postgres/create-roles.sh). Its migrations grant it
-- its own schema and nothing else; PUBLIC has no access to any service schema.
--
-- ordermesh_grant_service(schema, role): use of the schema, reads and writes of its tables
-- and sequences, now and for tables created later by the migrating owner.
-- ordermesh_grant_relay(schema, role): what the outbox relay needs of the schema's outbox:
-- read and mark rows, and move rows that can never be published to outbox_parked.

CREATE OR REPLACE FUNCTION public.ordermesh_require_role(role_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'database role % does not exist', role_name
            USING HINT = 'create every component''s login role before migrating'
                         ' (devstack and compose do)';
    END IF;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.ordermesh_grant_service(schema_name text, role_name text)
RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM public.ordermesh_require_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
        schema_name, role_name);
    EXECUTE format(
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
        ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
        schema_name, role_name);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I',
        schema_name, role_name);
END;
$fn$;

CREATE OR REPLACE FUNCTION public.ordermesh_grant_relay(
    schema_name text, role_name text DEFAULT 'ordermesh_relay'
) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM public.ordermesh_require_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON %I.outbox TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.outbox_parked TO %I', schema_name, role_name);
END;
$fn$;
