"""One function per payment command or query. The commands run in the payment worker,
inside the transaction that also records the triggering event in the inbox and the
returned event in the outbox; the query serves the API."""

from collections.abc import Callable, Sequence

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.payment.domain.commands import CancelPayment, ChargeOrder, RefundOrder
from services.payment.domain.events import PaymentFailed, PaymentProcessed, PaymentRefunded
from services.payment.domain.model import (
    ChargeApproved,
    ChargeOutcome,
    ChargeRequest,
    NewPayment,
    Payment,
)
from services.payment.domain.ports import PaymentLedger, PaymentProvider, PaymentReader
from services.payment.domain.rules import owes_refund


async def charge_orders(
    commands: Sequence[ChargeOrder],
    payments: PaymentLedger,
    provider: PaymentProvider,
    *,
    new_id: Callable[[], str],
) -> list[PaymentProcessed | PaymentFailed]:
    """Charges each order once and records the outcomes; returns the events to publish, in
    the commands' order. An order that is cancelled (a late, replayed or duplicated
    validation never takes money for a cancelled order), already has an outcome, or comes a
    second time in the batch is left out.

    The orders' locks come first (sorted, so batches and cancellations never wait
    crosswise), then which of them are settled, then one provider call for the rest and
    one write of every outcome. The provider is idempotent on the order id, so if a previous
    attempt charged but crashed before its commit, this one gets the same charge back
    instead of a second.
    """
    order_ids = [command.order_id for command in commands]
    await payments.lock_orders(order_ids)
    settled = set(await payments.settled_orders(order_ids))
    due: list[ChargeOrder] = []
    for command in commands:
        if command.order_id not in settled:
            settled.add(command.order_id)
            due.append(command)
    if not due:
        return []
    results = await provider.charge_all(
        [ChargeRequest(c.order_id, c.amount, c.method, idempotency_key=c.order_id) for c in due]
    )
    if len(results) != len(due):
        raise RuntimeError(f"the provider answered {len(results)} of {len(due)} charges")
    outcomes = [
        ChargeOutcome(NewPayment(new_id(), c.order_id, c.user_id, c.amount, c.method), result)
        for c, result in zip(due, results, strict=True)
    ]
    recorded = await payments.record(outcomes)
    events: list[PaymentProcessed | PaymentFailed] = []
    for command, outcome, payment in zip(due, outcomes, recorded, strict=True):
        if payment.payment_id != outcome.attempt.payment_id:
            continue  # a concurrent attempt recorded the same outcome first, and publishes it
        result = outcome.result
        if isinstance(result, ChargeApproved):
            events.append(PaymentProcessed(payment, command.carried))
        else:
            events.append(PaymentFailed(payment, result.reason, result.code))
    return events


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
