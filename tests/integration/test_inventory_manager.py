"""The inventory manager's handlers against real Postgres, each event applied as the
consumer applies it: inbox row and handler in one transaction, on its own connection."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.inventory.consumers import InventoryManager
from services.platform.db import Pool, open_pool
from services.platform.messaging.codec import EventCodec, EventEnvelope, cloudevent_headers
from services.platform.messaging.consumer import BatchHandler, Handler
from services.platform.messaging.registry import INVENTORY_MANAGER_GROUP, topic_for
from services.platform.settings import Settings
from tests.unit.test_codec import SAMPLES

pytestmark = pytest.mark.integration

SERVICES = Path(__file__).resolve().parents[2] / "services"
CONCURRENT_ORDERS = 20


async def open_wide_pool(settings: Settings) -> Pool:
    """A pool wide enough for the concurrency tests (the schema comes from the session's
    ``migrated`` fixture)."""
    return await open_pool(
        replace(settings, database_pool_min=2, database_pool_max=CONCURRENT_ORDERS + 4),
        name="tests-inventory",
    )


@pytest.fixture(scope="module")
async def db(settings: Settings, migrated: None) -> AsyncIterator[Pool]:
    pool = await open_wide_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory()


@pytest.fixture(scope="module")
def manager(codec: EventCodec) -> InventoryManager:
    return InventoryManager(codec)


def envelope(codec: EventCodec, name: str, record: dict[str, Any]) -> EventEnvelope:
    """``record`` as a consumer receives it: encoded, wrapped in CloudEvents headers, opened."""
    headers = cloudevent_headers(
        event_id=uuid.uuid4(),
        event_name=name,
        source="/ordermesh/tests",
        time=datetime.now(UTC),
        subject=str(record["order_id"]),
    )
    return codec.envelope_from(headers, codec.encode(name, record))


async def apply(
    pool: Pool, schema: str, group: str, handler: Handler, event: EventEnvelope
) -> bool:
    """Claims the event in the inbox and runs its handler in one transaction, as the
    consumer does; False if the inbox already had it.

    The outbox rows it writes are marked published in the same transaction, so the relay of
    a running stack never sends these synthetic orders' events to the live topics.
    """
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            f"INSERT INTO {schema}.inbox (consumer_group, event_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            (group, event.event_id),
        )
        if await cursor.fetchone() is None:
            return False
        await handler(event, conn)
        await conn.execute(
            f"UPDATE {schema}.outbox SET published_at = now()"
            " WHERE message_key = %s AND published_at IS NULL",
            (str(event.record["order_id"]),),
        )
        return True


async def apply_batch(
    pool: Pool, schema: str, group: str, handler: BatchHandler, events: Sequence[EventEnvelope]
) -> None:
    """Claims ``events`` in the inbox and runs the batch handler on them in one transaction,
    as the consumer does with a polled run of one event type (outbox rows marked published
    as in :func:`apply`)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            f"INSERT INTO {schema}.inbox (consumer_group, event_id) SELECT %s, unnest(%s::uuid[])",
            (group, [event.event_id for event in events]),
        )
        await handler(events, conn)
        await conn.execute(
            f"UPDATE {schema}.outbox SET published_at = now()"
            " WHERE message_key = ANY(%s) AND published_at IS NULL",
            ([str(event.record["order_id"]) for event in events],),
        )


