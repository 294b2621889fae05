"""Shipments and cancelled orders in the `fulfillment` schema. The writer works on the
caller's connection, so the worker records a shipment, its inbox entry and its outbox event
in one transaction."""

from typing import Any

from services.fulfillment.domain.model import NewShipment, Shipment
from services.fulfillment.domain.rules import validate_shipment
from services.platform.db import Connection, Pool
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


class ShipmentRepository(OrderGuard):
    def __init__(self, conn: Connection) -> None:
        super().__init__(conn, "fulfillment")

    async def by_order(self, order_id: str) -> Shipment | None:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM fulfillment.shipments WHERE order_id = %s", (order_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else _shipment(row)

    async def create(self, shipment: NewShipment) -> Shipment:
        """Records the order's shipment. An order ships once: if it already has a shipment,
        that one is returned and `shipment` is dropped."""
        validate_shipment(shipment)
        cursor = await self._conn.execute(
            "INSERT INTO fulfillment.shipments (shipment_id, order_id, user_id, carrier,"
            " tracking_number, shipped_at, estimated_delivery)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}",
            (
                shipment.shipment_id,
                shipment.order_id,
                shipment.user_id,
                shipment.carrier,
                shipment.tracking_number,
                shipment.shipped_at,
                shipment.estimated_delivery,
            ),
        )
        row = await cursor.fetchone()
        if row is not None:
            return _shipment(row)
        existing = await self.by_order(shipment.order_id)
        assert existing is not None, "the conflicting shipment is committed before DO NOTHING"
        return existing


class PooledShipmentReader:
    """Reads for the API, each on a connection of its own from the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def by_order(self, order_id: str) -> Shipment | None:
        async with self._pool.connection() as conn:
            return await ShipmentRepository(conn).by_order(order_id)
