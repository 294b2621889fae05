"""Per-order serialisation and cancellation records for a service's event handlers.

A service that reacts to events of one order arriving on several topics (a payment and a
cancellation, say) takes the order's transaction-scoped advisory lock first, so the two
handlers never interleave, and remembers cancellations in `<schema>.cancelled_orders` so a
step that arrives after the cancellation does nothing."""

from collections.abc import Iterable
from datetime import datetime

from psycopg import sql

from services.platform.db import Connection


class OrderGuard:
    def __init__(self, conn: Connection, schema: str) -> None:
        self._conn = conn
        self._schema = schema
        self._cancelled = sql.Identifier(schema, "cancelled_orders")

    def _lock_key(self, order_id: str) -> str:
        return f"ordermesh.{self._schema}.order:{order_id}"

    async def lock_order(self, order_id: str) -> None:
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self._lock_key(order_id),)
        )

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        """Takes the locks of :meth:`lock_order` for several orders in one query, in order_id
        order, so two batches sharing orders never wait for each other crosswise."""
        keys = [self._lock_key(order_id) for order_id in sorted(set(order_ids))]
        # A volatile function in the select list runs after the sort, so row by row in n order.
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
            " FROM unnest(%b::text[]) WITH ORDINALITY AS t (k, n) ORDER BY n",
            (keys,),
        )

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {} (order_id, reason, cancelled_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING"
            ).format(self._cancelled),
            (order_id, reason, at),
        )
