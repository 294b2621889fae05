"""What the fulfillment handlers need from the outside world."""

from collections.abc import Iterable, Sequence, Set
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

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        """:meth:`lock_order` for several orders at once, in an order every caller shares."""

    async def settled_orders(self, order_ids: Iterable[str]) -> Set[str]:
        """The orders among ``order_ids`` that must not ship: cancelled, or shipped."""

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        """Remembers the order as cancelled; recording it again changes nothing."""

    async def create_all(self, shipments: Sequence[NewShipment]) -> list[Shipment]:
        """Records the shipments; returns the ones recorded (an order that already has a
        shipment keeps it, and its new one is dropped)."""
