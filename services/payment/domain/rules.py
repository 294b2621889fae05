"""When a payment write is a replay of one already made, and when a refund is allowed."""

from services.common.errors import Conflict, FailedPrecondition
from services.common.money import Money
from services.payment.domain.model import Payment, PaymentStatus


def ensure_same_outcome(existing: Payment, status: PaymentStatus, amount: Money) -> None:
    """Each order has one payment outcome. Recording it again (a redelivered event) is
    harmless; recording a different one is a conflict. A refunded payment was captured."""
    recorded = (
        PaymentStatus.CAPTURED if existing.status is PaymentStatus.REFUNDED else existing.status
    )
    if recorded is not status or existing.amount != amount:
        raise Conflict(
            f"order {existing.order_id} already has a {existing.status} payment of"
            f" {existing.amount.format()} {existing.amount.currency}"
        )


def ensure_refundable(payment: Payment) -> None:
    if payment.status is PaymentStatus.DECLINED:
        raise FailedPrecondition(f"the payment of order {payment.order_id} was declined")


def owes_refund(payment: Payment) -> bool:
    """Whether a payment still holds the customer's money: captured and not yet refunded.
    A declined payment took nothing; a refunded one gave it back already."""
    return payment.status is PaymentStatus.CAPTURED
