"""The live feed against the real Redis: one append per version, trimming and what a cursor
then means, and one reader connection per process however many watchers it serves."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from devstack import redis as devredis
from services.order.adapters.live_feed import RedisLiveFeed
from services.order.domain.live import Cursor, FeedEntry, StatusUpdate
from services.order.domain.model import OrderStatus

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def update(user_id: str, order_id: str, version: int, status: OrderStatus) -> StatusUpdate:
    return StatusUpdate(
        order_id=order_id,
        user_id=user_id,
        status=status,
        version=version,
        message=status.value.lower(),
        occurred_at=T0 + timedelta(seconds=version),
        carrier="UPS" if status is OrderStatus.SHIPPED else "",
        tracking_number="1Z999" if status is OrderStatus.SHIPPED else "",
        estimated_delivery=T0 + timedelta(days=3) if status is OrderStatus.SHIPPED else None,
    )


def a_user() -> str:
    return f"live-{uuid.uuid4().hex[:12]}"


async def test_an_update_is_appended_once_per_version_and_comes_back_whole() -> None:
    feed = RedisLiveFeed(devredis.url())
    user, order = a_user(), str(uuid.uuid4())
    shipped = update(user, order, 5, OrderStatus.SHIPPED)
    try:
        await feed.publish([update(user, order, 1, OrderStatus.PENDING), shipped])
        await feed.publish([shipped, update(user, order, 1, OrderStatus.PENDING)])  # redelivered
        async with feed.subscribe(user) as subscription:
            entries = await subscription.after(Cursor.start(subscription.epoch), 100)
        assert entries is not None
        assert [e.update for e in entries] == [update(user, order, 1, OrderStatus.PENDING), shipped]
        assert entries[0].cursor < entries[1].cursor
    finally:
        await feed.aclose()


async def test_a_trimmed_cursor_is_reported_and_a_missing_feed_starts_empty() -> None:
    feed = RedisLiveFeed(devredis.url(), horizon_entries=10)
    user = a_user()
    try:
        async with feed.subscribe(user) as subscription:
            assert await subscription.after(Cursor.start(subscription.epoch), 10) == []
            await feed.publish(
                [update(user, str(uuid.uuid4()), 1, OrderStatus.PENDING) for _ in range(3)]
            )
            first = await subscription.after(Cursor.start(subscription.epoch), 10)
            assert first is not None and len(first) == 3
            # Far past the horizon: Redis trims whole nodes (MAXLEN ~), so publish plenty.
            for _ in range(10):
                await feed.publish(
                    [update(user, str(uuid.uuid4()), 1, OrderStatus.PENDING) for _ in range(50)]
                )
            assert await subscription.after(first[0].cursor, 10) is None
            newest = await subscription.position()
            assert await subscription.after(newest, 10) == []
    finally:
        await feed.aclose()


async def test_one_reader_connection_serves_every_watcher_of_the_process() -> None:
    feed = RedisLiveFeed(devredis.url(), max_connections=2)
    users = [a_user() for _ in range(200)]
    probe = aioredis.Redis.from_url(devredis.url())
    try:
        async with feed.subscribe(users[0]):
            pass  # the reader is running now
        before = len(await probe.client_list())
        received: dict[str, list[FeedEntry]] = {user: [] for user in users}

        async def watch(user: str, ready: asyncio.Event) -> None:
            async with feed.subscribe(user) as subscription:
                ready.set()
                item = await subscription.next(10)
                assert isinstance(item, FeedEntry)
                received[user].append(item)

        events = [asyncio.Event() for _ in users]
        watchers = [
            asyncio.create_task(watch(user, ready))
            for user, ready in zip(users, events, strict=True)
        ]
        await asyncio.gather(*(ready.wait() for ready in events))
        during = len(await probe.client_list())
        await feed.publish(
            [update(user, str(uuid.uuid4()), 1, OrderStatus.PENDING) for user in users]
        )
        await asyncio.wait_for(asyncio.gather(*watchers), 10)
        assert all(len(entries) == 1 for entries in received.values())
        assert all(received[user][0].update.user_id == user for user in users)
        # 200 watchers, and no more connections than the reader and the bounded pool.
        assert during - before <= 2
    finally:
        await probe.aclose()
        await feed.aclose()


async def test_a_quiet_feed_is_not_taken_for_an_outage() -> None:
    """The reader's blocking read outlasts a quiet spell without a reset (which would send
    every watcher to the history and starve its heartbeats)."""
    feed = RedisLiveFeed(devredis.url())
    try:
        async with feed.subscribe(a_user()) as subscription:
            assert await subscription.next(7.5) is None
    finally:
        await feed.aclose()
