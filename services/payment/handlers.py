"""One function per payment command or query. The commands run in the payment worker,
inside the transaction that also records the triggering event in the inbox and the
returned event in the outbox; the query serves the API."""

import uuid

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.payment.domain.commands import CancelPayment, ChargeOrder, RefundOrder
from services.payment.domain.events import PaymentFailed, PaymentProcessed, PaymentRefunded
from services.payment.domain.model import ChargeApproved, NewPayment, Payment
from services.payment.domain.ports import PaymentLedger, PaymentProvider, PaymentReader
from services.payment.domain.rules import owes_refund


async def charge_order(
    command: ChargeOrder,
    payments: PaymentLedger,
    provider: PaymentProvider,
) -> PaymentProcessed | PaymentFailed | None:
    """Charges the order and records the outcome; None when it was recorded before, or when
    the order has been cancelled (a late, replayed or duplicated validation never takes money
    for a cancelled order).

    The provider is idempotent on the order id, so if a previous attempt charged but
    crashed before its commit, this one gets the same charge back instead of a second.
    """
    await payments.lock_order(command.order_id)
    if await payments.is_cancelled(command.order_id):
        return None
    if await payments.by_order(command.order_id) is not None:
        return None
    result = await provider.charge(
        command.order_id, command.amount, command.method, idempotency_key=command.order_id
    )
    attempt = NewPayment(
        str(uuid.uuid4()), command.order_id, command.user_id, command.amount, command.method
    )
    event: PaymentProcessed | PaymentFailed
    if isinstance(result, ChargeApproved):
        payment = await payments.capture(attempt, result.provider_reference)
        event = PaymentProcessed(payment)
    else:
        payment = await payments.decline(attempt, result.reason)
        event = PaymentFailed(payment, result.reason, result.code)
    if payment.payment_id != attempt.payment_id:
        # A concurrent attempt recorded the same outcome first, and publishes it.
        return None
    return event


async def cancel_payment(
    command: CancelPayment, payments: PaymentLedger, provider: PaymentProvider
) -> PaymentRefunded | None:
    """Records the cancellation, so no later charge happens, and refunds a payment that was
    already captured (once)."""
    await payments.lock_order(command.order_id)
    await payments.record_cancellation(command.order_id, command.reason, command.cancelled_at)
    return await refund_order(RefundOrder(command.order_id, command.reason), payments, provider)


async def refund_order(
    command: RefundOrder, payments: PaymentLedger, provider: PaymentProvider
) -> PaymentRefunded | None:
    """Refunds the order's captured payment in full; None when there is nothing to refund
    (never charged, declined, or already refunded, e.g. cancelled and out of stock both)."""
    payment = await payments.by_order(command.order_id, for_update=True)
    if payment is None or not owes_refund(payment):
        return None
    assert payment.provider_reference is not None, "a captured payment has a reference"
    result = await provider.refund(
        payment.provider_reference, payment.amount, idempotency_key=payment.payment_id
    )
    refunded = await payments.refund(command.order_id, result.refund_reference)
    return PaymentRefunded(refunded, command.reason)


async def get_payment(order_id: str, principal: Principal, payments: PaymentReader) -> Payment:
    if not order_id:
        raise InvalidArgument("order_id is required", field="order_id")
    payment = await payments.by_order(order_id)
    if payment is None:
        raise NotFound("payment not found")
    principal.ensure_owner(payment.user_id, "payment")
    return payment
