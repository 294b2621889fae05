"""WatchOrders' decisions against in-memory fakes of the store and the live feed: backlog
after a cursor without repeats, snapshots when the feed cannot resume, history fills after a
reset or a skipped version, heartbeats, one order alone."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.identity import Principal, Role, Tier
from services.common.money import Money
from services.order.domain.live import Cursor, Delivery, StatusUpdate
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.order.domain.ports import FeedReset
from services.order.watching import WatchRequest, watch_orders
from tests.unit.fakes.order import FakeLiveFeed, FakeOrderStore

ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("user-admin", "admin@example.com", Role.ADMIN, Tier.FREE)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FLOW = [
    OrderStatus.PENDING,
    OrderStatus.VALIDATED,
    OrderStatus.PAID,
    OrderStatus.FULFILLED,
    OrderStatus.SHIPPED,
]


def an_order(owner: Principal = ALICE) -> Order:
    return Order(
        order_id=str(uuid.uuid4()),
        user_id=owner.user_id,
        status=OrderStatus.PENDING,
        lines=(OrderLine("kb", "Keyboard", 1, Money(8999, "USD")),),
        shipping_address=Address("1 Main St", "Springfield", "IL", "62701", "US"),
        payment_method="tok_visa",
        created_at=T0,
        updated_at=T0,
    )


def moved(order: Order, status: OrderStatus, step: int) -> Order:
    shipped = status is OrderStatus.SHIPPED
    return replace(
        order,
        status=status,
        version=order.version + 1,
        updated_at=T0 + timedelta(seconds=step),
        carrier="UPS" if shipped else "",
        tracking_number="1Z999" if shipped else "",
    )


class World:
    """A store and a feed that move together, as the projector and the live-feed consumer
    would."""

    def __init__(self) -> None:
        self.store = FakeOrderStore()
        self.feed = FakeLiveFeed()
        self.step = 0

    def place(self, owner: Principal = ALICE, *, feed: bool = True) -> Order:
        order = an_order(owner)
        self.store.orders[order.order_id] = order
        self.store.history.append(StatusUpdate.of(order))
        if feed:
            self.feed.append(StatusUpdate.of(order))
        return order

    def advance(self, order_id: str, *, feed: bool = True) -> Order:
        order = self.store.orders[order_id]
        self.step += 1
        order = moved(order, FLOW[FLOW.index(order.status) + 1], self.step)
        self.store.orders[order_id] = order
        self.store.history.append(StatusUpdate.of(order))
        if feed:
            self.feed.append(StatusUpdate.of(order))
        return order


@pytest.fixture
def world() -> World:
    return World()


class Stream:
    def __init__(self, world: World, request: WatchRequest) -> None:
        self._iterator: AsyncIterator[Delivery] = watch_orders(
            request, world.store, world.feed, heartbeat_seconds=0.2
        )

    async def take(self, count: int) -> list[Delivery]:
        return [await asyncio.wait_for(anext(self._iterator), 2) for _ in range(count)]

    async def until_heartbeat(self) -> list[Delivery]:
        taken: list[Delivery] = []
        while True:
            delivery = await asyncio.wait_for(anext(self._iterator), 2)
            if delivery.update is None:
                return taken
            taken.append(delivery)

    async def close(self) -> None:
        await self._iterator.aclose()  # type: ignore[attr-defined]


def statuses(deliveries: list[Delivery]) -> list[OrderStatus]:
    return [d.update.status for d in deliveries if d.update is not None]


async def test_a_new_watcher_gets_a_snapshot_then_a_heartbeat_then_live_updates(
    world: World,
) -> None:
    order = world.place()
    world.advance(order.order_id)
    stream = Stream(world, WatchRequest(ALICE))
    snapshot = await stream.until_heartbeat()
    assert [(d.update.order_id, d.update.status, d.snapshot) for d in snapshot if d.update] == [
        (order.order_id, OrderStatus.VALIDATED, True)
    ]
    world.advance(order.order_id)
    live = await stream.take(1)
    assert statuses(live) == [OrderStatus.PAID]
    assert not live[0].snapshot
    assert live[0].cursor > snapshot[0].cursor
    await stream.close()


async def test_resuming_after_a_cursor_gives_what_followed_once_in_order(world: World) -> None:
    order = world.place()
    stream = Stream(world, WatchRequest(ALICE))
    await stream.until_heartbeat()
    world.advance(order.order_id)
    first = await stream.take(1)
    await stream.close()
    world.advance(order.order_id)
    world.advance(order.order_id)
    resumed = Stream(world, WatchRequest(ALICE, cursor=str(first[0].cursor)))
    backlog = await resumed.until_heartbeat()
    assert statuses(backlog) == [OrderStatus.PAID, OrderStatus.FULFILLED]
    world.advance(order.order_id)
    assert statuses(await resumed.take(1)) == [OrderStatus.SHIPPED]
    await resumed.close()


async def test_a_cursor_the_feed_no_longer_reaches_yields_a_snapshot(world: World) -> None:
    order = world.place()
    world.advance(order.order_id)
    world.advance(order.order_id)
    old = Cursor(world.feed.epoch, 1, 0)
    world.feed.trimmed_before[ALICE.user_id] = Cursor(world.feed.epoch, 1_002, 0)
    stream = Stream(world, WatchRequest(ALICE, cursor=str(old)))
    taken = await stream.until_heartbeat()
    assert [(d.update.status, d.snapshot) for d in taken if d.update] == [(OrderStatus.PAID, True)]
    await stream.close()


async def test_a_cursor_of_another_epoch_yields_a_snapshot(world: World) -> None:
    order = world.place()
    stream = Stream(world, WatchRequest(ALICE, cursor="ffffffff00000000.5-0"))
    taken = await stream.until_heartbeat()
    assert [(d.update.order_id, d.snapshot) for d in taken if d.update] == [(order.order_id, True)]
    await stream.close()


async def test_a_skipped_version_is_filled_from_the_history_before_the_entry(
    world: World,
) -> None:
    order = world.place()
    stream = Stream(world, WatchRequest(ALICE))
    await stream.until_heartbeat()
    world.advance(order.order_id, feed=False)  # VALIDATED never reached the feed
    world.advance(order.order_id)  # PAID did
    assert statuses(await stream.take(2)) == [OrderStatus.VALIDATED, OrderStatus.PAID]
    await stream.close()


async def test_after_a_reset_the_history_fills_what_the_feed_lost_once(world: World) -> None:
    order = world.place()
    stream = Stream(world, WatchRequest(ALICE))
    await stream.until_heartbeat()
    world.advance(order.order_id, feed=False)
    world.advance(order.order_id, feed=False)
    world.advance(order.order_id, feed=False)
    world.feed.epoch = "0000000000000002"
    for subscription in world.feed.subscriptions:
        subscription.queue.put_nowait(FeedReset(world.feed.epoch, T0))
    filled = await stream.take(3)
    assert statuses(filled) == [OrderStatus.VALIDATED, OrderStatus.PAID, OrderStatus.FULFILLED]
    # The feed catches up later with what it had missed: nothing repeats.
    world.feed.append(StatusUpdate.of(world.store.orders[order.order_id]))
    world.advance(order.order_id)
    assert statuses(await stream.take(1)) == [OrderStatus.SHIPPED]
    await stream.close()


async def test_quiet_streams_get_heartbeats_with_the_current_cursor(world: World) -> None:
    order = world.place()
    stream = Stream(world, WatchRequest(ALICE))
    await stream.until_heartbeat()
    world.advance(order.order_id)
    update = (await stream.take(1))[0]
    heartbeat = (await stream.take(1))[0]
    assert heartbeat.update is None
    assert heartbeat.cursor == update.cursor
    await stream.close()


async def test_one_order_alone_and_the_owners_only(world: World) -> None:
    mine = world.place()
    other = world.place()
    stream = Stream(world, WatchRequest(ALICE, order_id=mine.order_id))
    assert [d.update.order_id for d in await stream.until_heartbeat() if d.update] == [
        mine.order_id
    ]
    world.advance(other.order_id)
    world.advance(mine.order_id)
    taken = await stream.take(1)
    assert [(d.update.order_id, d.update.status) for d in taken if d.update] == [
        (mine.order_id, OrderStatus.VALIDATED)
    ]
    await stream.close()
    with pytest.raises(NotFound, match="not found"):
        await Stream(world, WatchRequest(BOB, order_id=mine.order_id)).take(1)


async def test_only_admins_watch_other_users_and_cursors_are_checked(world: World) -> None:
    order = world.place(BOB)
    with pytest.raises(PermissionDenied):
        await Stream(world, WatchRequest(ALICE, user_id=BOB.user_id)).take(1)
    with pytest.raises(InvalidArgument, match="cursor"):
        await Stream(world, WatchRequest(ALICE, cursor="not-a-cursor")).take(1)
    stream = Stream(world, WatchRequest(ADMIN, user_id=BOB.user_id))
    assert [d.update.order_id for d in await stream.until_heartbeat() if d.update] == [
        order.order_id
    ]
    await stream.close()


def test_cursors_round_trip_and_order_by_position() -> None:
    cursor = Cursor.parse("0123456789abcdef.1733043600000-3")
    assert str(cursor) == "0123456789abcdef.1733043600000-3"
    assert cursor < Cursor("0123456789abcdef", 1733043600000, 4)
    assert cursor.entry_id == "1733043600000-3"
    for bad in ("", "x.1-0", "0123456789abcdef.1", "0123456789ABCDEF.1-0", "a" * 40 + ".1-0"):
        with pytest.raises(InvalidArgument):
            Cursor.parse(bad)
