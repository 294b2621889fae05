"""Facts the payment service publishes (through its outbox) about payments."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.payment.domain.model import Payment


@dataclass(frozen=True, slots=True)
class PaymentProcessed:
    """The order's payment was captured. ``carried`` is the charge command's, passed on."""

    payment: Payment
    carried: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    payment: Payment
    reason: str
    reason_code: str


@dataclass(frozen=True, slots=True)
class PaymentRefunded:
    payment: Payment
    reason: str


Event = PaymentProcessed | PaymentFailed | PaymentRefunded
