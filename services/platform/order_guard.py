"""Per-order serialisation and cancellation records for a service's event handlers.

A service that reacts to events of one order arriving on several topics (a payment and a
cancellation, say) takes the order's transaction-scoped advisory lock first, so the two
handlers never interleave, and remembers cancellations in `<schema>.cancelled_orders` so a
step that arrives after the cancellation does nothing."""

from datetime import datetime

from psycopg import sql

from services.platform.db import Connection


class OrderGuard:
    def __init__(self, conn: Connection, schema: str) -> None:
        self._conn = conn
        self._schema = schema
        self._cancelled = sql.Identifier(schema, "cancelled_orders")

    async def lock_order(self, order_id: str) -> None:
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"ordermesh.{self._schema}.order:{order_id}",),
        )

    async def is_cancelled(self, order_id: str) -> bool:
        cursor = await self._conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE order_id = %s").format(self._cancelled), (order_id,)
        )
        return await cursor.fetchone() is not None

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {} (order_id, reason, cancelled_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING"
            ).format(self._cancelled),
            (order_id, reason, at),
        )
