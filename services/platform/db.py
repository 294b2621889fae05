"""The Postgres connection pool, built and closed by the composition root. Connections are
in autocommit mode (writes open explicit transactions) and return rows as dicts."""

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.platform.settings import Settings

Connection = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]


async def open_pool(settings: Settings, *, name: str) -> Pool:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": f"ordermesh-{name}",
    }
    pool = Pool(
        settings.database_url,
        connection_class=Connection,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        name=name,
        open=False,
        kwargs=kwargs,
    )
    await pool.open(wait=True, timeout=30)
    return pool
