"""Facts the fulfillment worker publishes (through its outbox) about orders."""

from dataclasses import dataclass

from services.fulfillment.domain.model import Shipment


@dataclass(frozen=True, slots=True)
class OrderShipped:
    shipment: Shipment