async def outbox(
    pool: Pool, schema: str, codec: EventCodec, order_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """The events written for ``order_id``, oldest first, decoded."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT topic, payload FROM {schema}.outbox WHERE message_key = %s ORDER BY id",
            (order_id,),
        )
        rows = await cursor.fetchall()
    decoded = []
    for row in rows:
        event = codec.decode(row["payload"])
        assert row["topic"] == topic_for(event.name)
        decoded.append((event.name, event.record))
    return decoded


async def new_product(pool: Pool, stock: int, *, active: bool = True) -> str:
    product_id = f"itest-{uuid.uuid4().hex[:20]}"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency, stock,"
            " active) VALUES (%s, 'Integration test product', 1000, 'USD', %s, %s)",
            (product_id, stock, active),
        )
    return product_id


async def stock_of(pool: Pool, *product_ids: str) -> list[int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT product_id, stock FROM inventory.products WHERE product_id = ANY(%s)",
            (list(product_ids),),
        )
        found = {row["product_id"]: int(row["stock"]) for row in await cursor.fetchall()}
    return [found[pid] for pid in product_ids]


async def reservation_of(pool: Pool, order_id: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT reservation_id::text, status, lines, shortages, released_at"
            " FROM inventory.reservations WHERE order_id = %s",
            (order_id,),
        )
        return await cursor.fetchone()


def new_order_id() -> str:
    return str(uuid.uuid4())


def payment_processed(order_id: str, lines: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {
        **SAMPLES["PaymentProcessed"],
        "order_id": order_id,
        "user_id": "user-itest",
        "payment_id": f"pay-{order_id}",
        "amount_minor": 1000 * sum(q for _, q in lines),
        "currency": "USD",
        "items": [
            {"product_id": pid, "quantity": quantity, "unit_price_minor": 1000}
            for pid, quantity in lines
        ],
    }


def order_cancelled(order_id: str) -> dict[str, Any]:
    return {
        **SAMPLES["OrderCancelled"],
        "order_id": order_id,
        "user_id": "user-itest",
        "reason": "changed my mind",
    }


class Inventory:
    """The manager's handlers applied through the inbox, and what they left behind."""

    def __init__(self, pool: Pool, codec: EventCodec, manager: InventoryManager) -> None:
        self.pool = pool
        self.codec = codec
        self.handlers = manager.handlers()

    def event(self, name: str, record: dict[str, Any]) -> EventEnvelope:
        return envelope(self.codec, name, record)

    async def deliver(self, event: EventEnvelope) -> bool:
        return await apply(
            self.pool,
            "inventory",
            INVENTORY_MANAGER_GROUP,
            self.handlers.for_event(event.name),
            event,
        )

    async def deliver_batch(self, events: Sequence[EventEnvelope]) -> None:
        [name] = {event.name for event in events}
        await apply_batch(
            self.pool, "inventory", INVENTORY_MANAGER_GROUP, self.handlers.batch[name], events
        )

    def payment(self, order_id: str, *lines: tuple[str, int]) -> EventEnvelope:
        return self.event("PaymentProcessed", payment_processed(order_id, lines))

    async def pay(self, order_id: str, *lines: tuple[str, int]) -> EventEnvelope:
        event = self.event("PaymentProcessed", payment_processed(order_id, lines))
        assert await self.deliver(event)
        return event

    async def cancel(self, order_id: str) -> EventEnvelope:
        event = self.event("OrderCancelled", order_cancelled(order_id))
        assert await self.deliver(event)
        return event

    async def published(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        return await outbox(self.pool, "inventory", self.codec, order_id)


@pytest.fixture
def inventory(db: Pool, codec: EventCodec, manager: InventoryManager) -> Inventory:
    return Inventory(db, codec, manager)


async def test_a_paid_order_reserves_its_stock_and_is_fulfilled(inventory: Inventory) -> None:
    keyboard = await new_product(inventory.pool, 5)
    mouse = await new_product(inventory.pool, 3)
    order_id = new_order_id()
    await inventory.pay(order_id, (keyboard, 2), (mouse, 1))
    assert await stock_of(inventory.pool, keyboard, mouse) == [3, 2]
    reservation = await reservation_of(inventory.pool, order_id)
    assert reservation is not None
    assert (reservation["status"], reservation["shortages"]) == ("reserved", [])
    [(name, record)] = await inventory.published(order_id)
    assert name == "OrderFulfilled"
    assert record["reservation_id"] == reservation["reservation_id"]
    assert (
        record["items"]
        == reservation["lines"]
        == payment_processed(order_id, [(keyboard, 2), (mouse, 1)])["items"]
    )
    assert record["shipping_address"] == SAMPLES["PaymentProcessed"]["shipping_address"]


async def test_one_short_line_reserves_nothing_and_asks_for_a_refund(inventory: Inventory) -> None:
    keyboard = await new_product(inventory.pool, 5)
    mouse = await new_product(inventory.pool, 1)
    order_id = new_order_id()
    await inventory.pay(order_id, (keyboard, 2), (mouse, 2))
    assert await stock_of(inventory.pool, keyboard, mouse) == [5, 1]
    reservation = await reservation_of(inventory.pool, order_id)
    assert reservation is not None
    assert reservation["status"] == "out_of_stock"
    [(name, record)] = await inventory.published(order_id)
    assert name == "OutOfStock"
    assert (record["payment_id"], record["amount_minor"], record["currency"]) == (
        f"pay-{order_id}",
        4000,
        "USD",
    )
    assert record["shortages"] == [{"product_id": mouse, "requested": 2, "available": 1}]


async def test_a_withdrawn_or_unknown_product_is_out_of_stock(inventory: Inventory) -> None:
    retired = await new_product(inventory.pool, 10, active=False)
    order_id = new_order_id()
    await inventory.pay(order_id, (retired, 1), ("itest-no-such-product", 1))
    assert await stock_of(inventory.pool, retired) == [10]
    [(name, record)] = await inventory.published(order_id)
    assert name == "OutOfStock"
    assert sorted(s["product_id"] for s in record["shortages"]) == sorted(
        [retired, "itest-no-such-product"]
    )


async def test_concurrent_orders_for_the_last_units_never_oversell(inventory: Inventory) -> None:
    product = await new_product(inventory.pool, 5)
    orders = [new_order_id() for _ in range(CONCURRENT_ORDERS)]
    events = [
        inventory.event("PaymentProcessed", payment_processed(o, [(product, 1)])) for o in orders
    ]
    applied = await asyncio.gather(*(inventory.deliver(event) for event in events))
    assert all(applied)
    assert await stock_of(inventory.pool, product) == [0]
    outcomes = [name for o in orders for name, _ in await inventory.published(o)]
    assert sorted(outcomes) == ["OrderFulfilled"] * 5 + ["OutOfStock"] * 15
    statuses = [(await reservation_of(inventory.pool, o) or {}).get("status") for o in orders]
    assert statuses.count("reserved") == 5
    assert statuses.count("out_of_stock") == 15


async def test_orders_listing_the_same_products_crosswise_do_not_deadlock(
    inventory: Inventory,
) -> None:
    first = await new_product(inventory.pool, 100)
    second = await new_product(inventory.pool, 100)
    orders = [new_order_id() for _ in range(CONCURRENT_ORDERS)]
    events = [
        inventory.event(
            "PaymentProcessed",
            payment_processed(o, [(first, 1), (second, 2)] if n % 2 else [(second, 2), (first, 1)]),
        )
        for n, o in enumerate(orders)
    ]
    await asyncio.gather(*(inventory.deliver(event) for event in events))
    assert await stock_of(inventory.pool, first, second) == [80, 60]
    for order_id in orders:
        reservation = await reservation_of(inventory.pool, order_id)
        assert reservation is not None and reservation["status"] == "reserved", order_id
        assert [name for name, _ in await inventory.published(order_id)] == ["OrderFulfilled"]


async def test_a_second_payment_event_of_one_order_reserves_nothing_more(
    inventory: Inventory,
) -> None:
    product = await new_product(inventory.pool, 5)
    order_id = new_order_id()
    first = await inventory.pay(order_id, (product, 2))
    assert not await inventory.deliver(first), "the inbox absorbs an exact redelivery"
    await inventory.pay(order_id, (product, 2))
    assert await stock_of(inventory.pool, product) == [3]
    assert [name for name, _ in await inventory.published(order_id)] == ["OrderFulfilled"]


async def test_cancelling_a_reserved_order_gives_its_stock_back_once(
    inventory: Inventory,
) -> None:
    keyboard = await new_product(inventory.pool, 5)
    mouse = await new_product(inventory.pool, 5)
    order_id = new_order_id()
    await inventory.pay(order_id, (keyboard, 2), (mouse, 3))
    assert await stock_of(inventory.pool, keyboard, mouse) == [3, 2]
    cancelled = await inventory.cancel(order_id)
    assert await stock_of(inventory.pool, keyboard, mouse) == [5, 5]
    assert not await inventory.deliver(cancelled)
    await inventory.cancel(order_id)
    assert await stock_of(inventory.pool, keyboard, mouse) == [5, 5]
    reservation = await reservation_of(inventory.pool, order_id)
    assert reservation is not None
    assert reservation["status"] == "released"
    assert reservation["released_at"] is not None
    published = await inventory.published(order_id)
    assert [name for name, _ in published] == ["OrderFulfilled", "StockReleased"]
    released = published[1][1]
    assert released["reservation_id"] == reservation["reservation_id"]
    assert released["reason"] == "changed my mind"
    assert released["items"] == reservation["lines"]


async def test_a_cancellation_before_the_payment_stops_the_reservation(
    inventory: Inventory,
) -> None:
    product = await new_product(inventory.pool, 5)
    order_id = new_order_id()
    await inventory.cancel(order_id)
    await inventory.pay(order_id, (product, 1))
    assert await stock_of(inventory.pool, product) == [5]
    assert await reservation_of(inventory.pool, order_id) is None
    assert await inventory.published(order_id) == []


async def test_a_payment_racing_its_cancellation_never_leaks_stock(inventory: Inventory) -> None:
    product = await new_product(inventory.pool, 1000)
    orders = [new_order_id() for _ in range(CONCURRENT_ORDERS // 2)]
    races = []
    for order_id in orders:
        races.append(
            inventory.deliver(inventory.event("OrderCancelled", order_cancelled(order_id)))
        )
        races.append(
            inventory.deliver(
                inventory.event("PaymentProcessed", payment_processed(order_id, [(product, 3)]))
            )
        )
    await asyncio.gather(*races)
    assert await stock_of(inventory.pool, product) == [1000]
    for order_id in orders:
        # Either the cancellation came first (nothing was ever reserved) or the payment did
        # (reserved, then released): never a reservation left holding stock.
        names = [name for name, _ in await inventory.published(order_id)]
        reservation = await reservation_of(inventory.pool, order_id)
        if names == []:
            assert reservation is None, order_id
        else:
            assert names == ["OrderFulfilled", "StockReleased"], names
            assert reservation is not None and reservation["status"] == "released", order_id


async def test_a_batch_of_payments_is_decided_in_offset_order(inventory: Inventory) -> None:
    keyboard = await new_product(inventory.pool, 5)
    mouse = await new_product(inventory.pool, 1)
    scarce = await new_product(inventory.pool, 3)
    fits, short, cancelled, first, second = (new_order_id() for _ in range(5))
    await inventory.cancel(cancelled)
    batch = [
        inventory.payment(fits, (keyboard, 2), (mouse, 1)),
        inventory.payment(short, (keyboard, 1), (mouse, 1)),
        inventory.payment(cancelled, (keyboard, 1)),
        inventory.payment(first, (scarce, 2)),
        inventory.payment(second, (scarce, 2)),
        inventory.payment(fits, (keyboard, 2), (mouse, 1)),
    ]
    await inventory.deliver_batch(batch)
    assert await stock_of(inventory.pool, keyboard, mouse, scarce) == [3, 0, 1]
    published = {o: await inventory.published(o) for o in (fits, short, cancelled, first, second)}
    assert [name for name, _ in published[fits]] == ["OrderFulfilled"]
    [(name, record)] = published[short]
    assert name == "OutOfStock"
    assert record["shortages"] == [{"product_id": mouse, "requested": 1, "available": 0}]
    assert (record["payment_id"], record["amount_minor"]) == (f"pay-{short}", 2000)
    assert published[cancelled] == []
    assert await reservation_of(inventory.pool, cancelled) is None
    assert [name for name, _ in published[first]] == ["OrderFulfilled"]
    [(name, record)] = published[second]
    assert name == "OutOfStock"
    assert record["shortages"] == [{"product_id": scarce, "requested": 2, "available": 1}]
    statuses = {
        o: (await reservation_of(inventory.pool, o) or {}).get("status")
        for o in (fits, short, first, second)
    }
    assert statuses == {
        fits: "reserved",
        short: "out_of_stock",
        first: "reserved",
        second: "out_of_stock",
    }
    fulfilled = dict(published[fits])["OrderFulfilled"]
    reservation = await reservation_of(inventory.pool, fits)
    assert reservation is not None
    assert fulfilled["reservation_id"] == reservation["reservation_id"]
    assert fulfilled["items"] == reservation["lines"]


async def test_a_batch_reserves_exactly_the_last_units(inventory: Inventory) -> None:
    product = await new_product(inventory.pool, 5)
    orders = [new_order_id() for _ in range(CONCURRENT_ORDERS)]
    await inventory.deliver_batch([inventory.payment(o, (product, 1)) for o in orders])
    assert await stock_of(inventory.pool, product) == [0]
    outcomes = [name for o in orders for name, _ in await inventory.published(o)]
    assert outcomes == ["OrderFulfilled"] * 5 + ["OutOfStock"] * 15


async def test_a_batch_respects_orders_decided_before_it(inventory: Inventory) -> None:
    product = await new_product(inventory.pool, 5)
    order_id = new_order_id()
    await inventory.pay(order_id, (product, 2))
    await inventory.deliver_batch([inventory.payment(order_id, (product, 2))])
    assert await stock_of(inventory.pool, product) == [3]
    assert [name for name, _ in await inventory.published(order_id)] == ["OrderFulfilled"]
    await inventory.cancel(order_id)
    assert await stock_of(inventory.pool, product) == [5]


async def test_overlapping_batches_and_cancellations_do_not_deadlock(
    inventory: Inventory,
) -> None:
    products = [await new_product(inventory.pool, 1000) for _ in range(4)]
    orders = [new_order_id() for _ in range(CONCURRENT_ORDERS * 2)]
    batches = []
    for n in range(6):
        chosen = orders[n * 4 : n * 4 + 12]
        batches.append(
            [
                inventory.payment(o, (products[(n + i) % 4], 1), (products[(n + i + 1) % 4], 2))
                for i, o in enumerate(reversed(chosen) if n % 2 else chosen)
            ]
        )
    cancelled = orders[::5]
    await asyncio.wait_for(
        asyncio.gather(
            *(inventory.deliver_batch(batch) for batch in batches),
            *(inventory.cancel(o) for o in cancelled),
        ),
        timeout=60,
    )
    held = 0
    for order_id in orders:
        names = [name for name, _ in await inventory.published(order_id)]
        if order_id in cancelled:
            assert names in ([], ["OrderFulfilled", "StockReleased"]), names
        else:
            assert names in ([], ["OrderFulfilled"]), names
            held += len(names)
    assert held > 0
    assert sum(await stock_of(inventory.pool, *products)) == 4000 - 3 * held
