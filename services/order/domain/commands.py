"""What callers ask the order service to do, as plain data already lifted off the wire."""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.common.identity import Principal
from services.order.domain.model import Address


@dataclass(frozen=True, slots=True)
class RequestedLine:
    product_id: str
    quantity: int
    # The price the client showed its user, if it sent one: checked, never charged.
    expected_unit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CreateOrder:
    principal: Principal
    lines: tuple[RequestedLine, ...]
    shipping_address: Address
    payment_method: str
    expected_total: Decimal | None = None
    claimed_user_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    principal: Principal
    order_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UpdateOrder:
    principal: Principal
    order_id: str
    status: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
