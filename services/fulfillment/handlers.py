"""One function per fulfillment command or query. The commands come from the fulfillment
worker and run inside its transaction; the query serves the API."""

from collections.abc import Callable, Sequence
from datetime import datetime

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.fulfillment.domain.commands import HoldShipment, ShipOrder
from services.fulfillment.domain.events import OrderShipped
from services.fulfillment.domain.model import NewShipment, Shipment
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


async def ship_orders(
    commands: Sequence[ShipOrder],
    shipments: ShipmentLedger,
    *,
    now: datetime,
    new_id: Callable[[], str],
    entropy: Callable[[], int],
) -> list[OrderShipped]:
    """Hands each fulfilled order to its carrier, once; returns the events to publish, in
    the commands' order. An order cancelled first stays put, and one that already shipped
    (or comes twice in the batch) ships once."""
    order_ids = [command.order_id for command in commands]
    await shipments.lock_orders(order_ids)
    settled = set(await shipments.settled_orders(order_ids))
    planned: list[NewShipment] = []
    for command in commands:
        if command.order_id in settled:
            continue
        settled.add(command.order_id)
        planned.append(
            plan_shipment(
                order_id=command.order_id,
                user_id=command.user_id,
                shipment_id=new_id(),
                entropy=entropy(),
                shipped_at=now,
            )
        )
    if not planned:
        return []
    return [OrderShipped(shipment) for shipment in await shipments.create_all(planned)]


async def hold_shipment(command: HoldShipment, shipments: ShipmentLedger) -> Shipment | None:
    """Records the cancellation so a later fulfilment does not ship. Returns the shipment if
    the order had already left (nothing here can call it back)."""
    await shipments.lock_order(command.order_id)
    await shipments.record_cancellation(command.order_id, command.reason, command.cancelled_at)
    return await shipments.by_order(command.order_id)
