"""The fulfillment worker: ships fulfilled orders and keeps cancelled ones from shipping.

Each handler runs inside the consumer's transaction (with its inbox row), takes the order's
lock first so a fulfilment and a cancellation of one order never interleave, and never
commits itself.
"""

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from services.common.clock import new_id, utc_now
from services.fulfillment import handlers
from services.fulfillment.adapters.outbox import FulfillmentOutbox
from services.fulfillment.adapters.repository import ShipmentRepository
from services.fulfillment.domain.commands import HoldShipment, ShipOrder
from services.platform.db import Connection
from services.platform.messaging.codec import EventCodec, EventEnvelope
from services.platform.messaging.consumer import Handlers

log = logging.getLogger(__name__)


def _entropy() -> int:
    return uuid.uuid4().int


def ship_command(record: Mapping[str, Any]) -> ShipOrder:
    """An OrderReadyToShip record as the command it implies."""
    return ShipOrder(
        order_id=str(record["order_id"]),
        user_id=str(record["user_id"]),
    )


def hold_command(record: Mapping[str, Any]) -> HoldShipment:
    """An OrderCancelled record as the command it implies."""
    return HoldShipment(
        order_id=str(record["order_id"]),
        reason=str(record["reason"]),
        cancelled_at=record["cancelled_at"],
    )


class FulfillmentWorker:
    """OrderReadyToShip → shipment + OrderShipped; OrderCancelled → no shipment after it.

    The order service releases an order to the warehouse (OrderReadyToShip) only while it
    is not cancelled, and refuses cancellations after the release; both events travel on
    the orders topic keyed by order id, so this worker sees them in the order they happened.
    """

    def __init__(self, codec: EventCodec) -> None:
        self._outbox = FulfillmentOutbox(codec)

    def handlers(self) -> Handlers:
        return Handlers(
            single={
                "OrderReadyToShip": self.on_ready_to_ship,
                "OrderCancelled": self.on_order_cancelled,
            }
        )

    async def on_ready_to_ship(self, envelope: EventEnvelope, conn: Connection) -> None:
        command = ship_command(envelope.record)
        event = await handlers.ship_order(
            command, ShipmentRepository(conn), now=utc_now(), new_id=new_id, entropy=_entropy
        )
        if event is None:
            log.info("order does not ship", extra={"order_id": command.order_id})
            return
        await self._outbox.write(conn, event)

    async def on_order_cancelled(self, envelope: EventEnvelope, conn: Connection) -> None:
        command = hold_command(envelope.record)
        shipped = await handlers.hold_shipment(command, ShipmentRepository(conn))
        if shipped is not None:
            log.warning(
                "order cancelled after it shipped",
                extra={"order_id": command.order_id, "tracking_number": shipped.tracking_number},
            )
