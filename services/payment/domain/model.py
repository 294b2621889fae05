"""Payments as the payment service reasons about them."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.common.money import Money


class PaymentStatus(StrEnum):
    CAPTURED = "captured"
    DECLINED = "declined"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class NewPayment:
    """An attempt to charge an order, before its outcome is recorded."""

    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    method: str


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    order_id: str
    user_id: str
    status: PaymentStatus
    amount: Money
    method: str
    provider_reference: str | None
    decline_reason: str | None
    refund_reference: str | None
    created_at: datetime
    refunded_at: datetime | None
