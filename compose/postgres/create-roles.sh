#!/usr/bin/env bash
# First start of the compose Postgres (docker-entrypoint-initdb.d): the owner role that
# migrates and one login role per component, each with the password generated into
# ./secrets by `python -m devstack.compose_secrets` (mounted at /run/secrets). The migrations
# then grant every component role its own schema only.
set -euo pipefail

role_password() { tr -d '\n' < "/run/secrets/postgres-$1"; }

psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB")
"${psql[@]}" -v password="$(role_password ordermesh)" <<'SQL'
CREATE ROLE ordermesh LOGIN PASSWORD :'password';
SQL
"${psql[@]}" -c "ALTER DATABASE $POSTGRES_DB OWNER TO ordermesh"
"${psql[@]}" -c "ALTER SCHEMA public OWNER TO ordermesh"
for component in auth order inventory payment fulfillment webhook relay; do
  "${psql[@]}" -v role="ordermesh_$component" -v password="$(role_password "ordermesh_$component")" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
done
