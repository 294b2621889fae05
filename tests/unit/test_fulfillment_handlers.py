"""The fulfillment worker's decisions and shipping rules, against an in-memory ledger that
keeps the table's promises (one shipment per order, unique tracking numbers)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from services.fulfillment import handlers
from services.fulfillment.adapters.outbox import event_record
from services.fulfillment.consumers import FulfillmentWorker, hold_command, ship_command
from services.fulfillment.domain.commands import HoldShipment, ShipOrder
from services.fulfillment.domain.events import OrderShipped
from services.fulfillment.domain.model import Shipment
from services.fulfillment.domain.shipping import (
    CARRIERS,
    Carrier,
    choose_carrier,
    plan_shipment,
    tracking_number,
)
from services.platform.messaging.codec import EventCodec
from tests.unit.fakes.fulfillment import FakeShipmentLedger
from tests.unit.test_codec import SAMPLES

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def ids() -> Callable[[], str]:
    numbers = count(1)
    return lambda: f"shipment-{next(numbers)}"


def entropy() -> int:
    return 123456789012345678901234567890


async def ship(ledger: FakeShipmentLedger, order_id: str) -> OrderShipped | None:
    """The handler given a batch of one, as the consumer calls it for a lone event."""
    events = await handlers.ship_orders(
        [ShipOrder(order_id, "user-1")], ledger, now=NOW, new_id=ids(), entropy=entropy
    )
    assert len(events) <= 1
    return events[0] if events else None


async def test_a_fulfilled_order_ships_with_its_carrier() -> None:
    ledger = FakeShipmentLedger()
    event = await ship(ledger, "order-1")
    assert event is not None
    shipment = event.shipment
    carrier = choose_carrier("order-1")
    assert (shipment.shipment_id, shipment.order_id, shipment.user_id) == (
        "shipment-1",
        "order-1",
        "user-1",
    )
    assert shipment.carrier == carrier.name
    assert shipment.tracking_number == tracking_number(carrier, entropy())
    assert shipment.shipped_at == NOW
    assert shipment.estimated_delivery == NOW + timedelta(days=carrier.transit_days)
    assert ledger.shipments == {"order-1": shipment}
    assert ledger.locked == ["order-1"]


async def test_an_order_ships_once() -> None:
    ledger = FakeShipmentLedger()
    first = await ship(ledger, "order-1")
    assert first is not None
    assert await ship(ledger, "order-1") is None
    assert ledger.shipments == {"order-1": first.shipment}


async def test_a_cancellation_before_fulfilment_keeps_the_order_home() -> None:
    ledger = FakeShipmentLedger()
    hold = HoldShipment("order-1", "changed my mind", NOW)
    assert await handlers.hold_shipment(hold, ledger) is None
    assert await ship(ledger, "order-1") is None
    assert ledger.shipments == {}
    assert ledger.cancelled == {"order-1": "changed my mind"}
    assert ledger.locked == ["order-1", "order-1"]


async def test_a_batch_ships_each_open_order_once_in_order() -> None:
    ledger = FakeShipmentLedger()
    await handlers.hold_shipment(HoldShipment("order-c", "changed my mind", NOW), ledger)
    assert await ship(ledger, "order-s") is not None
    entropies = iter(range(1, 100))
    ledger.locked.clear()
    batch = [
        ShipOrder(o, "user-1") for o in ("order-b", "order-c", "order-s", "order-a", "order-b")
    ]
    events = await handlers.ship_orders(
        batch, ledger, now=NOW, new_id=ids(), entropy=lambda: next(entropies)
    )
    assert [e.shipment.order_id for e in events] == ["order-b", "order-a"]
    assert [e.shipment.shipment_id for e in events] == ["shipment-1", "shipment-2"]
    assert ledger.locked == ["order-a", "order-b", "order-c", "order-s"]
    assert set(ledger.shipments) == {"order-s", "order-b", "order-a"}


async def test_a_cancellation_after_shipping_reports_the_shipment() -> None:
    ledger = FakeShipmentLedger()
    shipped = await ship(ledger, "order-1")
    assert shipped is not None
    hold = HoldShipment("order-1", "too late", LATER)
    assert await handlers.hold_shipment(hold, ledger) == shipped.shipment


def test_the_carrier_is_a_stable_choice_spread_over_every_carrier() -> None:
    chosen = {choose_carrier(f"order-{n}") for n in range(200)}
    assert chosen == set(CARRIERS)
    assert all(choose_carrier("order-7") == choose_carrier("order-7") for _ in range(3))


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.name)
def test_tracking_numbers_carry_the_prefix_and_a_fixed_number_of_digits(carrier: Carrier) -> None:
    small = tracking_number(carrier, 42)
    large = tracking_number(carrier, 2**128 - 1)
    for number in (small, large):
        assert number.startswith(carrier.tracking_prefix)
        digits = number.removeprefix(carrier.tracking_prefix)
        assert digits.isdigit()
        assert len(digits) == carrier.tracking_digits
    assert small.endswith("42")
    assert small != large


def test_a_planned_shipment_arrives_after_it_leaves() -> None:
    planned = plan_shipment(
        order_id="order-9", user_id="user-9", shipment_id="s", entropy=7, shipped_at=NOW
    )
    assert planned.estimated_delivery > planned.shipped_at == NOW


def test_the_shipment_becomes_an_order_shipped_record() -> None:
    codec = EventCodec.from_directory()
    shipment = Shipment("s-1", "order-1", "user-1", "UPS", "1Z42", NOW, LATER, NOW)
    found = event_record(OrderShipped(shipment))
    assert (found.name, found.key, found.occurred_at) == ("OrderShipped", "order-1", NOW)
    assert codec.decode(codec.encode("OrderShipped", found.record)).record == {
        "order_id": "order-1",
        "user_id": "user-1",
        "shipment_id": "s-1",
        "carrier": "UPS",
        "tracking_number": "1Z42",
        "estimated_delivery": LATER,
        "shipped_at": NOW,
    }


def test_consumed_events_become_commands() -> None:
    fulfilled = SAMPLES["OrderReadyToShip"]
    assert ship_command(fulfilled) == ShipOrder(fulfilled["order_id"], fulfilled["user_id"])
    cancelled = SAMPLES["OrderCancelled"]
    assert hold_command(cancelled) == HoldShipment(
        cancelled["order_id"], cancelled["reason"], cancelled["cancelled_at"]
    )
    handled = FulfillmentWorker(EventCodec.from_directory()).handlers()
    assert handled.events == {"OrderReadyToShip", "OrderCancelled"}
