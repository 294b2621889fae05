"""Each component connects as its own Postgres role, limited to its own schema; services
refuse to start without a usable key-encryption secret."""

import asyncio
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack import postgres, secrets
from devstack.paths import REPO_ROOT
from devstack.ports import HOST
from services.platform.db import DATABASE_COMPONENTS, role_name
from services.platform.settings import MIN_SECRET_LENGTH, Settings
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

# A table of each service's own schema.
OWN_TABLES = {
    "auth": "auth.users",
    "order": "orders.orders",
    "inventory": "inventory.products",
    "payment": "payment.payments",
    "fulfillment": "fulfillment.shipments",
    "webhook": "webhook.webhooks",
}
SERVICES = tuple(OWN_TABLES)


def can_select(component: str, table: str, database: str) -> bool:
    with psycopg.connect(postgres.dsn(component, database=database), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.SQL(table)))
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


def test_every_component_has_a_role_and_every_service_a_table_of_its_own() -> None:
    assert set(SERVICES) | {"relay"} == set(DATABASE_COMPONENTS)


@pytest.mark.parametrize("component", SERVICES)
def test_a_service_role_reads_its_own_schema_and_no_other(
    migrated: None, database: str, component: str
) -> None:
    with psycopg.connect(postgres.dsn(component, database=database), autocommit=True) as conn:
        [[user]] = conn.execute("SELECT current_user").fetchall()
    assert user == role_name(component)
    assert can_select(component, OWN_TABLES[component], database)
    others = {name: table for name, table in OWN_TABLES.items() if name != component}
    readable = {name: can_select(component, table, database) for name, table in others.items()}
    assert readable == dict.fromkeys(others, False)
    assert not can_select(component, "public.ordermesh_migrations", database)


@pytest.mark.parametrize("component", SERVICES)
def test_a_service_role_cannot_change_the_schema(
    migrated: None, database: str, component: str
) -> None:
    schema = OWN_TABLES[component].split(".")[0]
    with (
        psycopg.connect(postgres.dsn(component, database=database), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(sql.SQL("CREATE TABLE {}.intruder (x int)").format(sql.Identifier(schema)))


def test_the_relay_reads_the_outboxes_and_nothing_else(migrated: None, database: str) -> None:
    for schema in ("orders", "payment", "inventory", "fulfillment"):
        assert can_select("relay", f"{schema}.outbox", database)
        assert can_select("relay", f"{schema}.outbox_parked", database)
    readable = {table: can_select("relay", table, database) for table in OWN_TABLES.values()}
    assert readable == dict.fromkeys(OWN_TABLES.values(), False)


def test_a_wrong_password_is_refused() -> None:
    params = conninfo_to_dict(postgres.dsn("payment"))
    params["password"] = "not-the-password"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo("", **params)).close()


async def _start_auth(secret_env: dict[str, str], settings: Settings) -> tuple[int, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ORDERMESH_KEY_ENCRYPTION_SECRET")
        and key != "ORDERMESH_INSECURE_DEV_SECRETS"
    }
    env.update(
        {
            "ORDERMESH_DATABASE_URL": settings.database_url,
            "ORDERMESH_GRPC_HOST": HOST,
            "ORDERMESH_GRPC_PORT": str(reserve_port()),
            "PYTHONPATH": str(REPO_ROOT),
            **secret_env,
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "--components",
        "auth",
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the auth service started without a usable secret") from None
    return process.returncode or 0, err.decode()


@pytest.mark.parametrize(
    ("secret_env", "complaint"),
    [
        ({}, "ORDERMESH_KEY_ENCRYPTION_SECRET (or ORDERMESH_KEY_ENCRYPTION_SECRET_FILE) must be"),
        (
            {"ORDERMESH_KEY_ENCRYPTION_SECRET": "too-short"},
            f"is 9 characters; it must have at least {MIN_SECRET_LENGTH}",
        ),
    ],
    ids=["no secret", "short secret"],
)
async def test_a_service_refuses_to_start_without_a_usable_secret(
    settings: Settings, migrated: None, secret_env: dict[str, str], complaint: str
) -> None:
    code, err = await _start_auth(secret_env, settings)
    assert code != 0
    assert "refusing to start" in err
    assert complaint in err


def test_the_local_stack_keeps_its_secrets_in_the_ignored_run_dir(settings: Settings) -> None:
    secret_file = secrets.key_encryption_secret_file()
    assert settings.require_key_encryption_secret() == secret_file.read_text().strip()
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    if not secret_file.resolve().is_relative_to(REPO_ROOT):
        return  # ORDERMESH_RUN_DIR moved the run dir out of the clone: git cannot see it
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(secret_file)], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, f"{secret_file} is not ignored by git"
