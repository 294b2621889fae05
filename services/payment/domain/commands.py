"""What the payment worker is asked to do, translated from the order and inventory events."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.money import Money


@dataclass(frozen=True, slots=True)
class ChargeOrder:
    """Charge a validated order its total, once. ``carried`` is what a capture passes on,
    unread, to stock reservation and shipping: the order's items and shipping address."""

    order_id: str
    user_id: str
    amount: Money
    method: str
    carried: Mapping[str, Any] = field(default_factory=dict)


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
