"""Payment domain events become records of the checked-in Avro schemas."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.money import Money
from services.payment.adapters.outbox import event_record
from services.payment.domain.events import PaymentFailed, PaymentProcessed, PaymentRefunded
from services.payment.domain.model import Payment, PaymentStatus
from services.platform.messaging.codec import EventCodec

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
ORDER_VALIDATED: dict[str, Any] = {
    "order_id": "order-1",
    "user_id": "user-1",
    "items": [{"product_id": "kb-mech-01", "quantity": 2, "unit_price_minor": 8999}],
    "total_minor": 17998,
    "currency": "USD",
    "payment_method": "tok_visa",
    "shipping_address": {
        "street": "1 Main St",
        "city": "Springfield",
        "state": "IL",
        "zip": "62701",
        "country": "US",
    },
    "validated_at": NOW,
    "version": 2,
}


def payment(status: PaymentStatus, **overrides: Any) -> Payment:
    fields: dict[str, Any] = {
        "payment_id": "pay-1",
        "order_id": "order-1",
        "user_id": "user-1",
        "status": status,
        "amount": Money(17998, "USD"),
        "method": "tok_visa",
        "provider_reference": "ch_1",
        "decline_reason": None,
        "refund_reference": None,
        "created_at": NOW,
        "refunded_at": None,
    }
    fields.update(overrides)
    return Payment(**fields)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory()


def roundtrip(codec: EventCodec, name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    decoded = codec.decode(codec.encode(name, record))
    assert decoded.name == name
    return decoded.record


def test_a_capture_carries_the_order_lines_and_address_on(codec: EventCodec) -> None:
    carried = {key: ORDER_VALIDATED[key] for key in ("items", "shipping_address")}
    found = event_record(PaymentProcessed(payment(PaymentStatus.CAPTURED), carried))
    name, record = found.name, found.record
    assert (found.key, found.occurred_at) == ("order-1", NOW)
    assert roundtrip(codec, name, record) == {
        "order_id": "order-1",
        "user_id": "user-1",
        "payment_id": "pay-1",
        "amount_minor": 17998,
        "currency": "USD",
        "payment_method": "tok_visa",
        "items": ORDER_VALIDATED["items"],
        "shipping_address": ORDER_VALIDATED["shipping_address"],
        "processed_at": NOW,
    }


def test_a_decline_says_why(codec: EventCodec) -> None:
    declined = payment(
        PaymentStatus.DECLINED, provider_reference=None, decline_reason="card declined"
    )
    found = event_record(PaymentFailed(declined, "card declined", "CARD_DECLINED"))
    name, record = found.name, found.record
    decoded = roundtrip(codec, name, record)
    assert name == "PaymentFailed"
    assert (decoded["payment_id"], decoded["reason"], decoded["reason_code"]) == (
        "pay-1",
        "card declined",
        "CARD_DECLINED",
    )
    assert (decoded["amount_minor"], decoded["failed_at"]) == (17998, NOW)


def test_a_refund_names_the_payment_and_the_refund(codec: EventCodec) -> None:
    refunded = payment(PaymentStatus.REFUNDED, refund_reference="re_1", refunded_at=LATER)
    found = event_record(PaymentRefunded(refunded, "changed my mind"))
    name, record = found.name, found.record
    assert (found.key, found.occurred_at) == ("order-1", LATER)
    decoded = roundtrip(codec, name, record)
    assert name == "PaymentRefunded"
    assert (decoded["payment_id"], decoded["refund_id"], decoded["reason"]) == (
        "pay-1",
        "re_1",
        "changed my mind",
    )
    assert (decoded["amount_minor"], decoded["currency"], decoded["refunded_at"]) == (
        17998,
        "USD",
        LATER,
    )
