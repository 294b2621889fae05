"""What the order handlers need from the outside world."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from services.common.paging import Page
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim
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
