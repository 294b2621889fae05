"""The payment processor's handlers against real Postgres, fed synthetic events.

Each scenario runs the handlers as the consumer does, one transaction per delivery (here
savepoints of one outer transaction that is rolled back at the end, so the synthetic
payments never reach the outbox relay and set the running stack's other workers going).
The concurrent-refund scenario needs two real committed transactions and commits them.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.money import Money
from services.payment.adapters.outbox import SOURCE
from services.payment.adapters.repository import PaymentRepository
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.consumers import PaymentProcessor
from services.payment.domain.model import (
    ChargeApproved,
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    MethodFamily,
    NewPayment,
    Payment,
    PaymentStatus,
    RefundResult,
)
from services.platform.db import Connection, Pool
from services.platform.messaging import registry
from services.platform.messaging.codec import (
    EventCodec,
    EventEnvelope,
    cloudevent_headers,
    event_type,
)
from services.platform.settings import Settings

pytestmark = pytest.mark.integration

TOTAL = Money(17998, "USD")
# Not in the catalog: nothing downstream could ever reserve stock for these orders.
PRODUCT = "it-payment-widget"


@dataclass
class CountingProvider:
    """The simulated provider, counting the money it moves."""

    charges: list[str] = field(default_factory=list)
    refunds: list[str] = field(default_factory=list)
    inner: SimulatedPaymentProvider = field(default_factory=SimulatedPaymentProvider)

    async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
        self.charges.extend(charge.idempotency_key for charge in charges)
        return await self.inner.charge_all(charges)

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult:
        self.refunds.append(idempotency_key)
        return await self.inner.refund(provider_reference, amount, idempotency_key)


@dataclass(frozen=True)
class Published:
    topic: str
    key: str
    name: str
    headers: dict[str, str]
    record: dict[str, Any]


@dataclass
class Scenario:
    """One order's deliveries to the processor, on one connection."""

    conn: Connection
    codec: EventCodec
    provider: CountingProvider
    processor: PaymentProcessor
    order_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: f"user-{uuid.uuid4()}")

    def envelope(self, name: str, record: dict[str, Any]) -> EventEnvelope:
        headers = cloudevent_headers(
            event_id=uuid.uuid4(),
            event_name=name,
            source="/ordermesh/tests",
            time=datetime.now(UTC),
            subject=self.order_id,
        )
        return self.codec.open_envelope(headers, self.codec.encode(name, record))

    def order_validated(self, payment_method: str = "tok_visa") -> EventEnvelope:
        return self.envelope(
            "OrderValidated",
            {
                "order_id": self.order_id,
                "user_id": self.user_id,
                "items": [{"product_id": PRODUCT, "quantity": 2, "unit_price_minor": 8999}],
                "total_minor": TOTAL.amount_minor,
                "currency": TOTAL.currency,
                "payment_method": payment_method,
                "shipping_address": {
                    "street": "1 Main St",
                    "city": "Springfield",
                    "state": "IL",
                    "zip": "62701",
                    "country": "US",
                },
                "validated_at": datetime.now(UTC),
                "version": 2,
            },
        )

    def order_cancelled(self, reason: str = "changed my mind") -> EventEnvelope:
        return self.envelope(
            "OrderCancelled",
            {
                "order_id": self.order_id,
                "user_id": self.user_id,
                "reason": reason,
                "previous_status": "PAID",
                "cancelled_by": self.user_id,
                "cancelled_at": datetime.now(UTC),
                "version": 4,
            },
        )

    def out_of_stock(self, payment_id: str) -> EventEnvelope:
        return self.envelope(
            "OutOfStock",
            {
                "order_id": self.order_id,
                "user_id": self.user_id,
                "payment_id": payment_id,
                "amount_minor": TOTAL.amount_minor,
                "currency": TOTAL.currency,
                "shortages": [{"product_id": PRODUCT, "requested": 2, "available": 0}],
                "occurred_at": datetime.now(UTC),
            },
        )

    async def deliver(self, envelope: EventEnvelope) -> None:
        """Runs the envelope's handler in a transaction of its own, as the consumer does."""
        handler = self.processor.handlers().for_event(envelope.name)
        async with self.conn.transaction():
            await handler(envelope, self.conn)

    async def payment(self) -> Payment | None:
        return await PaymentRepository(self.conn).by_order(self.order_id)

    async def published(self) -> list[Published]:
        cursor = await self.conn.execute(
            "SELECT topic, message_key, headers, payload FROM payment.outbox"
            " WHERE message_key = %s ORDER BY id",
            (self.order_id,),
        )
        events = []
        for row in await cursor.fetchall():
            decoded = self.codec.decode(row["payload"])
            events.append(
                Published(
                    row["topic"], row["message_key"], decoded.name, row["headers"], decoded.record
                )
            )
        return events


