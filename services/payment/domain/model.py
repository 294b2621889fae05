"""Payments as the payment service reasons about them."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.common.money import Money


class PaymentStatus(StrEnum):
    CAPTURED = "captured"
    DECLINED = "declined"
    REFUNDED = "refunded"


class MethodFamily(StrEnum):
    """What kind of payment method charged (or was refused for) an order. The provider
    classifies the method the client named; an invalid method has no family."""

    CARD_TOKEN = "card_token"
    CREDIT_CARD = "credit_card"
    DEBIT_CARD = "debit_card"
    PAYPAL = "paypal"


@dataclass(frozen=True, slots=True)
class NewPayment:
    """An attempt to charge an order, before its outcome is recorded."""

    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    method: str


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One charge asked of the provider; retried with the same ``idempotency_key``, the
    provider repeats its first answer and moves no money twice."""

    order_id: str
    amount: Money
    method: str
    idempotency_key: str


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
    method_family: MethodFamily | None = None


@dataclass(frozen=True, slots=True)
class ChargeApproved:
    """The provider took the money; ``provider_reference`` names the charge for refunds."""

    provider_reference: str
    family: MethodFamily | None = None


@dataclass(frozen=True, slots=True)
class ChargeDeclined:
    """The provider refused the charge (insufficient funds, fraud rules, …)."""

    reason: str
    code: str = "CARD_DECLINED"
    family: MethodFamily | None = None


@dataclass(frozen=True, slots=True)
class InvalidPaymentMethod:
    """The payment method names nothing the provider can charge; ``accepted`` describes
    what it can, so the reason tells the client how to fix the order."""

    method: str
    accepted: str = ""

    @property
    def reason(self) -> str:
        if not self.accepted:
            return f"invalid payment method {self.method!r}"
        return f"invalid payment method {self.method!r}: accepted methods are {self.accepted}"

    @property
    def family(self) -> None:
        return None

    @property
    def code(self) -> str:
        return "INVALID_PAYMENT_METHOD"


ChargeResult = ChargeApproved | ChargeDeclined | InvalidPaymentMethod


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """An attempt and the provider's answer to it, to be recorded together."""

    attempt: NewPayment
    result: ChargeResult


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_reference: str
