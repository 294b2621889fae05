"""The payment worker's decisions, against an in-memory ledger and a recording provider."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from services.common.clock import new_id
from services.common.money import Money
from services.payment import handlers
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.domain.commands import CancelPayment, ChargeOrder, RefundOrder
from services.payment.domain.events import PaymentFailed, PaymentProcessed, PaymentRefunded
from services.payment.domain.model import (
    ChargeRequest,
    ChargeResult,
    PaymentStatus,
    RefundResult,
)
from tests.unit.fakes.payment import NOW, FakeLedger

AMOUNT = Money(8999, "USD")


@dataclass
class RecordingProvider:
    """The simulated provider, with a log of every call made to it."""

    charges: list[tuple[str, Money, str, str]] = field(default_factory=list)
    refunds: list[tuple[str, Money, str]] = field(default_factory=list)
    calls: int = 0
    inner: SimulatedPaymentProvider = field(default_factory=SimulatedPaymentProvider)

    async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
        self.calls += 1
        self.charges.extend((c.order_id, c.amount, c.method, c.idempotency_key) for c in charges)
        return await self.inner.charge_all(charges)

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult:
        self.refunds.append((provider_reference, amount, idempotency_key))
        return await self.inner.refund(provider_reference, amount, idempotency_key)


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


def charge(method: str = "tok_visa", order_id: str | None = None) -> ChargeOrder:
    order_id = order_id or str(uuid.uuid4())
    return ChargeOrder(order_id, "user-1", AMOUNT, method, {"items": [order_id]})


async def charge_order(
    command: ChargeOrder, ledger: FakeLedger, provider: RecordingProvider
) -> PaymentProcessed | PaymentFailed | None:
    """The handler given a batch of one, as the consumer calls it for a lone event."""
    events = await handlers.charge_orders([command], ledger, provider, new_id=new_id)
    assert len(events) <= 1
    return events[0] if events else None


async def test_an_approved_charge_is_captured_and_processed(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    command = charge()
    event = await charge_order(command, ledger, provider)
    assert isinstance(event, PaymentProcessed)
    payment = event.payment
    assert (payment.order_id, payment.user_id, payment.amount, payment.method) == (
        command.order_id,
        "user-1",
        AMOUNT,
        "tok_visa",
    )
    assert payment.status is PaymentStatus.CAPTURED
    assert event.carried == command.carried, "the items and address travel on unread"
    assert payment.provider_reference and payment.provider_reference.startswith("ch_")
    assert ledger.payments[command.order_id] == payment
    assert provider.charges == [(command.order_id, AMOUNT, "tok_visa", command.order_id)]


ACCEPTED = (
    ": accepted methods are CREDIT_CARD, DEBIT_CARD, PAYPAL (in any case)"
    " and the test tokens tok_visa, tok_chargeDeclined"
)


@pytest.mark.parametrize(
    ("method", "reason", "code"),
    [
        ("tok_chargeDeclined", "card declined", "CARD_DECLINED"),
        (
            "tok_mastercard",
            f"invalid payment method 'tok_mastercard'{ACCEPTED}",
            "INVALID_PAYMENT_METHOD",
        ),
        ("", f"invalid payment method ''{ACCEPTED}", "INVALID_PAYMENT_METHOD"),
    ],
)
async def test_a_refused_charge_is_recorded_as_declined_and_fails(
    ledger: FakeLedger, provider: RecordingProvider, method: str, reason: str, code: str
) -> None:
    command = charge(method)
    event = await charge_order(command, ledger, provider)
    assert isinstance(event, PaymentFailed)
    assert (event.reason, event.reason_code) == (reason, code)
    assert event.payment.status is PaymentStatus.DECLINED
    assert (event.payment.decline_reason, event.payment.provider_reference) == (reason, None)
    assert ledger.payments[command.order_id] == event.payment


@pytest.mark.parametrize("method", ["tok_visa", "tok_chargeDeclined", "cash"])
async def test_a_redelivered_order_is_not_charged_again(
    ledger: FakeLedger, provider: RecordingProvider, method: str
) -> None:
    command = charge(method)
    first = await charge_order(command, ledger, provider)
    assert first is not None
    assert await charge_order(command, ledger, provider) is None
    assert len(provider.charges) == 1
    assert ledger.payments[command.order_id] == first.payment


async def test_a_charge_retried_after_a_crash_gets_the_first_charge_back(
    provider: RecordingProvider,
) -> None:
    command = charge()
    lost = await charge_order(command, FakeLedger(), provider)
    retried = await charge_order(command, FakeLedger(), provider)
    assert isinstance(lost, PaymentProcessed) and isinstance(retried, PaymentProcessed)
    assert retried.payment.provider_reference == lost.payment.provider_reference
    assert {key for *_, key in provider.charges} == {command.order_id}


async def test_a_capture_recorded_concurrently_first_is_not_published_twice(
    provider: RecordingProvider,
) -> None:
    command = charge()
    ledger = FakeLedger()
    winner = await charge_order(command, ledger, provider)
    assert winner is not None

    class RacingLedger(FakeLedger):
        async def settled_orders(self, order_ids: object) -> set[str]:
            return set()

    racing = RacingLedger(payments=dict(ledger.payments))
    assert await charge_order(command, racing, provider) is None
    assert racing.payments[command.order_id] == winner.payment


async def test_a_captured_payment_is_refunded_once(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    captured = await charge_order(charge(), ledger, provider)
    assert captured is not None
    order_id = captured.payment.order_id
    event = await handlers.refund_order(RefundOrder(order_id, "changed my mind"), ledger, provider)
    assert isinstance(event, PaymentRefunded)
    assert event.reason == "changed my mind"
    refunded = event.payment
    assert (refunded.payment_id, refunded.status, refunded.amount) == (
        captured.payment.payment_id,
        PaymentStatus.REFUNDED,
        AMOUNT,
    )
    assert refunded.refund_reference and refunded.refund_reference.startswith("re_")
    assert provider.refunds == [
        (captured.payment.provider_reference, AMOUNT, captured.payment.payment_id)
    ]
    assert ledger.locked == [order_id]

    again = await handlers.refund_order(RefundOrder(order_id, "out of stock"), ledger, provider)
    assert again is None
    assert len(provider.refunds) == 1


async def test_nothing_is_refunded_without_a_capture(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    never_charged = RefundOrder(str(uuid.uuid4()), "cancelled by the customer")
    assert await handlers.refund_order(never_charged, ledger, provider) is None
    declined = await charge_order(charge("tok_chargeDeclined"), ledger, provider)
    assert declined is not None
    cancel = RefundOrder(declined.payment.order_id, "cancelled by the customer")
    assert await handlers.refund_order(cancel, ledger, provider) is None
    assert provider.refunds == []
    assert ledger.payments[cancel.order_id].status is PaymentStatus.DECLINED


async def test_a_validation_that_arrives_after_the_cancellation_takes_no_money(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    command = charge()
    cancel = CancelPayment(command.order_id, "cancelled by the customer", NOW)
    assert await handlers.cancel_payment(cancel, ledger, provider) is None
    assert await charge_order(command, ledger, provider) is None
    assert provider.charges == []
    assert command.order_id not in ledger.payments
    assert ledger.order_locks == [command.order_id, command.order_id]


async def test_a_cancellation_after_the_capture_refunds_once_however_often_it_comes(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    captured = await charge_order(charge(), ledger, provider)
    assert isinstance(captured, PaymentProcessed)
    order_id = captured.payment.order_id
    cancel = CancelPayment(order_id, "cancelled by the customer", NOW)
    refunded = await handlers.cancel_payment(cancel, ledger, provider)
    assert isinstance(refunded, PaymentRefunded)
    assert await handlers.cancel_payment(cancel, ledger, provider) is None
    # A late or replayed validation of the same order changes nothing either.
    assert await charge_order(charge(order_id=order_id), ledger, provider) is None
    assert len(provider.charges) == 1
    assert len(provider.refunds) == 1
    assert ledger.payments[order_id].status is PaymentStatus.REFUNDED


async def test_a_batch_is_charged_with_one_provider_call_and_leaves_settled_orders_alone(
    ledger: FakeLedger, provider: RecordingProvider
) -> None:
    paid_before = charge()
    assert await charge_order(paid_before, ledger, provider) is not None
    cancelled = charge()
    await handlers.cancel_payment(
        CancelPayment(cancelled.order_id, "cancelled by the customer", NOW), ledger, provider
    )
    approved, declined = charge(), charge("tok_chargeDeclined")
    provider.charges.clear()
    provider.calls = 0
    ledger.order_locks.clear()

    batch = [approved, cancelled, paid_before, declined, approved]
    events = await handlers.charge_orders(batch, ledger, provider, new_id=new_id)

    assert [(type(e), e.payment.order_id) for e in events] == [
        (PaymentProcessed, approved.order_id),
        (PaymentFailed, declined.order_id),
    ]
    assert provider.calls == 1
    assert [c[0] for c in provider.charges] == [approved.order_id, declined.order_id]
    assert ledger.order_locks == sorted({c.order_id for c in batch})
    assert cancelled.order_id not in ledger.payments
    assert ledger.payments[approved.order_id] == events[0].payment


async def test_a_provider_that_answers_fewer_charges_than_asked_fails_the_batch(
    ledger: FakeLedger,
) -> None:
    class ShortProvider(RecordingProvider):
        async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
            return (await super().charge_all(charges))[:-1]

    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        await handlers.charge_orders([charge(), charge()], ledger, ShortProvider(), new_id=new_id)
    assert ledger.payments == {}