@pytest.fixture(scope="module")
def codec(settings: Settings) -> EventCodec:
    return EventCodec.from_directory(settings.schemas_dir)


@pytest.fixture
async def scenario(pool: Pool, codec: EventCodec) -> AsyncIterator[Scenario]:
    provider = CountingProvider()
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        yield Scenario(conn, codec, provider, PaymentProcessor(codec, provider))


async def test_an_approved_order_is_captured_and_announced(scenario: Scenario) -> None:
    validated = scenario.order_validated("tok_visa")
    await scenario.deliver(validated)

    payment = await scenario.payment()
    assert payment is not None
    assert (payment.status, payment.amount, payment.method, payment.user_id) == (
        PaymentStatus.CAPTURED,
        TOTAL,
        "tok_visa",
        scenario.user_id,
    )
    assert payment.provider_reference and payment.provider_reference.startswith("ch_sim_")
    assert payment.method_family is MethodFamily.CARD_TOKEN
    [event] = await scenario.published()
    assert (event.topic, event.key, event.name) == (
        registry.PAYMENTS,
        scenario.order_id,
        "PaymentProcessed",
    )
    assert (event.headers["ce_type"], event.headers["ce_source"]) == (
        event_type("PaymentProcessed"),
        SOURCE,
    )
    assert event.record["payment_id"] == payment.payment_id
    assert (event.record["amount_minor"], event.record["currency"]) == (17998, "USD")
    assert event.record["payment_method"] == "tok_visa"
    assert event.record["items"] == validated.record["items"]
    assert event.record["shipping_address"] == validated.record["shipping_address"]
    assert scenario.provider.charges == [scenario.order_id]


@pytest.mark.parametrize(
    ("method", "reason", "code", "family"),
    [
        ("tok_chargeDeclined", "card declined", "CARD_DECLINED", MethodFamily.CARD_TOKEN),
        (
            "tok_bogus",
            "invalid payment method 'tok_bogus': accepted methods are CREDIT_CARD, DEBIT_CARD,"
            " PAYPAL (in any case) and the test tokens tok_visa, tok_chargeDeclined",
            "INVALID_PAYMENT_METHOD",
            None,
        ),
    ],
)
async def test_a_refused_charge_is_declined_and_announced(
    scenario: Scenario, method: str, reason: str, code: str, family: MethodFamily | None
) -> None:
    await scenario.deliver(scenario.order_validated(method))

    payment = await scenario.payment()
    assert payment is not None
    assert (payment.status, payment.decline_reason, payment.provider_reference) == (
        PaymentStatus.DECLINED,
        reason,
        None,
    )
    assert payment.method_family is family
    [event] = await scenario.published()
    assert (event.topic, event.name) == (registry.PAYMENTS, "PaymentFailed")
    assert (event.record["reason"], event.record["reason_code"]) == (reason, code)
    assert (event.record["payment_id"], event.record["amount_minor"]) == (payment.payment_id, 17998)


async def test_a_redelivered_order_is_charged_and_announced_once(scenario: Scenario) -> None:
    validated = scenario.order_validated()
    await scenario.deliver(validated)
    first = await scenario.payment()
    await scenario.deliver(validated)
    await scenario.deliver(scenario.order_validated())

    assert await scenario.payment() == first
    assert [event.name for event in await scenario.published()] == ["PaymentProcessed"]
    assert scenario.provider.charges == [scenario.order_id]


async def test_a_cancelled_paid_order_is_refunded_once(scenario: Scenario) -> None:
    await scenario.deliver(scenario.order_validated())
    cancelled = scenario.order_cancelled("changed my mind")
    await scenario.deliver(cancelled)
    await scenario.deliver(cancelled)
    await scenario.deliver(scenario.order_cancelled("again"))

    payment = await scenario.payment()
    assert payment is not None
    assert payment.status is PaymentStatus.REFUNDED and payment.refunded_at is not None
    processed, refunded = await scenario.published()
    assert (processed.name, refunded.name) == ("PaymentProcessed", "PaymentRefunded")
    assert refunded.record["payment_id"] == payment.payment_id
    assert refunded.record["refund_id"] == payment.refund_reference
    assert (refunded.record["amount_minor"], refunded.record["reason"]) == (
        17998,
        "changed my mind",
    )
    assert scenario.provider.refunds == [payment.payment_id]


