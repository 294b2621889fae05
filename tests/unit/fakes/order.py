"""In-memory stand-ins for the order service's ports."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.common.errors import Conflict
from services.common.paging import Page
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim, ensure_same_request
from services.order.domain.model import Order, OrderStatus
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

    async def update(self, order: Order, expected_version: int, events: Iterable[Event]) -> None:
        if self.orders[order.order_id].version != expected_version:
            raise Conflict("changed concurrently")
        self.orders[order.order_id] = order
        self.published.extend(events)
