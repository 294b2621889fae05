"""The fulfillment worker's handlers against real Postgres, each event applied as the
consumer applies it: inbox row and handler in one transaction, on its own connection."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.fulfillment.adapters.repository import PooledShipmentReader
from services.fulfillment.consumers import FulfillmentWorker
from services.fulfillment.domain.model import Shipment
from services.fulfillment.domain.shipping import CARRIERS, choose_carrier
from services.platform.db import Pool
from services.platform.messaging.codec import EventCodec, EventEnvelope
from services.platform.messaging.registry import FULFILLMENT_GROUP
from services.platform.settings import Settings
from tests.integration.test_inventory_manager import apply, envelope, open_wide_pool, outbox
from tests.unit.test_codec import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(settings: Settings, migrated: None) -> AsyncIterator[Pool]:
    pool = await open_wide_pool(settings)
    yield pool
    await pool.close()


class Fulfillment:
    """The worker's handlers applied through the inbox, and what they left behind."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.codec = EventCodec.from_directory()
        self.handlers = FulfillmentWorker(self.codec).handlers()

    def fulfilled(self, order_id: str) -> EventEnvelope:
        record = {**SAMPLES["OrderReadyToShip"], "order_id": order_id, "user_id": "user-itest"}
        return envelope(self.codec, "OrderReadyToShip", record)

    def cancelled(self, order_id: str) -> EventEnvelope:
        record = {**SAMPLES["OrderCancelled"], "order_id": order_id, "user_id": "user-itest"}
        return envelope(self.codec, "OrderCancelled", record)

    async def deliver(self, event: EventEnvelope) -> bool:
        handler = self.handlers.for_event(event.name)
        return await apply(self.pool, "fulfillment", FULFILLMENT_GROUP, handler, event)

    async def shipment(self, order_id: str) -> Shipment | None:
        return await PooledShipmentReader(self.pool).by_order(order_id)

    async def published(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        return await outbox(self.pool, "fulfillment", self.codec, order_id)


@pytest.fixture
def fulfillment(db: Pool) -> Fulfillment:
    return Fulfillment(db)


def new_order_id() -> str:
    return str(uuid.uuid4())


async def test_a_fulfilled_order_ships_and_says_so(fulfillment: Fulfillment) -> None:
    order_id = new_order_id()
    assert await fulfillment.deliver(fulfillment.fulfilled(order_id))
    shipment = await fulfillment.shipment(order_id)
    assert shipment is not None
    carrier = choose_carrier(order_id)
    assert (shipment.user_id, shipment.carrier) == ("user-itest", carrier.name)
    assert shipment.tracking_number.startswith(carrier.tracking_prefix)
    assert shipment.estimated_delivery > shipment.shipped_at
    [(name, record)] = await fulfillment.published(order_id)
    assert name == "OrderShipped"
    assert record == {
        "order_id": order_id,
        "user_id": "user-itest",
        "shipment_id": shipment.shipment_id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "estimated_delivery": shipment.estimated_delivery,
        "shipped_at": shipment.shipped_at,
    }


async def test_an_order_ships_once_however_often_it_is_fulfilled(
    fulfillment: Fulfillment,
) -> None:
    order_id = new_order_id()
    first = fulfillment.fulfilled(order_id)
    assert await fulfillment.deliver(first)
    shipment = await fulfillment.shipment(order_id)
    assert not await fulfillment.deliver(first), "the inbox absorbs an exact redelivery"
    assert await fulfillment.deliver(fulfillment.fulfilled(order_id))
    assert await fulfillment.shipment(order_id) == shipment
    assert [name for name, _ in await fulfillment.published(order_id)] == ["OrderShipped"]


async def test_tracking_numbers_differ_between_orders(fulfillment: Fulfillment) -> None:
    orders = [new_order_id() for _ in range(12)]
    await asyncio.gather(*(fulfillment.deliver(fulfillment.fulfilled(o)) for o in orders))
    shipments = [await fulfillment.shipment(o) for o in orders]
    numbers = {(s.carrier, s.tracking_number) for s in shipments if s is not None}
    assert len(numbers) == len(orders)
    assert {carrier for carrier, _ in numbers} <= {c.name for c in CARRIERS}


async def test_a_cancellation_before_fulfilment_keeps_the_order_home(
    fulfillment: Fulfillment,
) -> None:
    order_id = new_order_id()
    assert await fulfillment.deliver(fulfillment.cancelled(order_id))
    assert await fulfillment.deliver(fulfillment.fulfilled(order_id))
    assert await fulfillment.shipment(order_id) is None
    assert await fulfillment.published(order_id) == []


async def test_a_cancellation_after_shipping_changes_nothing(fulfillment: Fulfillment) -> None:
    order_id = new_order_id()
    assert await fulfillment.deliver(fulfillment.fulfilled(order_id))
    shipment = await fulfillment.shipment(order_id)
    assert await fulfillment.deliver(fulfillment.cancelled(order_id))
    assert await fulfillment.shipment(order_id) == shipment
    assert [name for name, _ in await fulfillment.published(order_id)] == ["OrderShipped"]


async def test_a_fulfilment_racing_its_cancellation_is_decided_one_way(
    fulfillment: Fulfillment,
) -> None:
    orders = [new_order_id() for _ in range(10)]
    races = []
    for order_id in orders:
        races.append(fulfillment.deliver(fulfillment.cancelled(order_id)))
        races.append(fulfillment.deliver(fulfillment.fulfilled(order_id)))
    await asyncio.gather(*races)
    for order_id in orders:
        shipment = await fulfillment.shipment(order_id)
        published = [name for name, _ in await fulfillment.published(order_id)]
        assert published == ([] if shipment is None else ["OrderShipped"])
