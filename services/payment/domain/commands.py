"""What the payment worker is asked to do, translated from the order and inventory events."""

from dataclasses import dataclass
from datetime import datetime

from services.common.money import Money


@dataclass(frozen=True, slots=True)
class ChargeOrder:
    """Charge a validated order its total, once."""

    order_id: str
    user_id: str
    amount: Money
    method: str


@dataclass(frozen=True, slots=True)
class CancelPayment:
    """The order was cancelled: take no payment for it from now on, and give back one that
    was taken."""

    order_id: str
    reason: str
    cancelled_at: datetime


@dataclass(frozen=True, slots=True)
class RefundOrder:
    """Give back an order's captured payment, if it has one that is not refunded yet."""

    order_id: str
    reason: str
