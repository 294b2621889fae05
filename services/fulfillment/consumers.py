"""The fulfillment worker: ships fulfilled orders and keeps cancelled ones from shipping.

Each handler runs inside the consumer's transaction (with its inbox row), takes the order's
lock first so a fulfilment and a cancellation of one order never interleave, and never
commits itself.
"""

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.clock import new_id, utc_now
from services.fulfillment import handlers
from services.fulfillment.adapters.outbox import fulfillment_outbox
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
        self._outbox = fulfillment_outbox(codec)

    def handlers(self) -> Handlers:
        return Handlers(
            single={"OrderCancelled": self.on_order_cancelled},
            batch={"OrderReadyToShip": self.on_ready_to_ship},
        )

    async def on_ready_to_ship(self, envelopes: Sequence[EventEnvelope], conn: Connection) -> None:
        """Ships a batch of released orders with a handful of queries (see
        :func:`services.fulfillment.handlers.ship_orders`)."""
        commands = [ship_command(envelope.record) for envelope in envelopes]
        events = await handlers.ship_orders(
            commands, ShipmentRepository(conn), now=utc_now(), new_id=new_id, entropy=_entropy
        )
        await self._outbox.write(conn, events)
        if len(events) < len(commands):
            shipped = {event.shipment.order_id for event in events}
            log.info(
                "orders that do not ship (cancelled or shipped before)",
                extra={"orders": [c.order_id for c in commands if c.order_id not in shipped]},
            )

    async def on_order_cancelled(self, envelope: EventEnvelope, conn: Connection) -> None:
        command = hold_command(envelope.record)
        shipped = await handlers.hold_shipment(command, ShipmentRepository(conn))
        if shipped is not None:
            log.warning(
                "order cancelled after it shipped",
                extra={"order_id": command.order_id, "tracking_number": shipped.tracking_number},
            )
