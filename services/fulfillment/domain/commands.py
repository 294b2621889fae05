"""What the fulfillment worker is asked to do, derived from other services' events."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ShipOrder:
    """Stock for every line is reserved: the order can leave the warehouse."""

    order_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class HoldShipment:
    """The order was cancelled: it must not ship."""

    order_id: str
    reason: str
    cancelled_at: datetime
