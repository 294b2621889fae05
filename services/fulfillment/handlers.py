"""One function per fulfillment query; the writes belong to the fulfillment worker."""

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.fulfillment.domain.model import Shipment
from services.fulfillment.domain.ports import ShipmentReader


async def get_shipment(order_id: str, principal: Principal, shipments: ShipmentReader) -> Shipment:
    if not order_id:
        raise InvalidArgument("order_id is required", field="order_id")
    shipment = await shipments.by_order(order_id)
    if shipment is None:
        raise NotFound("shipment not found")
    principal.ensure_owner(shipment.user_id, "shipment")
    return shipment
