"""Stock reservations: what an order holds of the catalog's stock, and how one is decided.

A paid order reserves every line or nothing. The decision is made on the stock as it is
once every product row involved is locked, so it cannot be overtaken by a concurrent order.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.common.errors import InvalidArgument


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    OUT_OF_STOCK = "out_of_stock"


@dataclass(frozen=True, slots=True)
class StockLine:
    """One order line as it travels with the payment: product, units and catalog price."""

    product_id: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True, slots=True)
class Shortage:
    product_id: str
    requested: int
    available: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The stock decision for one order (one per order). ``OUT_OF_STOCK`` holds no stock and
    records why; ``RELEASED`` has given its stock back."""

    reservation_id: str
    order_id: str
    user_id: str
    status: ReservationStatus
    lines: tuple[StockLine, ...]
    shortages: tuple[Shortage, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def holds_stock(self) -> bool:
        return self.status is ReservationStatus.RESERVED


def quantities_by_product(lines: Iterable[StockLine]) -> dict[str, int]:
    """Units per product, in product_id order (the order stock rows are locked in, so two
    orders never wait for each other's rows crosswise). Repeated products are summed."""
    totals: dict[str, int] = {}
    for line in lines:
        if line.quantity < 1:
            raise InvalidArgument(
                f"quantity of {line.product_id!r} must be at least 1", field="quantity"
            )
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return dict(sorted(totals.items()))


def find_shortages(
    requested: Mapping[str, int], available: Mapping[str, int]
) -> tuple[Shortage, ...]:
    """The products whose available stock (absent: none) is below what is requested."""
    return tuple(
        Shortage(product_id, quantity, available.get(product_id, 0))
        for product_id, quantity in requested.items()
        if available.get(product_id, 0) < quantity
    )
