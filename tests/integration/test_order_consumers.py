"""The order validator's and the order status projector's batch handlers against real
Postgres, each batch applied as the consumer applies it: the inbox rows and the handler in
one transaction, the handler getting every new event of the batch at once, in offset order.
Also the order store's writes they rely on (a new order with its lines and history, and its
idempotency key)."""

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.errors import Conflict
from services.common.money import Money
from services.order.adapters.repository import PostgresOrderStore, fetch_orders, save_orders
from services.order.consumers import OrderStatusProjector, OrderValidator
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.order.domain.pricing import CatalogEntry
from services.platform.db import Connection, Pool
from services.platform.messaging.codec import EventCodec, EventEnvelope, cloudevent_headers
from services.platform.messaging.consumer import BatchHandler
from services.platform.messaging.registry import (
    ORDER_STATUS_PROJECTOR_GROUP,
    ORDER_VALIDATOR_GROUP,
    ORDERS,
)
from tests.unit.fakes.order import FakeCatalog
from tests.unit.test_codec import SAMPLES

pytestmark = pytest.mark.integration

ADDRESS = Address("1 Main St", "Springfield", "IL", "62701", "US")
KEYBOARD = CatalogEntry("itest-kb", "Keyboard", Money(8999, "USD"), True)
MOUSE = CatalogEntry("itest-mouse", "Mouse", Money(2999, "USD"), True)
RETIRED = CatalogEntry("itest-retired", "Retired", Money(100, "USD"), False)


class _NoOutbox:
    """The test orders' OrderCreated is never written: these handlers are fed directly."""

    async def write(self, conn: Connection, events: Iterable[Event]) -> int:
        return 0


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog({entry.product_id: entry for entry in (KEYBOARD, MOUSE, RETIRED)})


def draft(*lines: OrderLine, status: OrderStatus = OrderStatus.PENDING) -> Order:
    now = datetime.now(UTC)
    return Order(
        order_id=str(uuid.uuid4()),
        user_id="itest-user",
        status=status,
        lines=lines or (OrderLine(KEYBOARD.product_id, "Keyboard", 1, KEYBOARD.unit_price),),
        shipping_address=ADDRESS,
        payment_method="tok_visa",
        created_at=now,
        updated_at=now,
    )


async def new_order(
    pool: Pool,
    *lines: OrderLine,
    status: OrderStatus = OrderStatus.PENDING,
) -> Order:
    store = PostgresOrderStore(pool, _NoOutbox(), timedelta(hours=1))
    return await store.add(draft(*lines, status=status), [], None)


def envelope(codec: EventCodec, name: str, order_id: str, **fields: Any) -> EventEnvelope:
    """An event about ``order_id`` as a consumer receives it: encoded, with its headers."""
    record = {**SAMPLES[name], "order_id": order_id, **fields}
    headers = cloudevent_headers(
        event_id=uuid.uuid4(),
        event_name=name,
        source="/ordermesh/tests",
        time=datetime.now(UTC),
        subject=order_id,
    )
    return codec.envelope_from(headers, codec.encode(name, record))


async def apply_batch(
    pool: Pool, group: str, handler: BatchHandler, events: Sequence[EventEnvelope]
) -> int:
    """Claims ``events`` in the inbox and hands the new ones to ``handler`` in one
    transaction, as the consumer does; returns how many were new.

    The outbox rows written are marked published in the same transaction, so the relay of a
    running stack never sends these synthetic orders' events to the live topics."""
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "INSERT INTO orders.inbox (consumer_group, event_id)"
            " SELECT %s, unnest(%s::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
            (group, [event.event_id for event in events]),
        )
        fresh = {row["event_id"] for row in await cursor.fetchall()}
        new = [event for event in events if event.event_id in fresh]
        if new:
            await handler(new, conn)
        await conn.execute(
            "UPDATE orders.outbox SET published_at = now()"
            " WHERE message_key = ANY(%s) AND published_at IS NULL",
            (sorted({str(event.record["order_id"]) for event in events}),),
        )
        return len(new)


