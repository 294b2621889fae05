"""In-memory stand-ins for the fulfillment service's ports."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.fulfillment.domain.model import NewShipment, Shipment


@dataclass
class FakeShipmentLedger:
    shipments: dict[str, Shipment] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)
    locked: list[str] = field(default_factory=list)

    async def lock_order(self, order_id: str) -> None:
        self.locked.append(order_id)

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        self.locked.extend(sorted(set(order_ids)))

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        return {o for o in order_ids if o in self.cancelled or o in self.shipments}

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        self.cancelled.setdefault(order_id, reason)

    async def by_order(self, order_id: str) -> Shipment | None:
        return self.shipments.get(order_id)

    async def create_all(self, shipments: Sequence[NewShipment]) -> list[Shipment]:
        return [
            self._create(shipment)
            for shipment in shipments
            if shipment.order_id not in self.shipments
        ]

    def _create(self, shipment: NewShipment) -> Shipment:
        tracked = {(s.carrier, s.tracking_number) for s in self.shipments.values()}
        assert (shipment.carrier, shipment.tracking_number) not in tracked
        stored = Shipment(
            shipment.shipment_id,
            shipment.order_id,
            shipment.user_id,
            shipment.carrier,
            shipment.tracking_number,
            shipment.shipped_at,
            shipment.estimated_delivery,
            created_at=shipment.shipped_at,
        )
        self.shipments[shipment.order_id] = stored
        return stored
