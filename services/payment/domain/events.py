"""Facts the payment service publishes (through its outbox) about payments."""

from dataclasses import dataclass

from services.payment.domain.model import Payment


@dataclass(frozen=True, slots=True)
class PaymentProcessed:
    payment: Payment


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
