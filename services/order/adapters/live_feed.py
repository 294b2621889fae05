"""The live feed in Redis.

- ``ordermesh:live:user:<user id>``: one stream per user, the feed a watcher resumes from.
  Trimmed to about ``horizon_entries`` entries, and dropped ``horizon`` after its last entry.
- ``ordermesh:live:versions:<user id>``: the last version appended per order, so an update
  redelivered by Kafka is appended once.
- ``ordermesh:live:all``: every user's entries, with the user's entry id; each order-service
  process tails it on ONE connection and fans entries out to its own watchers by user, so
  Redis connections do not grow with watchers and any number of processes can serve them.
- ``ordermesh:live:epoch``: a random id set when the feed starts. If Redis comes back
  without its data, the epoch is new, and cursors of the old one mean a snapshot.

Appending is one Lua script per update (pipelined per batch): check the version, append to
the user's stream, append to the all-users stream, renew the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.errors import DependencyUnavailable, ResourceExhausted
from services.order.domain.live import Cursor, FeedEntry, StatusUpdate
from services.order.domain.model import OrderStatus
from services.order.domain.ports import FeedReset
from services.platform import tracing

log = logging.getLogger(__name__)

DEPENDENCY = "redis (live feed)"
# Zipkin's service name of the push spans (the API process reads the feed).
TRACE_SERVICE = "api"
EPOCH_KEY = "ordermesh:live:epoch"
ALL_KEY = "ordermesh:live:all"
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError, OSError)


def user_key(user_id: str) -> str:
    return f"ordermesh:live:user:{user_id}"


def versions_key(user_id: str) -> str:
    return f"ordermesh:live:versions:{user_id}"


# KEYS: user stream, versions hash, all stream, epoch
# ARGV: new epoch, order id, version, payload, user maxlen, all maxlen, user id, ttl seconds,
#       traceparent (or '': the readers' push spans continue it)
APPEND = """
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], ARGV[1]) end
local known = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if tonumber(ARGV[3]) <= known then return false end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'u', ARGV[7], 'i', id, 'e', ARGV[4],
           't', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
