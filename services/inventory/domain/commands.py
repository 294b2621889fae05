"""What the inventory manager is asked to do, derived from other services' events."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.inventory.domain.reservations import StockLine


@dataclass(frozen=True, slots=True)
class ReserveStock:
    """A paid order wants its lines taken out of stock. The payment is carried along so an
    out-of-stock answer names what to refund; the address is carried on for shipping."""

    order_id: str
    user_id: str
    payment_id: str
    amount_minor: int
    currency: str
    lines: tuple[StockLine, ...]
    shipping_address: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ReleaseStock:
    """An order was cancelled: whatever it holds goes back, and it must never reserve."""

    order_id: str
    user_id: str
    reason: str
    cancelled_at: datetime
