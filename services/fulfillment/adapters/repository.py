"""Shipments and cancelled orders in the `fulfillment` schema. The writer works on the
caller's connection, so the worker records a shipment, its inbox entry and its outbox event
in one transaction."""

from collections.abc import Iterable, Sequence
from typing import Any

from services.fulfillment.domain.model import NewShipment, Shipment
from services.fulfillment.domain.rules import validate_shipment
from services.platform.db import Connection, Pool, columns
from services.platform.order_guard import OrderGuard

_COLUMNS = (
    "shipment_id::text, order_id, user_id, carrier, tracking_number, shipped_at,"
    " estimated_delivery, created_at"
)


def _shipment(row: dict[str, Any]) -> Shipment:
    return Shipment(
        shipment_id=row["shipment_id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        carrier=row["carrier"],
        tracking_number=row["tracking_number"],
        shipped_at=row["shipped_at"],
        estimated_delivery=row["estimated_delivery"],
        created_at=row["created_at"],
    )


_CREATE = (
    "INSERT INTO fulfillment.shipments (shipment_id, order_id, user_id, carrier,"
    " tracking_number, shipped_at, estimated_delivery)"
    " SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::timestamptz[], %b::timestamptz[])"
    f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}"
)


class ShipmentRepository(OrderGuard):
    def __init__(self, conn: Connection) -> None:
        super().__init__(conn, "fulfillment")

    async def by_order(self, order_id: str) -> Shipment | None:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM fulfillment.shipments WHERE order_id = %s", (order_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else _shipment(row)

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(order_ids))
        cursor = await self._conn.execute(
            "SELECT order_id FROM fulfillment.cancelled_orders WHERE order_id = ANY(%s)"
            " UNION SELECT order_id FROM fulfillment.shipments WHERE order_id = ANY(%s)",
            (ids, ids),
        )
        return {row["order_id"] for row in await cursor.fetchall()}

    async def create_all(self, shipments: Sequence[NewShipment]) -> list[Shipment]:
        """Records the shipments with one statement. An order ships once: one that already
        has a shipment keeps it, and is left out of the result."""
        for shipment in shipments:
            validate_shipment(shipment)
        if not shipments:
            return []
        rows = [
            (
                s.shipment_id,
                s.order_id,
                s.user_id,
                s.carrier,
                s.tracking_number,
                s.shipped_at,
                s.estimated_delivery,
            )
            for s in shipments
        ]
        cursor = await self._conn.execute(_CREATE, columns(rows))
        created = {row["order_id"]: _shipment(row) for row in await cursor.fetchall()}
        return [created[s.order_id] for s in shipments if s.order_id in created]


class PooledShipmentReader:
    """Reads for the API, each on a connection of its own from the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def by_order(self, order_id: str) -> Shipment | None:
        async with self._pool.connection() as conn:
            return await ShipmentRepository(conn).by_order(order_id)