return id
"""


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    return round(value.timestamp() * 1_000_000)


def _datetime(micros: int | None) -> datetime | None:
    if micros is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def encode_update(update: StatusUpdate) -> str:
    return json.dumps(
        [
            update.order_id,
            update.user_id,
            update.status.value,
            update.version,
            update.message,
            _micros(update.occurred_at),
            update.carrier,
            update.tracking_number,
            _micros(update.estimated_delivery),
        ],
        separators=(",", ":"),
    )


def decode_update(payload: str) -> StatusUpdate:
    order_id, user_id, status, version, message, at, carrier, tracking, eta = json.loads(payload)
    occurred_at = _datetime(at)
    assert occurred_at is not None
    return StatusUpdate(
        order_id=order_id,
        user_id=user_id,
        status=OrderStatus(status),
        version=version,
        message=message,
        occurred_at=occurred_at,
        carrier=carrier,
        tracking_number=tracking,
        estimated_delivery=_datetime(eta),
    )


def _entry_id(text: str) -> tuple[int, int]:
    millis, _, sequence = text.partition("-")
    return int(millis), int(sequence or 0)


def _cursor(epoch: str, entry_id: str) -> Cursor:
    millis, sequence = _entry_id(entry_id)
    return Cursor(epoch, millis, sequence)


class _Subscription:
    def __init__(self, feed: RedisLiveFeed, user_id: str, queue_size: int) -> None:
        self._feed = feed
        self._user_id = user_id
        self._queue: asyncio.Queue[FeedEntry | FeedReset] = asyncio.Queue(queue_size)
        self.overflowed = False

    @property
    def epoch(self) -> str:
        return self._feed.epoch

    def offer(self, item: FeedEntry | FeedReset) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    async def position(self) -> Cursor:
        info = await self._feed.stream_info(self._user_id)
        if info is None:
            return Cursor.start(self.epoch)
        return _cursor(self.epoch, str(info["last-generated-id"]))

    async def after(self, cursor: Cursor, limit: int) -> list[FeedEntry] | None:
        info = await self._feed.stream_info(self._user_id)
        if info is None:
            # Nothing within the horizon: fine for a watcher that has seen nothing yet.
            return [] if (cursor.millis, cursor.sequence) == (0, 0) else None
        # Trimming (MAXLEN) removes the oldest entries: if any were removed, a cursor before
        # the first entry left may have been followed by one of them.
        first = info.get("recorded-first-entry-id") or info["last-generated-id"]
        trimmed = int(info.get("entries-added", 0)) > int(info["length"])
        if trimmed and (cursor.millis, cursor.sequence) < _entry_id(str(first)):
            return None
        rows = await self._feed.read_range(self._user_id, cursor.entry_id, limit)
        return [
            FeedEntry(_cursor(self.epoch, entry_id), decode_update(payload))
            for entry_id, payload in rows
        ]

    async def next(self, quiet_seconds: float) -> FeedEntry | FeedReset | None:
        if self.overflowed:
            raise ResourceExhausted(
                "this watcher fell too far behind the live feed; reconnect with the last"
                " cursor received",
                retry_after_seconds=1,
            )
        try:
            return await asyncio.wait_for(self._queue.get(), quiet_seconds)
        except TimeoutError:
            return None


class RedisLiveFeed:
    """Appends to the feed (the live-feed consumer) and serves this process's watchers."""

    def __init__(
        self,
        url: str,
        *,
        horizon_entries: int = 1000,
        horizon: timedelta = timedelta(days=7),
        all_entries: int = 100_000,
        queue_size: int = 10_000,
        block_seconds: float = 5.0,
        max_connections: int = 8,
        reset_margin: timedelta = timedelta(seconds=30),
    ) -> None:
        self._url = url
        self._horizon_entries = horizon_entries
        self._horizon_seconds = int(horizon.total_seconds())
        self._all_entries = all_entries
        self._queue_size = queue_size
        self._block_ms = int(block_seconds * 1000)
        self._max_connections = max_connections
        self._reset_margin = reset_margin
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._subscribers: dict[str, set[_Subscription]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.epoch = ""
        self._last_id = "0-0"

    def _redis(self) -> aioredis.Redis:
        # Created on first use (nothing connects at import or construction); a bounded pool
        # shared by every watcher's backlog reads and by the appends.
        if self._client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=5,
                decode_responses=True,
                socket_connect_timeout=2,
                # A pooled connection Redis closed (a restart) is replaced, not reported.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._script = self._client.register_script(APPEND)
        return self._client

    async def publish(self, updates: Sequence[StatusUpdate]) -> None:
        if not updates:
            return
        client = self._redis()
        new_epoch = secrets.token_hex(8)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for update in updates:
                    await self._script(
                        keys=[
                            user_key(update.user_id),
                            versions_key(update.user_id),
                            ALL_KEY,
                            EPOCH_KEY,
                        ],
                        args=[
                            new_epoch,
                            update.order_id,
                            update.version,
                            encode_update(update),
                            self._horizon_entries,
                            self._all_entries,
                            update.user_id,
                            self._horizon_seconds,
                            tracing.traceparent_for(update.order_id) or "",
                        ],
                        client=pipe,
                    )
                await pipe.execute()
        except REDIS_OUTAGES as error:
            raise DependencyUnavailable(
                f"the live feed's Redis is unavailable: {error}", dependency=DEPENDENCY
            ) from error

    async def stream_info(self, user_id: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await self._redis().xinfo_stream(user_key(user_id))
        except ResponseError:
            return None  # no such key
        except REDIS_OUTAGES as error:
            raise DependencyUnavailable(
                f"the live feed's Redis is unavailable: {error}", dependency=DEPENDENCY
            ) from error
        return info

    async def read_range(self, user_id: str, after_id: str, limit: int) -> list[tuple[str, str]]:
        try:
            rows: Any = await self._redis().xrange(
                user_key(user_id), min=f"({after_id}", max="+", count=limit
            )
        except REDIS_OUTAGES as error:
            raise DependencyUnavailable(
                f"the live feed's Redis is unavailable: {error}", dependency=DEPENDENCY
            ) from error
        return [(str(entry_id), str(fields["e"])) for entry_id, fields in rows]

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[_Subscription]:
        await self._start_reader()
        subscription = _Subscription(self, user_id, self._queue_size)
        self._subscribers[user_id].add(subscription)
        try:
            yield subscription
        finally:
            watchers = self._subscribers.get(user_id)
            if watchers is not None:
                watchers.discard(subscription)
                if not watchers:
                    del self._subscribers[user_id]

    @property
    def watchers(self) -> int:
        return sum(len(watchers) for watchers in self._subscribers.values())

    async def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._ready = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._read(), name="live-feed-reader")
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), 5)
        except TimeoutError:
            raise DependencyUnavailable(
                "the live feed's Redis is unavailable; retry later", dependency=DEPENDENCY
            ) from None

    async def _epoch(self, client: aioredis.Redis) -> str:
        await client.set(EPOCH_KEY, secrets.token_hex(8), nx=True)
        return str(await client.get(EPOCH_KEY))

    async def _read(self) -> None:
        """Tails the all-users stream on one connection of its own and hands each entry to
        the watchers of its user; after an outage, tells every watcher to check history."""
        client = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=2,
            # Longer than a blocking read waits, so a quiet feed is not taken for an outage.
            socket_timeout=self._block_ms / 1000 + 5,
            single_connection_client=True,
        )
        down_since: datetime | None = None
        backoff = 0.1
        try:
            while True:
                try:
                    if self._ready is not None and not self._ready.done():
                        self.epoch = await self._epoch(client)
                        newest = await client.xrevrange(ALL_KEY, count=1)
                        self._last_id = str(newest[0][0]) if newest else "0-0"
                        self._ready.set_result(None)
                    elif down_since is not None:
                        self.epoch = await self._epoch(client)
                        self._broadcast(FeedReset(self.epoch, down_since - self._reset_margin))
                        log.info("live feed reader reconnected to redis")
                        down_since = None
                    backoff = 0.1
                    response: Any = await client.xread(
                        {ALL_KEY: self._last_id}, count=1000, block=self._block_ms
                    )
                except REDIS_OUTAGES as error:
                    if down_since is None:
                        down_since = datetime.now(UTC)
                        log.warning("live feed reader lost redis: %s", error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                for _stream, entries in response or ():
                    for entry_id, fields in entries:
                        self._last_id = str(entry_id)
                        self._dispatch(fields)
        finally:
            await client.aclose()

    def _dispatch(self, fields: dict[str, str]) -> None:
        watchers = self._subscribers.get(fields["u"])
        if not watchers:
            return
        entry = FeedEntry(_cursor(self.epoch, fields["i"]), decode_update(fields["e"]))
        with tracing.continued_span(
            TRACE_SERVICE,
            "live-feed push",
            parent=fields.get("t") or None,
            kind=SpanKind.CONSUMER,
            attributes={
                "ordermesh.order.id": entry.update.order_id,
                "ordermesh.order.status": entry.update.status.value,
                "ordermesh.live_feed.watchers": len(watchers),
            },
        ):
            for subscription in tuple(watchers):
                subscription.offer(entry)

    def _broadcast(self, reset: FeedReset) -> None:
        for watchers in self._subscribers.values():
            for subscription in tuple(watchers):
                subscription.offer(reset)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._client is not None:
            await self._client.aclose()
            # A pool passed in explicitly is not closed with its client.
            await self._client.connection_pool.disconnect()
            self._client = None
