"""The catalog as the rest of the system sees it."""

from dataclasses import dataclass

from services.common.money import Money


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    description: str
    unit_price: Money
    stock: int
    active: bool
