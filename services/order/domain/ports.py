"""What the order handlers need from the outside world."""

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.paging import Page
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim
from services.order.domain.live import Cursor, FeedEntry, StatusUpdate
from services.order.domain.model import Order, OrderStatus
from services.order.domain.pricing import CatalogEntry


class Catalog(Protocol):
    async def entries(self, product_ids: Sequence[str]) -> Mapping[str, CatalogEntry]: ...


class OrderStore(Protocol):
    async def find_by_idempotency_key(self, user_id: str, key: str) -> tuple[Order, str] | None:
        """The order a live key names, with the stored request fingerprint."""

    async def add(
        self, order: Order, events: Iterable[Event], claim: IdempotencyClaim | None
    ) -> Order:
        """Stores a new order with its events atomically. If a concurrent request claimed
        the same key first, stores nothing and returns that request's order (after checking
        the fingerprint)."""

    async def get(self, order_id: str) -> Order | None: ...

    async def list(
        self, user_id: str | None, status: OrderStatus | None, page: Page
    ) -> tuple[list[Order], int]: ...

    async def update(self, order: Order, expected_version: int, events: Iterable[Event]) -> None:
        """Saves a changed order and its events; Conflict if someone else changed it."""

    async def recent(self, user_id: str, limit: int) -> Sequence[Order]:
        """The user's ``limit`` most recently changed orders."""

    async def status_history(
        self,
        user_ids: Sequence[str],
        *,
        since: datetime | None = None,
        order_id: str | None = None,
        versions: tuple[int, int] | None = None,
    ) -> Sequence[StatusUpdate]:
        """Recorded statuses of the users' orders, oldest first: those recorded at or after
        ``since``, of one order, or of versions strictly between ``versions``."""


@dataclass(frozen=True, slots=True)
class FeedReset:
    """The feed's store was away (or lost its entries): what a watcher was told since
    ``since`` is to be checked against the order history; positions now count in ``epoch``."""

    epoch: str
    since: datetime


class Subscription(Protocol):
    """One watcher's view of the feed of one user, registered before it reads the backlog
    so that nothing published meanwhile is missed (repeats are the session's to drop)."""

    @property
    def epoch(self) -> str: ...

    async def position(self) -> Cursor:
        """The end of the user's feed now."""

    async def after(self, cursor: Cursor, limit: int) -> list[FeedEntry] | None:
        """Entries after ``cursor``; None when the feed no longer reaches back that far."""

    async def next(self, quiet_seconds: float) -> FeedEntry | FeedReset | None:
        """The next live entry or reset, or None after ``quiet_seconds`` with
        neither; ResourceExhausted if this watcher fell too far behind."""


class LiveFeed(Protocol):
    async def publish(self, updates: Sequence[StatusUpdate]) -> None:
        """Appends each update to its user's feed, once: an update whose version the feed
        already has for that order is skipped (a redelivered event)."""

    def subscribe(self, user_id: str) -> AbstractAsyncContextManager[Subscription]: ...
