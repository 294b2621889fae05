"""Inventory events become records of the checked-in Avro schemas, and the events the
inventory manager consumes become its commands."""

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from services.inventory.adapters.outbox import event_record
from services.inventory.consumers import InventoryManager, release_command, reserve_command
from services.inventory.domain.commands import ReleaseStock, ReserveStock
from services.inventory.domain.events import OrderFulfilled, OutOfStock, StockReleased
from services.inventory.domain.reservations import (
    Reservation,
    ReservationStatus,
    Shortage,
    StockLine,
)
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.registry import TOPIC_BY_EVENT
from tests.unit.test_codec import SAMPLES

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
LINES = (StockLine("kb-mech-01", 2, 8999), StockLine("mouse-wl-02", 1, 2999))
ITEMS = [
    {"product_id": "kb-mech-01", "quantity": 2, "unit_price_minor": 8999},
    {"product_id": "mouse-wl-02", "quantity": 1, "unit_price_minor": 2999},
]
ADDRESS = {
    "street": "1 Main St",
    "city": "Springfield",
    "state": "IL",
    "zip": "62701",
    "country": "US",
}
RESERVATION = Reservation(
    reservation_id="res-1",
    order_id="order-1",
    user_id="user-1",
    status=ReservationStatus.RESERVED,
    lines=LINES,
    shortages=(),
    created_at=NOW,
    updated_at=NOW,
)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory()


def roundtrip(codec: EventCodec, name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    decoded = codec.decode(codec.encode(name, record))
    assert decoded.name == name
    return decoded.record


def test_a_reservation_fulfils_the_order_with_its_lines_and_address(codec: EventCodec) -> None:
    found = event_record(OrderFulfilled(RESERVATION, ADDRESS))
    order_id, name, record = found.key, found.name, found.record
    assert (order_id, name, TOPIC_BY_EVENT[name]) == (
        "order-1",
        "OrderFulfilled",
        "ordermesh.inventory.v1",
    )
    assert roundtrip(codec, name, record) == {
        "order_id": "order-1",
        "user_id": "user-1",
        "reservation_id": "res-1",
        "items": ITEMS,
        "shipping_address": ADDRESS,
        "reserved_at": NOW,
    }


def test_out_of_stock_names_the_payment_to_refund_and_the_shortages(codec: EventCodec) -> None:
    event = OutOfStock(
        order_id="order-1",
        user_id="user-1",
        payment_id="pay-1",
        amount_minor=20997,
        currency="USD",
        shortages=(Shortage("kb-mech-01", 2, 1),),
        occurred_at=NOW,
    )
    found = event_record(event)
    order_id, name, record = found.key, found.name, found.record
    assert (order_id, name) == ("order-1", "OutOfStock")
    assert roundtrip(codec, name, record) == {
        "order_id": "order-1",
        "user_id": "user-1",
        "payment_id": "pay-1",
        "amount_minor": 20997,
        "currency": "USD",
        "shortages": [{"product_id": "kb-mech-01", "requested": 2, "available": 1}],
        "occurred_at": NOW,
    }


def test_a_release_names_the_reservation_and_its_lines(codec: EventCodec) -> None:
    released = replace(RESERVATION, status=ReservationStatus.RELEASED, updated_at=LATER)
    found = event_record(StockReleased(released, "changed my mind", LATER))
    order_id, name, record = found.key, found.name, found.record
    assert (order_id, name) == ("order-1", "StockReleased")
    assert roundtrip(codec, name, record) == {
        "order_id": "order-1",
        "user_id": "user-1",
        "reservation_id": "res-1",
        "items": ITEMS,
        "reason": "changed my mind",
        "released_at": LATER,
    }


def test_a_payment_becomes_a_reservation_request() -> None:
    record = {**SAMPLES["PaymentProcessed"], "items": ITEMS, "shipping_address": ADDRESS}
    assert reserve_command(record) == ReserveStock(
        order_id=record["order_id"],
        user_id=record["user_id"],
        payment_id=record["payment_id"],
        amount_minor=record["amount_minor"],
        currency=record["currency"],
        lines=LINES,
        shipping_address=ADDRESS,
    )


def test_a_cancellation_becomes_a_release_request() -> None:
    record = SAMPLES["OrderCancelled"]
    assert release_command(record) == ReleaseStock(
        order_id=record["order_id"],
        user_id=record["user_id"],
        reason=record["reason"],
        cancelled_at=record["cancelled_at"],
    )


def test_the_manager_handles_payments_and_cancellations(codec: EventCodec) -> None:
    assert InventoryManager(codec).handlers().events == {"PaymentProcessed", "OrderCancelled"}
