"""The order aggregate and its status machine.

PENDING → VALIDATED → PAID → FULFILLED → SHIPPED → DELIVERED, with FAILED and CANCELLED as
terminal exits. Every change bumps `version`; an illegal transition is FailedPrecondition.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.money import Money

# An order's metadata, as compact JSON, is at most this many bytes: the bound the contract
# declares for the metadata of a request, kept for the merged whole after every update.
MAX_METADATA_BYTES = 4096


def metadata_size(metadata: dict[str, Any]) -> int:
    """Bytes of ``metadata`` as compact UTF-8 JSON (the measure the contract's bound uses)."""
    compact = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(compact.encode())


def ensure_metadata_fits(metadata: dict[str, Any]) -> None:
    size = metadata_size(metadata)
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata would be {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed",
            field="metadata",
        )


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    VALIDATED = "VALIDATED"
    PAID = "PAID"
    FULFILLED = "FULFILLED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @classmethod
    def parse(cls, text: str, *, field: str = "status") -> "OrderStatus":
        """Accepts any case, with or without the proto enum's ORDER_STATUS_ prefix."""
        name = text.strip().upper().removeprefix("ORDER_STATUS_")
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(s.value.lower() for s in cls)
            raise InvalidArgument(
                f"unknown {field} {text!r}; expected one of {allowed}", field=field
            ) from None

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.CANCELLED})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.VALIDATED, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.VALIDATED: frozenset({OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED}),
    OrderStatus.FULFILLED: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# Once FULFILLED the order has been released to the warehouse (OrderReadyToShip): from then
# on shipping wins, so a cancellation can never race a shipment.
CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.VALIDATED, OrderStatus.PAID})


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    city: str
    state: str
    zip: str
    country: str


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: str
    name: str
    quantity: int
    unit_price: Money

    @property
    def total_price(self) -> Money:
        return self.unit_price * self.quantity


def order_total(lines: Sequence[OrderLine]) -> Money:
    """What an order of ``lines`` costs: the one total computation (lines share a currency)."""
    total = Money.zero(lines[0].unit_price.currency)
    for line in lines:
        total = total + line.total_price
    return total


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    user_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    shipping_address: Address
    payment_method: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    status_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    carrier: str = ""
    tracking_number: str = ""
    estimated_delivery: datetime | None = None

    @property
    def currency(self) -> str:
        return self.lines[0].unit_price.currency

    @property
    def total(self) -> Money:
        return order_total(self.lines)

    def transition(self, target: OrderStatus, *, reason: str, at: datetime) -> "Order":
        if target not in TRANSITIONS[self.status]:
            raise FailedPrecondition(
                f"order {self.order_id} is {self.status.value}; it cannot become {target.value}"
            )
        return replace(
            self, status=target, status_reason=reason, version=self.version + 1, updated_at=at
        )

    def cancel(self, *, reason: str, at: datetime) -> "Order":
        if self.status not in CANCELLABLE:
            raise FailedPrecondition(
                f"order {self.order_id} is {self.status.value} and can no longer be cancelled"
                + (
                    ": it has been handed to the warehouse"
                    if self.status is OrderStatus.FULFILLED
                    else ""
                )
            )
        return self.transition(OrderStatus.CANCELLED, reason=reason, at=at)

    def with_metadata(self, changes: dict[str, Any], *, at: datetime) -> "Order":
        """The order with ``changes`` merged into its metadata; the merged whole must fit."""
        merged = {**self.metadata, **changes}
        ensure_metadata_fits(merged)
        return replace(self, metadata=merged, version=self.version + 1, updated_at=at)
