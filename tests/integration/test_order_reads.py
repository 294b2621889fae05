"""The order store's single reads against real Postgres: reads made together are answered
by one query each with its own order, whatever form of the id was asked, and a read never
misses a change committed before it was made."""

import asyncio
import dataclasses
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from services.common.money import Money
from services.order.adapters.repository import PostgresOrderStore, save_order
from services.order.domain.events import Event
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.platform.db import Connection, Pool

pytestmark = pytest.mark.integration


class _NoOutbox:
    async def write(self, conn: Connection, events: Iterable[Event]) -> int:
        return 0


def draft(quantity: int) -> Order:
    now = datetime.now(UTC)
    return Order(
        order_id=str(uuid.uuid4()),
        user_id="itest-reads",
        status=OrderStatus.PENDING,
        lines=(OrderLine("itest-reads-kb", "Keyboard", quantity, Money(8999, "USD")),),
        shipping_address=Address("1 Main St", "Springfield", "IL", "62701", "US"),
        payment_method="tok_visa",
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def store(pool: Pool) -> PostgresOrderStore:
    return PostgresOrderStore(pool, _NoOutbox(), timedelta(hours=1))


async def test_reads_made_together_each_get_their_own_order(store: PostgresOrderStore) -> None:
    orders = [await store.add(draft(quantity), [], None) for quantity in range(1, 9)]
    asked = [order.order_id for order in orders]
    asked += [orders[0].order_id.upper(), orders[1].order_id.replace("-", "")]
    asked += [str(uuid.uuid4()), "not-a-uuid"]
    found = await asyncio.gather(*(store.get(order_id) for order_id in asked))
    assert [order.lines[0].quantity if order else None for order in found] == [
        *range(1, 9),
        1,
        2,
        None,
        None,
    ]
    assert found[:8] == orders


async def test_a_read_sees_what_was_committed_before_it(
    pool: Pool, store: PostgresOrderStore
) -> None:
    order = await store.add(draft(1), [], None)
    for version in range(2, 6):
        changed = dataclasses.replace(order, version=version)
        async with pool.connection() as conn, conn.transaction():
            await save_order(conn, changed, version - 1)
        reads = await asyncio.gather(*(store.get(order.order_id) for _ in range(4)))
        assert {read.version for read in reads if read} == {version}
