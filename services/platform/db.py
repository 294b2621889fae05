"""The Postgres connection pool, built and closed by the composition root. Connections are
in autocommit mode (writes open explicit transactions) and return rows as dicts."""

import select
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.platform.contexts import CONTEXT_NAMES
from services.platform.settings import Settings

Connection = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]

# The parts of ordermesh that keep state in Postgres. Each connects as a login role of its
# own, ``ordermesh_<component>``, which its migrations grant its own schema only (the relay:
# every outbox); the owner role that migrates is the only one with more.
RELAY_COMPONENT = "relay"
DATABASE_COMPONENTS: tuple[str, ...] = (*CONTEXT_NAMES, RELAY_COMPONENT)
OWNER_ROLE = "ordermesh"
IDLE = TransactionStatus.IDLE
CONNECTION_WAIT_SECONDS = 5.0
RECONNECT_GIVE_UP_SECONDS = 2.0


def columns(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """``rows`` turned into one list per column: the parameters of a set-based statement,
    ``INSERT ... SELECT * FROM unnest(%b::uuid[], %b::text[], ...)``. Lists, because
    psycopg sends a tuple as a record, not an array; ``%b``, because an array sent as text
    has every element escaped by a regular expression, several times the cost of the
    binary form (bench/event_bus.py's insert phase shows the difference)."""
    return [list(column) for column in zip(*rows, strict=True)]


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
    revalidation = _Revalidation()
    pool = Pool(
        url,
        connection_class=Connection,
        # A connection handed out is checked first (see _Revalidation): after a database
        # restart the pool replaces dead connections instead of failing a request with one.
        check=revalidation.check,
        # While the database is away a caller waits at most this long, then gets an outage
        # error (UNAVAILABLE to clients; consumers wait and retry).
        timeout=CONNECTION_WAIT_SECONDS,
        # Background reconnection backs off exponentially; giving up after a short while
        # means the next request reconnects at once when the database is back, instead of
        # waiting out a long backoff.
        reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        name=name,
        open=False,
        kwargs=kwargs,
    )
    revalidation.pool = pool
    await pool.open(wait=True, timeout=30)
    return pool


class _Revalidation:
    """The pool's check of a connection it hands out.

    An idle connection in autocommit mode has nothing to read unless the server sent
    something unasked since its last use: the notice and end of file of a restart or of a
    terminated backend, or a parameter change. So a connection whose socket is not readable
    is handed out as it is, without a round trip; any other is checked with an empty query.
    One dead connection means the server restarted or the network broke, so every idle
    connection is then checked at once: the pool waits a second before its next attempt (to
    avoid a busy loop), and that attempt then finds a fresh connection instead of the next
    dead one."""

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self._checking = False

    async def check(self, conn: Connection) -> None:
        if _quiet(conn):
            return
        try:
            await Pool.check_connection(conn)
        except Exception:
            if self.pool is not None and not self._checking:
                self._checking = True
                try:
                    await self.pool.check()
                finally:
                    self._checking = False
            raise


def _quiet(conn: Connection) -> bool:
    """Whether ``conn`` is open, idle, and has nothing from the server waiting to be read."""
    pgconn = conn.pgconn
    if conn.closed or pgconn.status != ConnStatus.OK or pgconn.transaction_status != IDLE:
        return False
    readable = select.poll()
    readable.register(pgconn.socket, select.POLLIN | select.POLLPRI)
    return not readable.poll(0)
