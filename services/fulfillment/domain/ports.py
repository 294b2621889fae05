"""What the fulfillment handlers need from the outside world."""

from typing import Protocol

from services.fulfillment.domain.model import Shipment


class ShipmentReader(Protocol):
    async def by_order(self, order_id: str) -> Shipment | None: ...
