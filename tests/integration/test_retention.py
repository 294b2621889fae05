"""The retention purge against real Postgres: what goes, what stays, and that each service's
own role may run its purges."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from devstack import postgres
from services.auth import bootstrap as auth_bootstrap
from services.platform.db import Pool, open_pool
from services.platform.messaging.outbox import inbox_ddl, outbox_ddl
from services.platform.messaging.retention import (
    Purge,
    RetentionPurger,
    components_of,
    purge_older_than,
)
from services.platform.settings import Settings
from workers.__main__ import all_purges

pytestmark = pytest.mark.integration


@pytest.fixture
async def schema(pool: Pool) -> AsyncIterator[str]:
    name = f"retention_{uuid.uuid4().hex[:12]}"
    async with pool.connection() as conn:
        await conn.execute(f"CREATE SCHEMA {name}")
        await conn.execute(outbox_ddl(name))
        await conn.execute(inbox_ddl(name))
    yield name
    async with pool.connection() as conn:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")


async def test_old_published_rows_go_in_batches_and_everything_else_stays(
    pool: Pool, schema: str
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            f"INSERT INTO {schema}.outbox (event_id, topic, message_key, event_type, payload,"
            " occurred_at, published_at)"
            " SELECT gen_random_uuid(), 't', 'k', 'E', '\\x00', now() - interval '3 days',"
            "  CASE WHEN n <= 25 THEN now() - interval '2 days'"
            "       WHEN n <= 30 THEN now() - interval '1 minute' END"
            " FROM generate_series(1, 35) AS n"
        )
        await conn.execute(
            f"INSERT INTO {schema}.inbox (consumer_group, event_id, processed_at)"
            " SELECT 'g', gen_random_uuid(), now() - make_interval(days => n)"
            " FROM generate_series(1, 10) AS n"
        )
    purger = RetentionPurger(
        {"test": pool},
        [
            Purge(
                "outbox", "test", purge_older_than(f"{schema}.outbox", "published_at"), timedelta(1)
            ),
            Purge(
                "inbox", "test", purge_older_than(f"{schema}.inbox", "processed_at"), timedelta(5.5)
            ),
        ],
        interval=60,
        batch=10,
    )
    assert await purger.purge_once() == {"outbox": 25, "inbox": 5}
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT count(*) FILTER (WHERE published_at IS NULL) AS unpublished,"
            f" count(*) FILTER (WHERE published_at IS NOT NULL) AS recent FROM {schema}.outbox"
        )
        assert await cursor.fetchone() == {"unpublished": 5, "recent": 5}
    assert await purger.purge_once() == {"outbox": 0, "inbox": 0}


async def test_a_refresh_token_family_goes_only_when_its_newest_token_expired(pool: Pool) -> None:
    user_id = uuid.uuid4()
    expired, alive = uuid.uuid4(), uuid.uuid4()
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO auth.users (user_id, email, password_hash, full_name)"
            " VALUES (%s, %s, 'x', 'Retention Test')",
            (user_id, f"retention-{user_id.hex[:12]}@example.com"),
        )
        await conn.execute(
            "INSERT INTO auth.refresh_tokens (token_id, family_id, user_id, issued_at,"
            " expires_at, revoked_at) VALUES"
            " (%(a)s, %(expired)s, %(user)s, now() - interval '9 days',"
            "  now() - interval '2 days', NULL),"
            " (%(b)s, %(alive)s, %(user)s, now() - interval '9 days',"
            "  now() - interval '2 days', now() - interval '3 days'),"
            " (%(c)s, %(alive)s, %(user)s, now() - interval '1 hour',"
            "  now() + interval '7 days', NULL)",
            {
                "a": uuid.uuid4().hex,
                "b": uuid.uuid4().hex,
                "c": uuid.uuid4().hex,
                "expired": expired,
                "alive": alive,
                "user": user_id,
            },
        )
    [sessions] = auth_bootstrap.purges(Settings.from_env({}))
    purger = RetentionPurger({"auth": pool}, [sessions], interval=60)
    await purger.purge_once()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT family_id, count(*) AS tokens FROM auth.refresh_tokens WHERE user_id = %s"
            " GROUP BY family_id",
            (user_id,),
        )
        assert await cursor.fetchall() == [{"family_id": alive, "tokens": 2}]
        await conn.execute("DELETE FROM auth.users WHERE user_id = %s", (user_id,))


async def test_each_service_role_may_run_its_own_purges(
    settings: Settings, migrated: None, database: str
) -> None:
    # Horizons far in the past: the statements run, as each owner's role, and delete nothing
    # of the live stack's recent rows.
    centuries = Settings.from_env(
        {
            "ORDERMESH_OUTBOX_RETENTION_SECONDS": str(100 * 365 * 86400),
            "ORDERMESH_INBOX_RETENTION_SECONDS": str(100 * 365 * 86400),
            "ORDERMESH_IDEMPOTENCY_TTL_SECONDS": str(100 * 365 * 86400),
            "ORDERMESH_SESSION_RETENTION_SECONDS": str(100 * 365 * 86400),
        }
    )
    purge_list = all_purges(centuries)
    pools: dict[str, Pool] = {}
    try:
        for component in components_of(purge_list):
            role_settings = Settings.from_env(
                {
                    "ORDERMESH_DATABASE_URL": settings.database_url,
                    f"ORDERMESH_{component.upper()}_DATABASE_URL": postgres.dsn(
                        component, database=database
                    ),
                }
            )
            pools[component] = await open_pool(
                role_settings, name=f"tests-retention-{component}", component=component
            )
        deleted = await RetentionPurger(pools, purge_list, interval=60).purge_once()
    finally:
        for opened in pools.values():
            await opened.close()
    assert set(deleted) == {purge.name for purge in purge_list}
    assert set(deleted.values()) == {0}
