"""Catalog reads and writes in the `inventory` schema."""

from collections.abc import Iterable, Sequence
from typing import Any

from services.common.money import Money
from services.common.paging import Page
from services.inventory.domain.model import Product
from services.platform.db import Connection, Pool

_COLUMNS = "product_id, name, description, unit_price_minor, currency, stock, active"


def _product(row: dict[str, Any]) -> Product:
    return Product(
        product_id=row["product_id"],
        name=row["name"],
        description=row["description"],
        unit_price=Money(row["unit_price_minor"], row["currency"]),
        stock=row["stock"],
        active=row["active"],
    )


class CatalogRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def list_active(self, page: Page) -> tuple[list[Product], int]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM inventory.products"
                " WHERE active ORDER BY name, product_id LIMIT %s OFFSET %s",
                (page.size, page.offset),
            )
            rows = await cursor.fetchall()
            if rows:
                return [_product(row) for row in rows], int(rows[0]["total"])
            cursor = await conn.execute(
                "SELECT count(*) AS total FROM inventory.products WHERE active"
            )
            counted = await cursor.fetchone()
            return [], int(counted["total"]) if counted else 0

    async def get(self, product_id: str) -> Product | None:
        found = await self.get_many([product_id])
        return found[0] if found else None

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        if not product_ids:
            return []
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM inventory.products WHERE product_id = ANY(%s)",
                (list(product_ids),),
            )
            return [_product(row) for row in await cursor.fetchall()]


async def upsert_products(conn: Connection, products: Iterable[Product]) -> None:
    """Inserts products, leaving existing ones (and their stock) untouched."""
    async with conn.cursor() as cursor:
        await cursor.executemany(
            f"INSERT INTO inventory.products ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (product_id) DO NOTHING",
            [
                (
                    p.product_id,
                    p.name,
                    p.description,
                    p.unit_price.amount_minor,
                    p.unit_price.currency,
                    p.stock,
                    p.active,
                )
                for p in products
            ],
        )
