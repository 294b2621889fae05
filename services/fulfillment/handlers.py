"""One function per fulfillment command or query. The commands come from the fulfillment
worker and run inside its transaction; the query serves the API."""

from collections.abc import Callable
from datetime import datetime

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.fulfillment.domain.commands import HoldShipment, ShipOrder
from services.fulfillment.domain.events import OrderShipped
from services.fulfillment.domain.model import Shipment
from services.fulfillment.domain.ports import ShipmentLedger, ShipmentReader
from services.fulfillment.domain.shipping import plan_shipment


async def get_shipment(order_id: str, principal: Principal, shipments: ShipmentReader) -> Shipment:
    if not order_id:
        raise InvalidArgument("order_id is required", field="order_id")
    shipment = await shipments.by_order(order_id)
    if shipment is None:
        raise NotFound("shipment not found")
    principal.ensure_owner(shipment.user_id, "shipment")
    return shipment


async def ship_order(
    command: ShipOrder,
    shipments: ShipmentLedger,
    *,
    now: datetime,
    new_id: Callable[[], str],
    entropy: Callable[[], int],
) -> OrderShipped | None:
    """Hands a fulfilled order to its carrier, once. An order cancelled first stays put."""
    await shipments.lock_order(command.order_id)
    if await shipments.is_cancelled(command.order_id):
        return None
    if await shipments.by_order(command.order_id) is not None:
        return None
    planned = plan_shipment(
        order_id=command.order_id,
        user_id=command.user_id,
        shipment_id=new_id(),
        entropy=entropy(),
        shipped_at=now,
    )
    return OrderShipped(await shipments.create(planned))


async def hold_shipment(command: HoldShipment, shipments: ShipmentLedger) -> Shipment | None:
    """Records the cancellation so a later fulfilment does not ship. Returns the shipment if
    the order had already left (nothing here can call it back)."""
    await shipments.lock_order(command.order_id)
    await shipments.record_cancellation(command.order_id, command.reason, command.cancelled_at)
    return await shipments.by_order(command.order_id)
