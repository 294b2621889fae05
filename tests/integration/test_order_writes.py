"""The order store's create against real Postgres, counted on the wire (libpq's protocol
trace): one round trip without an idempotency key, two with one (three for a retry, which
reads the order its key names), and still all or nothing:
a statement failing after the order's insert leaves neither the order nor its key."""

import dataclasses
import tempfile
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from services.common.money import Money
from services.order.adapters.outbox import order_outbox
from services.order.adapters.repository import PostgresOrderStore
from services.order.domain.events import Event, OrderCreated
from services.order.domain.idempotency import IdempotencyClaim
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.platform.db import Connection, Pool
from services.platform.messaging.codec import EventCodec

pytestmark = pytest.mark.integration


def draft() -> Order:
    now = datetime.now(UTC)
    return Order(
        order_id=str(uuid.uuid4()),
        user_id="itest-writes",
        status=OrderStatus.PENDING,
        lines=(
            OrderLine("itest-writes-kb", "Keyboard", 1, Money(8999, "USD")),
            OrderLine("itest-writes-mouse", "Mouse", 2, Money(2999, "USD")),
        ),
        shipping_address=Address("1 Main St", "Springfield", "IL", "62701", "US"),
        payment_method="tok_visa",
        created_at=now,
        updated_at=now,
    )


def round_trips(trace: str) -> int:
    """Times the client stopped sending and waited for the server's answer."""
    turns, previous = 0, ""
    for line in trace.splitlines():
        direction = line[:1]
        if direction not in ("F", "B"):
            continue
        if previous == "F" and direction == "B":
            turns += 1
        previous = direction
    return turns


async def traced_add(
    pool: Pool, store: PostgresOrderStore, order: Order, claim: IdempotencyClaim | None
) -> tuple[Order, int]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace"
        with path.open("w") as sink:
            async with pool.connection() as conn:
                conn.pgconn.trace(sink.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                stored = await store.add(order, [OrderCreated(order)], claim)
            finally:
                async with pool.connection() as conn:
                    conn.pgconn.untrace()
        return stored, round_trips(path.read_text())


async def test_a_create_is_one_round_trip_without_a_key_and_two_with_one(
    one_connection: Pool,
) -> None:
    store = PostgresOrderStore(
        one_connection, order_outbox(EventCodec.from_directory()), timedelta(hours=1)
    )
    # More than psycopg's prepare threshold: prepared statements must not add any.
    for _ in range(6):
        order = draft()
        assert await traced_add(one_connection, store, order, None) == (order, 1)
        keyed, claim = draft(), IdempotencyClaim(f"key-{uuid.uuid4()}", "fingerprint")
        assert await traced_add(one_connection, store, keyed, claim) == (keyed, 2)
        # A retry reads the order its key names too.
        retry = dataclasses.replace(draft(), user_id=keyed.user_id)
        stored, trips = await traced_add(one_connection, store, retry, claim)
        assert (stored.order_id, trips) == (keyed.order_id, 3)


class _FailingOutbox:
    """Writes a statement that fails on the server, after the order's insert."""

    async def write(self, conn: Connection, events: Iterable[Event]) -> int:
        await conn.execute("SELECT 1 / 0")
        return 0


async def test_a_failure_after_the_insert_leaves_nothing(pool: Pool) -> None:
    store = PostgresOrderStore(pool, _FailingOutbox(), timedelta(hours=1))
    order, claim = draft(), IdempotencyClaim(f"key-{uuid.uuid4()}", "fingerprint")
    with pytest.raises(psycopg.errors.DivisionByZero):
        await store.add(order, [OrderCreated(order)], claim)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM orders.orders WHERE order_id = %(id)s)"
            " + (SELECT count(*) FROM orders.order_items WHERE order_id = %(id)s)"
            " + (SELECT count(*) FROM orders.status_history WHERE order_id = %(id)s)"
            " + (SELECT count(*) FROM orders.idempotency_keys WHERE key = %(key)s) AS left",
            {"id": order.order_id, "key": claim.key},
        )
        row = await cursor.fetchone()
        assert row is not None and row["left"] == 0
        cursor = await conn.execute("SELECT 1 AS still_usable")
        assert await cursor.fetchone() == {"still_usable": 1}
