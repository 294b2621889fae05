"""Shipments as the fulfillment service reasons about them."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class NewShipment:
    shipment_id: str
    order_id: str
    user_id: str
    carrier: str
    tracking_number: str
    shipped_at: datetime
    estimated_delivery: datetime


@dataclass(frozen=True, slots=True)
class Shipment:
    shipment_id: str
    order_id: str
    user_id: str
    carrier: str
    tracking_number: str
    shipped_at: datetime
    estimated_delivery: datetime
    created_at: datetime