async def outbox(pool: Pool, codec: EventCodec, *order_ids: str) -> list[tuple[str, str]]:
    """(event name, order id) of the events written for ``order_ids``, oldest first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT topic, message_key, event_type, payload FROM orders.outbox"
            " WHERE message_key = ANY(%s) ORDER BY id",
            (list(order_ids),),
        )
        rows = await cursor.fetchall()
    events = []
    for row in rows:
        decoded = codec.decode(row["payload"])
        assert row["topic"] == ORDERS
        assert row["event_type"] == f"ordermesh.events.v1.{decoded.name}"
        assert decoded.record["order_id"] == row["message_key"]
        events.append((decoded.name, row["message_key"]))
    return events


async def decoded_outbox(pool: Pool, codec: EventCodec, order_id: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT payload FROM orders.outbox WHERE message_key = %s ORDER BY id", (order_id,)
        )
        return [codec.decode(row["payload"]).record for row in await cursor.fetchall()]


async def history(pool: Pool, order_id: str) -> list[tuple[int, str, str]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT version, status, reason FROM orders.status_history WHERE order_id = %s"
            " ORDER BY version",
            (order_id,),
        )
        return [(row["version"], row["status"], row["reason"]) for row in await cursor.fetchall()]


async def stored(pool: Pool, *order_ids: str) -> dict[str, Order]:
    async with pool.connection() as conn:
        return await fetch_orders(conn, order_ids)


async def test_validator_checks_a_batch_with_one_catalog_call(
    pool: Pool, codec: EventCodec, catalog: FakeCatalog
) -> None:
    good = await new_order(pool)
    two_lines = await new_order(
        pool,
        OrderLine(KEYBOARD.product_id, "Keyboard", 2, KEYBOARD.unit_price),
        OrderLine(MOUSE.product_id, "Mouse", 1, MOUSE.unit_price),
    )
    retired = await new_order(pool, OrderLine(RETIRED.product_id, "Retired", 1, Money(100, "USD")))
    repriced = await new_order(pool, OrderLine(MOUSE.product_id, "Mouse", 1, Money(1999, "USD")))
    unknown = await new_order(pool, OrderLine("itest-nope", "Nope", 1, Money(100, "USD")))
    already = await new_order(pool, status=OrderStatus.VALIDATED)
    missing = str(uuid.uuid4())
    validator = OrderValidator(codec, catalog)
    orders = [good, two_lines, retired, repriced, unknown, already]
    events = [
        envelope(codec, "OrderCreated", order_id)
        for order_id in [*(o.order_id for o in reversed(orders)), missing]
    ]

    assert await apply_batch(pool, ORDER_VALIDATOR_GROUP, validator.on_orders_created, events) == 7

    assert catalog.calls == 1
    ids = [o.order_id for o in orders]
    assert await outbox(pool, codec, *ids, missing) == [
        ("OrderRejected", unknown.order_id),
        ("OrderRejected", repriced.order_id),
        ("OrderRejected", retired.order_id),
        ("OrderValidated", two_lines.order_id),
        ("OrderValidated", good.order_id),
    ]
    (rejected,) = await decoded_outbox(pool, codec, retired.order_id)
    assert rejected["reason_code"] == "INACTIVE_PRODUCT"
    (rejected,) = await decoded_outbox(pool, codec, repriced.order_id)
    assert rejected["reason_code"] == "PRICE_CHANGED"
    (rejected,) = await decoded_outbox(pool, codec, unknown.order_id)
    assert rejected["reason_code"] == "UNKNOWN_PRODUCT"
    (validated,) = await decoded_outbox(pool, codec, two_lines.order_id)
    assert validated["total_minor"] == 2 * 8999 + 2999
    assert [item["product_id"] for item in validated["items"]] == [
        KEYBOARD.product_id,
        MOUSE.product_id,
    ]
    assert validated["version"] == 1

    # Redelivered: the inbox absorbs the whole batch, nothing is written twice.
    assert await apply_batch(pool, ORDER_VALIDATOR_GROUP, validator.on_orders_created, events) == 0
    assert len(await outbox(pool, codec, *ids)) == 5
    assert catalog.calls == 1


async def test_validator_asks_the_catalog_in_chunks_it_accepts(
    pool: Pool, codec: EventCodec
) -> None:
    entries = {
        f"itest-p{i:03}": CatalogEntry(f"itest-p{i:03}", f"P{i}", Money(100 + i, "USD"), True)
        for i in range(250)
    }
    catalog = FakeCatalog(entries)
    asked: list[int] = []
    original = catalog.entries

    async def entries_at_most_100(product_ids: Sequence[str]) -> Any:
        asked.append(len(product_ids))
        assert len(product_ids) <= OrderValidator.CATALOG_BATCH
        return await original(product_ids)

    catalog.entries = entries_at_most_100  # type: ignore[method-assign]
    orders = [
        await new_order(
            pool,
            *(
                OrderLine(e.product_id, e.name, 1, e.unit_price)
                for e in list(entries.values())[start : start + 25]
            ),
        )
        for start in range(0, 250, 25)
    ]
    events = [envelope(codec, "OrderCreated", o.order_id) for o in orders]
    validator = OrderValidator(codec, catalog)
    await apply_batch(pool, ORDER_VALIDATOR_GROUP, validator.on_orders_created, events)
    assert sorted(asked) == [50, 100, 100]
    assert [name for name, _ in await outbox(pool, codec, *(o.order_id for o in orders))] == [
        "OrderValidated"
    ] * 10


async def test_projector_applies_a_batch_of_facts_in_offset_order(
    pool: Pool, codec: EventCodec
) -> None:
    a, b, c, d = [await new_order(pool) for _ in range(4)]
    unknown = str(uuid.uuid4())
    projector = OrderStatusProjector(codec)
    events = [
        envelope(codec, "OrderValidated", a.order_id),
        envelope(codec, "OrderFulfilled", b.order_id),  # overtook its validation and payment
        envelope(codec, "PaymentProcessed", a.order_id),
        envelope(codec, "OrderValidated", b.order_id),  # late: changes nothing
        envelope(codec, "OrderRejected", c.order_id, reason="no such product"),
        envelope(codec, "PaymentProcessed", c.order_id),  # after FAILED: changes nothing
        envelope(codec, "PaymentRefunded", d.order_id),  # not a status fact
        envelope(codec, "OrderShipped", unknown),
    ]

    applied = await apply_batch(pool, ORDER_STATUS_PROJECTOR_GROUP, projector.on_events, events)

    assert applied == len(events)
    orders = await stored(pool, a.order_id, b.order_id, c.order_id, d.order_id)
    assert (orders[a.order_id].status, orders[a.order_id].version) == (OrderStatus.PAID, 3)
    assert (orders[b.order_id].status, orders[b.order_id].version) == (OrderStatus.FULFILLED, 4)
    assert (orders[c.order_id].status, orders[c.order_id].version) == (OrderStatus.FAILED, 2)
    assert orders[c.order_id].status_reason == "no such product"
    assert orders[d.order_id] == d
    assert [(v, s) for v, s, _ in await history(pool, a.order_id)] == [
        (1, "PENDING"),
        (2, "VALIDATED"),
        (3, "PAID"),
    ]
    assert await history(pool, b.order_id) == [
        (1, "PENDING", ""),
        (2, "VALIDATED", "implied by a later event"),
        (3, "PAID", "implied by a later event"),
        (4, "FULFILLED", ""),
    ]
    assert await history(pool, c.order_id) == [
        (1, "PENDING", ""),
        (2, "FAILED", "no such product"),
    ]
    ids = [a.order_id, b.order_id, c.order_id, d.order_id]
    # Every status recorded is also a status change for the live feed (and webhooks), in
    # the order recorded; reaching FULFILLED also releases the order to the warehouse.
    written = [
        ("OrderStatusChanged", a.order_id),
        ("OrderStatusChanged", b.order_id),
        ("OrderStatusChanged", b.order_id),
        ("OrderStatusChanged", b.order_id),
        ("OrderReadyToShip", b.order_id),
        ("OrderStatusChanged", a.order_id),
        ("OrderStatusChanged", c.order_id),
    ]
    assert await outbox(pool, codec, *ids) == written
    *changes, released = await decoded_outbox(pool, codec, b.order_id)
    assert [(e["previous_status"], e["status"], e["version"], e["user_id"]) for e in changes] == [
        ("PENDING", "VALIDATED", 2, b.user_id),
        ("VALIDATED", "PAID", 3, b.user_id),
        ("PAID", "FULFILLED", 4, b.user_id),
    ]
    assert changes[0]["reason"] == "implied by a later event"
    (failed,) = await decoded_outbox(pool, codec, c.order_id)
    assert (failed["status"], failed["reason"]) == ("FAILED", "no such product")
    assert released["version"] == 4
    assert released["released_at"] == orders[b.order_id].updated_at

    # Redelivered as a whole: the inbox absorbs it.
    assert await apply_batch(pool, ORDER_STATUS_PROJECTOR_GROUP, projector.on_events, events) == 0
    assert await stored(pool, *ids) == orders
    assert await outbox(pool, codec, *ids) == written

    shipped = envelope(codec, "OrderShipped", b.order_id, carrier="UPS", tracking_number="1Z9")
    await apply_batch(pool, ORDER_STATUS_PROJECTOR_GROUP, projector.on_events, [shipped])
    order = (await stored(pool, b.order_id))[b.order_id]
    assert (order.status, order.version, order.carrier, order.tracking_number) == (
        OrderStatus.SHIPPED,
        5,
        "UPS",
        "1Z9",
    )
    shipped_change = (await decoded_outbox(pool, codec, b.order_id))[-1]
    assert (shipped_change["status"], shipped_change["version"]) == ("SHIPPED", 5)
    assert shipped_change["details"] == {
        "carrier": "UPS",
        "tracking_number": "1Z9",
        "estimated_delivery": "2025-03-04T12:30:15.123456+00:00",
    }


async def test_overlapping_batches_serialise_on_the_orders_without_deadlock(
    pool: Pool, codec: EventCodec
) -> None:
    orders = [await new_order(pool) for _ in range(8)]
    projector = OrderStatusProjector(codec)
    validated = [envelope(codec, "OrderValidated", o.order_id) for o in orders]
    paid = [envelope(codec, "PaymentProcessed", o.order_id) for o in reversed(orders)]
    fulfilled = [envelope(codec, "OrderFulfilled", o.order_id) for o in orders[::2]]
    await asyncio.wait_for(
        asyncio.gather(
            *(
                apply_batch(pool, ORDER_STATUS_PROJECTOR_GROUP, projector.on_events, batch)
                for batch in (validated, paid, fulfilled)
            )
        ),
        30,
    )
    ids = [o.order_id for o in orders]
    final = await stored(pool, *ids)
    for index, order_id in enumerate(ids):
        expected = OrderStatus.FULFILLED if index % 2 == 0 else OrderStatus.PAID
        assert final[order_id].status is expected
        versions = [v for v, _, _ in await history(pool, order_id)]
        assert versions == list(range(1, final[order_id].version + 1))
    written = await outbox(pool, codec, *ids)
    released = [order_id for name, order_id in written if name == "OrderReadyToShip"]
    assert sorted(released) == sorted(ids[::2])
    for order_id in ids:
        changes = [o for name, o in written if name == "OrderStatusChanged" and o == order_id]
        assert len(changes) == final[order_id].version - 1


async def test_save_orders_refuses_a_stale_version_and_writes_nothing(pool: Pool) -> None:
    first, second = await new_order(pool), await new_order(pool)
    now = datetime.now(UTC)
    moved = [
        first.transition(OrderStatus.VALIDATED, reason="", at=now),
        second.transition(OrderStatus.VALIDATED, reason="", at=now),
    ]
    with pytest.raises(Conflict, match=second.order_id):
        async with pool.connection() as conn, conn.transaction():
            await save_orders(conn, moved, {first.order_id: 1, second.order_id: 7})
    assert await stored(pool, first.order_id, second.order_id) == {
        first.order_id: first,
        second.order_id: second,
    }
    async with pool.connection() as conn, conn.transaction():
        await save_orders(
            conn,
            [*moved, moved[0].transition(OrderStatus.PAID, reason="", at=now)],
            {first.order_id: 1, second.order_id: 1},
        )
    final = await stored(pool, first.order_id, second.order_id)
    assert (final[first.order_id].status, final[first.order_id].version) == (OrderStatus.PAID, 3)
    assert [v for v, _, _ in await history(pool, first.order_id)] == [1, 2, 3]
    assert [v for v, _, _ in await history(pool, second.order_id)] == [1, 2]


async def test_a_new_order_is_stored_with_its_lines_in_order_and_its_history(pool: Pool) -> None:
    lines = [
        OrderLine(f"itest-line-{i}", f"Line {i}", i, Money(100 * i, "USD")) for i in range(1, 6)
    ]
    order = await new_order(pool, *reversed(lines))
    assert (await stored(pool, order.order_id))[order.order_id] == order
    assert [line.product_id for line in order.lines] == [f"itest-line-{i}" for i in range(5, 0, -1)]
    assert await history(pool, order.order_id) == [(1, "PENDING", "")]


async def test_an_idempotency_key_names_one_order_until_it_expires(pool: Pool) -> None:
    store = PostgresOrderStore(pool, _NoOutbox(), timedelta(hours=1))
    key = f"itest-{uuid.uuid4()}"
    first = await store.add(draft(), [], IdempotencyClaim(key, "fingerprint-1"))
    again = await store.add(draft(), [], IdempotencyClaim(key, "fingerprint-1"))
    assert again == first
    with pytest.raises(Conflict, match="different request"):
        await store.add(draft(), [], IdempotencyClaim(key, "fingerprint-2"))
    assert await store.find_by_idempotency_key(first.user_id, key) == (first, "fingerprint-1")

    expired = PostgresOrderStore(pool, _NoOutbox(), timedelta(0))
    taken_over = await expired.add(draft(), [], IdempotencyClaim(key, "fingerprint-2"))
    assert taken_over.order_id != first.order_id
    assert await store.find_by_idempotency_key(first.user_id, key) == (taken_over, "fingerprint-2")
    assert set(await stored(pool, first.order_id, taken_over.order_id)) == {
        first.order_id,
        taken_over.order_id,
    }


async def test_concurrent_requests_with_one_key_make_one_order(pool: Pool) -> None:
    store = PostgresOrderStore(pool, _NoOutbox(), timedelta(hours=1))
    key = f"itest-{uuid.uuid4()}"
    orders = await asyncio.gather(
        *(store.add(draft(), [], IdempotencyClaim(key, "same")) for _ in range(4))
    )
    assert len({order.order_id for order in orders}) == 1
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM orders.idempotency_keys WHERE key = %s", (key,)
        )
        assert await cursor.fetchone() == {"n": 1}
