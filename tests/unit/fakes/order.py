"""In-memory stand-ins for the order service's ports."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common.errors import Conflict
from services.common.paging import Page
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim, ensure_same_request
from services.order.domain.live import Cursor, FeedEntry, StatusUpdate
from services.order.domain.model import Order, OrderStatus
from services.order.domain.ports import FeedReset
from services.order.domain.pricing import CatalogEntry


@dataclass
class FakeCatalog:
    entries_by_id: dict[str, CatalogEntry]
    calls: int = 0

    async def entries(self, product_ids: Sequence[str]) -> Mapping[str, CatalogEntry]:
        self.calls += 1
        return {pid: self.entries_by_id[pid] for pid in product_ids if pid in self.entries_by_id}


@dataclass
class FakeOrderStore:
    orders: dict[str, Order] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    published: list[Event] = field(default_factory=list)
    history: list[StatusUpdate] = field(default_factory=list)

    async def find_by_idempotency_key(self, user_id: str, key: str) -> tuple[Order, str] | None:
        found = self.keys.get((user_id, key))
        if found is None:
            return None
        order_id, fingerprint = found
        return self.orders[order_id], fingerprint

    async def add(
        self, order: Order, events: Iterable[Event], claim: IdempotencyClaim | None
    ) -> Order:
        if claim is not None:
            found = self.keys.get((order.user_id, claim.key))
            if found is not None:
                ensure_same_request(claim, found[1])
                return self.orders[found[0]]
            self.keys[(order.user_id, claim.key)] = (order.order_id, claim.fingerprint)
        self.orders[order.order_id] = order
        self.published.extend(events)
        self.history.append(StatusUpdate.of(order))
        self.history.append(StatusUpdate.of(order))
        return order

    async def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    async def list(
        self, user_id: str | None, status: OrderStatus | None, page: Page
    ) -> tuple[list[Order], int]:
        matching = [
            o
            for o in sorted(self.orders.values(), key=lambda o: o.created_at, reverse=True)
            if (user_id is None or o.user_id == user_id) and (status is None or o.status is status)
        ]
        return matching[page.offset : page.offset + page.size], len(matching)

    async def recent(self, user_id: str, limit: int) -> Sequence[Order]:
        mine = [o for o in self.orders.values() if o.user_id == user_id]
        return sorted(mine, key=lambda o: o.updated_at, reverse=True)[:limit]

    async def status_history(
        self,
        user_ids: Sequence[str],
        *,
        since: datetime | None = None,
        order_id: str | None = None,
        versions: tuple[int, int] | None = None,
    ) -> Sequence[StatusUpdate]:
        return [
            u
            for u in sorted(self.history, key=lambda u: (u.occurred_at, u.order_id, u.version))
            if u.user_id in user_ids
            and (since is None or u.occurred_at >= since)
            and (order_id is None or u.order_id == order_id)
            and (versions is None or versions[0] < u.version < versions[1])
        ]

    async def update(self, order: Order, expected_version: int, events: Iterable[Event]) -> None:
        if self.orders[order.order_id].version != expected_version:
            raise Conflict("changed concurrently")
        self.orders[order.order_id] = order
        self.published.extend(events)
        self.history.append(StatusUpdate.of(order))


class FakeSubscription:
    def __init__(self, feed: "FakeLiveFeed", user_id: str) -> None:
        self._feed = feed
        self._user_id = user_id
        self.queue: asyncio.Queue[FeedEntry | FeedReset] = asyncio.Queue()

    @property
    def epoch(self) -> str:
        return self._feed.epoch

    async def position(self) -> Cursor:
        entries = self._feed.entries.get(self._user_id, [])
        return entries[-1].cursor if entries else Cursor.start(self.epoch)

    async def after(self, cursor: Cursor, limit: int) -> list[FeedEntry] | None:
        entries = self._feed.entries.get(self._user_id, [])
        if cursor < self._feed.trimmed_before.get(self._user_id, Cursor.start(self.epoch)):
            return None
        return [e for e in entries if e.cursor > cursor][:limit]

    async def next(self, quiet_seconds: float) -> FeedEntry | FeedReset | None:
        try:
            return await asyncio.wait_for(self.queue.get(), quiet_seconds)
        except TimeoutError:
            return None


@dataclass
class FakeLiveFeed:
    """The live feed in memory: per-user entries with increasing cursors, live delivery to
    subscriptions, version dedupe as the Redis script does it."""

    epoch: str = "0123456789abcdef"
    entries: dict[str, list[FeedEntry]] = field(default_factory=dict)
    trimmed_before: dict[str, Cursor] = field(default_factory=dict)
    subscriptions: list[FakeSubscription] = field(default_factory=list)
    clock: int = 0

    async def publish(self, updates: Sequence[StatusUpdate]) -> None:
        for update in updates:
            known = [
                e.update.version
                for e in self.entries.get(update.user_id, [])
                if e.update.order_id == update.order_id
            ]
            if known and update.version <= max(known):
                continue
            self.append(update)

    def append(self, update: StatusUpdate, *, deliver: bool = True) -> FeedEntry:
        self.clock += 1
        entry = FeedEntry(Cursor(self.epoch, 1_000 + self.clock, 0), update)
        self.entries.setdefault(update.user_id, []).append(entry)
        if deliver:
            for subscription in self.subscriptions:
                if subscription._user_id == update.user_id:
                    subscription.queue.put_nowait(entry)
        return entry

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[FakeSubscription]:
        subscription = FakeSubscription(self, user_id)
        self.subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            self.subscriptions.remove(subscription)
