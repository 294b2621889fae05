"""What the fulfillment handlers need from the outside world."""

from datetime import datetime
from typing import Protocol

from services.fulfillment.domain.model import NewShipment, Shipment


class ShipmentReader(Protocol):
    async def by_order(self, order_id: str) -> Shipment | None: ...


class ShipmentLedger(ShipmentReader, Protocol):
    """Shipments and cancellations, all inside the caller's transaction."""

    async def lock_order(self, order_id: str) -> None:
        """Serialises every handler of this order until the transaction ends (a fulfilment
        and a cancellation of one order arrive on different topics, possibly at once)."""

    async def is_cancelled(self, order_id: str) -> bool: ...

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        """Remembers the order as cancelled; recording it again changes nothing."""

    async def create(self, shipment: NewShipment) -> Shipment: ...
