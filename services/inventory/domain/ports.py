"""What the inventory service's API and its manager's handlers need from the outside world."""

from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import datetime
from typing import Protocol

from services.common.paging import Page
from services.inventory.domain.model import Product
from services.inventory.domain.reservations import Reservation


class ProductCatalog(Protocol):
    """The catalog as the public InventoryService reads it."""

    async def list_active(self, page: Page) -> tuple[list[Product], int]:
        """One page of the products on sale, by name, and how many there are in all."""

    async def get(self, product_id: str) -> Product | None:
        """The product, on sale or withdrawn; None if it never existed."""

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        """Those of the products that exist, in no particular order."""


class StockLedger(Protocol):
    """Stock, reservations and cancellations, all inside the caller's transaction."""

    async def lock_order(self, order_id: str) -> None:
        """Serialises every handler of this order until the transaction ends (a payment and
        a cancellation of one order arrive on different topics, possibly at once)."""

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        """:meth:`lock_order` for several orders, taken in sorted order."""

    async def settled_orders(self, order_ids: Iterable[str]) -> Set[str]:
        """Those of the orders that must not reserve: cancelled, or already decided."""

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        """Remembers the order as cancelled; recording it again changes nothing."""

    async def reservation(self, order_id: str) -> Reservation | None: ...

    async def lock_stock(self, product_ids: Sequence[str]) -> Mapping[str, int]:
        """Locks the products' stock rows in the order given until the transaction ends and
        returns the units each can give (unknown and withdrawn products are absent)."""

    async def take_stock(self, quantities: Mapping[str, int]) -> None:
        """Removes units from locked rows that have them; never lets stock go negative."""

    async def return_stock(self, quantities: Mapping[str, int]) -> None: ...

    async def add_reservations(self, reservations: Iterable[Reservation]) -> None: ...

    async def mark_released(self, order_id: str, at: datetime) -> None: ...
