"""In-memory stand-ins for the inventory service's ports."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.paging import Page
from services.inventory.domain.model import Product


@dataclass
class FakeProductCatalog:
    """The catalog as the repository reads it: active products by name, then id."""

    products: dict[str, Product] = field(default_factory=dict)
    asked_for: list[list[str]] = field(default_factory=list)

    async def list_active(self, page: Page) -> tuple[list[Product], int]:
        active = sorted(
            (p for p in self.products.values() if p.active), key=lambda p: (p.name, p.product_id)
        )
        return active[page.offset : page.offset + page.size], len(active)

    async def get(self, product_id: str) -> Product | None:
        found = await self.get_many([product_id])
        return found[0] if found else None

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        self.asked_for.append(list(product_ids))
        return [self.products[pid] for pid in product_ids if pid in self.products]
