"""Facts the inventory manager publishes (through its outbox) about orders' stock."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.inventory.domain.reservations import Reservation, Shortage


@dataclass(frozen=True, slots=True)
class OrderFulfilled:
    reservation: Reservation
    shipping_address: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class OutOfStock:
    order_id: str
    user_id: str
    payment_id: str
    amount_minor: int
    currency: str
    shortages: tuple[Shortage, ...]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class StockReleased:
    reservation: Reservation
    reason: str
    released_at: datetime


Event = OrderFulfilled | OutOfStock | StockReleased
