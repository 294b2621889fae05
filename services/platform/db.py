"""The Postgres connection pool, built and closed by the composition root. Connections are
in autocommit mode (writes open explicit transactions) and return rows as dicts."""

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.platform.settings import Settings

Connection = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]

# The parts of ordermesh that keep state in Postgres. Each connects as a login role of its
# own, ``ordermesh_<component>``, which its migrations grant its own schema only (the relay:
# every outbox); the owner role that migrates is the only one with more.
DATABASE_COMPONENTS = ("auth", "order", "inventory", "payment", "fulfillment", "webhook", "relay")
OWNER_ROLE = "ordermesh"


def role_name(component: str) -> str:
    if component not in DATABASE_COMPONENTS:
        raise ValueError(f"{component!r} keeps no state in Postgres")
    return f"ordermesh_{component}"


async def open_pool(settings: Settings, *, name: str, component: str | None = None) -> Pool:
    """A pool for ``component`` (connecting as its own role, see
    :meth:`Settings.database_url_for`), or the owner's pool when no component is given."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": f"ordermesh-{name}",
    }
    url = settings.database_url if component is None else settings.database_url_for(component)
    pool = Pool(
        url,
        connection_class=Connection,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        name=name,
        open=False,
        kwargs=kwargs,
    )
    await pool.open(wait=True, timeout=30)
    return pool