async def test_an_out_of_stock_order_is_refunded_once(scenario: Scenario) -> None:
    await scenario.deliver(scenario.order_validated())
    captured = await scenario.payment()
    assert captured is not None
    await scenario.deliver(scenario.out_of_stock(captured.payment_id))
    await scenario.deliver(scenario.out_of_stock(captured.payment_id))
    await scenario.deliver(scenario.order_cancelled())

    payment = await scenario.payment()
    assert payment is not None and payment.status is PaymentStatus.REFUNDED
    names = [(event.name, event.record.get("reason")) for event in await scenario.published()]
    assert names == [("PaymentProcessed", None), ("PaymentRefunded", "out of stock")]
    assert scenario.provider.refunds == [captured.payment_id]


async def test_cancelling_an_order_that_was_never_charged_does_nothing(
    scenario: Scenario,
) -> None:
    await scenario.deliver(scenario.order_cancelled())
    assert await scenario.payment() is None
    assert await scenario.published() == []
    assert scenario.provider.refunds == []


async def test_cancelling_a_declined_order_refunds_nothing(scenario: Scenario) -> None:
    await scenario.deliver(scenario.order_validated("tok_chargeDeclined"))
    await scenario.deliver(scenario.order_cancelled())
    payment = await scenario.payment()
    assert payment is not None and payment.status is PaymentStatus.DECLINED
    assert [event.name for event in await scenario.published()] == ["PaymentFailed"]
    assert scenario.provider.refunds == []


async def test_a_cancellation_and_a_shortage_at_once_refund_once(
    pool: Pool, codec: EventCodec
) -> None:
    provider = CountingProvider()
    processor = PaymentProcessor(codec, provider)
    async with pool.connection() as conn:
        order = Scenario(conn, codec, provider, processor)
        async with conn.transaction():
            attempt = NewPayment(
                str(uuid.uuid4()), order.order_id, order.user_id, TOTAL, "tok_visa"
            )
            [captured] = await PaymentRepository(conn).record(
                [ChargeOutcome(attempt, ChargeApproved("ch_concurrent"))]
            )
        deliveries = [order.out_of_stock(captured.payment_id), order.order_cancelled()]

    async def deliver_alone(envelope: EventEnvelope) -> None:
        async with pool.connection() as conn:
            await Scenario(conn, codec, provider, processor, order.order_id).deliver(envelope)

    await asyncio.gather(*(deliver_alone(envelope) for envelope in deliveries))

    async with pool.connection() as conn:
        after = Scenario(conn, codec, provider, processor, order.order_id)
        payment = await after.payment()
        published = await after.published()
    assert payment is not None and payment.status is PaymentStatus.REFUNDED
    assert [event.name for event in published] == ["PaymentRefunded"]
    assert provider.refunds == [captured.payment_id]


async def test_a_validation_delivered_after_the_cancellation_takes_no_money(
    scenario: Scenario,
) -> None:
    await scenario.deliver(scenario.order_cancelled("cancelled while pending"))
    await scenario.deliver(scenario.order_validated("tok_visa"))
    assert scenario.provider.charges == []
    assert await scenario.payment() is None
    assert await scenario.published() == []
    cursor = await scenario.conn.execute(
        "SELECT reason FROM payment.cancelled_orders WHERE order_id = %s", (scenario.order_id,)
    )
    assert await cursor.fetchone() == {"reason": "cancelled while pending"}


async def test_a_cancellation_after_the_capture_refunds_once_and_a_late_validation_is_ignored(
    scenario: Scenario,
) -> None:
    await scenario.deliver(scenario.order_validated("tok_visa"))
    await scenario.deliver(scenario.order_cancelled())
    await scenario.deliver(scenario.order_cancelled())
    await scenario.deliver(scenario.order_validated("tok_visa"))
    assert len(scenario.provider.charges) == 1
    assert len(scenario.provider.refunds) == 1
    payment = await scenario.payment()
    assert payment is not None and payment.status is PaymentStatus.REFUNDED
    assert [event.name for event in await scenario.published()] == [
        "PaymentProcessed",
        "PaymentRefunded",
    ]
