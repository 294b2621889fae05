"""The services' Postgres pool (services/platform/db.py) against a real server: a healthy
connection is handed out without a round trip, and one the server has closed is replaced
before any caller sees it."""

import asyncio
import time

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from services.platform.db import Connection, Pool
from services.platform.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[Connection]:
    """The connections the pool checked with a round trip (an empty query)."""
    checked: list[Connection] = []
    check = AsyncConnectionPool.check_connection

    async def counting(conn: Connection) -> None:
        checked.append(conn)
        await check(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counting))
    return checked


async def backend_pid(pool: Pool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT pg_backend_pid() AS pid")
        row = await cursor.fetchone()
    assert row is not None
    return int(row["pid"])


async def test_a_healthy_connection_is_handed_out_without_a_round_trip(
    one_connection: Pool, full_checks: list[Connection]
) -> None:
    first = await backend_pid(one_connection)
    for _ in range(5):
        assert await backend_pid(one_connection) == first
    assert full_checks == []


async def test_a_connection_the_server_closed_is_replaced_before_use(
    settings: Settings, one_connection: Pool, full_checks: list[Connection]
) -> None:
    doomed = await backend_pid(one_connection)
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (doomed,))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cursor = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (doomed,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.05)
    replacement = await backend_pid(one_connection)
    assert replacement != doomed
    assert full_checks, "the closed connection was noticed and checked"
